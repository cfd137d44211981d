//! What a search term finds and in which order; filters, groupings, context, pages and
//! bad requests.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{found, room_events, room_events_page, search, search_until, wait_for};
use crate::common::{TestServer, errcode};

#[tokio::test]
async fn rank_orders_by_relevance_and_recent_by_time() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let dense = "apple apple apple";
    let sparse = "one apple among many other words about fruit baskets and markets today";
    server.send_text(&alice, &room, dense).await;
    server.send_text(&alice, &room, sparse).await;
    wait_for(&server, &alice, "apple", 2).await;

    let ranked = room_events(
        &server,
        &alice,
        json!({ "search_term": "apple", "order_by": "rank" }),
    )
    .await;
    assert_eq!(found(&ranked), [dense, sparse]);
    let ranks: Vec<f64> = ranked["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rank"].as_f64().expect("rank"))
        .collect();
    assert!(ranks[0] > ranks[1], "{ranks:?}");
    let recent = room_events(
        &server,
        &alice,
        json!({ "search_term": "apple", "order_by": "recent" }),
    )
    .await;
    assert_eq!(found(&recent), [sparse, dense]);
    assert_eq!(recent["count"], 2);
    assert!(
        recent["highlights"]
            .as_array()
            .unwrap()
            .contains(&json!("apple")),
        "{recent}"
    );
}

#[tokio::test]
async fn phrases_prefixes_and_stems() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    server.send_text(&alice, &room, "the quick brown fox").await;
    server
        .send_text(&alice, &room, "brown and quick dogs")
        .await;
    server
        .send_text(&alice, &room, "internationalization matters")
        .await;
    server
        .send_text(&alice, &room, "we run every morning")
        .await;
    wait_for(&server, &alice, "morning", 1).await;

    let words = |v: &Value| {
        let mut f = found(v);
        f.sort();
        f
    };
    let both = room_events(&server, &alice, json!({ "search_term": "quick brown " })).await;
    assert_eq!(
        words(&both),
        ["brown and quick dogs", "the quick brown fox"]
    );
    let phrase = room_events(&server, &alice, json!({ "search_term": "\"quick brown\"" })).await;
    assert_eq!(found(&phrase), ["the quick brown fox"]);

    for term in ["intern*", "internation", "INTERNAT* matters"] {
        let prefix = room_events(&server, &alice, json!({ "search_term": term })).await;
        assert_eq!(found(&prefix), ["internationalization matters"], "{term}");
    }
    // Not a prefix when it is a finished word (followed by a space) and has no `*`.
    let whole = room_events(&server, &alice, json!({ "search_term": "internation " })).await;
    assert!(found(&whole).is_empty(), "{whole}");

    let stemmed = room_events(&server, &alice, json!({ "search_term": "running " })).await;
    assert_eq!(found(&stemmed), ["we run every morning"]);
    assert!(
        stemmed["highlights"]
            .as_array()
            .unwrap()
            .contains(&json!("run")),
        "{stemmed}"
    );
    let nothing = room_events(&server, &alice, json!({ "search_term": "zebra " })).await;
    assert!(found(&nothing).is_empty());
    assert_eq!(nothing["count"], 0);
}

#[tokio::test]
async fn non_latin_scripts_are_searchable() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    server
        .send_text(&alice, &room, "你好世界，今天天气很好")
        .await;
    server.send_text(&alice, &room, "界外的世人").await;
    server
        .send_text(&alice, &room, "Привет, МИР! Как дела?")
        .await;
    server.send_text(&alice, &room, "Crème brûlée à Noël").await;
    wait_for(&server, &alice, "дела", 1).await;

    let chinese = room_events(&server, &alice, json!({ "search_term": "世界" })).await;
    assert_eq!(found(&chinese), ["你好世界，今天天气很好"]);
    let russian = room_events(&server, &alice, json!({ "search_term": "мир " })).await;
    assert_eq!(found(&russian), ["Привет, МИР! Как дела?"]);
    let upper = room_events(&server, &alice, json!({ "search_term": "ПРИВЕТ " })).await;
    assert_eq!(found(&upper), ["Привет, МИР! Как дела?"]);
    let folded = room_events(
        &server,
        &alice,
        json!({ "search_term": "creme brulee noel " }),
    )
    .await;
    assert_eq!(found(&folded), ["Crème brûlée à Noël"]);
}

