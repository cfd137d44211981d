//! Short ids: event ids, `(type, state_key)` pairs, rooms and state snapshots get u64 ids,
//! so a state entry is 16 bytes and lookups compare integers, not strings.

use std::sync::atomic::Ordering;

use ruma::{EventId, OwnedEventId, RoomId, events::StateEventType};

use super::Rooms;
use crate::{
    database::key::{self, to_u64, u64_key},
    error::{Error, Result},
};

pub(super) const SHORTID_KEY: &[u8] = b"shortid";

impl Rooms {
    /// Allocates a short id; the counter is written with the mapping in one batch.
    fn allocate_short(
        &self,
        forward: (&crate::database::Table, &[u8]),
        backward: Option<&crate::database::Table>,
    ) -> Result<u64> {
        let _guard = self.short_lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = forward.0.get(forward.1)? {
            return Ok(to_u64(&existing));
        }
        let short = self.next_short.fetch_add(1, Ordering::AcqRel) + 1;
        self.db.write(|batch| {
            batch.put(forward.0, forward.1, u64_key(short));
            if let Some(back) = backward {
                batch.put(back, u64_key(short), forward.1);
            }
            batch.put(&self.global, SHORTID_KEY, u64_key(short));
        })?;
        Ok(short)
    }

    /// A fresh id for a state snapshot, written by the caller's batch.
    pub(super) fn next_shortstatehash(&self) -> Result<u64> {
        let _guard = self.short_lock.lock().unwrap_or_else(|e| e.into_inner());
        let short = self.next_short.fetch_add(1, Ordering::AcqRel) + 1;
        self.global.put(SHORTID_KEY, u64_key(short))?;
        Ok(short)
    }

    pub fn get_or_create_shorteventid(&self, event_id: &EventId) -> Result<u64> {
        if let Some(short) = self.eventid_shorteventid.get(event_id.as_bytes())? {
            return Ok(to_u64(&short));
        }
        self.allocate_short(
            (&self.eventid_shorteventid, event_id.as_bytes()),
            Some(&self.shorteventid_eventid),
        )
    }

    pub fn get_shorteventid(&self, event_id: &EventId) -> Result<Option<u64>> {
        Ok(self
            .eventid_shorteventid
            .get(event_id.as_bytes())?
            .map(|v| to_u64(&v)))
    }

    pub fn get_eventid(&self, short: u64) -> Result<OwnedEventId> {
        let bytes = self
            .shorteventid_eventid
            .get(u64_key(short))?
            .ok_or_else(|| Error::internal(format_args!("unknown short event id {short}")))?;
        EventId::parse(String::from_utf8_lossy(&bytes).as_ref()).map_err(Error::internal)
    }

    fn statekey_bytes(event_type: &StateEventType, state_key: &str) -> Vec<u8> {
        key::key(&[event_type.to_string().as_bytes(), state_key.as_bytes()])
    }

    pub fn get_or_create_shortstatekey(
        &self,
        event_type: &StateEventType,
        state_key: &str,
    ) -> Result<u64> {
        let bytes = Self::statekey_bytes(event_type, state_key);
        if let Some(short) = self.statekey_shortstatekey.get(&bytes)? {
            return Ok(to_u64(&short));
        }
        self.allocate_short(
            (&self.statekey_shortstatekey, &bytes),
            Some(&self.shortstatekey_statekey),
        )
    }

    pub fn get_shortstatekey(
        &self,
        event_type: &StateEventType,
        state_key: &str,
    ) -> Result<Option<u64>> {
        let bytes = Self::statekey_bytes(event_type, state_key);
        Ok(self.statekey_shortstatekey.get(&bytes)?.map(|v| to_u64(&v)))
    }

    pub fn get_statekey(&self, short: u64) -> Result<(StateEventType, String)> {
        let bytes = self
            .shortstatekey_statekey
            .get(u64_key(short))?
            .ok_or_else(|| Error::internal(format_args!("unknown short state key {short}")))?;
        let mut parts = key::parts(&bytes);
        let kind = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        let state_key = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        Ok((kind.into(), state_key))
    }

    /// Whether a short state key is an `m.room.member` key (cached: the mapping never changes).
    pub fn is_member_statekey(&self, short: u64) -> Result<bool> {
        if let Some(is_member) = self
            .member_keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&short)
        {
            return Ok(*is_member);
        }
        let is_member = self.get_statekey(short)?.0 == StateEventType::RoomMember;
        let mut cache = self.member_keys.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= 1_000_000 {
            cache.clear();
        }
        cache.insert(short, is_member);
        Ok(is_member)
    }

    pub fn get_or_create_shortroomid(&self, room_id: &RoomId) -> Result<u64> {
        if let Some(short) = self.roomid_shortroomid.get(room_id.as_bytes())? {
            return Ok(to_u64(&short));
        }
        self.allocate_short((&self.roomid_shortroomid, room_id.as_bytes()), None)
    }

    pub fn get_shortroomid(&self, room_id: &RoomId) -> Result<Option<u64>> {
        Ok(self
            .roomid_shortroomid
            .get(room_id.as_bytes())?
            .map(|v| to_u64(&v)))
    }
}
