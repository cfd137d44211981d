//! `POST /search` over the full-text index: ranking, the query language, filters and
//! groupings, context, pagination, visibility, redactions and rebuilding the index.
//!
//! The index lags the database by up to half a second: tests poll with a deadline, and a
//! test that expects *not* to find something first waits until someone who may see it
//! does (so the event is indexed and its absence means something).

mod durability;
mod federation;
mod query;
mod visibility;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestServer, User};

pub async fn search(server: &TestServer, user: &User, body: Value) -> (StatusCode, Value) {
    server
        .post("/_matrix/client/v3/search", &user.token, body)
        .await
}

/// A `room_events` search with `criteria` (the term and anything else), expected to work.
pub async fn room_events(server: &TestServer, user: &User, criteria: Value) -> Value {
    room_events_page(server, user, criteria, None).await
}

pub async fn room_events_page(
    server: &TestServer,
    user: &User,
    criteria: Value,
    next_batch: Option<&str>,
) -> Value {
    let path = match next_batch {
        Some(b) => format!("/_matrix/client/v3/search?next_batch={b}"),
        None => "/_matrix/client/v3/search".to_owned(),
    };
    let (status, body) = server
        .post(
            &path,
            &user.token,
            json!({ "search_categories": { "room_events": criteria } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["search_categories"]["room_events"].clone()
}

/// The bodies of the results, in order.
pub fn found(room_events: &Value) -> Vec<String> {
    room_events["results"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|r| {
                    r["result"]["content"]["body"]
                        .as_str()
                        .or(r["result"]["content"]["topic"].as_str())
                        .or(r["result"]["content"]["name"].as_str())
                        .map(ToOwned::to_owned)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Searches until the results satisfy `done` (the index catches up within a second);
/// panics with the last answer after 15 s.
pub async fn search_until(
    server: &TestServer,
    user: &User,
    criteria: Value,
    done: impl Fn(&[String]) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = room_events(server, user, criteria.clone()).await;
        if done(&found(&answer)) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "search never satisfied the condition: {criteria} -> {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `term` finds exactly `n` results for `user`.
pub async fn wait_for(server: &TestServer, user: &User, term: &str, n: usize) -> Value {
    search_until(server, user, json!({ "search_term": term }), |f| {
        f.len() == n
    })
    .await
}
