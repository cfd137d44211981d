//! End-to-end encryption queries of other servers (spec: "End-to-End Encryption" in the
//! server-server API): a user's device list, device keys and one-time key claims. Only
//! local users are answered; another server sees no user-signing keys and no signatures
//! its users did not make themselves.

use std::{collections::BTreeMap, sync::Arc};

use axum::Json;
use ruma::api::federation::{
    device::get_devices,
    keys::{claim_keys, get_keys},
};
use serde_json::{Value, json};

use super::require_origin;
use crate::{
    api::{
        router::{AppRouter, route_any},
        ruma::Ruma,
    },
    error::{Error, Result},
    service::{Services, e2ee::query::KeysAnswer},
};

pub fn routes(router: AppRouter) -> AppRouter {
    let router = route_any(router, get_devices_route);
    let router = route_any(router, get_keys_route);
    route_any(router, claim_keys_route)
}

async fn get_devices_route(
    services: Arc<Services>,
    body: Ruma<get_devices::v1::Request>,
) -> Result<Json<Value>> {
    require_origin(&body)?;
    let user = &body.body.user_id;
    if user.server_name() != services.globals.server_name() {
        return Err(Error::not_found("User is not hosted on this server"));
    }
    let mut devices = Vec::new();
    for device in services.users.devices(user)? {
        let keys = services
            .e2ee
            .device_keys_for_view(user, device.device_id.as_str())?;
        // A device without keys cannot take part in encryption; peers skip it anyway.
        let Some(keys) = keys else {
            continue;
        };
        let mut entry = json!({ "device_id": device.device_id, "keys": keys });
        if let Some(name) = device.display_name {
            entry["device_display_name"] = json!(name);
        }
        devices.push(entry);
    }
    let mut out = json!({
        "user_id": user,
        "stream_id": services.e2ee.last_change(user)?.unwrap_or(0),
        "devices": devices,
    });
    for (field, kind) in [
        ("master_key", "master"),
        ("self_signing_key", "self_signing"),
    ] {
        if let Some(key) = services.e2ee.cross_signing_key_for_view(None, user, kind)? {
            out[field] = key;
        }
    }
    Ok(Json(out))
}

async fn get_keys_route(
    services: Arc<Services>,
    body: Ruma<get_keys::v1::Request>,
) -> Result<Json<Value>> {
    require_origin(&body)?;
    let own = services.globals.server_name();
    let users: BTreeMap<_, _> = body
        .body
        .device_keys
        .iter()
        .filter(|(u, _)| u.server_name() == own)
        .map(|(u, d)| (u.clone(), d.clone()))
        .collect();
    let mut answer = KeysAnswer::default();
    services.local_keys(None, &users, &mut answer)?;
    let mut out = answer.to_json(false);
    if let Some(map) = out.as_object_mut() {
        map.remove("failures");
    }
    Ok(Json(out))
}

async fn claim_keys_route(
    services: Arc<Services>,
    body: Ruma<claim_keys::v1::Request>,
) -> Result<Json<Value>> {
    require_origin(&body)?;
    let own = services.globals.server_name();
    let claims: BTreeMap<_, _> = body
        .body
        .one_time_keys
        .iter()
        .filter(|(u, _)| u.server_name() == own)
        .map(|(u, d)| (u.clone(), d.clone()))
        .collect();
    let keys = services.claim_local_keys(&claims)?;
    Ok(Json(json!({ "one_time_keys": keys })))
}
