//! Sending, reading and redacting events (spec: "Room events", "Redactions", "Getting events
//! for a room").

use std::{
    collections::{HashMap, HashSet},
    ops::Not,
    sync::Arc,
};

use ruma::{
    RoomId, UserId,
    api::{
        Direction,
        client::{
            context::get_context,
            message::{get_message_events, send_message_event},
            redact::redact_event,
            room::get_room_event,
            state::{get_state_event_for_key, get_state_events, send_state_event},
        },
    },
    events::{StateEventType, TimelineEventType, room::member::MembershipState},
};
use serde_json::Value;

use super::filter;
use crate::{
    api::{
        router::{AppRouter, route},
        ruma::Ruma,
    },
    error::{Error, Result},
    service::{
        Services,
        rooms::{Pdu, PduBuilder, PduEvent, Transaction, state::StateMap},
    },
};

pub fn routes(router: AppRouter) -> AppRouter {
    let router = route(router, send_message_route);
    let router = route(router, send_state_route);
    let router = route(router, get_state_route);
    let router = route(router, get_state_for_key_route);
    let router = route(router, redact_route);
    let router = route(router, messages_route);
    let router = route(router, context_route);
    route(router, get_event_route)
}

async fn send_message_route(
    services: Arc<Services>,
    body: Ruma<send_message_event::v3::Request>,
) -> Result<send_message_event::v3::Response> {
    let req = &body.body;
    let (user, device) = (body.user(), body.device());
    let transaction = Transaction {
        device: device.to_string(),
        endpoint: "send",
        txn: req.txn_id.to_string(),
    };
    if let Some(event_id) = services
        .rooms
        .existing_txn(user, &req.room_id, &transaction)?
    {
        return Ok(send_message_event::v3::Response::new(event_id));
    }
    if !services.rooms.is_joined(user, &req.room_id)? {
        return Err(Error::forbidden("You are not joined to this room"));
    }
    let content = req.body.json().to_owned();
    let mut builder = PduBuilder::new(req.event_type.to_string().into(), content);
    builder.transaction = Some(transaction);
    let pdu = services
        .rooms
        .build_and_append(user, &req.room_id, builder)
        .await?;
    Ok(send_message_event::v3::Response::new(pdu.event_id.clone()))
}

async fn send_state_route(
    services: Arc<Services>,
    body: Ruma<send_state_event::v3::Request>,
) -> Result<send_state_event::v3::Response> {
    let req = &body.body;
    let user = body.user();
    if !services.rooms.is_joined(user, &req.room_id)? {
        return Err(Error::forbidden("You are not joined to this room"));
    }
    let content = req.body.json().to_owned();
    if req.event_type == StateEventType::RoomCanonicalAlias {
        check_canonical_alias(&services, &req.room_id, &content)?;
    }
    // Setting the state it already has is a no-op that returns the existing event.
    if let Some(current) =
        services
            .rooms
            .room_state_get(&req.room_id, &req.event_type, &req.state_key)?
        && current.sender == user
        && serde_json::from_str::<Value>(current.content.get()).ok()
            == serde_json::from_str::<Value>(content.get()).ok()
    {
        return Ok(send_state_event::v3::Response::new(
            current.event_id.clone(),
        ));
    }
    let builder = PduBuilder::state_raw(req.event_type.clone(), req.state_key.clone(), content);
    let pdu = services
        .rooms
        .build_and_append(user, &req.room_id, builder)
        .await?;
    Ok(send_state_event::v3::Response::new(pdu.event_id.clone()))
}

/// `m.room.canonical_alias` may only name aliases that point to the room.
fn check_canonical_alias(
    services: &Services,
    room_id: &RoomId,
    content: &serde_json::value::RawValue,
) -> Result<()> {
    let content: Value =
        serde_json::from_str(content.get()).map_err(|_| Error::bad_json("Invalid content"))?;
    let mut aliases: Vec<&str> = content
        .get("alias")
        .and_then(Value::as_str)
        .into_iter()
        .collect();
    if let Some(alt) = content.get("alt_aliases") {
        let alt = alt
            .as_array()
            .ok_or_else(|| Error::bad_json("alt_aliases must be a list"))?;
        aliases.extend(alt.iter().filter_map(Value::as_str));
    }
    for alias in aliases {
        let alias =
            ruma::RoomAliasId::parse(alias).map_err(|_| Error::invalid_param("Invalid alias"))?;
        if alias.server_name() == services.globals.server_name()
            && services.rooms.resolve_alias(&alias)?.as_deref() != Some(room_id)
        {
            return Err(Error::bad_alias(format!(
                "{alias} does not point to this room"
            )));
        }
    }
    Ok(())
}

