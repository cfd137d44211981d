//! Pushers: set, listed, removed; notifications delivered to a push gateway (a small HTTP
//! server in the test) with the spec's fields, in both formats, again after a restart of
//! the homeserver while the gateway was down; rejected pushkeys and internal addresses.

use std::net::SocketAddr;

use axum::{Json, Router, extract::State, routing::post};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::mpsc};

use super::shared_room;
use crate::common::{TestServer, User, errcode};

/// A push gateway on loopback: every notification it gets goes to the channel; it
/// rejects the pushkeys it was told to.
struct Gateway {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn gateway_on(
    listener: TcpListener,
    tx: mpsc::UnboundedSender<Value>,
    reject: &'static [&'static str],
) -> Gateway {
    let addr = listener.local_addr().expect("addr");
    let app =
        Router::new()
            .route(
                "/_matrix/push/v1/notify",
                post(
                    move |State(tx): State<mpsc::UnboundedSender<Value>>,
                          Json(body): Json<Value>| async move {
                        let rejected: Vec<Value> = body["notification"]["devices"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter(|d| reject.iter().any(|r| d["pushkey"] == *r))
                            .map(|d| d["pushkey"].clone())
                            .collect();
                        let _ = tx.send(body);
                        Json(json!({ "rejected": rejected }))
                    },
                ),
            )
            .with_state(tx);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .expect("gateway serves");
    });
    Gateway { addr, stop, task }
}

