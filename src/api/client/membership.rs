//! Room membership: join, invite, leave, kick, ban, unban, knock, forget and member lists
//! (spec: "Room membership").

use std::{collections::BTreeMap, sync::Arc};

use ruma::{
    OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, RoomOrAliasId, UserId,
    api::client::{
        knock::knock_room,
        membership::{
            ban_user, forget_room, get_member_events, invite_user, join_room_by_id,
            join_room_by_id_or_alias, joined_members, joined_rooms, kick_user, leave_room,
            unban_user,
        },
    },
    api::federation::query::get_room_information,
    events::{
        StateEventType,
        room::{join_rules::JoinRule, member::MembershipState},
    },
};
use serde_json::{Map, Value, json};

use crate::{
    api::{
        router::{AppRouter, route},
        ruma::Ruma,
    },
    error::{Error, Result},
    service::{
        Services,
        rooms::{PduBuilder, remote::candidate_servers},
    },
};

pub fn routes(router: AppRouter) -> AppRouter {
    let router = route(router, join_by_id_route);
    let router = route(router, join_by_id_or_alias_route);
    let router = route(router, invite_route);
    let router = route(router, leave_route);
    let router = route(router, kick_route);
    let router = route(router, ban_route);
    let router = route(router, unban_route);
    let router = route(router, forget_route);
    let router = route(router, knock_route);
    let router = route(router, joined_rooms_route);
    let router = route(router, members_route);
    route(router, joined_members_route)
}

/// Member event content for `user_id` with their profile, as other servers do it.
fn member_content(
    services: &Services,
    user_id: &UserId,
    membership: MembershipState,
    reason: Option<&str>,
) -> Result<Map<String, Value>> {
    let mut content = Map::new();
    content.insert("membership".to_owned(), json!(membership.as_str()));
    if matches!(
        membership,
        MembershipState::Join | MembershipState::Invite | MembershipState::Knock
    ) && let Some(user) = services.users.get(user_id)?
    {
        if let Some(name) = user.displayname {
            content.insert("displayname".to_owned(), json!(name));
        }
        if let Some(avatar) = user.avatar_url {
            content.insert("avatar_url".to_owned(), json!(avatar));
        }
    }
    if let Some(reason) = reason {
        content.insert("reason".to_owned(), json!(reason));
    }
    Ok(content)
}

async fn send_member(
    services: &Services,
    sender: &UserId,
    room_id: &RoomId,
    target: &UserId,
    content: Map<String, Value>,
) -> Result<()> {
    services
        .rooms
        .build_and_append(
            sender,
            room_id,
            PduBuilder::state(StateEventType::RoomMember, target.as_str(), &content),
        )
        .await?;
    Ok(())
}

pub async fn resolve_room(services: &Services, room: &RoomOrAliasId) -> Result<OwnedRoomId> {
    Ok(resolve_room_with_servers(services, room).await?.0)
}

/// The room an id or alias names, and for a remote alias the servers its home server says
/// are in the room (`/query/directory`).
pub async fn resolve_room_with_servers(
    services: &Services,
    room: &RoomOrAliasId,
) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
    match <&RoomId>::try_from(room) {
        Ok(room_id) => Ok((room_id.to_owned(), vec![])),
        Err(alias) if alias.server_name() == services.globals.server_name() => Ok((
            services
                .rooms
                .resolve_alias(alias)?
                .ok_or_else(|| Error::not_found("Room alias not found"))?,
            vec![],
        )),
        Err(alias) => {
            let response = services
                .federation
                .send(
                    alias.server_name(),
                    get_room_information::v1::Request::new(alias.to_owned()),
                )
                .await?;
            Ok((response.room_id, response.servers))
        }
    }
}

/// Whether a membership change must go through another server: the room is unknown here,
/// or no user of this server is joined (our copy of its state may be stale).
fn needs_remote(services: &Services, room_id: &RoomId) -> Result<bool> {
    Ok(!services.rooms.exists(room_id)? || !services.rooms.is_resident(room_id)?)
}

