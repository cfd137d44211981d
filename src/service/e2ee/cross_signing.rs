//! Cross-signing (spec: "Cross-signing"): a user's master key signs their self-signing key
//! (which signs their devices) and user-signing key (which signs other users' master keys).
//!
//! Signatures uploaded later are kept apart from the keys they sign, one entry per signer,
//! and merged in when the key is served: a user's own signatures are shown to everyone, a
//! signature of someone else's master key only to its signer (it is the signer's private
//! judgement of that user).

use ruma::UserId;
use serde_json::{Map, Value, json};

use super::{E2ee, keys::signature_valid};
use crate::{
    database::key,
    error::{Error, Result},
};

pub const KINDS: [&str; 3] = ["master", "self_signing", "user_signing"];

/// The one public key of a cross-signing key object.
pub fn public_key(key: &Value) -> Option<String> {
    let keys = key["keys"].as_object()?;
    if keys.len() != 1 {
        return None;
    }
    let (id, value) = keys.iter().next()?;
    let public = id.strip_prefix("ed25519:")?;
    (value.as_str() == Some(public)).then(|| public.to_owned())
}

fn invalid_signature(message: &str) -> Value {
    json!({ "errcode": "M_INVALID_SIGNATURE", "error": message })
}

impl E2ee {
    pub fn cross_signing_key(&self, user: &UserId, kind: &str) -> Result<Option<Value>> {
        self.cross_signing_keys
            .get_json(key::key(&[user.as_bytes(), kind.as_bytes()]))
    }

