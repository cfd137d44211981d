//! Unread counts from push rules: messages count, mentions of the user's name or id
//! highlight, threads count apart, a read receipt clears up to its event;
//! `GET /notifications` lists the same.

use serde_json::{Value, json};

use super::{receipt, shared_room};
use crate::common::{TestServer, User, enc};

const THREADS_APART: &str = "filter=%7B%22room%22%3A%7B%22timeline%22%3A%7B%22unread_thread_notifications%22%3Atrue%7D%7D%7D";

async fn counts(server: &TestServer, user: &User, room: &str, query: &str) -> Value {
    let sync = server.sync_with(user, None, query).await;
    sync["rooms"]["join"][room].clone()
}

fn pair(room: &Value) -> (u64, u64) {
    let n = &room["unread_notifications"];
    (
        n["notification_count"]
            .as_u64()
            .expect("notification_count"),
        n["highlight_count"].as_u64().expect("highlight_count"),
    )
}

async fn send(server: &TestServer, user: &User, room: &str, content: Value) -> String {
    let txn = format!("c{}", crate::common::rand_u64());
    let (status, body) = server
        .send_event(user, room, "m.room.message", &txn, content)
        .await;
    assert_eq!(status, 200, "{body}");
    body["event_id"].as_str().expect("event_id").to_owned()
}

