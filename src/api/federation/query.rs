//! Queries another server makes about this one's users and aliases (spec: "Querying for
//! information"). Only local users and aliases are answered: this server speaks for no one
//! else.

use std::sync::Arc;

use ruma::{
    ServerName,
    api::federation::query::{get_profile_information, get_room_information},
};
use serde_json::json;

use super::require_origin;
use crate::{
    api::{
        router::{AppRouter, route},
        ruma::Ruma,
    },
    error::{Error, Result},
    service::Services,
};

pub fn routes(router: AppRouter) -> AppRouter {
    let router = route(router, get_profile_route);
    route(router, get_room_information_route)
}

async fn get_profile_route(
    services: Arc<Services>,
    body: Ruma<get_profile_information::v1::Request>,
) -> Result<get_profile_information::v1::Response> {
    get_profile(&services, require_origin(&body)?, &body.body)
}

async fn get_room_information_route(
    services: Arc<Services>,
    body: Ruma<get_room_information::v1::Request>,
) -> Result<get_room_information::v1::Response> {
    get_room_information(&services, require_origin(&body)?, &body.body)
}

/// `GET /query/profile?user_id=&field=`: a local user's display name and avatar URL (only
/// `field` when given). Fields the user has not set are left out; an unknown or
/// deactivated user is 404.
pub fn get_profile(
    services: &Services,
    _origin: &ServerName,
    request: &get_profile_information::v1::Request,
) -> Result<get_profile_information::v1::Response> {
    let user_id = &request.user_id;
    if user_id.server_name() != services.globals.server_name() {
        return Err(Error::not_found("User is not hosted on this server"));
    }
    let record = services
        .users
        .get(user_id)?
        .filter(|u| !u.deactivated)
        .ok_or_else(|| Error::not_found("Profile not found"))?;
    let mut response = get_profile_information::v1::Response::new();
    for (name, value) in [
        ("displayname", record.displayname),
        ("avatar_url", record.avatar_url),
    ] {
        let wanted = request.field.as_ref().is_none_or(|f| f.as_str() == name);
        if let (true, Some(value)) = (wanted, value) {
            response.set(name.to_owned(), json!(value));
        }
    }
    Ok(response)
}

/// `GET /query/directory?room_alias=`: the room of a local alias and the servers that can
/// help join it, this one first.
pub fn get_room_information(
    services: &Services,
    _origin: &ServerName,
    request: &get_room_information::v1::Request,
) -> Result<get_room_information::v1::Response> {
    let alias = &request.room_alias;
    let room_id = match alias.server_name() == services.globals.server_name() {
        true => services.rooms.resolve_alias(alias)?,
        false => None,
    }
    .ok_or_else(|| Error::not_found("Room alias not found"))?;
    let servers = services.rooms.room_servers(&room_id)?;
    Ok(get_room_information::v1::Response::new(room_id, servers))
}
