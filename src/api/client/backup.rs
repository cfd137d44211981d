//! Server-side key backup endpoints (spec: "Server-side key backups"): versions, and keys
//! for all rooms, one room or one session.

use std::sync::Arc;

use axum::Json;
use ruma::{UserId, api::client::backup as b};
use serde_json::{Map, Value, json};

use crate::{
    api::{
        router::{AppRouter, route_any},
        ruma::Ruma,
    },
    error::{Error, Result},
    service::Services,
};

pub fn routes(router: AppRouter) -> AppRouter {
    let router = route_any(router, create_version_route);
    let router = route_any(router, latest_version_route);
    let router = route_any(router, get_version_route);
    let router = route_any(router, update_version_route);
    let router = route_any(router, delete_version_route);
    let router = route_any(router, put_keys_route);
    let router = route_any(router, put_room_keys_route);
    let router = route_any(router, put_session_key_route);
    let router = route_any(router, get_keys_route);
    let router = route_any(router, get_room_keys_route);
    let router = route_any(router, get_session_key_route);
    let router = route_any(router, delete_keys_route);
    let router = route_any(router, delete_room_keys_route);
    route_any(router, delete_session_key_route)
}

fn algorithm_and_auth(body: &Option<Value>) -> Result<(Value, Value)> {
    let body = body
        .as_ref()
        .ok_or_else(|| Error::not_json("Expected a body"))?;
    match (body.get("algorithm"), body.get("auth_data")) {
        (Some(Value::String(a)), Some(auth @ Value::Object(_))) => Ok((json!(a), auth.clone())),
        _ => Err(Error::bad_json("algorithm and auth_data are required")),
    }
}

fn version_json(services: &Services, user: &UserId, version: Option<&str>) -> Result<Json<Value>> {
    let info = services
        .e2ee
        .backup_version(user, version)?
        .ok_or_else(|| Error::not_found("Unknown backup version"))?;
    let (count, etag) = services.e2ee.backup_count_etag(user, &info.version)?;
    Ok(Json(json!({
        "algorithm": info.record["algorithm"],
        "auth_data": info.record["auth_data"],
        "count": count,
        "etag": etag,
        "version": info.version,
    })))
}

fn count_etag(services: &Services, user: &UserId, version: &str) -> Result<Json<Value>> {
    let (count, etag) = services.e2ee.backup_count_etag(user, version)?;
    Ok(Json(json!({ "count": count, "etag": etag })))
}

async fn create_version_route(
    services: Arc<Services>,
    body: Ruma<b::create_backup_version::v3::Request>,
) -> Result<Json<Value>> {
    let (algorithm, auth_data) = algorithm_and_auth(&body.json_body())?;
    let version = services
        .e2ee
        .create_backup(body.user(), &algorithm, &auth_data)?;
    Ok(Json(json!({ "version": version })))
}

async fn latest_version_route(
    services: Arc<Services>,
    body: Ruma<b::get_latest_backup_info::v3::Request>,
) -> Result<Json<Value>> {
    version_json(&services, body.user(), None)
}

async fn get_version_route(
    services: Arc<Services>,
    body: Ruma<b::get_backup_info::v3::Request>,
) -> Result<Json<Value>> {
    version_json(&services, body.user(), Some(&body.body.version))
}

async fn update_version_route(
    services: Arc<Services>,
    body: Ruma<b::update_backup_version::v3::Request>,
) -> Result<Json<Value>> {
    let json = body.json_body();
    let (algorithm, auth_data) = algorithm_and_auth(&json)?;
    if let Some(v) = json.as_ref().and_then(|j| j.get("version"))
        && v.as_str() != Some(body.body.version.as_str())
    {
        return Err(Error::invalid_param("version does not match the path"));
    }
    services
        .e2ee
        .update_backup(body.user(), &body.body.version, &algorithm, &auth_data)?;
    Ok(Json(json!({})))
}

async fn delete_version_route(
    services: Arc<Services>,
    body: Ruma<b::delete_backup_version::v3::Request>,
) -> Result<Json<Value>> {
    services
        .e2ee
        .delete_backup(body.user(), &body.body.version)?;
    Ok(Json(json!({})))
}

fn object<'a>(json: &'a Option<Value>, field: &str) -> Result<&'a Map<String, Value>> {
    json.as_ref()
        .and_then(|j| j.get(field))
        .and_then(Value::as_object)
        .ok_or_else(|| Error::bad_json(format!("{field} must be an object")))
}

