//! Server discovery and capabilities (spec: "Server Discovery", "Capabilities negotiation").

use std::{collections::BTreeMap, sync::Arc};

use axum::{Json, extract::State, routing::get};
use ruma::{
    RoomVersionId,
    api::client::discovery::{
        get_capabilities::{
            self,
            v3::{Capabilities, RoomVersionStability, RoomVersionsCapability},
        },
        get_supported_versions,
    },
};
use serde_json::{Value, json};

use crate::{
    api::{
        router::{AppRouter, route},
        ruma::Ruma,
    },
    error::{Error, Result},
    service::Services,
};

/// The spec versions whose client-server API this server implements.
const VERSIONS: &[&str] = &[
    "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8",
    "v1.9", "v1.10", "v1.11", "v1.12",
];

pub fn routes(router: AppRouter) -> AppRouter {
    let router = route(router, versions_route);
    let router = route(router, capabilities_route);
    let router = route(router, protocols_route);
    router
        .route("/.well-known/matrix/client", get(well_known_client))
        .route("/.well-known/matrix/server", get(well_known_server))
}

async fn versions_route(
    _: Arc<Services>,
    _: Ruma<get_supported_versions::Request>,
) -> Result<get_supported_versions::Response> {
    let mut response =
        get_supported_versions::Response::new(VERSIONS.iter().map(|v| (*v).to_owned()).collect());
    response.unstable_features = BTreeMap::from([("org.matrix.msc2285.stable".to_owned(), true)]);
    Ok(response)
}

async fn capabilities_route(
    services: Arc<Services>,
    _: Ruma<get_capabilities::v3::Request>,
) -> Result<get_capabilities::v3::Response> {
    let available = super::room::SUPPORTED_VERSIONS
        .iter()
        .map(|v| (v.clone(), RoomVersionStability::Stable))
        .collect::<BTreeMap<RoomVersionId, _>>();
    let mut capabilities = Capabilities::new();
    capabilities.room_versions =
        RoomVersionsCapability::new(services.config().default_room_version.clone(), available);
    capabilities.change_password.enabled = true;
    // Display name and avatar changes are allowed: the capabilities' defaults say so.
    capabilities.thirdparty_id_changes.enabled = false;
    Ok(get_capabilities::v3::Response::new(capabilities))
}

/// No application-service bridges run here, so no third-party protocols are offered.
async fn protocols_route(
    _: Arc<Services>,
    _: Ruma<ruma::api::client::thirdparty::get_protocols::v3::Request>,
) -> Result<ruma::api::client::thirdparty::get_protocols::v3::Response> {
    Ok(ruma::api::client::thirdparty::get_protocols::v3::Response::new(BTreeMap::new()))
}

async fn well_known_client(State(services): State<Arc<Services>>) -> Result<Json<Value>> {
    let base_url = services
        .config()
        .well_known_client
        .clone()
        .ok_or_else(|| Error::not_found("No client discovery information configured"))?;
    Ok(Json(json!({ "m.homeserver": { "base_url": base_url } })))
}

async fn well_known_server(State(services): State<Arc<Services>>) -> Result<Json<Value>> {
    let server = services
        .config()
        .well_known_server
        .clone()
        .ok_or_else(|| Error::not_found("No server discovery information configured"))?;
    Ok(Json(json!({ "m.server": server })))
}
