//! Accounts: login forms, refresh tokens, password changes and deactivation through
//! user-interactive auth, and logging out everywhere.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{TestServer, User, enc, errcode, next_batch, timeline};

async fn login_raw(server: &TestServer, body: Value) -> (StatusCode, Value) {
    server
        .request(Method::POST, "/_matrix/client/v3/login", None, Some(body))
        .await
}

async fn whoami(server: &TestServer, token: &str) -> (StatusCode, Value) {
    server.get("/_matrix/client/v3/account/whoami", token).await
}

async fn assert_token_works(server: &TestServer, token: &str, user: &User) {
    let (status, body) = whoami(server, token).await;
    assert_eq!(
        (status, body["user_id"].as_str()),
        (StatusCode::OK, Some(user.user_id.as_str())),
        "{body}"
    );
}

async fn assert_token_dead(server: &TestServer, token: &str) {
    let (status, body) = whoami(server, token).await;
    assert_eq!(
        (status, errcode(&body)),
        (StatusCode::UNAUTHORIZED, Some("M_UNKNOWN_TOKEN")),
        "{body}"
    );
}

async fn refresh(server: &TestServer, refresh_token: &str) -> (StatusCode, Value) {
    server
        .request(
            Method::POST,
            "/_matrix/client/v3/refresh",
            None,
            Some(json!({ "refresh_token": refresh_token })),
        )
        .await
}

