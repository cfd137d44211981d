//! What another server may read of a room: the checks behind the read-only federation
//! endpoints. As in Synapse, a server must have a joined user in the room (or the room is
//! world-readable), must pass the room's server ACL, and sees each event's content only
//! if the history visibility at that event lets one of its users see it; otherwise it gets
//! the event redacted, which keeps the graph it walks connected.

use ruma::{
    EventId, OwnedEventId, OwnedServerName, RoomId, ServerName, UserId,
    events::{
        StateEventType, TimelineEventType,
        room::{
            history_visibility::HistoryVisibility, member::MembershipState,
            server_acl::RoomServerAclEventContent,
        },
    },
};
use serde::Deserialize;
use serde_json::value::RawValue as RawJsonValue;

use super::{Rooms, pdu::PduEvent, state::StateMap};
use crate::error::{Error, Result};

impl Rooms {
    /// Whether a user of `server` is joined to the room now.
    pub fn server_in_room(&self, server: &ServerName, room_id: &RoomId) -> Result<bool> {
        Ok(self
            .joined_members(room_id)?
            .iter()
            .any(|user| user.server_name() == server))
    }

    /// The servers that can help someone join the room: this one first, then those of the
    /// joined members, each once.
    pub fn room_servers(&self, room_id: &RoomId) -> Result<Vec<OwnedServerName>> {
        let mut servers = vec![self.globals.owned_server_name()];
        for member in self.joined_members(room_id)? {
            if !servers.iter().any(|s| s == member.server_name()) {
                servers.push(member.server_name().to_owned());
            }
        }
        Ok(servers)
    }

    /// Whether the room's current `m.room.server_acl` admits `server`. A room without one
    /// admits everyone; an ACL whose content does not parse is ignored, as Synapse does.
    pub fn server_acl_allows(&self, room_id: &RoomId, server: &ServerName) -> Result<bool> {
        Ok(self
            .server_acl(room_id)?
            .is_none_or(|acl| acl.is_allowed(server)))
    }

    /// The room's current `m.room.server_acl`, if it has one that parses.
    pub fn server_acl(&self, room_id: &RoomId) -> Result<Option<RoomServerAclEventContent>> {
        let Some(acl) = self.room_state_get(room_id, &StateEventType::RoomServerAcl, "")? else {
            return Ok(None);
        };
        let content = acl.content_json::<RoomServerAclEventContent>();
        if content.is_none() {
            tracing::warn!(%room_id, "ignoring an m.room.server_acl that does not parse");
        }
        Ok(content)
    }

    /// Whether a user of `server` is or ever was joined to the room. A member event's
    /// auth events include the member's previous member event, so a user's membership
    /// history is a chain back from the current one, whichever server sent the events.
    pub fn server_ever_joined(&self, server: &ServerName, room_id: &RoomId) -> Result<bool> {
        // Membership histories longer than this are not walked to their start.
        const MAX_STEPS: usize = 100;
        for (user, membership) in self.members(room_id, None)? {
            if user.server_name() != server {
                continue;
            }
            if membership == MembershipState::Join {
                return Ok(true);
            }
            let mut current =
                self.room_state_get(room_id, &StateEventType::RoomMember, user.as_str())?;
            for _ in 0..MAX_STEPS {
                let Some(event) = current else {
                    break;
                };
                if event
                    .content_field("membership")
                    .as_ref()
                    .and_then(|m| m.as_str())
                    == Some(MembershipState::Join.as_str())
                {
                    return Ok(true);
                }
                current = None;
                for id in &event.auth_events {
                    if let Some(auth) = self.get_pdu(id)?
                        && auth.kind == TimelineEventType::RoomMember
                        && auth.state_key.as_deref() == Some(user.as_str())
                    {
                        current = Some(auth);
                        break;
                    }
                }
            }
        }
        Ok(false)
    }

