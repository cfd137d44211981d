//! Server-server endpoints. Only the server's own keys and version for now; the federation
//! transport builds on these.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedServerSigningKeyId, ServerSigningKeyId,
    api::federation::discovery::{
        ServerSigningKeys, VerifyKey, get_server_keys, get_server_version,
    },
    serde::{Base64, Raw},
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
    let key_id: OwnedServerSigningKeyId =
        ServerSigningKeyId::parse(services.globals.key_id()).map_err(Error::internal)?;
    let mut verify_keys = BTreeMap::new();
    verify_keys.insert(
        key_id,
        VerifyKey::new(Base64::new(services.globals.keypair.public_key().to_vec())),
    );
    let valid_until = MilliSecondsSinceUnixEpoch::from_system_time(
        std::time::SystemTime::now() + Duration::from_secs(7 * 24 * 3600),
    )
    .ok_or_else(|| Error::internal("time overflow"))?;
    let keys = ServerSigningKeys::new(services.globals.owned_server_name(), valid_until);
    let mut keys = keys;
    keys.verify_keys = verify_keys;
    let mut object = ruma::canonical_json::to_canonical_value(&keys)
        .map_err(Error::internal)?
        .as_object()
        .cloned()
        .ok_or_else(|| Error::internal("keys are an object"))?;
    ruma::signatures::sign_json(
        services.globals.server_name().as_str(),
        &services.globals.keypair,
        &mut object,
    )
    .map_err(Error::internal)?;
    let raw = Raw::from_json(serde_json::value::to_raw_value(&object)?);
    Ok(get_server_keys::v2::Response::new(raw))
}
