//! Sending, reading and redacting events: transaction ids, redactions, `/messages`,
//! `/context`, `/event` and history visibility.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestServer, User, bodies, enc, errcode, next_batch, timeline};

fn chunk(page: &Value) -> Vec<&Value> {
    page["chunk"].as_array().expect("chunk").iter().collect()
}

/// `content.body` of every event that has one (messages and the test's custom events).
fn labels(events: &[&Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(ToOwned::to_owned))
        .collect()
}

async fn get_event(server: &TestServer, user: &User, room: &str, id: &str) -> (StatusCode, Value) {
    server
        .get(
            &format!("/_matrix/client/v3/rooms/{}/event/{}", enc(room), enc(id)),
            &user.token,
        )
        .await
}

async fn messages_ok(server: &TestServer, user: &User, room: &str, query: &str) -> Value {
    let (status, page) = server.messages(user, room, query).await;
    assert_eq!(status, StatusCode::OK, "{query}: {page}");
    page
}

/// Every event of `room` that `user` can page back to, oldest first.
async fn all_messages(server: &TestServer, user: &User, room: &str) -> Vec<String> {
    let page = messages_ok(server, user, room, "dir=b&limit=100").await;
    let mut out = bodies(&chunk(&page));
    out.reverse();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_are_idempotent_per_device_and_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let other_room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.join(&bob, &room).await;

    let send = |user: &User, room: &str, body: &str| {
        let (user, room, body) = (user.clone(), room.to_owned(), body.to_owned());
        let server = &server;
        async move {
            let (status, response) = server
                .send_event(
                    &user,
                    &room,
                    "m.room.message",
                    "txn-1",
                    json!({ "msgtype": "m.text", "body": body }),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{response}");
            response["event_id"].as_str().unwrap().to_owned()
        }
    };
    let first = send(&alice, &room, "once").await;
    // A retry (even with another body) is the same request: same event, nothing new.
    assert_eq!(send(&alice, &room, "once").await, first);
    assert_eq!(send(&alice, &room, "retry").await, first);
    // Another device of the same user: a new request.
    let alice2 = server.login(&alice).await;
    let second = send(&alice2, &room, "from device 2").await;
    assert_ne!(second, first);
    // The same device in another room: a new request too.
    let third = send(&alice, &other_room, "other room").await;
    assert_ne!(third, first);
    assert_eq!(
        all_messages(&server, &alice, &other_room).await,
        ["other room"]
    );

    let bob_sync = server.sync(&bob, None, 0).await;
    assert_eq!(
        bodies(&timeline(&bob_sync, &room)),
        ["once", "from device 2"]
    );

    // `unsigned.transaction_id` only for the device that sent the event.
    let txn_of = |sync: &Value, id: &str| -> Option<String> {
        timeline(sync, &room)
            .iter()
            .find(|e| e["event_id"] == id)
            .unwrap_or_else(|| panic!("{id} not in {sync}"))["unsigned"]["transaction_id"]
            .as_str()
            .map(ToOwned::to_owned)
    };
    let sync1 = server.sync(&alice, None, 0).await;
    let sync2 = server.sync(&alice2, None, 0).await;
    assert_eq!(txn_of(&sync1, &first).as_deref(), Some("txn-1"));
    assert_eq!(txn_of(&sync1, &second), None);
    assert_eq!(txn_of(&sync2, &second).as_deref(), Some("txn-1"));
    assert_eq!(txn_of(&sync2, &first), None);
    assert_eq!(txn_of(&bob_sync, &first), None);
    assert_eq!(txn_of(&bob_sync, &second), None);

    let (status, event) = get_event(&server, &alice, &room, &first).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(event["unsigned"]["transaction_id"], "txn-1", "{event}");
    let (_, event) = get_event(&server, &alice2, &room, &first).await;
    assert!(event["unsigned"].get("transaction_id").is_none(), "{event}");
    let page = messages_ok(&server, &alice, &room, "dir=b&limit=5").await;
    let ours = chunk(&page)
        .into_iter()
        .find(|e| e["event_id"] == first.as_str())
        .unwrap();
    assert_eq!(ours["unsigned"]["transaction_id"], "txn-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_of_a_send_make_one_event() {
    // A client that times out and retries while the first request is still running.
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    // Open the connections first, so the sends arrive together.
    futures::future::join_all(
        (0..8).map(|_| server.get("/_matrix/client/v3/account/whoami", &alice.token)),
    )
    .await;
    // A big event takes a while to build, which is when a retry can slip in; a few rounds
    // make the race all but certain to show.
    let padding: Vec<String> = (0..1500).map(|i| format!("item {i}")).collect();
    let mut expected = Vec::new();
    for round in 0..5 {
        let body = format!("only once {round}");
        let txn = format!("racing-{round}");
        let sends = (0..8).map(|_| {
            server.send_event(
                &alice,
                &room,
                "m.room.message",
                &txn,
                json!({ "msgtype": "m.text", "body": body, "padding": padding }),
            )
        });
        let responses = futures::future::join_all(sends).await;
        let mut ids: Vec<String> = responses
            .iter()
            .map(|(status, body)| {
                assert_eq!(*status, StatusCode::OK, "{body}");
                body["event_id"].as_str().unwrap().to_owned()
            })
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 1, "round {round}: {ids:?}");
        expected.push(body);
    }
    assert_eq!(all_messages(&server, &alice, &room).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redaction_uses_its_own_transaction_scope() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let (status, sent) = server
        .send_event(
            &alice,
            &room,
            "m.room.message",
            "1",
            json!({ "msgtype": "m.text", "body": "to be redacted" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let target = sent["event_id"].as_str().unwrap();
    // The same txnId on the redact endpoint is another endpoint: a real redaction.
    let (status, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/1",
                enc(&room),
                enc(target)
            ),
            &alice.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_ne!(body["event_id"], target);
    let (_, event) = get_event(&server, &alice, &room, target).await;
    assert_eq!(event["content"], json!({}), "{event}");
}

async fn redact(
    server: &TestServer,
    user: &User,
    room: &str,
    target: &str,
    body: Value,
) -> (StatusCode, Value) {
    server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/r{}",
                enc(room),
                enc(target),
                crate::common::rand_u64()
            ),
            &user.token,
            body,
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redactions_strip_content_for_everyone() {
    for version in ["10", "11"] {
        let server = TestServer::start().await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        let room = server
            .create_room(
                &alice,
                json!({ "preset": "public_chat", "room_version": version }),
            )
            .await;
        server.join(&bob, &room).await;
        server.join(&carol, &room).await;
        let secret = server.send_text(&alice, &room, "secret").await;
        let oops = server.send_text(&bob, &room, "oops").await;
        let carol_since = next_batch(&server.sync(&carol, None, 0).await);

        // Bob may not redact alice's event, only his own.
        let (status, body) = redact(&server, &bob, &room, &secret, json!({})).await;
        assert_eq!(
            (status, errcode(&body)),
            (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")),
            "v{version}: {body}"
        );
        let (_, event) = get_event(&server, &carol, &room, &secret).await;
        assert_eq!(event["content"]["body"], "secret", "v{version}");
        let (status, body) = redact(&server, &bob, &room, &oops, json!({})).await;
        assert_eq!(status, StatusCode::OK, "v{version}: {body}");
        let oops_redaction = body["event_id"].as_str().unwrap().to_owned();
        // A moderator may redact anyone's.
        let (status, body) = redact(
            &server,
            &alice,
            &room,
            &secret,
            json!({ "reason": "spoiler" }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "v{version}: {body}");
        let secret_redaction = body["event_id"].as_str().unwrap().to_owned();

        // Carol's incremental sync delivers both redactions.
        let sync = server.sync(&carol, Some(&carol_since), 0).await;
        let events = timeline(&sync, &room);
        let redactions: Vec<_> = events
            .iter()
            .filter(|e| e["type"] == "m.room.redaction")
            .collect();
        assert_eq!(redactions.len(), 2, "v{version}: {sync}");
        let redacts = |e: &Value| {
            e["redacts"]
                .as_str()
                .or(e["content"]["redacts"].as_str())
                .map(ToOwned::to_owned)
        };
        assert_eq!(redacts(redactions[0]).as_deref(), Some(oops.as_str()));
        assert_eq!(redacts(redactions[1]).as_deref(), Some(secret.as_str()));
        assert_eq!(redactions[1]["content"]["reason"], "spoiler");

        // Everywhere the event is read again, its content is gone.
        let check = |event: &Value, redaction: &str, what: &str| {
            assert_eq!(event["content"], json!({}), "v{version} {what}: {event}");
            assert_eq!(event["type"], "m.room.message", "v{version} {what}");
            assert_eq!(
                event["unsigned"]["redacted_because"]["event_id"], redaction,
                "v{version} {what}: {event}"
            );
        };
        for user in [&alice, &bob, &carol] {
            let sync = server.sync(user, None, 0).await;
            let events = timeline(&sync, &room);
            let find = |id: &str| {
                *events
                    .iter()
                    .find(|e| e["event_id"] == id)
                    .unwrap_or_else(|| panic!("{id} missing: {sync}"))
            };
            check(find(&secret), &secret_redaction, "sync");
            check(find(&oops), &oops_redaction, "sync");

            let (status, event) = get_event(&server, user, &room, &secret).await;
            assert_eq!(status, StatusCode::OK);
            check(&event, &secret_redaction, "/event");

            let page = messages_ok(&server, user, &room, "dir=b&limit=10").await;
            let event = chunk(&page)
                .into_iter()
                .find(|e| e["event_id"] == secret.as_str())
                .unwrap();
            check(event, &secret_redaction, "/messages");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_another_room_cannot_be_redacted() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.join(&bob, &room).await;
    let target = server.send_text(&alice, &room, "keep me").await;

    // Bob is all-powerful in his own room, but alice's event is not in it.
    let own_room = server.create_room(&bob, json!({})).await;
    let (status, body) = redact(&server, &bob, &own_room, &target, json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, event) = get_event(&server, &alice, &room, &target).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(event["content"]["body"], "keep me", "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_paginate_both_ways_with_tokens_and_filters() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.join(&bob, &room).await;
    let t0 = next_batch(&server.sync(&alice, None, 0).await);

    let plan = [
        ("alice", "m.room.message", "m0"),
        ("bob", "m.room.message", "m1"),
        ("alice", "m.room.message", "m2"),
        ("alice", "com.example.ping", "p3"),
        ("bob", "m.room.message", "m4"),
        ("alice", "m.room.message", "m5"),
        ("bob", "m.room.message", "m6"),
        ("alice", "com.example.ping", "p7"),
        ("alice", "m.room.message", "m8"),
        ("bob", "m.room.message", "m9"),
    ];
    let mut t_mid = String::new();
    for (i, (who, kind, label)) in plan.iter().enumerate() {
        let user = if *who == "alice" { &alice } else { &bob };
        let (status, body) = server
            .send_event(
                user,
                &room,
                kind,
                &format!("p{i}"),
                json!({ "msgtype": "m.text", "body": label }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if i == 4 {
            t_mid = next_batch(&server.sync(&alice, None, 0).await);
        }
    }
    let t1 = next_batch(&server.sync(&alice, None, 0).await);
    let all: Vec<&str> = plan.iter().map(|(_, _, l)| *l).collect();
    let mut all_rev = all.clone();
    all_rev.reverse();

    // Backwards in pages of 4.
    let page = messages_ok(&server, &bob, &room, &format!("dir=b&from={t1}&limit=4")).await;
    assert_eq!(labels(&chunk(&page)), ["m9", "m8", "p7", "m6"]);
    assert_eq!(page["start"], t1.as_str());
    let end = page["end"].as_str().expect("more to come").to_owned();
    let page = messages_ok(&server, &bob, &room, &format!("dir=b&from={end}&limit=4")).await;
    assert_eq!(labels(&chunk(&page)), ["m5", "m4", "p3", "m2"]);
    // ...bounded by `to`.
    let page = messages_ok(
        &server,
        &bob,
        &room,
        &format!("dir=b&from={t1}&to={t0}&limit=100"),
    )
    .await;
    assert_eq!(chunk(&page).len(), 10, "{page}");
    assert_eq!(labels(&chunk(&page)), all_rev);

    // Forwards, following `end` until nothing is left.
    let mut from = t0.clone();
    let mut forward = Vec::new();
    for _ in 0..10 {
        let page = messages_ok(&server, &bob, &room, &format!("dir=f&from={from}&limit=3")).await;
        let events = chunk(&page);
        if events.is_empty() {
            break;
        }
        assert!(events.len() <= 3);
        forward.extend(labels(&events));
        from = page["end"].as_str().expect("end").to_owned();
    }
    assert_eq!(forward, all);
    let page = messages_ok(
        &server,
        &bob,
        &room,
        &format!("dir=f&from={t0}&to={t_mid}&limit=100"),
    )
    .await;
    assert_eq!(labels(&chunk(&page)), ["m0", "m1", "m2", "p3", "m4"]);

    // Room event filters; filtered-out events do not count towards the limit.
    let filtered = |filter: Value, limit: u32| {
        let query = format!(
            "dir=b&from={t1}&to={t0}&limit={limit}&filter={}",
            enc(&filter.to_string())
        );
        let (server, bob, room) = (&server, &bob, &room);
        async move {
            let page = messages_ok(server, bob, room, &query).await;
            labels(&chunk(&page))
        }
    };
    assert_eq!(
        filtered(json!({ "types": ["m.room.message"] }), 100).await,
        ["m9", "m8", "m6", "m5", "m4", "m2", "m1", "m0"]
    );
    assert_eq!(
        filtered(json!({ "types": ["m.room.message"] }), 3).await,
        ["m9", "m8", "m6"]
    );
    assert_eq!(
        filtered(json!({ "not_types": ["m.room.message"] }), 100).await,
        ["p7", "p3"]
    );
    assert_eq!(
        filtered(json!({ "types": ["com.example.*"] }), 100).await,
        ["p7", "p3"]
    );
    assert_eq!(
        filtered(json!({ "senders": [bob.user_id] }), 100).await,
        ["m9", "m6", "m4", "m1"]
    );
    assert_eq!(
        filtered(
            json!({ "senders": [alice.user_id], "not_types": ["com.example.ping"] }),
            100
        )
        .await,
        ["m8", "m5", "m2", "m0"]
    );

    // Paging back to the creation of the room ends without an `end` token.
    let page = messages_ok(&server, &bob, &room, "dir=b&limit=1000").await;
    assert!(page.get("end").is_none(), "{page}");
    assert_eq!(chunk(&page).last().unwrap()["type"], "m.room.create");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_surrounds_an_event_with_usable_tokens() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let outsider = server.register("outsider").await;
    let room = server
        .create_room(&alice, json!({ "preset": "private_chat", "name": "ctx" }))
        .await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(server.send_text(&alice, &room, &format!("c{i}")).await);
    }
    let (status, ctx) = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/context/{}?limit=4",
                enc(&room),
                enc(&ids[5])
            ),
            &alice.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ctx}");
    assert_eq!(ctx["event"]["event_id"], ids[5].as_str());
    let before: Vec<&Value> = ctx["events_before"].as_array().unwrap().iter().collect();
    let after: Vec<&Value> = ctx["events_after"].as_array().unwrap().iter().collect();
    // events_before is newest first.
    assert_eq!(labels(&before), ["c4", "c3"]);
    assert_eq!(labels(&after), ["c6", "c7"]);
    assert!(
        ctx["state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "ctx"),
        "{ctx}"
    );

    let start = ctx["start"].as_str().unwrap();
    let page = messages_ok(
        &server,
        &alice,
        &room,
        &format!("dir=b&from={start}&limit=2"),
    )
    .await;
    assert_eq!(labels(&chunk(&page)), ["c2", "c1"]);
    let end = ctx["end"].as_str().unwrap();
    let page = messages_ok(&server, &alice, &room, &format!("dir=f&from={end}&limit=2")).await;
    assert_eq!(labels(&chunk(&page)), ["c8", "c9"]);

    let (status, _) = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/context/{}",
                enc(&room),
                enc("$nope")
            ),
            &alice.token,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/context/{}",
                enc(&room),
                enc(&ids[5])
            ),
            &outsider.token,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_event_returns_the_event_to_those_who_may_see_it() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let outsider = server.register("outsider").await;
    let room = server.create_room(&alice, json!({})).await;
    let id = server.send_text(&alice, &room, "hello").await;
    let (status, event) = get_event(&server, &alice, &room, &id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            &event["event_id"],
            &event["room_id"],
            &event["sender"],
            &event["type"],
            &event["content"]["body"]
        ),
        (
            &json!(id),
            &json!(room),
            &json!(alice.user_id),
            &json!("m.room.message"),
            &json!("hello")
        )
    );
    let (status, body) = get_event(&server, &outsider, &room, &id).await;
    assert_eq!(
        (status, errcode(&body)),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND")),
        "{body}"
    );
    let (status, _) = get_event(&server, &alice, &room, "$unknown").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_history_is_hidden_from_later_members() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(
            &alice,
            json!({
                "preset": "public_chat",
                "initial_state": [ { "type": "m.room.history_visibility", "content": { "history_visibility": "joined" } } ],
            }),
        )
        .await;
    let before = server.send_text(&alice, &room, "before").await;
    server.join(&bob, &room).await;
    server.send_text(&alice, &room, "after").await;

    assert_eq!(all_messages(&server, &bob, &room).await, ["after"]);
    let sync = server.sync(&bob, None, 0).await;
    assert_eq!(bodies(&timeline(&sync, &room)), ["after"], "{sync}");
    let (status, _) = get_event(&server, &bob, &room, &before).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/context/{}",
                enc(&room),
                enc(&before)
            ),
            &bob.token,
        )
        .await;
    assert!(
        matches!(status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND),
        "{status}"
    );
    // Alice, who was there, sees both.
    assert_eq!(
        all_messages(&server, &alice, &room).await,
        ["before", "after"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_history_is_shown_to_later_members() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let before = server.send_text(&alice, &room, "before").await;
    server.join(&bob, &room).await;
    server.send_text(&alice, &room, "after").await;

    assert_eq!(
        all_messages(&server, &bob, &room).await,
        ["before", "after"]
    );
    let sync = server.sync(&bob, None, 0).await;
    assert_eq!(bodies(&timeline(&sync, &room)), ["before", "after"]);
    let (status, event) = get_event(&server, &bob, &room, &before).await;
    assert_eq!(
        (status, &event["content"]["body"]),
        (StatusCode::OK, &json!("before"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn world_readable_history_is_open_to_everyone() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let outsider = server.register("outsider").await;
    let room = server
        .create_room(
            &alice,
            json!({
                "preset": "private_chat",
                "initial_state": [ { "type": "m.room.history_visibility", "content": { "history_visibility": "world_readable" } } ],
            }),
        )
        .await;
    let id = server.send_text(&alice, &room, "for all to read").await;
    assert_eq!(
        all_messages(&server, &outsider, &room).await,
        ["for all to read"]
    );
    let (status, event) = get_event(&server, &outsider, &room, &id).await;
    assert_eq!(
        (status, &event["content"]["body"]),
        (StatusCode::OK, &json!("for all to read"))
    );
    // Reading is not joining: sending is still refused.
    let (status, _) = server
        .send_event(
            &outsider,
            &room,
            "m.room.message",
            "w1",
            json!({ "msgtype": "m.text", "body": "hi" }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invited_history_starts_at_the_invite() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(
            &alice,
            json!({
                "preset": "private_chat",
                "initial_state": [ { "type": "m.room.history_visibility", "content": { "history_visibility": "invited" } } ],
            }),
        )
        .await;
    server.send_text(&alice, &room, "before the invite").await;
    server.invite(&alice, &room, &bob).await;
    server.send_text(&alice, &room, "while invited").await;
    server.join(&bob, &room).await;
    server.send_text(&alice, &room, "after").await;
    assert_eq!(
        all_messages(&server, &bob, &room).await,
        ["while invited", "after"]
    );
    let sync = server.sync(&bob, None, 0).await;
    assert_eq!(
        bodies(&timeline(&sync, &room)),
        ["while invited", "after"],
        "{sync}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn left_users_do_not_see_what_came_after() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.join(&bob, &room).await;
    let while_here = server.send_text(&alice, &room, "while here").await;
    let t_here = next_batch(&server.sync(&bob, None, 0).await);
    server.leave(&bob, &room).await;
    let after = server.send_text(&alice, &room, "after bob left").await;

    assert_eq!(all_messages(&server, &bob, &room).await, ["while here"]);
    let page = messages_ok(
        &server,
        &bob,
        &room,
        &format!("dir=f&from={t_here}&limit=10"),
    )
    .await;
    assert!(labels(&chunk(&page)).is_empty(), "{page}");
    let (status, _) = get_event(&server, &bob, &room, &after).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get_event(&server, &bob, &room, &while_here).await;
    assert_eq!(status, StatusCode::OK);
    let (status, ctx) = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/context/{}?limit=10",
                enc(&room),
                enc(&while_here)
            ),
            &bob.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ctx}");
    let after_events: Vec<&Value> = ctx["events_after"].as_array().unwrap().iter().collect();
    assert!(labels(&after_events).is_empty(), "{ctx}");

    let sync = server
        .sync_with(
            &bob,
            None,
            &format!("filter={}", enc(r#"{"room":{"include_leave":true}}"#)),
        )
        .await;
    let events: Vec<&Value> = sync["rooms"]["leave"][&room]["timeline"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no leave section: {sync}"))
        .iter()
        .collect();
    assert_eq!(bodies(&events), ["while here"]);
    assert_eq!(events.last().unwrap()["content"]["membership"], "leave");
}
