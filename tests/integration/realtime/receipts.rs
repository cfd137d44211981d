//! Read receipts and read markers: public ones reach the room, private ones only their
//! owner, a read position never moves back, bad targets are refused.

use serde_json::{Value, json};

use super::{ephemeral, receipt, shared_room, sync_until};
use crate::common::{TestServer, enc, errcode, next_batch};

/// Who has a receipt of `kind` on `event` in a receipt event's content.
fn readers(content: &Value, event: &str, kind: &str) -> Vec<String> {
    content[event][kind]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn public_and_private_receipts_reach_the_right_users() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = shared_room(&server, &alice, &[&bob, &carol]).await;
    let first = server.send_text(&alice, &room, "one").await;
    let second = server.send_text(&alice, &room, "two").await;
    let alice_since = next_batch(&server.sync(&alice, None, 0).await);

    let (status, body) = receipt(&server, &bob, &room, "m.read", &first, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (content, alice_since) =
        sync_until(&server, &alice, Some(alice_since), "bob's receipt", |s| {
            ephemeral(s, &room, "m.receipt").map(|e| e["content"].clone())
        })
        .await;
    assert_eq!(
        readers(&content, &first, "m.read"),
        vec![bob.user_id.clone()]
    );
    assert!(
        content[&first]["m.read"][&bob.user_id]["ts"].is_u64(),
        "{content}"
    );

    // Private: bob sees it, alice and carol never do.
    let (status, body) = receipt(&server, &bob, &room, "m.read.private", &second, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let bob_sync = server.sync(&bob, None, 0).await;
    let content = &ephemeral(&bob_sync, &room, "m.receipt").expect("receipts")["content"];
    assert_eq!(
        readers(content, &second, "m.read.private"),
        vec![bob.user_id.clone()]
    );
    for user in [&alice, &carol] {
        let sync = server.sync(user, None, 0).await;
        let content = &ephemeral(&sync, &room, "m.receipt").expect("receipts")["content"];
        assert!(
            readers(content, &second, "m.read.private").is_empty(),
            "{content}"
        );
        assert_eq!(
            readers(content, &first, "m.read"),
            vec![bob.user_id.clone()]
        );
    }
    // The private receipt did not wake alice with anything to show.
    let sync = server.sync(&alice, Some(&alice_since), 0).await;
    assert!(ephemeral(&sync, &room, "m.receipt").is_none(), "{sync}");

    // Threaded receipts carry their thread.
    let (status, body) = receipt(
        &server,
        &carol,
        &room,
        "m.read",
        &second,
        json!({ "thread_id": "main" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sync = server.sync(&alice, None, 0).await;
    let content = &ephemeral(&sync, &room, "m.receipt").expect("receipts")["content"];
    assert_eq!(
        content[&second]["m.read"][&carol.user_id]["thread_id"], "main",
        "{content}"
    );
}

#[tokio::test]
async fn read_positions_never_move_back_and_markers_are_account_data() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    let first = server.send_text(&alice, &room, "one").await;
    let second = server.send_text(&alice, &room, "two").await;

    receipt(&server, &bob, &room, "m.read", &second, json!({})).await;
    let (status, _) = receipt(&server, &bob, &room, "m.read", &first, json!({})).await;
    assert_eq!(status, 200, "an older receipt is accepted and ignored");
    let sync = server.sync(&alice, None, 0).await;
    let content = &ephemeral(&sync, &room, "m.receipt").expect("receipts")["content"];
    assert_eq!(
        readers(content, &second, "m.read"),
        vec![bob.user_id.clone()]
    );
    assert!(readers(content, &first, "m.read").is_empty(), "{content}");

    // read_markers: the fully-read marker is room account data, with a receipt beside it.
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/read_markers", enc(&room)),
            &bob.token,
            json!({ "m.fully_read": second, "m.read.private": second }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let sync = server.sync(&bob, None, 0).await;
    let data = sync["rooms"]["join"][&room]["account_data"]["events"]
        .as_array()
        .expect("room account data");
    assert!(
        data.iter()
            .any(|e| e["type"] == "m.fully_read" && e["content"]["event_id"] == second),
        "{data:?}"
    );
    // The marker does not move back either.
    receipt(&server, &bob, &room, "m.fully_read", &first, json!({})).await;
    let (status, body) = server
        .get(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/{}/account_data/m.fully_read",
                enc(&bob.user_id),
                enc(&room)
            ),
            &bob.token,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["event_id"], second);
}

#[tokio::test]
async fn bad_receipts_are_refused_with_clear_errors() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = shared_room(&server, &alice, &[]).await;
    let event = server.send_text(&alice, &room, "hello").await;

    let (status, body) = receipt(
        &server,
        &alice,
        &room,
        "m.read",
        "$unknown:localhost",
        json!({}),
    )
    .await;
    assert_eq!(
        (status.as_u16(), errcode(&body)),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );
    let (status, body) = receipt(&server, &alice, &room, "m.unknown", &event, json!({})).await;
    assert_eq!(status.as_u16(), 400, "{body}");
    let (status, body) = receipt(&server, &bob, &room, "m.read", &event, json!({})).await;
    assert_eq!(
        (status.as_u16(), errcode(&body)),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );
    let (status, body) = receipt(
        &server,
        &alice,
        &room,
        "m.fully_read",
        &event,
        json!({ "thread_id": "main" }),
    )
    .await;
    assert_eq!(
        (status.as_u16(), errcode(&body)),
        (400, Some("M_INVALID_PARAM")),
        "{body}"
    );
    // A threaded receipt whose event is not in that thread.
    let (status, body) = receipt(
        &server,
        &alice,
        &room,
        "m.read",
        &event,
        json!({ "thread_id": "$other:localhost" }),
    )
    .await;
    assert_eq!(
        (status.as_u16(), errcode(&body)),
        (400, Some("M_INVALID_PARAM")),
        "{body}"
    );
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/read_markers", enc(&room)),
            &alice.token,
            json!({ "m.fully_read": event, "m.read": "$nope:localhost" }),
        )
        .await;
    assert_eq!(
        (status.as_u16(), errcode(&body)),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );
    // Nothing of the refused request was applied.
    let (status, _) = server
        .get(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/{}/account_data/m.fully_read",
                enc(&alice.user_id),
                enc(&room)
            ),
            &alice.token,
        )
        .await;
    assert_eq!(status, 404);
}