#[tokio::test]
async fn counts_rise_highlight_on_mentions_and_clear_on_receipts() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = shared_room(&server, &alice, &[&bob, &carol]).await;
    let (status, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&bob.user_id)
            ),
            &bob.token,
            json!({ "displayname": "Robert Tables" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    assert_eq!(pair(&counts(&server, &bob, &room, "").await), (0, 0));
    let first = server.send_text(&alice, &room, "hello everyone").await;
    assert_eq!(pair(&counts(&server, &bob, &room, "").await), (1, 0));
    server
        .send_text(&alice, &room, "is Robert Tables around?")
        .await;
    assert_eq!(pair(&counts(&server, &bob, &room, "").await), (2, 1));
    let mention = send(
        &server,
        &alice,
        &room,
        json!({ "msgtype": "m.text", "body": "ping", "m.mentions": { "user_ids": [bob.user_id] } }),
    )
    .await;
    assert_eq!(pair(&counts(&server, &bob, &room, "").await), (3, 2));
    // Carol was not mentioned; alice's own messages never count for her.
    assert_eq!(pair(&counts(&server, &carol, &room, "").await), (3, 0));
    assert_eq!(pair(&counts(&server, &alice, &room, "").await), (0, 0));

    // A thread reply counts apart when the client asks, with the rest otherwise.
    let reply = send(
        &server,
        &alice,
        &room,
        json!({ "msgtype": "m.text", "body": "in a thread",
                "m.relates_to": { "rel_type": "m.thread", "event_id": first } }),
    )
    .await;
    assert_eq!(pair(&counts(&server, &bob, &room, "").await), (4, 2));
    let apart = counts(&server, &bob, &room, THREADS_APART).await;
    assert_eq!(pair(&apart), (3, 2));
    assert_eq!(
        apart["unread_thread_notifications"][&first]["notification_count"], 1,
        "{apart}"
    );

    // Read up to the mention in the main timeline: the thread stays unread.
    let (status, body) = receipt(
        &server,
        &bob,
        &room,
        "m.read",
        &mention,
        json!({ "thread_id": "main" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let apart = counts(&server, &bob, &room, THREADS_APART).await;
    assert_eq!(pair(&apart), (0, 0));
    assert_eq!(
        apart["unread_thread_notifications"][&first]["notification_count"], 1,
        "{apart}"
    );
    let (status, body) = receipt(
        &server,
        &bob,
        &room,
        "m.read",
        &reply,
        json!({ "thread_id": first }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let apart = counts(&server, &bob, &room, THREADS_APART).await;
    assert_eq!(pair(&apart), (0, 0));
    assert!(
        apart.get("unread_thread_notifications").is_none(),
        "{apart}"
    );

    // Carol reads everything with an unthreaded (private) receipt.
    receipt(&server, &carol, &room, "m.read.private", &reply, json!({})).await;
    assert_eq!(pair(&counts(&server, &carol, &room, "").await), (0, 0));
    // A new message counts again.
    server.send_text(&alice, &room, "more").await;
    assert_eq!(pair(&counts(&server, &carol, &room, "").await), (1, 0));
}

#[tokio::test]
async fn notifications_list_pages_and_filters_highlights() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    let first = server.send_text(&alice, &room, "one").await;
    server
        .send_text(&alice, &room, &format!("two for {}", bob.user_id))
        .await;
    let third = server.send_text(&alice, &room, "three").await;
    receipt(&server, &bob, &room, "m.read", &first, json!({})).await;

    let (status, body) = server
        .get("/_matrix/client/v3/notifications", &bob.token)
        .await;
    assert_eq!(status, 200, "{body}");
    let list = body["notifications"].as_array().expect("notifications");
    let bodies: Vec<&str> = list
        .iter()
        .map(|n| n["event"]["content"]["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies[0], "three");
    assert_eq!(bodies.len(), 3, "{body}");
    assert_eq!(list[0]["event"]["event_id"], third);
    assert_eq!(list[0]["room_id"], room);
    assert_eq!(list[0]["read"], false);
    assert_eq!(list[2]["read"], true, "read up to the first");
    assert!(
        list[0]["actions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "notify"))
    );

    let (_, body) = server
        .get(
            "/_matrix/client/v3/notifications?only=highlight",
            &bob.token,
        )
        .await;
    let list = body["notifications"].as_array().expect("notifications");
    assert_eq!(list.len(), 1, "{body}");
    assert!(
        list[0]["event"]["content"]["body"]
            .as_str()
            .unwrap()
            .starts_with("two")
    );

    let (_, page) = server
        .get("/_matrix/client/v3/notifications?limit=2", &bob.token)
        .await;
    assert_eq!(page["notifications"].as_array().unwrap().len(), 2);
    let token = page["next_token"].as_str().expect("next_token");
    let (_, rest) = server
        .get(
            &format!("/_matrix/client/v3/notifications?limit=2&from={token}"),
            &bob.token,
        )
        .await;
    let rest = rest["notifications"].as_array().unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["event"]["event_id"], first);
    let (status, _) = server
        .get("/_matrix/client/v3/notifications?from=nonsense", &bob.token)
        .await;
    assert_eq!(status, 400);
}

/// Members decide shared rules once per event (`push/memo.rs`); a member whose copy of a
/// rule differs (disabled, other actions, own rules) must still get their own outcome,
/// in whichever order the members are evaluated.
#[tokio::test]
async fn members_with_different_rules_get_their_own_outcomes() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    let erin = server.register("erin").await;
    let room = shared_room(&server, &alice, &[&bob, &carol, &dave, &erin]).await;
    // bob: messages do not notify; carol: default; dave: messages highlight;
    // erin: her own content rule on "deploy" highlights.
    let (status, body) = server
        .put(
            "/_matrix/client/v3/pushrules/global/underride/.m.rule.message/enabled",
            &bob.token,
            json!({ "enabled": false }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .put(
            "/_matrix/client/v3/pushrules/global/underride/.m.rule.message/actions",
            &dave.token,
            json!({ "actions": ["notify", { "set_tweak": "highlight" }] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .put(
            "/_matrix/client/v3/pushrules/global/content/deploys",
            &erin.token,
            json!({ "pattern": "deploy", "actions": ["notify", { "set_tweak": "highlight" }] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    server.send_text(&alice, &room, "lunch?").await;
    server.send_text(&alice, &room, "deploy at noon").await;
    assert_eq!(pair(&counts(&server, &bob, &room, "").await), (0, 0));
    assert_eq!(pair(&counts(&server, &carol, &room, "").await), (2, 0));
    assert_eq!(pair(&counts(&server, &dave, &room, "").await), (2, 2));
    assert_eq!(pair(&counts(&server, &erin, &room, "").await), (2, 1));
}
