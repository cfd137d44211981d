//! The read-only server-server endpoints a peer uses to fetch events, state and directory
//! information. The handlers' inner functions are called with an origin directly (the
//! X-Matrix transport fills the origin of real requests). A remote member is made by
//! appending its join through the rooms service, as federation will once joins arrive.

use std::{collections::HashSet, sync::Arc};

use conduit::{
    api::federation::{directory, event, query},
    error::Error,
    service::{Services, rooms::PduBuilder},
};
use reqwest::{Method, StatusCode};
use ruma::{
    EventId, OwnedEventId, OwnedRoomId, RoomId, ServerName, UInt, UserId,
    api::federation::{
        authorization::get_event_authorization,
        backfill::get_backfill,
        directory::{get_public_rooms, get_public_rooms_filtered},
        event::{get_event, get_missing_events, get_room_state, get_room_state_ids},
        query::{get_profile_information, get_room_information},
    },
    directory::Filter,
    events::StateEventType,
    profile::ProfileFieldName,
    server_name,
};
use serde_json::{Value, json, value::RawValue};

use crate::common::{TestServer, User, enc};

const REMOTE: &str = "remote.test";

fn stranger() -> &'static ServerName {
    server_name!("stranger.test")
}

fn remote() -> &'static ServerName {
    server_name!("remote.test")
}

fn services(server: &TestServer) -> &Arc<Services> {
    &server.server.as_ref().expect("running").services
}

fn eid(id: &str) -> OwnedEventId {
    EventId::parse(id).expect("event id")
}

fn rid(id: &str) -> OwnedRoomId {
    RoomId::parse(id).expect("room id")
}

fn value(raw: &RawValue) -> Value {
    serde_json::from_str(raw.get()).expect("event JSON")
}

fn assert_error(result: Result<impl std::fmt::Debug, Error>, status: StatusCode, code: &str) {
    let e = result.expect_err("request must fail");
    assert_eq!(
        (e.status.as_u16(), e.errcode),
        (status.as_u16(), code),
        "{e}"
    );
}

/// A room with a message, created by a fresh alice.
async fn room_with(preset: &str, extra: Value) -> (TestServer, User, String) {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let mut body = json!({ "preset": preset, "name": "serve test" });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    let room = server.create_room(&alice, body).await;
    (server, alice, room)
}

/// A user of another server joins the public room (as an incoming join would).
async fn remote_join(server: &TestServer, room: &str, user: &str) -> OwnedEventId {
    let user_id = UserId::parse(user).unwrap();
    services(server)
        .rooms
        .build_and_append(
            &user_id,
            &rid(room),
            PduBuilder::state(
                StateEventType::RoomMember,
                user,
                &json!({ "membership": "join" }),
            ),
        )
        .await
        .expect("remote join is appended")
        .event_id
        .clone()
}

