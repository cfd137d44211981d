//! Device keys, one-time and fallback keys, key counts in `/sync` and device-list changes.

use serde_json::{Value, json};

use super::{Device, claim, encrypted_room, query_keys};
use crate::common::{TestServer, enc, errcode, next_batch};

#[tokio::test]
async fn uploaded_keys_are_queried_with_display_names_and_bad_keys_are_refused() {
    let server = TestServer::start().await;
    let mut alice = Device::new(server.register("alice").await);
    let bob = server.register("bob").await;
    let counts = alice.upload(&server, 5).await;
    assert_eq!(counts["one_time_key_counts"]["signed_curve25519"], 5);
    let (status, body) = server
        .put(
            &format!("/_matrix/client/v3/devices/{}", enc(&alice.user.device_id)),
            &alice.user.token,
            json!({ "display_name": "Alice's phone" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let body = query_keys(&server, &bob, &alice.user.user_id).await;
    let keys = &body["device_keys"][&alice.user.user_id][&alice.user.device_id];
    assert_eq!(
        keys["keys"][format!("ed25519:{}", alice.user.device_id)],
        alice.ed25519()
    );
    assert!(
        keys["signatures"][&alice.user.user_id].is_object(),
        "{keys}"
    );
    assert_eq!(
        keys["unsigned"]["device_display_name"], "Alice's phone",
        "{keys}"
    );

    let upload = |keys: Value| {
        let token = alice.user.token.clone();
        let server = &server;
        async move {
            server
                .post(
                    "/_matrix/client/v3/keys/upload",
                    &token,
                    json!({ "device_keys": keys }),
                )
                .await
        }
    };
    // A signature that does not verify.
    let mut forged = alice.device_keys();
    forged["algorithms"] = json!(["m.megolm.v1.aes-sha2"]);
    let (status, body) = upload(forged).await;
    assert_eq!(status, 400, "{body}");
    // Another device's id.
    let mut other = alice.device_keys();
    other["device_id"] = json!("SOMEONEELSE");
    let (status, body) = upload(other).await;
    assert_eq!(status, 400, "{body}");
    // A new ed25519 key for an existing device, properly self-signed.
    let impostor = Device::new(alice.user.clone());
    let (status, body) = upload(impostor.device_keys()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(errcode(&body), Some("M_INVALID_PARAM"));
    // The original keys are still served.
    let body = query_keys(&server, &bob, &alice.user.user_id).await;
    assert_eq!(
        body["device_keys"][&alice.user.user_id][&alice.user.device_id]["keys"]
            [format!("ed25519:{}", alice.user.device_id)],
        alice.ed25519()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_hand_out_each_one_time_key_once_then_the_fallback_key() {
    let server = TestServer::start().await;
    let mut alice = Device::new(server.register("alice").await);
    let bob = server.register("bob").await;
    alice.upload(&server, 20).await;
    let fallback = alice.fallback_key();
    let fallback_id = fallback.keys().next().expect("one fallback key").clone();
    let (status, body) = server
        .post(
            "/_matrix/client/v3/keys/upload",
            &alice.user.token,
            json!({ "fallback_keys": fallback }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let sync = server.sync(&alice.user, None, 0).await;
    assert_eq!(sync["device_one_time_keys_count"]["signed_curve25519"], 20);
    assert_eq!(
        sync["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );

    let claims = (0..30).map(|_| claim(&server, &bob, &alice.user));
    let results = futures::future::join_all(claims).await;
    let mut otks = Vec::new();
    let mut fallbacks = 0;
    for (status, body) in results {
        assert_eq!(status, 200, "{body}");
        let keys = body["one_time_keys"][&alice.user.user_id][&alice.user.device_id]
            .as_object()
            .expect("a key for every claim")
            .clone();
        assert_eq!(keys.len(), 1, "{body}");
        // Olm numbers one-time and fallback keys separately: their ids may coincide.
        let (id, key) = keys.into_iter().next().expect("one key");
        if key["fallback"] == true {
            assert_eq!(id, fallback_id);
            fallbacks += 1;
        } else {
            otks.push(key["key"].as_str().expect("key").to_owned());
        }
    }
    let unique: std::collections::BTreeSet<_> = otks.iter().cloned().collect();
    assert_eq!(otks.len(), 20, "every one-time key handed out");
    assert_eq!(
        unique.len(),
        20,
        "no one-time key handed out twice: {otks:?}"
    );
    assert_eq!(fallbacks, 10);

    // The fallback key stays (marked used) and is handed out again.
    let (_, body) = claim(&server, &bob, &alice.user).await;
    assert_eq!(
        body["one_time_keys"][&alice.user.user_id][&alice.user.device_id][&fallback_id]["fallback"],
        true,
        "{body}"
    );
    let sync = server.sync(&alice.user, None, 0).await;
    assert_eq!(sync["device_one_time_keys_count"]["signed_curve25519"], 0);
    assert_eq!(sync["device_unused_fallback_key_types"], json!([]));

    // Nothing at all for a device without keys: no entry, no error.
    let carol = server.register("carol").await;
    let (status, body) = claim(&server, &bob, &carol).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["one_time_keys"].get(&carol.user_id).is_none(),
        "{body}"
    );
}

#[tokio::test]
async fn a_reused_one_time_key_id_with_other_content_is_refused() {
    let server = TestServer::start().await;
    let mut alice = Device::new(server.register("alice").await);
    let keys = alice.one_time_keys(1);
    let upload = |keys| {
        server.post(
            "/_matrix/client/v3/keys/upload",
            &alice.user.token,
            json!({ "one_time_keys": keys }),
        )
    };
    let (status, body) = upload(keys.clone()).await;
    assert_eq!(status, 200, "{body}");
    // The same key again is fine (a retried upload).
    let (status, body) = upload(keys.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["one_time_key_counts"]["signed_curve25519"], 1);
    let mut changed = keys.clone();
    for value in changed.values_mut() {
        value["key"] = json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    }
    let (status, body) = upload(changed).await;
    assert_eq!(status, 400, "{body}");
}

fn changed(sync: &Value) -> Vec<String> {
    list(sync, "changed")
}

fn list(sync: &Value, which: &str) -> Vec<String> {
    sync["device_lists"][which]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn device_lists_show_new_logins_key_uploads_removals_and_leaves() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = encrypted_room(&server, &alice).await;
    server.join(&bob, &room).await;
    // Carol shares only an unencrypted room with Alice: never in her device lists.
    let plain = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.join(&carol, &plain).await;

    let start = next_batch(&server.sync(&alice, None, 0).await);
    let bob2 = server.login(&bob).await;
    server.login(&carol).await;
    let sync = server.sync(&alice, Some(&start), 5000).await;
    assert!(changed(&sync).contains(&bob.user_id), "{sync}");
    assert!(!changed(&sync).contains(&carol.user_id), "{sync}");
    let since = next_batch(&sync);

    // /keys/changes over the same range agrees.
    let (status, body) = server
        .get(
            &format!("/_matrix/client/v3/keys/changes?from={start}&to={since}"),
            &alice.token,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], json!([bob.user_id]));

    // A key upload by Bob's new device.
    let mut device = Device::new(bob2.clone());
    device.upload(&server, 1).await;
    let sync = server.sync(&alice, Some(&since), 5000).await;
    assert_eq!(changed(&sync), vec![bob.user_id.clone()], "{sync}");
    let since = next_batch(&sync);

    // Removing the device is a change too, and its keys are gone.
    let (status, body) = server
        .request(
            reqwest::Method::DELETE,
            &format!("/_matrix/client/v3/devices/{}", enc(&bob2.device_id)),
            Some(&bob.token),
            Some(json!({ "auth": {
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": bob.user_id },
                "password": bob.password,
            } })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let sync = server.sync(&alice, Some(&since), 5000).await;
    assert_eq!(changed(&sync), vec![bob.user_id.clone()], "{sync}");
    let keys = query_keys(&server, &alice, &bob.user_id).await;
    assert!(
        keys["device_keys"][&bob.user_id]
            .get(&bob2.device_id)
            .is_none(),
        "{keys}"
    );
    let since = next_batch(&sync);

    // Bob leaves the only encrypted room they shared.
    server.leave(&bob, &room).await;
    let sync = server.sync(&alice, Some(&since), 5000).await;
    assert_eq!(list(&sync, "left"), vec![bob.user_id.clone()], "{sync}");
    assert!(!changed(&sync).contains(&bob.user_id), "{sync}");
}

#[tokio::test]
async fn own_new_device_is_in_own_device_lists() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let since = next_batch(&server.sync(&alice, None, 0).await);
    server.login(&alice).await;
    let sync = server.sync(&alice, Some(&since), 5000).await;
    assert_eq!(changed(&sync), vec![alice.user_id.clone()], "{sync}");
}

/// The claim path itself under real parallelism (threads, no HTTP in between, so the
/// window between finding a key and deleting it is as narrow as it gets): every key is
/// handed out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_claims_in_threads_never_share_a_key() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let keys: serde_json::Map<String, Value> = (0..400)
        .map(|i| {
            (
                format!("signed_curve25519:K{i:04}"),
                json!({ "key": format!("k{i}") }),
            )
        })
        .collect();
    let (status, body) = server
        .post(
            "/_matrix/client/v3/keys/upload",
            &alice.token,
            json!({ "one_time_keys": keys }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let services = server.services().clone();
    let user = ruma::UserId::parse(alice.user_id.as_str()).expect("user id");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (services, user, barrier) = (services.clone(), user.clone(), barrier.clone());
            let device = alice.device_id.clone();
            std::thread::spawn(move || {
                barrier.wait();
                (0..60)
                    .filter_map(|_| {
                        services
                            .e2ee
                            .claim(&user, &device, "signed_curve25519")
                            .expect("claim")
                            .map(|(id, _)| id)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let claimed: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("thread"))
        .collect();
    let unique: std::collections::BTreeSet<_> = claimed.iter().collect();
    assert_eq!(claimed.len(), 400, "every key handed out, then none");
    assert_eq!(unique.len(), 400, "no key handed out twice");
}