    /// The gate of every room-scoped federation read: the room is known here (404), the
    /// ACL admits `origin` (403) and `origin` is in the room or the room is world-readable
    /// (403).
    pub fn check_server_room_access(&self, origin: &ServerName, room_id: &RoomId) -> Result<()> {
        if !self.exists(room_id)? {
            return Err(Error::not_found("Room not found"));
        }
        if !self.server_acl_allows(room_id, origin)? {
            return Err(Error::forbidden(
                "Server is banned from this room by its ACL",
            ));
        }
        let state = self.current_state(room_id)?;
        if self.server_in_room(origin, room_id)?
            || self.history_visibility(&state)? == HistoryVisibility::WorldReadable
        {
            return Ok(());
        }
        Err(Error::forbidden("Server is not in the room"))
    }

    /// The history visibility of a state snapshot (`shared` without the event, as the spec
    /// says).
    pub fn history_visibility(&self, state: &StateMap) -> Result<HistoryVisibility> {
        #[derive(Deserialize)]
        struct Content {
            history_visibility: HistoryVisibility,
        }
        Ok(self
            .state_get(state, &StateEventType::RoomHistoryVisibility, "")?
            .and_then(|pdu| pdu.content_json::<Content>())
            .map_or(HistoryVisibility::Shared, |c| c.history_visibility))
    }

