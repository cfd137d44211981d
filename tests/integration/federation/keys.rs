//! The transport: server discovery, `X-Matrix` request signing and checking, signing keys
//! (fetching, notary answers, rotation) and PDU signature checks between real servers.

use std::time::Duration;

use conduit::service::federation::{PduCheck, Resolver, rotate_signing_key};
use reqwest::StatusCode;
use ruma::{
    CanonicalJsonObject, OwnedServerName, RoomVersionId,
    api::federation::{
        authentication::{XMatrix, XMatrixSigningInput},
        query::get_profile_information,
    },
    signatures::Ed25519KeyPair,
};
use serde_json::{Value, json};

use crate::common::{TestServer, enc, errcode};

fn name(server: &TestServer) -> OwnedServerName {
    server.server_name.clone().try_into().expect("server name")
}

fn object(value: Value) -> CanonicalJsonObject {
    serde_json::from_value(value).expect("canonical JSON")
}

/// The `Authorization` value `from` would send for `method uri` to `destination`.
fn x_matrix(from: &TestServer, destination: &str, method: &str, uri: &str) -> XMatrix {
    let request = http::Request::builder()
        .method(method)
        .uri(uri)
        .body(Vec::<u8>::new())
        .expect("request");
    XMatrix::sign_http_request(
        &request,
        XMatrixSigningInput::new(
            name(from),
            destination.to_owned().try_into().expect("destination"),
            &from.services().globals.keypair,
        ),
    )
    .expect("signs")
}

