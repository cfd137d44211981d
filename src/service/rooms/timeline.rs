//! The timeline: events of a room in the order this server accepted them. A PDU id is
//! `(short room id, stream position)`, so a room's events are one contiguous key range
//! and `/sync` and `/messages` are range scans.

use std::sync::Arc;

use ruma::{CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, RoomId, UserId};

use super::{
    Rooms,
    builder::Transaction,
    pdu::{Pdu, PduEvent},
};
use crate::{
    database::key::{self, pair, split_pair},
    error::{Error, Result},
};

const PDU_CACHE_ENTRIES: usize = 8192;

impl Rooms {
    pub fn get_pdu(&self, event_id: &EventId) -> Result<Option<Pdu>> {
        if let Some(pdu) = self
            .pdu_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(event_id)
        {
            return Ok(Some(Arc::clone(pdu)));
        }
        let Some(bytes) = self.get_pdu_bytes(event_id)? else {
            return Ok(None);
        };
        let pdu = Arc::new(PduEvent::from_json(&bytes)?);
        let mut cache = self.pdu_cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= PDU_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(event_id.to_owned(), Arc::clone(&pdu));
        Ok(Some(pdu))
    }

    fn get_pdu_bytes(&self, event_id: &EventId) -> Result<Option<Vec<u8>>> {
        if let Some(pduid) = self.eventid_pduid.get(event_id.as_bytes())? {
            return self.pdus.get(pduid);
        }
        self.eventid_outlierpdu.get(event_id.as_bytes())
    }

