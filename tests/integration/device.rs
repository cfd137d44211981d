//! Device management: listing, renaming, and removing devices behind password
//! re-authentication, which logs them out.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{TestServer, User};

fn device_path(device: &str) -> String {
    format!("/_matrix/client/v3/devices/{device}")
}

fn password_auth(user: &User, password: &str, session: Option<&Value>) -> Value {
    let mut auth = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user.user_id },
        "password": password,
    });
    if let Some(session) = session {
        auth["session"] = session.clone();
    }
    auth
}

async fn whoami(server: &TestServer, user: &User) -> (StatusCode, Value) {
    server
        .get("/_matrix/client/v3/account/whoami", &user.token)
        .await
}

fn device_ids(body: &Value) -> Vec<String> {
    let mut ids: Vec<String> = body["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_listed_and_renamed() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let phone = server.login(&alice).await;
    let bob = server.register("bob").await;

    let (status, body) = server.get("/_matrix/client/v3/devices", &alice.token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut expected = vec![alice.device_id.clone(), phone.device_id.clone()];
    expected.sort();
    assert_eq!(device_ids(&body), expected);
    assert!(body["devices"][0]["last_seen_ts"].is_u64(), "{body}");

    let (status, body) = server
        .put(
            &device_path(&phone.device_id),
            &alice.token,
            json!({ "display_name": "Phone" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .get(&device_path(&phone.device_id), &alice.token)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["device_id"], phone.device_id.as_str());
    assert_eq!(body["display_name"], "Phone");

    // A body without display_name leaves the name alone; null clears it.
    server
        .put(&device_path(&phone.device_id), &alice.token, json!({}))
        .await;
    let (_, body) = server
        .get(&device_path(&phone.device_id), &alice.token)
        .await;
    assert_eq!(body["display_name"], "Phone");
    server
        .put(
            &device_path(&phone.device_id),
            &alice.token,
            json!({ "display_name": null }),
        )
        .await;
    let (_, body) = server
        .get(&device_path(&phone.device_id), &alice.token)
        .await;
    assert_eq!(body["display_name"], Value::Null, "{body}");

    let (status, body) = server
        .put(
            &device_path(&phone.device_id),
            &alice.token,
            json!({ "display_name": "x".repeat(101) }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Unknown devices, and other users' devices, are not found.
    for (user, device) in [(&alice, "NOSUCHDEVICE"), (&bob, phone.device_id.as_str())] {
        let (status, body) = server.get(&device_path(device), &user.token).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["errcode"], "M_NOT_FOUND");
        let (status, _) = server
            .put(
                &device_path(device),
                &user.token,
                json!({ "display_name": "x" }),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_device_needs_the_password_and_logs_it_out() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let phone = server.login(&alice).await;
    let path = device_path(&phone.device_id);

    let (status, challenge) = server
        .request(Method::DELETE, &path, Some(&alice.token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{challenge}");
    assert_eq!(
        challenge["flows"],
        json!([{ "stages": ["m.login.password"] }])
    );
    let session = &challenge["session"];
    assert!(session.is_string(), "{challenge}");

    let (status, body) = server
        .request(
            Method::DELETE,
            &path,
            Some(&alice.token),
            Some(json!({ "auth": password_auth(&alice, "wrong", Some(session)) })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    assert_eq!(whoami(&server, &phone).await.0, StatusCode::OK);

    let (status, body) = server
        .request(
            Method::DELETE,
            &path,
            Some(&alice.token),
            Some(json!({ "auth": password_auth(&alice, &alice.password, Some(session)) })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = whoami(&server, &phone).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["errcode"], "M_UNKNOWN_TOKEN");
    let (_, body) = server.get("/_matrix/client/v3/devices", &alice.token).await;
    assert_eq!(device_ids(&body), [alice.device_id.clone()]);
    assert_eq!(whoami(&server, &alice).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_devices_removes_several_at_once() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let laptop = server.login(&alice).await;
    let tablet = server.login(&alice).await;
    let body = json!({ "devices": [laptop.device_id, tablet.device_id, "NEVERSEEN"] });

    let (status, challenge) = server
        .post(
            "/_matrix/client/v3/delete_devices",
            &alice.token,
            body.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{challenge}");
    assert_eq!(whoami(&server, &laptop).await.0, StatusCode::OK);

    let mut body = body;
    body["auth"] = password_auth(&alice, &alice.password, Some(&challenge["session"]));
    let (status, response) = server
        .post("/_matrix/client/v3/delete_devices", &alice.token, body)
        .await;
    assert_eq!(status, StatusCode::OK, "{response}");
    for gone in [&laptop, &tablet] {
        assert_eq!(whoami(&server, gone).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(whoami(&server, &alice).await.0, StatusCode::OK);
    let (_, body) = server.get("/_matrix/client/v3/devices", &alice.token).await;
    assert_eq!(device_ids(&body), [alice.device_id.clone()]);
}
