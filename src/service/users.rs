//! Accounts, devices and access tokens. Passwords are argon2id hashes; tokens are looked up
//! by their SHA-256, so the database never holds a usable token and a lookup is one read.

use std::sync::Arc;

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use ruma::{OwnedDeviceId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    database::{Database, Table, key},
    error::{Error, Result},
    service::globals::{now_ms, random_string},
};

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct UserRecord {
    pub password_hash: Option<String>,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    #[serde(default)]
    pub deactivated: bool,
    #[serde(default)]
    pub created_ts: u64,
    /// A server admin: may use the admin API (`conduit user create --admin`).
    #[serde(default)]
    pub admin: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Device {
    pub device_id: OwnedDeviceId,
    pub display_name: Option<String>,
    pub last_seen_ip: Option<String>,
    pub last_seen_ts: Option<u64>,
    token_hash: String,
    #[serde(default)]
    refresh_hash: Option<String>,
    /// The refresh token exchanged for the current pair: it stays valid until that pair
    /// is first used, so a client that lost the `/refresh` response can retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prev_refresh_hash: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
struct TokenRecord {
    user_id: OwnedUserId,
    device_id: OwnedDeviceId,
    /// Milliseconds since the epoch; `None` never expires.
    expires_at: Option<u64>,
    /// On an access token from `/refresh`: the refresh token it replaced, revoked when
    /// this access token is first used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spends_refresh: Option<String>,
}

/// What an access token lookup yields.
pub enum TokenLookup {
    Valid(OwnedUserId, OwnedDeviceId),
    Expired,
    Unknown,
}

pub struct NewTokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in_ms: Option<u64>,
}

pub struct Users {
    db: Arc<Database>,
    users: Table,
    devices: Table,
    token_device: Table,
    refreshtoken_device: Table,
    token_lifetime_ms: u64,
    hashing: tokio::sync::Semaphore,
    /// Token hash -> owner: every authenticated request looks its token up.
    token_cache: std::sync::Mutex<std::collections::HashMap<String, TokenRecord>>,
    /// (user, device) -> when "last seen" was last written.
    last_touch: std::sync::Mutex<std::collections::HashMap<(OwnedUserId, OwnedDeviceId), u64>>,
}

const TOKEN_CACHE_ENTRIES: usize = 100_000;

fn argon2() -> Argon2<'static> {
    let params = argon2::Params::new(7 * 1024, 5, 1, None).expect("valid argon2 parameters");
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Users {
    pub fn new(db: &Arc<Database>, token_lifetime_ms: u64) -> Self {
        Self {
            db: Arc::clone(db),
            users: db.table("users"),
            devices: db.table("devices"),
            token_device: db.table("token_device"),
            refreshtoken_device: db.table("refreshtoken_device"),
            token_lifetime_ms,
            token_cache: Default::default(),
            last_touch: Default::default(),
            hashing: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
        }
    }

    pub fn get(&self, user_id: &UserId) -> Result<Option<UserRecord>> {
        self.users.get_json(user_id.as_bytes())
    }

    pub fn exists(&self, user_id: &UserId) -> Result<bool> {
        self.users.contains(user_id.as_bytes())
    }

    pub fn is_admin(&self, user_id: &UserId) -> Result<bool> {
        Ok(self
            .get(user_id)?
            .is_some_and(|u| u.admin && !u.deactivated))
    }

    pub fn is_active(&self, user_id: &UserId) -> Result<bool> {
        Ok(self.get(user_id)?.is_some_and(|u| !u.deactivated))
    }

    pub fn count(&self) -> usize {
        self.users.iter().count()
    }

    fn put(&self, user_id: &UserId, record: &UserRecord) -> Result<()> {
        self.users
            .put(user_id.as_bytes(), serde_json::to_vec(record)?)
    }

    pub fn update(&self, user_id: &UserId, f: impl FnOnce(&mut UserRecord)) -> Result<UserRecord> {
        let mut record = self
            .get(user_id)?
            .ok_or_else(|| Error::not_found("Unknown user"))?;
        f(&mut record);
        self.put(user_id, &record)?;
        Ok(record)
    }

    /// Argon2id at OWASP's 7 MiB / 5 passes setting (as strong as the 19 MiB / 2 passes
    /// default, with a third of the memory). Slow on purpose, so it runs off the async
    /// workers, at most one per core at a time: memory stays bounded under a burst of
    /// logins.
    pub async fn hash_password(&self, password: String) -> Result<String> {
        let _permit = self.hashing.acquire().await.map_err(Error::internal)?;
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon2()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(Error::internal)
        })
        .await
        .map_err(Error::internal)?
    }

    pub async fn check_password(&self, user_id: &UserId, password: String) -> Result<bool> {
        let Some(hash) = self.get(user_id)?.and_then(|u| u.password_hash) else {
            return Ok(false);
        };
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .map_err(Error::internal)
    }

    pub async fn create(&self, user_id: &UserId, password: Option<String>) -> Result<()> {
        let password_hash = match password {
            Some(p) => Some(self.hash_password(p).await?),
            None => None,
        };
        self.put(
            user_id,
            &UserRecord {
                password_hash,
                displayname: Some(user_id.localpart().to_owned()),
                created_ts: now_ms(),
                ..Default::default()
            },
        )
    }

    pub async fn set_password(&self, user_id: &UserId, password: String) -> Result<()> {
        let hash = self.hash_password(password).await?;
        self.update(user_id, |u| u.password_hash = Some(hash))?;
        Ok(())
    }

    fn device_key(user_id: &UserId, device_id: &str) -> Vec<u8> {
        key::key(&[user_id.as_bytes(), device_id.as_bytes()])
    }

    pub fn device(&self, user_id: &UserId, device_id: &str) -> Result<Option<Device>> {
        self.devices.get_json(Self::device_key(user_id, device_id))
    }

    pub fn devices(&self, user_id: &UserId) -> Result<Vec<Device>> {
        self.devices
            .scan_prefix(key::prefix(&[user_id.as_bytes()]))
            .map(|(_, v)| Ok(serde_json::from_slice(&v)?))
            .collect()
    }

    pub fn set_device_display_name(
        &self,
        user_id: &UserId,
        device_id: &str,
        name: Option<String>,
    ) -> Result<()> {
        let mut device = self
            .device(user_id, device_id)?
            .ok_or_else(|| Error::not_found("Unknown device"))?;
        device.display_name = name;
        self.devices.put(
            Self::device_key(user_id, device_id),
            serde_json::to_vec(&device)?,
        )
    }

    fn issue(&self, refresh: bool) -> (NewTokens, TokenRecordParts) {
        let access_token = random_string(32);
        let refresh_token = refresh.then(|| random_string(32));
        let expires_in_ms = refresh.then_some(self.token_lifetime_ms);
        let parts = TokenRecordParts {
            token_hash: token_hash(&access_token),
            refresh_hash: refresh_token.as_deref().map(token_hash),
            expires_at: expires_in_ms.map(|ms| now_ms() + ms),
        };
        (
            NewTokens {
                access_token,
                refresh_token,
                expires_in_ms,
            },
            parts,
        )
    }

    /// Creates (or replaces the tokens of) a device and returns its new tokens.
    pub fn login_device(
        &self,
        user_id: &UserId,
        device_id: &OwnedDeviceId,
        display_name: Option<String>,
        refresh: bool,
    ) -> Result<NewTokens> {
        let existing = self.device(user_id, device_id.as_str())?;
        let (tokens, parts) = self.issue(refresh);
        let device = Device {
            device_id: device_id.clone(),
            display_name: display_name
                .or_else(|| existing.as_ref().and_then(|d| d.display_name.clone())),
            last_seen_ip: None,
            last_seen_ts: Some(now_ms()),
            token_hash: parts.token_hash.clone(),
            refresh_hash: parts.refresh_hash.clone(),
            prev_refresh_hash: None,
        };
        self.write_device(user_id, existing.as_ref(), &device, parts.expires_at)?;
        Ok(tokens)
    }

    fn write_device(
        &self,
        user_id: &UserId,
        old: Option<&Device>,
        device: &Device,
        expires_at: Option<u64>,
    ) -> Result<()> {
        let record = TokenRecord {
            user_id: user_id.to_owned(),
            device_id: device.device_id.clone(),
            expires_at,
            spends_refresh: None,
        };
        let record = serde_json::to_vec(&record)?;
        let device_json = serde_json::to_vec(device)?;
        if let Some(old) = old {
            self.forget_tokens(old);
        }
        self.db.write(|b| {
            if let Some(old) = old {
                b.delete(&self.token_device, old.token_hash.as_bytes());
                for r in old.refresh_hash.iter().chain(&old.prev_refresh_hash) {
                    b.delete(&self.refreshtoken_device, r.as_bytes());
                }
            }
            b.put(&self.token_device, device.token_hash.as_bytes(), &record);
            if let Some(r) = &device.refresh_hash {
                b.put(&self.refreshtoken_device, r.as_bytes(), &record);
            }
            b.put(
                &self.devices,
                Self::device_key(user_id, device.device_id.as_str()),
                &device_json,
            );
        })
    }

    pub fn find_token(&self, token: &str) -> Result<TokenLookup> {
        let hash = token_hash(token);
        let Some(mut record) = self.token_device.get_json::<TokenRecord>(hash.as_bytes())? else {
            return Ok(TokenLookup::Unknown);
        };
        if record.expires_at.is_some_and(|t| t <= now_ms()) {
            return Ok(TokenLookup::Expired);
        }
        if let Some(spent) = record.spends_refresh.take() {
            // First use of a refreshed access token: the refresh token it replaced is spent.
            let device = self
                .device(&record.user_id, record.device_id.as_str())?
                .filter(|d| d.prev_refresh_hash.as_ref() == Some(&spent))
                .map(|mut d| {
                    d.prev_refresh_hash = None;
                    serde_json::to_vec(&d)
                })
                .transpose()?;
            let record_json = serde_json::to_vec(&record)?;
            self.db.write(|b| {
                b.delete(&self.refreshtoken_device, spent.as_bytes());
                b.put(&self.token_device, hash.as_bytes(), &record_json);
                if let Some(device) = &device {
                    b.put(
                        &self.devices,
                        Self::device_key(&record.user_id, record.device_id.as_str()),
                        device,
                    );
                }
            })?;
        }
        Ok(TokenLookup::Valid(record.user_id, record.device_id))
    }

    /// Exchanges a refresh token for new tokens. The old access token stops working; the
    /// old refresh token stays valid until the new access or refresh token is used (spec),
    /// and presenting it again meanwhile replaces the unused new pair.
    pub fn refresh(&self, refresh_token: &str) -> Result<Option<NewTokens>> {
        let presented = token_hash(refresh_token);
        let Some(record) = self
            .refreshtoken_device
            .get_json::<TokenRecord>(presented.as_bytes())?
        else {
            return Ok(None);
        };
        let Some(old) = self.device(&record.user_id, record.device_id.as_str())? else {
            return Ok(None);
        };
        let retry = old.prev_refresh_hash.as_ref() == Some(&presented);
        if !retry && old.refresh_hash.as_ref() != Some(&presented) {
            return Ok(None);
        }
        let (tokens, parts) = self.issue(true);
        let mut device = old.clone();
        device.token_hash = parts.token_hash;
        device.refresh_hash = parts.refresh_hash;
        device.prev_refresh_hash = Some(presented.clone());
        // A retry replaces the unused pair; a first use spends the refresh token before.
        let spent = if retry {
            old.refresh_hash.clone()
        } else {
            old.prev_refresh_hash.clone()
        };
        let new_record = |spends_refresh| TokenRecord {
            user_id: record.user_id.clone(),
            device_id: record.device_id.clone(),
            expires_at: parts.expires_at,
            spends_refresh,
        };
        let access_json = serde_json::to_vec(&new_record(Some(presented)))?;
        let refresh_json = serde_json::to_vec(&new_record(None))?;
        let device_json = serde_json::to_vec(&device)?;
        self.db.write(|b| {
            b.delete(&self.token_device, old.token_hash.as_bytes());
            if let Some(spent) = &spent {
                b.delete(&self.refreshtoken_device, spent.as_bytes());
            }
            b.put(
                &self.token_device,
                device.token_hash.as_bytes(),
                &access_json,
            );
            if let Some(r) = &device.refresh_hash {
                b.put(&self.refreshtoken_device, r.as_bytes(), &refresh_json);
            }
            b.put(
                &self.devices,
                Self::device_key(&record.user_id, device.device_id.as_str()),
                &device_json,
            );
        })?;
        Ok(Some(tokens))
    }

    pub fn remove_device(&self, user_id: &UserId, device_id: &str) -> Result<()> {
        let Some(device) = self.device(user_id, device_id)? else {
            return Ok(());
        };
        self.forget_tokens(&device);
        self.db.write(|b| {
            b.delete(&self.token_device, device.token_hash.as_bytes());
            for r in device.refresh_hash.iter().chain(&device.prev_refresh_hash) {
                b.delete(&self.refreshtoken_device, r.as_bytes());
            }
            b.delete(&self.devices, Self::device_key(user_id, device_id));
        })
    }

    pub fn remove_all_devices(&self, user_id: &UserId, except: Option<&str>) -> Result<()> {
        for device in self.devices(user_id)? {
            if Some(device.device_id.as_str()) != except {
                self.remove_device(user_id, device.device_id.as_str())?;
            }
        }
        Ok(())
    }

    fn forget_tokens(&self, device: &Device) {
        let mut cache = self.token_cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.remove(&device.token_hash);
    }

    pub fn touch_device(
        &self,
        user_id: &UserId,
        device_id: &OwnedDeviceId,
        ip: Option<String>,
    ) -> Result<()> {
        // Written at most once a minute per device: this runs on every request.
        let now = now_ms();
        {
            let mut touched = self.last_touch.lock().unwrap_or_else(|e| e.into_inner());
            let key = (user_id.to_owned(), device_id.clone());
            if touched
                .get(&key)
                .is_some_and(|t| now.saturating_sub(*t) < 60_000)
            {
                return Ok(());
            }
            if touched.len() >= TOKEN_CACHE_ENTRIES {
                touched.clear();
            }
            touched.insert(key, now);
        }
        let device_id = device_id.as_str();
        let Some(mut device) = self.device(user_id, device_id)? else {
            return Ok(());
        };
        device.last_seen_ts = Some(now);
        device.last_seen_ip = ip;
        self.devices.put(
            Self::device_key(user_id, device_id),
            serde_json::to_vec(&device)?,
        )
    }

    /// Users whose id or display name contains `term` (case-insensitive).
    pub fn search(&self, term: &str) -> Result<Vec<(OwnedUserId, UserRecord)>> {
        let term = term.to_lowercase();
        let mut out = Vec::new();
        for (k, v) in self.users.iter() {
            let Ok(user_id) = UserId::parse(String::from_utf8_lossy(&k).as_ref()) else {
                continue;
            };
            let record: UserRecord = serde_json::from_slice(&v)?;
            if record.deactivated {
                continue;
            }
            let name = record
                .displayname
                .as_deref()
                .unwrap_or_default()
                .to_lowercase();
            if user_id.as_str().to_lowercase().contains(&term) || name.contains(&term) {
                out.push((user_id, record));
            }
        }
        Ok(out)
    }
}

struct TokenRecordParts {
    token_hash: String,
    refresh_hash: Option<String>,
    expires_at: Option<u64>,
}
