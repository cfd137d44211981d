//! Where branches of the event graph meet: the state before an event with several
//! `prev_events` is the resolution (state resolution v2, ruma's implementation) of the
//! states after each of them. Local events only fork when events arrive from elsewhere.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{
    EventId, OwnedEventId, RoomVersionId,
    room_version_rules::StateResolutionV2Rules,
    state_res::{self, utils::event_id_set::EventIdSet},
};

use super::{Rooms, pdu::Pdu, state::StateMap};
use crate::error::{Error, Result};

impl Rooms {
    /// The state after an event: the state before it plus the event itself if it is state.
    pub fn state_after(&self, event_id: &EventId) -> Result<Arc<StateMap>> {
        let hash = self
            .state_before(event_id)?
            .ok_or_else(|| Error::internal(format_args!("no state for {event_id}")))?;
        let before = self.load_state(hash)?;
        let pdu = self
            .get_pdu(event_id)?
            .ok_or_else(|| Error::internal(format_args!("missing {event_id}")))?;
        match &pdu.state_key {
            Some(key) => {
                let mut after = (*before).clone();
                after.insert(
                    self.get_or_create_shortstatekey(&pdu.state_event_type(), key)?,
                    self.get_or_create_shorteventid(event_id)?,
                );
                Ok(Arc::new(after))
            }
            None => Ok(before),
        }
    }

    /// The state where the given events (a fork's tips) meet.
    pub fn state_at_tips(
        &self,
        version: &RoomVersionId,
        tips: &[OwnedEventId],
    ) -> Result<Arc<StateMap>> {
        let states = tips
            .iter()
            .map(|tip| self.state_after(tip))
            .collect::<Result<Vec<_>>>()?;
        self.resolve_states(version, states, None)
    }

    /// State resolution v2 over several snapshots. Room versions 1 and 2 specify
    /// resolution v1; they are resolved with v2's algorithm, as Conduit does. `pending` is
    /// an event being appended, which the snapshots may contain but the database does not
    /// hold yet.
    pub fn resolve_states(
        &self,
        version: &RoomVersionId,
        states: Vec<Arc<StateMap>>,
        pending: Option<&Pdu>,
    ) -> Result<Arc<StateMap>> {
        match states.len() {
            0 => return Ok(Arc::default()),
            1 => return Ok(states.into_iter().next().expect("one state")),
            _ => {}
        }
        if states.windows(2).all(|w| w[0] == w[1]) {
            return Ok(states.into_iter().next().expect("states"));
        }
        let rules = version
            .rules()
            .ok_or_else(|| Error::unsupported_room_version("Unsupported room version"))?;
        let v2_rules = rules
            .state_res
            .v2_rules()
            .copied()
            .unwrap_or(StateResolutionV2Rules::V2_0);

        let mut maps = Vec::with_capacity(states.len());
        let mut auth_chains = Vec::with_capacity(states.len());
        for state in &states {
            let ids: state_res::StateMap<OwnedEventId> =
                self.state_ids(state)?.into_iter().collect();
            auth_chains.push(self.auth_chain(ids.values().cloned(), pending)?);
            maps.push(ids);
        }
        let fetch =
            |id: &EventId| -> Option<Pdu> { self.get_pdu_or_pending(id, pending).ok().flatten() };
        let subgraph = |conflicted: &state_res::StateMap<Vec<OwnedEventId>>| -> Option<EventIdSet<OwnedEventId>> {
            self.conflicted_subgraph(conflicted.values().flatten().cloned().collect(), pending).ok()
        };
        let resolved = state_res::resolve(
            &rules.authorization,
            &v2_rules,
            maps.iter(),
            auth_chains,
            fetch,
            subgraph,
        )
        .map_err(|e| Error::internal(format_args!("state resolution failed: {e}")))?;

        let mut out = StateMap::new();
        for ((kind, state_key), event_id) in resolved {
            out.insert(
                self.get_or_create_shortstatekey(&kind, &state_key)?,
                self.get_or_create_shorteventid(&event_id)?,
            );
        }
        Ok(Arc::new(out))
    }

    fn get_pdu_or_pending(&self, id: &EventId, pending: Option<&Pdu>) -> Result<Option<Pdu>> {
        match pending {
            Some(p) if p.event_id == id => Ok(Some(Arc::clone(p))),
            _ => self.get_pdu(id),
        }
    }

    /// Every event reachable through `auth_events` from `events` (not including them).
    pub fn auth_chain(
        &self,
        events: impl IntoIterator<Item = OwnedEventId>,
        pending: Option<&Pdu>,
    ) -> Result<EventIdSet<OwnedEventId>> {
        let mut chain = EventIdSet::new();
        let mut todo: Vec<OwnedEventId> = events.into_iter().collect();
        let mut seen: HashSet<OwnedEventId> = todo.iter().cloned().collect();
        while let Some(id) = todo.pop() {
            let Some(pdu) = self.get_pdu_or_pending(&id, pending)? else {
                continue;
            };
            for auth in &pdu.auth_events {
                if seen.insert(auth.clone()) {
                    chain.insert(auth.clone());
                    todo.push(auth.clone());
                }
            }
        }
        Ok(chain)
    }

    /// The conflicted state subgraph (room version 12): events that are both an auth
    /// ancestor of a conflicted event and an auth descendant of one.
    fn conflicted_subgraph(
        &self,
        conflicted: HashSet<OwnedEventId>,
        pending: Option<&Pdu>,
    ) -> Result<EventIdSet<OwnedEventId>> {
        // Walk the auth ancestors of the conflicted events, remembering each event's auth
        // parents, then mark everything with a conflicted event among its ancestors.
        let mut parents: HashMap<OwnedEventId, Vec<OwnedEventId>> = HashMap::new();
        let mut todo: Vec<OwnedEventId> = conflicted.iter().cloned().collect();
        while let Some(id) = todo.pop() {
            if parents.contains_key(&id) {
                continue;
            }
            let auth = self
                .get_pdu_or_pending(&id, pending)?
                .map(|p| p.auth_events.clone())
                .unwrap_or_default();
            todo.extend(auth.iter().filter(|a| !parents.contains_key(*a)).cloned());
            parents.insert(id, auth);
        }
        let mut descends: HashMap<OwnedEventId, bool> = HashMap::new();
        fn has_conflicted_ancestor(
            id: &OwnedEventId,
            parents: &HashMap<OwnedEventId, Vec<OwnedEventId>>,
            conflicted: &HashSet<OwnedEventId>,
            memo: &mut HashMap<OwnedEventId, bool>,
        ) -> bool {
            if let Some(v) = memo.get(id) {
                return *v;
            }
            memo.insert(id.clone(), false);
            let v = parents.get(id).is_some_and(|ps| {
                ps.iter().any(|p| {
                    conflicted.contains(p) || has_conflicted_ancestor(p, parents, conflicted, memo)
                })
            });
            memo.insert(id.clone(), v);
            v
        }
        let mut subgraph = EventIdSet::new();
        for id in parents.keys() {
            if conflicted.contains(id)
                || has_conflicted_ancestor(id, &parents, &conflicted, &mut descends)
            {
                subgraph.insert(id.clone());
            }
        }
        Ok(subgraph)
    }
}
