//! Key management and cross-signing (spec: "End-to-End Encryption"): upload, query, claim
//! and changes of device keys; cross-signing keys and signatures. The bodies are read as
//! JSON: the server checks ids and signatures and otherwise stores what it is given.

use std::{sync::Arc, time::Duration};

use axum::Json;
use ruma::api::client::keys::{
    claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys,
};
use serde_json::{Map, Value, json};

use super::{account::uiaa, message};
use crate::{
    api::{
        router::{AppRouter, route_any},
        ruma::Ruma,
    },
    error::{Error, Result},
    service::{
        Services,
        e2ee::{device_lists, keys::Upload},
    },
};

pub fn routes(router: AppRouter) -> AppRouter {
    let router = route_any(router, upload_keys_route);
    let router = route_any(router, get_keys_route);
    let router = route_any(router, claim_keys_route);
    let router = route_any(router, get_key_changes_route);
    let router = route_any(router, upload_signing_keys_route);
    route_any(router, upload_signatures_route)
}

/// How long a query waits for other servers when the client does not say (the spec's
/// recommendation).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

fn object_field(body: &Value, field: &str) -> Result<Map<String, Value>> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(_) => Err(Error::bad_json(format!("{field} must be an object"))),
    }
}

async fn upload_keys_route(
    services: Arc<Services>,
    body: Ruma<upload_keys::v3::Request>,
) -> Result<Json<Value>> {
    let json = body.json_body().unwrap_or_default();
    let user = body.user();
    let device = body.device().as_str();
    let upload = Upload {
        device_keys: json.get("device_keys").filter(|v| !v.is_null()).cloned(),
        one_time_keys: object_field(&json, "one_time_keys")?,
        fallback_keys: object_field(&json, "fallback_keys")?,
    };
    let keys_changed = upload.device_keys.is_some()
        && services.e2ee.device_keys(user, device)?.as_ref() != upload.device_keys.as_ref();
    services.e2ee.upload(user, device, upload)?;
    if keys_changed {
        services.announce_device_change(user, device, false)?;
    }
    Ok(Json(json!({
        "one_time_key_counts": services.e2ee.one_time_key_counts(user, device),
    })))
}

async fn get_keys_route(
    services: Arc<Services>,
    body: Ruma<get_keys::v3::Request>,
) -> Result<Json<Value>> {
    let timeout = body
        .body
        .timeout
        .unwrap_or(DEFAULT_TIMEOUT)
        .min(DEFAULT_TIMEOUT * 3);
    let answer = services
        .query_keys(body.user(), &body.body.device_keys, timeout)
        .await?;
    Ok(Json(answer.to_json(true)))
}

async fn claim_keys_route(
    services: Arc<Services>,
    body: Ruma<claim_keys::v3::Request>,
) -> Result<Json<Value>> {
    let timeout = body
        .body
        .timeout
        .unwrap_or(DEFAULT_TIMEOUT)
        .min(DEFAULT_TIMEOUT * 3);
    let (keys, failures) = services
        .claim_keys(&body.body.one_time_keys, timeout)
        .await?;
    Ok(Json(json!({ "one_time_keys": keys, "failures": failures })))
}

async fn get_key_changes_route(
    services: Arc<Services>,
    body: Ruma<get_key_changes::v3::Request>,
) -> Result<Json<Value>> {
    let from = message::parse_token(Some(body.body.from.as_str()))?.unwrap_or(0);
    let to = message::parse_token(Some(body.body.to.as_str()))?
        .unwrap_or(0)
        .min(services.db.committed());
    let changes = device_lists::changes(&services, body.user(), from, to)?;
    Ok(Json(
        json!({ "changed": changes.changed, "left": changes.left }),
    ))
}

async fn upload_signing_keys_route(
    services: Arc<Services>,
    body: Ruma<upload_signing_keys::v3::Request>,
) -> Result<Json<Value>> {
    let json = body.json_body().unwrap_or_default();
    let user = body.user();
    let mut keys = Map::new();
    for (field, kind) in [
        ("master_key", "master"),
        ("self_signing_key", "self_signing"),
        ("user_signing_key", "user_signing"),
    ] {
        if let Some(key) = json.get(field).filter(|v| !v.is_null()) {
            keys.insert(kind.to_owned(), key.clone());
        }
    }
    if services.e2ee.signing_upload_needs_auth(user, &keys)? {
        uiaa(
            &services,
            Some(&json),
            &[vec!["m.login.password"]],
            Some(user),
        )
        .await?;
    }
    if keys.is_empty() {
        return Ok(Json(json!({})));
    }
    services.e2ee.upload_cross_signing(user, &keys)?;
    services.announce_signing_keys(user)?;
    Ok(Json(json!({})))
}

async fn upload_signatures_route(
    services: Arc<Services>,
    body: Ruma<upload_signatures::v3::Request>,
) -> Result<Json<Value>> {
    let json = body.json_body().unwrap_or_default();
    let Value::Object(signed) = json else {
        return Err(Error::bad_json("Expected an object of signed keys"));
    };
    let failures = services.e2ee.upload_signatures(body.user(), &signed)?;
    services.wake_room_peers(body.user())?;
    Ok(Json(json!({ "failures": failures })))
}
