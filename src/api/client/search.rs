//! Server-side search (spec: "Server Side Search"): `POST /search`, category
//! `room_events`, over the full-text index of `service/search`.
//!
//! The index finds candidates in the rooms the user is in or has left (up to where they
//! left); each hit then passes the same history-visibility check as `/messages`, so a
//! user only finds what they could read. Hits that fail it are skipped and more are
//! fetched.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ruma::{
    OwnedRoomId, OwnedUserId, UInt,
    api::client::search::search_events::v3::{
        self as search_events, EventContextResult, GroupingKey, OrderBy, ResultGroup,
        ResultGroupMap, ResultRoomEvents, SearchKeys, SearchResult, UserProfile,
    },
    events::{StateEventType, room::member::MembershipState},
};

use super::{
    filter,
    message::{Visibility, readable_state},
};
use crate::{
    api::{
        router::{AppRouter, route},
        ruma::Ruma,
    },
    error::{Error, Result},
    service::{
        Services,
        rooms::{Pdu, PduEvent},
        search::{
            indexer::searchable_text,
            query::{Cursor, Order, Scope},
        },
    },
};

/// Results per page when the filter gives no limit (as Synapse).
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;
const MAX_CONTEXT: usize = 100;
/// Index pages read per request while visibility filters hits out.
const MAX_ROUNDS: usize = 8;

pub fn routes(router: AppRouter) -> AppRouter {
    route(router, search_route)
}

fn decode_batch(token: &str) -> Result<Cursor> {
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| Error::invalid_param("Invalid next_batch"))
}

fn encode_batch(cursor: &Cursor) -> Result<String> {
    Ok(URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursor)?))
}

