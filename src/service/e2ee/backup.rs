//! Server-side key backup (spec: "Server-side key backups"). The server keeps each
//! version's `auth_data` and the encrypted session keys; it can read neither. Every
//! change of a version's keys bumps its `etag`, so clients notice other devices' uploads.

use ruma::UserId;
use serde_json::{Map, Value, json};

use super::E2ee;
use crate::{
    database::key,
    error::{Error, Result},
};

/// A backup version as its owner sees it.
pub struct VersionInfo {
    pub version: String,
    pub record: Value,
}

fn parse_version(version: &str) -> Option<u64> {
    version.parse().ok()
}

/// Whether `new` should replace `old` (spec): a verified key beats an unverified one; then
/// the lower first message index (it decrypts more); then the lower forwarding count.
pub fn replaces(new: &Value, old: &Value) -> bool {
    let verified = |v: &Value| v["is_verified"].as_bool().unwrap_or(false);
    let index = |v: &Value| v["first_message_index"].as_u64().unwrap_or(u64::MAX);
    let forwards = |v: &Value| v["forwarded_count"].as_u64().unwrap_or(u64::MAX);
    if verified(new) != verified(old) {
        return verified(new);
    }
    if index(new) != index(old) {
        return index(new) < index(old);
    }
    forwards(new) < forwards(old)
}

impl E2ee {
    fn version_key(user: &UserId, version: u64) -> Vec<u8> {
        key::key(&[user.as_bytes(), version.to_string().as_bytes()])
    }

    /// Creates a version; it becomes the current one.
    pub fn create_backup(
        &self,
        user: &UserId,
        algorithm: &Value,
        auth_data: &Value,
    ) -> Result<String> {
        self.db.commit(|c| {
            let version = c.next_count();
            let record = json!({ "algorithm": algorithm, "auth_data": auth_data, "etag": 0 });
            c.put(
                &self.backup_versions,
                Self::version_key(user, version),
                serde_json::to_vec(&record)?,
            );
            Ok(version.to_string())
        })
    }

    /// The newest version (`None`) or the one named.
    pub fn backup_version(
        &self,
        user: &UserId,
        version: Option<&str>,
    ) -> Result<Option<VersionInfo>> {
        let found = match version {
            Some(v) => {
                let Some(n) = parse_version(v) else {
                    return Ok(None);
                };
                self.backup_versions
                    .get(Self::version_key(user, n))?
                    .map(|record| (n, record.into_boxed_slice()))
            }
            // Versions are stream positions written as decimal: the newest is the largest.
            None => self
                .backup_versions
                .scan_prefix(key::prefix(&[user.as_bytes()]))
                .filter_map(|(k, v)| Some((key::last_str(&k)?.parse::<u64>().ok()?, v)))
                .max_by_key(|(n, _)| *n),
        };
        found
            .map(|(n, record)| {
                Ok(VersionInfo {
                    version: n.to_string(),
                    record: serde_json::from_slice(&record)?,
                })
            })
            .transpose()
    }

    /// Replaces the `auth_data` of a version; the algorithm may not change.
    pub fn update_backup(
        &self,
        user: &UserId,
        version: &str,
        algorithm: &Value,
        auth_data: &Value,
    ) -> Result<()> {
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let info = self
            .backup_version(user, Some(version))?
            .ok_or_else(|| Error::not_found("Unknown backup version"))?;
        if info.record["algorithm"] != *algorithm {
            return Err(Error::invalid_param(
                "The algorithm of a backup cannot change",
            ));
        }
        let mut record = info.record;
        record["auth_data"] = auth_data.clone();
        let n = parse_version(version).expect("found by it");
        self.backup_versions
            .put(Self::version_key(user, n), serde_json::to_vec(&record)?)
    }

    /// Deletes a version and all its keys.
    pub fn delete_backup(&self, user: &UserId, version: &str) -> Result<()> {
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let n = parse_version(version)
            .filter(|n| {
                self.backup_versions
                    .contains(Self::version_key(user, *n))
                    .unwrap_or(false)
            })
            .ok_or_else(|| Error::not_found("Unknown backup version"))?;
        let keys: Vec<_> = self
            .backup_keys
            .scan_prefix(key::prefix(&[user.as_bytes(), n.to_string().as_bytes()]))
            .map(|(k, _)| k)
            .collect();
        self.db.write(|b| {
            b.delete(&self.backup_versions, Self::version_key(user, n));
            for k in &keys {
                b.delete(&self.backup_keys, k);
            }
        })
    }

