//! `/sync` (spec: "Syncing"). A long-poll: when there is nothing new the request waits on
//! the notifier for its user, which the write path wakes, and then computes again.
//!
//! Tokens are stream positions: a response covers every change with a position in
//! `(since, next_batch]`, and `next_batch` is read from the database's committed position
//! before anything else, so a change is never skipped.

use std::{
    collections::{BTreeMap, HashSet},
    ops::Not,
    sync::Arc,
    time::Duration,
};

use axum::{Json, response::IntoResponse};
use ruma::{
    OwnedRoomId, RoomId, UserId,
    api::client::{
        filter::{FilterDefinition, RoomEventFilter},
        sync::sync_events::{self, v3::Filter},
    },
    events::{StateEventType, room::member::MembershipState},
};
use serde::Serialize;
use serde_json::{Value, json, value::RawValue};

use super::{filter, message, sync_realtime};
use crate::{
    api::{
        router::{AppRouter, route_any},
        ruma::Ruma,
    },
    error::{Error, Result},
    service::{
        Services,
        e2ee::device_lists,
        rooms::{Pdu, membership::UserRoom, state::StateMap},
    },
};

/// The response, built from events already serialised once (`RawValue`), never parsed back.
#[derive(Serialize)]
struct SyncResponse {
    next_batch: String,
    #[serde(skip_serializing_if = "Rooms::is_empty")]
    rooms: Rooms,
    #[serde(skip_serializing_if = "Events::is_empty")]
    account_data: Events<Value>,
    #[serde(skip_serializing_if = "Events::is_empty")]
    presence: Events<Value>,
    to_device: Events<Value>,
    #[serde(skip_serializing_if = "DeviceLists::is_empty")]
    device_lists: DeviceLists,
    /// Always present for a device: clients read a missing count as "unknown" and a missing
    /// fallback list as "the server has no fallback keys".
    #[serde(skip_serializing_if = "Option::is_none")]
    device_one_time_keys_count: Option<BTreeMap<String, u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_unused_fallback_key_types: Option<Vec<String>>,
}

#[derive(Default, Serialize)]
struct DeviceLists {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    changed: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    left: Vec<String>,
}

impl DeviceLists {
    fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.left.is_empty()
    }
}

#[derive(Default, Serialize)]
struct Rooms {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    join: BTreeMap<OwnedRoomId, JoinedRoom>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    invite: BTreeMap<OwnedRoomId, Value>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    knock: BTreeMap<OwnedRoomId, Value>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    leave: BTreeMap<OwnedRoomId, LeftRoom>,
}

impl Rooms {
    fn is_empty(&self) -> bool {
        self.join.is_empty()
            && self.invite.is_empty()
            && self.knock.is_empty()
            && self.leave.is_empty()
    }
}

#[derive(Serialize)]
struct Events<T> {
    events: Vec<T>,
}

impl<T> Events<T> {
    fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[derive(Serialize)]
struct Timeline {
    events: Vec<Box<RawValue>>,
    limited: bool,
    prev_batch: String,
}

#[derive(Serialize)]
struct JoinedRoom {
    timeline: Timeline,
    state: Events<Box<RawValue>>,
    #[serde(skip_serializing_if = "Events::is_empty")]
    account_data: Events<Value>,
    #[serde(skip_serializing_if = "Events::is_empty")]
    ephemeral: Events<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<Value>,
    unread_notifications: Value,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    unread_thread_notifications: BTreeMap<String, Value>,
}

#[derive(Serialize)]
struct LeftRoom {
    timeline: Timeline,
    state: Events<Box<RawValue>>,
    #[serde(skip_serializing_if = "Events::is_empty")]
    account_data: Events<Value>,
}

pub fn routes(router: AppRouter) -> AppRouter {
    route_any(router, sync_route)
}

const DEFAULT_TIMELINE_LIMIT: usize = 10;
const MAX_TIMEOUT: Duration = Duration::from_secs(120);
/// To-device messages in one response at most (as Synapse): a device back after a long
/// time may have thousands of room keys waiting.
const MAX_TO_DEVICE_PER_SYNC: usize = 100;

struct Ctx<'a> {
    services: &'a Services,
    user: &'a UserId,
    device: Option<&'a str>,
    since: Option<u64>,
    token: u64,
    full_state: bool,
    filter: &'a FilterDefinition,
}

