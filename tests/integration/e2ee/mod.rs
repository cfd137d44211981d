//! End-to-end encryption: keys, to-device messages, cross-signing and backups, driven by
//! real Olm/Megolm (vodozemac) where it matters.

mod backup;
mod cross_signing;
mod federation;
mod keys;
mod olm;
mod to_device;

use serde_json::{Map, Value, json};
use vodozemac::olm::Account;

use crate::common::{TestServer, User};

/// A logged-in device with its own Olm account.
pub struct Device {
    pub user: User,
    pub account: Account,
}

impl Device {
    pub fn new(user: User) -> Self {
        Self {
            user,
            account: Account::new(),
        }
    }

    pub fn curve25519(&self) -> String {
        self.account.curve25519_key().to_base64()
    }

    pub fn ed25519(&self) -> String {
        self.account.ed25519_key().to_base64()
    }

    /// Signs `object` (without `signatures`/`unsigned`) with the device key, as Matrix
    /// signs JSON.
    pub fn sign(&self, object: &mut Value) {
        let signature = self.account.sign(canonical(object)).to_base64();
        let key_id = format!("ed25519:{}", self.user.device_id);
        object["signatures"] = json!({ self.user.user_id.clone(): { key_id: signature } });
    }

    pub fn device_keys(&self) -> Value {
        let d = &self.user.device_id;
        let mut keys = json!({
            "user_id": self.user.user_id,
            "device_id": d,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{d}"): self.curve25519(),
                format!("ed25519:{d}"): self.ed25519(),
            },
        });
        self.sign(&mut keys);
        keys
    }

    /// `n` new signed one-time keys, marked published.
    pub fn one_time_keys(&mut self, n: usize) -> Map<String, Value> {
        self.account.generate_one_time_keys(n);
        let mut out = Map::new();
        for (id, key) in self.account.one_time_keys() {
            let mut object = json!({ "key": key.to_base64() });
            self.sign(&mut object);
            out.insert(format!("signed_curve25519:{}", id.to_base64()), object);
        }
        self.account.mark_keys_as_published();
        out
    }

    pub fn fallback_key(&mut self) -> Map<String, Value> {
        self.account.generate_fallback_key();
        let mut out = Map::new();
        for (id, key) in self.account.fallback_key() {
            let mut object = json!({ "key": key.to_base64(), "fallback": true });
            self.sign(&mut object);
            out.insert(format!("signed_curve25519:{}", id.to_base64()), object);
        }
        self.account.mark_keys_as_published();
        out
    }

    /// Uploads device keys and `otks` one-time keys; returns the counts.
    pub async fn upload(&mut self, server: &TestServer, otks: usize) -> Value {
        let body = json!({
            "device_keys": self.device_keys(),
            "one_time_keys": self.one_time_keys(otks),
        });
        let (status, response) = server
            .post("/_matrix/client/v3/keys/upload", &self.user.token, body)
            .await;
        assert_eq!(status, 200, "{response}");
        response
    }
}

/// Canonical JSON of `object` minus `signatures` and `unsigned`: serde_json sorts object
/// keys and writes no whitespace.
pub fn canonical(object: &Value) -> String {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("signatures");
        map.remove("unsigned");
    }
    serde_json::to_string(&object).expect("serialisable")
}

/// An encrypted room created by `creator`.
pub async fn encrypted_room(server: &TestServer, creator: &User) -> String {
    server
        .create_room(
            creator,
            json!({
                "preset": "public_chat",
                "initial_state": [{
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": { "algorithm": "m.megolm.v1.aes-sha2" },
                }],
            }),
        )
        .await
}

pub async fn query_keys(server: &TestServer, user: &User, target: &str) -> Value {
    let (status, body) = server
        .post(
            "/_matrix/client/v3/keys/query",
            &user.token,
            json!({ "device_keys": { target: [] } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

pub async fn claim(server: &TestServer, user: &User, target: &User) -> (u16, Value) {
    let (status, body) = server
        .post(
            "/_matrix/client/v3/keys/claim",
            &user.token,
            json!({ "one_time_keys": { target.user_id.clone(): { target.device_id.clone(): "signed_curve25519" } } }),
        )
        .await;
    (status.as_u16(), body)
}