fn password_auth(user: &User, password: &str, session: &Value) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user.user_id },
        "password": password,
        "session": session,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_by_localpart_full_id_and_legacy_user_field() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (status, body) = server
        .request(Method::GET, "/_matrix/client/v3/login", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body["flows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["type"] == "m.login.password"),
        "{body}"
    );

    for (what, body) in [
        (
            "localpart",
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": alice.password }),
        ),
        (
            "full id",
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": alice.user_id }, "password": alice.password }),
        ),
        (
            "legacy user",
            json!({ "type": "m.login.password", "user": "alice", "password": alice.password }),
        ),
        (
            "legacy full id",
            json!({ "type": "m.login.password", "user": alice.user_id, "password": alice.password }),
        ),
    ] {
        let (status, response) = login_raw(&server, body).await;
        assert_eq!(status, StatusCode::OK, "{what}: {response}");
        assert_eq!(response["user_id"], alice.user_id.as_str(), "{what}");
        assert!(response["device_id"].is_string(), "{what}: {response}");
        assert!(
            response.get("refresh_token").is_none(),
            "{what}: {response}"
        );
        assert!(
            response.get("expires_in_ms").is_none(),
            "{what}: {response}"
        );
        assert_token_works(&server, response["access_token"].as_str().unwrap(), &alice).await;
    }

    // A device id chosen by the client is used.
    let (status, response) = login_raw(
        &server,
        json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": "alice" },
            "password": alice.password,
            "device_id": "MYPHONE",
            "initial_device_display_name": "phone",
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response["device_id"], "MYPHONE");
    let (_, me) = whoami(&server, response["access_token"].as_str().unwrap()).await;
    assert_eq!(me["device_id"], "MYPHONE");

    for (what, body) in [
        (
            "wrong password",
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": "nope" }),
        ),
        (
            "unknown user",
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "nobody" }, "password": "nope" }),
        ),
    ] {
        let (status, response) = login_raw(&server, body).await;
        assert_eq!(
            (status, errcode(&response)),
            (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")),
            "{what}: {response}"
        );
    }
    let (status, response) = login_raw(
        &server,
        json!({ "type": "m.login.magic", "identifier": { "type": "m.id.user", "user": "alice" } }),
    )
    .await;
    assert_eq!(
        (status, errcode(&response)),
        (StatusCode::BAD_REQUEST, Some("M_UNKNOWN")),
        "{response}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_rotate_and_expire() {
    let server = TestServer::start_with(|c| c.access_token_lifetime_ms = 2_000).await;
    let alice = server.register("alice").await;
    let (status, login) = login_raw(
        &server,
        json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": "alice" },
            "password": alice.password,
            "refresh_token": true,
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let access1 = login["access_token"].as_str().unwrap().to_owned();
    let refresh1 = login["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned();
    assert_eq!(login["expires_in_ms"], 2_000, "{login}");
    assert_token_works(&server, &access1, &alice).await;

    let (status, refreshed) = refresh(&server, &refresh1).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let access2 = refreshed["access_token"].as_str().unwrap().to_owned();
    let refresh2 = refreshed["refresh_token"]
        .as_str()
        .expect("new refresh")
        .to_owned();
    assert_eq!(refreshed["expires_in_ms"], 2_000, "{refreshed}");
    assert_ne!(access2, access1);
    assert_ne!(refresh2, refresh1);
    assert_token_works(&server, &access2, &alice).await;
    // Once the new pair is in use the old refresh token is spent.
    let (status, body) = refresh(&server, &refresh1).await;
    assert_eq!(
        (status, errcode(&body)),
        (StatusCode::UNAUTHORIZED, Some("M_UNKNOWN_TOKEN")),
        "{body}"
    );

    // An expired access token is a soft logout; the refresh token revives the session.
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let (status, body) = whoami(&server, &access2).await;
    assert_eq!(
        (status, errcode(&body), body["soft_logout"].as_bool()),
        (
            StatusCode::UNAUTHORIZED,
            Some("M_UNKNOWN_TOKEN"),
            Some(true)
        ),
        "{body}"
    );
    let (status, refreshed) = refresh(&server, &refresh2).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let access3 = refreshed["access_token"].as_str().unwrap().to_owned();
    let refresh3 = refreshed["refresh_token"].as_str().unwrap().to_owned();
    assert_token_works(&server, &access3, &alice).await;

    // Logging out ends the refresh token too.
    let (status, _) = server
        .post("/_matrix/client/v3/logout", &access3, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = refresh(&server, &refresh3).await;
    assert_eq!(
        (status, errcode(&body)),
        (StatusCode::UNAUTHORIZED, Some("M_UNKNOWN_TOKEN")),
        "{body}"
    );
    let (status, body) = refresh(&server, "garbage").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_refresh_token_lasts_until_the_new_pair_is_used() {
    // Spec (/refresh): "The old refresh token remains valid until the new access token or
    // refresh token is used, at which point the old refresh token is revoked." A client
    // that lost the response to a refresh can retry it.
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (status, login) = login_raw(
        &server,
        json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": "alice" },
            "password": alice.password,
            "refresh_token": true,
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let refresh1 = login["refresh_token"].as_str().unwrap().to_owned();

    let (status, lost) = refresh(&server, &refresh1).await;
    assert_eq!(status, StatusCode::OK, "{lost}");
    let (status, retried) = refresh(&server, &refresh1).await;
    assert_eq!(status, StatusCode::OK, "retry of a refresh: {retried}");
    let access2 = retried["access_token"].as_str().unwrap().to_owned();
    let refresh2 = retried["refresh_token"].as_str().unwrap().to_owned();
    // Using the new access token spends the old refresh token.
    assert_token_works(&server, &access2, &alice).await;
    let (status, body) = refresh(&server, &refresh1).await;
    assert_eq!(
        (status, errcode(&body)),
        (StatusCode::UNAUTHORIZED, Some("M_UNKNOWN_TOKEN")),
        "{body}"
    );

    // So does using the new refresh token.
    let (status, body) = refresh(&server, &refresh2).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refresh3 = body["refresh_token"].as_str().unwrap().to_owned();
    let (status, body) = refresh(&server, &refresh3).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access4 = body["access_token"].as_str().unwrap().to_owned();
    let (status, body) = refresh(&server, &refresh2).await;
    assert_eq!(
        (status, errcode(&body)),
        (StatusCode::UNAUTHORIZED, Some("M_UNKNOWN_TOKEN")),
        "{body}"
    );
    assert_token_works(&server, &access4, &alice).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_change_needs_the_current_password() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let other_device = server.login(&alice).await;
    let third_device = server.login(&alice).await;
    let body = json!({ "new_password": "changed-1", "logout_devices": true });

    let (status, challenge) = server
        .post(
            "/_matrix/client/v3/account/password",
            &alice.token,
            body.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{challenge}");
    assert_eq!(
        challenge["flows"],
        json!([{ "stages": ["m.login.password"] }])
    );
    let session = challenge["session"].clone();
    assert!(session.is_string(), "{challenge}");

    let mut attempt = body.clone();
    attempt["auth"] = password_auth(&alice, "wrong", &session);
    let (status, failed) = server
        .post("/_matrix/client/v3/account/password", &alice.token, attempt)
        .await;
    assert_eq!(
        (status, errcode(&failed)),
        (StatusCode::UNAUTHORIZED, Some("M_FORBIDDEN")),
        "{failed}"
    );
    assert!(failed["flows"].is_array(), "{failed}");
    // Nothing changed.
    assert_token_works(&server, &other_device.token, &alice).await;
    server.login(&alice).await;

    let mut attempt = body.clone();
    attempt["auth"] = password_auth(&alice, &alice.password, &failed["session"]);
    let (status, response) = server
        .post("/_matrix/client/v3/account/password", &alice.token, attempt)
        .await;
    assert_eq!(status, StatusCode::OK, "{response}");

    // Other devices are logged out, this one is not.
    assert_token_works(&server, &alice.token, &alice).await;
    assert_token_dead(&server, &other_device.token).await;
    assert_token_dead(&server, &third_device.token).await;
    let (status, response) = login_raw(
        &server,
        json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": alice.password }),
    )
    .await;
    assert_eq!(
        (status, errcode(&response)),
        (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")),
        "{response}"
    );
    let alice = User {
        password: "changed-1".to_owned(),
        ..alice
    };
    let kept = server.login(&alice).await;

    // logout_devices: false keeps the other sessions.
    let (_, challenge) = server
        .post(
            "/_matrix/client/v3/account/password",
            &alice.token,
            json!({ "new_password": "changed-2", "logout_devices": false }),
        )
        .await;
    let (status, response) = server
        .post(
            "/_matrix/client/v3/account/password",
            &alice.token,
            json!({
                "new_password": "changed-2",
                "logout_devices": false,
                "auth": password_auth(&alice, "changed-1", &challenge["session"]),
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_token_works(&server, &kept.token, &alice).await;

    // Left out, logout_devices defaults to true.
    let (_, challenge) = server
        .post(
            "/_matrix/client/v3/account/password",
            &alice.token,
            json!({ "new_password": "changed-3" }),
        )
        .await;
    let (status, response) = server
        .post(
            "/_matrix/client/v3/account/password",
            &alice.token,
            json!({
                "new_password": "changed-3",
                "auth": password_auth(&alice, "changed-2", &challenge["session"]),
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_token_dead(&server, &kept.token).await;
    assert_token_works(&server, &alice.token, &alice).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivation_leaves_rooms_and_keeps_the_name_taken() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(&bob, json!({ "preset": "public_chat" }))
        .await;
    server.join(&alice, &room).await;
    let invited_to = server
        .create_room(
            &bob,
            json!({ "preset": "private_chat", "invite": [alice.user_id] }),
        )
        .await;
    let since = next_batch(&server.sync(&bob, None, 0).await);

    let (status, challenge) = server
        .post(
            "/_matrix/client/v3/account/deactivate",
            &alice.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{challenge}");
    let (status, failed) = server
        .post(
            "/_matrix/client/v3/account/deactivate",
            &alice.token,
            json!({ "auth": password_auth(&alice, "wrong", &challenge["session"]) }),
        )
        .await;
    assert_eq!(
        (status, errcode(&failed)),
        (StatusCode::UNAUTHORIZED, Some("M_FORBIDDEN")),
        "{failed}"
    );
    assert_token_works(&server, &alice.token, &alice).await;

    let (status, response) = server
        .post(
            "/_matrix/client/v3/account/deactivate",
            &alice.token,
            json!({ "auth": password_auth(&alice, &alice.password, &failed["session"]) }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response["id_server_unbind_result"], "no-support");

    // Bob sees alice leave the room, and her invite turned down.
    let sync = server.sync(&bob, Some(&since), 0).await;
    for room in [&room, &invited_to] {
        let leave = timeline(&sync, room)
            .into_iter()
            .find(|e| e["type"] == "m.room.member" && e["state_key"] == alice.user_id.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("no member event for alice in {room}: {sync}"));
        assert_eq!(leave["content"]["membership"], "leave", "{leave}");
        assert_eq!(leave["sender"], alice.user_id.as_str());
    }
    let (_, joined) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&room)),
            &bob.token,
        )
        .await;
    assert_eq!(
        joined["joined"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        [&bob.user_id]
    );

    // The account is gone for good, but its name stays taken.
    assert_token_dead(&server, &alice.token).await;
    let (status, response) = login_raw(
        &server,
        json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": alice.password }),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{response}");
    assert!(
        matches!(
            errcode(&response),
            Some("M_USER_DEACTIVATED" | "M_FORBIDDEN")
        ),
        "{response}"
    );
    let (status, response) = server
        .request(
            Method::GET,
            "/_matrix/client/v3/register/available?username=alice",
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, errcode(&response)),
        (StatusCode::BAD_REQUEST, Some("M_USER_IN_USE")),
        "{response}"
    );
    let (status, response) = server
        .request(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(json!({ "username": "alice", "password": "again", "auth": { "type": "m.login.dummy" } })),
        )
        .await;
    assert_eq!(
        (status, errcode(&response)),
        (StatusCode::BAD_REQUEST, Some("M_USER_IN_USE")),
        "{response}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_all_ends_every_session() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let second = server.login(&alice).await;
    let (status, with_refresh) = login_raw(
        &server,
        json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": "alice" },
            "password": alice.password,
            "refresh_token": true,
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let third_token = with_refresh["access_token"].as_str().unwrap();
    let third_refresh = with_refresh["refresh_token"].as_str().unwrap();

    // Plain logout ends one session only.
    let fourth = server.login(&alice).await;
    let (status, _) = server
        .post("/_matrix/client/v3/logout", &fourth.token, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_token_dead(&server, &fourth.token).await;
    assert_token_works(&server, &alice.token, &alice).await;

    let (status, body) = server
        .post("/_matrix/client/v3/logout/all", &second.token, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for token in [&alice.token, &second.token, third_token] {
        assert_token_dead(&server, token).await;
    }
    let (status, body) = refresh(&server, third_refresh).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    let again = server.login(&alice).await;
    assert_token_works(&server, &again.token, &alice).await;
}
