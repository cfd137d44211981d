//! Relations and threads (spec: "Relationships", "Threading"): the events that point at an
//! event through `m.relates_to`, and the thread roots of a room.
//!
//! Pagination tokens are stream positions, as in `/messages`: going backwards from `t`
//! yields events at or before `t`, going forwards events after `t`.

use std::sync::Arc;

use ruma::{
    EventId, RoomId, UInt, UserId,
    api::{
        Direction,
        client::{
            relations::{
                get_relating_events, get_relating_events_with_rel_type,
                get_relating_events_with_rel_type_and_event_type,
            },
            threads::get_threads::{self, v1::IncludeThreads},
        },
    },
    events::AnyMessageLikeEvent,
    serde::Raw,
};
use serde_json::{Value, json, value::to_raw_value};

use super::message::{Visibility, parse_token, world_readable};
use crate::{
    api::{
        router::{AppRouter, route},
        ruma::Ruma,
    },
    error::{Error, Result},
    service::{Services, rooms::Pdu},
};

pub fn routes(router: AppRouter) -> AppRouter {
    let router = route(router, relating_route);
    let router = route(router, relating_with_rel_type_route);
    let router = route(router, relating_with_rel_type_and_event_type_route);
    route(router, threads_route)
}

/// How many levels of relations of relations `recurse=true` follows; the spec asks for at
/// least three.
const RECURSION_DEPTH: usize = 3;
/// Synapse's defaults for both endpoints.
const DEFAULT_LIMIT: usize = 5;
const MAX_LIMIT: usize = 1000;

/// Members (current or former) may ask; what they see is then decided per event by the
/// history visibility. Anyone may ask in a world-readable room.
fn check_access(services: &Services, user: &UserId, room_id: &RoomId) -> Result<()> {
    if services.rooms.user_room(user, room_id)?.is_none() && !world_readable(services, room_id)? {
        return Err(Error::forbidden("You are not a member of this room"));
    }
    Ok(())
}

fn limit(requested: Option<UInt>) -> usize {
    requested
        .map(|l| usize::try_from(u64::from(l)).unwrap_or(MAX_LIMIT))
        .unwrap_or(DEFAULT_LIMIT)
        .clamp(1, MAX_LIMIT)
}

struct Query<'a> {
    room_id: &'a RoomId,
    event_id: &'a EventId,
    rel_type: Option<String>,
    event_type: Option<String>,
    from: Option<&'a str>,
    to: Option<&'a str>,
    dir: Direction,
    limit: Option<UInt>,
    recurse: bool,
}

struct Page {
    chunk: Vec<Raw<AnyMessageLikeEvent>>,
    next_batch: Option<String>,
    prev_batch: Option<String>,
    recursion_depth: Option<UInt>,
}

fn relating_events<T>(services: &Services, body: &Ruma<T>, q: Query<'_>) -> Result<Page> {
    let user = body.user();
    check_access(services, user, q.room_id)?;
    let mut visibility = Visibility::new(services, user, q.room_id)?;
    match services.rooms.get_pdu(q.event_id)? {
        Some(parent) if parent.room_id == q.room_id && visibility.can_see(&parent)? => {}
        _ => return Err(Error::not_found("Unknown parent event")),
    }
    let depth = if q.recurse { RECURSION_DEPTH } else { 1 };
    let from = parse_token(q.from)?;
    let to = parse_token(q.to)?;
    let in_range = |count: u64| match q.dir {
        Direction::Backward => from.is_none_or(|f| count <= f) && to.is_none_or(|t| count > t),
        Direction::Forward => from.is_none_or(|f| count > f) && to.is_none_or(|t| count <= t),
    };
    // Filters apply to the results, not to the chain that leads to them (as Synapse).
    let mut related: Vec<(u64, Pdu)> = services
        .rooms
        .relations_recursive(q.room_id, q.event_id, depth)?
        .into_iter()
        .filter(|(count, rel_type, pdu)| {
            q.rel_type.as_ref().is_none_or(|t| t == rel_type)
                && q.event_type
                    .as_ref()
                    .is_none_or(|t| *t == pdu.kind.to_string())
                && in_range(*count)
        })
        .map(|(count, _, pdu)| (count, pdu))
        .collect();
    if q.dir == Direction::Backward {
        related.reverse();
    }

    let limit = limit(q.limit);
    let device = body.sender_device.as_deref().map(|d| d.as_str());
    let mut chunk = Vec::new();
    let mut next_batch = None;
    let mut candidates = related.into_iter().peekable();
    while let Some((count, pdu)) = candidates.next() {
        if !visibility.can_see(&pdu)? {
            continue;
        }
        let txn = services.rooms.transaction_id_for(&pdu, user, device)?;
        chunk.push(pdu.to_raw(txn.as_deref()));
        if chunk.len() == limit {
            if candidates.peek().is_some() {
                next_batch = Some(match q.dir {
                    Direction::Backward => count.saturating_sub(1),
                    Direction::Forward => count,
                });
            }
            break;
        }
    }
    Ok(Page {
        chunk,
        next_batch: next_batch.map(|t| t.to_string()),
        prev_batch: q.from.map(ToOwned::to_owned),
        recursion_depth: q.recurse.then(|| UInt::from(RECURSION_DEPTH as u32)),
    })
}

