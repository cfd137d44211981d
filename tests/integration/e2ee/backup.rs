//! Server-side key backup: versions, keys at three levels, etags and counts, and the rule
//! that only a better session key replaces a stored one.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestServer, User, enc, errcode};

fn session(first_index: u64, forwarded: u64, verified: bool, marker: &str) -> Value {
    json!({
        "first_message_index": first_index,
        "forwarded_count": forwarded,
        "is_verified": verified,
        "session_data": { "ciphertext": marker, "ephemeral": "e", "mac": "m" },
    })
}

async fn call(
    server: &TestServer,
    user: &User,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let (status, body) = server
        .request(
            method,
            &format!("/_matrix/client/v3/room_keys/{path}"),
            Some(&user.token),
            body,
        )
        .await;
    (status.as_u16(), body)
}

#[tokio::test]
async fn backup_versions_keys_etags_and_replacement_rules() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (status, body) = call(&server, &alice, Method::GET, "version", None).await;
    assert_eq!(
        (status, errcode(&body)),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );

    let algorithm = "m.megolm_backup.v1.curve25519-aes-sha2";
    let (status, body) = call(
        &server,
        &alice,
        Method::POST,
        "version",
        Some(json!({ "algorithm": algorithm, "auth_data": { "public_key": "abc" } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v1 = body["version"].as_str().expect("version").to_owned();

    let room = "!room:localhost";
    let keys_path = |suffix: &str, version: &str| format!("keys{suffix}?version={}", enc(version));
    let room_path = format!("/{}", enc(room));
    let (status, body) = call(
        &server,
        &alice,
        Method::PUT,
        &keys_path(&format!("{room_path}/s1"), &v1),
        Some(session(5, 1, false, "first")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 1);
    let etag1 = body["etag"].clone();

    // A worse key (higher index) does not replace it; a better one does.
    let (_, body) = call(
        &server,
        &alice,
        Method::PUT,
        &keys_path(&room_path, &v1),
        Some(json!({ "sessions": { "s1": session(9, 0, false, "worse"), "s2": session(0, 0, false, "other") } })),
    )
    .await;
    assert_eq!(body["count"], 2, "{body}");
    assert_ne!(body["etag"], etag1);
    let (_, body) = call(
        &server,
        &alice,
        Method::GET,
        &keys_path(&format!("{room_path}/s1"), &v1),
        None,
    )
    .await;
    assert_eq!(body["session_data"]["ciphertext"], "first", "{body}");
    // A verified key beats an unverified one even with a higher index.
    let (_, body) = call(
        &server,
        &alice,
        Method::PUT,
        &keys_path("", &v1),
        Some(
            json!({ "rooms": { room: { "sessions": { "s1": session(7, 0, true, "verified") } } } }),
        ),
    )
    .await;
    assert_eq!(body["count"], 2, "{body}");
    let (_, body) = call(&server, &alice, Method::GET, &keys_path("", &v1), None).await;
    assert_eq!(
        body["rooms"][room]["sessions"]["s1"]["session_data"]["ciphertext"], "verified",
        "{body}"
    );
    // Same verification and index: the lower forwarded count wins.
    call(
        &server,
        &alice,
        Method::PUT,
        &keys_path(&format!("{room_path}/s1"), &v1),
        Some(session(7, 3, true, "more forwards")),
    )
    .await;
    let (_, body) = call(
        &server,
        &alice,
        Method::GET,
        &keys_path(&room_path, &v1),
        None,
    )
    .await;
    assert_eq!(
        body["sessions"]["s1"]["session_data"]["ciphertext"], "verified",
        "{body}"
    );

    // Version info carries count and etag.
    let (status, info) = call(&server, &alice, Method::GET, &format!("version/{v1}"), None).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["count"], 2);
    assert_eq!(info["algorithm"], algorithm);

    // A new version becomes current; uploads to the old one are refused.
    let (_, body) = call(
        &server,
        &alice,
        Method::POST,
        "version",
        Some(json!({ "algorithm": algorithm, "auth_data": { "public_key": "def" } })),
    )
    .await;
    let v2 = body["version"].as_str().expect("version").to_owned();
    let (_, latest) = call(&server, &alice, Method::GET, "version", None).await;
    assert_eq!(latest["version"], v2, "{latest}");
    let (status, body) = call(
        &server,
        &alice,
        Method::PUT,
        &keys_path(&format!("{room_path}/s3"), &v1),
        Some(session(0, 0, false, "x")),
    )
    .await;
    assert_eq!(
        (status, errcode(&body)),
        (403, Some("M_WRONG_ROOM_KEYS_VERSION")),
        "{body}"
    );
    assert_eq!(body["current_version"], v2);

    // Update auth_data; the algorithm cannot change.
    let (status, body) = call(
        &server,
        &alice,
        Method::PUT,
        &format!("version/{v2}"),
        Some(json!({ "algorithm": algorithm, "auth_data": { "public_key": "ghi" } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, info) = call(&server, &alice, Method::GET, &format!("version/{v2}"), None).await;
    assert_eq!(info["auth_data"]["public_key"], "ghi");
    let (status, _) = call(
        &server,
        &alice,
        Method::PUT,
        &format!("version/{v2}"),
        Some(json!({ "algorithm": "other", "auth_data": {} })),
    )
    .await;
    assert_eq!(status, 400);

    // Deletes at each level.
    let (_, body) = call(
        &server,
        &alice,
        Method::DELETE,
        &keys_path(&format!("{room_path}/s2"), &v1),
        None,
    )
    .await;
    assert_eq!(body["count"], 1, "{body}");
    let (_, body) = call(
        &server,
        &alice,
        Method::DELETE,
        &keys_path(&room_path, &v1),
        None,
    )
    .await;
    assert_eq!(body["count"], 0, "{body}");
    let (status, _) = call(
        &server,
        &alice,
        Method::GET,
        &keys_path(&format!("{room_path}/s1"), &v1),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &server,
        &alice,
        Method::DELETE,
        &format!("version/{v1}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(&server, &alice, Method::GET, &format!("version/{v1}"), None).await;
    assert_eq!(status, 404);

    // Another user sees none of it.
    let bob = server.register("bob").await;
    let (status, _) = call(&server, &bob, Method::GET, &format!("version/{v2}"), None).await;
    assert_eq!(status, 404);
}
