//! Wakes waiting `/sync` requests. The write path calls [`Notifier::wake`] for every user a
//! change concerns (a room append wakes the room's members; account data wakes its owner);
//! a waiting `/sync` holds a receiver for its own user only, so a poll costs O(1).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{OwnedUserId, UserId};
use tokio::sync::watch;

#[derive(Default)]
pub struct Notifier {
    users: Mutex<HashMap<OwnedUserId, Arc<watch::Sender<u64>>>>,
}

impl Notifier {
    /// A receiver that sees every wake-up of `user_id` after this call.
    pub fn subscribe(&self, user_id: &UserId) -> watch::Receiver<u64> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        // Drop senders nobody listens to any more, so the map tracks active syncs only.
        if users.len() > 1024 && users.len().is_power_of_two() {
            users.retain(|_, s| s.receiver_count() > 0);
        }
        users
            .entry(user_id.to_owned())
            .or_insert_with(|| Arc::new(watch::channel(0).0))
            .subscribe()
    }

    pub fn wake(&self, user_id: &UserId) {
        let sender = self
            .users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(user_id)
            .cloned();
        if let Some(sender) = sender {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    pub fn wake_all<'a>(&self, users: impl IntoIterator<Item = &'a UserId>) {
        let map = self.users.lock().unwrap_or_else(|e| e.into_inner());
        for user in users {
            if let Some(sender) = map.get(user) {
                sender.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }
}
