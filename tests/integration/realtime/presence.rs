//! Presence: set by the user or by syncing, shown to users sharing a room, falling to
//! unavailable and offline by itself after the configured idle times; off by config.

use serde_json::{Value, json};

use super::{shared_room, sync_until};
use crate::common::{TestServer, User, enc, errcode};

/// The content of `of`'s presence event in a sync response.
pub fn presence_of(sync: &Value, of: &User) -> Option<Value> {
    sync["presence"]["events"]
        .as_array()?
        .iter()
        .rev()
        .find(|e| e["sender"] == of.user_id.as_str() && e["type"] == "m.presence")
        .map(|e| e["content"].clone())
}

async fn put_presence(server: &TestServer, user: &User, body: Value) -> (u16, Value) {
    let (status, body) = server
        .put(
            &format!("/_matrix/client/v3/presence/{}/status", enc(&user.user_id)),
            &user.token,
            body,
        )
        .await;
    (status.as_u16(), body)
}

#[tokio::test]
async fn presence_goes_unavailable_then_offline_by_itself() {
    let server = TestServer::start_with(|c| {
        c.presence_idle_timeout_s = 1;
        c.presence_offline_timeout_s = 2;
    })
    .await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    shared_room(&server, &alice, &[&bob]).await;

    let (status, body) = put_presence(
        &server,
        &alice,
        json!({ "presence": "online", "status_msg": "at lunch" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (content, since) = sync_until(&server, &bob, None, "alice online", |s| {
        presence_of(s, &alice).filter(|c| c["presence"] == "online")
    })
    .await;
    assert_eq!(content["status_msg"], "at lunch");
    assert_eq!(content["currently_active"], true);
    assert!(content["last_active_ago"].is_u64(), "{content}");

    let (content, since) = sync_until(&server, &bob, Some(since), "alice unavailable", |s| {
        presence_of(s, &alice).filter(|c| c["presence"] != "online")
    })
    .await;
    assert_eq!(content["presence"], "unavailable");
    assert_eq!(content["status_msg"], "at lunch");
    let (content, _) = sync_until(&server, &bob, Some(since), "alice offline", |s| {
        presence_of(s, &alice).filter(|c| c["presence"] != "unavailable")
    })
    .await;
    assert_eq!(content["presence"], "offline");

    let path = format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id));
    let (status, body) = server.get(&path, &bob.token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["presence"], "offline");
    assert!(
        body["last_active_ago"]
            .as_u64()
            .is_some_and(|ago| ago >= 2000),
        "{body}"
    );
    // Carol shares no room with alice; nobody sets another user's presence.
    let (status, body) = server.get(&path, &carol.token).await;
    assert_eq!(
        (status.as_u16(), errcode(&body)),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );
    let (status, body) = server
        .put(&path, &bob.token, json!({ "presence": "online" }))
        .await;
    assert_eq!(
        (status.as_u16(), errcode(&body)),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );
    let (status, _) = put_presence(&server, &alice, json!({ "presence": "asleep" })).await;
    assert_eq!(status, 400);
    // Carol never sees alice's presence in her sync.
    let sync = server.sync(&carol, None, 0).await;
    assert!(presence_of(&sync, &alice).is_none(), "{sync}");

    // Syncing makes alice online again; set_presence=unavailable keeps her unavailable.
    server.sync(&alice, None, 0).await;
    let (_, body) = server.get(&path, &bob.token).await;
    assert_eq!(body["presence"], "online");
    server
        .get(
            "/_matrix/client/v3/sync?timeout=0&set_presence=unavailable",
            &alice.token,
        )
        .await;
    let (_, body) = server.get(&path, &bob.token).await;
    assert_eq!(body["presence"], "unavailable");
}

#[tokio::test]
async fn presence_can_be_turned_off() {
    let server = TestServer::start_with(|c| c.allow_local_presence = false).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    shared_room(&server, &alice, &[&bob]).await;
    let (status, _) = put_presence(&server, &alice, json!({ "presence": "online" })).await;
    assert_eq!(status, 200);
    server.sync(&alice, None, 0).await;
    let sync = server.sync(&bob, None, 0).await;
    assert!(sync.get("presence").is_none(), "{sync}");
    let (_, body) = server
        .get(
            &format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id)),
            &bob.token,
        )
        .await;
    assert_eq!(body["presence"], "offline");
}

#[tokio::test]
async fn joining_a_room_brings_the_presence_of_its_members() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let (status, _) = put_presence(
        &server,
        &alice,
        json!({ "presence": "online", "status_msg": "here" }),
    )
    .await;
    assert_eq!(status, 200);
    let sync = server.sync(&bob, None, 0).await;
    assert!(
        presence_of(&sync, &alice).is_none(),
        "no shared room yet: {sync}"
    );
    let since = crate::common::next_batch(&sync);
    server.join(&bob, &room).await;
    let sync = server.sync(&bob, Some(&since), 0).await;
    let content = presence_of(&sync, &alice).expect("alice's presence after the join");
    assert_eq!(content["status_msg"], "here");
}