pub fn world_readable(services: &Services, room_id: &RoomId) -> Result<bool> {
    Ok(services
        .rooms
        .room_state_get(room_id, &StateEventType::RoomHistoryVisibility, "")?
        .and_then(|p| p.content_field("history_visibility"))
        .is_some_and(|v| v == "world_readable"))
}

/// The room state a user may read: the current state while joined (or world-readable),
/// the state when they left otherwise, nothing once they forgot the room.
pub fn readable_state(
    services: &Services,
    user: &UserId,
    room_id: &RoomId,
) -> Result<Arc<StateMap>> {
    match remembered_room(services, user, room_id)? {
        Some(r) if r.membership == MembershipState::Join => services.rooms.current_state(room_id),
        _ if world_readable(services, room_id)? => services.rooms.current_state(room_id),
        Some(r) if matches!(r.membership, MembershipState::Leave | MembershipState::Ban) => {
            let event_id = ruma::EventId::parse(&r.event_id).map_err(Error::internal)?;
            state_after_event(services, &event_id)
        }
        _ => Err(Error::forbidden("You are not a member of this room")),
    }
}

/// The user's membership record of a room, unless they forgot the room: after `/forget`
/// "a user will no longer be able to retrieve history for this room" (spec).
pub fn remembered_room(
    services: &Services,
    user: &UserId,
    room_id: &RoomId,
) -> Result<Option<crate::service::rooms::membership::UserRoom>> {
    Ok(services
        .rooms
        .user_room(user, room_id)?
        .filter(|r| !r.forgotten))
}

pub fn state_after_event(services: &Services, event_id: &ruma::EventId) -> Result<Arc<StateMap>> {
    let hash = services
        .rooms
        .state_before(event_id)?
        .ok_or_else(|| Error::not_found("Unknown event"))?;
    let mut state = (*services.rooms.load_state(hash)?).clone();
    if let Some(pdu) = services.rooms.get_pdu(event_id)?
        && let Some(key) = &pdu.state_key
    {
        let short_key = services
            .rooms
            .get_or_create_shortstatekey(&pdu.state_event_type(), key)?;
        state.insert(
            short_key,
            services.rooms.get_or_create_shorteventid(event_id)?,
        );
    }
    Ok(Arc::new(state))
}

/// The state after the newest event with a stream position at or below `count`.
pub fn state_at_count(services: &Services, room_id: &RoomId, count: u64) -> Result<Arc<StateMap>> {
    match services
        .rooms
        .events_before(room_id, count.saturating_add(1), 1)?
        .into_iter()
        .next()
    {
        Some((_, pdu)) => state_after_event(services, &pdu.event_id),
        None => Ok(Arc::default()),
    }
}

async fn get_state_route(
    services: Arc<Services>,
    body: Ruma<get_state_events::v3::Request>,
) -> Result<get_state_events::v3::Response> {
    let state = readable_state(&services, body.user(), &body.body.room_id)?;
    let events = services
        .rooms
        .state_events(&state)?
        .iter()
        .map(|p| p.to_raw(None))
        .collect();
    Ok(get_state_events::v3::Response::new(events))
}

async fn get_state_for_key_route(
    services: Arc<Services>,
    body: Ruma<get_state_event_for_key::v3::Request>,
) -> Result<get_state_event_for_key::v3::Response> {
    let req = &body.body;
    let state = readable_state(&services, body.user(), &req.room_id)?;
    let pdu = services
        .rooms
        .state_get(&state, &req.event_type, &req.state_key)?
        .ok_or_else(|| Error::not_found("Event not found"))?;
    let value = match req.format {
        ruma::api::client::state::get_state_event_for_key::v3::StateEventFormat::Event => {
            pdu.to_client_json(None)
        }
        _ => pdu.content.clone(),
    };
    Ok(get_state_event_for_key::v3::Response::new(value))
}

