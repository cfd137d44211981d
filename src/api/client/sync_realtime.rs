//! The parts of `/sync` that are not room history: a joined room's ephemeral events
//! (typing, receipts), its unread counts, and the presence of users sharing a room.

use std::collections::BTreeMap;

use ruma::{RoomId, UserId, api::client::filter::RoomEventFilter};
use serde_json::{Value, json};

use crate::{
    error::Result,
    service::{Services, receipts},
};

/// Whether a filter lets no event of the section through.
fn blocks_all(filter: &RoomEventFilter) -> bool {
    filter.not_types.iter().any(|t| t == "*") || filter.types.as_ref().is_some_and(Vec::is_empty)
}

fn wanted(filter: &RoomEventFilter, kind: &str) -> bool {
    !filter.not_types.iter().any(|t| t == kind)
        && filter
            .types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == kind || t == "*"))
}

/// The room's `m.typing` and `m.receipt` events that changed in `(since, until]`.
pub fn ephemeral(
    services: &Services,
    user: &UserId,
    room_id: &RoomId,
    filter: &RoomEventFilter,
    since: u64,
    until: u64,
) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    if blocks_all(filter) {
        return Ok(out);
    }
    if wanted(filter, "m.typing")
        && let Some(users) = services.typing.typing_since(room_id, since, until)
    {
        out.push(json!({ "type": "m.typing", "content": { "user_ids": users } }));
    }
    if wanted(filter, "m.receipt") {
        let changed = services.receipts.since(room_id, since, until)?;
        if let Some(content) = receipts::event_content(&changed, user) {
            out.push(json!({ "type": "m.receipt", "content": content }));
        }
    }
    Ok(out)
}

/// `unread_notifications` and, when the client asked for them apart
/// (`unread_thread_notifications` in its timeline filter), `unread_thread_notifications`.
pub fn unread(
    services: &Services,
    user: &UserId,
    room_id: &RoomId,
    split_threads: bool,
) -> Result<(Value, BTreeMap<String, Value>)> {
    let read = services.receipts.read_up_to(room_id, user)?;
    let unread = services.push.unread(user, room_id, &read)?;
    let (mut notes, mut highlights) = (unread.notifications, unread.highlights);
    let mut threads = BTreeMap::new();
    for (root, (n, h)) in unread.threads {
        if split_threads {
            threads.insert(
                root,
                json!({ "notification_count": n, "highlight_count": h }),
            );
        } else {
            notes += n;
            highlights += h;
        }
    }
    Ok((
        json!({ "notification_count": notes, "highlight_count": highlights }),
        threads,
    ))
}