async fn sync_route(
    services: Arc<Services>,
    body: Ruma<sync_events::v3::Request>,
) -> Result<impl IntoResponse> {
    let user = body.user().to_owned();
    let device = body.sender_device.as_ref().map(|d| d.to_string());
    let req = &body.body;
    let since = message::parse_token(req.since.as_deref())?;
    let filter = match &req.filter {
        None => FilterDefinition::default(),
        Some(Filter::FilterDefinition(def)) => def.clone(),
        Some(Filter::FilterId(id)) => {
            let stored = services
                .account_data
                .get_filter(&user, id)?
                .ok_or_else(|| Error::invalid_param("Unknown filter"))?;
            serde_json::from_value(stored)
                .map_err(|_| Error::invalid_param("Stored filter is invalid"))?
        }
        Some(_) => FilterDefinition::default(),
    };
    let timeout = req.timeout.unwrap_or_default().min(MAX_TIMEOUT);
    let deadline = tokio::time::Instant::now() + timeout;

    // Subscribed before the first computation: a change after this point wakes us even if
    // it lands while we compute.
    let mut wake = services.notifier.subscribe(&user);
    crate::service::presence::on_sync(&services, &user, &req.set_presence)?;
    loop {
        let committed = services.db.committed();
        // Read first: with more messages waiting than one response carries, the whole
        // response ends where its to-device messages do.
        let (to_device, token) = match &device {
            Some(device) => services.e2ee.take_to_device(
                &user,
                device,
                since,
                committed,
                MAX_TO_DEVICE_PER_SYNC,
            )?,
            None => (Vec::new(), committed),
        };
        let ctx = Ctx {
            services: &services,
            user: &user,
            device: device.as_deref(),
            since,
            token,
            full_state: req.full_state,
            filter: &filter,
        };
        let (response, has_changes) = compute(&ctx, to_device)?;
        if has_changes
            || since.is_none()
            || req.full_state
            || tokio::time::Instant::now() >= deadline
        {
            return Ok(Json(response));
        }
        if since.is_some_and(|s| s > token) {
            // A token from the future (e.g. a restored old database): answer now.
            return Ok(Json(response));
        }
        tokio::select! {
            changed = wake.changed() => { if changed.is_err() { return Ok(Json(response)); } }
            _ = tokio::time::sleep_until(deadline) => {}
            _ = services.shutdown_signal() => { return Ok(Json(response)); }
        }
    }
}

