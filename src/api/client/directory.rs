//! Room aliases, the public room directory and the user directory (spec: "Room aliases",
//! "Listing rooms", "User directory"). Permissions follow Synapse: an alias may be deleted
//! by whoever created it or by a room moderator, and a room's directory entry may be
//! changed by anyone allowed to send `m.room.canonical_alias` in it.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{
    OwnedMxcUri, OwnedRoomId, RoomAliasId, RoomId, ServerName, UInt, UserId,
    api::client::{
        alias::{create_alias, delete_alias, get_alias},
        directory::{
            get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility,
        },
        room::{Visibility, aliases},
        user_directory::search_users,
    },
    directory::{Filter, RoomNetwork},
    events::StateEventType,
};
use serde_json::{Map, Value};

use super::membership::check_can_see_room;
use crate::{
    api::{
        router::{AppRouter, route},
        ruma::Ruma,
    },
    error::{Error, Result},
    service::{
        Services,
        rooms::{PduBuilder, directory::PublicRoomsPage},
    },
};

pub fn routes(router: AppRouter) -> AppRouter {
    let router = route(router, create_alias_route);
    let router = route(router, get_alias_route);
    let router = route(router, delete_alias_route);
    let router = route(router, room_aliases_route);
    let router = route(router, public_rooms_route);
    let router = route(router, public_rooms_filtered_route);
    let router = route(router, get_visibility_route);
    let router = route(router, set_visibility_route);
    route(router, search_users_route)
}

/// Synapse's rule for moderating a room's aliases and directory entry: joined, with the
/// power to send `m.room.canonical_alias` (creators of v12 rooms always have it).
fn is_room_moderator(services: &Services, user: &UserId, room_id: &RoomId) -> Result<bool> {
    Ok(services.rooms.is_joined(user, room_id)?
        && services
            .rooms
            .power_levels(room_id)?
            .user_can_send_state(user, StateEventType::RoomCanonicalAlias))
}

async fn create_alias_route(
    services: Arc<Services>,
    body: Ruma<create_alias::v3::Request>,
) -> Result<create_alias::v3::Response> {
    let req = &body.body;
    if req.room_alias.server_name() != services.globals.server_name() {
        return Err(Error::invalid_param("Room alias must be on this server"));
    }
    if !services.rooms.is_joined(body.user(), &req.room_id)? {
        return Err(Error::forbidden(
            "You must be in the room to create an alias for it",
        ));
    }
    services
        .rooms
        .set_alias(&req.room_alias, &req.room_id, body.user().as_str())?;
    Ok(create_alias::v3::Response::new())
}

async fn get_alias_route(
    services: Arc<Services>,
    body: Ruma<get_alias::v3::Request>,
) -> Result<get_alias::v3::Response> {
    let alias = &body.body.room_alias;
    if alias.server_name() != services.globals.server_name() {
        let (room_id, servers) = super::membership::resolve_room_with_servers(
            &services,
            <&ruma::RoomOrAliasId>::from(&**alias),
        )
        .await?;
        return Ok(get_alias::v3::Response::new(room_id, servers));
    }
    let room_id = services
        .rooms
        .resolve_alias(alias)?
        .ok_or_else(|| Error::not_found("Room alias not found"))?;
    let servers = services.rooms.room_servers(&room_id)?;
    Ok(get_alias::v3::Response::new(room_id, servers))
}

async fn delete_alias_route(
    services: Arc<Services>,
    body: Ruma<delete_alias::v3::Request>,
) -> Result<delete_alias::v3::Response> {
    let (user, alias) = (body.user(), &body.body.room_alias);
    if alias.server_name() != services.globals.server_name() {
        return Err(Error::invalid_param("Room alias must be on this server"));
    }
    let room_id = services
        .rooms
        .resolve_alias(alias)?
        .ok_or_else(|| Error::not_found("Room alias not found"))?;
    let is_creator = services.rooms.alias_creator(alias)?.as_deref() == Some(user.as_str());
    if !is_creator && !is_room_moderator(&services, user, &room_id)? {
        return Err(Error::forbidden(
            "You don't have permission to delete the alias",
        ));
    }
    services.rooms.remove_alias(alias)?;
    drop_from_canonical_alias(&services, user, &room_id, alias).await?;
    Ok(delete_alias::v3::Response::new())
}

