//! Events that break the room version's authorisation rules are refused and leave the
//! room's state as it was.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestServer, User, enc};

async fn state(server: &TestServer, user: &User, room: &str) -> Value {
    let (status, state) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{}/state", enc(room)),
            &user.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{state}");
    let mut events: Vec<Value> = state.as_array().unwrap().clone();
    for event in &mut events {
        // `age` changes between reads; the event itself must not.
        event["unsigned"].as_object_mut().map(|u| u.remove("age"));
    }
    events.sort_by_key(|e| e["event_id"].as_str().unwrap().to_owned());
    Value::Array(events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_without_power_cannot_set_state() {
    for version in ["12", "10", "1"] {
        let server = TestServer::start().await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = server
            .create_room(
                &alice,
                json!({ "preset": "public_chat", "room_version": version }),
            )
            .await;
        server.join(&bob, &room).await;
        let before = state(&server, &alice, &room).await;

        let (status, body) = server
            .put(
                &format!("/_matrix/client/v3/rooms/{}/state/m.room.name", enc(&room)),
                &bob.token,
                json!({ "name": "hijacked" }),
            )
            .await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")),
            "v{version}: {body}"
        );
        let (status, body) = server
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/state/m.room.power_levels",
                    enc(&room)
                ),
                &bob.token,
                json!({ "users": { bob.user_id.clone(): 100 } }),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "v{version}: {body}");
        assert_eq!(
            state(&server, &alice, &room).await,
            before,
            "v{version}: state changed"
        );

        // Alice, with power, can.
        let (status, body) = server
            .put(
                &format!("/_matrix/client/v3/rooms/{}/state/m.room.name", enc(&room)),
                &alice.token,
                json!({ "name": "fine" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "v{version}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banned_user_cannot_join_and_kicked_user_cannot_send() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.join(&bob, &room).await;
    server.join(&carol, &room).await;

    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/ban", enc(&room)),
            &alice.token,
            json!({ "user_id": bob.user_id, "reason": "spam" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let before = state(&server, &alice, &room).await;
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            &bob.token,
            json!({}),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")),
        "{body}"
    );
    assert_eq!(state(&server, &alice, &room).await, before);

    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/kick", enc(&room)),
            &alice.token,
            json!({ "user_id": carol.user_id }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/k1",
                enc(&room)
            ),
            &carol.token,
            json!({ "msgtype": "m.text", "body": "still here?" }),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")),
        "{body}"
    );

    // Bob (not a moderator) cannot kick or ban; unban restores the right to join.
    let (status, _) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/ban", enc(&room)),
            &carol.token,
            json!({ "user_id": alice.user_id }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/unban", enc(&room)),
            &alice.token,
            json!({ "user_id": bob.user_id }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.join(&bob, &room).await;

    // The kicked user's sync shows the room under `leave` with the kick.
    let sync = server.sync(&carol, None, 0).await;
    assert!(sync["rooms"]["join"].get(&room).is_none());
    let carol_sync = server.sync(&carol, Some("1"), 0).await;
    let events = carol_sync["rooms"]["leave"][&room]["timeline"]["events"]
        .as_array()
        .expect("leave section");
    let kick = events
        .iter()
        .rev()
        .find(|e| e["type"] == "m.room.member")
        .unwrap();
    assert_eq!(
        (
            kick["state_key"].as_str(),
            kick["content"]["membership"].as_str(),
            kick["sender"].as_str()
        ),
        (
            Some(carol.user_id.as_str()),
            Some("leave"),
            Some(alice.user_id.as_str())
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_only_rooms_need_an_invite() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "private_chat" }))
        .await;
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            &bob.token,
            json!({}),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")),
        "{body}"
    );
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            &alice.token,
            json!({ "user_id": bob.user_id }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.join(&bob, &room).await;
}