fn compute(ctx: &Ctx, to_device: Vec<Value>) -> Result<(SyncResponse, bool)> {
    let mut rooms = Rooms::default();
    let room_filter = &ctx.filter.room;

    let mut room_account_data: BTreeMap<OwnedRoomId, Vec<Value>> = BTreeMap::new();
    let mut global_account_data = Vec::new();
    for (room, kind, content) in
        ctx.services
            .account_data
            .changes_since(ctx.user, ctx.since.unwrap_or(0), ctx.token)?
    {
        let event =
            json!({ "type": kind, "content": serde_json::from_str::<Value>(content.get())? });
        match room {
            Some(room) => room_account_data.entry(room).or_default().push(event),
            None => global_account_data.push(event),
        }
    }
    if ctx.filter.account_data.not_types.iter().any(|t| t == "*") {
        global_account_data.clear();
    }

    // Rooms joined since the token: their members' presence is sent whole.
    let mut new_rooms = Vec::new();
    for (room_id, record) in ctx.services.rooms.user_rooms(ctx.user)? {
        if record.forgotten || room_filter.not_rooms.contains(&room_id) {
            continue;
        }
        if let Some(rooms) = &room_filter.rooms
            && !rooms.contains(&room_id)
        {
            continue;
        }
        if record.count > ctx.token {
            // A membership change after our token: the next sync shows it whole.
            continue;
        }
        let changed_since = ctx.since.is_none_or(|s| record.count > s);
        if changed_since && ctx.since.is_some() && record.membership == MembershipState::Join {
            new_rooms.push(room_id.clone());
        }
        let account_data = room_account_data.remove(&room_id).unwrap_or_default();
        match record.membership {
            MembershipState::Join => {
                if let Some(room) =
                    joined_room(ctx, &room_id, &record, changed_since, account_data)?
                {
                    rooms.join.insert(room_id.clone(), room);
                }
            }
            MembershipState::Invite if changed_since => {
                rooms.invite.insert(room_id.clone(), json!({ "invite_state": { "events": record.stripped.clone().unwrap_or_default() } }));
            }
            MembershipState::Knock if changed_since => {
                rooms.knock.insert(room_id.clone(), json!({ "knock_state": { "events": record.stripped.clone().unwrap_or_default() } }));
            }
            MembershipState::Leave | MembershipState::Ban => {
                let wanted = match ctx.since {
                    None => room_filter.include_leave,
                    Some(s) => record.count > s,
                };
                if wanted && let Some(room) = left_room(ctx, &room_id, &record, account_data)? {
                    rooms.leave.insert(room_id.clone(), room);
                }
            }
            _ => {}
        }
    }

    let presence = if ctx.filter.presence.not_types.iter().any(|t| t == "*") {
        Vec::new()
    } else {
        crate::service::presence::sync_events(
            ctx.services,
            ctx.user,
            ctx.since,
            ctx.token,
            &new_rooms,
        )?
    };
    let e2ee = &ctx.services.e2ee;
    let device_lists = match ctx.since {
        Some(since) => {
            let changes = device_lists::changes(ctx.services, ctx.user, since, ctx.token)?;
            DeviceLists {
                changed: changes.changed.iter().map(ToString::to_string).collect(),
                left: changes.left.iter().map(ToString::to_string).collect(),
            }
        }
        None => DeviceLists::default(),
    };
    let has_changes = !(rooms.is_empty()
        && global_account_data.is_empty()
        && presence.is_empty()
        && to_device.is_empty()
        && device_lists.is_empty());
    let response = SyncResponse {
        next_batch: ctx.token.to_string(),
        rooms,
        account_data: Events {
            events: global_account_data,
        },
        presence: Events { events: presence },
        to_device: Events { events: to_device },
        device_lists,
        device_one_time_keys_count: ctx.device.map(|d| e2ee.one_time_key_counts(ctx.user, d)),
        device_unused_fallback_key_types: ctx
            .device
            .map(|d| e2ee.unused_fallback_types(ctx.user, d)),
    };
    Ok((response, has_changes))
}

fn timeline_limit(filter: &RoomEventFilter) -> usize {
    filter
        .limit
        .map(|l| usize::try_from(u64::from(l)).unwrap_or(usize::MAX))
        .unwrap_or(DEFAULT_TIMELINE_LIMIT)
        .clamp(1, 1000)
}

/// Events of the room in `(since, until]` that pass the timeline filter, at most `limit`
/// (the newest), oldest first; and whether older ones were left out.
/// Events before stream position `check_before` (the user's join) pass the history
/// visibility rules first; the scan stops at the first hidden one, as everything older is
/// as hidden under `joined` and `invited`, and `/messages` can still page further.
fn timeline(
    ctx: &Ctx,
    room_id: &RoomId,
    since: u64,
    until: u64,
    limit: usize,
    check_before: u64,
) -> Result<(Vec<(u64, Pdu)>, bool)> {
    let tl_filter = &ctx.filter.room.timeline;
    let mut visibility = None;
    let mut events = Vec::new();
    let mut cursor = until.saturating_add(1);
    let mut limited = false;
    'outer: loop {
        let page = ctx
            .services
            .rooms
            .events_before(room_id, cursor, limit + 1)?;
        if page.is_empty() {
            break;
        }
        for (count, pdu) in page {
            cursor = count;
            if count <= since {
                break 'outer;
            }
            if count < check_before {
                let v = match &mut visibility {
                    Some(v) => v,
                    None => visibility.insert(message::Visibility::new(
                        ctx.services,
                        ctx.user,
                        room_id,
                    )?),
                };
                if !v.can_see(&pdu)? {
                    limited = true;
                    break 'outer;
                }
            }
            if !filter::matches(tl_filter, &pdu) {
                continue;
            }
            if events.len() == limit {
                limited = true;
                break 'outer;
            }
            events.push((count, pdu));
        }
    }
    events.reverse();
    Ok((events, limited))
}

