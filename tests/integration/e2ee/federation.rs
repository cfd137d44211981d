//! Encryption across two servers: key queries and claims forwarded to the user's server,
//! the room key travelling as an `m.direct_to_device` EDU, device-list changes as
//! `m.device_list_update` EDUs, and an unreachable server reported in `failures`.

use std::time::{Duration, Instant};

use ruma::api::federation::device::get_devices;
use serde_json::{Value, json};

use super::{
    Device,
    cross_signing::{CrossSigning, public, upload_signing},
    encrypted_room,
    olm::{SECRET, fetch_peer, receive_encrypted, send_encrypted},
    query_keys,
};
use crate::common::{TestServer, join_via, next_batch};

async fn federated() -> TestServer {
    TestServer::start_federated_with(|c| {
        c.federation_retry_base_ms = 50;
        c.federation_retry_max_ms = 400;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bob_on_another_server_decrypts_alices_message() {
    let a = federated().await;
    let b = federated().await;
    let mut alice = Device::new(a.register("alice").await);
    let mut bob = Device::new(b.register("bob").await);
    alice.upload(&a, 2).await;
    bob.upload(&b, 3).await;

    let room = encrypted_room(&a, &alice.user).await;
    let (status, body) = join_via(&b, &bob.user, &room, &a.server_name).await;
    assert_eq!(status, 200, "{body}");
    let since = next_batch(&b.sync(&bob.user, None, 0).await);
    let alice_since = next_batch(&a.sync(&alice.user, None, 0).await);

    // Another server asks Bob's server for his devices directly.
    let bob_id = ruma::UserId::parse(bob.user.user_id.as_str()).expect("user id");
    let server_b = ruma::ServerName::parse(b.server_name.as_str()).expect("server name");
    let devices = a
        .services()
        .federation
        .send(&server_b, get_devices::v1::Request::new(bob_id))
        .await
        .expect("user/devices answered");
    assert_eq!(devices.devices.len(), 1);
    assert_eq!(devices.devices[0].device_id.as_str(), bob.user.device_id);

    // Query and claim through Alice's server, answered by Bob's.
    let peer = fetch_peer(&a, &alice.user, &bob.user).await;
    assert_eq!(peer.ed25519, bob.ed25519());
    send_encrypted(&a, &alice, &bob.user, &peer, &room).await;
    assert_eq!(
        receive_encrypted(&b, &mut bob, &room, Some(since)).await,
        SECRET
    );

    // The claim used up one of Bob's keys on his server.
    let sync = b.sync(&bob.user, None, 0).await;
    assert_eq!(sync["device_one_time_keys_count"]["signed_curve25519"], 2);

    // Bob's new login reaches Alice's device list through an EDU.
    b.login(&bob.user).await;
    wait_for_change(&a, &alice.user, alice_since, &bob.user.user_id).await;
    let keys = query_keys(&a, &alice.user, &bob.user.user_id).await;
    assert!(keys["device_keys"][&bob.user.user_id][&bob.user.device_id].is_object());

    // Bob's cross-signing keys: announced to Alice's server, served through it.
    let since = next_batch(&a.sync(&alice.user, None, 0).await);
    let cross = CrossSigning::new();
    let (status, body) = upload_signing(&b, &bob.user, cross.upload_body(&bob.user.user_id)).await;
    assert_eq!(status, 200, "{body}");
    wait_for_change(&a, &alice.user, since, &bob.user.user_id).await;
    let keys = query_keys(&a, &alice.user, &bob.user.user_id).await;
    let master = &keys["master_keys"][&bob.user.user_id]["keys"];
    assert_eq!(
        master[format!("ed25519:{}", public(&cross.master))],
        public(&cross.master),
        "{keys}"
    );
    assert!(
        keys["self_signing_keys"][&bob.user.user_id].is_object(),
        "{keys}"
    );
    assert!(
        keys["user_signing_keys"].get(&bob.user.user_id).is_none(),
        "another user's user-signing key is never shown: {keys}"
    );
}

/// Long-polls `user`'s sync from `since` until `target` is in `device_lists.changed`.
async fn wait_for_change(
    server: &TestServer,
    user: &crate::common::User,
    since: String,
    target: &str,
) {
    let started = Instant::now();
    let mut since = since;
    loop {
        let sync = server.sync(user, Some(&since), 1000).await;
        let changed: Vec<Value> = sync["device_lists"]["changed"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if changed.contains(&json!(target)) {
            return;
        }
        since = next_batch(&sync);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{target} never showed in {}'s device lists",
            user.user_id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_listed_in_failures() {
    let a = federated().await;
    let alice = a.register("alice").await;
    let (status, body) = a
        .post(
            "/_matrix/client/v3/keys/query",
            &alice.token,
            json!({ "device_keys": { "@nobody:127.0.0.1:1": [] }, "timeout": 5000 }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["failures"]["127.0.0.1:1"].is_object(), "{body}");
    let (status, body) = a
        .post(
            "/_matrix/client/v3/keys/claim",
            &alice.token,
            json!({ "one_time_keys": { "@nobody:127.0.0.1:1": { "DEV": "signed_curve25519" } }, "timeout": 5000 }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["failures"]["127.0.0.1:1"].is_object(), "{body}");
}
