//! Push rule editing: add, order, enable, change actions, delete; the master rule and a
//! room rule change what counts; bad requests get the spec's errors.

use reqwest::Method;
use serde_json::{Value, json};

use super::shared_room;
use crate::common::{TestServer, User, enc, errcode};

const BASE: &str = "/_matrix/client/v3/pushrules/global";

async fn override_ids(server: &TestServer, user: &User) -> Vec<String> {
    let (status, body) = server.get(&format!("{BASE}/"), &user.token).await;
    assert_eq!(status, 200, "{body}");
    body["override"]
        .as_array()
        .expect("override rules")
        .iter()
        .map(|r| r["rule_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn unread(server: &TestServer, user: &User, room: &str) -> u64 {
    let sync = server.sync(user, None, 0).await;
    sync["rooms"]["join"][room]["unread_notifications"]["notification_count"]
        .as_u64()
        .expect("count")
}

fn rule(pattern: &str) -> Value {
    json!({
        "conditions": [{ "kind": "event_match", "key": "content.body", "pattern": pattern }],
        "actions": ["notify", { "set_tweak": "highlight" }],
    })
}

#[tokio::test]
async fn rules_are_added_ordered_toggled_and_deleted() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;

    let (status, body) = server
        .put(
            &format!("{BASE}/override/first"),
            &alice.token,
            rule("cake"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .put(
            &format!("{BASE}/override/second?before=first"),
            &alice.token,
            rule("pie"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .put(
            &format!("{BASE}/override/third?after=first"),
            &alice.token,
            rule("tea"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ids = override_ids(&server, &alice).await;
    assert_eq!(ids[0], ".m.rule.master");
    assert_eq!(&ids[1..4], ["second", "first", "third"], "{ids:?}");
    assert!(ids.contains(&".m.rule.suppress_notices".to_owned()));

    let (status, body) = server
        .get(&format!("{BASE}/override/first"), &alice.token)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rule_id"], "first");
    assert_eq!(body["conditions"][0]["pattern"], "cake");
    assert_eq!(body["default"], false);

    // Enabled and actions, for user rules and server-default ones.
    let (status, _) = server
        .put(
            &format!("{BASE}/override/first/enabled"),
            &alice.token,
            json!({ "enabled": false }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = server
        .get(&format!("{BASE}/override/first/enabled"), &alice.token)
        .await;
    assert_eq!(body["enabled"], false);
    let (status, _) = server
        .put(
            &format!("{BASE}/underride/.m.rule.message/actions"),
            &alice.token,
            json!({ "actions": [] }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = server
        .get(
            &format!("{BASE}/underride/.m.rule.message/actions"),
            &alice.token,
        )
        .await;
    assert_eq!(body["actions"], json!([]));
    // Order and state survive a restart (they are account data).
    let server = server.restart().await;
    let (_, body) = server
        .get(&format!("{BASE}/override/first/enabled"), &alice.token)
        .await;
    assert_eq!(body["enabled"], false);
    assert_eq!(
        &override_ids(&server, &alice).await[1..4],
        ["second", "first", "third"]
    );

    let (status, _) = server
        .request(
            Method::DELETE,
            &format!("{BASE}/override/second"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        &override_ids(&server, &alice).await[1..3],
        ["first", "third"]
    );
    let (status, body) = server
        .get(&format!("{BASE}/override/second"), &alice.token)
        .await;
    assert_eq!(
        (status.as_u16(), errcode(&body)),
        (404, Some("M_NOT_FOUND"))
    );
}

#[tokio::test]
async fn disabled_room_and_master_rules_change_what_counts() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = shared_room(&server, &alice, &[&bob, &carol]).await;

    server.send_text(&alice, &room, "one").await;
    assert_eq!(unread(&server, &bob, &room).await, 1);
    // A room rule without actions: the room is muted.
    let (status, body) = server
        .put(
            &format!("{BASE}/room/{}", enc(&room)),
            &bob.token,
            json!({ "actions": [] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    server.send_text(&alice, &room, "two").await;
    assert_eq!(unread(&server, &bob, &room).await, 1);
    // Disabled again, messages count.
    server
        .put(
            &format!("{BASE}/room/{}/enabled", enc(&room)),
            &bob.token,
            json!({ "enabled": false }),
        )
        .await;
    server.send_text(&alice, &room, "three").await;
    assert_eq!(unread(&server, &bob, &room).await, 2);

    // The master rule silences everything.
    let (status, _) = server
        .put(
            &format!("{BASE}/override/.m.rule.master/enabled"),
            &carol.token,
            json!({ "enabled": true }),
        )
        .await;
    assert_eq!(status, 200);
    let before = unread(&server, &carol, &room).await;
    server
        .send_text(&alice, &room, &format!("hey {}", carol.user_id))
        .await;
    assert_eq!(unread(&server, &carol, &room).await, before);
    // A disabled user rule does not match.
    server
        .put(
            &format!("{BASE}/override/.m.rule.master/enabled"),
            &carol.token,
            json!({ "enabled": false }),
        )
        .await;
    server.put(&format!("{BASE}/override/silence"), &carol.token, json!({
        "conditions": [{ "kind": "event_match", "key": "content.body", "pattern": "quiet*" }],
        "actions": [],
    })).await;
    server.send_text(&alice, &room, "quiet please").await;
    assert_eq!(unread(&server, &carol, &room).await, before);
    server
        .put(
            &format!("{BASE}/override/silence/enabled"),
            &carol.token,
            json!({ "enabled": false }),
        )
        .await;
    server.send_text(&alice, &room, "quiet again").await;
    assert_eq!(unread(&server, &carol, &room).await, before + 1);
}

#[tokio::test]
async fn malformed_and_forbidden_rule_changes_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let cases: Vec<(Method, String, Option<Value>, u16, &str)> = vec![
        (
            Method::PUT,
            format!("{BASE}/override/.mine"),
            Some(rule("x")),
            400,
            "M_INVALID_PARAM",
        ),
        (
            Method::PUT,
            format!("{BASE}/override/r?before=missing"),
            Some(rule("x")),
            404,
            "M_NOT_FOUND",
        ),
        (
            Method::PUT,
            format!("{BASE}/override/r?after=.m.rule.master"),
            Some(rule("x")),
            400,
            "M_INVALID_PARAM",
        ),
        (
            Method::PUT,
            format!("{BASE}/override/r"),
            Some(json!({ "conditions": "nope", "actions": [] })),
            400,
            "M_BAD_JSON",
        ),
        (
            Method::PUT,
            format!("{BASE}/content/r"),
            Some(json!({ "actions": ["notify"] })),
            400,
            "M_BAD_JSON",
        ),
        (
            Method::DELETE,
            format!("{BASE}/override/.m.rule.master"),
            None,
            400,
            "M_INVALID_PARAM",
        ),
        (
            Method::DELETE,
            format!("{BASE}/override/unknown"),
            None,
            404,
            "M_NOT_FOUND",
        ),
        (
            Method::PUT,
            format!("{BASE}/override/unknown/enabled"),
            Some(json!({ "enabled": true })),
            404,
            "M_NOT_FOUND",
        ),
        (
            Method::PUT,
            format!("{BASE}/override/.m.rule.master/enabled"),
            Some(json!({ "enabled": "yes" })),
            400,
            "M_BAD_JSON",
        ),
        (
            Method::GET,
            format!("{BASE}/override/unknown/actions"),
            None,
            404,
            "M_NOT_FOUND",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let (got, response) = server
            .request(method.clone(), &path, Some(&alice.token), body)
            .await;
        assert_eq!(
            (got.as_u16(), errcode(&response)),
            (status, Some(code)),
            "{method} {path}: {response}"
        );
    }
    // Nothing was stored by the refused requests.
    let ids = override_ids(&server, &alice).await;
    assert!(!ids.iter().any(|id| id == "r" || id == ".mine"), "{ids:?}");
}
