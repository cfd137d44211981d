//! Read receipts (spec: "Receipts"): the newest receipt of each user, type and thread in a
//! room, each with a stream position so `/sync` sends only what changed. A read position
//! never moves backwards: a receipt for an older event than the one already acknowledged
//! is accepted and ignored, as Synapse does.

use std::{collections::HashMap, sync::Arc};

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::Services;
use crate::{
    database::{Database, Table, key},
    error::Result,
};

pub const READ: &str = "m.read";
pub const READ_PRIVATE: &str = "m.read.private";

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Receipt {
    pub user_id: OwnedUserId,
    #[serde(rename = "type")]
    pub kind: String,
    pub event_id: OwnedEventId,
    pub ts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// Stream position of the event acknowledged, when this server has it.
    #[serde(default)]
    pub event_count: Option<u64>,
    /// Stream position of the receipt itself.
    #[serde(default)]
    pub count: u64,
}

/// How far a user has read a room: the newest acknowledged event position, unthreaded and
/// per thread (`"main"` for the main timeline).
#[derive(Default, Debug)]
pub struct ReadUpTo {
    pub unthreaded: u64,
    pub threads: HashMap<String, u64>,
}

impl ReadUpTo {
    /// The position up to which events of `thread` (None: the main timeline) are read.
    pub fn of(&self, thread: Option<&str>) -> u64 {
        let own = self
            .threads
            .get(thread.unwrap_or("main"))
            .copied()
            .unwrap_or(0);
        own.max(self.unthreaded)
    }
}

pub struct Receipts {
    db: Arc<Database>,
    /// room 0xFF user 0xFF type 0xFF thread ("" unthreaded) -> Receipt
    receipts_latest: Table,
    /// room 0xFF count -> Receipt (only the newest of each key above)
    receipts_stream: Table,
}

impl Receipts {
    pub fn new(db: &Arc<Database>) -> Self {
        Self {
            db: Arc::clone(db),
            receipts_latest: db.table("receipts_latest"),
            receipts_stream: db.table("receipts_stream"),
        }
    }

    fn latest_key(room_id: &RoomId, r: &Receipt) -> Vec<u8> {
        key::key(&[
            room_id.as_bytes(),
            r.user_id.as_bytes(),
            r.kind.as_bytes(),
            r.thread_id.as_deref().unwrap_or("").as_bytes(),
        ])
    }

    /// Stores a receipt unless it would move the read position backwards; the stored
    /// receipt (with its position) when it did.
    pub fn set(&self, room_id: &RoomId, mut receipt: Receipt) -> Result<Option<Receipt>> {
        let latest_key = Self::latest_key(room_id, &receipt);
        self.db.commit(|c| {
            // Read under the commit lock: two receipts of one user cannot both win.
            let old: Option<Receipt> = self.receipts_latest.get_json(&latest_key)?;
            if let Some(old) = &old {
                let backwards = match (old.event_count, receipt.event_count) {
                    (Some(o), Some(n)) => n <= o,
                    _ => old.event_id == receipt.event_id,
                };
                if backwards {
                    return Ok(None);
                }
                c.delete(&self.receipts_stream, Self::stream_key(room_id, old.count));
            }
            receipt.count = c.next_count();
            let json = serde_json::to_vec(&receipt)?;
            c.put(&self.receipts_latest, &latest_key, &json);
            c.put(
                &self.receipts_stream,
                Self::stream_key(room_id, receipt.count),
                &json,
            );
            Ok(Some(receipt))
        })
    }

    fn stream_key(room_id: &RoomId, count: u64) -> Vec<u8> {
        let mut k = key::prefix(&[room_id.as_bytes()]);
        k.extend_from_slice(&count.to_be_bytes());
        k
    }

    /// Receipts of the room set in `(since, until]`, oldest first.
    pub fn since(&self, room_id: &RoomId, since: u64, until: u64) -> Result<Vec<Receipt>> {
        let mut out = Vec::new();
        for (k, v) in self.receipts_stream.scan_from(
            Self::stream_key(room_id, since.saturating_add(1)),
            key::prefix(&[room_id.as_bytes()]),
        ) {
            if key::to_u64(&k[k.len() - 8..]) > until {
                break;
            }
            out.push(serde_json::from_slice(&v)?);
        }
        Ok(out)
    }

