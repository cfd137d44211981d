//! Device keys, one-time keys and fallback keys (spec: "Key management API"), and the
//! key-change stream: every change of a user's devices or keys writes the user's new
//! stream position, which `/sync` and `/keys/changes` compare with their tokens.

use std::collections::{BTreeMap, BTreeSet};

use base64::{
    Engine, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use ruma::{CanonicalJsonValue, OwnedUserId, UserId, signatures::SigningKeyAlgorithm};
use serde_json::{Map, Value, json};

use super::E2ee;
use crate::{
    database::{Commit, key},
    error::{Error, Result},
};

/// Unpadded base64 as Matrix uses it; padded input is accepted too.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Whether `object` carries a valid ed25519 signature by `signer` with `key_id`
/// (`ed25519:...`), checked against `public_key` (unpadded base64).
pub fn signature_valid(object: &Value, signer: &str, key_id: &str, public_key: &str) -> bool {
    let Some(signature) = object["signatures"][signer][key_id].as_str() else {
        return false;
    };
    let (Ok(signature), Ok(public_key)) = (BASE64.decode(signature), BASE64.decode(public_key))
    else {
        return false;
    };
    let Ok(CanonicalJsonValue::Object(canonical)) = CanonicalJsonValue::try_from(object.clone())
    else {
        return false;
    };
    let Ok(text) = ruma::signatures::to_canonical_json_string_for_signing(&canonical) else {
        return false;
    };
    ruma::signatures::verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        &public_key,
        &signature,
        text.as_bytes(),
    )
    .is_ok()
}

fn stream_key(position: u64, user: &UserId) -> Vec<u8> {
    let mut out = key::u64_key(position).to_vec();
    out.extend_from_slice(user.as_bytes());
    out
}

/// The algorithm part of `algorithm:key_id`.
fn algorithm_of(key_id: &str) -> Option<&str> {
    key_id.split_once(':').map(|(a, _)| a)
}

/// What `/keys/upload` carries.
#[derive(Default)]
pub struct Upload {
    pub device_keys: Option<Value>,
    pub one_time_keys: Map<String, Value>,
    pub fallback_keys: Map<String, Value>,
}

impl E2ee {
    /// Records, in `c`, that `user`'s devices or keys changed.
    pub fn mark_changed(&self, c: &mut Commit, user: &UserId) -> Result<()> {
        let position = c.next_count();
        // Only the newest change of a user stays in the stream: it is all a range asks.
        if let Some(old) = self.last_change(user)? {
            c.delete(&self.key_change_stream, stream_key(old, user));
        }
        c.put(&self.key_changes, user.as_bytes(), key::u64_key(position));
        c.put(&self.key_change_stream, stream_key(position, user), b"");
        Ok(())
    }

    /// Users whose devices or keys changed at a position in `(since, until]`.
    pub fn changed_between(&self, since: u64, until: u64) -> BTreeSet<OwnedUserId> {
        self.key_change_stream
            .scan_from(key::u64_key(since.saturating_add(1)).to_vec(), Vec::new())
            .map_while(|(k, _)| {
                let position = key::to_u64(k.get(..8)?);
                let user = std::str::from_utf8(k.get(8..)?).ok()?;
                (position <= until).then(|| UserId::parse(user).ok())
            })
            .flatten()
            .collect()
    }

    /// Records a change on its own (a new device, a remote user's update).
    pub fn note_changed(&self, user: &UserId) -> Result<()> {
        self.db.commit(|c| self.mark_changed(c, user))
    }

    /// The stream position of `user`'s last device or key change.
    pub fn last_change(&self, user: &UserId) -> Result<Option<u64>> {
        Ok(self
            .key_changes
            .get(user.as_bytes())?
            .map(|v| key::to_u64(&v)))
    }

