//! Which servers a local event goes to, and queueing it for them in the event's commit.
//!
//! The servers of a room are those with at least one joined member. Scanning the members
//! for every message would cost a read per member in a large room, so each room's count
//! of joined members per server is kept in memory: built from `room_members` on first use
//! and adjusted by every membership write (`write_membership`, the one writer of
//! `room_members`, local or federated). Memory is one small map per room.
//!
//! Adjustments are made inside the commit, before its batch is written. Readers are event
//! appends to the same room, which hold the room lock, so none sees the map ahead of the
//! database; a failed commit drops the room's map (`forget_joined_servers`).

use std::collections::HashMap;

use ruma::{
    CanonicalJsonObject, OwnedServerName, RoomId, UserId,
    events::{TimelineEventType, room::member::MembershipState},
    room_version_rules::RoomVersionRules,
};

use super::{Rooms, federation_format::to_federation_format, pdu::PduEvent};
use crate::{
    database::{Commit, key},
    error::Result,
};

/// Joined members per server, for one room.
pub(super) type ServerCounts = HashMap<OwnedServerName, usize>;

impl Rooms {
    /// Queues an event in its own commit for every server that must see it: the servers
    /// with members joined to the room, and for a member event the target's server (an
    /// invited, kicked or banned user's server learns of it even with nobody joined), less
    /// those the room's server ACL denies.
    /// `broadcast` says whether this server distributes the event: yes for events made
    /// here and for the member events a remote server asks us, as a resident, to add
    /// (`send_join`, `send_leave`, `send_knock`); no for events received over federation,
    /// which are their origin's to distribute. Call after the event's membership is written
    /// or before: the result is the same. Wake the sender (`self.sending.wake()`) after the
    /// commit.
    pub fn queue_outgoing(
        &self,
        c: &mut Commit,
        pdu: &PduEvent,
        object: &CanonicalJsonObject,
        rules: &RoomVersionRules,
        broadcast: bool,
    ) -> Result<()> {
        let own = self.globals.server_name();
        if !broadcast || !self.globals.config.allow_federation {
            return Ok(());
        }
        let mut servers = self.joined_servers(&pdu.room_id)?;
        if pdu.kind == TimelineEventType::RoomMember
            && let Some(target) = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok())
            && target.server_name() != own
            && !servers.iter().any(|s| s == target.server_name())
        {
            servers.push(target.server_name().to_owned());
        }
        // A server the room's ACL denies takes no part in the room, so it is sent none of
        // its events. (Synapse still sends them; but an ACL is how a room shuts a hostile
        // server out, and what it is sent it can read.)
        if let Some(acl) = self.server_acl(&pdu.room_id)? {
            servers.retain(|s| acl.is_allowed(s));
        }
        if servers.is_empty() {
            return Ok(());
        }
        let mut outgoing = object.clone();
        to_federation_format(&mut outgoing, rules);
        let json = serde_json::to_vec(&outgoing)?;
        self.sending.queue_pdu(c, &servers, &pdu.event_id, &json)
    }

    /// The other servers with at least one member joined to the room.
    pub fn joined_servers(&self, room_id: &RoomId) -> Result<Vec<OwnedServerName>> {
        let own = self.globals.server_name();
        self.with_server_counts(room_id, |counts| {
            counts
                .keys()
                .filter(|s| s.as_str() != own.as_str())
                .cloned()
                .collect()
        })
    }

    /// Adjusts the room's server counts for a membership change; called by
    /// `write_membership` with the membership before the change.
    pub(super) fn note_membership(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        before: Option<&MembershipState>,
        after: &MembershipState,
    ) -> Result<()> {
        let was = before == Some(&MembershipState::Join);
        let is = *after == MembershipState::Join;
        if was == is {
            return Ok(());
        }
        // Loading here (from the state before this change) keeps later adjustments in the
        // same commit from being lost to a load that would read the database too early.
        self.with_server_counts(room_id, |counts| {
            let server = user_id.server_name();
            if is {
                *counts.entry(server.to_owned()).or_default() += 1;
            } else if let Some(n) = counts.get_mut(server) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(server);
                }
            }
        })
    }

    /// Drops the room's cached counts, after a commit that may have adjusted them failed.
    pub fn forget_joined_servers(&self, room_id: &RoomId) {
        self.room_servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(room_id);
    }

    fn with_server_counts<T>(
        &self,
        room_id: &RoomId,
        f: impl FnOnce(&mut ServerCounts) -> T,
    ) -> Result<T> {
        {
            let mut cache = self.room_servers.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(counts) = cache.get_mut(room_id) {
                return Ok(f(counts));
            }
        }
        // Built outside the lock so a large room does not stall other rooms; the room
        // lock the caller holds keeps its members from changing meanwhile.
        let mut counts = ServerCounts::new();
        for (k, v) in self
            .room_members
            .scan_prefix(key::prefix(&[room_id.as_bytes()]))
        {
            if &*v != MembershipState::Join.as_str().as_bytes() {
                continue;
            }
            if let Some(user) = key::last_str(&k).and_then(|u| UserId::parse(u).ok()) {
                *counts.entry(user.server_name().to_owned()).or_default() += 1;
            }
        }
        let mut cache = self.room_servers.lock().unwrap_or_else(|e| e.into_inner());
        Ok(f(cache.entry(room_id.to_owned()).or_insert(counts)))
    }
}