macro_rules! respond {
    ($response:ty, $page:expr) => {{
        let page = $page;
        let mut response = <$response>::new(page.chunk);
        response.next_batch = page.next_batch;
        response.prev_batch = page.prev_batch;
        response.recursion_depth = page.recursion_depth;
        Ok(response)
    }};
}

async fn relating_route(
    services: Arc<Services>,
    body: Ruma<get_relating_events::v1::Request>,
) -> Result<get_relating_events::v1::Response> {
    let req = &body.body;
    let query = Query {
        room_id: &req.room_id,
        event_id: &req.event_id,
        rel_type: None,
        event_type: None,
        from: req.from.as_deref(),
        to: req.to.as_deref(),
        dir: req.dir,
        limit: req.limit,
        recurse: req.recurse,
    };
    respond!(
        get_relating_events::v1::Response,
        relating_events(&services, &body, query)?
    )
}

async fn relating_with_rel_type_route(
    services: Arc<Services>,
    body: Ruma<get_relating_events_with_rel_type::v1::Request>,
) -> Result<get_relating_events_with_rel_type::v1::Response> {
    let req = &body.body;
    let query = Query {
        room_id: &req.room_id,
        event_id: &req.event_id,
        rel_type: Some(req.rel_type.to_string()),
        event_type: None,
        from: req.from.as_deref(),
        to: req.to.as_deref(),
        dir: req.dir,
        limit: req.limit,
        recurse: req.recurse,
    };
    respond!(
        get_relating_events_with_rel_type::v1::Response,
        relating_events(&services, &body, query)?
    )
}

async fn relating_with_rel_type_and_event_type_route(
    services: Arc<Services>,
    body: Ruma<get_relating_events_with_rel_type_and_event_type::v1::Request>,
) -> Result<get_relating_events_with_rel_type_and_event_type::v1::Response> {
    let req = &body.body;
    let query = Query {
        room_id: &req.room_id,
        event_id: &req.event_id,
        rel_type: Some(req.rel_type.to_string()),
        event_type: Some(req.event_type.to_string()),
        from: req.from.as_deref(),
        to: req.to.as_deref(),
        dir: req.dir,
        limit: req.limit,
        recurse: req.recurse,
    };
    respond!(
        get_relating_events_with_rel_type_and_event_type::v1::Response,
        relating_events(&services, &body, query)?
    )
}

struct Thread {
    /// Stream position of the newest reply: threads are ordered by their latest activity.
    activity: u64,
    root: Pdu,
    latest: Pdu,
    count: usize,
    participated: bool,
}

/// Thread roots, most recently active first, each with the thread summary that clients
/// expect in `unsigned.m.relations.m.thread`. The token is the activity position of the
/// last root returned; the next page holds threads active before it.
async fn threads_route(
    services: Arc<Services>,
    body: Ruma<get_threads::v1::Request>,
) -> Result<get_threads::v1::Response> {
    let req = &body.body;
    let user = body.user();
    let only_participated = match req.include {
        IncludeThreads::All => false,
        IncludeThreads::Participated => true,
        _ => return Err(Error::invalid_param("include must be all or participated")),
    };
    check_access(&services, user, &req.room_id)?;
    let from = parse_token(req.from.as_deref())?;
    let mut visibility = Visibility::new(&services, user, &req.room_id)?;

    let mut threads = Vec::new();
    for root in services.rooms.thread_roots(&req.room_id)? {
        if !visibility.can_see(&root)? {
            continue;
        }
        let mut replies = Vec::new();
        for (count, rel_type, pdu) in
            services
                .rooms
                .relations_recursive(&req.room_id, &root.event_id, 1)?
        {
            if rel_type == "m.thread" && visibility.can_see(&pdu)? {
                replies.push((count, pdu));
            }
        }
        // Every reply redacted or hidden: nothing left of the thread for this user.
        let Some((activity, latest)) = replies.last().cloned() else {
            continue;
        };
        let participated = root.sender == user || replies.iter().any(|(_, p)| p.sender == user);
        if (only_participated && !participated) || from.is_some_and(|f| activity >= f) {
            continue;
        }
        threads.push(Thread {
            activity,
            root,
            latest,
            count: replies.len(),
            participated,
        });
    }
    threads.sort_by(|a, b| b.activity.cmp(&a.activity));

    let limit = limit(req.limit);
    let next_batch = (threads.len() > limit).then(|| threads[limit - 1].activity.to_string());
    threads.truncate(limit);
    let device = body.sender_device.as_deref().map(|d| d.as_str());
    let mut chunk = Vec::with_capacity(threads.len());
    for thread in threads {
        let txn = services
            .rooms
            .transaction_id_for(&thread.root, user, device)?;
        let mut root: Value =
            serde_json::from_str(thread.root.to_client_json(txn.as_deref()).get())?;
        let latest: Value = serde_json::from_str(thread.latest.to_client_json(None).get())?;
        root["unsigned"]["m.relations"]["m.thread"] = json!({
            "latest_event": latest,
            "count": thread.count,
            "current_user_participated": thread.participated,
        });
        chunk.push(Raw::from_json(to_raw_value(&root)?));
    }
    let mut response = get_threads::v1::Response::new(chunk);
    response.next_batch = next_batch;
    Ok(response)
}