#[tokio::test]
async fn filters_keys_and_groupings() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let first = server
        .create_room(
            &alice,
            json!({ "name": "kiwi lounge", "preset": "public_chat" }),
        )
        .await;
    let second = server
        .create_room(
            &alice,
            json!({ "topic": "all about kiwi", "preset": "public_chat" }),
        )
        .await;
    server.join(&bob, &first).await;
    server.join(&bob, &second).await;
    server.send_text(&alice, &first, "alice likes kiwi").await;
    server.send_text(&bob, &first, "bob likes kiwi").await;
    server
        .send_text(&bob, &second, "kiwi in the second room")
        .await;
    wait_for(&server, &alice, "kiwi", 5).await;

    let sorted = |v: &Value| {
        let mut f = found(v);
        f.sort();
        f
    };
    let bodies_only = room_events(
        &server,
        &alice,
        json!({ "search_term": "kiwi", "keys": ["content.body"] }),
    )
    .await;
    assert_eq!(
        sorted(&bodies_only),
        [
            "alice likes kiwi",
            "bob likes kiwi",
            "kiwi in the second room"
        ]
    );
    let topics = room_events(
        &server,
        &alice,
        json!({ "search_term": "kiwi", "keys": ["content.topic"] }),
    )
    .await;
    assert_eq!(found(&topics), ["all about kiwi"]);
    let names = room_events(
        &server,
        &alice,
        json!({ "search_term": "kiwi", "keys": ["content.name"] }),
    )
    .await;
    assert_eq!(found(&names), ["kiwi lounge"]);

    let in_first = room_events(
        &server,
        &alice,
        json!({ "search_term": "kiwi", "keys": ["content.body"], "filter": { "rooms": [first] } }),
    )
    .await;
    assert_eq!(sorted(&in_first), ["alice likes kiwi", "bob likes kiwi"]);
    let not_first = room_events(
        &server,
        &alice,
        json!({ "search_term": "kiwi", "keys": ["content.body"], "filter": { "not_rooms": [first] } }),
    )
    .await;
    assert_eq!(found(&not_first), ["kiwi in the second room"]);
    let by_bob = room_events(
        &server,
        &alice,
        json!({ "search_term": "kiwi", "filter": { "senders": [bob.user_id] } }),
    )
    .await;
    assert_eq!(
        sorted(&by_bob),
        ["bob likes kiwi", "kiwi in the second room"]
    );
    let not_bob = room_events(
        &server,
        &alice,
        json!({ "search_term": "kiwi", "filter": { "not_senders": [bob.user_id], "types": ["m.room.message"] } }),
    )
    .await;
    assert_eq!(found(&not_bob), ["alice likes kiwi"]);
    let no_messages = room_events(
        &server,
        &alice,
        json!({ "search_term": "kiwi", "filter": { "not_types": ["m.room.message"] } }),
    )
    .await;
    assert_eq!(sorted(&no_messages), ["all about kiwi", "kiwi lounge"]);

    let grouped = room_events(
        &server,
        &alice,
        json!({
            "search_term": "kiwi",
            "keys": ["content.body"],
            "groupings": { "group_by": [{ "key": "room_id" }, { "key": "sender" }] },
        }),
    )
    .await;
    let rooms = &grouped["groups"]["room_id"];
    assert_eq!(
        rooms[&first]["results"].as_array().unwrap().len(),
        2,
        "{grouped}"
    );
    assert_eq!(
        rooms[&second]["results"].as_array().unwrap().len(),
        1,
        "{grouped}"
    );
    let senders = &grouped["groups"]["sender"];
    assert_eq!(
        senders[&bob.user_id]["results"].as_array().unwrap().len(),
        2,
        "{grouped}"
    );
    assert_eq!(
        senders[&alice.user_id]["results"].as_array().unwrap().len(),
        1,
        "{grouped}"
    );
    assert!(rooms[&first]["order"].is_u64(), "{grouped}");
}

