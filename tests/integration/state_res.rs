//! Forks in the event graph: events with explicit `prev_events` (as federation delivers
//! them) are authorised against the state at those events, and where branches meet the
//! room's state is their resolution (state resolution v2).

use conduit::service::rooms::PduBuilder;
use reqwest::StatusCode;
use ruma::{EventId, OwnedEventId, RoomId, UserId, events::StateEventType};
use serde_json::json;

use crate::common::{TestServer, enc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branches_are_resolved_where_they_meet() {
    for version in ["12", "11", "1"] {
        let server = TestServer::start().await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = server
            .create_room(
                &alice,
                json!({ "preset": "public_chat", "room_version": version }),
            )
            .await;
        let services = &server.server.as_ref().unwrap().services;
        let room_id = RoomId::parse(&room).unwrap();
        let alice_id = UserId::parse(&alice.user_id).unwrap();
        let bob_id = UserId::parse(&bob.user_id).unwrap();

        let before_bob: Vec<OwnedEventId> = services.rooms.forward_extremities(&room_id).unwrap();
        server.join(&bob, &room).await;
        let base = services.rooms.forward_extremities(&room_id).unwrap();
        assert_eq!(base.len(), 1);

        let branch = |kind: StateEventType, content: serde_json::Value, prev: Vec<OwnedEventId>| {
            let mut b = PduBuilder::state(kind, "", &content);
            b.prev_events = Some(prev);
            b
        };
        // Branch A renames the room; branch B (later) renames it too and sets a topic.
        let a = services
            .rooms
            .build_and_append(
                &alice_id,
                &room_id,
                branch(
                    StateEventType::RoomName,
                    json!({ "name": "A" }),
                    base.clone(),
                ),
            )
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let b1 = services
            .rooms
            .build_and_append(
                &alice_id,
                &room_id,
                branch(
                    StateEventType::RoomTopic,
                    json!({ "topic": "T" }),
                    base.clone(),
                ),
            )
            .await
            .unwrap();
        let b2 = services
            .rooms
            .build_and_append(
                &alice_id,
                &room_id,
                branch(
                    StateEventType::RoomName,
                    json!({ "name": "B" }),
                    vec![b1.event_id.clone()],
                ),
            )
            .await
            .unwrap();

        let mut tips = services.rooms.forward_extremities(&room_id).unwrap();
        tips.sort();
        let mut expected = vec![a.event_id.clone(), b2.event_id.clone()];
        expected.sort();
        assert_eq!(tips, expected, "v{version}: two branches");

        // What a client sees: both branches' state, the name conflict resolved to the later
        // event (same sender and power: ordered by timestamp).
        let (status, name) = server
            .get(
                &format!("/_matrix/client/v3/rooms/{}/state/m.room.name", enc(&room)),
                &bob.token,
            )
            .await;
        assert_eq!(
            (status, name["name"].as_str()),
            (StatusCode::OK, Some("B")),
            "v{version}"
        );
        let (_, topic) = server
            .get(
                &format!("/_matrix/client/v3/rooms/{}/state/m.room.topic", enc(&room)),
                &bob.token,
            )
            .await;
        assert_eq!(topic["topic"], "T", "v{version}");

        // The next event joins the branches.
        let merged = server.send_text(&bob, &room, "merge").await;
        let merged = services
            .rooms
            .get_pdu(&EventId::parse(&merged).unwrap())
            .unwrap()
            .unwrap();
        let mut prev = merged.prev_events.clone();
        prev.sort();
        assert_eq!(
            prev, expected,
            "v{version}: merge event points at both tips"
        );
        assert_eq!(
            services.rooms.forward_extremities(&room_id).unwrap(),
            vec![merged.event_id.clone()]
        );

        // An event on a branch from before Bob joined is authorised against that state:
        // Bob is not a member there, so it is refused.
        let mut stale = PduBuilder::new(
            "m.room.message".into(),
            serde_json::value::to_raw_value(
                &json!({ "msgtype": "m.text", "body": "from the past" }),
            )
            .unwrap(),
        );
        stale.prev_events = Some(before_bob);
        let err = services
            .rooms
            .build_and_append(&bob_id, &room_id, stale)
            .await
            .unwrap_err();
        assert_eq!(err.errcode, "M_FORBIDDEN", "v{version}");
    }
}
