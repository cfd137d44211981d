//! Typing notifications (spec: "Typing Notifications"). Kept in memory only: each room
//! holds who is typing until when, and the stream position of its last change so `/sync`
//! sends the list only when it changed. A timer (not polling) ends each user's typing at
//! its deadline and wakes the room's syncs.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::json;
use tokio::time::Instant;

use super::{Services, deadlines::Deadlines};
use crate::{database::Database, error::Result};

/// Longest typing period a client may ask for; Synapse caps requests the same way.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);
/// Typing of a user of another server ends after this unless renewed: the EDU carries
/// no timeout (Synapse uses 30 s too).
pub const REMOTE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct RoomTyping {
    users: BTreeMap<OwnedUserId, Instant>,
    /// Stream position of the last change of `users`.
    changed: u64,
}

pub struct Typing {
    db: Arc<Database>,
    rooms: Mutex<HashMap<OwnedRoomId, RoomTyping>>,
    timers: Deadlines<(OwnedRoomId, OwnedUserId)>,
}

impl Typing {
    pub fn new(db: &Arc<Database>) -> Self {
        Self {
            db: Arc::clone(db),
            rooms: Mutex::default(),
            timers: Deadlines::default(),
        }
    }

    /// Starts (`until` set) or stops typing; true when the room's list changed.
    fn set(&self, room_id: &RoomId, user_id: &UserId, until: Option<Instant>) -> Result<bool> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let room = rooms.entry(room_id.to_owned()).or_default();
        let key = (room_id.to_owned(), user_id.to_owned());
        let changed = match until {
            Some(at) => {
                self.timers.set(key, at);
                room.users.insert(user_id.to_owned(), at).is_none()
            }
            None => {
                self.timers.cancel(&key);
                room.users.remove(user_id).is_some()
            }
        };
        if changed {
            // A position of its own (nothing written but the counter) so a sync whose
            // token is older sees the change and a newer one does not see it again.
            let count = self.db.commit(|c| Ok(c.next_count()))?;
            room.changed = room.changed.max(count);
        }
        Ok(changed)
    }

    /// The users typing in the room if the list changed in `(since, until]`.
    pub fn typing_since(
        &self,
        room_id: &RoomId,
        since: u64,
        until: u64,
    ) -> Option<Vec<OwnedUserId>> {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let room = rooms.get(room_id)?;
        (room.changed > since && room.changed <= until)
            .then(|| room.users.keys().cloned().collect())
    }

    /// Whether `user_id` is typing in the room now.
    pub fn is_typing(&self, room_id: &RoomId, user_id: &UserId) -> bool {
        self.rooms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(room_id)
            .is_some_and(|r| r.users.contains_key(user_id))
    }
}

/// Sets a user's typing state, wakes the room's members and, for a local user, tells the
/// other servers in the room.
pub fn set_typing(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
    timeout: Option<Duration>,
) -> Result<()> {
    let until = timeout.map(|t| Instant::now() + t.min(MAX_TIMEOUT));
    let changed = services.typing.set(room_id, user_id, until)?;
    let local = user_id.server_name() == services.globals.server_name();
    if changed {
        services
            .notifier
            .wake_all(services.rooms.joined_members(room_id)?.iter().map(|u| &**u));
    }
    // Renewals are sent too: the other servers end a remote user's typing on their own.
    if local {
        services.sending.queue_edu(
            &services.rooms.joined_servers(room_id)?,
            json!({ "edu_type": "m.typing", "content": {
                "room_id": room_id, "user_id": user_id, "typing": timeout.is_some(),
            }}),
        )?;
    }
    Ok(())
}

/// Ends typing at each deadline, until the server stops.
pub async fn run_timers(services: Arc<Services>) {
    loop {
        let (room_id, user_id) = tokio::select! {
            key = services.typing.timers.next_expired() => key,
            () = services.shutdown_signal() => return,
        };
        // The timer fired, so the user is still listed: stop it as an explicit stop would.
        if services.typing.is_typing(&room_id, &user_id)
            && let Err(e) = set_typing(&services, &room_id, &user_id, None)
        {
            tracing::warn!(%room_id, "ending typing failed: {}", e.message);
        }
    }
}

/// An `m.typing` EDU from `origin`: applied when the user belongs to that server and is
/// joined to the room.
pub fn handle_edu(
    services: &Services,
    origin: &ruma::ServerName,
    content: &serde_json::Value,
) -> Result<()> {
    let (Some(room_id), Some(user_id)) = (
        content["room_id"]
            .as_str()
            .and_then(|r| RoomId::parse(r).ok()),
        content["user_id"]
            .as_str()
            .and_then(|u| UserId::parse(u).ok()),
    ) else {
        return Ok(());
    };
    if user_id.server_name() != origin || !services.rooms.is_joined(&user_id, &room_id)? {
        tracing::debug!(%origin, %user_id, "ignoring a typing EDU for a user of another server or not in the room");
        return Ok(());
    }
    let typing = content["typing"].as_bool().unwrap_or(false);
    set_typing(
        services,
        &room_id,
        &user_id,
        typing.then_some(REMOTE_TIMEOUT),
    )
}