async fn redact_route(
    services: Arc<Services>,
    body: Ruma<redact_event::v3::Request>,
) -> Result<redact_event::v3::Response> {
    let req = &body.body;
    let (user, device) = (body.user(), body.device());
    let transaction = Transaction {
        device: device.to_string(),
        endpoint: "redact",
        txn: req.txn_id.to_string(),
    };
    if let Some(event_id) = services
        .rooms
        .existing_txn(user, &req.room_id, &transaction)?
    {
        return Ok(redact_event::v3::Response::new(event_id));
    }
    if !services.rooms.is_joined(user, &req.room_id)? {
        return Err(Error::forbidden("You are not joined to this room"));
    }
    let target = services.rooms.get_pdu(&req.event_id)?;
    if target.as_ref().is_some_and(|t| t.room_id != req.room_id) {
        return Err(Error::invalid_param(
            "Cannot redact an event of another room",
        ));
    }
    let power = services.rooms.power_levels(&req.room_id)?;
    let allowed = match &target {
        Some(t) if t.sender == user => power.user_can_redact_own_event(user),
        _ => power.user_can_redact_event_of_other(user),
    };
    if !allowed {
        return Err(Error::forbidden("You may not redact this event"));
    }
    let mut content = serde_json::Map::new();
    if let Some(reason) = &req.reason {
        content.insert("reason".to_owned(), Value::String(reason.clone()));
    }
    let mut builder = PduBuilder::new(
        TimelineEventType::RoomRedaction,
        serde_json::value::to_raw_value(&content)?,
    );
    builder.redacts = Some(req.event_id.clone());
    builder.transaction = Some(transaction);
    let pdu = services
        .rooms
        .build_and_append(user, &req.room_id, builder)
        .await?;
    Ok(redact_event::v3::Response::new(pdu.event_id.clone()))
}

/// History visibility: may `user` see `pdu`? Decided by the room's `history_visibility`
/// and the user's membership at the event, as the spec's "Server behaviour" describes. A
/// user who forgot the room sees only what is world-readable.
pub struct Visibility<'a> {
    services: &'a Services,
    user: &'a UserId,
    currently_joined: bool,
    forgotten: bool,
    cache: HashMap<u64, bool>,
}

impl<'a> Visibility<'a> {
    pub fn new(services: &'a Services, user: &'a UserId, room_id: &RoomId) -> Result<Self> {
        let record = services.rooms.user_room(user, room_id)?;
        let currently_joined = record
            .as_ref()
            .is_some_and(|r| r.membership == MembershipState::Join);
        let forgotten = record.is_some_and(|r| r.forgotten);
        Ok(Self {
            services,
            user,
            currently_joined,
            forgotten,
            cache: HashMap::new(),
        })
    }

    pub fn can_see(&mut self, pdu: &PduEvent) -> Result<bool> {
        if !self.forgotten
            && pdu.kind == TimelineEventType::RoomMember
            && pdu.state_key.as_deref() == Some(self.user.as_str())
        {
            return Ok(true);
        }
        let Some(hash) = self
            .services
            .rooms
            .visibility_state(&pdu.room_id, &pdu.event_id)?
        else {
            return Ok(false);
        };
        if let Some(v) = self.cache.get(&hash) {
            return Ok(*v);
        }
        let state = self.services.rooms.load_state(hash)?;
        let visibility = self
            .services
            .rooms
            .state_get(&state, &StateEventType::RoomHistoryVisibility, "")?
            .and_then(|p| p.content_field("history_visibility"))
            .and_then(|v| v.as_str().map(ToOwned::to_owned))
            .unwrap_or_else(|| "shared".to_owned());
        let membership = self
            .services
            .rooms
            .state_get(&state, &StateEventType::RoomMember, self.user.as_str())?
            .and_then(|p| p.content_field("membership"))
            .and_then(|v| v.as_str().map(MembershipState::from));
        let visible = match visibility.as_str() {
            "world_readable" => true,
            _ if self.forgotten => false,
            "shared" => self.currently_joined || membership == Some(MembershipState::Join),
            "invited" => matches!(
                membership,
                Some(MembershipState::Join | MembershipState::Invite)
            ),
            _ => membership == Some(MembershipState::Join),
        };
        self.cache.insert(hash, visible);
        Ok(visible)
    }
}