async fn set_state(server: &TestServer, user: &User, room: &str, kind: &str, content: Value) {
    let (status, body) = server.send_state(user, room, kind, "", content).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

fn get(server: &TestServer, origin: &ServerName, id: &str) -> Result<Value, Error> {
    let response = event::get_pdu(
        services(server),
        origin,
        &get_event::v1::Request::new(eid(id)),
    )?;
    assert_eq!(response.origin, server.server_name.as_str());
    Ok(value(&response.pdu))
}

fn depth(server: &TestServer, id: &EventId) -> u64 {
    services(server)
        .rooms
        .get_pdu(id)
        .unwrap()
        .expect("event")
        .depth
        .into()
}

fn backfill(
    server: &TestServer,
    origin: &ServerName,
    room: &str,
    v: &[&str],
    limit: u32,
) -> Result<Vec<Value>, Error> {
    let request =
        get_backfill::v1::Request::new(rid(room), v.iter().map(|e| eid(e)).collect(), limit.into());
    Ok(event::backfill(services(server), origin, &request)?
        .pdus
        .iter()
        .map(|p| value(p))
        .collect())
}

fn missing(
    server: &TestServer,
    room: &str,
    earliest: &[&str],
    latest: &[&str],
    limit: u32,
    min_depth: u64,
) -> Vec<Value> {
    let mut request = get_missing_events::v1::Request::new(
        rid(room),
        earliest.iter().map(|e| eid(e)).collect(),
        latest.iter().map(|e| eid(e)).collect(),
    );
    request.limit = limit.into();
    request.min_depth = UInt::try_from(min_depth).unwrap();
    event::missing_events(services(server), remote(), &request)
        .expect("missing events")
        .events
        .iter()
        .map(|p| value(p))
        .collect()
}

fn bodies(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_outside_the_room_are_refused_and_unknown_things_are_not_found() {
    let (server, alice, room) = room_with("private_chat", json!({})).await;
    let message = server.send_text(&alice, &room, "secret").await;
    let s = services(&server);
    let room_id = rid(&room);

    assert_error(
        get(&server, stranger(), &message),
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let state = get_room_state::v1::Request::new(eid(&message), room_id.clone());
    assert_error(
        event::get_state(s, stranger(), &state),
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let ids = get_room_state_ids::v1::Request::new(eid(&message), room_id.clone());
    assert_error(
        event::get_state_ids(s, stranger(), &ids),
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let auth = get_event_authorization::v1::Request::new(room_id.clone(), eid(&message));
    assert_error(
        event::get_event_auth(s, stranger(), &auth),
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        backfill(&server, stranger(), &room, &[&message], 10),
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let request =
        get_missing_events::v1::Request::new(room_id.clone(), vec![], vec![eid(&message)]);
    assert_error(
        event::missing_events(s, stranger(), &request),
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );

    // Unknown events and rooms are 404, whoever asks.
    assert_error(
        get(&server, stranger(), "$unknown"),
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let nowhere = rid("!nowhere:localhost");
    assert_error(
        backfill(&server, remote(), nowhere.as_str(), &[&message], 10),
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    let ids = get_room_state_ids::v1::Request::new(eid(&message), nowhere.clone());
    assert_error(
        event::get_state_ids(s, remote(), &ids),
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );

    // The routes are mounted and refuse requests without a verified server origin.
    for (method, path) in [
        (
            Method::GET,
            format!("/_matrix/federation/v1/event/{}", enc(&message)),
        ),
        (
            Method::GET,
            format!(
                "/_matrix/federation/v1/state_ids/{}?event_id={}",
                enc(&room),
                enc(&message)
            ),
        ),
        (Method::GET, "/_matrix/federation/v1/publicRooms".to_owned()),
        (
            Method::GET,
            "/_matrix/federation/v1/query/profile?user_id=%40alice%3Alocalhost".to_owned(),
        ),
    ] {
        let (status, body) = server.request(method, &path, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn world_readable_rooms_are_readable_by_any_server_from_that_point() {
    // `shared` history, the public_chat preset's.
    let (server, alice, room) = room_with("public_chat", json!({})).await;
    let before = server.send_text(&alice, &room, "shared only").await;
    // A server whose user was in the room and left keeps its view of shared history.
    remote_join(&server, &room, "@bob:remote.test").await;
    services(&server)
        .rooms
        .build_and_append(
            &UserId::parse("@bob:remote.test").unwrap(),
            &rid(&room),
            PduBuilder::state(
                StateEventType::RoomMember,
                "@bob:remote.test",
                &json!({ "membership": "leave" }),
            ),
        )
        .await
        .unwrap();
    assert_error(
        get(&server, remote(), &before),
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    set_state(
        &server,
        &alice,
        &room,
        "m.room.history_visibility",
        json!({ "history_visibility": "world_readable" }),
    )
    .await;
    let after = server.send_text(&alice, &room, "for everyone").await;

    let event = get(&server, stranger(), &after).expect("world-readable event");
    assert_eq!(event["content"]["body"], "for everyone");
    // Federation form of a v12 event: the id is the reference hash, not a field, and this
    // server's `unsigned` bookkeeping stays home.
    assert!(event.get("event_id").is_none(), "{event}");
    assert!(event.get("unsigned").is_none(), "{event}");
    assert!(event["signatures"]["localhost"].is_object(), "{event}");
    assert!(event["hashes"]["sha256"].is_string(), "{event}");

    // History from before is shown redacted: hashes and signatures stay for checking.
    let hidden = get(&server, stranger(), &before).expect("redacted event");
    assert_eq!(hidden["content"], json!({}), "{hidden}");
    assert!(hidden["hashes"]["sha256"].is_string(), "{hidden}");
    assert_eq!(hidden["type"], "m.room.message");
    assert_eq!(
        get(&server, remote(), &before).unwrap()["content"]["body"],
        "shared only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_format_keeps_event_ids_only_in_room_versions_1_and_2() {
    for (version, keeps_id) in [("1", true), ("2", true), ("3", false), ("11", false)] {
        let (server, alice, room) =
            room_with("public_chat", json!({ "room_version": version })).await;
        // A state event that replaces another has `unsigned.replaces_state` stored.
        set_state(
            &server,
            &alice,
            &room,
            "m.room.topic",
            json!({ "topic": "one" }),
        )
        .await;
        set_state(
            &server,
            &alice,
            &room,
            "m.room.topic",
            json!({ "topic": "two" }),
        )
        .await;
        let topic = services(&server)
            .rooms
            .room_state_get(&rid(&room), &StateEventType::RoomTopic, "")
            .unwrap()
            .expect("topic");
        let stored = services(&server)
            .rooms
            .get_pdu_json(&topic.event_id)
            .unwrap()
            .unwrap();
        assert!(stored.contains_key("unsigned"), "v{version}");
        let raw = services(&server)
            .rooms
            .pdu_for_federation(&topic.event_id)
            .unwrap()
            .expect("known event");
        let sent = value(&raw);
        assert_eq!(
            sent.get("event_id").is_some(),
            keeps_id,
            "v{version}: {sent}"
        );
        if keeps_id {
            assert_eq!(sent["event_id"], topic.event_id.as_str());
        }
        assert!(sent.get("unsigned").is_none(), "v{version}: {sent}");
        assert_eq!(sent["content"]["topic"], "two");
        assert!(
            services(&server)
                .rooms
                .pdu_for_federation(&eid("$unknown:localhost"))
                .unwrap()
                .is_none()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_server_sees_history_as_its_visibility_allows_and_acls_shut_it_out() {
    let (server, alice, room) = room_with("public_chat", json!({})).await;
    set_state(
        &server,
        &alice,
        &room,
        "m.room.history_visibility",
        json!({ "history_visibility": "joined" }),
    )
    .await;
    let before = server.send_text(&alice, &room, "before bob").await;
    let join = remote_join(&server, &room, "@bob:remote.test").await;
    let after = server.send_text(&alice, &room, "after bob").await;

    assert_eq!(
        get(&server, remote(), &before).unwrap()["content"],
        json!({})
    );
    assert_eq!(
        get(&server, remote(), join.as_str()).unwrap()["content"]["membership"],
        "join"
    );
    assert_eq!(
        get(&server, remote(), &after).unwrap()["content"]["body"],
        "after bob"
    );
    // Backfill redacts the hidden events but keeps them, so the graph stays connected.
    let events = backfill(&server, remote(), &room, &[&after], 3).unwrap();
    assert_eq!(bodies(&events), ["after bob"]);
    assert_eq!(events[2]["type"], "m.room.message");
    assert_eq!(events[2]["content"], json!({}));
    // A server with no user in the room still gets nothing.
    assert_error(
        get(&server, stranger(), &after),
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );

    set_state(
        &server,
        &alice,
        &room,
        "m.room.server_acl",
        json!({ "allow": ["*"], "deny": [REMOTE] }),
    )
    .await;
    assert_error(
        get(&server, remote(), &after),
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        backfill(&server, remote(), &room, &[&after], 3),
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_walks_back_newest_first_within_the_limit() {
    let (server, alice, room) = room_with("public_chat", json!({})).await;
    remote_join(&server, &room, "@bob:remote.test").await;
    let mut sent = Vec::new();
    for i in 1..=5 {
        sent.push(server.send_text(&alice, &room, &format!("m{i}")).await);
    }

    // The given event comes first, then the ones before it.
    let events = backfill(&server, remote(), &room, &[&sent[4]], 3).unwrap();
    assert_eq!(bodies(&events), ["m5", "m4", "m3"]);
    let events = backfill(&server, remote(), &room, &[&sent[2]], 2).unwrap();
    assert_eq!(bodies(&events), ["m3", "m2"]);

    // A large limit walks back to the create event; depth never increases on the way.
    let events = backfill(&server, remote(), &room, &[&sent[4]], 1000).unwrap();
    let last = events.last().expect("events");
    assert_eq!(last["type"], "m.room.create", "{last}");
    let depths: Vec<u64> = events
        .iter()
        .map(|e| e["depth"].as_u64().unwrap())
        .collect();
    assert!(depths.windows(2).all(|w| w[0] > w[1]), "{depths:?}");
    assert_eq!(
        events.len(),
        usize::try_from(depth(&server, &eid(&sent[4]))).unwrap()
    );

    // Unknown seeds are skipped; no seed known means nothing to send.
    assert!(
        backfill(&server, remote(), &room, &["$unknown"], 10)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        backfill(&server, remote(), &room, &[&sent[0]], 0)
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_is_capped_at_one_hundred_events() {
    let (server, alice, room) = room_with("public_chat", json!({})).await;
    remote_join(&server, &room, "@bob:remote.test").await;
    let mut last = String::new();
    for i in 0..105 {
        last = server.send_text(&alice, &room, &format!("n{i}")).await;
    }
    let events = backfill(&server, remote(), &room, &[&last], 500).unwrap();
    assert_eq!(events.len(), event::MAX_BACKFILL);
    assert_eq!(bodies(&events)[0], "n104");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_events_fill_the_gap_oldest_first() {
    let (server, alice, room) = room_with("public_chat", json!({})).await;
    remote_join(&server, &room, "@bob:remote.test").await;
    let mut sent = Vec::new();
    for i in 1..=25 {
        sent.push(server.send_text(&alice, &room, &format!("m{i}")).await);
    }

    // Between m1 and m5, neither included.
    let events = missing(&server, &room, &[&sent[0]], &[&sent[4]], 10, 0);
    assert_eq!(bodies(&events), ["m2", "m3", "m4"]);
    // The limit keeps the events nearest to the latest ones.
    let events = missing(&server, &room, &[&sent[0]], &[&sent[4]], 2, 0);
    assert_eq!(bodies(&events), ["m3", "m4"]);
    // Nothing below min_depth.
    let min = depth(&server, &eid(&sent[2]));
    let events = missing(&server, &room, &[&sent[0]], &[&sent[4]], 10, min);
    assert_eq!(bodies(&events), ["m3", "m4"]);
    // At most 20, however many are asked for.
    let events = missing(&server, &room, &[], &[&sent[24]], 100, 0);
    assert_eq!(events.len(), event::MAX_MISSING_EVENTS);
    assert_eq!(bodies(&events)[19], "m24");
    assert_eq!(bodies(&events)[0], "m5");
    // Unknown latest events give nothing.
    assert!(missing(&server, &room, &[], &["$unknown"], 10, 0).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_at_an_event_is_the_state_before_it_with_its_auth_chain() {
    let (server, alice, room) = room_with("public_chat", json!({})).await;
    let bob = server.register("bob").await;
    server.join(&bob, &room).await;
    remote_join(&server, &room, "@carol:remote.test").await;
    set_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        json!({ "topic": "old" }),
    )
    .await;

    // What a client saw as the room's state right before the event.
    let client_state = server.room_state(&alice, &room).await;
    let expected: HashSet<String> = client_state
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    set_state(
        &server,
        &alice,
        &room,
        "m.room.topic",
        json!({ "topic": "new" }),
    )
    .await;
    let topic = services(&server)
        .rooms
        .room_state_get(&rid(&room), &StateEventType::RoomTopic, "")
        .unwrap()
        .unwrap()
        .event_id
        .clone();

    let s = services(&server);
    let request = get_room_state_ids::v1::Request::new(topic.clone(), rid(&room));
    let ids = event::get_state_ids(s, remote(), &request).unwrap();
    let got: HashSet<String> = ids.pdu_ids.iter().map(ToString::to_string).collect();
    assert_eq!(got, expected);
    assert!(
        !got.contains(topic.as_str()),
        "the event itself is not state before it"
    );
    let create = client_state
        .iter()
        .find(|e| e["type"] == "m.room.create")
        .unwrap()["event_id"]
        .as_str()
        .unwrap();
    assert!(ids.auth_chain_ids.iter().any(|id| id == create));

    let request = get_room_state::v1::Request::new(topic.clone(), rid(&room));
    let state = event::get_state(s, remote(), &request).unwrap();
    assert_eq!(state.pdus.len(), expected.len());
    assert_eq!(state.auth_chain.len(), ids.auth_chain_ids.len());
    let pdus: Vec<Value> = state.pdus.iter().map(|p| value(p)).collect();
    let old_topic = pdus.iter().find(|e| e["type"] == "m.room.topic").unwrap();
    assert_eq!(old_topic["content"]["topic"], "old");
    assert!(
        pdus.iter()
            .all(|e| e.get("event_id").is_none() && e.get("unsigned").is_none())
    );

    // An event of another room is not found through this one.
    let other = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    remote_join(&server, &other, "@carol:remote.test").await;
    let request = get_room_state_ids::v1::Request::new(topic, rid(&other));
    assert_error(
        event::get_state_ids(s, remote(), &request),
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_auth_is_the_whole_auth_chain() {
    for version in ["12", "11"] {
        let (server, alice, room) =
            room_with("public_chat", json!({ "room_version": version })).await;
        remote_join(&server, &room, "@carol:remote.test").await;
        let bob = server.register("bob").await;
        server.join(&bob, &room).await;
        let message = server.send_text(&bob, &room, "hello").await;
        let request = get_event_authorization::v1::Request::new(rid(&room), eid(&message));
        let chain: Vec<Value> = event::get_event_auth(services(&server), remote(), &request)
            .unwrap()
            .auth_chain
            .iter()
            .map(|p| value(p))
            .collect();
        let kinds: Vec<(&str, &str)> = chain
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap(),
                    e["state_key"].as_str().unwrap_or(""),
                )
            })
            .collect();
        for wanted in [
            ("m.room.create", ""),
            ("m.room.power_levels", ""),
            ("m.room.member", bob.user_id.as_str()),
            // Bob's join was authorised by the join rules in force then.
            ("m.room.join_rules", ""),
            // The power levels were sent by alice, as her member event shows.
            ("m.room.member", alice.user_id.as_str()),
        ] {
            assert!(
                kinds.contains(&wanted),
                "v{version}: {wanted:?} not in {kinds:?}"
            );
        }
        assert!(
            !bodies(&chain).contains(&"hello"),
            "the event is not its own auth"
        );
        // Oldest first: the create event leads.
        assert_eq!(kinds[0].0, "m.room.create", "v{version}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_queries_answer_for_local_users_only() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (status, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&alice.user_id)
            ),
            &alice.token,
            json!({ "displayname": "Alice" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let s = services(&server);
    let ask = |user: &str, field: Option<ProfileFieldName>| {
        let mut request = get_profile_information::v1::Request::new(UserId::parse(user).unwrap());
        request.field = field;
        query::get_profile(s, remote(), &request)
    };

    let profile = ask(&alice.user_id, None).unwrap();
    assert_eq!(profile.get("displayname"), Some(&json!("Alice")));
    assert_eq!(profile.get("avatar_url"), None);
    let only = ask(&alice.user_id, Some(ProfileFieldName::DisplayName)).unwrap();
    assert_eq!(only.iter().count(), 1);
    let none = ask(&alice.user_id, Some(ProfileFieldName::AvatarUrl)).unwrap();
    assert_eq!(none.iter().count(), 0);

    assert_error(
        ask("@nobody:localhost", None),
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        ask("@bob:remote.test", None),
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_queries_resolve_local_aliases_with_servers_ours_first() {
    let (server, _alice, room) =
        room_with("public_chat", json!({ "room_alias_name": "lobby" })).await;
    let s = services(&server);
    let ask = |alias: &str| {
        let request = get_room_information::v1::Request::new(alias.try_into().unwrap());
        query::get_room_information(s, remote(), &request)
    };
    let found = ask("#lobby:localhost").unwrap();
    assert_eq!(found.room_id, room);
    assert_eq!(found.servers, ["localhost"]);

    remote_join(&server, &room, "@bob:remote.test").await;
    let bob = server.register("bob").await;
    server.join(&bob, &room).await;
    let found = ask("#lobby:localhost").unwrap();
    assert_eq!(found.servers, ["localhost", REMOTE]);

    assert_error(
        ask("#nowhere:localhost"),
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        ask("#lobby:remote.test"),
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_rooms_are_listed_paged_and_filtered() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let big = server
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "visibility": "public", "name": "Big Lounge" }),
        )
        .await;
    server.join(&bob, &big).await;
    let small = server
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "visibility": "public", "name": "Small Garden" }),
        )
        .await;
    // Not published: never listed.
    server
        .create_room(&alice, json!({ "preset": "public_chat", "name": "Hidden" }))
        .await;
    let s = services(&server);

    let mut request = get_public_rooms::v1::Request::new();
    request.limit = Some(1u32.into());
    let first = directory::public_rooms(s, remote(), &request).unwrap();
    assert_eq!(first.chunk.len(), 1);
    assert_eq!(first.chunk[0].room_id, big, "largest first");
    assert_eq!(first.total_room_count_estimate, Some(2u32.into()));
    request.since = first.next_batch.clone();
    assert!(request.since.is_some());
    let second = directory::public_rooms(s, remote(), &request).unwrap();
    assert_eq!(second.chunk.len(), 1);
    assert_eq!(second.chunk[0].room_id, small);
    assert_eq!(second.next_batch, None);
    assert!(second.prev_batch.is_some());

    let mut request = get_public_rooms_filtered::v1::Request::new();
    let mut filter = Filter::new();
    filter.generic_search_term = Some("garden".to_owned());
    request.filter = filter;
    let found = directory::public_rooms_filtered(s, remote(), &request).unwrap();
    let ids: Vec<&RoomId> = found.chunk.iter().map(|c| &*c.room_id).collect();
    assert_eq!(ids, [&*rid(&small)]);
    assert_eq!(found.chunk[0].name.as_deref(), Some("Small Garden"));

    request.since = Some("not a number".to_owned());
    assert_error(
        directory::public_rooms_filtered(s, remote(), &request),
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
}