async fn put_keys_route(
    services: Arc<Services>,
    body: Ruma<b::add_backup_keys::v3::Request>,
) -> Result<Json<Value>> {
    let json = body.json_body();
    let rooms = object(&json, "rooms")?;
    let mut checked = Map::new();
    for (room, value) in rooms {
        let sessions = value
            .get("sessions")
            .ok_or_else(|| Error::bad_json("Each room needs sessions"))?;
        checked.insert(room.clone(), sessions.clone());
    }
    let user = body.user();
    services
        .e2ee
        .put_backup_keys(user, &body.body.version, &checked)?;
    count_etag(&services, user, &body.body.version)
}

async fn put_room_keys_route(
    services: Arc<Services>,
    body: Ruma<b::add_backup_keys_for_room::v3::Request>,
) -> Result<Json<Value>> {
    let json = body.json_body();
    let sessions = object(&json, "sessions")?.clone();
    let rooms = Map::from_iter([(body.body.room_id.to_string(), Value::Object(sessions))]);
    let user = body.user();
    services
        .e2ee
        .put_backup_keys(user, &body.body.version, &rooms)?;
    count_etag(&services, user, &body.body.version)
}

async fn put_session_key_route(
    services: Arc<Services>,
    body: Ruma<b::add_backup_keys_for_session::v3::Request>,
) -> Result<Json<Value>> {
    let data = body
        .json_body()
        .ok_or_else(|| Error::not_json("Expected a body"))?;
    let rooms = Map::from_iter([(
        body.body.room_id.to_string(),
        json!({ body.body.session_id.clone(): data }),
    )]);
    let user = body.user();
    services
        .e2ee
        .put_backup_keys(user, &body.body.version, &rooms)?;
    count_etag(&services, user, &body.body.version)
}

async fn get_keys_route(
    services: Arc<Services>,
    body: Ruma<b::get_backup_keys::v3::Request>,
) -> Result<Json<Value>> {
    let rooms = services
        .e2ee
        .backup_keys(body.user(), &body.body.version, None, None)?;
    let rooms: Map<String, Value> = rooms
        .into_iter()
        .map(|(room, sessions)| (room, json!({ "sessions": sessions })))
        .collect();
    Ok(Json(json!({ "rooms": rooms })))
}

async fn get_room_keys_route(
    services: Arc<Services>,
    body: Ruma<b::get_backup_keys_for_room::v3::Request>,
) -> Result<Json<Value>> {
    let room = body.body.room_id.as_str();
    let mut rooms = services
        .e2ee
        .backup_keys(body.user(), &body.body.version, Some(room), None)?;
    let sessions = rooms.remove(room).unwrap_or_else(|| json!({}));
    Ok(Json(json!({ "sessions": sessions })))
}

async fn get_session_key_route(
    services: Arc<Services>,
    body: Ruma<b::get_backup_keys_for_session::v3::Request>,
) -> Result<Json<Value>> {
    let room = body.body.room_id.as_str();
    let session = body.body.session_id.as_str();
    let rooms =
        services
            .e2ee
            .backup_keys(body.user(), &body.body.version, Some(room), Some(session))?;
    rooms
        .get(room)
        .and_then(|s| s.get(session))
        .cloned()
        .map(Json)
        .ok_or_else(|| Error::not_found("No key for this session"))
}

async fn delete_keys_route(
    services: Arc<Services>,
    body: Ruma<b::delete_backup_keys::v3::Request>,
) -> Result<Json<Value>> {
    let user = body.user();
    services
        .e2ee
        .delete_backup_keys(user, &body.body.version, None, None)?;
    count_etag(&services, user, &body.body.version)
}

async fn delete_room_keys_route(
    services: Arc<Services>,
    body: Ruma<b::delete_backup_keys_for_room::v3::Request>,
) -> Result<Json<Value>> {
    let user = body.user();
    let room = body.body.room_id.as_str();
    services
        .e2ee
        .delete_backup_keys(user, &body.body.version, Some(room), None)?;
    count_etag(&services, user, &body.body.version)
}

async fn delete_session_key_route(
    services: Arc<Services>,
    body: Ruma<b::delete_backup_keys_for_session::v3::Request>,
) -> Result<Json<Value>> {
    let user = body.user();
    let (room, session) = (body.body.room_id.as_str(), body.body.session_id.as_str());
    services
        .e2ee
        .delete_backup_keys(user, &body.body.version, Some(room), Some(session))?;
    count_etag(&services, user, &body.body.version)
}