pub fn parse_token(token: Option<&str>) -> Result<Option<u64>> {
    token
        .map(|t| {
            t.trim_start_matches(['s', 't'])
                .parse::<u64>()
                .map_err(|_| Error::invalid_param("Invalid pagination token"))
        })
        .transpose()
}

/// Member events of the senders of `events`, for `lazy_load_members`.
pub fn member_state_for(services: &Services, room_id: &RoomId, events: &[Pdu]) -> Result<Vec<Pdu>> {
    let state = services.rooms.current_state(room_id)?;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for pdu in events {
        if seen.insert(pdu.sender.clone())
            && let Some(member) = services.rooms.state_get(
                &state,
                &StateEventType::RoomMember,
                pdu.sender.as_str(),
            )?
        {
            out.push(member);
        }
    }
    Ok(out)
}

async fn messages_route(
    services: Arc<Services>,
    body: Ruma<get_message_events::v3::Request>,
) -> Result<get_message_events::v3::Response> {
    let req = &body.body;
    let (user, device) = (
        body.user(),
        body.sender_device.as_deref().map(|d| d.as_str()),
    );
    let room_id = &req.room_id;
    if remembered_room(&services, user, room_id)?.is_none() && !world_readable(&services, room_id)?
    {
        return Err(Error::forbidden("You are not a member of this room"));
    }
    let limit = usize::try_from(u64::from(req.limit))
        .unwrap_or(10)
        .clamp(1, 1000);
    let from = match parse_token(req.from.as_deref())? {
        Some(f) => f,
        None if req.dir == Direction::Backward => services.db.committed(),
        None => 0,
    };
    let to = parse_token(req.to.as_deref())?;
    let mut visibility = Visibility::new(&services, user, room_id)?;
    // A left user reads up to the moment they left.
    let upper = match services.rooms.user_room(user, room_id)? {
        Some(r)
            if matches!(r.membership, MembershipState::Leave | MembershipState::Ban)
                && !world_readable(&services, room_id)? =>
        {
            r.count
        }
        _ => u64::MAX,
    };

    let mut chunk: Vec<Pdu> = Vec::new();
    let mut cursor = from;
    let mut end = None;
    // Paging back past the oldest event here asks the room's other servers for more, once
    // per request.
    let mut may_backfill = req.dir == Direction::Backward && to.is_none();
    // Filtered-out events do not count towards the limit; scan in pages.
    'scan: loop {
        let page = match req.dir {
            Direction::Backward => services.rooms.events_before(
                room_id,
                cursor.min(upper).saturating_add(1),
                limit * 2,
            )?,
            Direction::Forward => services.rooms.events_after(room_id, cursor, limit * 2)?,
        };
        if page.len() < limit * 2 && may_backfill {
            may_backfill = false;
            if services
                .rooms
                .backfill(&services.federation, room_id)
                .await
                .unwrap_or(0)
                > 0
            {
                continue;
            }
        }
        if page.is_empty() {
            break;
        }
        let reached_start = req.dir == Direction::Backward && page.len() < limit * 2;
        for (count, pdu) in page {
            let past_to = match (req.dir, to) {
                (Direction::Backward, Some(t)) => count <= t,
                (Direction::Forward, Some(t)) => count > t,
                _ => false,
            };
            if past_to || (req.dir == Direction::Forward && count > upper) {
                end = None;
                break 'scan;
            }
            cursor = match req.dir {
                Direction::Backward => count.saturating_sub(1),
                Direction::Forward => count,
            };
            if filter::matches(&req.filter, &pdu) && visibility.can_see(&pdu)? {
                chunk.push(pdu);
                if chunk.len() >= limit {
                    end = Some(cursor);
                    break 'scan;
                }
            }
        }
        end = Some(cursor);
        if reached_start {
            end = None;
            break;
        }
    }
    if chunk.is_empty() && end == Some(from) {
        end = None;
    }
    let state = if req.filter.lazy_load_options.is_disabled().not() {
        member_state_for(&services, room_id, &chunk)?
            .iter()
            .map(|p| p.to_raw(None))
            .collect()
    } else {
        vec![]
    };
    let mut response = get_message_events::v3::Response::new();
    response.start = from.to_string();
    response.end = end.map(|e| e.to_string());
    response.chunk = chunk
        .iter()
        .map(|p| {
            Ok(p.to_raw(
                services
                    .rooms
                    .transaction_id_for(p, user, device)?
                    .as_deref(),
            ))
        })
        .collect::<Result<_>>()?;
    response.state = state;
    Ok(response)
}

