//! Push rule evaluation in the append path and the notifications it records. For each new
//! event the rules of every local member but the sender are run once (the event is
//! flattened once, the room's power levels come from a cache keyed by their event); each
//! notifying outcome is written in the event's own batch, keyed by the event's stream
//! position, so unread counts are "notifications after the user's read receipt".

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
    events::{StateEventType, TimelineEventType, room::member::MembershipState},
    push::{Action, FlattenedJson, PushConditionPowerLevelsCtx, PushConditionRoomCtx},
    serde::Raw,
};
use serde::{Deserialize, Serialize};

use super::{Push, memo::Memo};
use crate::{
    database::{Commit, key},
    error::Result,
    service::{
        receipts::ReadUpTo,
        rooms::{PduEvent, Rooms, state::StateMap},
    },
};

#[derive(Default)]
pub(super) struct NameCache {
    member_keys: HashMap<OwnedUserId, u64>,
    names: HashMap<u64, Arc<str>>,
}

/// Entries per map before it starts over: a few MiB at most.
const NAME_CACHE_ENTRIES: usize = 65_536;

impl Push {
    /// The member's display name in the room before the event ("" without one).
    fn display_name(&self, rooms: &Rooms, state: &StateMap, user_id: &UserId) -> Result<Arc<str>> {
        let cached = self
            .names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .member_keys
            .get(user_id)
            .copied();
        let key = match cached {
            Some(k) => k,
            None => {
                let Some(k) =
                    rooms.get_shortstatekey(&StateEventType::RoomMember, user_id.as_str())?
                else {
                    return Ok(Arc::from(""));
                };
                let mut cache = self.names.lock().unwrap_or_else(|e| e.into_inner());
                if cache.member_keys.len() >= NAME_CACHE_ENTRIES {
                    cache.member_keys.clear();
                }
                cache.member_keys.insert(user_id.to_owned(), k);
                k
            }
        };
        let Some(&event) = state.get(&key) else {
            return Ok(Arc::from(""));
        };
        if let Some(name) = self
            .names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .names
            .get(&event)
        {
            return Ok(Arc::clone(name));
        }
        let name: Arc<str> = rooms
            .get_pdu(&rooms.get_eventid(event)?)?
            .and_then(|m| m.content_field("displayname"))
            .and_then(|n| n.as_str().map(Arc::from))
            .unwrap_or_else(|| Arc::from(""));
        let mut cache = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if cache.names.len() >= NAME_CACHE_ENTRIES {
            cache.names.clear();
        }
        cache.names.insert(event, Arc::clone(&name));
        Ok(name)
    }
}

pub(super) struct PowerCache {
    event: Option<u64>,
    ctx: Option<PushConditionPowerLevelsCtx>,
}

/// What the rules decided for one user.
pub struct Outcome {
    pub user_id: OwnedUserId,
    pub actions: Vec<Action>,
    pub highlight: bool,
    /// `(app_id, pushkey)` of the user's pushers, each queued a push.
    pub pushers: Arc<[(String, String)]>,
}

/// One notification as `GET /notifications` and the pushers read it.
#[derive(Clone, Deserialize, Serialize)]
pub struct Notification {
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    pub actions: Vec<Action>,
    pub ts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    #[serde(default)]
    pub highlight: bool,
}

#[derive(Deserialize, Serialize)]
struct Counted {
    #[serde(rename = "h")]
    highlight: bool,
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    thread: Option<String>,
}

/// Unread counts of a room: the main timeline and each thread.
#[derive(Default, Debug)]
pub struct Unread {
    pub notifications: u64,
    pub highlights: u64,
    pub threads: BTreeMap<String, (u64, u64)>,
}

/// ruma's rule matching is async only for an optional feature we do not use; it completes
/// on its first poll.
fn ready<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// The thread an event belongs to: its root's id.
pub fn thread_of(pdu: &PduEvent) -> Option<String> {
    match pdu.relation() {
        Some((rel, root)) if rel == "m.thread" => Some(root.to_string()),
        _ => None,
    }
}