async fn search_route(
    services: Arc<Services>,
    body: Ruma<search_events::Request>,
) -> Result<search_events::Response> {
    if !services.search.enabled() {
        // Synapse's answer with `enable_search: false`.
        return Err(Error::unknown("Search is disabled on this homeserver")
            .with_status(axum::http::StatusCode::BAD_REQUEST));
    }
    let user = body.user();
    let criteria = body
        .body
        .search_categories
        .room_events
        .as_ref()
        .ok_or_else(|| Error::bad_json("No known search category (only room_events)"))?;
    let order = match &criteria.order_by {
        None | Some(OrderBy::Rank) => Order::Rank,
        Some(OrderBy::Recent) => Order::Recent,
        Some(other) => {
            return Err(Error::invalid_param(format!(
                "Unknown order_by: {}",
                other.as_str()
            )));
        }
    };
    let keys = match &criteria.keys {
        None => vec!["content.body", "content.name", "content.topic"],
        Some(keys) => keys
            .iter()
            .map(|k| match k {
                SearchKeys::ContentBody => Ok("content.body"),
                SearchKeys::ContentName => Ok("content.name"),
                SearchKeys::ContentTopic => Ok("content.topic"),
                other => Err(Error::invalid_param(format!(
                    "Unknown search key: {}",
                    other.as_str()
                ))),
            })
            .collect::<Result<_>>()?,
    };
    let mut group_by = Vec::new();
    for grouping in &criteria.groupings.group_by {
        match &grouping.key {
            Some(k @ (GroupingKey::RoomId | GroupingKey::Sender)) => group_by.push(k.clone()),
            Some(other) => {
                return Err(Error::invalid_param(format!(
                    "Unknown grouping key: {}",
                    other.as_str()
                )));
            }
            None => {}
        }
    }
    let cursor = body
        .body
        .next_batch
        .as_deref()
        .map(decode_batch)
        .transpose()?;
    if cursor.as_ref().is_some_and(|c| c.order != order) {
        return Err(Error::invalid_param("next_batch is from another order_by"));
    }
    let filter = &criteria.filter;
    let limit = filter
        .limit
        .map_or(DEFAULT_LIMIT, |l| {
            usize::try_from(u64::from(l)).unwrap_or(MAX_LIMIT)
        })
        .clamp(1, MAX_LIMIT);

    // Candidate rooms: joined ones, and left ones up to the leave.
    let mut rooms = Vec::new();
    let mut shortrooms = std::collections::HashSet::new();
    for (room_id, record) in services.rooms.user_rooms(user)? {
        if record.forgotten
            || filter.not_rooms.contains(&room_id)
            || filter.rooms.as_ref().is_some_and(|r| !r.contains(&room_id))
        {
            continue;
        }
        if matches!(
            record.membership,
            MembershipState::Join | MembershipState::Leave | MembershipState::Ban
        ) && let Some(short) = services.rooms.get_shortroomid(&room_id)?
        {
            shortrooms.insert(short);
        }
        match record.membership {
            MembershipState::Join => rooms.push((room_id.to_string(), None)),
            MembershipState::Leave | MembershipState::Ban => {
                rooms.push((room_id.to_string(), Some(record.count)))
            }
            _ => {}
        }
    }
    let scope = Scope {
        keys,
        rooms,
        shortrooms: Arc::new(shortrooms),
        senders: filter
            .senders
            .as_ref()
            .map(|s| s.iter().map(ToString::to_string).collect()),
        not_senders: filter.not_senders.iter().map(ToString::to_string).collect(),
    };
    let term = criteria.search_term.as_str();
    let search = &services.search;
    if cursor.is_none() {
        // Later pages keep the first page's snapshot, so only the first needs the newest.
        search.refresh().await;
    }
    let snapshot = cursor
        .as_ref()
        .map_or_else(|| services.db.committed(), |c| c.snapshot);

    let mut visibility: HashMap<OwnedRoomId, Visibility<'_>> = HashMap::new();
    let mut found: Vec<(Pdu, f32, u64, String)> = Vec::new();
    let mut position = cursor.clone();
    let mut more = false;
    let mut stats = cursor.map(|c| c.stats).unwrap_or_default();
    'rounds: for _ in 0..MAX_ROUNDS {
        let page = search.page(term, &scope, order, snapshot, position.as_ref(), limit * 2)?;
        stats = page.stats;
        more = !page.exhausted;
        let hits = page.hits.len();
        for (i, hit) in page.hits.into_iter().enumerate() {
            position = Some(Cursor {
                order,
                score: hit.score.to_bits(),
                pos: hit.pos,
                snapshot,
                stats: stats.clone(),
            });
            let Some(json) = services.rooms.pdu_json_at(hit.shortroomid, hit.pos)? else {
                continue;
            };
            let pdu: Pdu = Arc::new(PduEvent::from_json(&json)?);
            let text = serde_json::from_slice::<serde_json::Value>(&json)
                .ok()
                .and_then(|event| searchable_text(&event).map(|(_, text)| text.to_owned()))
                .unwrap_or_default();
            let room = pdu.room_id.clone();
            let seen = match visibility.entry(room) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(Visibility::new(&services, user, &pdu.room_id)?)
                }
            };
            if !filter::matches(filter, &pdu)
                || services.rooms.is_soft_failed(&pdu.event_id)?
                || !seen.can_see(&pdu)?
            {
                continue;
            }
            found.push((pdu, hit.score, hit.pos, text));
            if found.len() >= limit {
                more = more || i + 1 < hits;
                break 'rounds;
            }
        }
        if !more {
            break;
        }
    }
    let next_batch = match (&position, more) {
        (Some(p), true) => Some(encode_batch(&Cursor {
            stats: stats.clone(),
            ..p.clone()
        })?),
        _ => None,
    };

    let mut out = ResultRoomEvents::new();
    out.count = Some(UInt::try_from(search.count(term, &scope, snapshot)?).unwrap_or(UInt::MAX));
    let mut highlights: Vec<String> = Vec::new();
    let mut by_room: BTreeMap<OwnedRoomId, ResultGroup> = BTreeMap::new();
    let mut by_sender: BTreeMap<OwnedUserId, ResultGroup> = BTreeMap::new();
    // Context only when asked for, as Synapse: ruma fills a missing `event_context` with
    // the spec's defaults (5 and 5), which made every search read ten events around each
    // result (most of a rare word's search time in a large database, measured).
    let context_asked = body.json_body().is_some_and(|v| {
        v["search_categories"]["room_events"]
            .get("event_context")
            .is_some_and(|c| !c.is_null())
    });
    let context = &criteria.event_context;
    let (before, after) = (
        usize::try_from(u64::from(context.before_limit))
            .unwrap_or(MAX_CONTEXT)
            .min(MAX_CONTEXT),
        usize::try_from(u64::from(context.after_limit))
            .unwrap_or(MAX_CONTEXT)
            .min(MAX_CONTEXT),
    );
    for (index, (pdu, score, pos, text)) in found.iter().enumerate() {
        for word in search.matched_words(term, text) {
            if !highlights.contains(&word) {
                highlights.push(word);
            }
        }
        for (groups, key) in [
            (&mut by_room as &mut dyn GroupMap, pdu.room_id.to_string()),
            (&mut by_sender as &mut dyn GroupMap, pdu.sender.to_string()),
        ] {
            groups.add(&key, index, pdu, next_batch.as_deref());
        }
        let mut result = SearchResult::new();
        result.rank = Some(f64::from(*score));
        result.result = Some(pdu.to_raw(None));
        if context_asked && (before > 0 || after > 0 || context.include_profile) {
            let seen = visibility
                .get_mut(&pdu.room_id)
                .ok_or_else(|| Error::internal("visibility checked above"))?;
            result.context = event_context(&services, seen, pdu, *pos, before, after)?;
            if context.include_profile {
                result.context.profile_info = profiles(&services, pdu, &result.context)?;
            }
        }
        out.results.push(result);
    }
    for key in &group_by {
        match key {
            GroupingKey::RoomId => out
                .groups
                .insert(ResultGroupMap::RoomId(std::mem::take(&mut by_room))),
            _ => out
                .groups
                .insert(ResultGroupMap::Sender(std::mem::take(&mut by_sender))),
        };
    }
    if criteria.include_state == Some(true) {
        for (pdu, ..) in &found {
            if out.state.contains_key(&pdu.room_id) {
                continue;
            }
            let state = readable_state(&services, user, &pdu.room_id)?;
            let events = services
                .rooms
                .state_events(&state)?
                .iter()
                .map(|p| p.to_raw(None))
                .collect();
            out.state.insert(pdu.room_id.clone(), events);
        }
    }
    out.highlights = highlights;
    out.next_batch = next_batch;
    let mut categories = search_events::ResultCategories::new();
    categories.room_events = out;
    Ok(search_events::Response::new(categories))
}

