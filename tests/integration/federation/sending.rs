//! The outgoing federation queue: what a local event is queued for, that the queue is
//! written with the event and survives a restart, the transaction limits, and backoff
//! for a destination that does not answer.
//!
//! The remote servers here are IP literals on port 1: nothing listens there, so every
//! delivery fails whether or not the transport is built, and the queue stays observable.

use std::time::{Duration, Instant};

use conduit::service::{
    Services,
    rooms::PduBuilder,
    sending::{MAX_EDUS, MAX_PDUS, Outgoing},
};
use ruma::{OwnedEventId, OwnedServerName, RoomId, ServerName, UserId, events::StateEventType};
use serde_json::{Value, json};

use crate::common::{TestServer, enc};

const REMOTE: &str = "127.0.0.1:1";
const OTHER: &str = "127.0.0.2:1";

fn services(server: &TestServer) -> &Services {
    &server.server.as_ref().expect("running").services
}

fn remote() -> OwnedServerName {
    ServerName::parse(REMOTE).unwrap()
}

/// The PDUs queued for `destination`, as `(event id, JSON sent)`.
fn queued_pdus(server: &TestServer, destination: &str) -> Vec<(OwnedEventId, Value)> {
    services(server)
        .sending
        .queued(&ServerName::parse(destination).unwrap())
        .unwrap()
        .into_iter()
        .filter_map(|q| match q.item {
            Outgoing::Pdu { event_id, json } => {
                Some((event_id, serde_json::from_str(json.get()).unwrap()))
            }
            Outgoing::Edu(_) => None,
        })
        .collect()
}

/// Appends a member event as if `user` (of another server) had sent it.
async fn remote_membership(server: &TestServer, room: &str, user: &str, membership: &str) {
    let user = UserId::parse(user).unwrap();
    services(server)
        .rooms
        .build_and_append(
            &user,
            &RoomId::parse(room).unwrap(),
            PduBuilder::state(
                StateEventType::RoomMember,
                user.as_str(),
                &json!({ "membership": membership }),
            ),
        )
        .await
        .expect("member event appended");
}

#[tokio::test]
async fn member_event_for_a_remote_user_is_queued_for_its_server() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    assert!(queued_pdus(&server, REMOTE).is_empty());

    let bob = format!("@bob:{REMOTE}");
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/ban", enc(&room)),
            &alice.token,
            json!({ "user_id": bob }),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let queued = queued_pdus(&server, REMOTE);
    assert_eq!(queued.len(), 1, "{queued:?}");
    let (event_id, pdu) = &queued[0];
    assert_eq!(pdu["type"], "m.room.member");
    assert_eq!(pdu["state_key"], bob);
    assert_eq!(pdu["content"]["membership"], "ban");
    assert_eq!(pdu["room_id"], room);
    assert!(pdu["signatures"]["localhost"].is_object(), "{pdu}");
    // Room version 12: the id is the reference hash, which peers compute themselves;
    // `unsigned` is this server's, not part of the event.
    assert!(pdu.get("event_id").is_none(), "{pdu}");
    assert!(pdu.get("unsigned").is_none(), "{pdu}");
    let (status, stored) = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/event/{}",
                enc(&room),
                enc(event_id.as_str())
            ),
            &alice.token,
        )
        .await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["content"]["membership"], "ban");

    // Bob's server has nobody joined: messages are not its business.
    server.send_text(&alice, &room, "hello").await;
    assert_eq!(queued_pdus(&server, REMOTE).len(), 1);
    assert!(queued_pdus(&server, OTHER).is_empty());
}

#[tokio::test]
async fn room_events_follow_the_joined_servers_and_survive_a_restart() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let bob = format!("@bob:{REMOTE}");
    let carol = format!("@carol:{OTHER}");

    // A member event this server adds (as the resident of a send_join) is this server's
    // to distribute, whoever it is about.
    remote_membership(&server, &room, &bob, "join").await;
    let joins = queued_pdus(&server, REMOTE);
    assert_eq!(joins.len(), 1);
    assert_eq!(joins[0].1["type"], "m.room.member");

    let first = server.send_text(&alice, &room, "one").await;
    let queued = queued_messages(&server, REMOTE);
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].0, first.as_str());
    assert_eq!(queued[0].1["content"]["body"], "one");
    assert!(queued_messages(&server, OTHER).is_empty());

    remote_membership(&server, &room, &carol, "join").await;
    let second = server.send_text(&alice, &room, "two").await;
    assert_eq!(queued_messages(&server, OTHER).len(), 1);

    // Written with the event: a restart loses nothing, and the servers of the room are
    // known again from the stored memberships.
    let server = server.restart().await;
    let alice = server.login(&alice).await;
    let third = server.send_text(&alice, &room, "three").await;
    let ids: Vec<_> = queued_messages(&server, REMOTE)
        .into_iter()
        .map(|(id, _)| id.to_string())
        .collect();
    assert_eq!(ids, [first, second.clone(), third.clone()]);

    // Once bob left, his server no longer gets the room's events; carol's still does.
    remote_membership(&server, &room, &bob, "leave").await;
    server.send_text(&alice, &room, "four").await;
    assert_eq!(queued_messages(&server, REMOTE).len(), 3);
    let other: Vec<_> = queued_messages(&server, OTHER)
        .into_iter()
        .map(|(id, _)| id.to_string())
        .collect();
    assert_eq!(other.len(), 3, "{other:?}");
    assert_eq!(other[..2], [second, third]);
}

