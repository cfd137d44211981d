//! Account data and room tags: stored per user, private to them, delivered by `/sync`.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{TestServer, enc};

fn global_path(user: &str, kind: &str) -> String {
    format!("/_matrix/client/v3/user/{}/account_data/{kind}", enc(user))
}

fn room_path(user: &str, room: &str, kind: &str) -> String {
    format!(
        "/_matrix/client/v3/user/{}/rooms/{}/account_data/{kind}",
        enc(user),
        enc(room)
    )
}

fn tags_path(user: &str, room: &str) -> String {
    format!(
        "/_matrix/client/v3/user/{}/rooms/{}/tags",
        enc(user),
        enc(room)
    )
}

/// The account data events of a sync response, global or of one joined room.
fn account_data<'a>(sync: &'a Value, room: Option<&str>) -> Vec<&'a Value> {
    let section = match room {
        Some(room) => &sync["rooms"]["join"][room]["account_data"]["events"],
        None => &sync["account_data"]["events"],
    };
    section
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_account_data_round_trips_and_syncs() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let path = global_path(&alice.user_id, "org.example.settings");

    let (status, body) = server.get(&path, &alice.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["errcode"], "M_NOT_FOUND");

    let (status, body) = server
        .put(&path, &alice.token, json!({ "theme": "dark" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server.get(&path, &alice.token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "theme": "dark" }));

    let sync = server.sync(&alice, None, 0).await;
    assert!(
        account_data(&sync, None)
            .contains(&&json!({ "type": "org.example.settings", "content": { "theme": "dark" } })),
        "{sync}"
    );

    // An incremental sync carries the change, and only the change.
    let since = next_batch(&sync);
    let (status, _) = server
        .put(&path, &alice.token, json!({ "theme": "light" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let sync = server.sync(&alice, Some(&since), 10_000).await;
    assert_eq!(
        account_data(&sync, None),
        [&json!({ "type": "org.example.settings", "content": { "theme": "light" } })],
        "{sync}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_account_data_round_trips_and_syncs_in_the_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let since = next_batch(&server.sync(&alice, None, 0).await);
    let path = room_path(&alice.user_id, &room, "org.example.draft");

    let (status, body) = server
        .put(&path, &alice.token, json!({ "text": "half a thought" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = server.get(&path, &alice.token).await;
    assert_eq!(body, json!({ "text": "half a thought" }));
    // Room data is not global data of the same type.
    let (status, _) = server
        .get(
            &global_path(&alice.user_id, "org.example.draft"),
            &alice.token,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let sync = server.sync(&alice, Some(&since), 10_000).await;
    assert_eq!(
        account_data(&sync, Some(&room)),
        [&json!({ "type": "org.example.draft", "content": { "text": "half a thought" } })],
        "{sync}"
    );
    assert!(account_data(&sync, None).is_empty(), "{sync}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_data_is_private_and_server_managed_types_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({})).await;
    let global = global_path(&alice.user_id, "org.example.secret");
    let in_room = room_path(&alice.user_id, &room, "org.example.secret");
    server
        .put(&global, &alice.token, json!({ "pin": 1234 }))
        .await;

    for path in [&global, &in_room, &tags_path(&alice.user_id, &room)] {
        let (status, body) = server.get(path, &bob.token).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(body["errcode"], "M_FORBIDDEN");
    }
    for path in [&global, &in_room] {
        let (status, body) = server.put(path, &bob.token, json!({ "pin": 0 })).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
    }
    let (_, body) = server.get(&global, &alice.token).await;
    assert_eq!(body, json!({ "pin": 1234 }));

    let (status, body) = server
        .put(
            &room_path(&alice.user_id, &room, "m.fully_read"),
            &alice.token,
            json!({ "event_id": "$x" }),
        )
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert_eq!(body["errcode"], "M_BAD_JSON");
    let (status, body) = server
        .put(
            &global_path(&alice.user_id, "m.push_rules"),
            &alice.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");

    let (status, body) = server
        .put(&global, &alice.token, json!(["not", "an", "object"]))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_are_stored_as_m_tag_and_reach_sync() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({})).await;
    let since = next_batch(&server.sync(&alice, None, 0).await);
    let tags = tags_path(&alice.user_id, &room);

    let (status, body) = server.get(&tags, &alice.token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "tags": {} }));

    let (status, body) = server
        .put(
            &format!("{tags}/u.work"),
            &alice.token,
            json!({ "order": 0.5 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = server
        .put(&format!("{tags}/m.favourite"), &alice.token, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = server.get(&tags, &alice.token).await;
    assert_eq!(
        body,
        json!({ "tags": { "u.work": { "order": 0.5 }, "m.favourite": {} } })
    );

    let sync = server.sync(&alice, Some(&since), 10_000).await;
    assert_eq!(
        account_data(&sync, Some(&room)),
        [&json!({
            "type": "m.tag",
            "content": { "tags": { "u.work": { "order": 0.5 }, "m.favourite": {} } },
        })],
        "{sync}"
    );
    // Tags are account data: the generic endpoint sees the same event.
    let (_, body) = server
        .get(&room_path(&alice.user_id, &room, "m.tag"), &alice.token)
        .await;
    assert_eq!(body["tags"]["u.work"]["order"], 0.5);

    let since = next_batch(&sync);
    let (status, _) = server
        .request(
            Method::DELETE,
            &format!("{tags}/u.work"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let sync = server.sync(&alice, Some(&since), 10_000).await;
    assert_eq!(
        account_data(&sync, Some(&room)),
        [&json!({ "type": "m.tag", "content": { "tags": { "m.favourite": {} } } })],
        "{sync}"
    );
    // Removing a tag the room does not have is fine.
    let (status, _) = server
        .request(
            Method::DELETE,
            &format!("{tags}/u.work"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = server
        .put(&format!("{tags}/u.evil"), &bob.token, json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    let (_, body) = server.get(&tags, &alice.token).await;
    assert_eq!(body, json!({ "tags": { "m.favourite": {} } }));
}