async fn context_route(
    services: Arc<Services>,
    body: Ruma<get_context::v3::Request>,
) -> Result<get_context::v3::Response> {
    let req = &body.body;
    let user = body.user();
    let pdu = services
        .rooms
        .get_pdu(&req.event_id)?
        .filter(|p| p.room_id == req.room_id)
        .ok_or_else(|| Error::not_found("Event not found"))?;
    let mut visibility = Visibility::new(&services, user, &req.room_id)?;
    if !visibility.can_see(&pdu)? {
        return Err(Error::forbidden("You may not see this event"));
    }
    let count = services
        .rooms
        .pdu_count(&req.event_id)?
        .ok_or_else(|| Error::not_found("Event not found"))?;
    let limit = usize::try_from(u64::from(req.limit)).unwrap_or(10).min(100);
    let half = limit.div_ceil(2).max(if limit > 0 { 1 } else { 0 });
    let mut before = Vec::new();
    for (_, p) in services
        .rooms
        .events_before(&req.room_id, count, half * 4 + 1)?
    {
        if before.len() >= half {
            break;
        }
        if filter::matches(&req.filter, &p) && visibility.can_see(&p)? {
            before.push(p);
        }
    }
    let mut after = Vec::new();
    for (_, p) in
        services
            .rooms
            .events_after(&req.room_id, count, (limit - half.min(limit)) * 4 + 1)?
    {
        if after.len() >= limit - half.min(limit) {
            break;
        }
        if filter::matches(&req.filter, &p) && visibility.can_see(&p)? {
            after.push(p);
        }
    }
    let start = before
        .last()
        .map(|p| services.rooms.pdu_count(&p.event_id))
        .transpose()?
        .flatten()
        .unwrap_or(count)
        .saturating_sub(1);
    let end = after
        .last()
        .map(|p| services.rooms.pdu_count(&p.event_id))
        .transpose()?
        .flatten()
        .unwrap_or(count);
    let state = state_after_event(&services, &req.event_id)?;
    let state_events = if req.filter.lazy_load_options.is_disabled().not() {
        let mut all: Vec<Pdu> = before.clone();
        all.push(pdu.clone());
        all.extend(after.iter().cloned());
        member_state_for(&services, &req.room_id, &all)?
    } else {
        services.rooms.state_events(&state)?
    };
    let mut response = get_context::v3::Response::new();
    response.start = Some(start.to_string());
    response.end = Some(end.to_string());
    response.event = Some(pdu.to_raw(None));
    response.events_before = before.iter().map(|p| p.to_raw(None)).collect();
    response.events_after = after.iter().map(|p| p.to_raw(None)).collect();
    response.state = state_events.iter().map(|p| p.to_raw(None)).collect();
    Ok(response)
}

async fn get_event_route(
    services: Arc<Services>,
    body: Ruma<get_room_event::v3::Request>,
) -> Result<get_room_event::v3::Response> {
    let req = &body.body;
    let pdu = services
        .rooms
        .get_pdu(&req.event_id)?
        .filter(|p| p.room_id == req.room_id)
        .ok_or_else(|| Error::not_found("Event not found"))?;
    // A soft-failed event is kept for the graph only; as in Synapse, no client sees it.
    if services.rooms.is_soft_failed(&pdu.event_id)?
        || !Visibility::new(&services, body.user(), &req.room_id)?.can_see(&pdu)?
    {
        return Err(Error::not_found("Event not found"));
    }
    let txn = services.rooms.transaction_id_for(
        &pdu,
        body.user(),
        body.sender_device.as_deref().map(|d| d.as_str()),
    )?;
    Ok(get_room_event::v3::Response::new(
        pdu.to_raw(txn.as_deref()),
    ))
}
