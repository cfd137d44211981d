//! Relations and threads: listing what relates to an event, with filters, pagination,
//! recursion and history visibility; and the thread list of a room.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestServer, User, enc, rand_u64};

async fn send(server: &TestServer, user: &User, room: &str, kind: &str, content: Value) -> String {
    let (status, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/{kind}/t{}",
                enc(room),
                rand_u64()
            ),
            &user.token,
            content,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["event_id"].as_str().unwrap().to_owned()
}

async fn thread_reply(
    server: &TestServer,
    user: &User,
    room: &str,
    root: &str,
    text: &str,
) -> String {
    send(
        server,
        user,
        room,
        "m.room.message",
        json!({
            "msgtype": "m.text",
            "body": text,
            "m.relates_to": { "rel_type": "m.thread", "event_id": root },
        }),
    )
    .await
}

async fn react(server: &TestServer, user: &User, room: &str, target: &str, key: &str) -> String {
    send(
        server,
        user,
        room,
        "m.reaction",
        json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": target, "key": key } }),
    )
    .await
}

async fn relations(
    server: &TestServer,
    user: &User,
    room: &str,
    rest: &str,
) -> (StatusCode, Value) {
    server
        .get(
            &format!("/_matrix/client/v1/rooms/{}/relations/{rest}", enc(room)),
            &user.token,
        )
        .await
}

async fn threads(server: &TestServer, user: &User, room: &str, query: &str) -> (StatusCode, Value) {
    server
        .get(
            &format!("/_matrix/client/v1/rooms/{}/threads{query}", enc(room)),
            &user.token,
        )
        .await
}