    /// Whether uploading `keys` needs user-interactive auth: not for the first master key
    /// (the spec allows it), nor for a re-upload of the keys already stored.
    pub fn signing_upload_needs_auth(
        &self,
        user: &UserId,
        keys: &Map<String, Value>,
    ) -> Result<bool> {
        if self.cross_signing_key(user, "master")?.is_none() {
            return Ok(false);
        }
        for (kind, value) in keys {
            if self.cross_signing_key(user, kind)?.as_ref() != Some(value) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `/keys/device_signing/upload`: `keys` maps `master`, `self_signing` and
    /// `user_signing` to key objects. The sub-keys must be signed by the (new or stored)
    /// master key.
    pub fn upload_cross_signing(&self, user: &UserId, keys: &Map<String, Value>) -> Result<()> {
        let master = match keys.get("master") {
            Some(master) => master.clone(),
            None => self
                .cross_signing_key(user, "master")?
                .ok_or_else(|| Error::invalid_param("No master key uploaded yet"))?,
        };
        let master_public =
            public_key(&master).ok_or_else(|| Error::invalid_param("Invalid master key"))?;
        let mut writes = Vec::new();
        for (kind, value) in keys {
            if !KINDS.contains(&kind.as_str()) {
                continue;
            }
            if value["user_id"].as_str() != Some(user.as_str()) {
                return Err(Error::invalid_param(format!(
                    "{kind} key is for another user"
                )));
            }
            if !value["usage"]
                .as_array()
                .is_some_and(|u| u.iter().any(|u| u == kind.as_str()))
            {
                return Err(Error::invalid_param(format!("{kind} key lacks its usage")));
            }
            if public_key(value).is_none() {
                return Err(Error::invalid_param(format!("Invalid {kind} key")));
            }
            if kind != "master"
                && !signature_valid(
                    value,
                    user.as_str(),
                    &format!("ed25519:{master_public}"),
                    &master_public,
                )
            {
                return Err(Error::invalid_param(format!(
                    "{kind} key is not signed by the master key"
                )));
            }
            writes.push((
                key::key(&[user.as_bytes(), kind.as_bytes()]),
                serde_json::to_vec(value)?,
            ));
        }
        self.db.commit(|c| {
            for (k, v) in &writes {
                c.put(&self.cross_signing_keys, k, v);
            }
            self.mark_changed(c, user)
        })
    }

    /// `/keys/signatures/upload` by `signer`: `body` maps user ids to key ids (a device id
    /// or a cross-signing public key) to the signed object. Returns the failures.
    pub fn upload_signatures(
        &self,
        signer: &UserId,
        body: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut failures = Map::new();
        let mut writes = Vec::new();
        let mut changed = Vec::new();
        for (target, objects) in body {
            let Ok(target_user) = UserId::parse(target.as_str()) else {
                continue;
            };
            let Some(objects) = objects.as_object() else {
                continue;
            };
            for (key_id, object) in objects {
                match self.check_signature(signer, &target_user, key_id, object) {
                    Ok(signatures) => {
                        let db_key = key::key(&[
                            target_user.as_bytes(),
                            key_id.as_bytes(),
                            signer.as_bytes(),
                        ]);
                        let mut stored: Map<String, Value> =
                            self.key_signatures.get_json(&db_key)?.unwrap_or_default();
                        stored.extend(signatures);
                        writes.push((db_key, serde_json::to_vec(&stored)?));
                        // Someone else's master key signed by us changes only our view.
                        changed.push(if target_user == signer {
                            target_user.clone()
                        } else {
                            signer.to_owned()
                        });
                    }
                    Err(message) => {
                        failures
                            .entry(target.clone())
                            .or_insert_with(|| json!({}))
                            .as_object_mut()
                            .expect("inserted as an object")
                            .insert(key_id.clone(), invalid_signature(message));
                    }
                }
            }
        }
        if !writes.is_empty() {
            self.db.commit(|c| {
                for (k, v) in &writes {
                    c.put(&self.key_signatures, k, v);
                }
                changed.sort();
                changed.dedup();
                for user in &changed {
                    self.mark_changed(c, user)?;
                }
                Ok(())
            })?;
        }
        Ok(failures)
    }

    /// Checks one uploaded signature; returns the valid signatures by `signer`'s keys.
    fn check_signature(
        &self,
        signer: &UserId,
        target: &UserId,
        key_id: &str,
        object: &Value,
    ) -> Result<Map<String, Value>, &'static str> {
        let stored = if target == signer {
            match self.device_keys(target, key_id).ok().flatten() {
                Some(device) => Some((device, "self_signing")),
                None => self
                    .cross_signing_key(target, "master")
                    .ok()
                    .flatten()
                    .filter(|m| public_key(m).as_deref() == Some(key_id))
                    .map(|m| (m, "device")),
            }
        } else {
            self.cross_signing_key(target, "master")
                .ok()
                .flatten()
                .filter(|m| public_key(m).as_deref() == Some(key_id))
                .map(|m| (m, "user_signing"))
        };
        let Some((stored, signed_by)) = stored else {
            return Err("Unknown key");
        };
        let unsigned = |v: &Value| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("signatures");
                o.remove("unsigned");
            }
            v
        };
        if unsigned(&stored) != unsigned(object) {
            return Err("The signed object does not match the stored key");
        }
        let given = object["signatures"][signer.as_str()]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut valid = Map::new();
        for (sig_key_id, signature) in given {
            let public = match signed_by {
                // A device signing its user's master key.
                "device" => sig_key_id
                    .strip_prefix("ed25519:")
                    .and_then(|d| self.device_keys(signer, d).ok().flatten())
                    .and_then(|d| d["keys"][&sig_key_id].as_str().map(ToOwned::to_owned)),
                kind => self
                    .cross_signing_key(signer, kind)
                    .ok()
                    .flatten()
                    .and_then(|k| public_key(&k))
                    .filter(|p| sig_key_id == format!("ed25519:{p}")),
            };
            let Some(public) = public else {
                continue;
            };
            if !signature_valid(object, signer.as_str(), &sig_key_id, &public) {
                return Err("Invalid signature");
            }
            valid.insert(sig_key_id, signature);
        }
        if valid.is_empty() {
            return Err("No signature by a key that may sign this");
        }
        Ok(valid)
    }

    /// Merges stored signatures of (`target`, `key_id`) that `viewer` may see into `object`.
    fn merge_signatures(
        &self,
        viewer: Option<&UserId>,
        target: &UserId,
        key_id: &str,
        object: &mut Value,
    ) {
        let prefix = key::prefix(&[target.as_bytes(), key_id.as_bytes()]);
        for (k, v) in self.key_signatures.scan_prefix(prefix) {
            let Some(signer) = key::last_str(&k) else {
                continue;
            };
            if signer != target.as_str() && viewer.is_none_or(|v| v.as_str() != signer) {
                continue;
            }
            let Ok(Value::Object(signatures)) = serde_json::from_slice::<Value>(&v) else {
                continue;
            };
            if !object["signatures"].is_object() {
                object["signatures"] = json!({});
            }
            let entry = object["signatures"]
                .as_object_mut()
                .expect("made an object")
                .entry(signer.to_owned())
                .or_insert_with(|| json!({}));
            if let Some(entry) = entry.as_object_mut() {
                entry.extend(signatures);
            }
        }
    }

    /// A device's keys with the signatures its owner made of them.
    pub fn device_keys_for_view(&self, target: &UserId, device: &str) -> Result<Option<Value>> {
        Ok(self.device_keys(target, device)?.map(|mut keys| {
            self.merge_signatures(None, target, device, &mut keys);
            keys
        }))
    }

    /// A cross-signing key as `viewer` may see it (`None` viewer: another server, which
    /// sees only the owner's own signatures). The user-signing key only to its owner.
    pub fn cross_signing_key_for_view(
        &self,
        viewer: Option<&UserId>,
        target: &UserId,
        kind: &str,
    ) -> Result<Option<Value>> {
        if kind == "user_signing" && viewer != Some(target) {
            return Ok(None);
        }
        Ok(self.cross_signing_key(target, kind)?.map(|mut k| {
            if let Some(public) = public_key(&k) {
                self.merge_signatures(viewer, target, &public, &mut k);
            }
            k
        }))
    }
}