/// Servers to ask about a room: the client's `via`, the server of whoever invited the
/// user, the room id's server, and the servers of members we know of.
fn servers_for(
    services: &Services,
    user_id: &UserId,
    room_id: &RoomId,
    via: &[OwnedServerName],
) -> Result<Vec<OwnedServerName>> {
    let mut given = via.to_vec();
    if let Some(record) = services.rooms.user_room(user_id, room_id)?
        && let Ok(event_id) = ruma::EventId::parse(&record.event_id)
        && let Some(event) = services.rooms.get_pdu(&event_id)?
    {
        given.push(event.sender.server_name().to_owned());
    }
    if services.rooms.exists(room_id)? {
        given.extend(services.rooms.room_servers(room_id)?);
    }
    Ok(candidate_servers(
        services.globals.server_name(),
        room_id,
        &given,
    ))
}

pub async fn join(
    services: &Services,
    user_id: &UserId,
    room_id: &RoomId,
    reason: Option<&str>,
    via: &[OwnedServerName],
) -> Result<()> {
    let mut content = member_content(services, user_id, MembershipState::Join, reason)?;
    if needs_remote(services, room_id)? {
        let servers = servers_for(services, user_id, room_id, via)?;
        if !servers.is_empty() {
            services
                .rooms
                .join_remote(&services.federation, user_id, room_id, &servers, &content)
                .await?;
            return Ok(());
        }
        if !services.rooms.exists(room_id)? {
            return Err(Error::not_found("No known servers for this room"));
        }
    }
    let state = services.rooms.current_state(room_id)?;
    let join_rule = services
        .rooms
        .state_get(&state, &StateEventType::RoomJoinRules, "")?
        .and_then(|pdu| {
            pdu.content_json::<ruma::events::room::join_rules::RoomJoinRulesEventContent>()
        })
        .map(|c| c.join_rule);
    let current = services.rooms.membership(user_id, room_id)?;
    if let Some(JoinRule::Restricted(rule) | JoinRule::KnockRestricted(rule)) = join_rule
        && !matches!(
            current,
            Some(MembershipState::Join | MembershipState::Invite)
        )
    {
        let allowed = rule.allow.iter().any(|allow| match allow {
            ruma::events::room::join_rules::AllowRule::RoomMembership(m) => services
                .rooms
                .is_joined(user_id, &m.room_id)
                .unwrap_or(false),
            _ => false,
        });
        if allowed {
            let power = services.rooms.power_levels_at(room_id, &state)?;
            let authoriser = services
                .rooms
                .joined_members(room_id)?
                .into_iter()
                .find(|u| {
                    u.server_name() == services.globals.server_name() && power.user_can_invite(u)
                });
            if let Some(authoriser) = authoriser {
                content.insert(
                    "join_authorised_via_users_server".to_owned(),
                    json!(authoriser),
                );
            }
        }
    }
    send_member(services, user_id, room_id, user_id, content).await
}

pub async fn leave(
    services: &Services,
    user_id: &UserId,
    room_id: &RoomId,
    reason: Option<&str>,
) -> Result<()> {
    match services.rooms.membership(user_id, room_id)? {
        Some(MembershipState::Join | MembershipState::Invite | MembershipState::Knock) => {}
        Some(_) => return Ok(()),
        None => return Err(Error::forbidden("You are not a member of this room")),
    }
    let content = member_content(services, user_id, MembershipState::Leave, reason)?;
    if needs_remote(services, room_id)? {
        let servers = servers_for(services, user_id, room_id, &[])?;
        return services
            .rooms
            .leave_remote(&services.federation, user_id, room_id, &servers, &content)
            .await;
    }
    send_member(services, user_id, room_id, user_id, content).await
}

pub async fn invite(
    services: &Services,
    sender: &UserId,
    room_id: &RoomId,
    target: &UserId,
    is_direct: bool,
    reason: Option<&str>,
) -> Result<()> {
    if target.server_name() == services.globals.server_name()
        && !services.users.is_active(target)?
    {
        return Err(Error::not_found("Unknown user"));
    }
    if services.rooms.membership(target, room_id)? == Some(MembershipState::Join) {
        return Err(Error::forbidden("User is already in the room"));
    }
    let mut content = member_content(services, target, MembershipState::Invite, reason)?;
    if is_direct {
        content.insert("is_direct".to_owned(), json!(true));
    }
    if target.server_name() != services.globals.server_name() {
        if !services.rooms.is_joined(sender, room_id)? {
            return Err(Error::forbidden("You are not in this room"));
        }
        services
            .rooms
            .invite_remote(&services.federation, sender, room_id, target, &content)
            .await?;
        return Ok(());
    }
    send_member(services, sender, room_id, target, content).await
}

