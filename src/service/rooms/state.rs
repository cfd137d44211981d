//! State snapshots. A snapshot is a map from short state key to short event id, stored as a
//! diff against a parent snapshot; every 32 layers a full copy cuts the chain, so loading
//! one reads a bounded number of rows. Loaded snapshots are cached.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use ruma::{EventId, OwnedEventId, RoomId, events::StateEventType};

use super::{Rooms, pdu::Pdu};
use crate::{
    database::{
        Commit,
        key::{to_u64, u64_key},
    },
    error::{Error, Result},
};

/// short state key -> short event id
pub type StateMap = BTreeMap<u64, u64>;

const MAX_CHAIN: u64 = 32;
const CACHE_ENTRIES: usize = 4096;

struct Stored {
    parent: u64,
    depth: u64,
    added: Vec<(u64, u64)>,
    removed: Vec<u64>,
}

fn encode(s: &Stored) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + s.added.len() * 16 + s.removed.len() * 8);
    out.extend_from_slice(&s.parent.to_be_bytes());
    out.extend_from_slice(&s.depth.to_be_bytes());
    out.extend_from_slice(&(s.added.len() as u64).to_be_bytes());
    for (k, v) in &s.added {
        out.extend_from_slice(&k.to_be_bytes());
        out.extend_from_slice(&v.to_be_bytes());
    }
    for k in &s.removed {
        out.extend_from_slice(&k.to_be_bytes());
    }
    out
}

fn decode(bytes: &[u8]) -> Result<Stored> {
    if bytes.len() < 24 {
        return Err(Error::internal("corrupt state snapshot"));
    }
    let parent = to_u64(&bytes[0..8]);
    let depth = to_u64(&bytes[8..16]);
    let n_added = to_u64(&bytes[16..24]) as usize;
    let added_end = 24 + n_added * 16;
    if bytes.len() < added_end || !(bytes.len() - added_end).is_multiple_of(8) {
        return Err(Error::internal("corrupt state snapshot"));
    }
    let added = bytes[24..added_end]
        .chunks_exact(16)
        .map(|c| (to_u64(&c[..8]), to_u64(&c[8..])))
        .collect();
    let removed = bytes[added_end..].chunks_exact(8).map(to_u64).collect();
    Ok(Stored {
        parent,
        depth,
        added,
        removed,
    })
}

impl Rooms {
    pub fn load_state(&self, shortstatehash: u64) -> Result<Arc<StateMap>> {
        if let Some(state) = self
            .state_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&shortstatehash)
        {
            return Ok(Arc::clone(state));
        }
        let bytes = self
            .shortstatehash_state
            .get(u64_key(shortstatehash))?
            .ok_or_else(|| {
                Error::internal(format_args!("unknown state snapshot {shortstatehash}"))
            })?;
        let stored = decode(&bytes)?;
        let mut state = if stored.parent == 0 {
            StateMap::new()
        } else {
            (*self.load_state(stored.parent)?).clone()
        };
        for k in stored.removed {
            state.remove(&k);
        }
        state.extend(stored.added);
        let state = Arc::new(state);
        let mut cache = self.state_cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(shortstatehash, Arc::clone(&state));
        Ok(state)
    }

    fn depth_of(&self, shortstatehash: u64) -> Result<u64> {
        let bytes = self
            .shortstatehash_state
            .get(u64_key(shortstatehash))?
            .unwrap_or_default();
        Ok(if bytes.len() >= 16 {
            to_u64(&bytes[8..16])
        } else {
            0
        })
    }

    /// Stores `state` as a new snapshot (a diff against `parent` where that is short) in the
    /// commit's batch and returns its id.
    pub(super) fn save_state(
        &self,
        commit: &mut Commit,
        parent: Option<u64>,
        state: StateMap,
    ) -> Result<u64> {
        let shortstatehash = self.next_shortstatehash()?;
        let stored = match parent {
            Some(parent) if self.depth_of(parent)? < MAX_CHAIN => {
                let base = self.load_state(parent)?;
                let added = state
                    .iter()
                    .filter(|(k, v)| base.get(k) != Some(v))
                    .map(|(k, v)| (*k, *v))
                    .collect();
                let removed = base
                    .keys()
                    .filter(|k| !state.contains_key(k))
                    .copied()
                    .collect();
                Stored {
                    parent,
                    depth: self.depth_of(parent)? + 1,
                    added,
                    removed,
                }
            }
            _ => Stored {
                parent: 0,
                depth: 0,
                added: state.iter().map(|(k, v)| (*k, *v)).collect(),
                removed: vec![],
            },
        };
        commit.put(
            &self.shortstatehash_state,
            u64_key(shortstatehash),
            encode(&stored),
        );
        self.state_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(shortstatehash, Arc::new(state));
        Ok(shortstatehash)
    }

    /// The snapshot of the room's current state, if the room is known here.
    pub fn current_shortstatehash(&self, room_id: &RoomId) -> Result<Option<u64>> {
        Ok(self
            .roomid_shortstatehash
            .get(room_id.as_bytes())?
            .map(|v| to_u64(&v)))
    }

    pub fn current_state(&self, room_id: &RoomId) -> Result<Arc<StateMap>> {
        match self.current_shortstatehash(room_id)? {
            Some(hash) => self.load_state(hash),
            None => Ok(Arc::default()),
        }
    }

    /// The state before an event.
    pub fn state_before(&self, event_id: &EventId) -> Result<Option<u64>> {
        let Some(short) = self.get_shorteventid(event_id)? else {
            return Ok(None);
        };
        Ok(self
            .shorteventid_shortstatehash
            .get(u64_key(short))?
            .map(|v| to_u64(&v)))
    }

    /// The state event `(kind, state_key)` in a snapshot.
    pub fn state_get(
        &self,
        state: &StateMap,
        kind: &StateEventType,
        state_key: &str,
    ) -> Result<Option<Pdu>> {
        let Some(short) = self.get_shortstatekey(kind, state_key)? else {
            return Ok(None);
        };
        match state.get(&short) {
            Some(event) => self.get_pdu(&self.get_eventid(*event)?),
            None => Ok(None),
        }
    }

    pub fn room_state_get(
        &self,
        room_id: &RoomId,
        kind: &StateEventType,
        state_key: &str,
    ) -> Result<Option<Pdu>> {
        self.state_get(&*self.current_state(room_id)?, kind, state_key)
    }

    /// Every event of a snapshot.
    pub fn state_events(&self, state: &StateMap) -> Result<Vec<Pdu>> {
        let mut out = Vec::with_capacity(state.len());
        for event in state.values() {
            if let Some(pdu) = self.get_pdu(&self.get_eventid(*event)?)? {
                out.push(pdu);
            }
        }
        Ok(out)
    }

    /// A snapshot with event ids, as state resolution and `/state_ids` want it.
    pub fn state_ids(
        &self,
        state: &StateMap,
    ) -> Result<HashMap<(StateEventType, String), OwnedEventId>> {
        let mut out = HashMap::with_capacity(state.len());
        for (k, v) in state {
            out.insert(self.get_statekey(*k)?, self.get_eventid(*v)?);
        }
        Ok(out)
    }
}
