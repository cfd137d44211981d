//! Account data (global and per room, tags included) and sync filters. Each account data
//! write takes a stream position so an incremental `/sync` sends only what changed.

use std::sync::Arc;

use ruma::{OwnedRoomId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue as RawJsonValue;

use crate::{
    database::{Database, Table, key},
    error::Result,
    service::notifier::Notifier,
};

#[derive(Deserialize, Serialize)]
struct Stored {
    count: u64,
    content: Box<RawJsonValue>,
}

pub struct AccountData {
    db: Arc<Database>,
    notifier: Arc<Notifier>,
    account_data: Table,
    filters: Table,
}

/// The key part for global account data (room ids always start with '!').
const GLOBAL: &[u8] = b"";

impl AccountData {
    pub fn new(db: &Arc<Database>, notifier: Arc<Notifier>) -> Self {
        Self {
            db: Arc::clone(db),
            notifier,
            account_data: db.table("account_data"),
            filters: db.table("filters"),
        }
    }

    fn key(user_id: &UserId, room_id: Option<&RoomId>, kind: &str) -> Vec<u8> {
        key::key(&[
            user_id.as_bytes(),
            room_id.map_or(GLOBAL, |r| r.as_bytes()),
            kind.as_bytes(),
        ])
    }

    pub fn get(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        kind: &str,
    ) -> Result<Option<Box<RawJsonValue>>> {
        Ok(self
            .account_data
            .get_json::<Stored>(Self::key(user_id, room_id, kind))?
            .map(|s| s.content))
    }

    /// The content with the stream position of its last change, so callers can cache
    /// what they derive from it.
    pub fn get_versioned(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        kind: &str,
    ) -> Result<Option<(u64, Box<RawJsonValue>)>> {
        Ok(self
            .account_data
            .get_json::<Stored>(Self::key(user_id, room_id, kind))?
            .map(|s| (s.count, s.content)))
    }

    pub fn set(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        kind: &str,
        content: Box<RawJsonValue>,
    ) -> Result<()> {
        let k = Self::key(user_id, room_id, kind);
        self.db.commit(|c| {
            let count = c.next_count();
            c.put(
                &self.account_data,
                &k,
                serde_json::to_vec(&Stored { count, content })?,
            );
            Ok(())
        })?;
        self.notifier.wake(user_id);
        Ok(())
    }

    /// Account data changed after `since`: `(room or None, type, content)`.
    pub fn changes_since(
        &self,
        user_id: &UserId,
        since: u64,
        until: u64,
    ) -> Result<Vec<(Option<OwnedRoomId>, String, Box<RawJsonValue>)>> {
        let mut out = Vec::new();
        for (k, v) in self
            .account_data
            .scan_prefix(key::prefix(&[user_id.as_bytes()]))
        {
            let stored: Stored = serde_json::from_slice(&v)?;
            if stored.count <= since || stored.count > until {
                continue;
            }
            let mut parts = key::parts(&k).skip(1);
            let room = parts.next().unwrap_or_default();
            let kind = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let room = if room.is_empty() {
                None
            } else {
                RoomId::parse(String::from_utf8_lossy(room).as_ref()).ok()
            };
            out.push((room, kind, stored.content));
        }
        Ok(out)
    }

    pub fn create_filter(&self, user_id: &UserId, filter: &serde_json::Value) -> Result<String> {
        let id = crate::service::globals::random_string(10);
        self.filters.put(
            key::key(&[user_id.as_bytes(), id.as_bytes()]),
            serde_json::to_vec(filter)?,
        )?;
        Ok(id)
    }

    pub fn get_filter(
        &self,
        user_id: &UserId,
        filter_id: &str,
    ) -> Result<Option<serde_json::Value>> {
        self.filters
            .get_json(key::key(&[user_id.as_bytes(), filter_id.as_bytes()]))
    }
}
