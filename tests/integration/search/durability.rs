//! The index survives its own loss and crashes, and `conduit search rebuild` rebuilds it.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{found, search_until, wait_for};
use crate::{
    common::{TestServer, enc},
    crash::{call, spawn},
};

/// The index directory lost while the server is down: the next start rebuilds it from the
/// database, and redactions stay applied.
#[tokio::test]
async fn lost_index_is_rebuilt_on_start() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server
        .create_room(&alice, json!({ "topic": "walrus talk" }))
        .await;
    server.send_text(&alice, &room, "walrus one").await;
    let gone = server.send_text(&alice, &room, "walrus two").await;
    let (status, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/r1",
                crate::common::enc(&room),
                crate::common::enc(&gone)
            ),
            &alice.token,
            json!({}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    wait_for(&server, &alice, "walrus", 2).await;
    let index_dir = server.services().config().database_path.join("search");
    assert!(index_dir.join("meta.json").exists());
    let server = server
        .restart_after(|| async {
            std::fs::remove_dir_all(&index_dir).expect("remove the index");
        })
        .await;
    let answer = wait_for(&server, &alice, "walrus", 2).await;
    let mut got = found(&answer);
    got.sort();
    assert_eq!(got, ["walrus one", "walrus talk"]);
    // And new messages are indexed as usual.
    server.send_text(&alice, &room, "walrus three").await;
    wait_for(&server, &alice, "walrus", 3).await;
}

/// `enable_search = false`: searches answer Synapse's `400 M_UNKNOWN`; turned on again,
/// the index catches up on what was stored while it was off.
#[tokio::test]
async fn search_turned_off_and_on_again() {
    let server = TestServer::start_with(|c| c.enable_search = false).await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    server.send_text(&alice, &room, "heron while off").await;
    let (status, body) = super::search(
        &server,
        &alice,
        json!({ "search_categories": { "room_events": { "search_term": "heron" } } }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errcode"], "M_UNKNOWN", "{body}");
    let server = server.restart_with(|c| c.enable_search = true).await;
    server.send_text(&alice, &room, "heron while on").await;
    let answer = wait_for(&server, &alice, "heron", 2).await;
    let mut got = found(&answer);
    got.sort();
    assert_eq!(got, ["heron while off", "heron while on"]);
}

/// A crash after events were stored but before the index committed them: the catch-up on
/// start indexes what the index's payload says is missing, and re-applies redactions made
/// since.
#[tokio::test]
async fn index_catches_up_after_restart() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    server.send_text(&alice, &room, "otter first").await;
    let secret = server.send_text(&alice, &room, "otter secret").await;
    wait_for(&server, &alice, "otter", 2).await;
    let index_dir = server.services().config().database_path.join("search");
    let saved = tempfile::tempdir().expect("temp dir");
    // Keep a copy of the index as committed now, then store more events.
    copy_dir(&index_dir, saved.path());
    let (status, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/r1",
                enc(&room),
                enc(&secret)
            ),
            &alice.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.send_text(&alice, &room, "otter second").await;
    search_until(&server, &alice, json!({ "search_term": "otter" }), |f| {
        f.len() == 2 && f.contains(&"otter second".to_owned())
    })
    .await;
    let server = server
        .restart_after(|| async {
            // Back to the older index, as if the last commits never happened.
            std::fs::remove_dir_all(&index_dir).expect("remove");
            copy_dir(saved.path(), &index_dir);
        })
        .await;
    let answer = search_until(&server, &alice, json!({ "search_term": "otter" }), |f| {
        f.contains(&"otter second".to_owned())
    })
    .await;
    let mut got = found(&answer);
    got.sort();
    assert_eq!(got, ["otter first", "otter second"]);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        // The writer's lock files belong to the running server.
        if name.to_string_lossy().ends_with(".lock") {
            continue;
        }
        std::fs::copy(entry.path(), to.join(name)).expect("copy");
    }
}

/// `kill -9` right after messages were sent (before the indexer's next commit): the next
/// start indexes them; `conduit search rebuild` on the stopped server's database works too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_the_rebuild_command() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut server = spawn(dir.path()).await;
    let register =
        json!({ "username": "finder", "password": "pw", "auth": { "type": "m.login.dummy" } });
    let (status, user) = call(
        &http,
        Method::POST,
        format!("{}/_matrix/client/v3/register", server.base),
        None,
        register,
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK, "{user}");
    let token = user["access_token"].as_str().unwrap().to_owned();
    let (_, room) = call(
        &http,
        Method::POST,
        format!("{}/_matrix/client/v3/createRoom", server.base),
        Some(&token),
        json!({}),
    )
    .await
    .unwrap();
    let room = room["room_id"].as_str().unwrap().to_owned();
    for i in 0..20 {
        let (status, body) = call(
            &http,
            Method::PUT,
            format!(
                "{}/_matrix/client/v3/rooms/{}/send/m.room.message/t{i}",
                server.base,
                enc(&room)
            ),
            Some(&token),
            json!({ "msgtype": "m.text", "body": format!("lemur number {i}") }),
        )
        .await
        .unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();

    let count = |base: String, token: String| {
        let http = http.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let answer = call(
                    &http,
                    Method::POST,
                    format!("{base}/_matrix/client/v3/search?"),
                    Some(&token),
                    json!({ "search_categories": { "room_events": { "search_term": "lemur", "filter": { "limit": 100 } } } }),
                )
                .await;
                let n = answer
                    .as_ref()
                    .map(|(_, v)| {
                        v["search_categories"]["room_events"]["results"]
                            .as_array()
                            .map_or(0, Vec::len)
                    })
                    .unwrap_or(0);
                if n == 20 || Instant::now() > deadline {
                    return n;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let mut server = spawn(dir.path()).await;
    assert_eq!(count(server.base.clone(), token.clone()).await, 20);
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_conduit"))
        .args(["search", "rebuild"])
        .env("CONDUIT_CONFIG", dir.path().join("none.toml"))
        .env("CONDUIT_SERVER_NAME", "crash.test")
        .env("CONDUIT_DATABASE_PATH", dir.path())
        .env("CONDUIT_LOG", "warn")
        .output()
        .expect("conduit search rebuild runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // 20 messages (the room's name and topic are unset).
    assert!(stdout.contains("20 events indexed"), "{stdout}");
    let mut server = spawn(dir.path()).await;
    assert_eq!(count(server.base.clone(), token.clone()).await, 20);
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();
}

/// Near real time without polling: one search a second after the send finds the message,
/// both when nobody searched before (the indexer commits rarely then, and the search has
/// it commit first) and right after other searches (it commits every half second then).
#[tokio::test]
async fn one_search_a_second_later_finds_the_message() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    for round in ["first", "second", "third"] {
        server
            .send_text(&alice, &room, &format!("puffin {round}"))
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let answer = super::room_events(
            &server,
            &alice,
            json!({ "search_term": format!("puffin {round}"), "order_by": "recent" }),
        )
        .await;
        assert!(
            found(&answer).contains(&format!("puffin {round}")),
            "{round}: {answer}"
        );
    }
}
