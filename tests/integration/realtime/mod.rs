//! Typing, receipts, unread counts, push rules, presence and pushers: the parts of a room
//! that are not its history. Helpers shared by the files of this folder live here.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{TestServer, User, enc, next_batch};

mod counts;
mod federation;
mod presence;
mod push_rules;
mod pushers;
mod receipts;
mod typing;

/// A room of `owner` that every one of `others` has joined.
pub async fn shared_room(server: &TestServer, owner: &User, others: &[&User]) -> String {
    let room = server
        .create_room(owner, json!({ "preset": "public_chat" }))
        .await;
    for user in others {
        server.join(user, &room).await;
    }
    room
}

/// Long-polls `user`'s sync from `since` until `found` picks something out of a response;
/// a wait with a deadline, not a timing assertion. Returns it and the token after it.
pub async fn sync_until<T>(
    server: &TestServer,
    user: &User,
    since: Option<String>,
    what: &str,
    mut found: impl FnMut(&Value) -> Option<T>,
) -> (T, String) {
    let started = Instant::now();
    let mut since = since;
    loop {
        let sync = server.sync(user, since.as_deref(), 2000).await;
        let token = next_batch(&sync);
        if let Some(value) = found(&sync) {
            return (value, token);
        }
        since = Some(token);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}: timed out waiting for {what}",
            user.user_id
        );
    }
}

/// The ephemeral event of `kind` in `room` of a sync response.
pub fn ephemeral<'a>(sync: &'a Value, room: &str, kind: &str) -> Option<&'a Value> {
    sync["rooms"]["join"][room]["ephemeral"]["events"]
        .as_array()?
        .iter()
        .find(|e| e["type"] == kind)
}

pub async fn receipt(
    server: &TestServer,
    user: &User,
    room: &str,
    kind: &str,
    event_id: &str,
    body: Value,
) -> (reqwest::StatusCode, Value) {
    server
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{}/receipt/{kind}/{}",
                enc(room),
                enc(event_id)
            ),
            &user.token,
            body,
        )
        .await
}

pub async fn typing(
    server: &TestServer,
    user: &User,
    room: &str,
    body: Value,
) -> (reqwest::StatusCode, Value) {
    server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/typing/{}",
                enc(room),
                enc(&user.user_id)
            ),
            &user.token,
            body,
        )
        .await
}
