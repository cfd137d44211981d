//! Key queries and claims for local users (answered from the tables) and remote users
//! (forwarded to their servers), and the two EDUs other servers send about keys and
//! to-device messages.

use std::{collections::BTreeMap, time::Duration};

use ruma::{
    OneTimeKeyAlgorithm, OwnedDeviceId, OwnedServerName, OwnedUserId, ServerName, UserId,
    api::federation::keys::{claim_keys, get_keys},
};
use serde_json::{Map, Value, json};

use super::to_device::Message;
use crate::{error::Result, service::Services};

/// The answer to a key query, in the shape of `/keys/query`.
#[derive(Default)]
pub struct KeysAnswer {
    pub device_keys: Map<String, Value>,
    pub master_keys: Map<String, Value>,
    pub self_signing_keys: Map<String, Value>,
    pub user_signing_keys: Map<String, Value>,
    pub failures: Map<String, Value>,
}

impl KeysAnswer {
    pub fn to_json(self, with_user_signing: bool) -> Value {
        let mut out = json!({
            "device_keys": self.device_keys,
            "master_keys": self.master_keys,
            "self_signing_keys": self.self_signing_keys,
            "failures": self.failures,
        });
        if with_user_signing {
            out["user_signing_keys"] = Value::Object(self.user_signing_keys);
        }
        out
    }
}

fn failure(e: impl std::fmt::Display) -> Value {
    json!({ "status": 503, "message": e.to_string() })
}

impl Services {
    /// Device and cross-signing keys of local users, as `viewer` (`None`: another server)
    /// may see them. An empty device list means every device.
    pub fn local_keys(
        &self,
        viewer: Option<&UserId>,
        users: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
        out: &mut KeysAnswer,
    ) -> Result<()> {
        for (user, wanted) in users {
            let mut devices = Map::new();
            for (device_id, _) in self.e2ee.all_device_keys(user)? {
                if !wanted.is_empty() && !wanted.iter().any(|d| d.as_str() == device_id) {
                    continue;
                }
                let Some(mut keys) = self.e2ee.device_keys_for_view(user, &device_id)? else {
                    continue;
                };
                if let Some(name) = self
                    .users
                    .device(user, &device_id)?
                    .and_then(|d| d.display_name)
                {
                    keys["unsigned"] = json!({ "device_display_name": name });
                }
                devices.insert(device_id, keys);
            }
            out.device_keys
                .insert(user.to_string(), Value::Object(devices));
            for (kind, map) in [
                ("master", &mut out.master_keys),
                ("self_signing", &mut out.self_signing_keys),
                ("user_signing", &mut out.user_signing_keys),
            ] {
                if let Some(key) = self.e2ee.cross_signing_key_for_view(viewer, user, kind)? {
                    map.insert(user.to_string(), key);
                }
            }
        }
        Ok(())
    }

    /// `/keys/query` for users of any server: local ones from the tables, remote ones
    /// asked of their servers at once (each bounded by `timeout`); a server that does not
    /// answer is listed in `failures`.
    pub async fn query_keys(
        &self,
        viewer: &UserId,
        users: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
        timeout: Duration,
    ) -> Result<KeysAnswer> {
        let own = self.globals.server_name();
        let mut out = KeysAnswer::default();
        let mut local = BTreeMap::new();
        let mut remote: BTreeMap<OwnedServerName, BTreeMap<_, _>> = BTreeMap::new();
        for (user, devices) in users {
            if user.server_name() == own {
                local.insert(user.clone(), devices.clone());
            } else {
                remote
                    .entry(user.server_name().to_owned())
                    .or_default()
                    .insert(user.clone(), devices.clone());
            }
        }
        self.local_keys(Some(viewer), &local, &mut out)?;
        let asks = remote.into_iter().map(|(server, users)| async move {
            let request = get_keys::v1::Request::new(users);
            let answer =
                tokio::time::timeout(timeout, self.federation.send(&server, request)).await;
            (server, answer)
        });
        for (server, answer) in futures::future::join_all(asks).await {
            let response = match answer {
                Ok(Ok(response)) => response,
                Ok(Err(e)) => {
                    out.failures.insert(server.to_string(), failure(e.message));
                    continue;
                }
                Err(_) => {
                    out.failures
                        .insert(server.to_string(), failure("timed out"));
                    continue;
                }
            };
            // Only keys of users the server speaks for.
            let of_server = |u: &UserId| u.server_name() == server;
            for (user, devices) in response.device_keys {
                if of_server(&user) {
                    out.device_keys
                        .insert(user.to_string(), serde_json::to_value(devices)?);
                }
            }
            for (user, key) in response.master_keys {
                if of_server(&user) {
                    out.master_keys
                        .insert(user.to_string(), serde_json::to_value(key)?);
                }
            }
            for (user, key) in response.self_signing_keys {
                if of_server(&user) {
                    out.self_signing_keys
                        .insert(user.to_string(), serde_json::to_value(key)?);
                }
            }
        }
        Ok(out)
    }

