//! Bad input gets the spec's error, never a panic or a half-written change.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{TestServer, enc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_get_not_json_and_bad_json() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;

    let (status, body) = server
        .raw(
            Method::POST,
            "/_matrix/client/v3/createRoom",
            Some(&alice.token),
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_NOT_JSON")),
        "{body}"
    );

    let (status, body) = server
        .raw(
            Method::POST,
            "/_matrix/client/v3/createRoom",
            Some(&alice.token),
            b"[1,2]".to_vec(),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_BAD_JSON")),
        "{body}"
    );

    // Wrong types for known fields.
    let (status, body) = server
        .post(
            "/_matrix/client/v3/createRoom",
            &alice.token,
            json!({ "name": 42 }),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_BAD_JSON")),
        "{body}"
    );
    let (status, body) = server
        .post(
            "/_matrix/client/v3/createRoom",
            &alice.token,
            json!({ "invite": "not-a-list" }),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_BAD_JSON")),
        "{body}"
    );

    // Nothing was created by the failed requests.
    let (_, rooms) = server
        .get("/_matrix/client/v3/joined_rooms", &alice.token)
        .await;
    assert_eq!(rooms["joined_rooms"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_too_large() {
    let server = TestServer::start_with(|c| c.max_request_size = 4096).await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let big = "x".repeat(10_000);
    let (status, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/big",
                enc(&room)
            ),
            &alice.token,
            json!({ "msgtype": "m.text", "body": big }),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("M_TOO_LARGE")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_over_64_kib_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let big = "x".repeat(70_000);
    let (status, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/big",
                enc(&room)
            ),
            &alice.token,
            json!({ "msgtype": "m.text", "body": big }),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("M_TOO_LARGE")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_identifiers_are_invalid_params() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (status, body) = server
        .put(
            "/_matrix/client/v3/rooms/not-a-room-id/send/m.room.message/1",
            &alice.token,
            json!({ "body": "x" }),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM")),
        "{body}"
    );
    let (status, body) = server
        .post(
            "/_matrix/client/v3/rooms/!nope:localhost/invite",
            &alice.token,
            json!({ "user_id": "not a user" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        matches!(
            body["errcode"].as_str(),
            Some("M_INVALID_PARAM" | "M_BAD_JSON")
        ),
        "{body}"
    );
    let (status, body) = server
        .request(Method::POST, "/_matrix/client/v3/register", None, Some(json!({ "username": "Not Valid!", "password": "x", "auth": { "type": "m.login.dummy" } })))
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_INVALID_USERNAME")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_endpoints_and_methods_are_unrecognized() {
    let server = TestServer::start().await;
    let (status, body) = server
        .request(
            Method::GET,
            "/_matrix/client/v3/no/such/endpoint",
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_UNRECOGNIZED")),
        "{body}"
    );
    let (status, body) = server
        .request(Method::DELETE, "/_matrix/client/v3/createRoom", None, None)
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("M_UNRECOGNIZED")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_missing_unknown_and_logged_out() {
    let server = TestServer::start().await;
    let (status, body) = server
        .request(Method::GET, "/_matrix/client/v3/account/whoami", None, None)
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("M_MISSING_TOKEN")),
        "{body}"
    );
    let (status, body) = server
        .get("/_matrix/client/v3/account/whoami", "nonsense")
        .await;
    assert_eq!(
        (
            status,
            body["errcode"].as_str(),
            body["soft_logout"].as_bool()
        ),
        (
            StatusCode::UNAUTHORIZED,
            Some("M_UNKNOWN_TOKEN"),
            Some(false)
        ),
        "{body}"
    );

    let alice = server.register("alice").await;
    let (status, body) = server
        .get("/_matrix/client/v3/account/whoami", &alice.token)
        .await;
    assert_eq!(
        (status, body["user_id"].as_str()),
        (StatusCode::OK, Some(alice.user_id.as_str())),
        "{body}"
    );
    let (status, _) = server
        .post("/_matrix/client/v3/logout", &alice.token, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = server
        .get("/_matrix/client/v3/account/whoami", &alice.token)
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("M_UNKNOWN_TOKEN")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_requests_get_limit_exceeded() {
    let server = TestServer::start_with(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.per_second = 0.5;
        c.rate_limits.burst = 3;
    })
    .await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let mut limited = None;
    for i in 0..10 {
        let (status, body) = server
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/r{i}",
                    enc(&room)
                ),
                &alice.token,
                json!({ "msgtype": "m.text", "body": "spam" }),
            )
            .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(body);
            break;
        }
    }
    let body = limited.expect("the limiter stopped the burst");
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
    assert!(body["retry_after_ms"].as_u64().unwrap() > 0, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_respects_config() {
    let server = TestServer::start_with(|c| c.allow_registration = false).await;
    let (status, body) = server
        .request(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(json!({ "username": "x", "password": "y", "auth": { "type": "m.login.dummy" } })),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")),
        "{body}"
    );

    let server = TestServer::start_with(|c| {
        c.allow_registration = false;
        c.registration_token = Some("letmein".to_owned());
    })
    .await;
    let validity = "/_matrix/client/v1/register/m.login.registration_token/validity?token=";
    let (status, body) = server
        .request(Method::GET, &format!("{validity}letmein"), None, None)
        .await;
    assert_eq!(
        (status, body["valid"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{body}"
    );
    let (_, body) = server
        .request(Method::GET, &format!("{validity}nope"), None, None)
        .await;
    assert_eq!(body["valid"], false);
    let (status, body) = server
        .request(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(json!({ "username": "x", "password": "y" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body["flows"][0]["stages"],
        json!(["m.login.registration_token"])
    );
    let session = body["session"].clone();
    let (status, body) = server
        .request(Method::POST, "/_matrix/client/v3/register", None, Some(json!({ "username": "x", "password": "y", "auth": { "type": "m.login.registration_token", "token": "wrong", "session": session } })))
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("M_FORBIDDEN")),
        "{body}"
    );
    let (status, body) = server
        .request(Method::POST, "/_matrix/client/v3/register", None, Some(json!({ "username": "x", "password": "y", "auth": { "type": "m.login.registration_token", "token": "letmein", "session": session } })))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The name is now taken.
    let (status, body) = server
        .request(
            Method::GET,
            "/_matrix/client/v3/register/available?username=x",
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_USER_IN_USE")),
        "{body}"
    );
}
