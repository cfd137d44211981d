//! Server-server API handlers, one file per area of the spec. Every handler here is
//! reached only with a verified `X-Matrix` origin (`Ruma::origin`), except the key server.

use ruma::ServerName;

use super::{router::AppRouter, ruma::Ruma};
use crate::error::{Error, Result};

pub mod directory;
pub mod event;
pub mod keys;
pub mod media;
pub mod membership;
pub mod query;
pub mod transactions;

pub fn routes(router: AppRouter) -> AppRouter {
    let router = transactions::routes(router);
    let router = event::routes(router);
    let router = membership::routes(router);
    let router = directory::routes(router);
    let router = keys::routes(router);
    let router = media::routes(router);
    query::routes(router)
}

/// The verified origin of a federation request. Missing only if the request was not
/// authenticated as a server, which the handlers must refuse rather than panic on.
pub fn require_origin<T>(body: &Ruma<T>) -> Result<&ServerName> {
    body.origin
        .as_deref()
        .ok_or_else(|| Error::unauthorized("Missing or invalid X-Matrix authorization"))
}
