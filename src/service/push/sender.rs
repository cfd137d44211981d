//! Delivers queued notifications to push gateways (spec: "Push Gateway API",
//! `POST /_matrix/push/v1/notify`). The queue is a table written in the batch of the event
//! that notified, so nothing is lost to a restart or a crash; one background task sends
//! what is due, retries failures with exponential backoff (persisted with the entry),
//! drops what the gateway refuses for good, and removes pushkeys it reports as rejected.

use std::{sync::Arc, time::Duration};

use ruma::{
    api::client::push::PusherKind,
    events::{StateEventType, TimelineEventType},
    push::{Action, PushFormat, Tweak},
};
use serde_json::{Map, Value, json};

use super::{Notification, pushers::QueuedPush};
use crate::{
    error::Result,
    service::{Services, globals::now_ms},
};

/// First wait after a failed delivery; it doubles with each failure up to `RETRY_MAX`.
const RETRY_BASE_MS: u64 = 1_000;
const RETRY_MAX_MS: u64 = 60 * 60 * 1000;
/// A notification still undelivered after this many attempts (about a day with the
/// backoff above) is dropped: it would only be stale by then.
const MAX_ATTEMPTS: u32 = 30;
/// Entries looked at per pass; more make the next pass start at once.
const BATCH: usize = 256;

enum Delivery {
    Done,
    /// Never deliverable (pusher or event gone, address refused, gateway says no).
    Drop(String),
    Retry(String),
}

