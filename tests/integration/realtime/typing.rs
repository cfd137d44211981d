//! Typing notifications: shown to the room, ended by their timeout (which wakes waiting
//! syncs), refused for other users and rooms the user is not in.

use serde_json::json;

use super::{ephemeral, shared_room, sync_until, typing};
use crate::common::{TestServer, enc, errcode, next_batch};

#[tokio::test]
async fn typing_appears_and_expires_on_its_own() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    let since = next_batch(&server.sync(&bob, None, 0).await);

    let (status, body) = typing(
        &server,
        &alice,
        &room,
        json!({ "typing": true, "timeout": 4000 }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (users, since) = sync_until(&server, &bob, Some(since), "alice typing", |s| {
        ephemeral(s, &room, "m.typing").map(|e| e["content"]["user_ids"].clone())
    })
    .await;
    // (A machine slow enough to take 4 s to get here would see the list empty already.)
    assert_eq!(users, json!([alice.user_id]));

    // Nothing else happens in the room: only the timer can end the wait of this sync,
    // which would otherwise come back empty after 20 s.
    let sync = server.sync(&bob, Some(&since), 20_000).await;
    let event = ephemeral(&sync, &room, "m.typing").expect("the expiry wakes the sync");
    assert_eq!(event["content"]["user_ids"], json!([]));
}

#[tokio::test]
async fn typing_stops_when_asked_and_is_refused_for_others() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = shared_room(&server, &alice, &[&bob]).await;

    typing(
        &server,
        &alice,
        &room,
        json!({ "typing": true, "timeout": 60000 }),
    )
    .await;
    typing(
        &server,
        &bob,
        &room,
        json!({ "typing": true, "timeout": 60000 }),
    )
    .await;
    let sync = server.sync(&bob, None, 0).await;
    let mut users: Vec<String> = serde_json::from_value(
        ephemeral(&sync, &room, "m.typing").expect("typing")["content"]["user_ids"].clone(),
    )
    .unwrap();
    users.sort();
    let mut expected = vec![alice.user_id.clone(), bob.user_id.clone()];
    expected.sort();
    assert_eq!(users, expected);

    let since = next_batch(&sync);
    let (status, _) = typing(&server, &alice, &room, json!({ "typing": false })).await;
    assert_eq!(status, 200);
    let (users, _) = sync_until(&server, &bob, Some(since), "alice stops", |s| {
        ephemeral(s, &room, "m.typing").map(|e| e["content"]["user_ids"].clone())
    })
    .await;
    assert_eq!(users, json!([bob.user_id]));

    // For another user.
    let (status, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/typing/{}",
                enc(&room),
                enc(&bob.user_id)
            ),
            &alice.token,
            json!({ "typing": true, "timeout": 1000 }),
        )
        .await;
    assert_eq!(
        (status.as_u16(), errcode(&body)),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );
    // In a room the user is not in.
    let (status, body) = typing(
        &server,
        &carol,
        &room,
        json!({ "typing": true, "timeout": 1000 }),
    )
    .await;
    assert_eq!(
        (status.as_u16(), errcode(&body)),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );
    // Malformed.
    let (status, body) = typing(&server, &alice, &room, json!({ "typing": "yes" })).await;
    assert_eq!(status.as_u16(), 400, "{body}");
}
