//! Relations (`m.relates_to`): threads, edits, reactions, replies. Indexed by parent event so
//! `/relations` and `/threads` are range scans.

use std::collections::HashSet;

use ruma::{EventId, RoomId};
use serde::Deserialize;

use super::{
    Rooms,
    pdu::{Pdu, PduEvent},
};
use crate::{
    database::{
        Commit,
        key::{self, split_pair},
    },
    error::Result,
};

#[derive(Deserialize)]
struct RelatesTo {
    rel_type: Option<String>,
    event_id: Option<ruma::OwnedEventId>,
}

#[derive(Deserialize)]
struct WithRelation {
    #[serde(rename = "m.relates_to")]
    relates_to: Option<RelatesTo>,
}

impl PduEvent {
    /// `(rel_type, parent)` of an event that relates to another.
    pub fn relation(&self) -> Option<(String, ruma::OwnedEventId)> {
        let content: WithRelation = serde_json::from_str(self.content.get()).ok()?;
        let relates_to = content.relates_to?;
        Some((relates_to.rel_type?, relates_to.event_id?))
    }
}

impl Rooms {
    pub(super) fn index_relation(
        &self,
        c: &mut Commit,
        pdu: &PduEvent,
        pduid: [u8; 16],
    ) -> Result<()> {
        if let Some((rel_type, parent)) = pdu.relation() {
            let mut k = key::prefix(&[parent.as_bytes()]);
            k.extend_from_slice(&pduid);
            c.put(&self.relations, k, rel_type.as_bytes());
            if rel_type == "m.thread" {
                // "t" cannot clash with an event id, which starts with '$'.
                c.put(
                    &self.relations,
                    key::key(&[b"t", pdu.room_id.as_bytes(), parent.as_bytes()]),
                    [],
                );
            }
        }
        Ok(())
    }

    /// Events relating to `parent` (oldest first) with their rel_type.
    pub fn relations_of(&self, parent: &EventId) -> Result<Vec<(u64, String, Pdu)>> {
        let prefix = key::prefix(&[parent.as_bytes()]);
        let mut out = Vec::new();
        for (k, v) in self.relations.scan_prefix(prefix.clone()) {
            let pduid = &k[prefix.len()..];
            if pduid.len() != 16 {
                continue;
            }
            let (_, count) = split_pair(pduid);
            if let Some(bytes) = self.pdus.get(pduid)? {
                out.push((
                    count,
                    String::from_utf8_lossy(&v).into_owned(),
                    std::sync::Arc::new(PduEvent::from_json(&bytes)?),
                ));
            }
        }
        Ok(out)
    }

    /// Events of `room_id` relating to `parent` and, up to `max_depth` levels down, events
    /// relating to those: `(count, rel_type, event)`, oldest first. Only events whose
    /// content still holds the relation count: a redaction strips `m.relates_to` from the
    /// stored event but leaves its index entry behind.
    pub fn relations_recursive(
        &self,
        room_id: &RoomId,
        parent: &EventId,
        max_depth: usize,
    ) -> Result<Vec<(u64, String, Pdu)>> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut level = vec![parent.to_owned()];
        for _ in 0..max_depth {
            let mut next = Vec::new();
            for id in &level {
                for (count, _, pdu) in self.relations_of(id)? {
                    let Some((rel_type, to)) = pdu.relation() else {
                        continue;
                    };
                    if to != *id || pdu.room_id != room_id || !seen.insert(pdu.event_id.clone()) {
                        continue;
                    }
                    next.push(pdu.event_id.clone());
                    out.push((count, rel_type, pdu));
                }
            }
            if next.is_empty() {
                break;
            }
            level = next;
        }
        out.sort_by_key(|(count, ..)| *count);
        Ok(out)
    }

    /// Thread roots in a room: events that have at least one `m.thread` child.
    pub fn thread_roots(&self, room_id: &RoomId) -> Result<Vec<Pdu>> {
        let mut roots = Vec::new();
        for (k, _) in self
            .relations
            .scan_prefix(key::prefix(&[b"t", room_id.as_bytes()]))
        {
            if let Some(id) = key::last_str(&k).and_then(|s| EventId::parse(s).ok())
                && let Some(pdu) = self.get_pdu(&id)?
            {
                roots.push(pdu);
            }
        }
        Ok(roots)
    }
}