/// The sender task: runs until the server stops.
pub async fn run(services: Arc<Services>) {
    let push = &services.push;
    loop {
        let now = now_ms();
        let mut next: Option<u64> = None;
        let entries: Vec<(Box<[u8]>, QueuedPush)> = push
            .push_queue
            .iter()
            .take(BATCH)
            .filter_map(|(k, v)| Some((k, serde_json::from_slice(&v).ok()?)))
            .collect();
        if entries.len() == BATCH {
            next = Some(now);
        }
        for (key, mut entry) in entries {
            if entry.next_try > now {
                next = Some(next.map_or(entry.next_try, |n| n.min(entry.next_try)));
                continue;
            }
            let delivery = tokio::select! {
                d = deliver(&services, &entry) => d,
                () = services.shutdown_signal() => return,
            };
            let result = match delivery {
                Delivery::Done => push.push_queue.delete(&key),
                Delivery::Drop(why) => {
                    tracing::info!(user = %entry.user_id, app_id = entry.app_id, "push dropped: {why}");
                    push.push_queue.delete(&key)
                }
                Delivery::Retry(why) => {
                    entry.attempts += 1;
                    if entry.attempts >= MAX_ATTEMPTS {
                        tracing::warn!(user = %entry.user_id, app_id = entry.app_id, "push given up after {} attempts: {why}", entry.attempts);
                        push.push_queue.delete(&key)
                    } else {
                        let wait = RETRY_BASE_MS
                            .saturating_mul(1 << (entry.attempts - 1).min(32))
                            .min(RETRY_MAX_MS);
                        entry.next_try = now_ms() + wait;
                        next = Some(next.map_or(entry.next_try, |n| n.min(entry.next_try)));
                        tracing::debug!(user = %entry.user_id, "push failed, retry in {wait} ms: {why}");
                        serde_json::to_vec(&entry)
                            .map_err(Into::into)
                            .and_then(|v| push.push_queue.put(&key, v))
                    }
                }
            };
            if let Err(e) = result {
                tracing::warn!("push queue write failed: {}", e.message);
            }
        }
        let sleep = async {
            match next {
                Some(at) => {
                    tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = push.wake.notified() => {}
            () = sleep => {}
            () = services.shutdown_signal() => return,
        }
    }
}

async fn deliver(services: &Services, entry: &QueuedPush) -> Delivery {
    match try_deliver(services, entry).await {
        Ok(d) => d,
        Err(e) => Delivery::Retry(e.message),
    }
}

async fn try_deliver(services: &Services, entry: &QueuedPush) -> Result<Delivery> {
    let push = &services.push;
    let Some(stored) = push.pusher(&entry.user_id, &entry.app_id, &entry.pushkey)? else {
        return Ok(Delivery::Drop("the pusher is gone".into()));
    };
    let PusherKind::Http(http) = &stored.pusher.kind else {
        return Ok(Delivery::Drop("not an http pusher".into()));
    };
    let Some(notification) = push.notification_at(&entry.user_id, entry.count)? else {
        return Ok(Delivery::Drop("the notification is gone".into()));
    };
    let Ok(url) = reqwest::Url::parse(&http.url) else {
        return Ok(Delivery::Drop("invalid url".into()));
    };
    // Names are checked by the client's resolver; literal addresses never reach it.
    let literal = url
        .host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|h| h.parse::<std::net::IpAddr>().ok());
    if literal.is_some_and(|ip| !push.policy.allows(ip)) {
        return Ok(Delivery::Drop(format!(
            "{} is not an allowed address",
            url.host_str().unwrap_or_default()
        )));
    }
    let Some(body) = notify_body(services, entry, &stored, &notification)? else {
        return Ok(Delivery::Drop("the event is gone".into()));
    };
    let response = match push.client.post(url).json(&body).send().await {
        Ok(r) => r,
        Err(e) => return Ok(Delivery::Retry(format!("gateway unreachable: {e}"))),
    };
    let status = response.status();
    if status.is_success() {
        let answer: Value = response.json().await.unwrap_or_default();
        for rejected in answer["rejected"].as_array().into_iter().flatten() {
            if let Some(pushkey) = rejected.as_str() {
                tracing::info!(user = %entry.user_id, app_id = entry.app_id, "the gateway rejected a pushkey; removing the pusher");
                push.remove_pusher(&entry.user_id, &entry.app_id, pushkey)?;
            }
        }
        return Ok(Delivery::Done);
    }
    if status.as_u16() == 429 || status.is_server_error() {
        return Ok(Delivery::Retry(format!("gateway answered {status}")));
    }
    Ok(Delivery::Drop(format!("gateway answered {status}")))
}

/// The request body: the whole notification, or only ids and counts for `event_id_only`.
fn notify_body(
    services: &Services,
    entry: &QueuedPush,
    stored: &super::pushers::StoredPusher,
    n: &Notification,
) -> Result<Option<Value>> {
    let Some(pdu) = services.rooms.get_pdu(&n.event_id)? else {
        return Ok(None);
    };
    let PusherKind::Http(http) = &stored.pusher.kind else {
        return Ok(None);
    };
    let mut tweaks = Map::new();
    for action in &n.actions {
        if let Action::SetTweak(tweak) = action {
            match tweak {
                Tweak::Sound(s) => {
                    tweaks.insert("sound".into(), json!(s));
                }
                Tweak::Highlight(_) => {
                    tweaks.insert("highlight".into(), json!(action.is_highlight()));
                }
                _ => {}
            }
        }
    }
    let mut data = serde_json::to_value(http)?;
    if let Some(d) = data.as_object_mut() {
        d.remove("url");
    }
    let device = json!({
        "app_id": stored.pusher.ids.app_id,
        "pushkey": stored.pusher.ids.pushkey,
        "pushkey_ts": stored.ts / 1000,
        "data": data,
        "tweaks": tweaks,
    });
    let prio = if tweaks.is_empty() { "low" } else { "high" };
    let mut unread = 0;
    for room in services.rooms.rooms_joined(&entry.user_id)? {
        let read = services.receipts.read_up_to(&room, &entry.user_id)?;
        let u = services.push.unread(&entry.user_id, &room, &read)?;
        unread += u.notifications + u.threads.values().map(|(n, _)| n).sum::<u64>();
    }
    let mut notification = json!({
        "event_id": n.event_id,
        "room_id": n.room_id,
        "counts": { "unread": unread },
        "devices": [device],
        "prio": prio,
    });
    if http.format != Some(PushFormat::EventIdOnly) {
        let state = services.rooms.current_state(&n.room_id)?;
        let name_of = |kind: &StateEventType, key: &str, field: &str| -> Result<Option<String>> {
            Ok(services
                .rooms
                .state_get(&state, kind, key)?
                .and_then(|e| e.content_field(field))
                .and_then(|v| v.as_str().map(ToOwned::to_owned)))
        };
        notification["type"] = json!(pdu.kind);
        notification["sender"] = json!(pdu.sender);
        notification["content"] = serde_json::from_str(pdu.content.get())?;
        if let Some(name) = name_of(
            &StateEventType::RoomMember,
            pdu.sender.as_str(),
            "displayname",
        )? {
            notification["sender_display_name"] = json!(name);
        }
        if let Some(name) = name_of(&StateEventType::RoomName, "", "name")? {
            notification["room_name"] = json!(name);
        }
        if pdu.kind == TimelineEventType::RoomMember {
            notification["user_is_target"] =
                json!(pdu.state_key.as_deref() == Some(entry.user_id.as_str()));
        }
    }
    Ok(Some(json!({ "notification": notification })))
}
