//! The whole Matrix encryption flow with real Olm and Megolm (vodozemac): Alice claims one
//! of Bob's one-time keys, opens an Olm session, sends the Megolm room key to Bob's device
//! as a to-device message and an encrypted message to the room; Bob decrypts both. The
//! server only ever holds ciphertext.

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use serde_json::{Value, json};
use vodozemac::{
    Curve25519PublicKey,
    megolm::{self, GroupSession, InboundGroupSession, MegolmMessage, SessionKey},
    olm::{OlmMessage, SessionConfig},
};

use super::{Device, claim, encrypted_room, query_keys};
use crate::common::{TestServer, User, enc, next_batch, timeline};

pub const SECRET: &str = "the eagle lands at midnight";

/// What Alice needs of Bob's device, read from `/keys/query` and `/keys/claim`.
pub struct PeerDevice {
    pub curve25519: Curve25519PublicKey,
    pub ed25519: String,
    pub one_time_key: Curve25519PublicKey,
}

pub async fn fetch_peer(server: &TestServer, me: &User, peer: &User) -> PeerDevice {
    let keys = query_keys(server, me, &peer.user_id).await;
    let device = &keys["device_keys"][&peer.user_id][&peer.device_id];
    let curve = device["keys"][format!("curve25519:{}", peer.device_id)]
        .as_str()
        .unwrap_or_else(|| panic!("curve25519 key of {}: {keys}", peer.user_id));
    let ed = device["keys"][format!("ed25519:{}", peer.device_id)]
        .as_str()
        .expect("ed25519 key");
    let (status, claimed) = claim(server, me, peer).await;
    assert_eq!(status, 200, "{claimed}");
    let otks = claimed["one_time_keys"][&peer.user_id][&peer.device_id]
        .as_object()
        .unwrap_or_else(|| panic!("a one-time key: {claimed}"));
    let (_, otk) = otks.iter().next().expect("one key");
    PeerDevice {
        curve25519: Curve25519PublicKey::from_base64(curve).expect("curve25519"),
        ed25519: ed.to_owned(),
        one_time_key: Curve25519PublicKey::from_base64(otk["key"].as_str().expect("key"))
            .expect("one-time key"),
    }
}

/// Alice's side: sends the room key to Bob's device over Olm and an encrypted message to
/// the room. Returns the event id of the message.
pub async fn send_encrypted(
    server: &TestServer,
    alice: &Device,
    bob: &User,
    peer: &PeerDevice,
    room: &str,
) -> String {
    let mut olm = alice
        .account
        .create_outbound_session(
            SessionConfig::version_1(),
            peer.curve25519,
            peer.one_time_key,
        )
        .expect("olm session");
    let mut group = GroupSession::new(megolm::SessionConfig::version_1());
    let room_key = json!({
        "type": "m.room_key",
        "content": {
            "algorithm": "m.megolm.v1.aes-sha2",
            "room_id": room,
            "session_id": group.session_id(),
            "session_key": group.session_key().to_base64(),
        },
        "sender": alice.user.user_id,
        "recipient": bob.user_id,
        "recipient_keys": { "ed25519": peer.ed25519 },
        "keys": { "ed25519": alice.ed25519() },
    });
    let (kind, body) = olm
        .encrypt(room_key.to_string())
        .expect("olm encrypt")
        .to_parts();
    let to_device = json!({
        "algorithm": "m.olm.v1.curve25519-aes-sha2",
        "sender_key": alice.curve25519(),
        "ciphertext": { peer.curve25519.to_base64(): { "type": kind, "body": STANDARD_NO_PAD.encode(body) } },
    });
    let (status, response) = server
        .put(
            "/_matrix/client/v3/sendToDevice/m.room.encrypted/olm1",
            &alice.user.token,
            json!({ "messages": { bob.user_id.clone(): { bob.device_id.clone(): to_device } } }),
        )
        .await;
    assert_eq!(status, 200, "{response}");

    let plaintext = json!({
        "type": "m.room.message",
        "content": { "msgtype": "m.text", "body": SECRET },
        "room_id": room,
    });
    let message = group.encrypt(plaintext.to_string());
    let (status, response) = server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.encrypted/m1",
                enc(room)
            ),
            &alice.user.token,
            json!({
                "algorithm": "m.megolm.v1.aes-sha2",
                "sender_key": alice.curve25519(),
                "ciphertext": message.to_base64(),
                "session_id": group.session_id(),
                "device_id": alice.user.device_id,
            }),
        )
        .await;
    assert_eq!(status, 200, "{response}");
    response["event_id"].as_str().expect("event id").to_owned()
}