    /// Whether `server` may see the content of `pdu`: the history visibility in force when
    /// it was sent, and the memberships of `server`'s users in the state after it (so a
    /// server sees its own user's join). An event without stored state (an outlier, known
    /// only as part of another event's auth or state) is visible: it is state a server
    /// needs to check the events it may see.
    pub fn server_can_see_event(&self, server: &ServerName, pdu: &PduEvent) -> Result<bool> {
        let Some(before) = self.state_before(&pdu.event_id)? else {
            return Ok(true);
        };
        let visibility = self.history_visibility(&*self.load_state(before)?)?;
        let wanted: &[MembershipState] = match visibility {
            HistoryVisibility::WorldReadable => return Ok(true),
            // Shared history is for whoever is or was in the room, at any time.
            HistoryVisibility::Shared => return self.server_ever_joined(server, &pdu.room_id),
            HistoryVisibility::Invited => &[MembershipState::Join, MembershipState::Invite],
            // `joined`, and any value this server does not know, the strictest rule.
            _ => &[MembershipState::Join],
        };
        let after = self.state_after(&pdu.event_id)?;
        for (key, event) in after.iter() {
            if !self.is_member_statekey(*key)? {
                continue;
            }
            let (_, state_key) = self.get_statekey(*key)?;
            if !UserId::parse(state_key.as_str()).is_ok_and(|user| user.server_name() == server) {
                continue;
            }
            let Some(member) = self.get_pdu(&self.get_eventid(*event)?)? else {
                continue;
            };
            if member.kind == TimelineEventType::RoomMember
                && let Some(membership) = member.content_field("membership")
                && wanted
                    .iter()
                    .any(|m| membership.as_str() == Some(m.as_str()))
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The event in federation form as `server` may see it: whole, or redacted when the
    /// history visibility hides its content from that server. `None` if unknown.
    pub fn pdu_for_server(
        &self,
        server: &ServerName,
        event_id: &EventId,
    ) -> Result<Option<Box<RawJsonValue>>> {
        let Some(pdu) = self.get_pdu(event_id)? else {
            return Ok(None);
        };
        if self.server_can_see_event(server, &pdu)? {
            self.pdu_for_federation(event_id)
        } else {
            self.redacted_pdu_for_federation(event_id)
        }
    }

    /// Every event reachable through `auth_events` from `events`, oldest first, as peers
    /// get it from `/state` and `/event_auth`. A seed appears only when another seed needs
    /// it (Synapse's `get_auth_chain_ids`). In room versions whose room id is the create
    /// event's hash no event lists the create event, yet every event is authorised by it:
    /// it is added so a peer can check the chain alone.
    pub fn auth_chain_for_federation(
        &self,
        room_id: &RoomId,
        events: &[OwnedEventId],
    ) -> Result<Vec<OwnedEventId>> {
        let mut chain = std::collections::HashSet::new();
        let mut todo: Vec<OwnedEventId> = events.to_vec();
        while let Some(id) = todo.pop() {
            let Some(pdu) = self.get_pdu(&id)? else {
                continue;
            };
            for auth in &pdu.auth_events {
                if chain.insert(auth.clone()) {
                    todo.push(auth.clone());
                }
            }
        }
        if let Some(version) = self.room_version(room_id)?
            && version
                .rules()
                .is_some_and(|r| r.authorization.room_create_event_id_as_room_id)
            && let Some(create) = self.room_state_get(room_id, &StateEventType::RoomCreate, "")?
        {
            chain.insert(create.event_id.clone());
        }
        let mut ordered = Vec::with_capacity(chain.len());
        for id in chain {
            let depth = self.get_pdu(&id)?.map_or(0, |p| u64::from(p.depth));
            ordered.push((depth, id));
        }
        ordered.sort();
        Ok(ordered.into_iter().map(|(_, id)| id).collect())
    }

    /// The events of `/backfill`: the seeds in this room and the events before them,
    /// walking `prev_events` newest first (greatest depth, then latest stream position, as
    /// Synapse's priority queue does), at most `limit`, in the order visited.
    pub fn backfill_ids(
        &self,
        room_id: &RoomId,
        seeds: &[OwnedEventId],
        limit: usize,
    ) -> Result<Vec<OwnedEventId>> {
        let mut queue = std::collections::BinaryHeap::new();
        let mut queued = std::collections::HashSet::new();
        let push = |queue: &mut std::collections::BinaryHeap<(u64, u64, OwnedEventId)>,
                    queued: &mut std::collections::HashSet<OwnedEventId>,
                    id: &EventId|
         -> Result<()> {
            if queued.contains(id) {
                return Ok(());
            }
            // Timeline events only: an outlier's place in the graph is not known here.
            if let Some(count) = self.pdu_count(id)?
                && let Some(pdu) = self.get_pdu(id)?
                && pdu.room_id == room_id
            {
                queued.insert(id.to_owned());
                queue.push((u64::from(pdu.depth), count, id.to_owned()));
            }
            Ok(())
        };
        for seed in seeds {
            push(&mut queue, &mut queued, seed)?;
        }
        let mut out = Vec::new();
        while out.len() < limit
            && let Some((_, _, id)) = queue.pop()
        {
            if let Some(pdu) = self.get_pdu(&id)? {
                for prev in &pdu.prev_events {
                    push(&mut queue, &mut queued, prev)?;
                }
            }
            out.push(id);
        }
        Ok(out)
    }

    /// The events of `/get_missing_events`: walking `prev_events` back from `latest`
    /// breadth-first, never into or past `earliest`, skipping events below `min_depth`;
    /// the `limit` nearest to `latest`, returned oldest first (Synapse's walk).
    pub fn missing_event_ids(
        &self,
        room_id: &RoomId,
        earliest: &[OwnedEventId],
        latest: &[OwnedEventId],
        limit: usize,
        min_depth: u64,
    ) -> Result<Vec<OwnedEventId>> {
        let mut seen: std::collections::HashSet<OwnedEventId> = earliest.iter().cloned().collect();
        let mut front: Vec<OwnedEventId> = latest
            .iter()
            .filter(|id| !seen.contains(*id))
            .cloned()
            .collect();
        seen.extend(front.iter().cloned());
        let mut out = Vec::new();
        while !front.is_empty() && out.len() < limit {
            let mut next = Vec::new();
            for id in &front {
                let Some(pdu) = self.get_pdu(id)? else {
                    continue;
                };
                if pdu.room_id != room_id {
                    continue;
                }
                for prev in &pdu.prev_events {
                    if !seen.insert(prev.clone()) || self.get_pduid(prev)?.is_none() {
                        continue;
                    }
                    let Some(prev_pdu) = self.get_pdu(prev)? else {
                        continue;
                    };
                    if prev_pdu.room_id != room_id || u64::from(prev_pdu.depth) < min_depth {
                        continue;
                    }
                    out.push(prev.clone());
                    next.push(prev.clone());
                }
            }
            front = next;
        }
        out.truncate(limit);
        out.reverse();
        Ok(out)
    }
}
