//! Server-server API handlers, one file per area of the spec. Every handler here is
//! reached only with a verified `X-Matrix` origin (`Ruma::origin`), except the key server.

use super::router::AppRouter;

pub mod event;
pub mod membership;
pub mod query;
pub mod transactions;

pub fn routes(router: AppRouter) -> AppRouter {
    let router = transactions::routes(router);
    let router = event::routes(router);
    let router = membership::routes(router);
    query::routes(router)
}
