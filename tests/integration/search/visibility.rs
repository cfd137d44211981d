//! Who finds what: membership and history visibility at each event, and redactions.

use serde_json::json;

use super::{found, room_events, search_until, wait_for};
use crate::common::TestServer;

#[tokio::test]
async fn left_rooms_are_searchable_up_to_the_leave() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.join(&bob, &room).await;
    server
        .send_text(&alice, &room, "zebra before the leave")
        .await;
    wait_for(&server, &bob, "zebra", 1).await;
    server.leave(&bob, &room).await;
    server
        .send_text(&alice, &room, "zebra after the leave")
        .await;
    // Indexed: alice finds both.
    wait_for(&server, &alice, "zebra", 2).await;
    let left = room_events(&server, &bob, json!({ "search_term": "zebra" })).await;
    assert_eq!(found(&left), ["zebra before the leave"], "{left}");
    // Never a member of a public room: nothing.
    let stranger = room_events(&server, &carol, json!({ "search_term": "zebra" })).await;
    assert!(found(&stranger).is_empty(), "{stranger}");
    assert_eq!(stranger["count"], 0);
}

#[tokio::test]
async fn history_visibility_at_each_event() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    for (visibility, expected) in [
        ("joined", vec!["after the join"]),
        ("invited", vec!["after the invite", "after the join"]),
        (
            "shared",
            vec!["before the invite", "after the invite", "after the join"],
        ),
    ] {
        let room = server
            .create_room(
                &alice,
                json!({
                    "initial_state": [{
                        "type": "m.room.history_visibility",
                        "state_key": "",
                        "content": { "history_visibility": visibility },
                    }],
                }),
            )
            .await;
        let tag = format!("giraffe{visibility}");
        server
            .send_text(&alice, &room, &format!("{tag} before the invite"))
            .await;
        server.invite(&alice, &room, &bob).await;
        server
            .send_text(&alice, &room, &format!("{tag} after the invite"))
            .await;
        server.join(&bob, &room).await;
        server
            .send_text(&alice, &room, &format!("{tag} after the join"))
            .await;
        wait_for(&server, &alice, &tag, 3).await;
        let answer = search_until(
            &server,
            &bob,
            json!({ "search_term": tag, "order_by": "recent" }),
            |f| !f.is_empty(),
        )
        .await;
        let mut got: Vec<String> = found(&answer)
            .into_iter()
            .map(|b| b.trim_start_matches(&format!("{tag} ")).to_owned())
            .collect();
        got.reverse();
        assert_eq!(got, expected, "{visibility}: {answer}");
    }
}

#[tokio::test]
async fn redacted_events_are_not_found() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let secret = server
        .send_text(&alice, &room, "password hunter2 oops")
        .await;
    server.send_text(&alice, &room, "hunter2 is a meme").await;
    wait_for(&server, &alice, "hunter2", 2).await;
    let (status, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/r1",
                crate::common::enc(&room),
                crate::common::enc(&secret)
            ),
            &alice.token,
            json!({ "reason": "leaked" }),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let answer = wait_for(&server, &alice, "hunter2", 1).await;
    assert_eq!(found(&answer), ["hunter2 is a meme"]);
}

/// Many matches in rooms the user is not in must not crowd out the one in a room they are
/// in: hits are kept to the user's rooms as they are collected, not after.
#[tokio::test]
async fn matches_in_other_rooms_do_not_crowd_out_the_users_own() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let shared = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.join(&bob, &shared).await;
    let other = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server
        .send_text(&alice, &shared, "walrus in the shared room")
        .await;
    for i in 0..40 {
        server
            .send_text(&alice, &other, &format!("walrus number {i}"))
            .await;
    }
    wait_for(&server, &alice, "walrus number 39", 1).await;
    let answer = room_events(
        &server,
        &bob,
        json!({ "search_term": "walrus", "order_by": "recent", "filter": { "limit": 1 } }),
    )
    .await;
    assert_eq!(found(&answer), ["walrus in the shared room"], "{answer}");
    assert_eq!(answer["count"], 1, "{answer}");
}