    /// Claims one key per (user, device) of local users.
    pub fn claim_local_keys(
        &self,
        claims: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>,
    ) -> Result<Map<String, Value>> {
        let mut out = Map::new();
        for (user, devices) in claims {
            let mut user_out = Map::new();
            for (device, algorithm) in devices {
                if let Some((key_id, key)) =
                    self.e2ee.claim(user, device.as_str(), algorithm.as_str())?
                {
                    user_out.insert(device.to_string(), json!({ key_id: key }));
                }
            }
            if !user_out.is_empty() {
                out.insert(user.to_string(), Value::Object(user_out));
            }
        }
        Ok(out)
    }

    /// `/keys/claim` for users of any server; returns the keys and the failures.
    pub async fn claim_keys(
        &self,
        claims: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>,
        timeout: Duration,
    ) -> Result<(Map<String, Value>, Map<String, Value>)> {
        let own = self.globals.server_name();
        let mut local = BTreeMap::new();
        let mut remote: BTreeMap<OwnedServerName, BTreeMap<_, _>> = BTreeMap::new();
        for (user, devices) in claims {
            if user.server_name() == own {
                local.insert(user.clone(), devices.clone());
            } else {
                remote
                    .entry(user.server_name().to_owned())
                    .or_default()
                    .insert(user.clone(), devices.clone());
            }
        }
        let mut keys = self.claim_local_keys(&local)?;
        let mut failures = Map::new();
        let asks = remote.into_iter().map(|(server, users)| async move {
            let request = claim_keys::v1::Request::new(users);
            let answer =
                tokio::time::timeout(timeout, self.federation.send(&server, request)).await;
            (server, answer)
        });
        for (server, answer) in futures::future::join_all(asks).await {
            match answer {
                Ok(Ok(response)) => {
                    for (user, devices) in response.one_time_keys {
                        if user.server_name() == server {
                            keys.insert(user.to_string(), serde_json::to_value(devices)?);
                        }
                    }
                }
                Ok(Err(e)) => {
                    failures.insert(server.to_string(), failure(e.message));
                }
                Err(_) => {
                    failures.insert(server.to_string(), failure("timed out"));
                }
            }
        }
        Ok((keys, failures))
    }

    /// `m.device_list_update` from `origin`: one of its users' devices changed. Local
    /// users sharing a room see the user in `device_lists.changed` and query again.
    pub fn receive_device_list_update(&self, origin: &ServerName, content: &Value) -> Result<()> {
        let Some(user) = content["user_id"]
            .as_str()
            .and_then(|u| UserId::parse(u).ok())
        else {
            return Ok(());
        };
        if user.server_name() != origin {
            tracing::info!(%origin, %user, "device list update for a user of another server");
            return Ok(());
        }
        self.e2ee.note_changed(&user)?;
        self.wake_room_peers(&user)
    }

    /// `m.direct_to_device` from `origin`: messages for local devices, stored once per
    /// `message_id`.
    pub fn receive_direct_to_device(&self, origin: &ServerName, content: &Value) -> Result<()> {
        let (Some(sender), Some(kind), Some(message_id), Some(messages)) = (
            content["sender"]
                .as_str()
                .and_then(|u| UserId::parse(u).ok()),
            content["type"].as_str(),
            content["message_id"].as_str(),
            content["messages"].as_object(),
        ) else {
            return Ok(());
        };
        if sender.server_name() != origin {
            tracing::info!(%origin, %sender, "to-device message for a user of another server");
            return Ok(());
        }
        let own = self.globals.server_name();
        let targets = self.to_device_targets(messages, |u| u.server_name() == own)?;
        let batch: Vec<Message<'_>> = targets
            .iter()
            .map(|(user, device, content)| Message {
                user,
                device,
                content,
            })
            .collect();
        self.e2ee.queue_to_device(
            &[b"edu", origin.as_str().as_bytes(), message_id.as_bytes()],
            &sender,
            kind,
            &batch,
        )?;
        self.notifier.wake_all(targets.iter().map(|(u, _, _)| &**u));
        Ok(())
    }

    /// The (user, device, content) triples of a `messages` map for the users `accept`
    /// takes, with `*` expanded to the user's devices; unknown devices are skipped.
    pub fn to_device_targets(
        &self,
        messages: &Map<String, Value>,
        accept: impl Fn(&UserId) -> bool,
    ) -> Result<Vec<(OwnedUserId, String, Value)>> {
        let mut out = Vec::new();
        for (user, devices) in messages {
            let Ok(user) = UserId::parse(user.as_str()) else {
                continue;
            };
            let Some(devices) = devices.as_object() else {
                continue;
            };
            if !accept(&user) {
                continue;
            }
            let known = self.users.devices(&user)?;
            for (device, content) in devices {
                if device == "*" {
                    for d in &known {
                        out.push((user.clone(), d.device_id.to_string(), content.clone()));
                    }
                } else if known.iter().any(|d| d.device_id.as_str() == device) {
                    out.push((user.clone(), device.clone(), content.clone()));
                }
            }
        }
        Ok(out)
    }
}
