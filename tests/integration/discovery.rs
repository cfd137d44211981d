//! What a client or a peer learns before logging in: versions, capabilities, well-known,
//! the server's signing keys, and CORS headers for web clients.

use std::collections::BTreeMap;

use reqwest::{Method, StatusCode};
use ruma::{
    CanonicalJsonObject,
    serde::Base64,
    signatures::{PublicKeyMap, PublicKeySet, verify_json},
};
use serde_json::{Value, json};

use crate::common::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_capabilities_and_well_known() {
    let server = TestServer::start_with(|c| {
        c.well_known_client = Some("https://matrix.example.org".to_owned());
        c.well_known_server = Some("matrix.example.org:443".to_owned());
    })
    .await;
    let (status, versions) = server
        .request(Method::GET, "/_matrix/client/versions", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        versions["versions"]
            .as_array()
            .unwrap()
            .contains(&json!("v1.12")),
        "{versions}"
    );

    let alice = server.register("alice").await;
    let (status, caps) = server
        .get("/_matrix/client/v3/capabilities", &alice.token)
        .await;
    assert_eq!(status, StatusCode::OK, "{caps}");
    assert_eq!(caps["capabilities"]["m.room_versions"]["default"], "12");
    assert_eq!(
        caps["capabilities"]["m.room_versions"]["available"]["1"],
        "stable"
    );
    // Absent means enabled (the spec's default); it must not say false.
    assert_ne!(
        caps["capabilities"]["m.change_password"]["enabled"], false,
        "{caps}"
    );

    let (status, client) = server
        .request(Method::GET, "/.well-known/matrix/client", None, None)
        .await;
    assert_eq!(
        (status, client["m.homeserver"]["base_url"].as_str()),
        (StatusCode::OK, Some("https://matrix.example.org"))
    );
    let (status, srv) = server
        .request(Method::GET, "/.well-known/matrix/server", None, None)
        .await;
    assert_eq!(
        (status, srv["m.server"].as_str()),
        (StatusCode::OK, Some("matrix.example.org:443"))
    );

    let bare = TestServer::start().await;
    let (status, body) = bare
        .request(Method::GET, "/.well-known/matrix/client", None, None)
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_keys_are_self_signed_and_stable_across_restarts() {
    let server = TestServer::start().await;
    let (status, keys) = server
        .request(Method::GET, "/_matrix/key/v2/server", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    assert_eq!(keys["server_name"], "localhost");
    let verify_keys = keys["verify_keys"].as_object().unwrap();
    assert_eq!(verify_keys.len(), 1);
    let (key_id, key) = verify_keys.iter().next().unwrap();
    assert!(key_id.starts_with("ed25519:"));

    let mut public = PublicKeySet::new();
    public.insert(
        key_id.clone(),
        Base64::parse(key["key"].as_str().unwrap()).unwrap(),
    );
    let mut map = PublicKeyMap::new();
    map.insert("localhost".to_owned(), public);
    let object: CanonicalJsonObject = serde_json::from_value(keys.clone()).unwrap();
    verify_json(&map, &object).expect("the key response is signed by the key it lists");
    assert!(keys["valid_until_ts"].as_u64().unwrap() > 0);

    let server = server.restart().await;
    let (_, again) = server
        .request(Method::GET, "/_matrix/key/v2/server", None, None)
        .await;
    assert_eq!(
        again["verify_keys"], keys["verify_keys"],
        "the signing key survives a restart"
    );
    let _: BTreeMap<String, Value> = serde_json::from_value(again["verify_keys"].clone()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_headers_for_web_clients() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let preflight = http
        .request(
            Method::OPTIONS,
            format!("{}/_matrix/client/v3/createRoom", server.base),
        )
        .header("Origin", "https://app.element.io")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_lowercase()
            .contains("authorization")
    );

    let response = http
        .get(format!("{}/_matrix/client/versions", server.base))
        .header("Origin", "https://app.element.io")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    // Errors carry the headers too, or a browser hides the errcode from the client.
    let response = http
        .get(format!("{}/_matrix/client/v3/account/whoami", server.base))
        .header("Origin", "https://app.element.io")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_rules_default_to_the_server_ruleset() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    for path in [
        "/_matrix/client/v3/pushrules/",
        "/_matrix/client/v3/pushrules/global/",
    ] {
        let (status, rules) = server.get(path, &alice.token).await;
        assert_eq!(status, StatusCode::OK, "{path}: {rules}");
        let global = if rules.get("global").is_some() {
            &rules["global"]
        } else {
            &rules
        };
        let ids: Vec<&str> = global["override"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["rule_id"].as_str().unwrap())
            .collect();
        assert!(ids.contains(&".m.rule.master"), "{rules}");
        let at = |id: &str| {
            ids.iter()
                .position(|r| *r == id)
                .unwrap_or_else(|| panic!("{id} missing: {ids:?}"))
        };
        assert_eq!(
            at(".m.rule.contains_display_name"),
            at(".m.rule.is_user_mention") + 1
        );
        assert_eq!(at(".m.rule.roomnotif"), at(".m.rule.is_room_mention") + 1);
        assert!(
            global["underride"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["rule_id"] == ".m.rule.message")
        );
    }
}