    /// Checks a device's self-signed keys: its own user and device id, and a valid
    /// signature by its own ed25519 key, which may not change once uploaded.
    fn check_device_keys(&self, user: &UserId, device: &str, keys: &Value) -> Result<()> {
        if keys["user_id"].as_str() != Some(user.as_str())
            || keys["device_id"].as_str() != Some(device)
        {
            return Err(Error::invalid_param(
                "device_keys must name the uploading user and device",
            ));
        }
        let key_id = format!("ed25519:{device}");
        let Some(ed25519) = keys["keys"][&key_id].as_str() else {
            return Err(Error::invalid_param("device_keys has no ed25519 key"));
        };
        if !keys["algorithms"].is_array() {
            return Err(Error::bad_json("device_keys.algorithms must be a list"));
        }
        if !signature_valid(keys, user.as_str(), &key_id, ed25519) {
            return Err(Error::invalid_param(
                "device_keys is not signed by the device's ed25519 key",
            ));
        }
        if let Some(old) = self.device_keys(user, device)?
            && old["keys"][&key_id].as_str() != Some(ed25519)
        {
            return Err(Error::invalid_param(
                "The device already has a different ed25519 key",
            ));
        }
        Ok(())
    }

    /// `/keys/upload`: all of it is written in one batch or none of it.
    pub fn upload(&self, user: &UserId, device: &str, upload: Upload) -> Result<()> {
        if let Some(keys) = &upload.device_keys {
            self.check_device_keys(user, device, keys)?;
        }
        let mut otks = Vec::new();
        for (key_id, value) in &upload.one_time_keys {
            if algorithm_of(key_id).is_none() || !(value.is_object() || value.is_string()) {
                return Err(Error::bad_json(format!("Invalid one-time key {key_id}")));
            }
            let db_key = key::key(&[user.as_bytes(), device.as_bytes(), key_id.as_bytes()]);
            match self.one_time_keys.get(&db_key)? {
                Some(old) if serde_json::from_slice::<Value>(&old)? == *value => {}
                Some(_) => {
                    return Err(Error::invalid_param(format!(
                        "One-time key {key_id} already exists with different content"
                    )));
                }
                None => otks.push((db_key, serde_json::to_vec(value)?)),
            }
        }
        let mut fallbacks = Vec::new();
        for (key_id, value) in &upload.fallback_keys {
            let Some(algorithm) = algorithm_of(key_id) else {
                return Err(Error::bad_json(format!("Invalid fallback key {key_id}")));
            };
            let db_key = key::key(&[user.as_bytes(), device.as_bytes(), algorithm.as_bytes()]);
            // Re-uploading the current fallback key keeps its `used` flag.
            let used = self
                .fallback_keys
                .get_json::<Value>(&db_key)?
                .filter(|old| old["key_id"] == key_id.as_str() && old["key"] == *value)
                .is_some_and(|old| old["used"] == true);
            let record = json!({ "key_id": key_id, "key": value, "used": used });
            fallbacks.push((db_key, serde_json::to_vec(&record)?));
        }
        let device_keys = match &upload.device_keys {
            Some(keys) if self.device_keys(user, device)?.as_ref() != Some(keys) => {
                Some(serde_json::to_vec(keys)?)
            }
            _ => None,
        };
        if device_keys.is_none() && otks.is_empty() && fallbacks.is_empty() {
            return Ok(());
        }
        self.db.commit(|c| {
            if let Some(keys) = &device_keys {
                c.put(
                    &self.device_keys,
                    key::key(&[user.as_bytes(), device.as_bytes()]),
                    keys,
                );
                self.mark_changed(c, user)?;
            }
            for (k, v) in &otks {
                c.put(&self.one_time_keys, k, v);
            }
            for (k, v) in &fallbacks {
                c.put(&self.fallback_keys, k, v);
            }
            Ok(())
        })
    }

    pub fn device_keys(&self, user: &UserId, device: &str) -> Result<Option<Value>> {
        self.device_keys
            .get_json(key::key(&[user.as_bytes(), device.as_bytes()]))
    }

    /// Every device of `user` with uploaded keys.
    pub fn all_device_keys(&self, user: &UserId) -> Result<Vec<(String, Value)>> {
        self.device_keys
            .scan_prefix(key::prefix(&[user.as_bytes()]))
            .map(|(k, v)| {
                let device = key::last_str(&k).unwrap_or_default().to_owned();
                Ok((device, serde_json::from_slice(&v)?))
            })
            .collect()
    }

