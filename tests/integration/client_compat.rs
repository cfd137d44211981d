//! Requests as real client libraries send them, where they differ from the spec's
//! examples.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::TestServer;

/// matrix-nio's `register_with_token` opens the dance with an `auth` object that has
/// neither `type` nor `session` (`{"initial_device_display_name": ...}`) and expects the
/// 401 challenge with a session back, as Synapse answers. A 400 for the missing session
/// made token registration, the documented way to the first user, fail in nio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_with_an_auth_object_without_type_or_session_gets_the_challenge() {
    let server = TestServer::start_with(|config| {
        config.allow_registration = false;
        config.registration_token = Some("let-me-in".to_owned());
    })
    .await;
    let (status, challenge) = server
        .request(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(json!({
                "username": "tokenuser",
                "password": "a-password",
                "auth": { "initial_device_display_name": "matrix-nio" },
            })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{challenge}");
    assert_eq!(
        challenge["flows"],
        json!([{ "stages": ["m.login.registration_token"] }])
    );
    let session = challenge["session"].as_str().expect("session").to_owned();

    let (status, response) = server
        .request(
            Method::POST,
            "/_matrix/client/v3/register",
            None,
            Some(json!({
                "username": "tokenuser",
                "password": "a-password",
                "auth": {
                    "type": "m.login.registration_token",
                    "token": "let-me-in",
                    "session": session,
                },
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response["user_id"], "@tokenuser:localhost");
}
