//! Federation against peers that misbehave or are broken, and across every room version.
//!
//! The "malicious peer" is a real second server: its keys are published and fetchable, so
//! what it signs verifies at the victim. Its events are built with its own room view
//! (`prepare_event`), then hashed and signed with its key (`hash_and_sign`), optionally
//! tampered with, and pushed to the victim's `/send` with a hand-made `X-Matrix` header.

use std::time::{Duration, Instant};

use conduit::service::rooms::{PduBuilder, federation_format::to_federation_format};
use reqwest::StatusCode;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedServerName, RoomId, UserId,
    api::federation::{
        authentication::{XMatrix, XMatrixSigningInput},
        event::{get_event, get_room_state_ids},
        membership::prepare_join_event,
    },
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    signatures::Ed25519KeyPair,
};
use serde_json::{Value, json};

use crate::common::{TestServer, User, bodies, enc, errcode, join_via, next_batch, timeline};

/// Room versions, knocks and restricted joins between two well-behaved servers.
mod across;

async fn federated() -> TestServer {
    TestServer::start_federated_with(|c| {
        c.federation_retry_base_ms = 50;
        c.federation_retry_max_ms = 400;
    })
    .await
}

/// A server named `localhost:<port>`. ACLs match a server's host without its port, so this
/// is how a test tells one loopback server apart from the `127.0.0.1` ones.
async fn federated_as_localhost() -> TestServer {
    TestServer::start_federated_with(|c| {
        let port = c.server_name.port().expect("test servers have a port");
        c.server_name = format!("localhost:{port}").try_into().expect("server name");
        c.federation_retry_base_ms = 50;
        c.federation_retry_max_ms = 400;
    })
    .await
}

fn name(server: &TestServer) -> OwnedServerName {
    server.server_name.clone().try_into().expect("server name")
}

fn room_id(room: &str) -> &RoomId {
    <&RoomId>::try_from(room).expect("room id")
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Long-polls `user`'s sync until `done` finds what it waits for in the accumulated
/// timeline of `room`.
async fn wait_for_timeline(
    server: &TestServer,
    user: &User,
    room: &str,
    what: &str,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let started = Instant::now();
    let mut since: Option<String> = None;
    let mut seen: Vec<String> = Vec::new();
    loop {
        let sync = server.sync(user, since.as_deref(), 1000).await;
        seen.extend(bodies(&timeline(&sync, room)));
        since = Some(next_batch(&sync));
        if done(&seen) {
            return seen;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}: timed out waiting for {what}; saw {seen:?}",
            user.user_id
        );
    }
}

async fn membership_on(server: &TestServer, viewer: &User, room: &str, user: &str) -> Value {
    let (status, body) = server
        .state_event(viewer, room, "m.room.member", user)
        .await;
    if status == StatusCode::OK {
        body["membership"].clone()
    } else {
        Value::Null
    }
}

/// `GET /rooms/{room}/event/{event}` as `user` sees it.
async fn client_event(
    server: &TestServer,
    user: &User,
    room: &str,
    event_id: &OwnedEventId,
) -> (StatusCode, Value) {
    server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/event/{}",
                enc(room),
                enc(event_id.as_str())
            ),
            &user.token,
        )
        .await
}