impl Push {
    /// Runs the rules of each local member (and of a local user invited by this event) on
    /// the event; `state` is the room's state before it.
    pub fn evaluate(
        &self,
        rooms: &Rooms,
        pdu: &PduEvent,
        state: &StateMap,
        local_server: &ruma::ServerName,
    ) -> Result<Vec<Outcome>> {
        let members = rooms.joined_members(&pdu.room_id)?;
        let mut users: Vec<OwnedUserId> = members
            .iter()
            .filter(|u| u.server_name() == local_server && **u != pdu.sender)
            .cloned()
            .collect();
        if pdu.kind == TimelineEventType::RoomMember
            && let Some(target) = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok())
            && target.server_name() == local_server
            && target != pdu.sender
            && !users.contains(&target)
            && pdu
                .content_field("membership")
                .and_then(|m| m.as_str().map(MembershipState::from))
                == Some(MembershipState::Invite)
        {
            users.push(target);
        }
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let raw: Raw<()> = pdu.to_raw(None);
        let flat = FlattenedJson::from_raw(&raw);
        let member_count = UInt::try_from(members.len() as u64).unwrap_or(UInt::MAX);
        // One context for the event; only the user and their display name change per member.
        let mut ctx = PushConditionRoomCtx::new(
            pdu.room_id.clone(),
            member_count,
            pdu.sender.clone(),
            String::new(),
        );
        if let Some(power) = self.power_ctx(rooms, &pdu.room_id, state)? {
            ctx = ctx.with_power_levels(power);
        }
        let mut memo = Memo::default();
        let mut out = Vec::new();
        for user_id in users {
            let compiled = self.compiled(&user_id)?;
            ctx.user_id = user_id;
            let mut named = false;
            let mut actions = None;
            for (rule, key) in compiled.rules.iter().zip(&compiled.keys) {
                let applies = match key.and_then(|k| memo.get(&k).copied()) {
                    Some(known) => known,
                    None => {
                        if key.is_none() && !named {
                            ctx.user_display_name =
                                self.display_name(rooms, state, &ctx.user_id)?.to_string();
                            named = true;
                        }
                        let applies = ready(rule.applies(&flat, &ctx)).unwrap_or(false);
                        if let Some(k) = key {
                            memo.insert(*k, applies);
                        }
                        applies
                    }
                };
                if applies {
                    actions = Some(rule.actions());
                    break;
                }
            }
            let Some(actions) = actions else { continue };
            if !actions.iter().any(Action::should_notify) {
                continue;
            }
            let highlight = actions.iter().any(Action::is_highlight);
            let pushers = self.pusher_ids(&ctx.user_id);
            out.push(Outcome {
                user_id: ctx.user_id.clone(),
                actions: actions.to_vec(),
                highlight,
                pushers,
            });
        }
        Ok(out)
    }

    fn power_ctx(
        &self,
        rooms: &Rooms,
        room_id: &RoomId,
        state: &StateMap,
    ) -> Result<Option<PushConditionPowerLevelsCtx>> {
        let event = rooms
            .get_shortstatekey(&StateEventType::RoomPowerLevels, "")?
            .and_then(|k| state.get(&k).copied());
        if let Some(cached) = self
            .power
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(room_id)
            && cached.event == event
        {
            return Ok(cached.ctx.clone());
        }
        let ctx = rooms
            .power_levels_at(room_id, state)
            .ok()
            .map(PushConditionPowerLevelsCtx::from);
        let mut cache = self.power.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 4096 {
            cache.clear();
        }
        cache.insert(
            room_id.to_owned(),
            PowerCache {
                event,
                ctx: ctx.clone(),
            },
        );
        Ok(ctx)
    }

    /// Records the outcomes in the event's batch, at the event's position.
    pub fn record(
        &self,
        c: &mut Commit,
        pdu: &PduEvent,
        count: u64,
        ts: u64,
        outcomes: &[Outcome],
    ) -> Result<()> {
        let thread = thread_of(pdu);
        for outcome in outcomes {
            let user = outcome.user_id.as_bytes();
            let mut k = key::prefix(&[user, pdu.room_id.as_bytes()]);
            k.extend_from_slice(&count.to_be_bytes());
            c.put(
                &self.user_notifications,
                k,
                serde_json::to_vec(&Counted {
                    highlight: outcome.highlight,
                    thread: thread.clone(),
                })?,
            );
            let mut k = key::prefix(&[user]);
            k.extend_from_slice(&count.to_be_bytes());
            c.put(
                &self.notification_stream,
                k,
                serde_json::to_vec(&Notification {
                    room_id: pdu.room_id.clone(),
                    event_id: pdu.event_id.clone(),
                    actions: outcome.actions.clone(),
                    ts,
                    thread: thread.clone(),
                    highlight: outcome.highlight,
                })?,
            );
            for (app_id, pushkey) in outcome.pushers.iter() {
                let mut k = count.to_be_bytes().to_vec();
                k.push(key::SEP);
                k.extend_from_slice(&key::key(&[user, app_id.as_bytes(), pushkey.as_bytes()]));
                c.put(
                    &self.push_queue,
                    k,
                    serde_json::to_vec(&super::pushers::QueuedPush {
                        user_id: outcome.user_id.clone(),
                        app_id: app_id.clone(),
                        pushkey: pushkey.clone(),
                        count,
                        attempts: 0,
                        next_try: 0,
                    })?,
                );
            }
        }
        Ok(())
    }

    /// Notifications of the room after the user's read position (per thread).
    pub fn unread(&self, user_id: &UserId, room_id: &RoomId, read: &ReadUpTo) -> Result<Unread> {
        let prefix = key::prefix(&[user_id.as_bytes(), room_id.as_bytes()]);
        let mut from = prefix.clone();
        from.extend_from_slice(&read.unthreaded.saturating_add(1).to_be_bytes());
        let mut out = Unread::default();
        for (k, v) in self.user_notifications.scan_from(from, prefix) {
            let count = key::to_u64(&k[k.len() - 8..]);
            let n: Counted = serde_json::from_slice(&v)?;
            if count <= read.of(n.thread.as_deref()) {
                continue;
            }
            let (notes, highlights) = match n.thread {
                None => (&mut out.notifications, &mut out.highlights),
                Some(t) => {
                    let e = out.threads.entry(t).or_default();
                    (&mut e.0, &mut e.1)
                }
            };
            *notes += 1;
            *highlights += u64::from(n.highlight);
        }
        Ok(out)
    }

    /// The user's notifications before stream position `before`, newest first, with their
    /// positions.
    pub fn notifications(
        &self,
        user_id: &UserId,
        before: u64,
    ) -> impl Iterator<Item = (u64, Notification)> + '_ {
        let prefix = key::prefix(&[user_id.as_bytes()]);
        let mut from = prefix.clone();
        from.extend_from_slice(&before.saturating_sub(1).to_be_bytes());
        self.notification_stream
            .scan_back(from, prefix)
            .filter_map(|(k, v)| {
                Some((
                    key::to_u64(&k[k.len() - 8..]),
                    serde_json::from_slice(&v).ok()?,
                ))
            })
    }

    /// The newest notification of the user, for the pushers.
    pub fn notification_at(&self, user_id: &UserId, count: u64) -> Result<Option<Notification>> {
        let mut k = key::prefix(&[user_id.as_bytes()]);
        k.extend_from_slice(&count.to_be_bytes());
        self.notification_stream.get_json(k)
    }
}
