//! Typing, receipts and presence between two servers: EDUs both ways, applied only for
//! users of the sending server who are in the room.

use serde_json::json;

use super::{ephemeral, receipt, sync_until, typing};
use crate::{
    common::{TestServer, enc},
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
    let (status, body) = b
        .post(
            &format!(
                "/_matrix/client/v3/join/{}?via={}",
                enc(&room),
                enc(&a.server_name)
            ),
            &bob.token,
            json!({}),
        )
        .await;
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
    let bob_since = crate::common::next_batch(&b.sync(&bob, None, 0).await);

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