/// The message bodies of the room's whole history as `/messages` pages it, newest first.
async fn history(server: &TestServer, user: &User, room: &str) -> Vec<String> {
    let (status, page) = server.messages(user, room, "dir=b&limit=100").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

fn rules(server: &TestServer, room: &str) -> RoomVersionRules {
    server
        .services()
        .rooms
        .room_version(room_id(room))
        .expect("reads")
        .expect("room is known")
        .rules()
        .expect("supported version")
}

fn message(body: &str) -> PduBuilder {
    PduBuilder::new(
        TimelineEventType::RoomMessage,
        serde_json::value::to_raw_value(&json!({ "msgtype": "m.text", "body": body }))
            .expect("content"),
    )
}

/// An event of `sender` in `room`, built on `peer`'s view of the room and hashed and signed
/// by `peer`, in the form it travels in. `edit` changes the event before it is signed.
fn peer_pdu(
    peer: &TestServer,
    sender: &str,
    room: &str,
    builder: PduBuilder,
    edit: impl FnOnce(&mut CanonicalJsonObject),
) -> (OwnedEventId, CanonicalJsonObject) {
    let rooms = &peer.services().rooms;
    let prepared = rooms
        .prepare_event(
            &UserId::parse(sender).expect("user id"),
            Some(room_id(room)),
            builder,
        )
        .expect("the peer can build the event");
    let mut object = prepared.object.clone();
    edit(&mut object);
    let (mut object, pdu) = rooms
        .hash_and_sign(object, &prepared.rules)
        .expect("the peer signs");
    to_federation_format(&mut object, &prepared.rules);
    (pdu.event_id.clone(), object)
}

/// Replaces the event's signatures with one by a key the peer never published, under the
/// id of the key it did publish.
fn forge_signature(peer: &TestServer, object: &mut CanonicalJsonObject, rules: &RoomVersionRules) {
    let version = peer.services().globals.keypair.version().to_owned();
    let other = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), version).expect("key");
    object.remove("signatures");
    ruma::signatures::sign_event(peer.server_name.as_str(), &other, object, &rules.redaction)
        .expect("signs");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

fn transaction(origin: &str, pdus: &[CanonicalJsonObject], edus: Vec<Value>) -> Value {
    json!({
        "origin": origin,
        "origin_server_ts": now_ms(),
        "pdus": pdus,
        "edus": edus,
    })
}