fn client_events(ctx: &Ctx, events: impl IntoIterator<Item = Pdu>) -> Result<Vec<Box<RawValue>>> {
    events
        .into_iter()
        .map(|pdu| {
            let txn = ctx
                .services
                .rooms
                .transaction_id_for(&pdu, ctx.user, ctx.device)?;
            Ok(pdu.to_client_json(txn.as_deref()))
        })
        .collect()
}

/// The room's state at the start of the timeline (at `end_count` if it is empty).
fn start_state(
    ctx: &Ctx,
    room_id: &RoomId,
    timeline: &[(u64, Pdu)],
    end_count: u64,
) -> Result<Arc<StateMap>> {
    let services = ctx.services;
    Ok(match timeline.first() {
        Some((_, first)) => match services.rooms.state_before(&first.event_id)? {
            Some(hash) => services.rooms.load_state(hash)?,
            None => Arc::default(),
        },
        None => message::state_at_count(services, room_id, end_count)?,
    })
}

/// With lazy-loading, the member events of the timeline's senders at the start of the
/// timeline. The client may never have been sent them, however long unchanged, so they
/// come whenever their senders appear (the spec lets the server resend them).
fn sender_members(ctx: &Ctx, start_state: &StateMap, timeline: &[(u64, Pdu)]) -> Result<Vec<Pdu>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (_, pdu) in timeline {
        if !seen.insert(pdu.sender.clone()) {
            continue;
        }
        if let Some(member) = ctx.services.rooms.state_get(
            start_state,
            &StateEventType::RoomMember,
            pdu.sender.as_str(),
        )? && !timeline.iter().any(|(_, p)| p.event_id == member.event_id)
            && filter::matches(&ctx.filter.room.state, &member)
        {
            out.push(member);
        }
    }
    Ok(out)
}

/// The state section: everything the client needs to know about the room's state at the
/// start of the timeline and does not know yet. With lazy-loaded members, only the member
/// events of timeline senders and the user's own are sent, the former even if unchanged.
fn state_section(
    ctx: &Ctx,
    room_id: &RoomId,
    timeline: &[(u64, Pdu)],
    end_count: u64,
    full: bool,
) -> Result<Vec<Pdu>> {
    let services = ctx.services;
    let state_filter = &ctx.filter.room.state;
    let lazy = state_filter.lazy_load_options.is_disabled().not();
    let start_state = start_state(ctx, room_id, timeline, end_count)?;
    let in_timeline: HashSet<_> = timeline.iter().map(|(_, p)| p.event_id.clone()).collect();
    let mut wanted_members = HashSet::new();
    if lazy {
        let senders = timeline
            .iter()
            .map(|(_, p)| p.sender.as_str())
            .chain([ctx.user.as_str()]);
        for sender in senders {
            if let Some(short) = services
                .rooms
                .get_shortstatekey(&StateEventType::RoomMember, sender)?
            {
                wanted_members.insert(short);
            }
        }
    }
    let since_state = match (full, ctx.since) {
        (false, Some(since)) => Some(message::state_at_count(services, room_id, since)?),
        _ => None,
    };
    let mut out = Vec::new();
    for (&short_key, &short_event) in start_state.iter() {
        let wanted_member = wanted_members.contains(&short_key);
        if lazy && !wanted_member && services.rooms.is_member_statekey(short_key)? {
            continue;
        }
        if !wanted_member
            && since_state
                .as_ref()
                .is_some_and(|s| s.get(&short_key) == Some(&short_event))
        {
            continue;
        }
        let event_id = services.rooms.get_eventid(short_event)?;
        if in_timeline.contains(&event_id) {
            continue;
        }
        if let Some(pdu) = services.rooms.get_pdu(&event_id)?
            && filter::matches(state_filter, &pdu)
        {
            out.push(pdu);
        }
    }
    Ok(out)
}

