//! Profiles: reading and changing display name and avatar, and the member events a change
//! sends into the user's rooms.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{TestServer, User, enc, timeline};

fn field_path(user: &str, field: &str) -> String {
    format!("/_matrix/client/v3/profile/{}/{field}", enc(user))
}

async fn set_displayname(server: &TestServer, user: &User, name: &str) {
    let (status, body) = server
        .put(
            &field_path(&user.user_id, "displayname"),
            &user.token,
            json!({ "displayname": name }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn member_state(server: &TestServer, reader: &User, room: &str, user: &str) -> Value {
    let (status, body) = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
                enc(room),
                enc(user)
            ),
            &reader.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn member_events<'a>(sync: &'a Value, room: &str, user: &str) -> Vec<&'a Value> {
    timeline(sync, room)
        .into_iter()
        .filter(|e| e["type"] == "m.room.member" && e["state_key"] == user)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn displayname_change_reaches_other_members_as_a_member_event() {
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

    set_displayname(&server, &alice, "Alice Liddell").await;

    let sync = server.sync(&bob, Some(&since), 10_000).await;
    let events = member_events(&sync, &room, &alice.user_id);
    assert_eq!(events.len(), 1, "{sync}");
    assert_eq!(events[0]["content"]["membership"], "join");
    assert_eq!(events[0]["content"]["displayname"], "Alice Liddell");
    assert_eq!(
        events[0]["unsigned"]["prev_content"]["displayname"],
        "alice"
    );

    let (status, body) = server
        .request(
            Method::GET,
            &field_path(&alice.user_id, "displayname"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "displayname": "Alice Liddell" }));
    let (_, members) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&room)),
            &bob.token,
        )
        .await;
    assert_eq!(
        members["joined"][&alice.user_id]["display_name"],
        "Alice Liddell"
    );

    // Setting the same name again changes nothing, so no event is sent.
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    set_displayname(&server, &alice, "Alice Liddell").await;
    server.send_text(&alice, &room, "marker").await;
    let sync = server.sync(&bob, Some(&since), 10_000).await;
    assert!(
        member_events(&sync, &room, &alice.user_id).is_empty(),
        "{sync}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avatar_and_clearing_fields() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let avatar = "mxc://localhost/abcdef";
    let (status, body) = server
        .put(
            &field_path(&alice.user_id, "avatar_url"),
            &alice.token,
            json!({ "avatar_url": avatar }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let profile_path = format!("/_matrix/client/v3/profile/{}", enc(&alice.user_id));
    let (_, profile) = server.get(&profile_path, &alice.token).await;
    assert_eq!(
        profile,
        json!({ "displayname": "alice", "avatar_url": avatar })
    );

    // The empty string clears a field.
    set_displayname(&server, &alice, "").await;
    let (status, body) = server
        .get(&field_path(&alice.user_id, "displayname"), &alice.token)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["errcode"], "M_NOT_FOUND");
    let member = member_state(&server, &alice, &room, &alice.user_id).await;
    assert_eq!(
        member,
        json!({ "membership": "join", "avatar_url": avatar })
    );

    let (status, body) = server
        .request(
            Method::DELETE,
            &field_path(&alice.user_id, "avatar_url"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let member = member_state(&server, &alice, &room, &alice.user_id).await;
    assert_eq!(member, json!({ "membership": "join" }));
    // Nothing left: reported as no profile, as Synapse does.
    let (status, body) = server.get(&profile_path, &alice.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_changes_a_profile_and_bad_input_is_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;

    let (status, body) = server
        .put(
            &field_path(&alice.user_id, "displayname"),
            &bob.token,
            json!({ "displayname": "not alice" }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    let (_, body) = server
        .get(&field_path(&alice.user_id, "displayname"), &bob.token)
        .await;
    assert_eq!(body["displayname"], "alice");

    let (status, body) = server
        .request(
            Method::PUT,
            &field_path(&alice.user_id, "displayname"),
            None,
            Some(json!({ "displayname": "x" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["errcode"], "M_MISSING_TOKEN");

    for path in [
        "/_matrix/client/v3/profile/@nobody:localhost".to_owned(),
        field_path("@nobody:localhost", "displayname"),
    ] {
        let (status, body) = server.get(&path, &alice.token).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["errcode"], "M_NOT_FOUND");
    }
    // A user of a server that cannot be reached: asked over federation, which fails with
    // 502, as Synapse answers.
    let path = field_path("@nobody:unreachable.invalid", "avatar_url");
    let (status, body) = server.get(&path, &alice.token).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{path}: {body}");

    let (status, body) = server
        .put(
            &field_path(&alice.user_id, "displayname"),
            &alice.token,
            json!({ "displayname": 5 }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errcode"], "M_BAD_JSON");
    let (status, body) = server
        .put(
            &field_path(&alice.user_id, "displayname"),
            &alice.token,
            json!({ "displayname": "x".repeat(300) }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = server
        .put(
            &field_path(&alice.user_id, "m.tz"),
            &alice.token,
            json!({ "m.tz": "Europe/London" }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_keeps_other_member_content_and_skips_left_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let kept = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let left = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.join(&bob, &kept).await;
    server.join(&bob, &left).await;
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&left)),
            &bob.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
                enc(&kept),
                enc(&bob.user_id)
            ),
            &bob.token,
            json!({ "membership": "join", "displayname": "bob", "org.example.flair": "gold" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    set_displayname(&server, &bob, "Robert").await;

    let member = member_state(&server, &alice, &kept, &bob.user_id).await;
    assert_eq!(
        member,
        json!({ "membership": "join", "displayname": "Robert", "org.example.flair": "gold" })
    );
    // The room bob left is not touched: he is not joined again.
    let member = member_state(&server, &alice, &left, &bob.user_id).await;
    assert_eq!(member["membership"], "leave");
    assert_eq!(member["displayname"], Value::Null);
}