/// `PUT /send/{txn}` from `from` to `to`, signed with `from`'s key.
async fn send_transaction(
    from: &TestServer,
    to: &TestServer,
    txn: &str,
    body: &Value,
) -> (StatusCode, Value) {
    let uri = format!("/_matrix/federation/v1/send/{txn}");
    let bytes = serde_json::to_vec(body).expect("serialises");
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
    let response = reqwest::Client::new()
        .put(format!("{}{uri}", to.base))
        .header("Authorization", authorization.to_string())
        .header("Content-Type", "application/json")
        .body(bytes)
        .send()
        .await
        .expect("answered");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Alice's public room on `a` with `peer_users` of `p` joined through `a`, as both
/// servers see it.
async fn room_with_peer(
    a: &TestServer,
    p: &TestServer,
    peer_users: &[&str],
) -> (User, Vec<User>, String) {
    let alice = a.register("alice").await;
    let room = a
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let mut users = Vec::new();
    for localpart in peer_users {
        let user = p.register(localpart).await;
        let (status, body) = join_via(p, &user, &room, &a.server_name).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        wait_until("the peer's join on the victim", || async {
            membership_on(a, &alice, &room, &user.user_id).await == "join"
        })
        .await;
        users.push(user);
    }
    (alice, users, room)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_of_good_and_bad_pdus_keeps_only_the_good() {
    let a = federated().await;
    let p = federated().await;
    let (alice, users, room) = room_with_peer(&a, &p, &["mallory"]).await;
    let mallory = &users[0];
    let rules = rules(&a, &room);
    let power_before = a.state_content(&alice, &room, "m.room.power_levels").await;

    let (good, good_pdu) = peer_pdu(&p, &mallory.user_id, &room, message("good"), |_| {});
    let (forged, mut forged_pdu) = peer_pdu(&p, &mallory.user_id, &room, message("forged"), |_| {});
    forge_signature(&p, &mut forged_pdu, &rules);
    // Changed after signing: the signature (over the redacted event) still holds, the
    // content hash does not.
    let (tampered, mut tampered_pdu) =
        peer_pdu(&p, &mallory.user_id, &room, message("as signed"), |_| {});
    tampered_pdu.insert(
        "content".to_owned(),
        CanonicalJsonValue::Object(
            serde_json::from_value(json!({ "msgtype": "m.text", "body": "altered" })).unwrap(),
        ),
    );
    // Mallory has no power to change the power levels.
    let (power, power_pdu) = peer_pdu(
        &p,
        &mallory.user_id,
        &room,
        PduBuilder::state(
            StateEventType::RoomPowerLevels,
            "",
            &json!({ "users": { mallory.user_id.clone(): 100 } }),
        ),
        |_| {},
    );
    // A user of the peer who never joined.
    let outsider = format!("@eve:{}", p.server_name);
    let (stranger, stranger_pdu) = peer_pdu(&p, &outsider, &room, message("from outside"), |_| {});
    // A room the victim is not in.
    let elsewhere = p
        .create_room(mallory, json!({ "preset": "public_chat" }))
        .await;
    let (unknown, unknown_pdu) = peer_pdu(
        &p,
        &mallory.user_id,
        &elsewhere,
        message("elsewhere"),
        |_| {},
    );

    let body = transaction(
        &p.server_name,
        &[
            good_pdu,
            forged_pdu,
            tampered_pdu,
            power_pdu,
            stranger_pdu,
            unknown_pdu,
        ],
        vec![],
    );
    let (status, response) = send_transaction(&p, &a, "mixed", &body).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    let results = &response["pdus"];
    assert_eq!(results[good.as_str()], json!({}), "{response}");
    assert_eq!(results[tampered.as_str()], json!({}), "{response}");
    for (what, id) in [
        ("forged", &forged),
        ("power", &power),
        ("stranger", &stranger),
    ] {
        assert!(
            results[id.as_str()]["error"].is_string(),
            "{what}: {response}"
        );
    }
    // Synapse ignores PDUs of rooms it is not in, without an entry.
    assert!(results.get(unknown.as_str()).is_none(), "{response}");

    // Alice sees the good message, and the tampered one redacted.
    let (status, event) = client_event(&a, &alice, &room, &good).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["content"]["body"], "good");
    let (status, event) = client_event(&a, &alice, &room, &tampered).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["content"], json!({}), "{event}");

    // The rejected ones were never stored.
    for id in [&forged, &power, &stranger, &unknown] {
        let (status, event) = client_event(&a, &alice, &room, id).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}: {event}");
        assert!(
            a.services().rooms.get_pdu(id).unwrap().is_none(),
            "{id} is stored"
        );
    }
    assert!(!a.services().rooms.exists(room_id(&elsewhere)).unwrap());
    assert_eq!(
        a.state_content(&alice, &room, "m.room.power_levels").await,
        power_before
    );
    let texts = history(&a, &alice, &room).await;
    assert_eq!(texts, vec!["good".to_owned()], "{texts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_transactions_are_refused_whole() {
    let a = federated().await;
    let p = federated().await;
    let (alice, users, room) = room_with_peer(&a, &p, &["mallory"]).await;
    let mallory = &users[0];

    let built: Vec<(OwnedEventId, CanonicalJsonObject)> = (0..51)
        .map(|n| {
            peer_pdu(
                &p,
                &mallory.user_id,
                &room,
                message(&format!("m{n}")),
                |_| {},
            )
        })
        .collect();
    let pdus: Vec<CanonicalJsonObject> = built.iter().map(|(_, o)| o.clone()).collect();
    let (status, body) = send_transaction(
        &p,
        &a,
        "too-many-pdus",
        &transaction(&p.server_name, &pdus, vec![]),
    )
    .await;
    assert_eq!(
        (status, errcode(&body)),
        (StatusCode::BAD_REQUEST, Some("M_BAD_JSON")),
        "{body}"
    );

    let edus: Vec<Value> = (0..101)
        .map(|_| {
            json!({
                "edu_type": "m.typing",
                "content": { "room_id": room, "user_id": mallory.user_id, "typing": true },
            })
        })
        .collect();
    let (status, body) = send_transaction(
        &p,
        &a,
        "too-many-edus",
        &transaction(&p.server_name, &pdus[..1], edus),
    )
    .await;
    assert_eq!(
        (status, errcode(&body)),
        (StatusCode::BAD_REQUEST, Some("M_BAD_JSON")),
        "{body}"
    );

    for (id, _) in &built {
        assert!(
            a.services().rooms.get_pdu(id).unwrap().is_none(),
            "{id} stored"
        );
    }
    assert!(history(&a, &alice, &room).await.is_empty());

    // Exactly at the limits is fine.
    let (status, body) = send_transaction(
        &p,
        &a,
        "at-the-limit",
        &transaction(&p.server_name, &pdus[..50], vec![]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["pdus"].as_object().map(|m| m.len()),
        Some(50),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_transaction_id_is_answered_from_the_first_time() {
    let a = federated().await;
    let p = federated().await;
    let (alice, users, room) = room_with_peer(&a, &p, &["mallory"]).await;
    let mallory = &users[0];

    let (first, first_pdu) = peer_pdu(&p, &mallory.user_id, &room, message("once"), |_| {});
    let body = transaction(&p.server_name, &[first_pdu], vec![]);
    let (status, answer) = send_transaction(&p, &a, "txn1", &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["pdus"][first.as_str()], json!({}), "{answer}");

    let (status, again) = send_transaction(&p, &a, "txn1", &body).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, answer);

    // Another body under the same id is not looked at.
    let (other, other_pdu) = peer_pdu(&p, &mallory.user_id, &room, message("sneaked"), |_| {});
    let (status, reused) = send_transaction(
        &p,
        &a,
        "txn1",
        &transaction(&p.server_name, &[other_pdu], vec![]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reused}");
    assert_eq!(reused, answer);
    assert!(a.services().rooms.get_pdu(&other).unwrap().is_none());
    assert_eq!(history(&a, &alice, &room).await, vec!["once".to_owned()]);

    // The same transaction id from another server is another transaction.
    let q = federated().await;
    let (status, body) =
        send_transaction(&q, &a, "txn1", &transaction(&q.server_name, &[], vec![])).await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "pdus": {} })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_from_a_banned_user_built_before_the_ban_is_soft_failed() {
    let a = federated().await;
    let p = federated().await;
    let (alice, users, room) = room_with_peer(&a, &p, &["mallory", "pat"]).await;
    let (mallory, pat) = (&users[0], &users[1]);
    wait_until("both joins on the peer", || async {
        membership_on(&p, pat, &room, &mallory.user_id).await == "join"
    })
    .await;
    let before_ban = p
        .services()
        .rooms
        .forward_extremities(room_id(&room))
        .unwrap();

    let (status, body) = a
        .membership(&alice, &room, "ban", json!({ "user_id": mallory.user_id }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Mallory's server pretends not to have seen the ban.
    let mut sneaky = message("sneaky");
    sneaky.prev_events = Some(before_ban);
    let (sneaky, sneaky_pdu) = peer_pdu(&p, &mallory.user_id, &room, sneaky, |_| {});
    let (status, answer) = send_transaction(
        &p,
        &a,
        "sneaky",
        &transaction(&p.server_name, &[sneaky_pdu], vec![]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // Soft failure is not the sender's error.
    assert_eq!(answer["pdus"][sneaky.as_str()], json!({}), "{answer}");

    // A later event of pat builds on it; it is allowed and flows.
    let sneaky_ref = sneaky.to_string();
    let (later, later_pdu) = peer_pdu(&p, &pat.user_id, &room, message("later"), |o| {
        o.insert(
            "prev_events".to_owned(),
            CanonicalJsonValue::Array(vec![CanonicalJsonValue::String(sneaky_ref)]),
        );
    });
    let (status, answer) = send_transaction(
        &p,
        &a,
        "later",
        &transaction(&p.server_name, &[later_pdu], vec![]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["pdus"][later.as_str()], json!({}), "{answer}");
    a.send_text(&alice, &room, "alice after").await;

    let seen = wait_for_timeline(&a, &alice, &room, "pat's later message", |seen| {
        seen.iter().any(|s| s == "later") && seen.iter().any(|s| s == "alice after")
    })
    .await;
    assert!(!seen.iter().any(|s| s == "sneaky"), "{seen:?}");
    let texts = history(&a, &alice, &room).await;
    assert!(texts.contains(&"later".to_owned()), "{texts:?}");
    assert!(!texts.contains(&"sneaky".to_owned()), "{texts:?}");
    let (status, event) = client_event(&a, &alice, &room, &sneaky).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{event}");
    assert_eq!(
        membership_on(&a, &alice, &room, &mallory.user_id).await,
        "ban"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_whose_origin_is_not_its_signer_is_refused() {
    let a = federated().await;
    let p = federated().await;
    let (_, users, room) = room_with_peer(&a, &p, &["mallory"]).await;
    let (id, pdu) = peer_pdu(&p, &users[0].user_id, &room, message("spoofed"), |_| {});
    let (status, body) = send_transaction(
        &p,
        &a,
        "spoof",
        &transaction(&a.server_name, &[pdu], vec![]),
    )
    .await;
    assert_eq!(
        (status, errcode(&body)),
        (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")),
        "{body}"
    );
    assert!(a.services().rooms.get_pdu(&id).unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_times_out_and_blocks_nothing() {
    let a = TestServer::start_federated_with(|c| c.federation_timeout = 2).await;
    let alice = a.register("alice").await;
    // Accepts connections and holds them, silent.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_name = format!("127.0.0.1:{}", silent.local_addr().unwrap().port());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(socket);
        }
    });

    let room = format!("!nowhere:{silent_name}");
    let started = Instant::now();
    let join = join_via(&a, &alice, &room, &silent_name);
    let others = async {
        // Answered while the join waits on the silent peer.
        let (status, body) = a
            .get("/_matrix/client/v3/account/whoami", &alice.token)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let own = a.create_room(&alice, json!({})).await;
        a.send_text(&alice, &own, "still here").await;
        Instant::now()
    };
    let ((status, body), others_done) = tokio::join!(join, others);
    let join_done = Instant::now();
    assert!(!status.is_success(), "{status} {body}");
    // The join did reach the silent peer, and gave up on it.
    assert!(accepted.load(std::sync::atomic::Ordering::SeqCst) > 0);
    assert!(errcode(&body).is_some(), "{body}");
    assert!(
        others_done < join_done,
        "other requests waited for the join"
    );
    // Well before the 10 s the tests use otherwise: the configured 2 s applies.
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "took {:?}",
        started.elapsed()
    );
    holder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_denied_by_the_acl_takes_no_part() {
    let a = federated().await;
    let p = federated_as_localhost().await;
    let (alice, users, room) = room_with_peer(&a, &p, &["mallory"]).await;
    let mallory = &users[0];
    let (status, body) = a
        .send_state(
            &alice,
            &room,
            "m.room.server_acl",
            "",
            json!({ "allow": ["*"], "deny": ["localhost"], "allow_ip_literals": true }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Its PDUs are refused.
    let (id, pdu) = peer_pdu(&p, &mallory.user_id, &room, message("denied"), |_| {});
    let (status, answer) =
        send_transaction(&p, &a, "acl", &transaction(&p.server_name, &[pdu], vec![])).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer["pdus"][id.as_str()]["error"].is_string(), "{answer}");
    assert!(a.services().rooms.get_pdu(&id).unwrap().is_none());

    // It can neither join nor read.
    let fed = &p.services().federation;
    let newcomer = UserId::parse(format!("@newcomer:{}", p.server_name)).unwrap();
    let error = fed
        .send(
            &name(&a),
            prepare_join_event::v1::Request::new(room_id(&room).to_owned(), newcomer),
        )
        .await
        .expect_err("make_join is refused");
    assert_eq!(error.status, StatusCode::FORBIDDEN, "{error}");
    let create = a
        .services()
        .rooms
        .room_state_get(room_id(&room), &StateEventType::RoomCreate, "")
        .unwrap()
        .expect("create event")
        .event_id
        .clone();
    let error = fed
        .send(&name(&a), get_event::v1::Request::new(create.clone()))
        .await
        .expect_err("/event is refused");
    assert_eq!(error.status, StatusCode::FORBIDDEN, "{error}");
    let error = fed
        .send(
            &name(&a),
            get_room_state_ids::v1::Request::new(create, room_id(&room).to_owned()),
        )
        .await
        .expect_err("/state_ids is refused");
    assert_eq!(error.status, StatusCode::FORBIDDEN, "{error}");

    // Nor does it get the room's new events. Stopped, it cannot take them off the queue.
    let denied = name(&p);
    let _p = p
        .restart_after(|| async {
            let secret = a.send_text(&alice, &room, "not for the denied").await;
            let queued = a.services().sending.queued(&denied).unwrap();
            assert!(
                !queued.iter().any(|q| matches!(
                    &q.item,
                    conduit::service::sending::queue::Outgoing::Pdu { event_id, .. }
                        if event_id.as_str() == secret
                )),
                "an event is queued for an ACL-denied server"
            );
        })
        .await;
}