    /// The stored PDU (federation form plus `event_id`).
    pub fn get_pdu_json(&self, event_id: &EventId) -> Result<Option<CanonicalJsonObject>> {
        match self.get_pdu_bytes(event_id)? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The `(short room id, count)` of an event in a timeline here.
    pub fn get_pduid(&self, event_id: &EventId) -> Result<Option<(u64, u64)>> {
        Ok(self
            .eventid_pduid
            .get(event_id.as_bytes())?
            .map(|v| split_pair(&v)))
    }

    pub fn pdu_count(&self, event_id: &EventId) -> Result<Option<u64>> {
        Ok(self.get_pduid(event_id)?.map(|(_, count)| count))
    }

    /// The stream position of the room's newest event.
    pub fn last_count(&self, room_id: &RoomId) -> Result<u64> {
        if let Some(count) = self
            .last_count
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(room_id)
        {
            return Ok(*count);
        }
        let Some(short) = self.get_shortroomid(room_id)? else {
            return Ok(0);
        };
        let count = self
            .pdus
            .scan_back(pair(short, u64::MAX).to_vec(), short.to_be_bytes().to_vec())
            .next()
            .map(|(k, _)| split_pair(&k).1)
            .unwrap_or(0);
        self.last_count
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(room_id.to_owned())
            .or_insert(count);
        Ok(count)
    }

    pub(super) fn set_last_count(&self, room_id: &RoomId, count: u64) {
        let mut map = self.last_count.write().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(room_id.to_owned()).or_insert(count);
        *entry = (*entry).max(count);
    }

    /// Events with `from > count >= to` (newest first), at most `limit`.
    pub fn events_before(
        &self,
        room_id: &RoomId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Pdu)>> {
        let Some(short) = self.get_shortroomid(room_id)? else {
            return Ok(vec![]);
        };
        if from == 0 {
            return Ok(vec![]);
        }
        self.pdus
            .scan_back(pair(short, from - 1).to_vec(), short.to_be_bytes().to_vec())
            .take(limit)
            .map(|(k, v)| Ok((split_pair(&k).1, self.cached_pdu(&v)?)))
            .collect()
    }

    /// Events with `count > from` (oldest first), at most `limit`.
    pub fn events_after(
        &self,
        room_id: &RoomId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Pdu)>> {
        let Some(short) = self.get_shortroomid(room_id)? else {
            return Ok(vec![]);
        };
        if from == u64::MAX {
            return Ok(vec![]);
        }
        self.pdus
            .scan_from(pair(short, from + 1).to_vec(), short.to_be_bytes().to_vec())
            .take(limit)
            .map(|(k, v)| Ok((split_pair(&k).1, self.cached_pdu(&v)?)))
            .collect()
    }

    pub(super) fn cached_pdu(&self, bytes: &[u8]) -> Result<Pdu> {
        Ok(Arc::new(PduEvent::from_json(bytes)?))
    }

    /// Which `transaction_id` the sending device gave, shown only to that device.
    pub fn transaction_id_for(
        &self,
        pdu: &PduEvent,
        user_id: &UserId,
        device_id: Option<&str>,
    ) -> Result<Option<String>> {
        let Some(device_id) = device_id else {
            return Ok(None);
        };
        if pdu.sender != user_id {
            return Ok(None);
        }
        let Some(value) = self
            .txnid_eventid
            .get(key::key(&[b"e", pdu.event_id.as_bytes()]))?
        else {
            return Ok(None);
        };
        let mut parts = key::parts(&value);
        let dev = parts.next().unwrap_or_default();
        let txn = parts.next().unwrap_or_default();
        Ok((dev == device_id.as_bytes()).then(|| String::from_utf8_lossy(txn).into_owned()))
    }

    /// The event a transaction already created, if this request is a retry.
    pub fn existing_txn(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        transaction: &Transaction,
    ) -> Result<Option<OwnedEventId>> {
        Ok(self
            .txnid_eventid
            .get(Self::txn_key(user_id, room_id, transaction))?
            .and_then(|v| EventId::parse(String::from_utf8_lossy(&v).as_ref()).ok()))
    }

    fn txn_key(user_id: &UserId, room_id: &RoomId, transaction: &Transaction) -> Vec<u8> {
        key::key(&[
            b"t",
            user_id.as_bytes(),
            transaction.device.as_bytes(),
            room_id.as_bytes(),
            transaction.endpoint.as_bytes(),
            transaction.txn.as_bytes(),
        ])
    }

    pub(super) fn txn_keys(
        user_id: &UserId,
        room_id: &RoomId,
        transaction: &Transaction,
        event_id: &EventId,
    ) -> [(Vec<u8>, Vec<u8>); 2] {
        [
            (
                Self::txn_key(user_id, room_id, transaction),
                event_id.as_bytes().to_vec(),
            ),
            (
                key::key(&[b"e", event_id.as_bytes()]),
                key::key(&[transaction.device.as_bytes(), transaction.txn.as_bytes()]),
            ),
        ]
    }

    /// The room's forward extremities: the events no other event here points to yet.
    /// Stored as one value per room, overwritten by each event: a key per tip, deleted as
    /// the next event arrives, left a trail of tombstones that every send had to scan.
    pub fn forward_extremities(&self, room_id: &RoomId) -> Result<Vec<OwnedEventId>> {
        let Some(bytes) = self.roomid_forwardextremities.get(room_id.as_bytes())? else {
            return Ok(vec![]);
        };
        key::parts(&bytes)
            .filter(|p| !p.is_empty())
            .map(|id| EventId::parse(String::from_utf8_lossy(id).as_ref()).map_err(Error::internal))
            .collect()
    }

    pub(super) fn encode_extremities(tips: &[OwnedEventId]) -> Vec<u8> {
        key::key(&tips.iter().map(|t| t.as_bytes()).collect::<Vec<_>>())
    }

    /// How an event is referenced from `prev_events`/`auth_events` in its room's version.
    pub(super) fn event_reference(
        &self,
        event_id: &EventId,
        with_hashes: bool,
    ) -> Result<CanonicalJsonValue> {
        if !with_hashes {
            return Ok(CanonicalJsonValue::String(event_id.to_string()));
        }
        let hashes = self
            .get_pdu_json(event_id)?
            .and_then(|mut pdu| pdu.remove("hashes"))
            .unwrap_or_else(|| CanonicalJsonValue::Object(Default::default()));
        Ok(CanonicalJsonValue::Array(vec![
            CanonicalJsonValue::String(event_id.to_string()),
            hashes,
        ]))
    }

    pub(super) fn forget_cached(&self, event_id: &EventId) {
        self.pdu_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(event_id);
    }
}