    /// Unclaimed one-time keys of a device per algorithm; `signed_curve25519` is always
    /// present, as clients read a missing count as "unknown".
    pub fn one_time_key_counts(&self, user: &UserId, device: &str) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::from([("signed_curve25519".to_owned(), 0)]);
        for (k, _) in self
            .one_time_keys
            .scan_prefix(key::prefix(&[user.as_bytes(), device.as_bytes()]))
        {
            if let Some(algorithm) = key::last_str(&k).and_then(algorithm_of) {
                *counts.entry(algorithm.to_owned()).or_default() += 1;
            }
        }
        counts
    }

    /// Algorithms of the device's fallback keys that no claim has used yet.
    pub fn unused_fallback_types(&self, user: &UserId, device: &str) -> Vec<String> {
        self.fallback_keys
            .scan_prefix(key::prefix(&[user.as_bytes(), device.as_bytes()]))
            .filter_map(|(k, v)| {
                let record: Value = serde_json::from_slice(&v).ok()?;
                (record["used"] != true).then(|| key::last_str(&k).map(ToOwned::to_owned))?
            })
            .collect()
    }

    /// Takes one one-time key of `algorithm` from the device; when none is left, the
    /// device's fallback key (marked used, not removed). Under one lock, so two claims
    /// never get the same one-time key.
    pub fn claim(
        &self,
        user: &UserId,
        device: &str,
        algorithm: &str,
    ) -> Result<Option<(String, Value)>> {
        let _guard = self.claim_lock.lock().unwrap_or_else(|e| e.into_inner());
        let prefix = key::prefix(&[user.as_bytes(), device.as_bytes()]);
        let mut from = prefix.clone();
        from.extend_from_slice(algorithm.as_bytes());
        from.push(b':');
        let found = self
            .one_time_keys
            .scan_from(from.clone(), from)
            .next()
            .map(|(k, v)| -> Result<_> {
                let key_id = key::last_str(&k).unwrap_or_default().to_owned();
                Ok((k, key_id, serde_json::from_slice::<Value>(&v)?))
            })
            .transpose()?;
        if let Some((db_key, key_id, value)) = found {
            self.db.write(|b| b.delete(&self.one_time_keys, &db_key))?;
            return Ok(Some((key_id, value)));
        }
        let fallback_key = key::key(&[user.as_bytes(), device.as_bytes(), algorithm.as_bytes()]);
        let Some(mut record) = self.fallback_keys.get_json::<Value>(&fallback_key)? else {
            return Ok(None);
        };
        let key_id = record["key_id"].as_str().unwrap_or_default().to_owned();
        let value = record["key"].clone();
        if record["used"] != true {
            record["used"] = json!(true);
            let bytes = serde_json::to_vec(&record)?;
            self.db
                .write(|b| b.put(&self.fallback_keys, &fallback_key, &bytes))?;
        }
        Ok(Some((key_id, value)))
    }

    /// A removed device takes its keys, signatures and pending messages with it, and
    /// counts as a change of the user's device list.
    pub fn remove_device(&self, user: &UserId, device: &str) -> Result<()> {
        let device_prefix = key::prefix(&[user.as_bytes(), device.as_bytes()]);
        let scan = |table: &crate::database::Table, prefix: Vec<u8>| -> Vec<Box<[u8]>> {
            table.scan_prefix(prefix).map(|(k, _)| k).collect()
        };
        let otks = scan(&self.one_time_keys, device_prefix.clone());
        let fallbacks = scan(&self.fallback_keys, device_prefix.clone());
        let messages = scan(&self.to_device, device_prefix.clone());
        let signatures = scan(&self.key_signatures, device_prefix);
        self.db.commit(|c| {
            c.delete(
                &self.device_keys,
                key::key(&[user.as_bytes(), device.as_bytes()]),
            );
            for k in &otks {
                c.delete(&self.one_time_keys, k);
            }
            for k in &fallbacks {
                c.delete(&self.fallback_keys, k);
            }
            for k in &messages {
                c.delete(&self.to_device, k);
            }
            for k in &signatures {
                c.delete(&self.key_signatures, k);
            }
            self.mark_changed(c, user)
        })
    }
}
