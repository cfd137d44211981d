//! Creating and upgrading rooms (spec: "Creation", "Room upgrades").

use std::sync::Arc;

use ruma::{
    OwnedRoomId, RoomAliasId, RoomId,
    api::client::room::{Visibility, create_room, upgrade_room},
    events::StateEventType,
};
use serde_json::{Map, Value, json};

use crate::{
    api::{
        router::{AppRouter, route},
        ruma::Ruma,
    },
    error::{Error, Result},
    service::{Services, globals::random_string, rooms::PduBuilder},
};

pub fn routes(router: AppRouter) -> AppRouter {
    let router = route(router, create_room_route);
    route(router, upgrade_room_route)
}

/// Room versions this server can create and join, all stable.
pub use crate::service::rooms::remote::SUPPORTED_VERSIONS;

fn alias_for(services: &Services, localpart: &str) -> Result<ruma::OwnedRoomAliasId> {
    if localpart.is_empty() || localpart.contains(':') || localpart.contains(char::is_whitespace) {
        return Err(Error::invalid_param("Invalid room alias name"));
    }
    RoomAliasId::parse(format!("#{localpart}:{}", services.globals.server_name()))
        .map_err(|_| Error::invalid_param("Invalid room alias name"))
}

/// The full createRoom: create event, creator join, power levels, preset state, initial
/// state, name, topic, invites, in that order (as Synapse does).
async fn create_room_route(
    services: Arc<Services>,
    body: Ruma<create_room::v3::Request>,
) -> Result<create_room::v3::Response> {
    let sender = body.user().to_owned();
    let req = &body.body;
    if !services.config().allow_room_creation {
        return Err(Error::forbidden("Room creation is disabled on this server"));
    }
    let json_body = body.json_body().unwrap_or_default();
    let version = req
        .room_version
        .clone()
        .unwrap_or_else(|| services.config().default_room_version.clone());
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(Error::unsupported_room_version(
            "This server does not support that room version",
        ));
    }
    let rules = version
        .rules()
        .ok_or_else(|| Error::unsupported_room_version("Unsupported room version"))?;
    let alias = match &req.room_alias_name {
        Some(name) => {
            let alias = alias_for(&services, name)?;
            if services.rooms.resolve_alias(&alias)?.is_some() {
                return Err(Error::room_in_use("Room alias already taken"));
            }
            Some(alias)
        }
        None => None,
    };
    for user in &req.invite {
        if user.server_name() == services.globals.server_name()
            && !services.users.is_active(user)?
        {
            return Err(Error::not_found(format!("Unknown user {user}")));
        }
    }

    // initial_state is checked before anything is created: a refused request must not
    // leave a half-built room behind.
    let initial_state: Vec<Value> = json_body
        .get("initial_state")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for event in &initial_state {
        match event.get("type").and_then(Value::as_str) {
            None => return Err(Error::bad_json("initial_state event without type")),
            Some(kind @ ("m.room.create" | "m.room.member")) => {
                return Err(Error::bad_json(format!(
                    "{kind} is not allowed in initial_state"
                )));
            }
            Some(_) => {}
        }
        if event.get("content").is_some_and(|c| !c.is_object()) {
            return Err(Error::bad_json("initial_state content must be an object"));
        }
    }

    let preset = json_body
        .get("preset")
        .and_then(Value::as_str)
        .map(ToOwned::to_owned)
        .unwrap_or_else(|| {
            if req.visibility == Visibility::Public {
                "public_chat".to_owned()
            } else {
                "private_chat".to_owned()
            }
        });
    if !matches!(
        preset.as_str(),
        "public_chat" | "private_chat" | "trusted_private_chat"
    ) {
        return Err(Error::invalid_param("Unknown preset"));
    }
    let trusted = preset == "trusted_private_chat";

    // m.room.create
    let mut create_content = json_body
        .get("creation_content")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if !rules.authorization.use_room_create_sender {
        create_content.insert("creator".to_owned(), json!(sender));
    }
    create_content.insert("room_version".to_owned(), json!(version.as_str()));
    if rules.authorization.additional_room_creators && trusted && !req.invite.is_empty() {
        create_content.insert("additional_creators".to_owned(), json!(req.invite));
    }
    let create_builder = PduBuilder::state(StateEventType::RoomCreate, "", &create_content);
    let room_id: OwnedRoomId = if rules.authorization.room_create_event_id_as_room_id {
        services
            .rooms
            .build_and_append_locked(&sender, None, create_builder)?
            .room_id
            .clone()
    } else {
        let room_id = RoomId::parse(format!(
            "!{}:{}",
            random_string(18),
            services.globals.server_name()
        ))
        .map_err(Error::internal)?;
        services
            .rooms
            .build_and_append_locked(&sender, Some(&room_id), create_builder)?;
        room_id
    };
    let _lock = services.rooms.lock_room(&room_id).await;
    let append = |builder: PduBuilder| {
        services
            .rooms
            .build_and_append_locked(&sender, Some(&room_id), builder)
    };

    // The creator joins.
    let mut member = Map::new();
    member.insert("membership".to_owned(), json!("join"));
    if let Some(user) = services.users.get(&sender)? {
        if let Some(name) = user.displayname {
            member.insert("displayname".to_owned(), json!(name));
        }
        if let Some(avatar) = user.avatar_url {
            member.insert("avatar_url".to_owned(), json!(avatar));
        }
    }
    if req.is_direct {
        member.insert("is_direct".to_owned(), json!(true));
    }
    append(PduBuilder::state(
        StateEventType::RoomMember,
        sender.as_str(),
        &member,
    ))?;

    // Power levels.
    let mut users = Map::new();
    if !rules.authorization.explicitly_privilege_room_creators {
        users.insert(sender.to_string(), json!(100));
        if trusted {
            for invitee in &req.invite {
                users.insert(invitee.to_string(), json!(100));
            }
        }
    }
    let mut power_levels = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": if preset == "public_chat" { 50 } else { 0 },
    });
    // Each key of the override replaces the default's key (Synapse: `dict.update`), so an
    // `events` override is the whole `events` map.
    if let Some(Value::Object(over)) = json_body.get("power_level_content_override")
        && let Value::Object(base) = &mut power_levels
    {
        for (key, value) in over {
            base.insert(key.clone(), value.clone());
        }
    }
    let is_room_state = |e: &Value, kind: &str| {
        e.get("type").and_then(Value::as_str) == Some(kind)
            && e.get("state_key")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
    };
    let in_initial = |kind: &str| initial_state.iter().any(|e| is_room_state(e, kind));
    // Power levels in initial_state replace the generated ones, override included (as in
    // Synapse), and are sent in their place.
    let initial_power = initial_state
        .iter()
        .find(|e| is_room_state(e, "m.room.power_levels"))
        .map(|e| e.get("content").cloned().unwrap_or_else(|| json!({})));
    append(PduBuilder::state(
        StateEventType::RoomPowerLevels,
        "",
        initial_power.as_ref().unwrap_or(&power_levels),
    ))?;

    if let Some(alias) = &alias {
        services.rooms.set_alias(alias, &room_id, sender.as_str())?;
        append(PduBuilder::state(
            StateEventType::RoomCanonicalAlias,
            "",
            &json!({ "alias": alias }),
        ))?;
    }

    // Preset state, unless initial_state sets the same.
    let join_rule = if preset == "public_chat" {
        "public"
    } else {
        "invite"
    };
    if !in_initial("m.room.join_rules") {
        append(PduBuilder::state(
            StateEventType::RoomJoinRules,
            "",
            &json!({ "join_rule": join_rule }),
        ))?;
    }
    if !in_initial("m.room.history_visibility") {
        append(PduBuilder::state(
            StateEventType::RoomHistoryVisibility,
            "",
            &json!({ "history_visibility": "shared" }),
        ))?;
    }
    if !in_initial("m.room.guest_access") {
        let guest = if preset == "public_chat" {
            "forbidden"
        } else {
            "can_join"
        };
        append(PduBuilder::state(
            StateEventType::RoomGuestAccess,
            "",
            &json!({ "guest_access": guest }),
        ))?;
    }
    for event in &initial_state {
        if is_room_state(event, "m.room.power_levels") {
            continue;
        }
        let kind = event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let state_key = event.get("state_key").and_then(Value::as_str).unwrap_or("");
        let content = event.get("content").cloned().unwrap_or_else(|| json!({}));
        append(PduBuilder::state(kind.into(), state_key, &content))?;
    }
    if let Some(name) = &req.name {
        append(PduBuilder::state(
            StateEventType::RoomName,
            "",
            &json!({ "name": name }),
        ))?;
    }
    if let Some(topic) = &req.topic {
        append(PduBuilder::state(
            StateEventType::RoomTopic,
            "",
            &json!({ "topic": topic }),
        ))?;
    }
    drop(_lock);

    for invitee in &req.invite {
        if let Err(e) =
            super::membership::invite(&services, &sender, &room_id, invitee, req.is_direct, None)
                .await
        {
            tracing::warn!(%invitee, "invite on room creation failed: {e}");
        }
    }
    if req.visibility == Visibility::Public {
        services.rooms.set_public(&room_id, true)?;
    }
    Ok(create_room::v3::Response::new(room_id))
}

