//! To-device messages: delivered through `/sync` until a later sync acknowledges them,
//! idempotent per transaction id, `*` for every device.

use serde_json::{Value, json};

use crate::common::{TestServer, User, enc, next_batch};

async fn send(server: &TestServer, from: &User, txn: &str, messages: Value) {
    let (status, body) = server
        .put(
            &format!("/_matrix/client/v3/sendToDevice/m.test/{}", enc(txn)),
            &from.token,
            json!({ "messages": messages }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

fn contents(sync: &Value) -> Vec<Value> {
    sync["to_device"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| {
                    assert_eq!(e["type"], "m.test");
                    e["content"].clone()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn messages_are_delivered_until_acknowledged_and_sent_once_per_txn() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let bob2 = server.login(&bob).await;
    let since = next_batch(&server.sync(&bob, None, 0).await);

    let to_bob = json!({ bob.user_id.clone(): { bob.device_id.clone(): { "n": 1 } } });
    send(&server, &alice, "txn1", to_bob.clone()).await;
    // The same transaction again is not a second message.
    send(&server, &alice, "txn1", to_bob).await;

    let first = server.sync(&bob, Some(&since), 5000).await;
    assert_eq!(contents(&first), vec![json!({ "n": 1 })], "{first}");
    assert_eq!(first["to_device"]["events"][0]["sender"], alice.user_id);
    // A client that lost the response retries with the same token and gets it again.
    let retry = server.sync(&bob, Some(&since), 0).await;
    assert_eq!(contents(&retry), vec![json!({ "n": 1 })], "{retry}");
    // Acknowledged by syncing from the returned token: gone.
    let next = next_batch(&retry);
    let after = server.sync(&bob, Some(&next), 0).await;
    assert!(contents(&after).is_empty(), "{after}");
    let again = server.sync(&bob, Some(&since), 0).await;
    assert!(
        contents(&again).is_empty(),
        "deleted once acknowledged: {again}"
    );

    // `*`: every device of the user, each once.
    let since2 = next_batch(&server.sync(&bob2, None, 0).await);
    let since1 = next_batch(&after);
    send(
        &server,
        &alice,
        "txn2",
        json!({ bob.user_id.clone(): { "*": { "n": 2 } } }),
    )
    .await;
    for (device, since) in [(&bob, since1), (&bob2, since2)] {
        let sync = server.sync(device, Some(&since), 5000).await;
        assert_eq!(contents(&sync), vec![json!({ "n": 2 })], "{sync}");
    }
    // Another device of the sender may reuse the transaction id.
    let alice2 = server.login(&alice).await;
    let since = next_batch(&server.sync(&bob, None, 0).await);
    send(
        &server,
        &alice2,
        "txn1",
        json!({ bob.user_id.clone(): { bob.device_id.clone(): { "n": 3 } } }),
    )
    .await;
    let sync = server.sync(&bob, Some(&since), 5000).await;
    assert_eq!(contents(&sync), vec![json!({ "n": 3 })], "{sync}");
}

#[tokio::test]
async fn a_removed_device_loses_its_pending_messages() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let bob2 = server.login(&bob).await;
    send(
        &server,
        &alice,
        "t",
        json!({ bob.user_id.clone(): { bob2.device_id.clone(): { "n": 1 } } }),
    )
    .await;
    let services = server.services();
    let user = ruma::UserId::parse(bob.user_id.as_str()).expect("user id");
    let pending = services
        .e2ee
        .take_to_device(&user, &bob2.device_id, None, u64::MAX, usize::MAX)
        .expect("read")
        .0;
    assert_eq!(pending.len(), 1);
    let (status, body) = server
        .post("/_matrix/client/v3/logout", &bob2.token, json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let pending = services
        .e2ee
        .take_to_device(&user, &bob2.device_id, None, u64::MAX, usize::MAX)
        .expect("read")
        .0;
    assert!(pending.is_empty());
}

/// A device with many messages waiting gets them 100 a sync, in order, and the rest of
/// each response is cut at the same point: a room message sent between the 150th and the
/// 151st arrives with the second hundred, once.
#[tokio::test]
async fn at_most_a_hundred_messages_a_sync() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.join(&bob, &room).await;
    let mut since = next_batch(&server.sync(&bob, None, 0).await);
    for n in 0..250 {
        if n == 150 {
            server.send_text(&alice, &room, "between").await;
        }
        let to_bob = json!({ bob.user_id.clone(): { bob.device_id.clone(): { "n": n } } });
        send(&server, &alice, &format!("t{n}"), to_bob).await;
    }
    let mut got = Vec::new();
    let mut between_in = Vec::new();
    for round in 0..3 {
        let sync = server.sync(&bob, Some(&since), 0).await;
        let messages = contents(&sync);
        assert_eq!(
            messages.len(),
            [100, 100, 50][round],
            "round {round}: {sync}"
        );
        got.extend(messages.into_iter().map(|c| c["n"].as_u64().expect("n")));
        let timeline = crate::common::timeline(&sync, &room);
        if crate::common::bodies(&timeline).contains(&"between".to_owned()) {
            between_in.push(round);
        }
        since = next_batch(&sync);
    }
    assert_eq!(got, (0..250).collect::<Vec<u64>>());
    assert_eq!(
        between_in,
        [1],
        "the room message comes with the second hundred, once"
    );
    let after = server.sync(&bob, Some(&since), 0).await;
    assert!(contents(&after).is_empty(), "{after}");
}
