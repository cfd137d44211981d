//! Pushers (spec: "Pushers"): where a user's notifications are pushed. Kept per user,
//! app id and pushkey; `append: false` takes the pushkey over from every other user, as
//! the spec says (a device changes hands).

use std::{collections::HashMap, sync::Arc};

use ruma::{OwnedUserId, UserId, api::client::push::Pusher};
use serde::{Deserialize, Serialize};

use super::Push;
use crate::{database::key, error::Result, service::globals::now_ms};

#[derive(Clone, Deserialize, Serialize)]
pub struct StoredPusher {
    pub pusher: Pusher,
    /// When the pusher was set, in ms (sent to the gateway as `pushkey_ts`, in seconds).
    pub ts: u64,
    /// The device that set it: logging that device out removes the pusher, as Synapse
    /// does, so a phone that was signed out stops getting pushes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

fn pusher_key(user_id: &UserId, app_id: &str, pushkey: &str) -> Vec<u8> {
    key::key(&[user_id.as_bytes(), app_id.as_bytes(), pushkey.as_bytes()])
}

impl Push {
    pub fn pushers(&self, user_id: &UserId) -> Result<Vec<StoredPusher>> {
        self.pushers
            .scan_prefix(key::prefix(&[user_id.as_bytes()]))
            .map(|(_, v)| Ok(serde_json::from_slice(&v)?))
            .collect()
    }

    pub fn pusher(
        &self,
        user_id: &UserId,
        app_id: &str,
        pushkey: &str,
    ) -> Result<Option<StoredPusher>> {
        self.pushers.get_json(pusher_key(user_id, app_id, pushkey))
    }

    /// Adds or replaces a pusher; without `append`, the same app id and pushkey of other
    /// users go, in the same batch.
    pub fn set_pusher(
        &self,
        user_id: &UserId,
        device_id: Option<&str>,
        pusher: Pusher,
        append: bool,
    ) -> Result<()> {
        let others: Vec<Box<[u8]>> = if append {
            Vec::new()
        } else {
            // Rare (a client registering a device): a scan of every pusher is fine.
            self.pushers
                .iter()
                .filter(|(k, _)| {
                    let mut parts = key::parts(k);
                    let user = parts.next().unwrap_or_default();
                    user != user_id.as_bytes()
                        && parts.next() == Some(pusher.ids.app_id.as_bytes())
                        && parts.next() == Some(pusher.ids.pushkey.as_bytes())
                })
                .map(|(k, _)| k)
                .collect()
        };
        let k = pusher_key(user_id, &pusher.ids.app_id, &pusher.ids.pushkey);
        let value = serde_json::to_vec(&StoredPusher {
            pusher,
            ts: now_ms(),
            device_id: device_id.map(ToOwned::to_owned),
        })?;
        self.db.write(|b| {
            for other in &others {
                b.delete(&self.pushers, other);
            }
            b.put(&self.pushers, &k, &value);
        })?;
        self.pushers_changed();
        Ok(())
    }

    /// Removes the pushers a device set (the device logged out or was deleted).
    pub fn remove_device_pushers(&self, user_id: &UserId, device_id: &str) -> Result<()> {
        let keys: Vec<Box<[u8]>> = self
            .pushers
            .scan_prefix(key::prefix(&[user_id.as_bytes()]))
            .filter(|(_, v)| {
                serde_json::from_slice::<StoredPusher>(v)
                    .is_ok_and(|p| p.device_id.as_deref() == Some(device_id))
            })
            .map(|(k, _)| k)
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        self.db.write(|b| {
            for k in &keys {
                b.delete(&self.pushers, k);
            }
        })?;
        self.pushers_changed();
        Ok(())
    }

    pub fn remove_pusher(&self, user_id: &UserId, app_id: &str, pushkey: &str) -> Result<()> {
        self.pushers.delete(pusher_key(user_id, app_id, pushkey))?;
        self.pushers_changed();
        Ok(())
    }

    /// How many pushes wait to be sent (or retried).
    pub fn queued_pushes(&self) -> usize {
        self.push_queue.iter().count()
    }

    /// `(app_id, pushkey)` of each of the user's pushers, for the append path: asked for
    /// every notified member of every event, so kept in memory until a pusher changes.
    pub(super) fn pusher_ids(&self, user_id: &UserId) -> Arc<[(String, String)]> {
        let generation = {
            let cache = self.pusher_cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(ids) = cache.users.get(user_id) {
                return Arc::clone(ids);
            }
            cache.generation
        };
        let ids: Arc<[(String, String)]> = self
            .pushers
            .scan_prefix(key::prefix(&[user_id.as_bytes()]))
            .filter_map(|(k, _)| {
                let mut parts = key::parts(&k).skip(1);
                let app = String::from_utf8(parts.next()?.to_vec()).ok()?;
                let pushkey = String::from_utf8(parts.next()?.to_vec()).ok()?;
                Some((app, pushkey))
            })
            .collect();
        let mut cache = self.pusher_cache.lock().unwrap_or_else(|e| e.into_inner());
        // A pusher written while this scan ran may be missing from it: keep it uncached.
        if cache.generation == generation {
            if cache.users.len() >= 65_536 {
                cache.users.clear();
            }
            cache.users.insert(user_id.to_owned(), Arc::clone(&ids));
        }
        ids
    }

    /// Called after every pusher write (rare), once it is committed.
    fn pushers_changed(&self) {
        let mut cache = self.pusher_cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.generation += 1;
        cache.users.clear();
    }
}

#[derive(Default)]
pub(super) struct PusherCache {
    generation: u64,
    users: HashMap<OwnedUserId, Arc<[(String, String)]>>,
}

/// Who a queued push is for.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct QueuedPush {
    pub user_id: OwnedUserId,
    pub app_id: String,
    pub pushkey: String,
    /// Stream position of the event (the user's notification at it).
    pub count: u64,
    #[serde(default)]
    pub attempts: u32,
    /// Not before this time (ms).
    #[serde(default)]
    pub next_try: u64,
}