/// State carried from the old room into its replacement.
const CARRIED_STATE: &[StateEventType] = &[
    StateEventType::RoomServerAcl,
    StateEventType::RoomEncryption,
    StateEventType::RoomName,
    StateEventType::RoomAvatar,
    StateEventType::RoomTopic,
    StateEventType::RoomGuestAccess,
    StateEventType::RoomHistoryVisibility,
    StateEventType::RoomJoinRules,
];

async fn upgrade_room_route(
    services: Arc<Services>,
    body: Ruma<upgrade_room::v3::Request>,
) -> Result<upgrade_room::v3::Response> {
    let sender = body.user().to_owned();
    let old_room = body.body.room_id.clone();
    let new_version = body.body.new_version.clone();
    if !SUPPORTED_VERSIONS.contains(&new_version) {
        return Err(Error::unsupported_room_version(
            "This server does not support that room version",
        ));
    }
    let rules = new_version
        .rules()
        .ok_or_else(|| Error::unsupported_room_version("Unsupported room version"))?;
    let old_state = services.rooms.current_state(&old_room)?;
    if !services.rooms.is_joined(&sender, &old_room)? {
        return Err(Error::forbidden("You are not in this room"));
    }
    let power = services.rooms.power_levels_at(&old_room, &old_state)?;
    if !power.user_can_send_state(&sender, StateEventType::RoomTombstone) {
        return Err(Error::forbidden("You may not upgrade this room"));
    }
    let last_event = services
        .rooms
        .forward_extremities(&old_room)?
        .into_iter()
        .next();

    let mut create = Map::new();
    if let Some(old_create) =
        services
            .rooms
            .state_get(&old_state, &StateEventType::RoomCreate, "")?
        && let Ok(Value::Object(content)) = serde_json::from_str::<Value>(old_create.content.get())
    {
        // Keep custom creation content (e.g. `type: m.space`), drop version-specific fields.
        for (k, v) in content {
            if !matches!(
                k.as_str(),
                "creator" | "room_version" | "predecessor" | "additional_creators"
            ) {
                create.insert(k, v);
            }
        }
    }
    if !rules.authorization.use_room_create_sender {
        create.insert("creator".to_owned(), json!(sender));
    }
    create.insert("room_version".to_owned(), json!(new_version.as_str()));
    create.insert(
        "predecessor".to_owned(),
        json!({ "room_id": old_room, "event_id": last_event }),
    );
    if rules.authorization.additional_room_creators && !body.body.additional_creators.is_empty() {
        create.insert(
            "additional_creators".to_owned(),
            json!(body.body.additional_creators),
        );
    }
    let create_builder = PduBuilder::state(StateEventType::RoomCreate, "", &create);
    let new_room: OwnedRoomId = if rules.authorization.room_create_event_id_as_room_id {
        services
            .rooms
            .build_and_append_locked(&sender, None, create_builder)?
            .room_id
            .clone()
    } else {
        let room_id = RoomId::parse(format!(
            "!{}:{}",
            random_string(18),
            services.globals.server_name()
        ))
        .map_err(Error::internal)?;
        services
            .rooms
            .build_and_append_locked(&sender, Some(&room_id), create_builder)?;
        room_id
    };

    // The old room's power levels, to restore in the new room once the upgrader no longer
    // needs the temporary raise below (as Synapse does): an upgrade grants no power.
    let mut restore_power = None;
    {
        let _lock = services.rooms.lock_room(&new_room).await;
        let append = |builder: PduBuilder| {
            services
                .rooms
                .build_and_append_locked(&sender, Some(&new_room), builder)
        };
        append(PduBuilder::state(
            StateEventType::RoomMember,
            sender.as_str(),
            &json!({ "membership": "join" }),
        ))?;

        // Power levels carry over; the upgrading user needs enough power to finish the
        // upgrade, and creators of a v12 room may not be listed.
        let old_power = services
            .rooms
            .state_get(&old_state, &StateEventType::RoomPowerLevels, "")?
            .and_then(|p| serde_json::from_str::<Value>(p.content.get()).ok());
        let mut power_content = old_power.clone().unwrap_or_else(|| json!({}));
        // A creator privileged by the old room's version has no level to go back to.
        let old_privileged = services
            .rooms
            .room_version(&old_room)?
            .and_then(|v| v.rules())
            .is_some_and(|r| r.authorization.explicitly_privilege_room_creators)
            && services.rooms.creators(&old_state)?.contains(&sender);
        if let Some(users) = power_content
            .get_mut("users")
            .and_then(Value::as_object_mut)
        {
            if rules.authorization.explicitly_privilege_room_creators {
                users.remove(sender.as_str());
                for creator in &body.body.additional_creators {
                    users.remove(creator.as_str());
                }
            } else {
                users.insert(sender.to_string(), json!(power.max()));
            }
        } else if !rules.authorization.explicitly_privilege_room_creators {
            power_content["users"] = json!({ sender.as_str(): 100 });
        }
        if !rules.authorization.explicitly_privilege_room_creators
            && !old_privileged
            && old_power.as_ref() != Some(&power_content)
        {
            restore_power = old_power;
        }
        append(PduBuilder::state(
            StateEventType::RoomPowerLevels,
            "",
            &power_content,
        ))?;
        for kind in CARRIED_STATE {
            if let Some(pdu) = services.rooms.state_get(&old_state, kind, "")? {
                append(PduBuilder::state_raw(kind.clone(), "", pdu.content.clone()))?;
            }
        }
        // Bans carry over so an upgrade is no way around them.
        for (user, membership) in services.rooms.members(
            &old_room,
            Some(&ruma::events::room::member::MembershipState::Ban),
        )? {
            let _ = membership;
            append(PduBuilder::state(
                StateEventType::RoomMember,
                user.as_str(),
                &json!({ "membership": "ban" }),
            ))?;
        }
    }

    // Tombstone the old room and restrict it.
    services
        .rooms
        .build_and_append(
            &sender,
            &old_room,
            PduBuilder::state(
                StateEventType::RoomTombstone,
                "",
                &json!({ "body": "This room has been replaced", "replacement_room": new_room }),
            ),
        )
        .await?;
    if let Some(pl) = services
        .rooms
        .state_get(&old_state, &StateEventType::RoomPowerLevels, "")?
        && let Ok(mut content) = serde_json::from_str::<Value>(pl.content.get())
    {
        let users_default = content
            .get("users_default")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let restricted = (users_default + 1).max(50);
        content["events_default"] = json!(restricted);
        content["invite"] = json!(restricted);
        let _ = services
            .rooms
            .build_and_append(
                &sender,
                &old_room,
                PduBuilder::state(StateEventType::RoomPowerLevels, "", &content),
            )
            .await;
    }

    // Local aliases move to the new room.
    let aliases = services.rooms.local_aliases(&old_room)?;
    for alias in &aliases {
        services.rooms.remove_alias(alias)?;
        services
            .rooms
            .set_alias(alias, &new_room, sender.as_str())?;
    }
    if let Some(canonical) =
        services
            .rooms
            .state_get(&old_state, &StateEventType::RoomCanonicalAlias, "")?
    {
        let _ = services
            .rooms
            .build_and_append(
                &sender,
                &new_room,
                PduBuilder::state_raw(
                    StateEventType::RoomCanonicalAlias,
                    "",
                    canonical.content.clone(),
                ),
            )
            .await;
        let _ = services
            .rooms
            .build_and_append(
                &sender,
                &old_room,
                PduBuilder::state(StateEventType::RoomCanonicalAlias, "", &json!({})),
            )
            .await;
    }
    if let Some(content) = restore_power {
        services
            .rooms
            .build_and_append(
                &sender,
                &new_room,
                PduBuilder::state(StateEventType::RoomPowerLevels, "", &content),
            )
            .await?;
    }
    if services.rooms.is_public(&old_room)? {
        services.rooms.set_public(&old_room, false)?;
        services.rooms.set_public(&new_room, true)?;
    }
    Ok(upgrade_room::v3::Response::new(new_room))
}