/// A deleted alias no longer points to the room, so the room's `m.room.canonical_alias`
/// must stop naming it. Sent as the deleting user; if they lack the power, the event stays
/// as it is (as in Synapse) and the alias is still gone.
async fn drop_from_canonical_alias(
    services: &Services,
    user: &UserId,
    room_id: &RoomId,
    alias: &RoomAliasId,
) -> Result<()> {
    let _lock = services.rooms.lock_room(room_id).await;
    let Some(mut content) = services
        .rooms
        .room_state_get(room_id, &StateEventType::RoomCanonicalAlias, "")?
        .and_then(|pdu| serde_json::from_str::<Map<String, Value>>(pdu.content.get()).ok())
    else {
        return Ok(());
    };
    let mut changed = false;
    if content.get("alias").and_then(Value::as_str) == Some(alias.as_str()) {
        content.remove("alias");
        changed = true;
    }
    if let Some(Value::Array(alt)) = content.get_mut("alt_aliases") {
        let before = alt.len();
        alt.retain(|a| a.as_str() != Some(alias.as_str()));
        changed |= alt.len() != before;
    }
    if !changed {
        return Ok(());
    }
    let builder = PduBuilder::state(StateEventType::RoomCanonicalAlias, "", &content);
    if let Err(e) = services
        .rooms
        .build_and_append_locked(user, Some(room_id), builder)
    {
        tracing::info!(%room_id, %alias, "canonical alias event not updated: {e}");
    }
    Ok(())
}

async fn room_aliases_route(
    services: Arc<Services>,
    body: Ruma<aliases::v3::Request>,
) -> Result<aliases::v3::Response> {
    check_can_see_room(&services, body.user(), &body.body.room_id)?;
    Ok(aliases::v3::Response::new(
        services.rooms.local_aliases(&body.body.room_id)?,
    ))
}

/// The published rooms of this server, or of `server` asked over federation.
async fn list_public_rooms(
    services: &Services,
    server: Option<&ServerName>,
    limit: Option<UInt>,
    since: Option<&str>,
    filter: &Filter,
    network: &RoomNetwork,
) -> Result<PublicRoomsPage> {
    if let Some(server) = server.filter(|s| *s != services.globals.server_name()) {
        let mut request =
            ruma::api::federation::directory::get_public_rooms_filtered::v1::Request::new();
        request.limit = limit;
        request.since = since.map(ToOwned::to_owned);
        request.filter = filter.clone();
        request.room_network = network.clone();
        let response = services.federation.send(server, request).await?;
        return Ok(PublicRoomsPage {
            chunk: response.chunk,
            next_batch: response.next_batch,
            prev_batch: response.prev_batch,
            total: response
                .total_room_count_estimate
                .unwrap_or_else(|| UInt::from(0u32)),
        });
    }
    services
        .rooms
        .public_rooms_page(limit, since, filter, network)
}

async fn public_rooms_route(
    services: Arc<Services>,
    body: Ruma<get_public_rooms::v3::Request>,
) -> Result<get_public_rooms::v3::Response> {
    let req = &body.body;
    let listing = list_public_rooms(
        &services,
        req.server.as_deref(),
        req.limit,
        req.since.as_deref(),
        &Filter::new(),
        &RoomNetwork::Matrix,
    )
    .await?;
    let mut response = get_public_rooms::v3::Response::new(listing.chunk);
    response.next_batch = listing.next_batch;
    response.prev_batch = listing.prev_batch;
    response.total_room_count_estimate = Some(listing.total);
    Ok(response)
}

async fn public_rooms_filtered_route(
    services: Arc<Services>,
    body: Ruma<get_public_rooms_filtered::v3::Request>,
) -> Result<get_public_rooms_filtered::v3::Response> {
    let req = &body.body;
    let listing = list_public_rooms(
        &services,
        req.server.as_deref(),
        req.limit,
        req.since.as_deref(),
        &req.filter,
        &req.room_network,
    )
    .await?;
    let mut response = get_public_rooms_filtered::v3::Response::new();
    response.chunk = listing.chunk;
    response.next_batch = listing.next_batch;
    response.prev_batch = listing.prev_batch;
    response.total_room_count_estimate = Some(listing.total);
    Ok(response)
}

