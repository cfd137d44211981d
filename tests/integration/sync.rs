//! `/sync` from the client's side: incremental delivery, limited timelines, filters, lazy
//! loading, left rooms, full state, account data, and a fresh login catching up.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestServer, User, bodies, enc, errcode, next_batch, timeline};

fn filter_query(filter: &Value) -> String {
    format!("filter={}", enc(&filter.to_string()))
}

fn joined_rooms(sync: &Value) -> BTreeSet<String> {
    sync["rooms"]["join"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn state_events<'a>(sync: &'a Value, section: &str, room: &str) -> Vec<&'a Value> {
    sync["rooms"][section][room]["state"]["events"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn member_keys(events: &[&Value]) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .filter_map(|e| e["state_key"].as_str().map(ToOwned::to_owned))
        .collect()
}

fn ids(users: &[&User]) -> BTreeSet<String> {
    users.iter().map(|u| u.user_id.clone()).collect()
}

fn services(server: &TestServer) -> &conduit::service::Services {
    &server.server.as_ref().expect("running").services
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_sync_delivers_exactly_the_new_events() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let alone = server.create_room(&alice, json!({})).await;
    server.join(&bob, &room).await;
    server.send_text(&alice, &room, "old").await;
    let since = next_batch(&server.sync(&bob, None, 0).await);

    let mut sent = Vec::new();
    for body in ["one", "two", "three"] {
        sent.push(server.send_text(&alice, &room, body).await);
    }
    server.send_text(&alice, &alone, "not for bob").await;

    let sync = server.sync(&bob, Some(&since), 0).await;
    assert_eq!(
        joined_rooms(&sync),
        BTreeSet::from([room.clone()]),
        "{sync}"
    );
    let events = timeline(&sync, &room);
    let got: Vec<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, sent, "{sync}");
    assert_eq!(
        sync["rooms"]["join"][&room]["timeline"]["limited"], false,
        "{sync}"
    );
    assert!(state_events(&sync, "join", &room).is_empty(), "{sync}");

    // Nothing new: the room is not mentioned again.
    let again = server.sync(&bob, Some(&next_batch(&sync)), 0).await;
    assert!(again["rooms"]["join"].get(&room).is_none(), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_timelines_have_a_prev_batch_to_page_back_from() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.join(&bob, &room).await;
    let since = next_batch(&server.sync(&bob, None, 0).await);
    for i in 0..8 {
        server.send_text(&alice, &room, &format!("m{i}")).await;
    }
    let filter = filter_query(&json!({ "room": { "timeline": { "limit": 3 } } }));
    let sync = server.sync_with(&bob, Some(&since), &filter).await;
    let joined = &sync["rooms"]["join"][&room];
    assert_eq!(bodies(&timeline(&sync, &room)), ["m5", "m6", "m7"]);
    assert_eq!(joined["timeline"]["limited"], true, "{sync}");
    let prev_batch = joined["timeline"]["prev_batch"]
        .as_str()
        .expect("prev_batch");

    // The gap: exactly the events between `since` and the timeline.
    let (status, page) = server
        .messages(
            &bob,
            &room,
            &format!("dir=b&from={prev_batch}&to={since}&limit=100"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let gap: Vec<&Value> = page["chunk"].as_array().unwrap().iter().collect();
    assert_eq!(bodies(&gap), ["m4", "m3", "m2", "m1", "m0"]);
    assert_eq!(gap.len(), 5, "{page}");

    // Not limited when everything fits.
    let sync = server
        .sync_with(
            &bob,
            Some(&since),
            &filter_query(&json!({ "room": { "timeline": { "limit": 8 } } })),
        )
        .await;
    assert_eq!(sync["rooms"]["join"][&room]["timeline"]["limited"], false);
    assert_eq!(timeline(&sync, &room).len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_and_inline_filters_shape_the_timeline() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.join(&bob, &room).await;
    let since = next_batch(&server.sync(&bob, None, 0).await);
    server.send_text(&alice, &room, "m1").await;
    let (status, _) = server
        .send_event(&alice, &room, "com.example.ping", "ping", json!({ "n": 1 }))
        .await;
    assert_eq!(status, StatusCode::OK);
    server.send_text(&alice, &room, "m2").await;
    server.send_text(&alice, &room, "m3").await;

    let definition = json!({ "room": { "timeline": { "limit": 2, "types": ["m.room.message"] } } });
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/user/{}/filter", enc(&bob.user_id)),
            &bob.token,
            definition.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let filter_id = body["filter_id"].as_str().unwrap().to_owned();
    let (status, stored) = server
        .get(
            &format!(
                "/_matrix/client/v3/user/{}/filter/{}",
                enc(&bob.user_id),
                enc(&filter_id)
            ),
            &bob.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored["room"]["timeline"], definition["room"]["timeline"]);

    let sync = server
        .sync_with(&bob, Some(&since), &format!("filter={}", enc(&filter_id)))
        .await;
    let events = timeline(&sync, &room);
    assert!(
        events.iter().all(|e| e["type"] == "m.room.message"),
        "{sync}"
    );
    assert_eq!(bodies(&events), ["m2", "m3"]);
    assert_eq!(sync["rooms"]["join"][&room]["timeline"]["limited"], true);

    let sync = server
        .sync_with(
            &bob,
            Some(&since),
            &filter_query(&json!({ "room": { "timeline": { "not_types": ["m.room.message"] } } })),
        )
        .await;
    let events = timeline(&sync, &room);
    assert_eq!(events.len(), 1, "{sync}");
    assert_eq!(events[0]["type"], "com.example.ping");

    // Filters are per user.
    let (status, body) = server
        .get(
            "/_matrix/client/v3/sync?timeout=0&filter=nosuchfilter",
            &bob.token,
        )
        .await;
    assert_eq!(
        (status, errcode(&body)),
        (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM")),
        "{body}"
    );
    let (status, body) = server
        .get(
            &format!(
                "/_matrix/client/v3/sync?timeout=0&filter={}",
                enc(&filter_id)
            ),
            &alice.token,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/user/{}/filter", enc(&bob.user_id)),
            &alice.token,
            json!({}),
        )
        .await;
    assert_eq!(
        (status, errcode(&body)),
        (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_filters_select_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let a = server.create_room(&alice, json!({})).await;
    let b = server.create_room(&alice, json!({})).await;
    let c = server.create_room(&alice, json!({})).await;
    let set =
        |rooms: &[&String]| -> BTreeSet<String> { rooms.iter().map(|r| (*r).clone()).collect() };

    let sync = server.sync(&alice, None, 0).await;
    assert_eq!(joined_rooms(&sync), set(&[&a, &b, &c]));
    let sync = server
        .sync_with(
            &alice,
            None,
            &filter_query(&json!({ "room": { "rooms": [a] } })),
        )
        .await;
    assert_eq!(joined_rooms(&sync), set(&[&a]));
    let sync = server
        .sync_with(
            &alice,
            None,
            &filter_query(&json!({ "room": { "not_rooms": [a] } })),
        )
        .await;
    assert_eq!(joined_rooms(&sync), set(&[&b, &c]));
    let sync = server
        .sync_with(
            &alice,
            None,
            &filter_query(&json!({ "room": { "rooms": [a, b], "not_rooms": [b] } })),
        )
        .await;
    assert_eq!(joined_rooms(&sync), set(&[&a]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_loading_sends_only_the_members_that_matter() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat", "name": "lazy" }))
        .await;
    server.join(&bob, &room).await;
    server.join(&carol, &room).await;
    server.join(&dave, &room).await;
    server.send_text(&carol, &room, "carol speaks").await;

    let lazy = filter_query(&json!({
        "room": { "timeline": { "limit": 1 }, "state": { "lazy_load_members": true } }
    }));
    let sync = server.sync_with(&alice, None, &lazy).await;
    assert_eq!(bodies(&timeline(&sync, &room)), ["carol speaks"]);
    let state = state_events(&sync, "join", &room);
    assert_eq!(member_keys(&state), ids(&[&alice, &carol]), "{sync}");
    // The rest of the state is all there.
    assert!(state.iter().any(|e| e["type"] == "m.room.create"));
    assert!(state.iter().any(|e| e["type"] == "m.room.name"));

    // Incrementally, the member event of a sender the client was not sent yet comes with
    // the sender's first event, limited timeline or not.
    let since = next_batch(&sync);
    server.send_text(&dave, &room, "dave speaks").await;
    let sync = server.sync_with(&alice, Some(&since), &lazy).await;
    assert_eq!(bodies(&timeline(&sync, &room)), ["dave speaks"]);
    assert_eq!(
        member_keys(&state_events(&sync, "join", &room)),
        ids(&[&dave]),
        "{sync}"
    );
    let since = next_batch(&sync);
    server.send_text(&dave, &room, "dave again").await;
    server.send_text(&bob, &room, "bob speaks").await;
    let sync = server.sync_with(&alice, Some(&since), &lazy).await;
    assert_eq!(bodies(&timeline(&sync, &room)), ["bob speaks"]);
    assert_eq!(sync["rooms"]["join"][&room]["timeline"]["limited"], true);
    assert!(
        member_keys(&state_events(&sync, "join", &room)).contains(&bob.user_id),
        "{sync}"
    );

    // Without lazy loading every member comes.
    let eager = filter_query(&json!({ "room": { "timeline": { "limit": 1 } } }));
    let sync = server.sync_with(&alice, None, &eager).await;
    assert_eq!(
        member_keys(&state_events(&sync, "join", &room)),
        ids(&[&alice, &bob, &carol, &dave])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_leave_brings_left_rooms_into_an_initial_sync() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.join(&bob, &room).await;
    server.send_text(&bob, &room, "bye").await;
    server.leave(&bob, &room).await;

    let sync = server.sync(&bob, None, 0).await;
    assert!(sync["rooms"]["leave"].get(&room).is_none(), "{sync}");
    assert!(sync["rooms"]["join"].get(&room).is_none(), "{sync}");
    let sync = server
        .sync_with(
            &bob,
            None,
            &filter_query(&json!({ "room": { "include_leave": true } })),
        )
        .await;
    let events = sync["rooms"]["leave"][&room]["timeline"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no leave section: {sync}"));
    let last = events.last().unwrap();
    assert_eq!(last["state_key"], bob.user_id.as_str());
    assert_eq!(last["content"]["membership"], "leave");
    let all: Vec<&Value> = events.iter().collect();
    assert_eq!(bodies(&all), ["bye"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_state_sends_the_whole_state_again() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat", "topic": "t" }))
        .await;
    server.join(&bob, &room).await;
    let since = next_batch(&server.sync(&bob, None, 0).await);

    let quiet = server.sync_with(&bob, Some(&since), "").await;
    assert!(quiet["rooms"]["join"].get(&room).is_none(), "{quiet}");

    let full = server
        .sync_with(&bob, Some(&since), "full_state=true")
        .await;
    let state = state_events(&full, "join", &room);
    for kind in [
        "m.room.create",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.history_visibility",
        "m.room.topic",
    ] {
        assert!(state.iter().any(|e| e["type"] == kind), "{kind}: {full}");
    }
    assert_eq!(member_keys(&state), ids(&[&alice, &bob]));

    // With a new event, the state is the state before the timeline.
    server.send_text(&alice, &room, "new").await;
    let full = server
        .sync_with(&bob, Some(&since), "full_state=true")
        .await;
    assert_eq!(bodies(&timeline(&full, &room)), ["new"]);
    assert!(
        state_events(&full, "join", &room)
            .iter()
            .any(|e| e["type"] == "m.room.create"),
        "{full}"
    );
}

async fn leave_by(server: &TestServer, moderator: &User, user: &User, room: &str, action: &str) {
    let since = next_batch(&server.sync(user, None, 0).await);
    let started = Instant::now();
    let (sync, _) = tokio::join!(server.sync(user, Some(&since), 20_000), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (status, body) = server
            .membership(
                moderator,
                room,
                action,
                json!({ "user_id": user.user_id, "reason": "bye" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    });
    assert!(started.elapsed() < Duration::from_secs(10), "not woken");
    assert!(sync["rooms"]["join"].get(room).is_none(), "{sync}");
    let events = sync["rooms"]["leave"][room]["timeline"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{action}: no leave section: {sync}"));
    let last = events.last().unwrap();
    let expected = if action == "ban" { "ban" } else { "leave" };
    assert_eq!(
        (
            last["type"].as_str(),
            last["state_key"].as_str(),
            last["sender"].as_str(),
            last["content"]["membership"].as_str(),
            last["content"]["reason"].as_str()
        ),
        (
            Some("m.room.member"),
            Some(user.user_id.as_str()),
            Some(moderator.user_id.as_str()),
            Some(expected),
            Some("bye")
        ),
        "{action}: {sync}"
    );
    // Said once.
    let again = server.sync(user, Some(&next_batch(&sync)), 0).await;
    assert!(again["rooms"]["leave"].get(room).is_none(), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kicked_and_banned_users_see_the_room_in_leave() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.join(&bob, &room).await;
    server.join(&carol, &room).await;
    leave_by(&server, &alice, &bob, &room, "kick").await;
    leave_by(&server, &alice, &carol, &room, "ban").await;

    // Messages after the kick do not reach bob.
    let since = next_batch(&server.sync(&bob, None, 0).await);
    server.send_text(&alice, &room, "without bob").await;
    let sync = server.sync(&bob, Some(&since), 0).await;
    assert!(
        sync["rooms"]
            .get("leave")
            .is_none_or(|l| l.get(&room).is_none()),
        "{sync}"
    );
    assert!(
        sync["rooms"]
            .get("join")
            .is_none_or(|j| j.get(&room).is_none()),
        "{sync}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_data_is_sent_once_per_change() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let since = next_batch(&server.sync(&alice, None, 0).await);
    let user_id = ruma::UserId::parse(&alice.user_id).unwrap();
    let room_id = ruma::RoomId::parse(&room).unwrap();
    let raw = |v: Value| serde_json::value::to_raw_value(&v).unwrap();
    // This branch has no account data endpoints yet: the data is written in-process,
    // and read the way clients read it, through /sync.
    let set_global = |v: Value| {
        services(&server)
            .account_data
            .set(&user_id, None, "com.example.settings", raw(v))
            .unwrap()
    };

    // A long-polling sync is woken by the change.
    let started = Instant::now();
    let (sync, _) = tokio::join!(server.sync(&alice, Some(&since), 20_000), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        set_global(json!({ "theme": "dark" }));
    });
    assert!(started.elapsed() < Duration::from_secs(10), "not woken");
    assert_eq!(
        sync["account_data"]["events"],
        json!([{ "type": "com.example.settings", "content": { "theme": "dark" } }]),
        "{sync}"
    );
    let since = next_batch(&sync);
    let again = server.sync(&alice, Some(&since), 0).await;
    assert!(
        again
            .get("account_data")
            .is_none_or(|a| a["events"] == json!([])),
        "{again}"
    );

    services(&server)
        .account_data
        .set(
            &user_id,
            Some(&room_id),
            "m.tag",
            raw(json!({ "tags": { "u.work": {} } })),
        )
        .unwrap();
    let sync = server.sync(&alice, Some(&since), 0).await;
    assert_eq!(
        sync["rooms"]["join"][&room]["account_data"]["events"],
        json!([{ "type": "m.tag", "content": { "tags": { "u.work": {} } } }]),
        "{sync}"
    );
    assert!(
        sync.get("account_data")
            .is_none_or(|a| a["events"] == json!([])),
        "{sync}"
    );
    let again = server.sync(&alice, Some(&next_batch(&sync)), 0).await;
    assert!(again["rooms"]["join"].get(&room).is_none(), "{again}");

    // An initial sync has the latest of each.
    set_global(json!({ "theme": "light" }));
    let initial = server.sync(&alice, None, 0).await;
    assert_eq!(
        initial["account_data"]["events"],
        json!([{ "type": "com.example.settings", "content": { "theme": "light" } }])
    );
    assert_eq!(
        initial["rooms"]["join"][&room]["account_data"]["events"][0]["type"],
        "m.tag"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_in_again_recovers_the_whole_history() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.join(&bob, &room).await;
    let mut expected = Vec::new();
    for i in 0..30 {
        let (who, text) = if i % 2 == 0 {
            (&alice, format!("a{i}"))
        } else {
            (&bob, format!("b{i}"))
        };
        server.send_text(who, &room, &text).await;
        expected.push(text);
    }
    let (status, _) = server
        .post("/_matrix/client/v3/logout", &bob.token, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = server
        .get("/_matrix/client/v3/sync?timeout=0", &bob.token)
        .await;
    assert_eq!(
        (status, errcode(&body)),
        (StatusCode::UNAUTHORIZED, Some("M_UNKNOWN_TOKEN"))
    );

    let bob = server.login(&bob).await;
    let sync = server.sync(&bob, None, 0).await;
    let joined = &sync["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], true, "{sync}");
    let mut all = bodies(&timeline(&sync, &room));
    assert_eq!(all.last().map(String::as_str), Some("b29"));
    let mut from = joined["timeline"]["prev_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut reached_creation = false;
    for _ in 0..20 {
        let (status, page) = server
            .messages(&bob, &room, &format!("dir=b&from={from}&limit=8"))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let chunk: Vec<&Value> = page["chunk"].as_array().unwrap().iter().collect();
        reached_creation |= chunk.iter().any(|e| e["type"] == "m.room.create");
        let mut older = bodies(&chunk);
        older.reverse();
        older.extend(all);
        all = older;
        match page["end"].as_str() {
            Some(end) => from = end.to_owned(),
            None => break,
        }
    }
    assert!(reached_creation);
    assert_eq!(all, expected);
}
