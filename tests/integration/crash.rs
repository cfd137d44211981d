//! `kill -9` at any moment loses no acknowledged message: the real binary, configured only
//! through `CONDUIT_*` environment variables, is killed while messages are being sent and
//! restarted on the same database.

use std::{
    collections::HashSet,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::enc;

pub struct Binary {
    pub child: Child,
    pub base: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn spawn(db: &std::path::Path) -> Binary {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_conduit"))
        .env("CONDUIT_CONFIG", db.join("none.toml"))
        .env("CONDUIT_SERVER_NAME", "crash.test")
        .env("CONDUIT_DATABASE_PATH", db)
        .env("CONDUIT_PORT", port.to_string())
        .env("CONDUIT_ALLOW_REGISTRATION", "true")
        .env("CONDUIT_RATE_LIMITS", "{enabled=false}")
        .env("CONDUIT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the conduit binary starts");
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while reqwest::get(format!("{base}/_matrix/client/versions"))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Binary { child, base }
}

pub async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Value,
) -> Option<(StatusCode, Value)> {
    let mut req = http.request(method, url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let response = req.send().await.ok()?;
    let status = response.status();
    Some((status, response.json().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let server = spawn(dir.path()).await;
    let register =
        json!({ "username": "crash", "password": "pw", "auth": { "type": "m.login.dummy" } });
    let (status, user) = call(
        &http,
        reqwest::Method::POST,
        format!("{}/_matrix/client/v3/register", server.base),
        None,
        register,
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(
        user["user_id"], "@crash:crash.test",
        "server name came from CONDUIT_SERVER_NAME"
    );
    let token = user["access_token"].as_str().unwrap().to_owned();
    let (_, room) = call(
        &http,
        reqwest::Method::POST,
        format!("{}/_matrix/client/v3/createRoom", server.base),
        Some(&token),
        json!({}),
    )
    .await
    .unwrap();
    let room = room["room_id"].as_str().unwrap().to_owned();

    // Four senders in flight; the kill lands in the middle of their stream.
    let mut senders = Vec::new();
    for s in 0..4 {
        let (http, base, token, room) = (
            http.clone(),
            server.base.clone(),
            token.clone(),
            room.clone(),
        );
        senders.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0.. {
                let url = format!(
                    "{base}/_matrix/client/v3/rooms/{}/send/m.room.message/s{s}m{i}",
                    enc(&room)
                );
                match call(
                    &http,
                    reqwest::Method::PUT,
                    url,
                    Some(&token),
                    json!({ "msgtype": "m.text", "body": format!("{s}-{i}") }),
                )
                .await
                {
                    Some((StatusCode::OK, body)) => {
                        acked.push(body["event_id"].as_str().unwrap().to_owned())
                    }
                    _ => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut server = server;
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();
    let mut acked = HashSet::new();
    for s in senders {
        acked.extend(s.await.unwrap());
    }
    assert!(
        acked.len() > 10,
        "only {} messages were sent before the kill",
        acked.len()
    );

    let mut server = spawn(dir.path()).await;
    let login = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "crash" }, "password": "pw" });
    let (status, session) = call(
        &http,
        reqwest::Method::POST,
        format!("{}/_matrix/client/v3/login", server.base),
        None,
        login,
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK, "{session}");
    let token = session["access_token"].as_str().unwrap();
    // Everything the room holds, page by page (a page is at most 1000 events).
    let mut stored = HashSet::new();
    let mut from = String::new();
    loop {
        let url = format!(
            "{}/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000{from}",
            server.base,
            enc(&room)
        );
        let page: Value = http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for event in page["chunk"].as_array().unwrap() {
            stored.insert(event["event_id"].as_str().unwrap().to_owned());
        }
        match page["end"].as_str() {
            Some(end) => from = format!("&from={end}"),
            None => break,
        }
    }
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost: {lost:?}",
        lost.len()
    );

    // And the server keeps working.
    let url = format!(
        "{}/_matrix/client/v3/rooms/{}/send/m.room.message/after",
        server.base,
        enc(&room)
    );
    let (status, _) = call(
        &http,
        reqwest::Method::PUT,
        url,
        Some(token),
        json!({ "msgtype": "m.text", "body": "after" }),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_promptly_with_a_long_poll_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut server = spawn(dir.path()).await;
    let register =
        json!({ "username": "term", "password": "pw", "auth": { "type": "m.login.dummy" } });
    let (_, user) = call(
        &http,
        reqwest::Method::POST,
        format!("{}/_matrix/client/v3/register", server.base),
        None,
        register,
    )
    .await
    .unwrap();
    let token = user["access_token"].as_str().unwrap().to_owned();
    let (_, first) = call(
        &http,
        reqwest::Method::GET,
        format!("{}/_matrix/client/v3/sync", server.base),
        Some(&token),
        Value::Null,
    )
    .await
    .unwrap();
    let since = first["next_batch"].as_str().unwrap().to_owned();

    let poll = {
        let (http, url) = (
            http.clone(),
            format!(
                "{}/_matrix/client/v3/sync?timeout=60000&since={since}",
                server.base
            ),
        );
        tokio::spawn(async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .map(|r| r.status())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no exit 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "clean exit: {exit:?}");
    // The waiting sync was answered, not cut off.
    assert_eq!(poll.await.unwrap().expect("answered"), StatusCode::OK);

    // The database closed cleanly and opens again.
    let mut again = spawn(dir.path()).await;
    again.child.kill().unwrap();
    again.child.wait().unwrap();
}
