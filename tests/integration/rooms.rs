//! Rooms from a client's point of view: createRoom and its options, upgrades, knocking,
//! restricted joins, forgetting and the member lists.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestServer, User, enc, errcode, next_batch, timeline};

fn user_ids(events: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = events
        .iter()
        .filter_map(|e| e["state_key"].as_str().map(ToOwned::to_owned))
        .collect();
    ids.sort();
    ids
}

async fn members(server: &TestServer, user: &User, room: &str, query: &str) -> Vec<Value> {
    let (status, body) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{}/members?{query}", enc(room)),
            &user.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    body["chunk"].as_array().expect("chunk").clone()
}

fn membership_of<'a>(events: &'a [Value], user: &User) -> Option<&'a str> {
    events
        .iter()
        .find(|e| e["state_key"] == user.user_id.as_str())
        .and_then(|e| e["content"]["membership"].as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presets_set_join_rules_history_guest_access_and_power() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    for (preset, join_rule, guest_access, invite_level) in [
        ("public_chat", "public", "forbidden", 50),
        ("private_chat", "invite", "can_join", 0),
        ("trusted_private_chat", "invite", "can_join", 0),
    ] {
        let trusted = preset == "trusted_private_chat";
        let room = server
            .create_room(
                &alice,
                json!({ "preset": preset, "room_version": "11", "invite": [bob.user_id] }),
            )
            .await;
        let join_rules = server
            .state_content(&alice, &room, "m.room.join_rules")
            .await;
        assert_eq!(join_rules["join_rule"], join_rule, "{preset}");
        let history = server
            .state_content(&alice, &room, "m.room.history_visibility")
            .await;
        assert_eq!(history["history_visibility"], "shared", "{preset}");
        let guest = server
            .state_content(&alice, &room, "m.room.guest_access")
            .await;
        assert_eq!(guest["guest_access"], guest_access, "{preset}");
        let power = server
            .state_content(&alice, &room, "m.room.power_levels")
            .await;
        assert_eq!(power["users"][&alice.user_id], 100, "{preset}: {power}");
        assert_eq!(power["invite"], invite_level, "{preset}: {power}");
        // Trusted invitees get the creator's power level; others get the default.
        assert_eq!(
            power["users"].get(&bob.user_id),
            trusted.then_some(&json!(100)),
            "{preset}: {power}"
        );

        // An uninvited user can join only the public room.
        let (status, body) = server
            .post(
                &format!("/_matrix/client/v3/join/{}", enc(&room)),
                &carol.token,
                json!({}),
            )
            .await;
        if join_rule == "public" {
            assert_eq!(status, StatusCode::OK, "{preset}: {body}");
        } else {
            assert_eq!(
                (status, errcode(&body)),
                (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")),
                "{preset}: {body}"
            );
        }

        // The invitee joins; only a trusted one may then change the power levels.
        server.join(&bob, &room).await;
        let mut new_power = power.clone();
        new_power["users"][&carol.user_id] = json!(10);
        let (status, body) = server
            .send_state(&bob, &room, "m.room.power_levels", "", new_power)
            .await;
        let expected = if trusted {
            StatusCode::OK
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(status, expected, "{preset}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_private_chat_invitees_are_creators_in_v12() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(
            &alice,
            json!({ "preset": "trusted_private_chat", "room_version": "12", "invite": [bob.user_id] }),
        )
        .await;
    let create = server.state_content(&alice, &room, "m.room.create").await;
    assert_eq!(
        create["additional_creators"],
        json!([bob.user_id]),
        "{create}"
    );
    // Creators are privileged by the room version and may not be listed in v12.
    let power = server
        .state_content(&alice, &room, "m.room.power_levels")
        .await;
    assert!(power["users"].get(&alice.user_id).is_none(), "{power}");
    assert!(power["users"].get(&bob.user_id).is_none(), "{power}");

    server.join(&bob, &room).await;
    let (status, body) = server
        .send_state(
            &bob,
            &room,
            "m.room.power_levels",
            "",
            json!({ "users": {}, "events_default": 10 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_state_overrides_the_preset_and_name_overrides_initial_state() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(
            &alice,
            json!({
                "preset": "public_chat",
                "name": "from the name field",
                "initial_state": [
                    { "type": "m.room.join_rules", "state_key": "", "content": { "join_rule": "invite" } },
                    { "type": "m.room.history_visibility", "content": { "history_visibility": "joined" } },
                    { "type": "m.room.guest_access", "content": { "guest_access": "can_join" } },
                    { "type": "m.room.name", "content": { "name": "from initial_state" } },
                    { "type": "com.example.custom", "state_key": "k", "content": { "x": 1 } },
                ],
            }),
        )
        .await;
    assert_eq!(
        server
            .state_content(&alice, &room, "m.room.join_rules")
            .await["join_rule"],
        "invite"
    );
    assert_eq!(
        server
            .state_content(&alice, &room, "m.room.history_visibility")
            .await["history_visibility"],
        "joined"
    );
    assert_eq!(
        server
            .state_content(&alice, &room, "m.room.guest_access")
            .await["guest_access"],
        "can_join"
    );
    assert_eq!(
        server.state_content(&alice, &room, "m.room.name").await["name"],
        "from the name field"
    );
    let (status, custom) = server
        .state_event(&alice, &room, "com.example.custom", "k")
        .await;
    assert_eq!((status, custom), (StatusCode::OK, json!({ "x": 1 })));

    // The preset's join rule really is overridden: a public_chat room one cannot join.
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            &bob.token,
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
async fn refused_create_room_leaves_nothing_behind() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    for (what, body) in [
        (
            "second create event in initial_state",
            json!({ "initial_state": [ { "type": "m.room.create", "content": { "room_version": "11" } } ] }),
        ),
        (
            "initial_state content that is not an object",
            json!({ "initial_state": [ { "type": "m.room.topic", "content": "text" } ] }),
        ),
        (
            "initial_state event without a type",
            json!({ "name": "x", "initial_state": [ { "content": {} } ] }),
        ),
        ("invalid alias name", json!({ "room_alias_name": "a:b" })),
    ] {
        let (status, response) = server
            .post("/_matrix/client/v3/createRoom", &alice.token, body)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {response}");
        let (_, joined) = server
            .get("/_matrix/client/v3/joined_rooms", &alice.token)
            .await;
        assert_eq!(joined["joined_rooms"], json!([]), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_state_may_set_the_power_levels() {
    // Synapse: an m.room.power_levels event in initial_state replaces the generated one.
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let power = json!({
        "users": { alice.user_id.clone(): 100 },
        "users_default": 0,
        "events": {},
        "events_default": 20,
        "state_default": 50,
        "ban": 50, "kick": 50, "redact": 50, "invite": 0,
    });
    let room = server
        .create_room(
            &alice,
            json!({
                "preset": "public_chat",
                "room_version": "11",
                "initial_state": [ { "type": "m.room.power_levels", "content": power } ],
            }),
        )
        .await;
    assert_eq!(
        server
            .state_content(&alice, &room, "m.room.power_levels")
            .await,
        power
    );
    server.join(&bob, &room).await;
    let (status, body) = server
        .send_event(
            &bob,
            &room,
            "m.room.message",
            "t1",
            json!({ "msgtype": "m.text", "body": "below events_default" }),
        )
        .await;
    assert_eq!(
        (status, errcode(&body)),
        (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_invite_reaches_the_invitee_with_is_direct() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(
            &alice,
            json!({
                "preset": "trusted_private_chat",
                "name": "just us",
                "topic": "a topic",
                "invite": [bob.user_id],
                "is_direct": true,
            }),
        )
        .await;
    assert_eq!(
        server.state_content(&alice, &room, "m.room.topic").await["topic"],
        "a topic"
    );

    let sync = server.sync(&bob, None, 0).await;
    assert!(sync["rooms"]["join"].get(&room).is_none(), "{sync}");
    let invite_state = sync["rooms"]["invite"][&room]["invite_state"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no invite for bob: {sync}"));
    let member = invite_state
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        .expect("bob's invite in the invite state");
    assert_eq!(member["content"]["membership"], "invite");
    assert_eq!(member["content"]["is_direct"], true, "{member}");
    assert_eq!(member["sender"], alice.user_id.as_str());
    let find = |kind: &str| {
        invite_state
            .iter()
            .find(|e| e["type"] == kind)
            .map(|e| e["content"].clone())
    };
    assert_eq!(find("m.room.name"), Some(json!({ "name": "just us" })));
    assert_eq!(find("m.room.topic"), Some(json!({ "topic": "a topic" })));
    assert_eq!(
        find("m.room.join_rules"),
        Some(json!({ "join_rule": "invite" }))
    );

    // Bob accepts; both now see the room joined.
    server.join(&bob, &room).await;
    let sync = server.sync(&bob, None, 0).await;
    assert!(sync["rooms"]["join"].get(&room).is_some(), "{sync}");
    assert!(sync["rooms"]["invite"].get(&room).is_none(), "{sync}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_alias_name_publishes_an_alias_once() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "room_alias_name": "lobby" }),
        )
        .await;
    assert_eq!(
        server
            .state_content(&alice, &room, "m.room.canonical_alias")
            .await["alias"],
        "#lobby:localhost"
    );

    // The alias resolves: joining by it lands in the room.
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/join/{}", enc("#lobby:localhost")),
            &bob.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room.as_str());

    // Taken: no second room is created.
    let (status, body) = server
        .post(
            "/_matrix/client/v3/createRoom",
            &bob.token,
            json!({ "room_alias_name": "lobby" }),
        )
        .await;
    assert_eq!(
        (status, errcode(&body)),
        (StatusCode::BAD_REQUEST, Some("M_ROOM_IN_USE")),
        "{body}"
    );
    let (_, joined) = server
        .get("/_matrix/client/v3/joined_rooms", &bob.token)
        .await;
    assert_eq!(joined["joined_rooms"], json!([room]));

    // An unknown alias is not found.
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/join/{}", enc("#nowhere:localhost")),
            &bob.token,
            json!({}),
        )
        .await;
    assert_eq!(
        (status, errcode(&body)),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stable_room_version_creates_and_works() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    for version in 1..=12 {
        let v = version.to_string();
        let room = server
            .create_room(
                &alice,
                json!({ "preset": "public_chat", "room_version": v, "name": "before" }),
            )
            .await;
        // v12 room ids are the create event's hash, without a server name.
        assert_eq!(room.ends_with(":localhost"), version < 12, "v{v}: {room}");
        let create = server.state_content(&alice, &room, "m.room.create").await;
        assert_eq!(create["room_version"], v.as_str(), "{create}");
        // From v11 on, the creator is the create event's sender.
        assert_eq!(
            create.get("creator").and_then(Value::as_str),
            (version < 11).then_some(alice.user_id.as_str()),
            "v{v}: {create}"
        );

        server.join(&bob, &room).await;
        let event_id = server.send_text(&bob, &room, &format!("hello v{v}")).await;
        // Event ids: `$random:server` in v1 and v2, the reference hash from v3 on.
        assert_eq!(event_id.contains(':'), version < 3, "v{v}: {event_id}");
        let (status, body) = server
            .send_state(&alice, &room, "m.room.name", "", json!({ "name": "after" }))
            .await;
        assert_eq!(status, StatusCode::OK, "v{v}: {body}");
        let (status, _) = server
            .send_state(&bob, &room, "m.room.name", "", json!({ "name": "bob's" }))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "v{v}");

        let sync = server.sync(&alice, None, 0).await;
        let events = timeline(&sync, &room);
        assert!(
            events.iter().any(|e| e["event_id"] == event_id.as_str()
                && e["content"]["body"] == format!("hello v{v}")),
            "v{v}: {sync}"
        );
        assert_eq!(
            server.state_content(&bob, &room, "m.room.name").await["name"],
            "after"
        );
    }

    let (status, body) = server
        .post(
            "/_matrix/client/v3/createRoom",
            &alice.token,
            json!({ "room_version": "999" }),
        )
        .await;
    assert_eq!(
        (status, errcode(&body)),
        (StatusCode::BAD_REQUEST, Some("M_UNSUPPORTED_ROOM_VERSION")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creation_content_goes_into_the_create_event() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server
        .create_room(
            &alice,
            json!({ "creation_content": { "type": "m.space", "m.federate": false } }),
        )
        .await;
    let create = server.state_content(&alice, &room, "m.room.create").await;
    assert_eq!(create["type"], "m.space", "{create}");
    assert_eq!(create["m.federate"], false, "{create}");
    assert_eq!(create["room_version"], "12", "{create}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_level_content_override_replaces_top_level_keys() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = server
        .create_room(
            &alice,
            json!({
                "preset": "public_chat",
                "room_version": "11",
                "power_level_content_override": {
                    "users": { alice.user_id.clone(): 100, bob.user_id.clone(): 60 },
                    "users_default": 10,
                    "events": { "m.room.topic": 80 },
                },
            }),
        )
        .await;
    let power = server
        .state_content(&alice, &room, "m.room.power_levels")
        .await;
    assert_eq!(
        power["users"],
        json!({ alice.user_id.clone(): 100, bob.user_id.clone(): 60 })
    );
    assert_eq!(power["users_default"], 10);
    // As in Synapse, each key given replaces the default's key of the same name.
    assert_eq!(power["events"], json!({ "m.room.topic": 80 }), "{power}");
    // Keys not given keep the defaults.
    assert_eq!(power["ban"], 50);
    assert_eq!(power["state_default"], 50);

    server.join(&bob, &room).await;
    server.join(&carol, &room).await;
    let (status, body) = server
        .send_state(&bob, &room, "m.room.topic", "", json!({ "topic": "x" }))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = server
        .send_state(&bob, &room, "m.room.name", "", json!({ "name": "x" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .send_state(&carol, &room, "m.room.name", "", json!({ "name": "y" }))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_visibility_publishes_and_defaults_to_public_chat() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let public = server
        .create_room(&alice, json!({ "visibility": "public" }))
        .await;
    let private = server
        .create_room(&alice, json!({ "visibility": "private" }))
        .await;
    assert_eq!(
        server
            .state_content(&alice, &public, "m.room.join_rules")
            .await["join_rule"],
        "public"
    );
    assert_eq!(
        server
            .state_content(&alice, &private, "m.room.join_rules")
            .await["join_rule"],
        "invite"
    );
    // This branch has no room directory endpoint yet; the directory is read in-process.
    let services = &server.server.as_ref().unwrap().services;
    let public_id = ruma::RoomId::parse(&public).unwrap();
    let private_id = ruma::RoomId::parse(&private).unwrap();
    assert!(services.rooms.is_public(&public_id).unwrap());
    assert!(!services.rooms.is_public(&private_id).unwrap());
    server.join(&bob, &public).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_replaces_the_room_and_carries_its_state() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    let old = server
        .create_room(
            &alice,
            json!({
                "preset": "public_chat",
                "room_version": "10",
                "name": "the room",
                "topic": "things",
                "room_alias_name": "up",
                "power_level_content_override": {
                    "users": { alice.user_id.clone(): 100, bob.user_id.clone(): 50 },
                },
            }),
        )
        .await;
    server.join(&bob, &old).await;
    server.join(&carol, &old).await;
    server.join(&dave, &old).await;
    let (status, body) = server
        .membership(&alice, &old, "ban", json!({ "user_id": dave.user_id }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let bob_since = next_batch(&server.sync(&bob, None, 0).await);

    // A moderator without the tombstone's power level may not upgrade.
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/upgrade", enc(&old)),
            &bob.token,
            json!({ "new_version": "11" }),
        )
        .await;
    assert_eq!(
        (status, errcode(&body)),
        (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")),
        "{body}"
    );
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/upgrade", enc(&old)),
            &alice.token,
            json!({ "new_version": "999" }),
        )
        .await;
    assert_eq!(
        (status, errcode(&body)),
        (StatusCode::BAD_REQUEST, Some("M_UNSUPPORTED_ROOM_VERSION")),
        "{body}"
    );
    assert_eq!(
        server
            .state_event(&alice, &old, "m.room.tombstone", "")
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/upgrade", enc(&old)),
            &alice.token,
            json!({ "new_version": "11" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new = body["replacement_room"].as_str().unwrap().to_owned();
    assert_ne!(new, old);

    // The old room points to the new one, and bob's sync shows it.
    let tombstone = server.state_content(&alice, &old, "m.room.tombstone").await;
    assert_eq!(tombstone["replacement_room"], new.as_str(), "{tombstone}");
    let sync = server.sync(&bob, Some(&bob_since), 0).await;
    assert!(
        timeline(&sync, &old)
            .iter()
            .any(|e| e["type"] == "m.room.tombstone"
                && e["content"]["replacement_room"] == new.as_str()),
        "{sync}"
    );

    // The new room knows its predecessor and has the old room's state.
    let create = server.state_content(&alice, &new, "m.room.create").await;
    assert_eq!(create["room_version"], "11");
    assert_eq!(create["predecessor"]["room_id"], old.as_str(), "{create}");
    assert_eq!(
        server.state_content(&alice, &new, "m.room.name").await["name"],
        "the room"
    );
    assert_eq!(
        server.state_content(&alice, &new, "m.room.topic").await["topic"],
        "things"
    );
    assert_eq!(
        server
            .state_content(&alice, &new, "m.room.join_rules")
            .await["join_rule"],
        "public"
    );
    let power = server
        .state_content(&alice, &new, "m.room.power_levels")
        .await;
    assert_eq!(power["users"][&bob.user_id], 50, "{power}");
    assert_eq!(power["users"][&alice.user_id], 100, "{power}");
    let (status, ban) = server
        .state_event(&alice, &new, "m.room.member", &dave.user_id)
        .await;
    assert_eq!(
        (status, &ban["membership"]),
        (StatusCode::OK, &json!("ban"))
    );

    // The alias moved: it now leads to the new room, which names it canonical.
    assert_eq!(
        server
            .state_content(&alice, &new, "m.room.canonical_alias")
            .await["alias"],
        "#up:localhost"
    );
    let old_alias = server
        .state_content(&alice, &old, "m.room.canonical_alias")
        .await;
    assert!(old_alias.get("alias").is_none(), "{old_alias}");
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/join/{}", enc("#up:localhost")),
            &carol.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], new.as_str());

    // Ordinary members can no longer speak or invite in the old room.
    let old_power = server
        .state_content(&alice, &old, "m.room.power_levels")
        .await;
    assert!(
        old_power["events_default"].as_i64().unwrap() >= 50,
        "{old_power}"
    );
    assert!(old_power["invite"].as_i64().unwrap() >= 50, "{old_power}");
    let (status, body) = server
        .send_event(
            &carol,
            &old,
            "m.room.message",
            "late",
            json!({ "msgtype": "m.text", "body": "anyone?" }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // Upgrading again into v12: the upgrader is a creator there, not listed in `users`.
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/upgrade", enc(&new)),
            &alice.token,
            json!({ "new_version": "12" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v12 = body["replacement_room"].as_str().unwrap().to_owned();
    assert!(!v12.contains(':'), "{v12}");
    let create = server.state_content(&alice, &v12, "m.room.create").await;
    assert_eq!(create["predecessor"]["room_id"], new.as_str(), "{create}");
    let power = server
        .state_content(&alice, &v12, "m.room.power_levels")
        .await;
    assert!(power["users"].get(&alice.user_id).is_none(), "{power}");
    assert_eq!(power["users"][&bob.user_id], 50, "{power}");
    let (status, body) = server
        .send_state(&alice, &v12, "m.room.name", "", json!({ "name": "v12" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_grants_the_upgrader_no_extra_power() {
    // Alice may upgrade (100 >= the tombstone's 100), but bob outranks her; the new room's
    // power levels are the old room's, as in Synapse, not alice raised to bob's level.
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let users = json!({ alice.user_id.clone(): 100, bob.user_id.clone(): 150 });
    let old = server
        .create_room(
            &alice,
            json!({
                "preset": "public_chat",
                "room_version": "10",
                "power_level_content_override": { "users": users },
            }),
        )
        .await;
    server.join(&bob, &old).await;
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/upgrade", enc(&old)),
            &alice.token,
            json!({ "new_version": "11" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new = body["replacement_room"].as_str().unwrap().to_owned();
    let power = server
        .state_content(&alice, &new, "m.room.power_levels")
        .await;
    assert_eq!(power["users"], users, "{power}");
    server.join(&bob, &new).await;
    let mut demoted = power.clone();
    demoted["users"][&bob.user_id] = json!(0);
    let (status, body) = server
        .send_state(&alice, &new, "m.room.power_levels", "", demoted)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knocking_asks_and_a_moderator_answers() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    let room = server
        .create_room(
            &alice,
            json!({
                "preset": "private_chat",
                "name": "knock knock",
                "initial_state": [ { "type": "m.room.join_rules", "content": { "join_rule": "knock" } } ],
            }),
        )
        .await;
    server.send_text(&alice, &room, "members only").await;
    let alice_since = next_batch(&server.sync(&alice, None, 0).await);

    // Joining needs an invite; knocking is allowed.
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            &bob.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/knock/{}", enc(&room)),
            &bob.token,
            json!({ "reason": "let me in" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room.as_str());

    // The knocker sees the room under `knock` with the stripped state.
    let bob_sync = server.sync(&bob, None, 0).await;
    let knock_state = bob_sync["rooms"]["knock"][&room]["knock_state"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no knock section: {bob_sync}"));
    let member = knock_state
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        .expect("bob's knock in knock_state");
    assert_eq!(member["content"]["membership"], "knock");
    assert!(
        knock_state
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "knock knock"),
        "{bob_sync}"
    );
    assert!(bob_sync["rooms"]["join"].get(&room).is_none());
    let bob_since = next_batch(&bob_sync);

    // The room's members see the knock.
    let sync = server.sync(&alice, Some(&alice_since), 0).await;
    let knock = timeline(&sync, &room)
        .into_iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("alice does not see the knock: {sync}"));
    assert_eq!(knock["content"]["membership"], "knock");
    assert_eq!(knock["content"]["reason"], "let me in");

    // Alice accepts by inviting; bob's sync moves the room to `invite`, and he joins.
    server.invite(&alice, &room, &bob).await;
    let sync = server.sync(&bob, Some(&bob_since), 0).await;
    assert!(sync["rooms"]["invite"].get(&room).is_some(), "{sync}");
    assert!(sync["rooms"]["knock"].get(&room).is_none(), "{sync}");
    server.join(&bob, &room).await;
    // A member has nothing to knock for.
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/knock/{}", enc(&room)),
            &bob.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // Carol knocks and is turned away (kicked): her sync shows the room left, and
    // none of the room's history, which she never had the right to see.
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/knock/{}", enc(&room)),
            &carol.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let carol_since = next_batch(&server.sync(&carol, None, 0).await);
    let (status, body) = server
        .membership(
            &alice,
            &room,
            "kick",
            json!({ "user_id": carol.user_id, "reason": "no" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sync = server.sync(&carol, Some(&carol_since), 0).await;
    let left = sync["rooms"]["leave"][&room]["timeline"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no leave section: {sync}"));
    let last = left.last().unwrap();
    assert_eq!(
        (
            &last["type"],
            &last["state_key"],
            &last["content"]["membership"]
        ),
        (
            &json!("m.room.member"),
            &json!(carol.user_id),
            &json!("leave")
        )
    );
    assert!(
        left.iter().all(|e| e["type"] == "m.room.member"),
        "carol sees events of a room she never joined: {sync}"
    );
    let initial = server
        .sync_with(
            &carol,
            None,
            &format!("filter={}", enc(r#"{"room":{"include_leave":true}}"#)),
        )
        .await;
    let events = initial["rooms"]["leave"][&room]["timeline"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no leave section: {initial}"));
    assert!(
        events.iter().all(|e| e["content"]["body"].is_null()),
        "carol sees messages of a room she never joined: {initial}"
    );

    // Knocking where the join rule does not allow it is refused.
    let private = server
        .create_room(&alice, json!({ "preset": "private_chat" }))
        .await;
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/knock/{}", enc(&private)),
            &dave.token,
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
async fn restricted_rooms_admit_members_of_the_allowed_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let space = server
        .create_room(
            &alice,
            json!({ "preset": "private_chat", "creation_content": { "type": "m.space" } }),
        )
        .await;
    server.invite(&alice, &space, &bob).await;
    server.join(&bob, &space).await;
    let room = server
        .create_room(
            &alice,
            json!({
                "preset": "private_chat",
                "initial_state": [ {
                    "type": "m.room.join_rules",
                    "content": {
                        "join_rule": "restricted",
                        "allow": [ { "type": "m.room_membership", "room_id": space } ],
                    },
                } ],
            }),
        )
        .await;

    // A member of the space joins without an invite, authorised by a local user.
    server.join(&bob, &room).await;
    let (status, member) = server
        .state_event(&alice, &room, "m.room.member", &bob.user_id)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(member["membership"], "join");
    assert_eq!(
        member["join_authorised_via_users_server"],
        alice.user_id.as_str(),
        "{member}"
    );

    // Anyone else is refused, even when only invited to the space...
    server.invite(&alice, &space, &carol).await;
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            &carol.token,
            json!({}),
        )
        .await;
    assert_eq!(
        (status, errcode(&body)),
        (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")),
        "{body}"
    );
    // ...unless invited.
    server.invite(&alice, &room, &carol).await;
    server.join(&carol, &room).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_needs_a_leave_and_hides_the_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.join(&bob, &room).await;
    server.send_text(&alice, &room, "remember me").await;

    let (status, body) = server.membership(&bob, &room, "forget", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    server.leave(&bob, &room).await;

    let include_leave = format!("filter={}", enc(r#"{"room":{"include_leave":true}}"#));
    let sync = server.sync_with(&bob, None, &include_leave).await;
    assert!(sync["rooms"]["leave"].get(&room).is_some(), "{sync}");
    let (status, _) = server.messages(&bob, &room, "dir=b").await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = server.membership(&bob, &room, "forget", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sync = server.sync_with(&bob, None, &include_leave).await;
    assert!(sync["rooms"]["leave"].get(&room).is_none(), "{sync}");
    // A forgotten room's history can no longer be read.
    let (status, body) = server.messages(&bob, &room, "dir=b").await;
    assert_eq!(
        (status, errcode(&body)),
        (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")),
        "{body}"
    );

    // Joining again brings the room back.
    server.join(&bob, &room).await;
    let sync = server.sync(&bob, None, 0).await;
    assert!(sync["rooms"]["join"].get(&room).is_some(), "{sync}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_lists_filter_by_membership_and_time() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    let erin = server.register("erin").await;
    let frank = server.register("frank").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.join(&bob, &room).await;
    server.join(&carol, &room).await;
    let before_carol_left = next_batch(&server.sync(&alice, None, 0).await);
    server.leave(&carol, &room).await;
    server.invite(&alice, &room, &dave).await;
    server.join(&erin, &room).await;
    let (status, body) = server
        .membership(&alice, &room, "ban", json!({ "user_id": erin.user_id }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let all = members(&server, &alice, &room, "").await;
    assert_eq!(all.len(), 5, "{all:?}");
    assert!(all.iter().all(|e| e["type"] == "m.room.member"));
    assert_eq!(membership_of(&all, &carol), Some("leave"));
    assert_eq!(membership_of(&all, &dave), Some("invite"));
    assert_eq!(membership_of(&all, &erin), Some("ban"));

    let mut joined = vec![alice.user_id.clone(), bob.user_id.clone()];
    joined.sort();
    assert_eq!(
        user_ids(&members(&server, &alice, &room, "membership=join").await),
        joined
    );
    assert_eq!(
        user_ids(&members(&server, &alice, &room, "membership=invite").await),
        [dave.user_id.clone()]
    );
    let mut not_left = vec![
        alice.user_id.clone(),
        bob.user_id.clone(),
        dave.user_id.clone(),
        erin.user_id.clone(),
    ];
    not_left.sort();
    assert_eq!(
        user_ids(&members(&server, &alice, &room, "not_membership=leave").await),
        not_left
    );

    // `at` a sync token: the members as they were then.
    let then = members(&server, &alice, &room, &format!("at={before_carol_left}")).await;
    let mut then_ids = vec![
        alice.user_id.clone(),
        bob.user_id.clone(),
        carol.user_id.clone(),
    ];
    then_ids.sort();
    assert_eq!(user_ids(&then), then_ids);
    assert_eq!(membership_of(&then, &carol), Some("join"));

    // joined_members: exactly the joined users, with their profiles.
    let (status, body) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&room)),
            &bob.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let joined_map = body["joined"].as_object().unwrap();
    let mut keys: Vec<_> = joined_map.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, joined);
    assert_eq!(body["joined"][&alice.user_id]["display_name"], "alice");

    // Someone who was never in the room sees neither list.
    let (status, body) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{}/members", enc(&room)),
            &frank.token,
        )
        .await;
    assert_eq!(
        (status, errcode(&body)),
        (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")),
        "{body}"
    );
    let (status, _) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&room)),
            &frank.token,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A former member sees the members as they were when she left (Synapse).
    let past = members(&server, &carol, &room, "").await;
    assert_eq!(membership_of(&past, &carol), Some("leave"));
    assert_eq!(membership_of(&past, &bob), Some("join"));
    assert_eq!(membership_of(&past, &dave), None, "{past:?}");
}