async fn raw_get(
    server: &TestServer,
    uri: &str,
    authorization: Option<String>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().get(format!("{}{uri}", server.base));
    if let Some(authorization) = authorization {
        request = request.header("Authorization", authorization);
    }
    let response = request.send().await.expect("answered");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A user on `server` with a display name, and the profile query URI for them.
async fn user_with_profile(server: &TestServer) -> (String, String) {
    let user = server.register("bob").await;
    let (status, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&user.user_id)
            ),
            &user.token,
            json!({ "displayname": "Bob" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let uri = format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        enc(&user.user_id)
    );
    (user.user_id, uri)
}

#[tokio::test]
async fn a_server_fetches_and_checks_another_servers_keys() {
    let a = TestServer::start_federated().await;
    let b = TestServer::start_federated().await;
    let mut signed = object(json!({ "hello": "world" }));
    b.services().federation.sign(&mut signed).expect("signs");

    // A has never seen B: it fetches B's keys over HTTPS and checks the signature.
    a.services()
        .federation
        .verify_json(&name(&b), &signed)
        .await
        .expect("B's signature verifies at A");

    let mut tampered = signed.clone();
    tampered.insert("hello".to_owned(), "mars".into());
    let error = a
        .services()
        .federation
        .verify_json(&name(&b), &tampered)
        .await
        .expect_err("a changed object does not verify");
    assert_eq!(error.errcode, "M_FORBIDDEN");

    // Signed by A, not by B.
    let mut by_a = object(json!({ "hello": "world" }));
    a.services().federation.sign(&mut by_a).expect("signs");
    let error = b
        .services()
        .federation
        .verify_json(&name(&b), &by_a)
        .await
        .expect_err("no signature of B");
    assert_eq!(error.errcode, "M_FORBIDDEN");
}

#[tokio::test]
async fn a_signed_request_is_accepted_with_its_origin() {
    let a = TestServer::start_federated().await;
    let b = TestServer::start_federated().await;
    let (user_id, _) = user_with_profile(&b).await;

    let response = a
        .services()
        .federation
        .send(
            &name(&b),
            get_profile_information::v1::Request::new(user_id.try_into().expect("user id")),
        )
        .await
        .expect("B answers A's signed request");
    assert_eq!(response.get("displayname"), Some(&json!("Bob")));

    // B's Matrix error comes back with its errcode and status.
    let missing = format!("@nobody:{}", b.server_name);
    let error = a
        .services()
        .federation
        .send(
            &name(&b),
            get_profile_information::v1::Request::new(missing.try_into().expect("user id")),
        )
        .await
        .expect_err("no such user");
    assert_eq!(
        (error.status.as_u16(), error.errcode),
        (404, "M_NOT_FOUND"),
        "{error}"
    );
}

#[tokio::test]
async fn requests_without_a_valid_x_matrix_signature_are_refused() {
    let a = TestServer::start_federated().await;
    let b = TestServer::start_federated().await;
    let (_, uri) = user_with_profile(&b).await;
    let b_name = b.server_name.clone();

    // The control: correctly signed, accepted.
    let good = x_matrix(&a, &b_name, "GET", &uri);
    let (status, body) = raw_get(&b, &uri, Some(good.to_string())).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let wrong_destination = x_matrix(&a, "other.example", "GET", &uri);
    let mut unknown_key = good.clone();
    unknown_key.key = "ed25519:doesnotexist".try_into().expect("key id");
    // A signature over another URI.
    let mut wrong_uri = good.clone();
    wrong_uri.sig = x_matrix(&a, &b_name, "GET", "/_matrix/federation/v1/query/profile").sig;
    // A origin that is no server at all (its keys cannot be fetched).
    let mut unreachable_origin = good.clone();
    unreachable_origin.origin = "127.0.0.1:1".try_into().expect("server name");

    let cases = [
        ("no header", None),
        ("not X-Matrix", Some("Bearer abc".to_owned())),
        ("garbage", Some("X-Matrix nonsense".to_owned())),
        ("wrong destination", Some(wrong_destination.to_string())),
        ("unknown key id", Some(unknown_key.to_string())),
        ("bad signature", Some(wrong_uri.to_string())),
        ("unreachable origin", Some(unreachable_origin.to_string())),
    ];
    for (case, authorization) in cases {
        let (status, body) = raw_get(&b, &uri, authorization).await;
        assert_eq!(
            (status, errcode(&body)),
            (StatusCode::UNAUTHORIZED, Some("M_UNAUTHORIZED")),
            "{case}: {body}"
        );
    }
}

#[tokio::test]
async fn federation_switched_off_answers_403_and_sends_nothing() {
    let a = TestServer::start_federated().await;
    let b = TestServer::start_federated_with(|c| c.allow_federation = false).await;
    let (user_id, uri) = user_with_profile(&b).await;

    let signed = x_matrix(&a, &b.server_name, "GET", &uri);
    let (status, body) = raw_get(&b, &uri, Some(signed.to_string())).await;
    assert_eq!(
        (status, errcode(&body)),
        (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")),
        "{body}"
    );
    let (status, body) = raw_get(
        &b,
        &format!("/_matrix/key/v2/query/{}", enc(&a.server_name)),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "notary: {body}");
    // Its own key server still answers.
    let (status, _) = raw_get(&b, "/_matrix/key/v2/server", None).await;
    assert_eq!(status, StatusCode::OK);

    let error = b
        .services()
        .federation
        .send(
            &name(&a),
            get_profile_information::v1::Request::new(user_id.try_into().expect("user id")),
        )
        .await
        .expect_err("nothing is sent");
    assert_eq!(error.errcode, "M_FORBIDDEN");
}

#[tokio::test]
async fn a_notary_answers_with_the_servers_keys_countersigned() {
    let a = TestServer::start_federated().await;
    let b = TestServer::start_federated().await;

    let (status, b_own) = raw_get(&b, "/_matrix/key/v2/server", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, a_own) = raw_get(&a, "/_matrix/key/v2/server", None).await;
    assert_eq!(status, StatusCode::OK);

    let (status, get) = raw_get(
        &a,
        &format!("/_matrix/key/v2/query/{}", enc(&b.server_name)),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{get}");
    let response = reqwest::Client::new()
        .post(format!("{}/_matrix/key/v2/query", a.base))
        .json(&json!({ "server_keys": { b.server_name.clone(): {} } }))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    let post: Value = response.json().await.expect("json");

    for answer in [&get, &post] {
        let keys = answer["server_keys"].as_array().expect("server_keys");
        assert_eq!(keys.len(), 1, "{answer}");
        let key_object = &keys[0];
        assert_eq!(key_object["server_name"], json!(b.server_name));
        assert_eq!(key_object["verify_keys"], b_own["verify_keys"]);
        // Both signatures verify with the keys each server publishes.
        let public_keys = |own: &Value, server: &str| {
            let set = own["verify_keys"]
                .as_object()
                .expect("verify_keys")
                .iter()
                .map(|(id, k)| {
                    (
                        id.clone(),
                        ruma::serde::Base64::parse(k["key"].as_str().expect("key"))
                            .expect("base64"),
                    )
                })
                .collect();
            (server.to_owned(), set)
        };
        let map = [
            public_keys(&b_own, &b.server_name),
            public_keys(&a_own, &a.server_name),
        ]
        .into();
        ruma::signatures::verify_json(&map, &object(key_object.clone()))
            .expect("signed by B and countersigned by A");
    }

    // A server that cannot be reached: nothing to vouch for.
    let (status, body) = raw_get(&a, "/_matrix/key/v2/query/127.0.0.1:1", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["server_keys"], json!([]));
}

/// A minimal PDU of room version 10 from `sender`'s server, hashed and signed with `key`.
fn signed_pdu(server: &str, key: &Ed25519KeyPair, origin_server_ts: u64) -> CanonicalJsonObject {
    let mut pdu = object(json!({
        "auth_events": [],
        "content": { "body": "hello" },
        "depth": 3,
        "origin_server_ts": origin_server_ts,
        "prev_events": [],
        "room_id": format!("!room:{server}"),
        "sender": format!("@alice:{server}"),
        "type": "m.room.message",
    }));
    let rules = RoomVersionId::V10.rules().expect("known version");
    ruma::signatures::hash_and_sign_event(server, key, &mut pdu, &rules.redaction).expect("signs");
    pdu
}

#[tokio::test]
async fn a_rotated_key_is_published_as_old_and_still_verifies_older_events() {
    let a = TestServer::start_federated().await;
    let b = TestServer::start_federated().await;
    let b_name = b.server_name.clone();
    let now: u64 = ruma::MilliSecondsSinceUnixEpoch::now().get().into();

    // B's key before the rotation, kept to sign as B did before.
    let stored = b
        .services()
        .db
        .table("global")
        .get(b"keypair")
        .expect("read")
        .expect("keypair");
    let split = stored.iter().position(|b| *b == 0xFF).expect("format");
    let version = String::from_utf8_lossy(&stored[..split]).into_owned();
    let old_key = Ed25519KeyPair::from_der(&stored[split + 1..], version.clone()).expect("key");
    let old_id = format!("ed25519:{version}");

    // A learns B's current key by checking a request B signs with it.
    let (user_id, _) = user_with_profile(&a).await;
    b.services()
        .federation
        .send(
            &name(&a),
            get_profile_information::v1::Request::new(user_id.clone().try_into().expect("id")),
        )
        .await
        .expect("accepted before the rotation");

    let new_id = rotate_signing_key(&b.services().db).expect("rotates");
    assert_ne!(new_id, old_id);
    let b = b.restart().await;
    assert_eq!(b.server_name, b_name);

    let (status, published) = raw_get(&b, "/_matrix/key/v2/server", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        published["verify_keys"].get(&new_id).is_some(),
        "{published}"
    );
    assert!(
        published["verify_keys"].get(&old_id).is_none(),
        "{published}"
    );
    let expired_ts = published["old_verify_keys"][&old_id]["expired_ts"]
        .as_u64()
        .unwrap_or_else(|| panic!("old key listed: {published}"));
    assert!(expired_ts >= now, "{published}");

    // A knew only the old key: a request signed with the new one makes it fetch again.
    b.services()
        .federation
        .send(
            &name(&a),
            get_profile_information::v1::Request::new(user_id.try_into().expect("id")),
        )
        .await
        .expect("accepted after the rotation");

    // A server that never saw the old key learns it from old_verify_keys: an event signed
    // with it before it expired verifies, one claiming a later time does not.
    let c = TestServer::start_federated().await;
    let before = signed_pdu(&b_name, &old_key, expired_ts - 1000);
    let check = c
        .services()
        .federation
        .verify_pdu(&before, &RoomVersionId::V10)
        .await
        .expect("an event from before the rotation verifies");
    assert!(matches!(check, PduCheck::Valid), "{check:?}");

    let after = signed_pdu(&b_name, &old_key, expired_ts + 1000);
    let error = c
        .services()
        .federation
        .verify_pdu(&after, &RoomVersionId::V10)
        .await
        .expect_err("the old key is not valid after it expired");
    assert_eq!(error.errcode, "M_FORBIDDEN");

    // Valid signatures over changed content: kept redacted.
    let mut edited = before.clone();
    edited.insert(
        "content".to_owned(),
        object(json!({ "body": "changed" })).into(),
    );
    match c
        .services()
        .federation
        .verify_pdu(&edited, &RoomVersionId::V10)
        .await
        .expect("signatures still verify")
    {
        PduCheck::Redacted(redacted) => {
            assert_eq!(redacted.get("content"), Some(&object(json!({})).into()));
        }
        other => panic!("expected a redacted event, got {other:?}"),
    }

    // And a signature by a key B never had is refused.
    let stranger =
        Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "stranger".to_owned()).expect("key");
    let forged = signed_pdu(&b_name, &stranger, now);
    let error = c
        .services()
        .federation
        .verify_pdu(&forged, &RoomVersionId::V10)
        .await
        .expect_err("unknown key");
    assert_eq!(error.errcode, "M_FORBIDDEN");
}

#[tokio::test]
async fn server_names_resolve_as_the_spec_says() {
    let resolver = Resolver::new(Duration::from_secs(5), true).expect("resolver");
    let resolve = |name: &str| {
        let name: OwnedServerName = name.to_owned().try_into().expect("server name");
        let resolver = &resolver;
        async move { resolver.resolve(&name).await }
    };
    // IP literals and explicit ports: no lookups at all.
    let d = resolve("127.0.0.1").await;
    assert_eq!(
        (d.base_url.as_str(), d.host_header.as_str()),
        ("https://127.0.0.1:8448", "127.0.0.1")
    );
    let d = resolve("127.0.0.1:1234").await;
    assert_eq!(
        (d.base_url.as_str(), d.host_header.as_str()),
        ("https://127.0.0.1:1234", "127.0.0.1:1234")
    );
    let d = resolve("[::1]").await;
    assert_eq!(
        (d.base_url.as_str(), d.host_header.as_str()),
        ("https://[::1]:8448", "[::1]")
    );
    let d = resolve("localhost:4321").await;
    assert_eq!(
        (d.base_url.as_str(), d.host_header.as_str()),
        ("https://localhost:4321", "localhost:4321")
    );
    assert_eq!(d.connect_to, None);

    // A name without a port asks its /.well-known/matrix/server (here served by a conduit
    // on a test port instead of 443) and follows the delegation.
    let well_known = TestServer::start_federated_with(|c| {
        c.well_known_server = Some("127.0.0.1:7777".to_owned());
    })
    .await;
    let port = well_known.server.as_ref().expect("running").addr.port();
    let resolver = Resolver::new(Duration::from_secs(5), true)
        .expect("resolver")
        .with_well_known_port(port);
    let d = resolver
        .resolve(&OwnedServerName::try_from("localhost".to_owned()).expect("name"))
        .await;
    assert_eq!(
        (d.base_url.as_str(), d.host_header.as_str()),
        ("https://127.0.0.1:7777", "127.0.0.1:7777")
    );
}

#[tokio::test]
async fn an_unreachable_peer_fails_promptly_with_502() {
    let a = TestServer::start_federated().await;
    // A port nobody listens on: connections are refused at once.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let peer: OwnedServerName = format!("127.0.0.1:{port}").try_into().expect("name");
    let error = a
        .services()
        .federation
        .send(
            &peer,
            get_profile_information::v1::Request::new(
                format!("@x:{peer}").try_into().expect("user id"),
            ),
        )
        .await
        .expect_err("nobody answers");
    assert_eq!(
        (error.status.as_u16(), error.errcode),
        (502, "M_UNKNOWN"),
        "{error}"
    );
    // Refused, not timed out: the harness's 10 s limit was not what ended it.
    assert!(error.message.contains("connection failed"), "{error}");
}

#[tokio::test]
async fn the_tls_port_negotiates_h2_and_http1_and_keeps_plain_http() {
    use std::sync::Arc;

    let server = TestServer::start_federated().await;
    let pem = std::fs::read(server.dir.path().join("cert.pem")).expect("cert");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.expect("pem")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    for (offered, expected) in [
        (vec![b"h2".to_vec(), b"http/1.1".to_vec()], b"h2".as_slice()),
        (vec![b"http/1.1".to_vec()], b"http/1.1".as_slice()),
    ] {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = offered;
        let tcp = tokio::net::TcpStream::connect(server.server.as_ref().expect("running").addr)
            .await
            .expect("connect");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect("localhost".try_into().expect("name"), tcp)
            .await
            .expect("TLS handshake with the configured certificate");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(expected));
    }
    // The same port still answers the test client's plain HTTP.
    let (status, _) = raw_get(&server, "/_matrix/federation/v1/version", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn keys_of_a_server_that_is_down_come_from_a_trusted_notary() {
    let a = TestServer::start_federated().await;
    let b = TestServer::start_federated().await;
    let a_name = a.server_name.clone();
    let c = TestServer::start_federated_with(move |config| {
        config.trusted_servers = vec![a_name.try_into().expect("name")];
    })
    .await;
    let mut signed = object(json!({ "from": "b" }));
    b.services().federation.sign(&mut signed).expect("signs");
    let b_name = name(&b);

    // A caches B's keys, then B goes away.
    a.services()
        .federation
        .verify_json(&b_name, &signed)
        .await
        .expect("A fetches B's keys");
    let mut b = b;
    b.server.take().expect("running").stop().await;

    c.services()
        .federation
        .verify_json(&b_name, &signed)
        .await
        .expect("C gets B's keys through A");
    let mut forged = signed.clone();
    forged.insert("from".to_owned(), "someone else".into());
    let error = c
        .services()
        .federation
        .verify_json(&b_name, &forged)
        .await
        .expect_err("still checked");
    assert_eq!(error.errcode, "M_FORBIDDEN");
}