/// `groups`: each group lists its results in order; `order` is where its first result
/// stands.
trait GroupMap {
    fn add(&mut self, key: &str, index: usize, pdu: &PduEvent, next_batch: Option<&str>);
}

impl<K: Ord + for<'a> TryFrom<&'a str>> GroupMap for BTreeMap<K, ResultGroup> {
    fn add(&mut self, key: &str, index: usize, pdu: &PduEvent, next_batch: Option<&str>) {
        let Ok(key) = K::try_from(key) else { return };
        let group = self.entry(key).or_insert_with(|| {
            let mut g = ResultGroup::new();
            g.order = UInt::try_from(index as u64).ok();
            g.next_batch = next_batch.map(ToOwned::to_owned);
            g
        });
        group.results.push(pdu.event_id.clone());
    }
}

/// The visible events around a result, like `/context`.
fn event_context(
    services: &Services,
    visibility: &mut Visibility<'_>,
    pdu: &PduEvent,
    pos: u64,
    before: usize,
    after: usize,
) -> Result<EventContextResult> {
    let mut context = EventContextResult::new();
    let mut start = pos;
    for (count, p) in services
        .rooms
        .events_before(&pdu.room_id, pos, before * 4 + 1)?
    {
        if context.events_before.len() >= before {
            break;
        }
        if visibility.can_see(&p)? {
            context.events_before.push(p.to_raw(None));
            start = count;
        }
    }
    let mut end = pos;
    for (count, p) in services
        .rooms
        .events_after(&pdu.room_id, pos, after * 4 + 1)?
    {
        if context.events_after.len() >= after {
            break;
        }
        if visibility.can_see(&p)? {
            context.events_after.push(p.to_raw(None));
            end = count;
        }
    }
    context.start = Some(start.saturating_sub(1).to_string());
    context.end = Some(end.to_string());
    Ok(context)
}

/// Display names and avatars of the senders of the result and its context, as the room
/// state before the result says.
fn profiles(
    services: &Services,
    pdu: &PduEvent,
    context: &EventContextResult,
) -> Result<BTreeMap<OwnedUserId, UserProfile>> {
    let mut senders = vec![pdu.sender.clone()];
    for raw in context.events_before.iter().chain(&context.events_after) {
        if let Ok(Some(sender)) = raw.get_field::<OwnedUserId>("sender")
            && !senders.contains(&sender)
        {
            senders.push(sender);
        }
    }
    let Some(hash) = services
        .rooms
        .visibility_state(&pdu.room_id, &pdu.event_id)?
    else {
        return Ok(BTreeMap::new());
    };
    let state = services.rooms.load_state(hash)?;
    let mut out = BTreeMap::new();
    for sender in senders {
        let member =
            services
                .rooms
                .state_get(&state, &StateEventType::RoomMember, sender.as_str())?;
        let mut profile = UserProfile::new();
        if let Some(member) = member {
            profile.displayname = member
                .content_field("displayname")
                .and_then(|v| v.as_str().map(ToOwned::to_owned));
            profile.avatar_url = member
                .content_field("avatar_url")
                .and_then(|v| v.as_str().map(Into::into));
        }
        out.insert(sender, profile);
    }
    Ok(out)
}