#[tokio::test]
async fn context_and_profiles() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (status, body) = server
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                crate::common::enc(&alice.user_id)
            ),
            &alice.token,
            json!({ "displayname": "Alice A." }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let room = server.create_room(&alice, json!({})).await;
    for text in ["one", "two", "needle here", "three", "four"] {
        server.send_text(&alice, &room, text).await;
    }
    wait_for(&server, &alice, "needle", 1).await;
    let answer = room_events(
        &server,
        &alice,
        json!({
            "search_term": "needle",
            "event_context": { "before_limit": 2, "after_limit": 1, "include_profile": true },
        }),
    )
    .await;
    let context = &answer["results"][0]["context"];
    let before: Vec<&str> = context["events_before"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap())
        .collect();
    assert_eq!(before, ["two", "one"], "{answer}");
    let after: Vec<&str> = context["events_after"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap())
        .collect();
    assert_eq!(after, ["three"], "{answer}");
    assert_eq!(
        context["profile_info"][&alice.user_id]["displayname"], "Alice A.",
        "{answer}"
    );
    assert!(context["start"].is_string() && context["end"].is_string());
    // Not asked for: no context (as Synapse), not the spec's default sizes.
    let plain = room_events(&server, &alice, json!({ "search_term": "needle" })).await;
    let events_before = &plain["results"][0]["context"]["events_before"];
    assert!(
        events_before.as_array().is_none_or(|e| e.is_empty()),
        "{plain}"
    );

    let with_state = room_events(
        &server,
        &alice,
        json!({ "search_term": "needle", "include_state": true }),
    )
    .await;
    let types: Vec<&str> = with_state["state"][&room]
        .as_array()
        .expect("the room's state")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(types.contains(&"m.room.create"), "{with_state}");

    // A next_batch of one order is refused for the other.
    let page = room_events(
        &server,
        &alice,
        json!({ "search_term": "needle here", "order_by": "recent", "filter": { "limit": 1 } }),
    )
    .await;
    assert!(
        page["next_batch"].is_null(),
        "one result, no next page: {page}"
    );
    server.send_text(&alice, &room, "needle again").await;
    wait_for(&server, &alice, "needle", 2).await;
    let page = room_events(
        &server,
        &alice,
        json!({ "search_term": "needle", "order_by": "recent", "filter": { "limit": 1 } }),
    )
    .await;
    let token = page["next_batch"].as_str().expect("a next page");
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/search?next_batch={token}"),
            &alice.token,
            json!({ "search_categories": { "room_events": { "search_term": "needle", "order_by": "rank" } } }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(errcode(&body), Some("M_INVALID_PARAM"));
}

/// Pages of either order neither repeat nor skip results, and messages sent between
/// pages do not appear in later pages.
#[tokio::test]
async fn pages_are_stable_while_messages_arrive() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    for (order, word) in [("recent", "mango"), ("rank", "papaya")] {
        let mut sent = Vec::new();
        for i in 0..7 {
            // Different lengths give different scores; equal ones test the tie-break.
            let text = format!("{word} {}{i}", "filler ".repeat(i % 4));
            server.send_text(&alice, &room, &text).await;
            sent.push(text);
        }
        wait_for(&server, &alice, word, 7).await;
        let criteria = json!({ "search_term": word, "order_by": order, "filter": { "limit": 3 } });
        let all_at_once = room_events(
            &server,
            &alice,
            json!({ "search_term": word, "order_by": order }),
        )
        .await;
        let first = room_events(&server, &alice, criteria.clone()).await;
        let mut pages = found(&first);
        let mut batch = first["next_batch"].as_str().map(ToOwned::to_owned);
        let mut n = 0;
        while let Some(token) = batch {
            // Newer messages arrive between pages, matching better and worse than the
            // results so far.
            let better = format!("{word} {word} {word} better {n}");
            let worse = format!("{word} worse {n} {}", "padding ".repeat(30));
            server.send_text(&alice, &room, &better).await;
            server.send_text(&alice, &room, &worse).await;
            for term in [better, format!("{word} worse {n} ")] {
                search_until(&server, &alice, json!({ "search_term": term }), |f| {
                    f.len() == 1
                })
                .await;
            }
            n += 1;
            let page = room_events_page(&server, &alice, criteria.clone(), Some(&token)).await;
            pages.extend(found(&page));
            batch = page["next_batch"].as_str().map(ToOwned::to_owned);
            assert!(n < 10, "pagination does not end");
        }
        assert!(n >= 2, "{order}: expected several pages");
        assert_eq!(pages, found(&all_at_once), "{order}");
        let mut sorted = pages.clone();
        sorted.sort();
        sent.sort();
        assert_eq!(sorted, sent, "{order}");
    }
}

#[tokio::test]
async fn bad_requests() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (status, body) = search(&server, &alice, json!({ "search_categories": {} })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(errcode(&body), Some("M_BAD_JSON"));
    let (status, body) = search(&server, &alice, json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = search(
        &server,
        &alice,
        json!({ "search_categories": { "room_events": { "search_term": "x", "order_by": "magic" } } }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(errcode(&body), Some("M_INVALID_PARAM"));
    let (status, body) = search(
        &server,
        &alice,
        json!({ "search_categories": { "room_events": { "search_term": "x", "keys": ["content.secret"] } } }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(errcode(&body), Some("M_INVALID_PARAM"));
    let (status, body) = search(
        &server,
        &alice,
        json!({ "search_categories": { "room_events": { "search_term": "x", "filter": { "limit": "ten" } } } }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(errcode(&body), Some("M_BAD_JSON"));
    let (status, body) = server
        .post(
            "/_matrix/client/v3/search?next_batch=not-a-token",
            &alice.token,
            json!({ "search_categories": { "room_events": { "search_term": "x" } } }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(errcode(&body), Some("M_INVALID_PARAM"));
    // No words at all: nothing found, not an error.
    let empty = room_events(&server, &alice, json!({ "search_term": " ?! " })).await;
    assert_eq!(empty["count"], 0);
    let (status, _) = server
        .request(
            reqwest::Method::POST,
            "/_matrix/client/v3/search",
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
