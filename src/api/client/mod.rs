//! Client-server API handlers, one file per area of the spec.

use super::router::AppRouter;

pub mod account;
pub mod account_data;
pub mod backup;
pub mod device;
pub mod directory;
pub mod discovery;
pub mod filter;
pub mod keys;
pub mod media;
pub mod media_download;
pub mod media_preview;
pub mod membership;
pub mod message;
pub mod notifications;
pub mod presence;
pub mod profile;
pub mod push;
pub mod receipt;
pub mod relations;
pub mod room;
pub mod search;
pub mod sync;
mod sync_realtime;
pub mod to_device;

pub fn routes(router: AppRouter) -> AppRouter {
    let router = discovery::routes(router);
    let router = account::routes(router);
    let router = room::routes(router);
    let router = membership::routes(router);
    let router = message::routes(router);
    let router = filter::routes(router);
    let router = push::routes(router);
    let router = profile::routes(router);
    let router = account_data::routes(router);
    let router = directory::routes(router);
    let router = device::routes(router);
    let router = relations::routes(router);
    let router = receipt::routes(router);
    let router = notifications::routes(router);
    let router = presence::routes(router);
    let router = keys::routes(router);
    let router = backup::routes(router);
    let router = to_device::routes(router);
    let router = media::routes(router);
    let router = search::routes(router);
    sync::routes(router)
}