    /// The user's read position in the room (public and private receipts alike).
    pub fn read_up_to(&self, room_id: &RoomId, user_id: &UserId) -> Result<ReadUpTo> {
        let mut out = ReadUpTo::default();
        for (_, v) in self
            .receipts_latest
            .scan_prefix(key::prefix(&[room_id.as_bytes(), user_id.as_bytes()]))
        {
            let r: Receipt = serde_json::from_slice(&v)?;
            let Some(at) = r.event_count else { continue };
            match &r.thread_id {
                None => out.unthreaded = out.unthreaded.max(at),
                Some(t) => {
                    let e = out.threads.entry(t.clone()).or_default();
                    *e = (*e).max(at);
                }
            }
        }
        Ok(out)
    }
}

/// The `m.receipt` event content a viewer sees for these receipts: private receipts only
/// for their owner. None when nothing is left.
pub fn event_content(receipts: &[Receipt], viewer: &UserId) -> Option<Value> {
    let mut content = Map::new();
    for r in receipts {
        if r.kind == READ_PRIVATE && r.user_id != viewer {
            continue;
        }
        let mut data = json!({ "ts": r.ts });
        if let Some(t) = &r.thread_id {
            data["thread_id"] = json!(t);
        }
        let by_event = content
            .entry(r.event_id.to_string())
            .or_insert_with(|| json!({}));
        by_event
            .as_object_mut()
            .expect("an object")
            .entry(r.kind.clone())
            .or_insert_with(|| json!({}))[r.user_id.as_str()] = data;
    }
    (!content.is_empty()).then_some(Value::Object(content))
}

/// Stores a receipt, wakes the users who see it and sends a public one of a local user to
/// the other servers in the room.
pub fn set_receipt(services: &Services, room_id: &RoomId, receipt: Receipt) -> Result<()> {
    let Some(stored) = services.receipts.set(room_id, receipt)? else {
        return Ok(());
    };
    if stored.kind == READ_PRIVATE {
        services.notifier.wake(&stored.user_id);
        return Ok(());
    }
    services
        .notifier
        .wake_all(services.rooms.joined_members(room_id)?.iter().map(|u| &**u));
    if stored.user_id.server_name() == services.globals.server_name() {
        let mut data = json!({ "ts": stored.ts });
        if let Some(t) = &stored.thread_id {
            data["thread_id"] = json!(t);
        }
        services.sending.queue_edu(
            &services.rooms.joined_servers(room_id)?,
            json!({ "edu_type": "m.receipt", "content": { room_id.as_str(): { READ: {
                stored.user_id.as_str(): { "event_ids": [stored.event_id], "data": data },
            }}}}),
        )?;
    }
    Ok(())
}

/// An `m.receipt` EDU from `origin`: public read receipts of its users in rooms they are
/// joined to; anything else is ignored.
pub fn handle_edu(services: &Services, origin: &ruma::ServerName, content: &Value) -> Result<()> {
    let Some(rooms) = content.as_object() else {
        return Ok(());
    };
    for (room_id, by_type) in rooms {
        let Ok(room_id) = OwnedRoomId::try_from(room_id.as_str()) else {
            continue;
        };
        let Some(users) = by_type[READ].as_object() else {
            continue;
        };
        for (user_id, receipt) in users {
            let Ok(user_id) = OwnedUserId::try_from(user_id.as_str()) else {
                continue;
            };
            if user_id.server_name() != origin || !services.rooms.is_joined(&user_id, &room_id)? {
                tracing::debug!(%origin, %user_id, "ignoring a receipt of a user of another server or not in the room");
                continue;
            }
            // Several event ids are allowed; the last one is the newest.
            let Some(event_id) = receipt["event_ids"]
                .as_array()
                .and_then(|ids| ids.last())
                .and_then(|id| id.as_str())
                .and_then(|id| OwnedEventId::try_from(id).ok())
            else {
                continue;
            };
            let event_count = services
                .rooms
                .get_pdu(&event_id)?
                .filter(|p| p.room_id == room_id)
                .map(|_| services.rooms.pdu_count(&event_id))
                .transpose()?
                .flatten();
            let receipt = Receipt {
                user_id,
                kind: READ.to_owned(),
                event_id,
                ts: receipt["data"]["ts"].as_u64().unwrap_or(0),
                thread_id: receipt["data"]["thread_id"].as_str().map(ToOwned::to_owned),
                event_count,
                count: 0,
            };
            set_receipt(services, &room_id, receipt)?;
        }
    }
    Ok(())
}
