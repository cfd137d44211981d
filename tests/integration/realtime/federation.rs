//! Typing, receipts and presence between two servers: EDUs both ways, applied only for
//! users of the sending server who are in the room.

use ruma::{
    OwnedServerName,
    api::federation::authentication::{XMatrix, XMatrixSigningInput},
};
use serde_json::{Value, json};

use super::{ephemeral, receipt, sync_until, typing};
use crate::{
    common::{TestServer, enc, join_via},
    realtime::presence::presence_of,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_receipts_and_presence_cross_servers() {
    let a = TestServer::start_federated_with(|c| {
        c.federation_retry_base_ms = 50;
        c.federation_retry_max_ms = 400;
    })
    .await;
    let b = TestServer::start_federated_with(|c| {
        c.federation_retry_base_ms = 50;
        c.federation_retry_max_ms = 400;
    })
    .await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room = a
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let (status, body) = join_via(&b, &bob, &room, &a.server_name).await;
    assert_eq!(status, 200, "{body}");
    let event = a.send_text(&alice, &room, "hello bob").await;
    // Bob's server has the message before anything refers to it.
    sync_until(&b, &bob, None, "alice's message", |s| {
        crate::common::timeline(s, &room)
            .iter()
            .any(|e| e["event_id"] == event.as_str())
            .then_some(())
    })
    .await;
    let (_, alice_since) = sync_until(&a, &alice, None, "bob's join on a", |s| {
        crate::common::timeline(s, &room)
            .iter()
            .chain(
                s["rooms"]["join"][&room]["state"]["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .iter(),
            )
            .any(|e| e["state_key"] == bob.user_id.as_str() && e["content"]["membership"] == "join")
            .then_some(())
    })
    .await;
    let bob_sync = b.sync(&bob, None, 0).await;
    let bob_since = crate::common::next_batch(&bob_sync);
    // Events received over federation run through the push rules too.
    assert_eq!(
        bob_sync["rooms"]["join"][&room]["unread_notifications"]["notification_count"], 1,
        "{bob_sync}"
    );

    // A -> B: typing, a receipt, presence.
    let (status, body) = typing(
        &a,
        &alice,
        &room,
        json!({ "typing": true, "timeout": 30000 }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = receipt(&a, &alice, &room, "m.read", &event, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = a
        .put(
            &format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id)),
            &alice.token,
            json!({ "presence": "online", "status_msg": "from a" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (mut saw_typing, mut saw_receipt, mut saw_presence) = (false, false, false);
    sync_until(
        &b,
        &bob,
        Some(bob_since),
        "alice's typing, receipt and presence on b",
        |sync| {
            saw_typing |= ephemeral(sync, &room, "m.typing")
                .is_some_and(|e| e["content"]["user_ids"] == json!([alice.user_id]));
            saw_receipt |= ephemeral(sync, &room, "m.receipt")
                .is_some_and(|e| e["content"][&event]["m.read"][&alice.user_id]["ts"].is_u64());
            saw_presence |= presence_of(sync, &alice).is_some_and(|c| c["status_msg"] == "from a");
            (saw_typing && saw_receipt && saw_presence).then_some(())
        },
    )
    .await;

    // B -> A: typing and a receipt of bob.
    typing(&b, &bob, &room, json!({ "typing": true, "timeout": 30000 })).await;
    let (status, body) = receipt(&b, &bob, &room, "m.read", &event, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (mut saw_typing, mut saw_receipt) = (false, false);
    sync_until(
        &a,
        &alice,
        Some(alice_since),
        "bob's typing and receipt on a",
        |sync| {
            saw_typing |= ephemeral(sync, &room, "m.typing").is_some_and(|e| {
                e["content"]["user_ids"]
                    .as_array()
                    .is_some_and(|u| u.iter().any(|u| u == bob.user_id.as_str()))
            });
            saw_receipt |= ephemeral(sync, &room, "m.receipt")
                .is_some_and(|e| e["content"][&event]["m.read"][&bob.user_id]["ts"].is_u64());
            (saw_typing && saw_receipt).then_some(())
        },
    )
    .await;
}

/// `PUT /send/{txn}` from `from` to `to` with only EDUs, signed with `from`'s key.
async fn send_edus(from: &TestServer, to: &TestServer, txn: &str, edus: Value) -> u16 {
    let name =
        |s: &TestServer| -> OwnedServerName { s.server_name.clone().try_into().expect("name") };
    let body = json!({
        "origin": from.server_name,
        "origin_server_ts": 1,
        "pdus": [],
        "edus": edus,
    });
    let uri = format!("/_matrix/federation/v1/send/{txn}");
    let bytes = serde_json::to_vec(&body).expect("serialises");
    let request = http::Request::builder()
        .method("PUT")
        .uri(&uri)
        .body(bytes.clone())
        .expect("request");
    let authorization = XMatrix::sign_http_request(
        &request,
        XMatrixSigningInput::new(name(from), name(to), &from.services().globals.keypair),
    )
    .expect("signs");
    reqwest::Client::new()
        .put(format!("{}{uri}", to.base))
        .header("Authorization", authorization.to_string())
        .header("Content-Type", "application/json")
        .body(bytes)
        .send()
        .await
        .expect("answered")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edus_for_users_of_other_servers_or_outside_the_room_are_ignored() {
    let a = TestServer::start_federated().await;
    let b = TestServer::start_federated().await;
    let alice = a.register("alice").await;
    let dave = a.register("dave").await;
    let bob = b.register("bob").await;
    let room = a
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    a.join(&dave, &room).await;
    let (status, body) = join_via(&b, &bob, &room, &a.server_name).await;
    assert_eq!(status, 200, "{body}");
    let event = a.send_text(&alice, &room, "hello").await;
    let carol = format!("@carol:{}", b.server_name);
    let receipt_of = |user: &str| {
        json!({ "edu_type": "m.receipt", "content": { &room: { "m.read": {
            user: { "event_ids": [event], "data": { "ts": 1 } } } } } })
    };
    let typing_of = |user: &str| json!({ "edu_type": "m.typing", "content": { "room_id": room, "user_id": user, "typing": true } });
    // B speaks for dave (a user of A) and carol (not in the room): both ignored; then
    // for bob, which is applied. Garbage EDUs do not fail the transaction.
    let status = send_edus(&b, &a, "t1", json!([
        typing_of(&dave.user_id), typing_of(&carol), receipt_of(&dave.user_id), receipt_of(&carol),
        { "edu_type": "m.typing", "content": "nonsense" }, { "no_type": true },
        { "edu_type": "m.presence", "content": { "push": [{ "user_id": dave.user_id, "presence": "online" }] } },
    ]))
    .await;
    assert_eq!(status, 200);
    let status = send_edus(
        &b,
        &a,
        "t2",
        json!([typing_of(&bob.user_id), receipt_of(&bob.user_id)]),
    )
    .await;
    assert_eq!(status, 200);
    let (typing, _) = sync_until(&a, &alice, None, "bob's typing", |s| {
        ephemeral(s, &room, "m.typing").map(|e| e["content"]["user_ids"].clone())
    })
    .await;
    assert_eq!(typing, json!([bob.user_id]));
    let sync = a.sync(&alice, None, 0).await;
    let receipts =
        &ephemeral(&sync, &room, "m.receipt").expect("receipts")["content"][&event]["m.read"];
    assert!(receipts.get(&bob.user_id).is_some(), "{receipts}");
    assert!(receipts.get(&dave.user_id).is_none(), "{receipts}");
    assert!(receipts.get(&carol).is_none(), "{receipts}");
    assert!(
        presence_of(&sync, &dave).is_none_or(|p| p["presence"] != "online"),
        "{sync}"
    );
}

/// Presence across servers does not go stale: A sends alice's unchanged presence again
/// (every second here), so B, which times out users it has not heard of (after 3 s here),
/// keeps her online; dave, whose online state B heard once and never again, becomes
/// offline there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_presence_is_kept_alive_by_pings_and_times_out_without_them() {
    let a = TestServer::start_federated_with(|c| {
        c.federation_retry_base_ms = 50;
        c.federation_retry_max_ms = 400;
        c.presence_federation_ping_s = 1;
    })
    .await;
    let b = TestServer::start_federated_with(|c| {
        c.federation_retry_base_ms = 50;
        c.federation_retry_max_ms = 400;
        c.presence_remote_timeout_s = 3;
    })
    .await;
    let alice = a.register("alice").await;
    let dave = a.register("dave").await;
    let bob = b.register("bob").await;
    let room = a
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    a.join(&dave, &room).await;
    let (status, body) = join_via(&b, &bob, &room, &a.server_name).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = a
        .put(
            &format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id)),
            &alice.token,
            json!({ "presence": "online", "status_msg": "here" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Dave's online state reaches B once, as if A said it and then went quiet about him.
    let status = send_edus(&a, &b, "d1", json!([
        { "edu_type": "m.presence", "content": { "push": [{ "user_id": dave.user_id, "presence": "online" }] } },
    ]))
    .await;
    assert_eq!(status, 200);
    let state_on_b = |user: String| {
        let (b, bob) = (&b, &bob);
        async move {
            let (status, body) = b
                .get(
                    &format!("/_matrix/client/v3/presence/{}/status", enc(&user)),
                    &bob.token,
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body["presence"].as_str().unwrap_or_default().to_owned()
        }
    };
    sync_until(&b, &bob, None, "alice online on b", |s| {
        presence_of(s, &alice)
            .is_some_and(|p| p["presence"] == "online")
            .then_some(())
    })
    .await;
    assert_eq!(state_on_b(dave.user_id.clone()).await, "online");
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    assert_eq!(state_on_b(alice.user_id.clone()).await, "online");
    assert_eq!(state_on_b(dave.user_id.clone()).await, "offline");
}