async fn join_by_id_route(
    services: Arc<Services>,
    body: Ruma<join_room_by_id::v3::Request>,
) -> Result<join_room_by_id::v3::Response> {
    join(
        &services,
        body.user(),
        &body.body.room_id,
        body.body.reason.as_deref(),
        &[],
    )
    .await?;
    Ok(join_room_by_id::v3::Response::new(
        body.body.room_id.clone(),
    ))
}

async fn join_by_id_or_alias_route(
    services: Arc<Services>,
    body: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> Result<join_room_by_id_or_alias::v3::Response> {
    let (room_id, mut servers) =
        resolve_room_with_servers(&services, &body.body.room_id_or_alias).await?;
    servers.extend(body.body.via.iter().cloned());
    join(
        &services,
        body.user(),
        &room_id,
        body.body.reason.as_deref(),
        &servers,
    )
    .await?;
    Ok(join_room_by_id_or_alias::v3::Response::new(room_id))
}

async fn invite_route(
    services: Arc<Services>,
    body: Ruma<invite_user::v3::Request>,
) -> Result<invite_user::v3::Response> {
    let invite_user::v3::InvitationRecipient::UserId(recipient) = &body.body.recipient else {
        return Err(Error::forbidden("Third-party invites are not supported"));
    };
    invite(
        &services,
        body.user(),
        &body.body.room_id,
        &recipient.user_id,
        false,
        recipient.reason.as_deref(),
    )
    .await?;
    Ok(invite_user::v3::Response::new())
}

async fn leave_route(
    services: Arc<Services>,
    body: Ruma<leave_room::v3::Request>,
) -> Result<leave_room::v3::Response> {
    leave(
        &services,
        body.user(),
        &body.body.room_id,
        body.body.reason.as_deref(),
    )
    .await?;
    Ok(leave_room::v3::Response::new())
}

async fn kick_route(
    services: Arc<Services>,
    body: Ruma<kick_user::v3::Request>,
) -> Result<kick_user::v3::Response> {
    let target = &body.body.user_id;
    if !matches!(
        services.rooms.membership(target, &body.body.room_id)?,
        Some(MembershipState::Join | MembershipState::Invite | MembershipState::Knock)
    ) {
        return Err(Error::forbidden("The user is not in the room"));
    }
    let content = member_content(
        &services,
        target,
        MembershipState::Leave,
        body.body.reason.as_deref(),
    )?;
    send_member(&services, body.user(), &body.body.room_id, target, content).await?;
    Ok(kick_user::v3::Response::new())
}

async fn ban_route(
    services: Arc<Services>,
    body: Ruma<ban_user::v3::Request>,
) -> Result<ban_user::v3::Response> {
    let content = member_content(
        &services,
        &body.body.user_id,
        MembershipState::Ban,
        body.body.reason.as_deref(),
    )?;
    send_member(
        &services,
        body.user(),
        &body.body.room_id,
        &body.body.user_id,
        content,
    )
    .await?;
    Ok(ban_user::v3::Response::new())
}

async fn unban_route(
    services: Arc<Services>,
    body: Ruma<unban_user::v3::Request>,
) -> Result<unban_user::v3::Response> {
    if services
        .rooms
        .membership(&body.body.user_id, &body.body.room_id)?
        != Some(MembershipState::Ban)
    {
        return Err(Error::forbidden("The user is not banned"));
    }
    let content = member_content(
        &services,
        &body.body.user_id,
        MembershipState::Leave,
        body.body.reason.as_deref(),
    )?;
    send_member(
        &services,
        body.user(),
        &body.body.room_id,
        &body.body.user_id,
        content,
    )
    .await?;
    Ok(unban_user::v3::Response::new())
}

async fn forget_route(
    services: Arc<Services>,
    body: Ruma<forget_room::v3::Request>,
) -> Result<forget_room::v3::Response> {
    services.rooms.forget(body.user(), &body.body.room_id)?;
    Ok(forget_room::v3::Response::new())
}

async fn knock_route(
    services: Arc<Services>,
    body: Ruma<knock_room::v3::Request>,
) -> Result<knock_room::v3::Response> {
    let (room_id, mut servers) =
        resolve_room_with_servers(&services, &body.body.room_id_or_alias).await?;
    servers.extend(body.body.via.iter().cloned());
    let content = member_content(
        &services,
        body.user(),
        MembershipState::Knock,
        body.body.reason.as_deref(),
    )?;
    if needs_remote(&services, &room_id)? {
        let servers = servers_for(&services, body.user(), &room_id, &servers)?;
        if !servers.is_empty() {
            services
                .rooms
                .knock_remote(
                    &services.federation,
                    body.user(),
                    &room_id,
                    &servers,
                    &content,
                )
                .await?;
            return Ok(knock_room::v3::Response::new(room_id));
        }
    }
    if !services.rooms.exists(&room_id)? {
        return Err(Error::not_found("No known servers for this room"));
    }
    send_member(&services, body.user(), &room_id, body.user(), content).await?;
    Ok(knock_room::v3::Response::new(room_id))
}

async fn joined_rooms_route(
    services: Arc<Services>,
    body: Ruma<joined_rooms::v3::Request>,
) -> Result<joined_rooms::v3::Response> {
    Ok(joined_rooms::v3::Response::new(
        services.rooms.rooms_joined(body.user())?,
    ))
}

/// Members may read the joined members; so may anyone when history is world-readable.
pub fn check_can_see_room(services: &Services, user_id: &UserId, room_id: &RoomId) -> Result<()> {
    match services.rooms.membership(user_id, room_id)? {
        Some(MembershipState::Join) => Ok(()),
        _ if super::message::world_readable(services, room_id)? => Ok(()),
        _ => Err(Error::forbidden("You are not a member of this room")),
    }
}

async fn members_route(
    services: Arc<Services>,
    body: Ruma<get_member_events::v3::Request>,
) -> Result<get_member_events::v3::Response> {
    let room_id = &body.body.room_id;
    // Members read the member list, and anyone when history is world-readable; former
    // members read it as it was when they left (as in Synapse).
    let left_at = match super::message::remembered_room(&services, body.user(), room_id)? {
        Some(r) if r.membership == MembershipState::Join => None,
        _ if super::message::world_readable(&services, room_id)? => None,
        Some(r) if matches!(r.membership, MembershipState::Leave | MembershipState::Ban) => {
            Some(r.count)
        }
        _ => return Err(Error::forbidden("You are not a member of this room")),
    };
    let at = body
        .body
        .at
        .as_deref()
        .map(|at| {
            at.parse::<u64>()
                .map_err(|_| Error::invalid_param("Invalid `at` token"))
        })
        .transpose()?;
    let state = match (at, left_at) {
        (None, None) => services.rooms.current_state(room_id)?,
        (at, left_at) => super::message::state_at_count(
            &services,
            room_id,
            at.unwrap_or(u64::MAX).min(left_at.unwrap_or(u64::MAX)),
        )?,
    };
    let mut chunk = Vec::new();
    for pdu in services.rooms.state_events(&state)? {
        if pdu.kind != ruma::events::TimelineEventType::RoomMember {
            continue;
        }
        let membership = pdu
            .content_field("membership")
            .and_then(|m| m.as_str().map(MembershipState::from));
        if let Some(want) = &body.body.membership
            && membership.as_ref() != Some(want)
        {
            continue;
        }
        if let Some(not) = &body.body.not_membership
            && membership.as_ref() == Some(not)
        {
            continue;
        }
        chunk.push(pdu.to_raw(None));
    }
    Ok(get_member_events::v3::Response::new(chunk))
}

async fn joined_members_route(
    services: Arc<Services>,
    body: Ruma<joined_members::v3::Request>,
) -> Result<joined_members::v3::Response> {
    let room_id = &body.body.room_id;
    check_can_see_room(&services, body.user(), room_id)?;
    let state = services.rooms.current_state(room_id)?;
    let mut joined = BTreeMap::<OwnedUserId, joined_members::v3::RoomMember>::new();
    for user_id in services.rooms.joined_members(room_id)? {
        let mut member = joined_members::v3::RoomMember::new();
        if let Some(pdu) =
            services
                .rooms
                .state_get(&state, &StateEventType::RoomMember, user_id.as_str())?
        {
            member.display_name = pdu
                .content_field("displayname")
                .and_then(|v| v.as_str().map(ToOwned::to_owned));
            member.avatar_url = pdu
                .content_field("avatar_url")
                .and_then(|v| v.as_str().map(|s| s.to_owned().into()));
        }
        joined.insert(user_id, member);
    }
    Ok(joined_members::v3::Response::new(joined))
}
