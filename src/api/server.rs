//! Server-server endpoints outside `/_matrix/federation`: the version, our key server and
//! the notary key queries (spec: "Retrieving server keys").

use std::sync::Arc;

use ruma::{
    MilliSecondsSinceUnixEpoch,
    api::federation::discovery::{
        get_remote_server_keys, get_remote_server_keys_batch, get_server_keys, get_server_version,
    },
    serde::Raw,
};

use super::{
    router::{AppRouter, route},
    ruma::Ruma,
};
use crate::{
    error::{Error, Result},
    service::Services,
};

pub fn routes(router: AppRouter) -> AppRouter {
    let router = route(router, get_server_keys_route);
    let router = route(router, get_remote_server_keys_route);
    let router = route(router, get_remote_server_keys_batch_route);
    route(router, get_server_version_route)
}

async fn get_server_version_route(
    _: Arc<Services>,
    _: Ruma<get_server_version::v1::Request>,
) -> Result<get_server_version::v1::Response> {
    let mut server = get_server_version::v1::Server::new();
    server.name = Some("conduit".to_owned());
    server.version = Some(env!("CARGO_PKG_VERSION").to_owned());
    let mut response = get_server_version::v1::Response::new();
    response.server = Some(server);
    Ok(response)
}

async fn get_server_keys_route(
    services: Arc<Services>,
    _: Ruma<get_server_keys::v2::Request>,
) -> Result<get_server_keys::v2::Response> {
    let object = services.federation.own_key_object()?;
    Ok(get_server_keys::v2::Response::new(to_raw(&object)?))
}

/// Most servers one batch query may ask for: each may cost a request to that server.
const MAX_NOTARY_SERVERS: usize = 50;

/// `GET /_matrix/key/v2/query/{serverName}`: another server's keys, countersigned.
async fn get_remote_server_keys_route(
    services: Arc<Services>,
    request: Ruma<get_remote_server_keys::v2::Request>,
) -> Result<get_remote_server_keys::v2::Response> {
    notary_allowed(&services)?;
    let body = request.body;
    let objects = services
        .federation
        .notary_keys(&body.server_name, body.minimum_valid_until_ts.get().into())
        .await?;
    let server_keys = objects.iter().map(to_raw).collect::<Result<_>>()?;
    Ok(get_remote_server_keys::v2::Response::new(server_keys))
}

/// `POST /_matrix/key/v2/query`: several servers' keys at once, countersigned. The key
/// ids asked for only narrow nothing: every known key of a server is returned, as the
/// spec allows.
async fn get_remote_server_keys_batch_route(
    services: Arc<Services>,
    request: Ruma<get_remote_server_keys_batch::v2::Request>,
) -> Result<get_remote_server_keys_batch::v2::Response> {
    notary_allowed(&services)?;
    let wanted = request.body.server_keys;
    if wanted.len() > MAX_NOTARY_SERVERS {
        return Err(Error::too_large(format!(
            "At most {MAX_NOTARY_SERVERS} servers per query"
        )));
    }
    let now: u64 = MilliSecondsSinceUnixEpoch::now().get().into();
    let mut server_keys = Vec::new();
    for (server, criteria) in wanted {
        let minimum = criteria
            .values()
            .filter_map(|c| c.minimum_valid_until_ts)
            .map(|ts| u64::from(ts.get()))
            .max()
            .unwrap_or(now);
        for object in services.federation.notary_keys(&server, minimum).await? {
            server_keys.push(to_raw(&object)?);
        }
    }
    Ok(get_remote_server_keys_batch::v2::Response::new(server_keys))
}

/// The notary endpoints make requests to other servers: not while federation is off.
fn notary_allowed(services: &Services) -> Result<()> {
    if services.config().allow_federation {
        Ok(())
    } else {
        Err(Error::forbidden("Federation is disabled on this server"))
    }
}

fn to_raw<T>(object: &ruma::CanonicalJsonObject) -> Result<Raw<T>> {
    Ok(Raw::from_json(serde_json::value::to_raw_value(object)?))
}
