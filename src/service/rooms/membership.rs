//! Memberships, kept as indexes beside the state: `user_rooms` (user -> room) answers
//! "which rooms does this user see, since when", `room_members` (room -> user) answers
//! "who is in this room". Both are written in the batch of the member event.

use ruma::{
    OwnedRoomId, OwnedUserId, RoomId, UserId,
    events::{StateEventType, TimelineEventType, room::member::MembershipState},
};
use serde::{Deserialize, Serialize};

use super::{Rooms, pdu::PduEvent, state::StateMap};
use crate::{
    database::{Commit, key},
    error::{Error, Result},
};

pub struct MembershipChange {
    pub user_id: OwnedUserId,
    pub membership: MembershipState,
    pub event_id: String,
    /// Stripped room state shown to an invited or knocking user.
    pub stripped: Option<Vec<serde_json::Value>>,
}

/// A user's relation to a room, as `user_rooms` stores it.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct UserRoom {
    pub membership: MembershipState,
    /// Stream position of the last membership change.
    pub count: u64,
    pub event_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripped: Option<Vec<serde_json::Value>>,
    /// Set by `/forget`: the room no longer shows up for this user at all.
    #[serde(default)]
    pub forgotten: bool,
}

pub(super) const STRIPPED_TYPES: &[StateEventType] = &[
    StateEventType::RoomCreate,
    StateEventType::RoomJoinRules,
    StateEventType::RoomName,
    StateEventType::RoomAvatar,
    StateEventType::RoomCanonicalAlias,
    StateEventType::RoomEncryption,
    StateEventType::RoomTopic,
];

impl Rooms {
    pub(super) fn membership_change(
        &self,
        pdu: &PduEvent,
        state: &StateMap,
    ) -> Result<Option<MembershipChange>> {
        if pdu.kind != TimelineEventType::RoomMember {
            return Ok(None);
        }
        let Some(user_id) = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok()) else {
            return Ok(None);
        };
        #[derive(Deserialize)]
        struct Content {
            membership: MembershipState,
        }
        let content: Content = serde_json::from_str(pdu.content.get())
            .map_err(|e| Error::bad_json(format!("invalid member content: {e}")))?;
        let stripped = match content.membership {
            MembershipState::Invite | MembershipState::Knock => {
                Some(self.stripped_state(state, pdu)?)
            }
            _ => None,
        };
        Ok(Some(MembershipChange {
            user_id,
            membership: content.membership,
            event_id: pdu.event_id.to_string(),
            stripped,
        }))
    }

    fn stripped_state(
        &self,
        state: &StateMap,
        member: &PduEvent,
    ) -> Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        for kind in STRIPPED_TYPES {
            if let Some(pdu) = self.state_get(state, kind, "")? {
                out.push(pdu.to_stripped_json());
            }
        }
        if let Some(sender) =
            self.state_get(state, &StateEventType::RoomMember, member.sender.as_str())?
        {
            out.push(sender.to_stripped_json());
        }
        out.push(member.to_stripped_json());
        Ok(out)
    }

    pub(super) fn write_membership(
        &self,
        c: &mut Commit,
        room_id: &RoomId,
        change: &MembershipChange,
        count: u64,
    ) -> Result<()> {
        // A member event that keeps the membership (a profile change) is not a new join:
        // keep the position of the change, or `/sync` would resend the room whole.
        let previous = self.user_room(&change.user_id, room_id)?;
        let count = match &previous {
            Some(previous) if previous.membership == change.membership => previous.count,
            _ => count,
        };
        self.note_membership(
            room_id,
            &change.user_id,
            previous.as_ref().map(|p| &p.membership),
            &change.membership,
        )?;
        let record = UserRoom {
            membership: change.membership.clone(),
            count,
            event_id: change.event_id.clone(),
            stripped: change.stripped.clone(),
            forgotten: false,
        };
        c.put(
            &self.user_rooms,
            key::key(&[change.user_id.as_bytes(), room_id.as_bytes()]),
            serde_json::to_vec(&record)?,
        );
        c.put(
            &self.room_members,
            key::key(&[room_id.as_bytes(), change.user_id.as_bytes()]),
            change.membership.as_str(),
        );
        Ok(())
    }

    /// Every room the user has or had a membership in, with that membership.
    pub fn user_rooms(&self, user_id: &UserId) -> Result<Vec<(OwnedRoomId, UserRoom)>> {
        self.user_rooms
            .scan_prefix(key::prefix(&[user_id.as_bytes()]))
            .map(|(k, v)| {
                let room = RoomId::parse(key::last_str(&k).unwrap_or_default())
                    .map_err(Error::internal)?;
                Ok((room, serde_json::from_slice(&v)?))
            })
            .collect()
    }

    pub fn user_room(&self, user_id: &UserId, room_id: &RoomId) -> Result<Option<UserRoom>> {
        self.user_rooms
            .get_json(key::key(&[user_id.as_bytes(), room_id.as_bytes()]))
    }

    pub fn forget(&self, user_id: &UserId, room_id: &RoomId) -> Result<()> {
        let k = key::key(&[user_id.as_bytes(), room_id.as_bytes()]);
        let Some(mut record) = self.user_rooms.get_json::<UserRoom>(&k)? else {
            return Ok(());
        };
        if matches!(
            record.membership,
            MembershipState::Join | MembershipState::Invite | MembershipState::Knock
        ) {
            return Err(
                Error::unknown("You must leave the room before forgetting it")
                    .with_status(http::StatusCode::BAD_REQUEST),
            );
        }
        record.forgotten = true;
        self.user_rooms.put(k, serde_json::to_vec(&record)?)
    }

    pub fn membership(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> Result<Option<MembershipState>> {
        Ok(self
            .room_members
            .get(key::key(&[room_id.as_bytes(), user_id.as_bytes()]))?
            .map(|v| MembershipState::from(String::from_utf8_lossy(&v).as_ref())))
    }

    pub fn is_joined(&self, user_id: &UserId, room_id: &RoomId) -> Result<bool> {
        Ok(self.membership(user_id, room_id)? == Some(MembershipState::Join))
    }

    pub fn rooms_joined(&self, user_id: &UserId) -> Result<Vec<OwnedRoomId>> {
        Ok(self
            .user_rooms(user_id)?
            .into_iter()
            .filter(|(_, r)| r.membership == MembershipState::Join)
            .map(|(room, _)| room)
            .collect())
    }

    /// Members with the given membership (all members with `None`).
    pub fn members(
        &self,
        room_id: &RoomId,
        membership: Option<&MembershipState>,
    ) -> Result<Vec<(OwnedUserId, MembershipState)>> {
        self.room_members
            .scan_prefix(key::prefix(&[room_id.as_bytes()]))
            .filter_map(|(k, v)| {
                let m = MembershipState::from(String::from_utf8_lossy(&v).as_ref());
                if membership.is_some_and(|want| *want != m) {
                    return None;
                }
                Some(
                    UserId::parse(key::last_str(&k).unwrap_or_default())
                        .map(|u| (u, m))
                        .map_err(Error::internal),
                )
            })
            .collect()
    }

    pub fn joined_members(&self, room_id: &RoomId) -> Result<Vec<OwnedUserId>> {
        Ok(self
            .members(room_id, Some(&MembershipState::Join))?
            .into_iter()
            .map(|(u, _)| u)
            .collect())
    }

    /// Whether two users share a joined room, or the room is public (user directory rules).
    pub fn share_room(&self, a: &UserId, b: &UserId) -> Result<bool> {
        for room in self.rooms_joined(a)? {
            if self.is_joined(b, &room)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