impl Gateway {
    fn url(&self) -> String {
        format!("http://{}/_matrix/push/v1/notify", self.addr)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn next_notification(rx: &mut mpsc::UnboundedReceiver<Value>, what: &str) -> Value {
    tokio::time::timeout(std::time::Duration::from_secs(30), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("gateway running")["notification"]
        .clone()
}

async fn set_pusher(server: &TestServer, user: &User, body: Value) -> (u16, Value) {
    let (status, body) = server
        .post("/_matrix/client/v3/pushers/set", &user.token, body)
        .await;
    (status.as_u16(), body)
}

fn http_pusher(pushkey: &str, url: &str, format: Option<&str>) -> Value {
    let mut data = json!({ "url": url, "extra": "kept" });
    if let Some(format) = format {
        data["format"] = json!(format);
    }
    json!({
        "kind": "http", "app_id": "org.example.app", "pushkey": pushkey,
        "app_display_name": "Example", "device_display_name": "Phone", "lang": "en",
        "data": data, "append": true,
    })
}

async fn pushkeys(server: &TestServer, user: &User) -> Vec<String> {
    let (status, body) = server.get("/_matrix/client/v3/pushers", &user.token).await;
    assert_eq!(status, 200, "{body}");
    body["pushers"]
        .as_array()
        .expect("pushers")
        .iter()
        .map(|p| p["pushkey"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_the_gateway_also_after_a_restart() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let gateway = gateway_on(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        tx.clone(),
        &["gone"],
    )
    .await;
    let server = TestServer::start_with(|c| {
        c.push_gateway_allowed_ranges = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = shared_room(&server, &alice, &[&bob, &carol]).await;

    let (status, body) = set_pusher(&server, &bob, http_pusher("full", &gateway.url(), None)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.get("/_matrix/client/v3/pushers", &bob.token).await;
    assert_eq!(status, 200);
    let listed = &body["pushers"][0];
    assert_eq!(listed["pushkey"], "full");
    assert_eq!(listed["data"]["url"], gateway.url());
    assert_eq!(listed["data"]["extra"], "kept");

    let event = server.send_text(&alice, &room, "hello bob").await;
    let n = next_notification(&mut rx, "the first notification").await;
    assert_eq!(n["event_id"], event);
    assert_eq!(n["room_id"], room);
    assert_eq!(n["type"], "m.room.message");
    assert_eq!(n["sender"], alice.user_id);
    assert_eq!(n["sender_display_name"], "alice");
    assert_eq!(n["content"]["body"], "hello bob");
    assert_eq!(n["counts"]["unread"], 1);
    let device = &n["devices"][0];
    assert_eq!(device["app_id"], "org.example.app");
    assert_eq!(device["pushkey"], "full");
    assert_eq!(device["data"]["extra"], "kept");
    assert!(device["data"].get("url").is_none(), "{device}");
    assert!(device["pushkey_ts"].is_u64());

    // event_id_only: ids and counts only. A mention highlights. A rejected pushkey goes.
    set_pusher(
        &server,
        &bob,
        http_pusher("short", &gateway.url(), Some("event_id_only")),
    )
    .await;
    set_pusher(&server, &bob, http_pusher("gone", &gateway.url(), None)).await;
    let event = server
        .send_text(&alice, &room, &format!("hey {}", bob.user_id))
        .await;
    let mut by_key = std::collections::HashMap::new();
    for _ in 0..3 {
        let n = next_notification(&mut rx, "three notifications").await;
        by_key.insert(n["devices"][0]["pushkey"].as_str().unwrap().to_owned(), n);
    }
    let short = &by_key["short"];
    assert_eq!(short["event_id"], event);
    assert_eq!(short["counts"]["unread"], 2);
    assert!(
        short.get("content").is_none() && short.get("sender").is_none(),
        "{short}"
    );
    assert_eq!(by_key["full"]["devices"][0]["tweaks"]["highlight"], true);
    assert_eq!(by_key["full"]["prio"], "high");
    // The gateway answers after it reported the notification: wait for the removal.
    let started = std::time::Instant::now();
    while pushkeys(&server, &bob).await.contains(&"gone".to_owned()) {
        assert!(
            started.elapsed().as_secs() < 30,
            "the rejected pushkey was kept"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // The gateway is down while a message is sent and the homeserver restarts: the push
    // waits in the queue and arrives once the gateway is back.
    let addr = gateway.addr;
    gateway.stop().await;
    set_pusher(
        &server,
        &bob,
        json!({ "kind": null, "app_id": "org.example.app", "pushkey": "short" }),
    )
    .await;
    assert_eq!(pushkeys(&server, &bob).await, vec!["full".to_owned()]);
    let event = server.send_text(&alice, &room, "while you were away").await;
    let server = server.restart().await;
    assert!(server.services().push.queued_pushes() >= 1);
    let gateway = gateway_on(TcpListener::bind(addr).await.expect("rebind"), tx, &[]).await;
    let n = next_notification(&mut rx, "the queued notification").await;
    assert_eq!(n["event_id"], event);
    assert_eq!(n["content"]["body"], "while you were away");
    gateway.stop().await;
}

#[tokio::test]
async fn internal_addresses_and_bad_pushers_are_refused() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let gateway = gateway_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), tx, &[]).await;
    // No allowed ranges: loopback is off limits.
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    let (status, body) = set_pusher(&server, &bob, http_pusher("k", &gateway.url(), None)).await;
    assert_eq!(status, 200, "{body}");
    server.send_text(&alice, &room, "hello").await;
    let started = std::time::Instant::now();
    while server.services().push.queued_pushes() > 0 {
        assert!(
            started.elapsed().as_secs() < 30,
            "the push was never taken off the queue"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(rx.try_recv().is_err(), "a push reached a loopback gateway");

    let bad = [
        http_pusher("k", "http://gateway.example/notify", None),
        http_pusher("k", "ftp://gateway.example/_matrix/push/v1/notify", None),
        http_pusher("", &gateway.url(), None),
        json!({ "kind": "email", "app_id": "m.email", "pushkey": "a@example.org",
                "app_display_name": "x", "device_display_name": "x", "lang": "en", "data": {} }),
    ];
    for body in bad {
        let (status, response) = set_pusher(&server, &bob, body.clone()).await;
        assert_eq!(
            (status, errcode(&response)),
            (400, Some("M_INVALID_PARAM")),
            "{body}: {response}"
        );
    }
    let (status, response) =
        set_pusher(&server, &bob, json!({ "kind": "http", "app_id": "x" })).await;
    assert_eq!(
        (status, errcode(&response)),
        (400, Some("M_BAD_JSON")),
        "{response}"
    );
    assert_eq!(pushkeys(&server, &bob).await, vec!["k".to_owned()]);
    gateway.stop().await;
}

#[tokio::test]
async fn logging_a_device_out_removes_its_pushers() {
    let server = TestServer::start().await;
    let phone = server.register("bob").await;
    let laptop = server.login(&phone).await;
    let url = "https://push.example.org/_matrix/push/v1/notify";
    let (status, body) = set_pusher(&server, &phone, http_pusher("phone-key", url, None)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = set_pusher(&server, &laptop, http_pusher("laptop-key", url, None)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(pushkeys(&server, &laptop).await.len(), 2);

    let (status, body) = server
        .post("/_matrix/client/v3/logout", &phone.token, json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(pushkeys(&server, &laptop).await, ["laptop-key"]);
}

/// The append path keeps each member's pushers in memory; a pusher set or removed after
/// the member was already evaluated for earlier messages must count from the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pusher_set_or_removed_later_applies_to_the_next_message() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let gateway = gateway_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), tx, &[]).await;
    let server = TestServer::start_with(|c| {
        c.push_gateway_allowed_ranges = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = shared_room(&server, &alice, &[&bob]).await;
    server.send_text(&alice, &room, "before any pusher").await;

    let (status, body) =
        set_pusher(&server, &bob, http_pusher("later", &gateway.url(), None)).await;
    assert_eq!(status, 200, "{body}");
    let event = server.send_text(&alice, &room, "after the pusher").await;
    let n = next_notification(&mut rx, "a push through the new pusher").await;
    assert_eq!(n["event_id"], event);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.services().push.queued_pushes() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the delivered push stays queued"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let (status, body) = set_pusher(
        &server,
        &bob,
        json!({ "kind": null, "app_id": "org.example.app", "pushkey": "later" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    server.send_text(&alice, &room, "after the removal").await;
    // Nothing is queued for the removed pusher (the queue is written with the event).
    assert_eq!(server.services().push.queued_pushes(), 0);
    gateway.stop().await;
}