async fn get_visibility_route(
    services: Arc<Services>,
    body: Ruma<get_room_visibility::v3::Request>,
) -> Result<get_room_visibility::v3::Response> {
    let room_id = &body.body.room_id;
    if !services.rooms.exists(room_id)? {
        return Err(Error::not_found("Room not found"));
    }
    let visibility = if services.rooms.is_public(room_id)? {
        Visibility::Public
    } else {
        Visibility::Private
    };
    Ok(get_room_visibility::v3::Response::new(visibility))
}

async fn set_visibility_route(
    services: Arc<Services>,
    body: Ruma<set_room_visibility::v3::Request>,
) -> Result<set_room_visibility::v3::Response> {
    let room_id = &body.body.room_id;
    let public = match body.body.visibility {
        Visibility::Public => true,
        Visibility::Private => false,
        _ => return Err(Error::invalid_param("visibility must be public or private")),
    };
    if !services.rooms.exists(room_id)? {
        return Err(Error::not_found("Room not found"));
    }
    if !is_room_moderator(&services, body.user(), room_id)? {
        return Err(Error::forbidden(
            "You need to be a moderator of the room to change its directory entry",
        ));
    }
    services.rooms.set_public(room_id, public)?;
    Ok(set_room_visibility::v3::Response::new())
}

/// Synapse caps the page of the user directory at 50.
const MAX_USER_RESULTS: usize = 50;

/// Whether anyone may see who is in the room: it is publicly joinable or world-readable
/// (Synapse's definition of a public room for the user directory).
fn publicly_visible(services: &Services, room_id: &RoomId) -> Result<bool> {
    let state = services.rooms.current_state(room_id)?;
    let field = |kind: StateEventType, field: &str| -> Result<Option<Value>> {
        Ok(services
            .rooms
            .state_get(&state, &kind, "")?
            .and_then(|pdu| pdu.content_field(field)))
    };
    Ok(
        field(StateEventType::RoomJoinRules, "join_rule")?.is_some_and(|v| v == "public")
            || field(StateEventType::RoomHistoryVisibility, "history_visibility")?
                .is_some_and(|v| v == "world_readable"),
    )
}

/// Users matching the term (id or display name) whom the searcher may discover: those
/// sharing a room with them and those in a public room.
async fn search_users_route(
    services: Arc<Services>,
    body: Ruma<search_users::v3::Request>,
) -> Result<search_users::v3::Response> {
    let searcher = body.user();
    let term = body.body.search_term.trim().to_lowercase();
    let limit = usize::try_from(u64::from(body.body.limit))
        .unwrap_or(MAX_USER_RESULTS)
        .min(MAX_USER_RESULTS);
    let shared: HashSet<OwnedRoomId> = services.rooms.rooms_joined(searcher)?.into_iter().collect();
    let mut public: HashMap<OwnedRoomId, bool> = HashMap::new();
    let mut results = Vec::new();
    for (user_id, record) in services.users.search(&term)? {
        let mut visible = false;
        for room_id in services.rooms.rooms_joined(&user_id)? {
            visible = shared.contains(&room_id)
                || match public.get(&room_id) {
                    Some(v) => *v,
                    None => {
                        let v = publicly_visible(&services, &room_id)?;
                        public.insert(room_id, v);
                        v
                    }
                };
            if visible {
                break;
            }
        }
        if visible {
            results.push((user_id, record));
        }
    }
    // Names that start with the term come first, then by user id for a stable order.
    let starts = |user_id: &UserId, name: Option<&str>| {
        user_id.localpart().to_lowercase().starts_with(&term)
            || name.is_some_and(|n| n.to_lowercase().starts_with(&term))
    };
    results.sort_by(|(a, ra), (b, rb)| {
        starts(b, rb.displayname.as_deref())
            .cmp(&starts(a, ra.displayname.as_deref()))
            .then_with(|| a.cmp(b))
    });
    let limited = results.len() > limit;
    results.truncate(limit);
    let results = results
        .into_iter()
        .map(|(user_id, record)| {
            let mut user = search_users::v3::User::new(user_id);
            user.display_name = record.displayname;
            user.avatar_url = record.avatar_url.map(OwnedMxcUri::from);
            user
        })
        .collect();
    Ok(search_users::v3::Response::new(results, limited))
}
