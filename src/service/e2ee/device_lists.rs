//! Device-list changes as a user sees them between two stream positions (`/sync`'s
//! `device_lists`, `/keys/changes`).
//!
//! `changed`: the user themself and everyone sharing an encrypted room with them whose
//! devices or keys changed, or who started sharing one (either side joined).
//! `left`: users who shared an encrypted room at `since` and share none any more.

use std::collections::BTreeSet;

use ruma::{
    OwnedUserId, RoomId, UserId,
    events::{StateEventType, room::member::MembershipState},
};

use crate::{error::Result, service::Services};

#[derive(Default)]
pub struct DeviceLists {
    pub changed: BTreeSet<OwnedUserId>,
    pub left: BTreeSet<OwnedUserId>,
}

impl DeviceLists {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.left.is_empty()
    }
}

pub fn is_encrypted(services: &Services, room_id: &RoomId) -> Result<bool> {
    let state = services.rooms.current_state(room_id)?;
    Ok(services
        .rooms
        .state_get(&state, &StateEventType::RoomEncryption, "")?
        .is_some())
}

/// Users sharing an encrypted room with `user` now (`user` included).
pub fn encrypted_room_peers(services: &Services, user: &UserId) -> Result<BTreeSet<OwnedUserId>> {
    let mut peers = BTreeSet::from([user.to_owned()]);
    for room_id in services.rooms.rooms_joined(user)? {
        if is_encrypted(services, &room_id)? {
            peers.extend(services.rooms.joined_members(&room_id)?);
        }
    }
    Ok(peers)
}

pub fn changes(services: &Services, user: &UserId, since: u64, until: u64) -> Result<DeviceLists> {
    let in_range = |p: u64| p > since && p <= until;
    let changed_keys =
        |u: &UserId| -> Result<bool> { Ok(services.e2ee.last_change(u)?.is_some_and(in_range)) };
    let mut out = DeviceLists::default();
    if changed_keys(user)? {
        out.changed.insert(user.to_owned());
    }
    let mut sharing = BTreeSet::from([user.to_owned()]);
    // Members who left a room after `since`, and rooms the user left: candidates for `left`.
    let mut departed = BTreeSet::new();
    for (room_id, record) in services.rooms.user_rooms(user)? {
        if record.count > until || !is_encrypted(services, &room_id)? {
            continue;
        }
        let i_moved = in_range(record.count);
        match record.membership {
            MembershipState::Join => {}
            MembershipState::Leave | MembershipState::Ban if i_moved => {
                for (member, _) in services.rooms.members(&room_id, None)? {
                    departed.insert(member);
                }
                continue;
            }
            _ => continue,
        }
        for (member, membership) in services.rooms.members(&room_id, None)? {
            let member_moved = services
                .rooms
                .user_room(&member, &room_id)?
                .is_some_and(|r| in_range(r.count));
            if membership != MembershipState::Join {
                if member_moved {
                    departed.insert(member);
                }
                continue;
            }
            if member != user && (i_moved || member_moved || changed_keys(&member)?) {
                out.changed.insert(member.clone());
            }
            sharing.insert(member);
        }
    }
    out.left = departed
        .into_iter()
        .filter(|u| !sharing.contains(u))
        .collect();
    Ok(out)
}
