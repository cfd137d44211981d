//! The core path a client walks: register, create a room, invite, join, chat, sync,
//! survive a restart.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{TestServer, bodies, enc, timeline};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_chat_and_see_each_other_in_sync() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "name": "chat", "invite": [bob.user_id] }))
        .await;

    let bob_sync = server.sync(&bob, None, 0).await;
    assert!(
        bob_sync["rooms"]["invite"][&room]["invite_state"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.name")
    );
    server.join(&bob, &room).await;

    server.send_text(&alice, &room, "hello bob").await;
    server.send_text(&bob, &room, "hello alice").await;

    let sync = server.sync(&alice, None, 0).await;
    assert_eq!(
        bodies(&timeline(&sync, &room)),
        ["hello bob", "hello alice"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_sync_returns_as_soon_as_a_message_arrives() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.join(&bob, &room).await;
    let since = server.sync(&bob, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    let started = Instant::now();
    let (sync, _) = tokio::join!(server.sync(&bob, Some(&since), 30_000), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.send_text(&alice, &room, "wake up").await
    });
    let waited = started.elapsed();
    assert_eq!(bodies(&timeline(&sync, &room)), ["wake up"]);
    // Woken by the send, not by the 30 s timeout.
    assert!(waited < Duration::from_secs(10), "sync took {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_a_restart() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server
        .create_room(&alice, json!({ "name": "persistent" }))
        .await;
    for i in 0..25 {
        server
            .send_text(&alice, &room, &format!("message {i}"))
            .await;
    }
    let server = server.restart().await;

    let alice = server.login(&alice).await;
    let sync = server.sync(&alice, None, 0).await;
    let events = timeline(&sync, &room);
    assert_eq!(
        bodies(&events).last().map(String::as_str),
        Some("message 24")
    );
    assert_eq!(sync["rooms"]["join"][&room]["timeline"]["limited"], true);

    // The rest through /messages, back to the room's creation.
    let mut from = sync["rooms"]["join"][&room]["timeline"]["prev_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut all = bodies(&events);
    loop {
        let (status, page) = server
            .get(
                &format!(
                    "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=7&from={from}",
                    enc(&room)
                ),
                &alice.token,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let chunk: Vec<_> = page["chunk"].as_array().unwrap().iter().collect();
        let mut older = bodies(&chunk);
        older.reverse();
        older.extend(all);
        all = older;
        match page["end"].as_str() {
            Some(end) => from = end.to_owned(),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("message {i}")).collect();
    assert_eq!(all, expected);

    // Writing still works after the restart.
    server.send_text(&alice, &room, "after restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_hides_history_from_before_joining_when_visibility_is_joined() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "initial_state": [{ "type": "m.room.history_visibility", "content": { "history_visibility": "joined" } }] }),
        )
        .await;
    server.send_text(&alice, &room, "before bob").await;
    server.join(&bob, &room).await;
    server.send_text(&alice, &room, "after bob").await;

    let sync = server.sync(&bob, None, 0).await;
    assert_eq!(bodies(&timeline(&sync, &room)), ["after bob"]);
    let (_, page) = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
                enc(&room)
            ),
            &bob.token,
        )
        .await;
    let chunk: Vec<_> = page["chunk"].as_array().unwrap().iter().collect();
    assert_eq!(bodies(&chunk), ["after bob"]);

    // With `shared`, the same history is visible.
    let room2 = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.send_text(&alice, &room2, "before bob").await;
    server.join(&bob, &room2).await;
    let sync = server.sync(&bob, None, 0).await;
    assert_eq!(bodies(&timeline(&sync, &room2)), ["before bob"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_event_that_keeps_the_membership_is_not_a_rejoin() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({ "name": "r" })).await;
    let since = server.sync(&alice, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    // A join -> join member event (what a profile change sends).
    let path = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
        enc(&room),
        enc(&alice.user_id)
    );
    let (status, body) = server
        .put(
            &path,
            &alice.token,
            json!({ "membership": "join", "displayname": "Alice A." }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let sync = server.sync(&alice, Some(&since), 0).await;
    let joined = &sync["rooms"]["join"][&room];
    let events = joined["timeline"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "only the new member event: {joined}");
    assert_eq!(joined["timeline"]["limited"], false);
    assert_eq!(
        joined["state"]["events"],
        json!([]),
        "no state resent: {joined}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_loading_sends_the_member_events_of_new_senders() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.join(&carol, &room).await;
    for i in 0..5 {
        server.send_text(&alice, &room, &format!("m{i}")).await;
    }
    server.join(&bob, &room).await;
    let filter = enc(
        &json!({ "room": { "timeline": { "limit": 2 }, "state": { "lazy_load_members": true } } })
            .to_string(),
    );

    let (_, initial) = server
        .get(
            &format!("/_matrix/client/v3/sync?filter={filter}"),
            &bob.token,
        )
        .await;
    let members = |sync: &serde_json::Value| -> Vec<String> {
        let mut m: Vec<String> = sync["rooms"]["join"][&room]["state"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "m.room.member")
            .map(|e| e["state_key"].as_str().unwrap().to_owned())
            .collect();
        m.sort();
        m
    };
    // Timeline: alice's last message and bob's join; state: alice only (bob's own member
    // event is in the timeline); carol is not loaded.
    assert!(!members(&initial).contains(&carol.user_id), "{initial}");
    assert!(members(&initial).contains(&alice.user_id), "{initial}");

    server.send_text(&carol, &room, "hi from carol").await;
    let since = initial["next_batch"].as_str().unwrap();
    let (_, next) = server
        .get(
            &format!("/_matrix/client/v3/sync?filter={filter}&since={since}"),
            &bob.token,
        )
        .await;
    assert_eq!(bodies(&timeline(&next, &room)), ["hi from carol"]);
    assert!(
        members(&next).contains(&carol.user_id),
        "carol's member event comes with her message: {next}"
    );
}
