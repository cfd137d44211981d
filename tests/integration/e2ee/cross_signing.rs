//! Cross-signing: key upload (UIA after the first), signatures of own devices and of other
//! users' master keys, and who sees which signature in `/keys/query`.

use serde_json::{Value, json};
use vodozemac::Ed25519Keypair;

use super::{Device, canonical, query_keys};
use crate::common::{TestServer, User};

/// A user's three cross-signing keys.
pub struct CrossSigning {
    pub master: Ed25519Keypair,
    self_signing: Ed25519Keypair,
    user_signing: Ed25519Keypair,
}

pub fn public(key: &Ed25519Keypair) -> String {
    key.public_key().to_base64()
}

fn sign_with(object: &mut Value, user: &str, signer: &Ed25519Keypair) {
    let signature = signer.sign(canonical(object).as_bytes()).to_base64();
    let key_id = format!("ed25519:{}", public(signer));
    if !object["signatures"].is_object() {
        object["signatures"] = json!({});
    }
    object["signatures"][user][key_id] = json!(signature);
}

impl CrossSigning {
    pub fn new() -> Self {
        Self {
            master: Ed25519Keypair::new(),
            self_signing: Ed25519Keypair::new(),
            user_signing: Ed25519Keypair::new(),
        }
    }

    fn key(&self, user: &str, usage: &str, key: &Ed25519Keypair) -> Value {
        let mut object = json!({
            "user_id": user,
            "usage": [usage],
            "keys": { format!("ed25519:{}", public(key)): public(key) },
        });
        if usage != "master" {
            sign_with(&mut object, user, &self.master);
        }
        object
    }

    pub fn upload_body(&self, user: &str) -> Value {
        json!({
            "master_key": self.key(user, "master", &self.master),
            "self_signing_key": self.key(user, "self_signing", &self.self_signing),
            "user_signing_key": self.key(user, "user_signing", &self.user_signing),
        })
    }
}

pub async fn upload_signing(server: &TestServer, user: &User, body: Value) -> (u16, Value) {
    let (status, body) = server
        .post(
            "/_matrix/client/v3/keys/device_signing/upload",
            &user.token,
            body,
        )
        .await;
    (status.as_u16(), body)
}

async fn upload_signatures(server: &TestServer, user: &User, body: Value) -> Value {
    let (status, body) = server
        .post(
            "/_matrix/client/v3/keys/signatures/upload",
            &user.token,
            body,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn cross_signing_keys_and_signatures_are_served_to_the_right_users() {
    let server = TestServer::start().await;
    let mut alice = Device::new(server.register("alice").await);
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    alice.upload(&server, 0).await;
    let a = &alice.user.user_id;
    let alice_keys = CrossSigning::new();
    let bob_keys = CrossSigning::new();

    // The first upload needs no UIA.
    let (status, body) = upload_signing(&server, &alice.user, alice_keys.upload_body(a)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = upload_signing(&server, &bob, bob_keys.upload_body(&bob.user_id)).await;
    assert_eq!(status, 200, "{body}");
    // Replacing them does, with the password.
    let replacement = CrossSigning::new();
    let (status, body) = upload_signing(&server, &alice.user, replacement.upload_body(a)).await;
    assert_eq!(status, 401, "{body}");
    // A self-signing key not signed by the master key is refused.
    let mut bad = alice_keys.upload_body(a);
    bad["self_signing_key"] = replacement.key(a, "self_signing", &replacement.self_signing);
    bad["auth"] = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": a }, "password": alice.user.password });
    bad.as_object_mut().expect("object").remove("master_key");
    let (status, body) = upload_signing(&server, &alice.user, bad).await;
    assert_eq!(status, 400, "{body}");

    // Alice signs her device with her self-signing key, and Bob's master key with her
    // user-signing key; one forged signature fails.
    let mut device = alice.device_keys();
    device.as_object_mut().expect("object").remove("signatures");
    sign_with(&mut device, a, &alice_keys.self_signing);
    let mut bob_master = bob_keys.key(&bob.user_id, "master", &bob_keys.master);
    sign_with(&mut bob_master, a, &alice_keys.user_signing);
    let mut carol_forged = json!({ "user_id": carol.user_id });
    sign_with(&mut carol_forged, a, &alice_keys.user_signing);
    let body = upload_signatures(
        &server,
        &alice.user,
        json!({
            a: { alice.user.device_id.clone(): device },
            bob.user_id.clone(): { public(&bob_keys.master): bob_master },
            carol.user_id.clone(): { "NOTAKEY": carol_forged },
        }),
    )
    .await;
    assert!(
        body["failures"][&carol.user_id]["NOTAKEY"].is_object(),
        "{body}"
    );
    assert!(body["failures"].get(a).is_none(), "{body}");
    assert!(body["failures"].get(&bob.user_id).is_none(), "{body}");

    let ssk_id = format!("ed25519:{}", public(&alice_keys.self_signing));
    let usk_id = format!("ed25519:{}", public(&alice_keys.user_signing));
    // Everyone sees Alice's device signed by her self-signing key.
    let seen_by_bob = query_keys(&server, &bob, a).await;
    assert!(
        seen_by_bob["device_keys"][a][&alice.user.device_id]["signatures"][a][&ssk_id].is_string(),
        "{seen_by_bob}"
    );
    assert!(seen_by_bob["master_keys"][a].is_object());
    assert!(seen_by_bob["self_signing_keys"][a].is_object());
    // Only Alice sees her user-signing key, and her signature of Bob's master key.
    assert!(
        seen_by_bob
            .get("user_signing_keys")
            .and_then(|k| k.get(a))
            .is_none(),
        "{seen_by_bob}"
    );
    let own = query_keys(&server, &alice.user, a).await;
    assert!(own["user_signing_keys"][a].is_object(), "{own}");
    let bob_seen_by_alice = query_keys(&server, &alice.user, &bob.user_id).await;
    assert!(
        bob_seen_by_alice["master_keys"][&bob.user_id]["signatures"][a][&usk_id].is_string(),
        "{bob_seen_by_alice}"
    );
    let bob_seen_by_carol = query_keys(&server, &carol, &bob.user_id).await;
    assert!(
        bob_seen_by_carol["master_keys"][&bob.user_id]["signatures"]
            .get(a)
            .is_none(),
        "{bob_seen_by_carol}"
    );
}
