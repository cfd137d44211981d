//! Rooms shared by two and three real servers on loopback: joins by id and by alias,
//! messages both ways, invites, leaves and bans across servers, history through backfill,
//! a server that was down catching up, and concurrent state changes resolving alike.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{TestServer, User, bodies, enc, join_via, next_batch, timeline};

async fn federated() -> TestServer {
    TestServer::start_federated_with(|c| {
        // A peer that was down is retried quickly in tests.
        c.federation_retry_base_ms = 50;
        c.federation_retry_max_ms = 400;
    })
    .await
}

/// Long-polls `user`'s sync until `done` finds what it waits for in the accumulated
/// timeline of `room`; a wait with a deadline, not a timing assertion.
async fn wait_for_timeline(
    server: &TestServer,
    user: &User,
    room: &str,
    what: &str,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let started = Instant::now();
    let mut since: Option<String> = None;
    let mut seen: Vec<String> = Vec::new();
    loop {
        let sync = server.sync(user, since.as_deref(), 1000).await;
        seen.extend(bodies(&timeline(&sync, room)));
        since = Some(next_batch(&sync));
        if done(&seen) {
            return seen;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}: timed out waiting for {what}; saw {seen:?}",
            user.user_id
        );
    }
}

async fn joined_members(server: &TestServer, user: &User, room: &str) -> Vec<String> {
    let (status, body) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{}/joined_members", enc(room)),
            &user.token,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut members: Vec<String> = body["joined"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    members.sort();
    members
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_by_alias_and_talk_both_ways() {
    let a = federated().await;
    let b = federated().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room = a
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "room_alias_name": "lobby", "name": "Lobby" }),
        )
        .await;
    a.send_text(&alice, &room, "before bob").await;

    // Bob's server resolves the alias on alice's server, then joins through it.
    let alias = format!("#lobby:{}", a.server_name);
    let (status, body) = b
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&alias)),
            &bob.token,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room_id"], room);

    // Both servers agree on who is in the room, and bob's server knows the room's state.
    let mut expected = vec![alice.user_id.clone(), bob.user_id.clone()];
    expected.sort();
    assert_eq!(joined_members(&b, &bob, &room).await, expected);
    wait_until("bob's join on alice's server", || async {
        joined_members(&a, &alice, &room).await == expected
    })
    .await;
    assert_eq!(
        b.state_content(&bob, &room, "m.room.name").await["name"],
        "Lobby"
    );

    b.send_text(&bob, &room, "hello from b").await;
    wait_for_timeline(&a, &alice, &room, "bob's message", |seen| {
        seen.iter().any(|s| s == "hello from b")
    })
    .await;
    a.send_text(&alice, &room, "hello from a").await;
    wait_for_timeline(&b, &bob, &room, "alice's message", |seen| {
        seen.iter().any(|s| s == "hello from a")
    })
    .await;

    // History from before the join reaches bob's server through backfill.
    let (status, page) = b.messages(&bob, &room, "dir=b&limit=50").await;
    assert_eq!(status, 200, "{page}");
    let texts: Vec<&str> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert!(texts.contains(&"before bob"), "{texts:?}");
    let types: Vec<&str> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(types.last(), Some(&"m.room.create"), "{types:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_across_servers_then_leave_and_ban() {
    let a = federated().await;
    let b = federated().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room = a
        .create_room(&alice, json!({ "preset": "private_chat" }))
        .await;
    let (status, body) = a
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            &alice.token,
            json!({ "user_id": bob.user_id }),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // The invite reaches bob's sync with the room's stripped state.
    let started = Instant::now();
    let mut since = None;
    loop {
        let sync = b.sync(&bob, since.as_deref(), 1000).await;
        if let Some(invite) = sync["rooms"]["invite"].get(&room) {
            let events = invite["invite_state"]["events"].as_array().unwrap();
            assert!(
                events.iter().any(|e| e["type"] == "m.room.create"),
                "{invite}"
            );
            break;
        }
        since = Some(next_batch(&sync));
        assert!(started.elapsed() < Duration::from_secs(30), "no invite");
    }

    // A private room: bob can join only because he is invited.
    b.join(&bob, &room).await;
    a.send_text(&alice, &room, "welcome").await;
    wait_for_timeline(&b, &bob, &room, "welcome", |seen| {
        seen.iter().any(|s| s == "welcome")
    })
    .await;

    // Bob leaves; alice's server sees it.
    b.leave(&bob, &room).await;
    wait_until("bob's leave on a", || async {
        joined_members(&a, &alice, &room).await == vec![alice.user_id.clone()]
    })
    .await;

    // Alice bans bob: he cannot come back, from his own server either.
    let (status, body) = a
        .post(
            &format!("/_matrix/client/v3/rooms/{}/ban", enc(&room)),
            &alice.token,
            json!({ "user_id": bob.user_id, "reason": "bye" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = join_via(&b, &bob, &room, &a.server_name).await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_catches_up_after_restart() {
    let a = federated().await;
    let b = federated().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room = a
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let (status, body) = join_via(&b, &bob, &room, &a.server_name).await;
    assert_eq!(status, 200, "{body}");
    wait_until("bob joined on a", || async {
        joined_members(&a, &alice, &room).await.len() == 2
    })
    .await;

    // Bob's server goes away; alice keeps talking.
    let b = b
        .restart_after(|| async {
            for n in 0..5 {
                a.send_text(&alice, &room, &format!("while away {n}")).await;
            }
            // Let the sender fail against the closed port at least once.
            tokio::time::sleep(Duration::from_millis(300)).await;
        })
        .await;
    let bob = b.login(&bob).await;
    let seen = wait_for_timeline(&b, &bob, &room, "the messages sent while away", |seen| {
        (0..5).all(|n| seen.iter().any(|s| *s == format!("while away {n}")))
    })
    .await;
    let order: Vec<&String> = seen
        .iter()
        .filter(|s| s.starts_with("while away"))
        .collect();
    assert_eq!(
        order,
        (0..5)
            .map(|n| format!("while away {n}"))
            .collect::<Vec<_>>()
            .iter()
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_concurrent_state_resolves_alike() {
    let a = federated().await;
    let b = federated().await;
    let c = federated().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let carol = c.register("carol").await;
    let room = a
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    // Bob and carol may change the topic.
    let (status, body) = a
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.power_levels/",
                enc(&room)
            ),
            &alice.token,
            json!({
                "users": { bob.user_id.clone(): 50, carol.user_id.clone(): 50 },
                "events": { "m.room.topic": 50 },
                "state_default": 50,
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(join_via(&b, &bob, &room, &a.server_name).await.0, 200);
    assert_eq!(join_via(&c, &carol, &room, &a.server_name).await.0, 200);
    wait_until("everyone joined everywhere", || async {
        joined_members(&a, &alice, &room).await.len() == 3
            && joined_members(&b, &bob, &room).await.len() == 3
            && joined_members(&c, &carol, &room).await.len() == 3
    })
    .await;

    // Bob and carol set the topic at the same time on their own servers.
    let path = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.topic/",
        enc(&room)
    );
    let (r1, r2) = tokio::join!(
        b.put(&path, &bob.token, json!({ "topic": "from bob" })),
        c.put(&path, &carol.token, json!({ "topic": "from carol" })),
    );
    assert_eq!(r1.0, 200, "{}", r1.1);
    assert_eq!(r2.0, 200, "{}", r2.1);
    // A message from each server afterwards joins the branches everywhere.
    a.send_text(&alice, &room, "after").await;
    wait_until("the topic to agree on all three servers", || async {
        let ta = a.state_content(&alice, &room, "m.room.topic").await;
        let tb = b.state_content(&bob, &room, "m.room.topic").await;
        let tc = c.state_content(&carol, &room, "m.room.topic").await;
        ta.get("topic").is_some() && ta == tb && tb == tc
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_aliases_and_directories_of_other_servers() {
    let a = federated().await;
    let b = federated().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let (status, body) = a
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&alice.user_id)
            ),
            &alice.token,
            json!({ "displayname": "Alice A" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let room = a
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "room_alias_name": "hall", "visibility": "public", "name": "Hall" }),
        )
        .await;

    let (status, profile) = b
        .get(
            &format!("/_matrix/client/v3/profile/{}", enc(&alice.user_id)),
            &bob.token,
        )
        .await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["displayname"], "Alice A");

    let alias = format!("#hall:{}", a.server_name);
    let (status, resolved) = b
        .get(
            &format!("/_matrix/client/v3/directory/room/{}", enc(&alias)),
            &bob.token,
        )
        .await;
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(resolved["room_id"], room);
    assert_eq!(resolved["servers"][0], a.server_name);
    let (status, missing) = b
        .get(
            &format!(
                "/_matrix/client/v3/directory/room/{}",
                enc(&format!("#nothing:{}", a.server_name))
            ),
            &bob.token,
        )
        .await;
    assert_eq!(status, 404, "{missing}");

    let (status, listing) = b
        .get(
            &format!(
                "/_matrix/client/v3/publicRooms?server={}",
                enc(&a.server_name)
            ),
            &bob.token,
        )
        .await;
    assert_eq!(status, 200, "{listing}");
    let chunk = listing["chunk"].as_array().unwrap();
    assert!(
        chunk
            .iter()
            .any(|r| r["room_id"] == room && r["name"] == "Hall"),
        "{listing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejecting_an_invite_from_another_server() {
    let a = federated().await;
    let b = federated().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room = a
        .create_room(&alice, json!({ "preset": "private_chat" }))
        .await;
    a.invite(&alice, &room, &bob).await;
    wait_until("the invite on b", || async {
        let sync = b.sync(&bob, None, 0).await;
        sync["rooms"]["invite"].get(&room).is_some()
    })
    .await;

    // Bob's server is not in the room: the rejection goes through alice's server.
    b.leave(&bob, &room).await;
    let sync = b.sync(&bob, None, 0).await;
    assert!(sync["rooms"]["invite"].get(&room).is_none(), "{sync}");
    wait_until("bob's rejection on a", || async {
        let (_, state) = a
            .get(
                &format!(
                    "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
                    enc(&room),
                    enc(&bob.user_id)
                ),
                &alice.token,
            )
            .await;
        state["membership"] == "leave"
    })
    .await;
}
