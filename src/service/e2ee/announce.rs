//! Telling others that a user's devices changed: local users sharing a room are woken (their
//! `/sync` computes `device_lists` from the key-change stream), and every other server in
//! those rooms gets an `m.device_list_update` EDU.

use std::collections::BTreeSet;

use ruma::{OwnedServerName, UserId};
use serde_json::json;

use crate::{error::Result, service::Services};

impl Services {
    /// Servers other than this one that share a room with `user`.
    pub fn servers_sharing_rooms(&self, user: &UserId) -> Result<Vec<OwnedServerName>> {
        let mut servers = BTreeSet::new();
        for room_id in self.rooms.rooms_joined(user)? {
            servers.extend(self.rooms.joined_servers(&room_id)?);
        }
        Ok(servers.into_iter().collect())
    }

    /// Wakes the local users who share a room with `user` (and `user`), whose device lists
    /// may now show a change.
    pub fn wake_room_peers(&self, user: &UserId) -> Result<()> {
        let mut peers = BTreeSet::from([user.to_owned()]);
        for room_id in self.rooms.rooms_joined(user)? {
            peers.extend(self.rooms.joined_members(&room_id)?);
        }
        self.notifier.wake_all(peers.iter().map(|u| &**u));
        Ok(())
    }

    /// After a local device was added, removed or had its keys changed (the key-change
    /// stream is already written).
    pub fn announce_device_change(&self, user: &UserId, device: &str, deleted: bool) -> Result<()> {
        self.wake_room_peers(user)?;
        if !self.config().allow_federation {
            return Ok(());
        }
        let servers = self.servers_sharing_rooms(user)?;
        if servers.is_empty() {
            return Ok(());
        }
        let mut content = json!({
            "user_id": user,
            "device_id": device,
            "stream_id": self.e2ee.last_change(user)?.unwrap_or(0),
            "prev_id": [],
            "deleted": deleted,
        });
        if !deleted {
            if let Some(keys) = self.e2ee.device_keys_for_view(user, device)? {
                content["keys"] = keys;
            }
            if let Some(name) = self
                .users
                .device(user, device)?
                .and_then(|d| d.display_name)
            {
                content["device_display_name"] = json!(name);
            }
        }
        self.sending.queue_edu(
            &servers,
            json!({ "edu_type": "m.device_list_update", "content": content }),
        )
    }

    /// After a cross-signing key upload: local peers are woken, other servers get an
    /// `m.signing_key_update` EDU with the keys they may see.
    pub fn announce_signing_keys(&self, user: &UserId) -> Result<()> {
        self.wake_room_peers(user)?;
        if !self.config().allow_federation {
            return Ok(());
        }
        let servers = self.servers_sharing_rooms(user)?;
        if servers.is_empty() {
            return Ok(());
        }
        let mut content = json!({ "user_id": user });
        for (field, kind) in [
            ("master_key", "master"),
            ("self_signing_key", "self_signing"),
        ] {
            if let Some(key) = self.e2ee.cross_signing_key_for_view(None, user, kind)? {
                content[field] = key;
            }
        }
        self.sending.queue_edu(
            &servers,
            json!({ "edu_type": "m.signing_key_update", "content": content }),
        )
    }

    /// A new login: a device-list change for everyone sharing a room with the user.
    pub fn note_new_device(&self, user: &UserId, device: &str) -> Result<()> {
        self.e2ee.note_changed(user)?;
        self.announce_device_change(user, device, false)
    }
}