fn summary(ctx: &Ctx, room_id: &RoomId) -> Result<Value> {
    let members = ctx.services.rooms.members(room_id, None)?;
    let joined = members
        .iter()
        .filter(|(_, m)| *m == MembershipState::Join)
        .count();
    let invited = members
        .iter()
        .filter(|(_, m)| *m == MembershipState::Invite)
        .count();
    let state = ctx.services.rooms.current_state(room_id)?;
    let named = ctx
        .services
        .rooms
        .state_get(&state, &StateEventType::RoomName, "")?
        .is_some()
        || ctx
            .services
            .rooms
            .state_get(&state, &StateEventType::RoomCanonicalAlias, "")?
            .is_some();
    let mut summary = json!({
        "m.joined_member_count": joined,
        "m.invited_member_count": invited,
    });
    if !named {
        let heroes: Vec<_> = members
            .iter()
            .filter(|(u, m)| {
                u != ctx.user && matches!(m, MembershipState::Join | MembershipState::Invite)
            })
            .take(5)
            .map(|(u, _)| u.to_string())
            .collect();
        summary["m.heroes"] = json!(heroes);
    }
    Ok(summary)
}

fn joined_room(
    ctx: &Ctx,
    room_id: &RoomId,
    record: &UserRoom,
    newly_joined: bool,
    account_data: Vec<Value>,
) -> Result<Option<JoinedRoom>> {
    let services = ctx.services;
    let since = if newly_joined {
        0
    } else {
        ctx.since.unwrap_or(0)
    };
    let quiet = services.rooms.last_count(room_id)? <= since;
    let ephemeral = sync_realtime::ephemeral(
        services,
        ctx.user,
        room_id,
        &ctx.filter.room.ephemeral,
        since,
        ctx.token,
    )?;
    if quiet && account_data.is_empty() && ephemeral.is_empty() && !ctx.full_state && !newly_joined
    {
        return Ok(None);
    }
    let limit = timeline_limit(&ctx.filter.room.timeline);
    let (events, limited) = if quiet {
        (vec![], false)
    } else {
        timeline(ctx, room_id, since, ctx.token, limit, record.count)?
    };
    let full = newly_joined || ctx.full_state || ctx.since.is_none();
    let state = if full || limited {
        state_section(ctx, room_id, &events, ctx.token, full)?
    } else if !events.is_empty() && ctx.filter.room.state.lazy_load_options.is_disabled().not() {
        let start = start_state(ctx, room_id, &events, ctx.token)?;
        sender_members(ctx, &start, &events)?
    } else {
        vec![]
    };
    let prev_batch = events
        .first()
        .map(|(count, _)| count.saturating_sub(1))
        .unwrap_or(ctx.token);
    let summary =
        if full || events.iter().any(|(_, p)| filter::is_member_event(p)) || record.count > since {
            Some(summary(ctx, room_id)?)
        } else {
            None
        };
    let (unread_notifications, unread_thread_notifications) = sync_realtime::unread(
        services,
        ctx.user,
        room_id,
        ctx.filter.room.timeline.unread_thread_notifications,
    )?;
    Ok(Some(JoinedRoom {
        unread_notifications,
        unread_thread_notifications,
        timeline: Timeline {
            events: client_events(ctx, events.into_iter().map(|(_, p)| p))?,
            limited,
            prev_batch: prev_batch.to_string(),
        },
        state: Events {
            events: client_events(ctx, state)?,
        },
        account_data: Events {
            events: account_data,
        },
        ephemeral: Events { events: ephemeral },
        summary,
    }))
}

fn left_room(
    ctx: &Ctx,
    room_id: &RoomId,
    record: &UserRoom,
    account_data: Vec<Value>,
) -> Result<Option<LeftRoom>> {
    let since = ctx.since.unwrap_or(0);
    let limit = timeline_limit(&ctx.filter.room.timeline);
    let until = record.count.min(ctx.token);
    let (events, limited) = timeline(ctx, room_id, since, until, limit, u64::MAX)?;
    let state = if limited || ctx.since.is_none() {
        state_section(ctx, room_id, &events, until, ctx.since.is_none())?
    } else {
        vec![]
    };
    let prev_batch = events
        .first()
        .map(|(count, _)| count.saturating_sub(1))
        .unwrap_or(until);
    Ok(Some(LeftRoom {
        timeline: Timeline {
            events: client_events(ctx, events.into_iter().map(|(_, p)| p))?,
            limited,
            prev_batch: prev_batch.to_string(),
        },
        state: Events {
            events: client_events(ctx, state)?,
        },
        account_data: Events {
            events: account_data,
        },
    }))
}