/// The queued `m.room.message` PDUs for `dest`.
fn queued_messages(server: &TestServer, dest: &str) -> Vec<(OwnedEventId, Value)> {
    queued_pdus(server, dest)
        .into_iter()
        .filter(|(_, pdu)| pdu["type"] == "m.room.message")
        .collect()
}

/// Polls until `done` holds; a wait, not a timing assertion.
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn transactions_respect_the_limits_and_failures_back_off() {
    let server = TestServer::start_with(|c| {
        c.federation_retry_base_ms = 20;
        c.federation_retry_max_ms = 160;
    })
    .await;
    let sending = &services(&server).sending;
    let dest = remote();
    let queue_pdus = |range: std::ops::Range<u32>| {
        for n in range {
            let event_id = OwnedEventId::try_from(format!("$event{n}")).unwrap();
            let json = serde_json::to_vec(&json!({ "event_id": event_id, "n": n })).unwrap();
            services(&server)
                .db
                .commit(|c| sending.queue_pdu(c, std::slice::from_ref(&dest), &event_id, &json))
                .unwrap();
        }
        sending.wake();
    };
    queue_pdus(0..30);
    for n in 0..120 {
        let edu = json!({ "edu_type": "m.typing", "content": { "n": n } });
        sending
            .queue_edu(&[dest.clone(), server.server_name.parse().unwrap()], edu)
            .unwrap();
    }
    queue_pdus(30..100);
    assert_eq!(sending.queued(&dest).unwrap().len(), 220);
    // Nothing is queued for this server itself.
    assert_eq!(sending.destinations().unwrap(), std::slice::from_ref(&dest));

    let txn = sending.next_transaction(&dest).unwrap().expect("queued");
    assert_eq!((txn.pdus.len(), txn.edus.len()), (30, MAX_EDUS));
    assert_eq!(txn.pdus[0].0, "$event0");
    let edu: Value = serde_json::from_str(txn.edus[0].get()).unwrap();
    assert_eq!(edu["content"]["n"], 0);

    // The stubbed or unreachable peer fails every attempt: the wait doubles up to the
    // maximum, and nothing is dropped.
    let expected = |failures: u32| -> std::ops::RangeInclusive<u64> {
        let full = (20u64 << (failures - 1).min(10)).min(160);
        full * 3 / 4..=full
    };
    wait_for("a first failure", || {
        sending.backoff(&dest).unwrap().is_some()
    })
    .await;
    let early = sending.backoff(&dest).unwrap().unwrap();
    assert!(
        expected(early.failures).contains(&early.delay_ms),
        "{early:?}"
    );
    wait_for("five failures", || {
        sending.backoff(&dest).unwrap().unwrap().failures >= 5
    })
    .await;
    let late = sending.backoff(&dest).unwrap().unwrap();
    assert!(late.failures > early.failures);
    assert!(expected(late.failures).contains(&late.delay_ms), "{late:?}");
    assert_eq!(expected(late.failures), 120..=160);
    assert_eq!(sending.queued(&dest).unwrap().len(), 220);

    // The failure count and the queue survive a restart, and the destination is resumed
    // without anything new being queued.
    let failures = late.failures;
    let server = server.restart().await;
    let sending = &services(&server).sending;
    assert_eq!(sending.queued(&dest).unwrap().len(), 220);
    assert!(sending.backoff(&dest).unwrap().unwrap().failures >= failures);
    wait_for("a retry after the restart", || {
        sending.backoff(&dest).unwrap().unwrap().failures > failures
    })
    .await;

    // A backlog of PDUs alone goes 50 at a time.
    let other = ServerName::parse(OTHER).unwrap();
    for n in 0..60 {
        let event_id = OwnedEventId::try_from(format!("$other{n}")).unwrap();
        services(&server)
            .db
            .commit(|c| sending.queue_pdu(c, std::slice::from_ref(&other), &event_id, b"{}"))
            .unwrap();
    }
    let txn = sending.next_transaction(&other).unwrap().expect("queued");
    assert_eq!((txn.pdus.len(), txn.edus.len()), (MAX_PDUS, 0));
}
