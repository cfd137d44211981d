//! Room aliases, the public room directory and the user directory.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{TestServer, User, enc};

fn alias_path(alias: &str) -> String {
    format!("/_matrix/client/v3/directory/room/{}", enc(alias))
}

fn visibility_path(room: &str) -> String {
    format!("/_matrix/client/v3/directory/list/room/{}", enc(room))
}

async fn delete(server: &TestServer, path: &str, user: &User) -> (StatusCode, Value) {
    server
        .request(Method::DELETE, path, Some(&user.token), None)
        .await
}

fn room_ids(body: &Value) -> Vec<String> {
    body["chunk"]
        .as_array()
        .unwrap_or_else(|| panic!("no chunk in {body}"))
        .iter()
        .map(|r| r["room_id"].as_str().unwrap().to_owned())
        .collect()
}

fn user_ids(body: &Value) -> Vec<String> {
    body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {body}"))
        .iter()
        .map(|r| r["user_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn search_rooms(server: &TestServer, user: &User, term: &str) -> Value {
    let (status, body) = server
        .post(
            "/_matrix/client/v3/publicRooms",
            &user.token,
            json!({ "filter": { "generic_search_term": term } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn listed(server: &TestServer, user: &User) -> Vec<String> {
    let (status, body) = server
        .get("/_matrix/client/v3/publicRooms", &user.token)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    room_ids(&body)
}

async fn search_users(server: &TestServer, user: &User, term: &str, limit: Option<u64>) -> Value {
    let mut body = json!({ "search_term": term });
    if let Some(limit) = limit {
        body["limit"] = json!(limit);
    }
    let (status, body) = server
        .post(
            "/_matrix/client/v3/user_directory/search",
            &user.token,
            body,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The content of the room's current `m.room.canonical_alias`.
async fn canonical_alias(server: &TestServer, user: &User, room: &str) -> Value {
    let (status, body) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{}/state", enc(room)),
            &user.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.canonical_alias")
        .map(|e| e["content"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_are_created_resolved_and_listed() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({})).await;

    let (status, body) = server
        .put(
            &alias_path("#chat:localhost"),
            &alice.token,
            json!({ "room_id": room }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .request(Method::GET, &alias_path("#chat:localhost"), None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "room_id": room, "servers": ["localhost"] }));

    let (status, body) = server
        .put(
            &alias_path("#chat:localhost"),
            &alice.token,
            json!({ "room_id": room }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["errcode"], "M_UNKNOWN");
    let (status, body) = server
        .put(
            &alias_path("#chat:elsewhere.example"),
            &alice.token,
            json!({ "room_id": room }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errcode"], "M_INVALID_PARAM");
    let (status, body) = server
        .put(
            &alias_path("#bobs:localhost"),
            &bob.token,
            json!({ "room_id": room }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = server
        .get(&alias_path("#bobs:localhost"), &alice.token)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["errcode"], "M_NOT_FOUND");

    let aliases = format!("/_matrix/client/v3/rooms/{}/aliases", enc(&room));
    let (status, body) = server.get(&aliases, &alice.token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "aliases": ["#chat:localhost"] }));
    let (status, body) = server.get(&aliases, &bob.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_deletion_needs_the_creator_or_a_moderator() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    // The canonical alias event names bob's alias before it exists; the server only
    // checks that when a client sends the event.
    let room = server
        .create_room(
            &alice,
            json!({
                "preset": "public_chat",
                "room_alias_name": "alices",
                "initial_state": [{
                    "type": "m.room.canonical_alias",
                    "content": { "alias": "#alices:localhost", "alt_aliases": ["#bobs:localhost"] },
                }],
            }),
        )
        .await;
    server.join(&bob, &room).await;
    server.join(&carol, &room).await;
    for alias in ["#bobs:localhost", "#bobs2:localhost"] {
        let (status, body) = server
            .put(&alias_path(alias), &bob.token, json!({ "room_id": room }))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    // Neither creator nor moderator.
    let (status, body) = delete(&server, &alias_path("#bobs:localhost"), &carol).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    let (status, _) = delete(&server, &alias_path("#alices:localhost"), &bob).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The creator may, without power in the room.
    let (status, body) = delete(&server, &alias_path("#bobs2:localhost"), &bob).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A moderator may delete what others created; the canonical alias event forgets it.
    let (status, body) = delete(&server, &alias_path("#bobs:localhost"), &alice).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        canonical_alias(&server, &alice, &room).await,
        json!({ "alias": "#alices:localhost", "alt_aliases": [] })
    );
    for gone in ["#bobs:localhost", "#bobs2:localhost"] {
        let (status, _) = server.get(&alias_path(gone), &alice.token).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{gone}");
    }
    let (status, body) = delete(&server, &alias_path("#bobs:localhost"), &alice).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = delete(&server, &alias_path("#x:elsewhere.example"), &alice).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errcode"], "M_INVALID_PARAM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_rooms_are_listed_searched_and_paginated() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let alpha = server
        .create_room(
            &alice,
            json!({ "visibility": "public", "name": "Alpha Lounge", "room_alias_name": "alpha" }),
        )
        .await;
    let beta = server
        .create_room(
            &alice,
            json!({ "visibility": "public", "name": "Beta Base", "topic": "All about Rust" }),
        )
        .await;
    let gamma = server
        .create_room(&alice, json!({ "visibility": "public", "name": "Gamma" }))
        .await;
    // Published, but nobody could join or read it: not listed.
    server
        .create_room(
            &alice,
            json!({ "visibility": "public", "preset": "private_chat", "name": "Hidden" }),
        )
        .await;
    server
        .create_room(&alice, json!({ "name": "Unpublished" }))
        .await;
    server.join(&bob, &beta).await;

    let (status, all) = server
        .request(Method::GET, "/_matrix/client/v3/publicRooms", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all["total_room_count_estimate"], 3);
    let ids = room_ids(&all);
    assert_eq!(ids.len(), 3, "{all}");
    // Largest first.
    assert_eq!(ids[0], beta);
    let entry = all["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room_id"] == alpha.as_str())
        .unwrap();
    assert_eq!(
        entry,
        &json!({
            "room_id": alpha,
            "name": "Alpha Lounge",
            "canonical_alias": "#alpha:localhost",
            "num_joined_members": 1,
            "world_readable": false,
            "guest_can_join": false,
        })
    );
    // `join_rule` is left out when it is the default, public.
    assert_eq!(all["chunk"][0]["topic"], "All about Rust");
    assert_eq!(all["chunk"][0]["num_joined_members"], 2);

    let (_, first) = server
        .get("/_matrix/client/v3/publicRooms?limit=2", &bob.token)
        .await;
    assert_eq!(room_ids(&first), ids[..2]);
    assert!(first.get("prev_batch").is_none(), "{first}");
    let next = first["next_batch"].as_str().expect("next_batch");
    let (_, second) = server
        .get(
            &format!("/_matrix/client/v3/publicRooms?limit=2&since={next}"),
            &bob.token,
        )
        .await;
    assert_eq!(room_ids(&second), ids[2..]);
    assert!(second.get("next_batch").is_none(), "{second}");
    assert!(second["prev_batch"].is_string(), "{second}");

    let body = search_rooms(&server, &bob, "RUST").await;
    assert_eq!(room_ids(&body), [beta.clone()]);
    assert_eq!(body["total_room_count_estimate"], 3);
    assert_eq!(
        room_ids(&search_rooms(&server, &bob, "lounge").await),
        [alpha.clone()]
    );
    assert_eq!(
        room_ids(&search_rooms(&server, &bob, "#ALPHA:").await),
        [alpha.clone()]
    );
    assert_eq!(
        room_ids(&search_rooms(&server, &bob, "gamma").await),
        [gamma.clone()]
    );
    assert!(room_ids(&search_rooms(&server, &bob, "hidden").await).is_empty());

    let (status, body) = server
        .get("/_matrix/client/v3/publicRooms?since=later", &bob.token)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errcode"], "M_INVALID_PARAM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_visibility_is_changed_by_moderators_only() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.join(&bob, &room).await;

    let (status, body) = server
        .request(Method::GET, &visibility_path(&room), None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "visibility": "private" }));
    assert!(listed(&server, &bob).await.is_empty());

    let (status, body) = server
        .put(
            &visibility_path(&room),
            &bob.token,
            json!({ "visibility": "public" }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");

    let (status, body) = server
        .put(
            &visibility_path(&room),
            &alice.token,
            json!({ "visibility": "public" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = server.get(&visibility_path(&room), &bob.token).await;
    assert_eq!(body, json!({ "visibility": "public" }));
    assert_eq!(listed(&server, &bob).await, [room.clone()]);

    let (status, _) = server
        .put(
            &visibility_path(&room),
            &alice.token,
            json!({ "visibility": "private" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(listed(&server, &bob).await.is_empty());

    let (status, body) = server
        .put(
            &visibility_path(&room),
            &alice.token,
            json!({ "visibility": "secret" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = server
        .get(&visibility_path("!nosuchroom:localhost"), &alice.token)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["errcode"], "M_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_directory_finds_users_sharing_a_room_or_in_public_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    let private = server
        .create_room(&alice, json!({ "invite": [bob.user_id] }))
        .await;
    server.join(&bob, &private).await;
    server
        .create_room(&carol, json!({ "preset": "public_chat" }))
        .await;
    server.create_room(&dave, json!({})).await;
    let (status, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&bob.user_id)
            ),
            &bob.token,
            json!({ "displayname": "Bobby Tables" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let body = search_users(&server, &alice, "TABLES", None).await;
    assert_eq!(
        body,
        json!({
            "results": [{ "user_id": bob.user_id, "display_name": "Bobby Tables" }],
            "limited": false,
        })
    );
    assert_eq!(
        user_ids(&search_users(&server, &alice, "carol", None).await),
        [carol.user_id.clone()]
    );
    // Dave shares no room with alice and is in no public room.
    assert!(user_ids(&search_users(&server, &alice, "dave", None).await).is_empty());

    let body = search_users(&server, &alice, "localhost", None).await;
    let mut found = user_ids(&body);
    found.sort();
    assert_eq!(
        found,
        [
            alice.user_id.clone(),
            bob.user_id.clone(),
            carol.user_id.clone()
        ]
    );
    let body = search_users(&server, &alice, "localhost", Some(2)).await;
    assert_eq!(user_ids(&body).len(), 2);
    assert_eq!(body["limited"], true);
}