/// Bob's side: syncs until the room key and the message are there, decrypts both and
/// returns the message body.
pub async fn receive_encrypted(
    server: &TestServer,
    bob: &mut Device,
    room: &str,
    since: Option<String>,
) -> String {
    let started = std::time::Instant::now();
    let mut since = since;
    let mut inbound: Option<InboundGroupSession> = None;
    let mut pending: Vec<Value> = Vec::new();
    loop {
        let sync = server.sync(&bob.user, since.as_deref(), 1000).await;
        for event in sync["to_device"]["events"].as_array().into_iter().flatten() {
            if event["type"] != "m.room.encrypted" {
                continue;
            }
            let content = &event["content"];
            let ours = &content["ciphertext"][bob.curve25519()];
            let bytes = STANDARD_NO_PAD
                .decode(ours["body"].as_str().expect("body"))
                .expect("base64");
            let message =
                OlmMessage::from_parts(ours["type"].as_u64().expect("type") as usize, &bytes)
                    .expect("olm message");
            let OlmMessage::PreKey(prekey) = message else {
                panic!("the first Olm message is a pre-key message");
            };
            let sender_key =
                Curve25519PublicKey::from_base64(content["sender_key"].as_str().expect("key"))
                    .expect("sender key");
            let result = bob
                .account
                .create_inbound_session(SessionConfig::version_1(), sender_key, &prekey)
                .expect("inbound olm session");
            let room_key: Value = serde_json::from_slice(&result.plaintext).expect("json");
            assert_eq!(room_key["type"], "m.room_key");
            assert_eq!(room_key["recipient"], bob.user.user_id);
            let session_key =
                SessionKey::from_base64(room_key["content"]["session_key"].as_str().expect("key"))
                    .expect("session key");
            inbound = Some(InboundGroupSession::new(
                &session_key,
                megolm::SessionConfig::version_1(),
            ));
        }
        pending.extend(
            timeline(&sync, room)
                .into_iter()
                .filter(|e| e["type"] == "m.room.encrypted")
                .cloned(),
        );
        if let (Some(session), Some(event)) = (inbound.as_mut(), pending.first()) {
            let message =
                MegolmMessage::from_base64(event["content"]["ciphertext"].as_str().expect("ct"))
                    .expect("megolm message");
            let decrypted = session.decrypt(&message).expect("decrypts");
            let plaintext: Value = serde_json::from_slice(&decrypted.plaintext).expect("json");
            assert_eq!(plaintext["room_id"], room);
            return plaintext["content"]["body"]
                .as_str()
                .expect("body")
                .to_owned();
        }
        since = Some(next_batch(&sync));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "timed out waiting for the room key and the message"
        );
    }
}

#[tokio::test]
async fn bob_decrypts_alices_megolm_message_after_an_olm_key_exchange() {
    let server = TestServer::start().await;
    let mut alice = Device::new(server.register("alice").await);
    let mut bob = Device::new(server.register("bob").await);
    alice.upload(&server, 5).await;
    bob.upload(&server, 5).await;
    let room = encrypted_room(&server, &alice.user).await;
    server.join(&bob.user, &room).await;

    let peer = fetch_peer(&server, &alice.user, &bob.user).await;
    let event_id = send_encrypted(&server, &alice, &bob.user, &peer, &room).await;
    assert_eq!(
        receive_encrypted(&server, &mut bob, &room, None).await,
        SECRET
    );

    // The claimed key is gone from Bob's count.
    let sync = server.sync(&bob.user, None, 0).await;
    assert_eq!(sync["device_one_time_keys_count"]["signed_curve25519"], 4);

    // The server's copy of the event is ciphertext only.
    let pdu = server
        .services()
        .rooms
        .get_pdu(&ruma::OwnedEventId::try_from(event_id).expect("event id"))
        .expect("read")
        .expect("stored");
    let stored = serde_json::to_string(&pdu.content).expect("json");
    assert!(!stored.contains("eagle"), "{stored}");
    assert!(stored.contains("m.megolm.v1.aes-sha2"), "{stored}");
}
