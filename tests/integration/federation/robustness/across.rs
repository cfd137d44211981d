//! Every room version, knocking and restricted joins, between two servers.

use conduit::service::rooms::federation_format::to_federation_format;
use reqwest::StatusCode;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, UserId,
    api::federation::membership::create_join_event, events::room::member::MembershipState,
};
use serde_json::json;

use super::{
    client_event, federated, join_via, membership_on, name, room_id, wait_for_timeline, wait_until,
};
use crate::common::{enc, errcode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_room_version_works_across_servers() {
    let a = federated().await;
    let b = federated().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    for version in [
        "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12",
    ] {
        let room = a
            .create_room(
                &alice,
                json!({ "preset": "public_chat", "room_version": version }),
            )
            .await;
        let (status, body) = join_via(&b, &bob, &room, &a.server_name).await;
        assert_eq!(status, StatusCode::OK, "v{version}: {body}");
        let create = b.state_content(&bob, &room, "m.room.create").await;
        let stated = create["room_version"].as_str().unwrap_or("1");
        assert_eq!(stated, version, "{create}");

        let from_a = format!("v{version} from a");
        let from_b = format!("v{version} from b");
        let alices = a.send_text(&alice, &room, &from_a).await;
        wait_for_timeline(&b, &bob, &room, &from_a, |seen| seen.contains(&from_a)).await;
        b.send_text(&bob, &room, &from_b).await;
        wait_for_timeline(&a, &alice, &room, &from_b, |seen| seen.contains(&from_b)).await;

        let (status, body) = a
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/redact/{}/r{version}",
                    enc(&room),
                    enc(&alices)
                ),
                &alice.token,
                json!({ "reason": "oops" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "v{version}: {body}");
        let alices: OwnedEventId = alices.try_into().unwrap();
        wait_until(&format!("v{version}: the redaction on b"), || async {
            let (status, event) = client_event(&b, &bob, &room, &alices).await;
            status == StatusCode::OK && event["content"] == json!({})
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knocking_and_restricted_joins_across_servers() {
    let a = federated().await;
    let b = federated().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let carol = b.register("carol").await;

    let knock_room = a
        .create_room(
            &alice,
            json!({
                "preset": "private_chat",
                "initial_state": [{
                    "type": "m.room.join_rules", "state_key": "",
                    "content": { "join_rule": "knock" },
                }],
            }),
        )
        .await;
    let (status, body) = b
        .post(
            &format!(
                "/_matrix/client/v3/knock/{}?via={}",
                enc(&knock_room),
                enc(&a.server_name)
            ),
            &bob.token,
            json!({ "reason": "let me in" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_until("bob's knock on a", || async {
        membership_on(&a, &alice, &knock_room, &bob.user_id).await == "knock"
    })
    .await;
    a.invite(&alice, &knock_room, &bob).await;
    wait_until("the invite on b", || async {
        let sync = b.sync_with(&bob, None, "").await;
        sync["rooms"]["invite"].get(&knock_room).is_some()
    })
    .await;
    let (status, body) = join_via(&b, &bob, &knock_room, &a.server_name).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_until("bob joined on a", || async {
        membership_on(&a, &alice, &knock_room, &bob.user_id).await == "join"
    })
    .await;

    // Restricted: members of the lobby may join the inner room.
    let lobby = a
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let inner = a
        .create_room(
            &alice,
            json!({
                "preset": "private_chat",
                "room_version": "10",
                "initial_state": [{
                    "type": "m.room.join_rules", "state_key": "",
                    "content": {
                        "join_rule": "restricted",
                        "allow": [{ "type": "m.room_membership", "room_id": lobby }],
                    },
                }],
            }),
        )
        .await;
    let (status, body) = join_via(&b, &carol, &inner, &a.server_name).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        matches!(
            errcode(&body),
            Some("M_FORBIDDEN" | "M_UNABLE_TO_AUTHORISE_JOIN")
        ),
        "{body}"
    );

    let (status, body) = join_via(&b, &bob, &lobby, &a.server_name).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_until("bob in the lobby on a", || async {
        membership_on(&a, &alice, &lobby, &bob.user_id).await == "join"
    })
    .await;
    // Carol's server skips make_join and names alice as authoriser itself: a's
    // signature, which the auth rules trust, is not given to a user the rules keep out.
    let (template_version, template) = a
        .services()
        .rooms
        .membership_template(
            &name(&b),
            room_id(&inner),
            &UserId::parse(&bob.user_id).unwrap(),
            MembershipState::Join,
            None,
        )
        .await
        .expect("bob may join");
    let mut forged: CanonicalJsonObject = serde_json::from_str(template.get()).unwrap();
    assert_eq!(
        serde_json::to_value(&forged["content"]).unwrap()["join_authorised_via_users_server"],
        alice.user_id
    );
    for field in ["sender", "state_key"] {
        forged.insert(
            field.to_owned(),
            CanonicalJsonValue::String(carol.user_id.clone()),
        );
    }
    let rules = template_version.rules().unwrap();
    let (mut forged, pdu) = b.services().rooms.hash_and_sign(forged, &rules).unwrap();
    to_federation_format(&mut forged, &rules);
    let error = b
        .services()
        .federation
        .send(
            &name(&a),
            create_join_event::v2::Request::new(
                room_id(&inner).to_owned(),
                pdu.event_id.clone(),
                serde_json::value::to_raw_value(&forged).unwrap(),
            ),
        )
        .await
        .expect_err("a does not vouch for carol");
    assert_eq!(error.status, StatusCode::FORBIDDEN, "{error}");
    assert_ne!(
        membership_on(&a, &alice, &inner, &carol.user_id).await,
        "join"
    );

    let (status, body) = join_via(&b, &bob, &inner, &a.server_name).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_until("bob in the inner room on a", || async {
        membership_on(&a, &alice, &inner, &bob.user_id).await == "join"
    })
    .await;
    let (status, member) = a
        .state_event(&alice, &inner, "m.room.member", &bob.user_id)
        .await;
    assert_eq!(status, StatusCode::OK, "{member}");
    assert_eq!(member["join_authorised_via_users_server"], alice.user_id);
}