    /// Number of keys and etag of a version.
    pub fn backup_count_etag(&self, user: &UserId, version: &str) -> Result<(u64, String)> {
        let info = self
            .backup_version(user, Some(version))?
            .ok_or_else(|| Error::not_found("Unknown backup version"))?;
        let n = parse_version(version).expect("found by it");
        let count = self
            .backup_keys
            .scan_prefix(key::prefix(&[user.as_bytes(), n.to_string().as_bytes()]))
            .count() as u64;
        Ok((count, info.record["etag"].as_u64().unwrap_or(0).to_string()))
    }

    /// Stores session keys into the current version: `rooms` maps room ids to session ids
    /// to key data. A stored key stays unless the new one is better.
    pub fn put_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        rooms: &Map<String, Value>,
    ) -> Result<()> {
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let Some(info) = self.backup_version(user, Some(version))? else {
            return Err(Error::not_found("Unknown backup version"));
        };
        let current = self.backup_version(user, None)?.map(|i| i.version);
        if current.as_deref() != Some(version) {
            return Err(Error::new(
                http::StatusCode::FORBIDDEN,
                "M_WRONG_ROOM_KEYS_VERSION",
                "Not the current backup version",
            )
            .with("current_version", json!(current)));
        }
        let n = parse_version(version).expect("found by it");
        let mut writes = Vec::new();
        for (room, sessions) in rooms {
            let Some(sessions) = sessions.as_object() else {
                return Err(Error::bad_json("sessions must be an object"));
            };
            for (session, data) in sessions {
                if !data.is_object() || !data["session_data"].is_object() {
                    return Err(Error::bad_json("Invalid key backup data"));
                }
                let db_key = key::key(&[
                    user.as_bytes(),
                    n.to_string().as_bytes(),
                    room.as_bytes(),
                    session.as_bytes(),
                ]);
                let better = match self.backup_keys.get_json::<Value>(&db_key)? {
                    Some(old) => replaces(data, &old),
                    None => true,
                };
                if better {
                    writes.push((db_key, serde_json::to_vec(data)?));
                }
            }
        }
        if writes.is_empty() {
            return Ok(());
        }
        let mut record = info.record;
        record["etag"] = json!(record["etag"].as_u64().unwrap_or(0) + 1);
        let record = serde_json::to_vec(&record)?;
        self.db.write(|b| {
            for (k, v) in &writes {
                b.put(&self.backup_keys, k, v);
            }
            b.put(&self.backup_versions, Self::version_key(user, n), &record);
        })
    }

    /// Keys of a version, optionally of one room or one session: room -> session -> data.
    pub fn backup_keys(
        &self,
        user: &UserId,
        version: &str,
        room: Option<&str>,
        session: Option<&str>,
    ) -> Result<Map<String, Value>> {
        let n = parse_version(version)
            .filter(|_| {
                self.backup_version(user, Some(version))
                    .ok()
                    .flatten()
                    .is_some()
            })
            .ok_or_else(|| Error::not_found("Unknown backup version"))?;
        let version_bytes = n.to_string();
        let mut parts: Vec<&[u8]> = vec![user.as_bytes(), version_bytes.as_bytes()];
        parts.extend(room.map(str::as_bytes));
        parts.extend(session.map(str::as_bytes));
        let prefix = match session {
            Some(_) => key::key(&parts),
            None => key::prefix(&parts),
        };
        let mut out = Map::new();
        for (k, v) in self.backup_keys.scan_prefix(prefix) {
            let mut fields = key::parts(&k).skip(2);
            let (Some(r), Some(s)) = (fields.next(), fields.next()) else {
                continue;
            };
            let (r, s) = (String::from_utf8_lossy(r), String::from_utf8_lossy(s));
            if session.is_some_and(|want| want != s) {
                continue;
            }
            let sessions = out
                .entry(r.into_owned())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("made an object");
            sessions.insert(s.into_owned(), serde_json::from_slice(&v)?);
        }
        Ok(out)
    }

    /// Deletes keys of a version (all, one room or one session) and bumps its etag.
    pub fn delete_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        room: Option<&str>,
        session: Option<&str>,
    ) -> Result<()> {
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let rooms = self.backup_keys(user, version, room, session)?;
        let info = self
            .backup_version(user, Some(version))?
            .ok_or_else(|| Error::not_found("Unknown backup version"))?;
        let n = parse_version(version).expect("found by it");
        let mut record = info.record;
        record["etag"] = json!(record["etag"].as_u64().unwrap_or(0) + 1);
        let record = serde_json::to_vec(&record)?;
        self.db.write(|b| {
            for (room, sessions) in &rooms {
                for session in sessions.as_object().into_iter().flat_map(|s| s.keys()) {
                    b.delete(
                        &self.backup_keys,
                        key::key(&[
                            user.as_bytes(),
                            n.to_string().as_bytes(),
                            room.as_bytes(),
                            session.as_bytes(),
                        ]),
                    );
                }
            }
            b.put(&self.backup_versions, Self::version_key(user, n), &record);
        })
    }
}
