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

/// Runs on every `/sync`: key changes come from one range scan of the change stream, and
/// member lists are read per encrypted room, with per-member lookups only in rooms that
/// had events in the range (a membership change is an event).
pub fn changes(services: &Services, user: &UserId, since: u64, until: u64) -> Result<DeviceLists> {
    let in_range = |p: u64| p > since && p <= until;
    let changed_keys = services.e2ee.changed_between(since, until);
    let mut out = DeviceLists::default();
    if changed_keys.contains(user) {
        out.changed.insert(user.to_owned());
    }
    let mut sharing = BTreeSet::from([user.to_owned()]);
    // Members who left a room in the range, and members of rooms the user left.
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
        let active = services.rooms.last_count(&room_id)? > since;
        for (member, membership) in services.rooms.members(&room_id, None)? {
            let member_moved = active
                && services
                    .rooms
                    .user_room(&member, &room_id)?
                    .is_some_and(|r| in_range(r.count));
            if membership != MembershipState::Join {
                if member_moved {
                    departed.insert(member);
                }
                continue;
            }
            if member != user && (i_moved || member_moved || changed_keys.contains(&member)) {
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