fn ids(body: &Value, key: &str) -> Vec<String> {
    body[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {body}"))
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relations_are_filtered_paginated_and_recursed() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let root = server.send_text(&alice, &room, "root").await;
    let reply1 = thread_reply(&server, &alice, &room, &root, "one").await;
    let reaction = react(&server, &alice, &room, &root, "👍").await;
    let edit = send(
        &server,
        &alice,
        &room,
        "m.room.message",
        json!({
            "msgtype": "m.text",
            "body": "* root",
            "m.new_content": { "msgtype": "m.text", "body": "root" },
            "m.relates_to": { "rel_type": "m.replace", "event_id": root },
        }),
    )
    .await;
    let reply2 = thread_reply(&server, &alice, &room, &root, "two").await;
    // Relates to a reply, so only to the root indirectly.
    let nested = react(&server, &alice, &room, &reply1, "🎉").await;
    server.send_text(&alice, &room, "unrelated").await;

    let root_enc = enc(&root);
    let (status, body) = relations(&server, &alice, &room, &root_enc).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        ids(&body, "chunk"),
        [
            reply2.as_str(),
            edit.as_str(),
            reaction.as_str(),
            reply1.as_str()
        ]
    );
    assert!(body.get("recursion_depth").is_none(), "{body}");
    assert!(body.get("next_batch").is_none(), "{body}");

    let (_, body) = relations(&server, &alice, &room, &format!("{root_enc}?dir=f")).await;
    assert_eq!(
        ids(&body, "chunk"),
        [
            reply1.as_str(),
            reaction.as_str(),
            edit.as_str(),
            reply2.as_str()
        ]
    );
    let (_, body) = relations(&server, &alice, &room, &format!("{root_enc}/m.thread")).await;
    assert_eq!(ids(&body, "chunk"), [reply2.as_str(), reply1.as_str()]);
    let (_, body) = relations(
        &server,
        &alice,
        &room,
        &format!("{root_enc}/m.annotation/m.reaction"),
    )
    .await;
    assert_eq!(ids(&body, "chunk"), [reaction.as_str()]);
    let (_, body) = relations(
        &server,
        &alice,
        &room,
        &format!("{root_enc}/m.thread/m.reaction"),
    )
    .await;
    assert_eq!(ids(&body, "chunk"), Vec::<String>::new());

    // Pages of one, following next_batch to the end.
    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..10 {
        let query = match &from {
            Some(f) => format!("{root_enc}?limit=1&from={f}"),
            None => format!("{root_enc}?limit=1"),
        };
        let (status, body) = relations(&server, &alice, &room, &query).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        seen.extend(ids(&body, "chunk"));
        match body["next_batch"].as_str() {
            Some(next) => from = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            reply2.as_str(),
            edit.as_str(),
            reaction.as_str(),
            reply1.as_str()
        ]
    );

    let (_, body) = relations(&server, &alice, &room, &format!("{root_enc}?recurse=true")).await;
    assert_eq!(
        ids(&body, "chunk"),
        [
            nested.as_str(),
            reply2.as_str(),
            edit.as_str(),
            reaction.as_str(),
            reply1.as_str()
        ]
    );
    assert_eq!(body["recursion_depth"], 3);
    // Filters apply to what is found at any depth.
    let (_, body) = relations(
        &server,
        &alice,
        &room,
        &format!("{root_enc}/m.annotation?recurse=true"),
    )
    .await;
    assert_eq!(ids(&body, "chunk"), [nested.as_str(), reaction.as_str()]);

    // A redacted relation is a relation no more.
    let (status, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/r{}",
                enc(&room),
                enc(&reaction),
                rand_u64()
            ),
            &alice.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = relations(&server, &alice, &room, &format!("{root_enc}/m.annotation")).await;
    assert_eq!(ids(&body, "chunk"), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relations_respect_membership_and_history_visibility() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(
            &alice,
            json!({
                "preset": "public_chat",
                "initial_state": [{
                    "type": "m.room.history_visibility",
                    "content": { "history_visibility": "joined" },
                }],
            }),
        )
        .await;
    let old_root = server.send_text(&alice, &room, "before bob").await;
    thread_reply(&server, &alice, &room, &old_root, "old reply").await;

    let (status, body) = relations(&server, &bob, &room, &enc(&old_root)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");

    server.join(&bob, &room).await;
    // Bob may not see the root from before he joined, so it does not exist for him.
    let (status, body) = relations(&server, &bob, &room, &enc(&old_root)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["errcode"], "M_NOT_FOUND");

    let root = server.send_text(&alice, &room, "after bob").await;
    let reply = thread_reply(&server, &alice, &room, &root, "new reply").await;
    let (status, body) = relations(&server, &bob, &room, &enc(&root)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ids(&body, "chunk"), [reply.as_str()]);

    let (status, body) = relations(&server, &bob, &room, &enc("$nosuchevent")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) =
        relations(&server, &bob, &room, &format!("{}?from=bogus", enc(&root))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_are_listed_by_latest_activity() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.join(&bob, &room).await;
    server.join(&carol, &room).await;

    let root1 = server.send_text(&alice, &room, "alice's topic").await;
    let root2 = server.send_text(&bob, &room, "bob's topic").await;
    server.send_text(&alice, &room, "not a thread").await;
    thread_reply(&server, &alice, &room, &root1, "a1").await;
    let c1 = thread_reply(&server, &carol, &room, &root2, "c1").await;

    let (status, body) = threads(&server, &alice, &room, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ids(&body, "chunk"), [root2.as_str(), root1.as_str()]);
    let summary = &body["chunk"][0]["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(summary["count"], 1, "{body}");
    assert_eq!(summary["latest_event"]["event_id"], c1.as_str());
    assert_eq!(summary["current_user_participated"], false);

    let (_, body) = threads(&server, &alice, &room, "?include=participated").await;
    assert_eq!(ids(&body, "chunk"), [root1.as_str()]);
    let (_, body) = threads(&server, &bob, &room, "?include=participated").await;
    assert_eq!(ids(&body, "chunk"), [root2.as_str()]);
    let (_, body) = threads(&server, &carol, &room, "?include=participated").await;
    assert_eq!(ids(&body, "chunk"), [root2.as_str()]);

    let (_, first) = threads(&server, &alice, &room, "?limit=1").await;
    assert_eq!(ids(&first, "chunk"), [root2.as_str()]);
    let next = first["next_batch"].as_str().expect("next_batch").to_owned();
    let (_, second) = threads(&server, &alice, &room, &format!("?limit=1&from={next}")).await;
    assert_eq!(ids(&second, "chunk"), [root1.as_str()]);
    assert!(second.get("next_batch").is_none(), "{second}");

    // New activity moves a thread to the top.
    let a2 = thread_reply(&server, &bob, &room, &root1, "a2").await;
    let (_, body) = threads(&server, &alice, &room, "").await;
    assert_eq!(ids(&body, "chunk"), [root1.as_str(), root2.as_str()]);
    let summary = &body["chunk"][0]["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(summary["count"], 2);
    assert_eq!(summary["latest_event"]["event_id"], a2.as_str());
    assert_eq!(summary["current_user_participated"], true);

    let outsider = server.register("dave").await;
    let (status, body) = threads(&server, &outsider, &room, "").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = threads(&server, &alice, &room, "?include=everything").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
