//! Client config: global and per-room account data, and room tags (spec: "Client Config",
//! "Room Tagging"). Tags are the room account data event `m.tag`, so `/sync` delivers them
//! like any other account data.

use std::sync::{Arc, Mutex};

use ruma::{
    RoomId, UserId,
    api::client::{
        config::{
            get_global_account_data, get_room_account_data, set_global_account_data,
            set_room_account_data,
        },
        tag::{create_tag, delete_tag, get_tags},
    },
    events::tag::{TagInfo, TagName, Tags},
    serde::Raw,
};
use serde_json::{Map, Value, json, value::to_raw_value};

use crate::{
    api::{
        router::{AppRouter, route},
        ruma::Ruma,
    },
    error::{Error, Result},
    service::Services,
};

pub fn routes(router: AppRouter) -> AppRouter {
    let router = route(router, set_global_route);
    let router = route(router, get_global_route);
    let router = route(router, set_room_route);
    let router = route(router, get_room_route);
    let router = route(router, get_tags_route);
    let router = route(router, create_tag_route);
    route(router, delete_tag_route)
}

fn check_own(sender: &UserId, target: &UserId) -> Result<()> {
    if sender != target {
        return Err(Error::forbidden(
            "You may only access your own account data",
        ));
    }
    Ok(())
}

/// Types the server maintains through their own endpoints; the spec answers 405 to a
/// client writing them here.
fn check_client_writable(kind: &str, server_managed: &str) -> Result<()> {
    if kind == server_managed {
        return Err(Error::bad_json(format!(
            "{kind} is managed by the server and cannot be set through this API"
        ))
        .with_status(http::StatusCode::METHOD_NOT_ALLOWED));
    }
    Ok(())
}

async fn set_global_route(
    services: Arc<Services>,
    body: Ruma<set_global_account_data::v3::Request>,
) -> Result<set_global_account_data::v3::Response> {
    let req = &body.body;
    check_own(body.user(), &req.user_id)?;
    let kind = req.event_type.to_string();
    check_client_writable(&kind, "m.push_rules")?;
    services
        .account_data
        .set(&req.user_id, None, &kind, req.data.json().to_owned())?;
    Ok(set_global_account_data::v3::Response::new())
}

async fn get_global_route(
    services: Arc<Services>,
    body: Ruma<get_global_account_data::v3::Request>,
) -> Result<get_global_account_data::v3::Response> {
    let req = &body.body;
    check_own(body.user(), &req.user_id)?;
    let content = services
        .account_data
        .get(&req.user_id, None, &req.event_type.to_string())?
        .ok_or_else(|| Error::not_found("Account data not found"))?;
    Ok(get_global_account_data::v3::Response::new(Raw::from_json(
        content,
    )))
}

async fn set_room_route(
    services: Arc<Services>,
    body: Ruma<set_room_account_data::v3::Request>,
) -> Result<set_room_account_data::v3::Response> {
    let req = &body.body;
    check_own(body.user(), &req.user_id)?;
    let kind = req.event_type.to_string();
    check_client_writable(&kind, "m.fully_read")?;
    services.account_data.set(
        &req.user_id,
        Some(&req.room_id),
        &kind,
        req.data.json().to_owned(),
    )?;
    Ok(set_room_account_data::v3::Response::new())
}

async fn get_room_route(
    services: Arc<Services>,
    body: Ruma<get_room_account_data::v3::Request>,
) -> Result<get_room_account_data::v3::Response> {
    let req = &body.body;
    check_own(body.user(), &req.user_id)?;
    let content = services
        .account_data
        .get(
            &req.user_id,
            Some(&req.room_id),
            &req.event_type.to_string(),
        )?
        .ok_or_else(|| Error::not_found("Account data not found"))?;
    Ok(get_room_account_data::v3::Response::new(Raw::from_json(
        content,
    )))
}

const TAG_TYPE: &str = "m.tag";

/// Tag changes read, modify and write `m.tag`; this keeps two concurrent changes from
/// losing one of them. Writes are short and rare, so one lock for everyone is enough.
static TAG_WRITE: Mutex<()> = Mutex::new(());

/// The `tags` object of the room's `m.tag` event (empty if there is none or it is not an
/// object: a client may have written anything there through the account data API).
fn stored_tags(
    services: &Services,
    user_id: &UserId,
    room_id: &RoomId,
) -> Result<Map<String, Value>> {
    Ok(services
        .account_data
        .get(user_id, Some(room_id), TAG_TYPE)?
        .and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok())
        .and_then(
            |mut content| match content.get_mut("tags").map(Value::take) {
                Some(Value::Object(tags)) => Some(tags),
                _ => None,
            },
        )
        .unwrap_or_default())
}

fn store_tags(
    services: &Services,
    user_id: &UserId,
    room_id: &RoomId,
    tags: Map<String, Value>,
) -> Result<()> {
    let content = to_raw_value(&json!({ "tags": tags }))?;
    services
        .account_data
        .set(user_id, Some(room_id), TAG_TYPE, content)
}

async fn get_tags_route(
    services: Arc<Services>,
    body: Ruma<get_tags::v3::Request>,
) -> Result<get_tags::v3::Response> {
    let req = &body.body;
    check_own(body.user(), &req.user_id)?;
    let tags: Tags = stored_tags(&services, &req.user_id, &req.room_id)?
        .into_iter()
        .map(|(name, info)| {
            // A malformed entry is still a tag; only its order is lost.
            let info = serde_json::from_value(info).unwrap_or_else(|_| TagInfo::new());
            (TagName::from(name), info)
        })
        .collect();
    Ok(get_tags::v3::Response::new(tags))
}

async fn create_tag_route(
    services: Arc<Services>,
    body: Ruma<create_tag::v3::Request>,
) -> Result<create_tag::v3::Response> {
    let req = &body.body;
    check_own(body.user(), &req.user_id)?;
    let info = serde_json::to_value(&req.tag_info)?;
    let _guard = TAG_WRITE.lock().unwrap_or_else(|e| e.into_inner());
    let mut tags = stored_tags(&services, &req.user_id, &req.room_id)?;
    tags.insert(req.tag.clone(), info);
    store_tags(&services, &req.user_id, &req.room_id, tags)?;
    Ok(create_tag::v3::Response::new())
}

async fn delete_tag_route(
    services: Arc<Services>,
    body: Ruma<delete_tag::v3::Request>,
) -> Result<delete_tag::v3::Response> {
    let req = &body.body;
    check_own(body.user(), &req.user_id)?;
    let _guard = TAG_WRITE.lock().unwrap_or_else(|e| e.into_inner());
    let mut tags = stored_tags(&services, &req.user_id, &req.room_id)?;
    // Deleting a tag the room does not have succeeds, as in Synapse.
    if tags.remove(&req.tag).is_some() {
        store_tags(&services, &req.user_id, &req.room_id, tags)?;
    }
    Ok(delete_tag::v3::Response::new())
}
