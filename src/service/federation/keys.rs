//! Signing keys (spec: server-server API, "Retrieving server keys"): our own published
//! key object with retired keys, remote keys fetched from the server itself or from the
//! `trusted_servers` notaries and cached in `server_signingkeys`, and the checks built on
//! them (`verify_json`, `verify_pdu`).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedServerName,
    RoomVersionId, ServerName,
    api::federation::discovery::{
        ServerSigningKeys, get_remote_server_keys_batch, get_server_keys,
    },
    serde::Base64,
    signatures::{Ed25519KeyPair, PublicKeyMap, PublicKeySet, Verified},
};
use serde::{Deserialize, Serialize};

use super::{Federation, PduCheck};
use crate::{
    database::{Database, Table},
    error::{Error, Result},
};

/// How long our published key object says it stays valid.
const OWN_KEYS_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// A server is asked again for a key it did not have (or for a set that expired) at most
/// this often: a peer cannot make us hammer another server with made-up key ids.
const REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// `global` table entries: the signing key (see `Globals`) and our retired keys.
const KEYPAIR: &[u8] = b"keypair";
const OLD_KEYS: &[u8] = b"old_verify_keys";

pub(super) fn now() -> u64 {
    MilliSecondsSinceUnixEpoch::now().get().into()
}

/// What we know of one server's keys (the value in `server_signingkeys`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct ServerKeys {
    keys: BTreeMap<String, StoredKey>,
    /// The server's newest self-signed key object (its own signature only), for notary
    /// answers.
    #[serde(default)]
    raw: Option<serde_json::Value>,
    valid_until_ts: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredKey {
    /// Unpadded base64, as published.
    key: String,
    /// `valid_until_ts` of the set it was published in, or `expired_ts` of an old key.
    valid_until_ts: u64,
    /// Published under `old_verify_keys`: valid only for what was signed before.
    #[serde(default)]
    expired: bool,
}

impl ServerKeys {
    fn merge(&mut self, newer: ServerKeys) {
        for (id, key) in newer.keys {
            // A key once listed as old stays old, whatever a stale copy says.
            let expired = key.expired || self.keys.get(&id).is_some_and(|k| k.expired);
            self.keys.insert(id, StoredKey { expired, ..key });
        }
        if newer.valid_until_ts >= self.valid_until_ts {
            self.valid_until_ts = newer.valid_until_ts;
            self.raw = newer.raw.or(self.raw.take());
        }
    }
}

/// The remote-key cache: memory in front of `server_signingkeys`, and the refetch clock.
pub(super) struct KeyCache {
    table: Table,
    global: Table,
    memory: Mutex<HashMap<OwnedServerName, Arc<ServerKeys>>>,
    last_fetch: Mutex<HashMap<(OwnedServerName, String), Instant>>,
    /// One fetch per server at a time: a verifier that finds no key waits for the fetch
    /// already under way instead of finding the refetch clock set and giving up.
    fetching: Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyCache {
    pub(super) fn new(db: &Arc<Database>) -> Self {
        Self {
            table: db.table("server_signingkeys"),
            global: db.table("global"),
            memory: Mutex::default(),
            last_fetch: Mutex::default(),
            fetching: Mutex::default(),
        }
    }

    fn get(&self, server: &ServerName) -> Result<Option<Arc<ServerKeys>>> {
        if let Some(keys) = self.memory.lock().expect("keys lock").get(server) {
            return Ok(Some(Arc::clone(keys)));
        }
        let Some(bytes) = self.table.get(server.as_bytes())? else {
            return Ok(None);
        };
        let keys: Arc<ServerKeys> = Arc::new(serde_json::from_slice(&bytes)?);
        self.memory
            .lock()
            .expect("keys lock")
            .insert(server.to_owned(), Arc::clone(&keys));
        Ok(Some(keys))
    }

    fn store(&self, server: &ServerName, fetched: ServerKeys) -> Result<Arc<ServerKeys>> {
        let mut merged = self.get(server)?.map(|k| (*k).clone()).unwrap_or_default();
        merged.merge(fetched);
        self.table
            .put(server.as_bytes(), &serde_json::to_vec(&merged)?)?;
        let merged = Arc::new(merged);
        self.memory
            .lock()
            .expect("keys lock")
            .insert(server.to_owned(), Arc::clone(&merged));
        Ok(merged)
    }

    async fn fetch_lock(&self, server: &ServerName) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = Arc::clone(
            self.fetching
                .lock()
                .expect("fetch lock")
                .entry(server.to_owned())
                .or_default(),
        );
        lock.lock_owned().await
    }

    /// Whether asking `server` again (for `reason`, a key id) is allowed now; records the
    /// attempt when it is.
    fn may_fetch(&self, server: &ServerName, reason: &str) -> bool {
        let mut last = self.last_fetch.lock().expect("fetch lock");
        let now = Instant::now();
        last.retain(|_, at| now.duration_since(*at) < REFETCH_INTERVAL);
        let key = (server.to_owned(), reason.to_owned());
        if last.contains_key(&key) {
            return false;
        }
        last.insert(key, now);
        true
    }

    fn old_own_keys(&self) -> Result<BTreeMap<String, StoredKey>> {
        Ok(match self.global.get(OLD_KEYS)? {
            Some(bytes) => serde_json::from_slice(&bytes)?,
            None => BTreeMap::new(),
        })
    }
}

/// Retires the current signing key: it is listed under `old_verify_keys` (expired now) and
/// a new key is generated. Takes effect when the server next starts (the running server
/// keeps signing with the key it loaded).
pub fn rotate_signing_key(db: &Arc<Database>) -> Result<String> {
    let global = db.table("global");
    let stored = global
        .get(KEYPAIR)?
        .ok_or_else(|| Error::internal("no signing key to rotate"))?;
    let split = stored
        .iter()
        .position(|b| *b == 0xFF)
        .ok_or_else(|| Error::internal("corrupt signing key"))?;
    let version = String::from_utf8_lossy(&stored[..split]).into_owned();
    let old =
        Ed25519KeyPair::from_der(&stored[split + 1..], version.clone()).map_err(Error::internal)?;
    let mut old_keys: BTreeMap<String, StoredKey> = match global.get(OLD_KEYS)? {
        Some(bytes) => serde_json::from_slice(&bytes)?,
        None => BTreeMap::new(),
    };
    old_keys.insert(
        format!("ed25519:{version}"),
        StoredKey {
            key: Base64::<ruma::serde::base64::Standard, _>::new(old.public_key().to_vec())
                .encode(),
            valid_until_ts: now(),
            expired: true,
        },
    );
    let new_version = loop {
        let candidate = crate::service::globals::random_string(8);
        if !old_keys.contains_key(&format!("ed25519:{candidate}")) {
            break candidate;
        }
    };
    let mut bytes = new_version.clone().into_bytes();
    bytes.push(0xFF);
    bytes.extend_from_slice(&Ed25519KeyPair::generate());
    let old_keys = serde_json::to_vec(&old_keys)?;
    db.write(|b| {
        b.put(&global, OLD_KEYS, &old_keys);
        b.put(&global, KEYPAIR, &bytes);
    })?;
    Ok(format!("ed25519:{new_version}"))
}

/// Checks a fetched key object: it names `server`, and `server` signed it with one of the
/// keys it lists. Returns what to cache.
fn check_self_signed(server: &ServerName, object: &CanonicalJsonObject) -> Result<ServerKeys> {
    let bad = |why: String| Error::bad_gateway(format!("keys of {server}: {why}"));
    let parsed: ServerSigningKeys =
        serde_json::from_value(serde_json::to_value(object)?).map_err(|e| bad(e.to_string()))?;
    if parsed.server_name != server {
        return Err(bad(format!("object is for {}", parsed.server_name)));
    }
    let set: PublicKeySet = parsed
        .verify_keys
        .iter()
        .map(|(id, key)| (id.to_string(), key.key.clone()))
        .collect();
    let own = only_signatures_of(object, server.as_str());
    ruma::signatures::verify_json(&[(server.to_string(), set)].into(), &own)
        .map_err(|e| bad(format!("self-signature: {e}")))?;
    let valid_until_ts: u64 = parsed.valid_until_ts.get().into();
    let mut keys = BTreeMap::new();
    for (id, key) in parsed.old_verify_keys {
        keys.insert(
            id.to_string(),
            StoredKey {
                key: key.key.encode(),
                valid_until_ts: key.expired_ts.get().into(),
                expired: true,
            },
        );
    }
    for (id, key) in parsed.verify_keys {
        keys.insert(
            id.to_string(),
            StoredKey {
                key: key.key.encode(),
                valid_until_ts,
                expired: false,
            },
        );
    }
    Ok(ServerKeys {
        keys,
        raw: Some(serde_json::to_value(&own)?),
        valid_until_ts,
    })
}

/// `object` with the signatures of `entity` only: the others are not ours to check here.
fn only_signatures_of(object: &CanonicalJsonObject, entity: &str) -> CanonicalJsonObject {
    let mut object = object.clone();
    if let Some(CanonicalJsonValue::Object(signatures)) = object.get_mut("signatures") {
        signatures.retain(|name, _| name == entity);
    }
    object
}

fn raw_to_object<T>(raw: &ruma::serde::Raw<T>) -> Result<CanonicalJsonObject> {
    serde_json::from_str(raw.json().get())
        .map_err(|e| Error::bad_gateway(format!("key object is not canonical JSON: {e}")))
}

impl Federation {
    /// Our key object as `/_matrix/key/v2/server` publishes it: the current key, retired
    /// keys under `old_verify_keys`, signed.
    pub fn own_key_object(&self) -> Result<CanonicalJsonObject> {
        let valid_until = now() + OWN_KEYS_VALIDITY.as_millis() as u64;
        let mut verify_keys = CanonicalJsonObject::new();
        verify_keys.insert(
            self.globals.key_id(),
            CanonicalJsonValue::Object(
                [(
                    "key".to_owned(),
                    Base64::<ruma::serde::base64::Standard, _>::new(
                        self.globals.keypair.public_key().to_vec(),
                    )
                    .encode()
                    .into(),
                )]
                .into(),
            ),
        );
        let mut old_verify_keys = CanonicalJsonObject::new();
        for (id, key) in self.keys.old_own_keys()? {
            old_verify_keys.insert(
                id,
                CanonicalJsonValue::Object(
                    [
                        ("key".to_owned(), key.key.into()),
                        (
                            "expired_ts".to_owned(),
                            CanonicalJsonValue::Integer(
                                ruma::Int::try_from(key.valid_until_ts).map_err(Error::internal)?,
                            ),
                        ),
                    ]
                    .into(),
                ),
            );
        }
        let mut object: CanonicalJsonObject = [
            (
                "server_name".to_owned(),
                self.globals.server_name().as_str().into(),
            ),
            (
                "verify_keys".to_owned(),
                CanonicalJsonValue::Object(verify_keys),
            ),
            (
                "old_verify_keys".to_owned(),
                CanonicalJsonValue::Object(old_verify_keys),
            ),
            (
                "valid_until_ts".to_owned(),
                CanonicalJsonValue::Integer(
                    ruma::Int::try_from(valid_until).map_err(Error::internal)?,
                ),
            ),
        ]
        .into();
        self.sign(&mut object)?;
        Ok(object)
    }

    /// Adds our signature to `object` (other signatures are kept).
    pub fn sign(&self, object: &mut CanonicalJsonObject) -> Result<()> {
        ruma::signatures::sign_json(
            self.globals.server_name().as_str(),
            &self.globals.keypair,
            object,
        )
        .map_err(Error::internal)
    }

    /// What we know of our own keys, in the cache's form.
    fn own_keys(&self) -> Result<ServerKeys> {
        let object = self.own_key_object()?;
        check_self_signed(self.globals.server_name(), &object)
    }

    /// The keys of `server` usable at `ts` (milliseconds): current keys whose set is valid
    /// at `ts` (or any current key when `enforce_validity` is off: room versions 1 to 4)
    /// and old keys that expired after `ts`. Asks the server (or the notaries) again,
    /// rate-limited, when none of `wanted` (the key ids of the signatures to check) is
    /// usable.
    pub(super) async fn keys_valid_at(
        &self,
        server: &ServerName,
        wanted: &[String],
        ts: u64,
        enforce_validity: bool,
    ) -> Result<PublicKeySet> {
        let usable = |keys: &ServerKeys| -> PublicKeySet {
            keys.keys
                .iter()
                .filter(|(_, k)| {
                    if k.expired {
                        k.valid_until_ts > ts
                    } else {
                        !enforce_validity || k.valid_until_ts >= ts
                    }
                })
                .filter_map(|(id, k)| Some((id.clone(), Base64::parse(&k.key).ok()?)))
                .collect()
        };
        if server == self.globals.server_name() {
            return Ok(usable(&self.own_keys()?));
        }
        let cached = self.keys.get(server)?;
        if let Some(keys) = &cached {
            let set = usable(keys);
            if wanted.iter().any(|id| set.contains_key(id)) {
                return Ok(set);
            }
        }
        let _fetching = self.keys.fetch_lock(server).await;
        // Another verifier may have fetched the keys while this one waited.
        let cached = self.keys.get(server)?;
        if let Some(keys) = &cached {
            let set = usable(keys);
            if wanted.iter().any(|id| set.contains_key(id)) {
                return Ok(set);
            }
        }
        let reason = wanted.first().map_or("", String::as_str);
        if !self.keys.may_fetch(server, reason) {
            return Ok(cached.map(|k| usable(&k)).unwrap_or_default());
        }
        match self.fetch_keys(server).await {
            Ok(keys) => Ok(usable(&keys)),
            Err(e) => {
                tracing::debug!(%server, "fetching keys failed: {e}");
                match cached {
                    Some(keys) => Ok(usable(&keys)),
                    None => Err(e),
                }
            }
        }
    }

    /// Asks `server` for its keys, then each trusted notary; caches what verifies.
    async fn fetch_keys(&self, server: &ServerName) -> Result<Arc<ServerKeys>> {
        let direct = self.fetch_direct(server).await;
        let error = match direct {
            Ok(keys) => return self.keys.store(server, keys),
            Err(e) => e,
        };
        let mut found: Option<ServerKeys> = None;
        for notary in &self.globals.config.trusted_servers {
            if notary == server || notary == self.globals.server_name() {
                continue;
            }
            match self.fetch_from_notary(notary, server).await {
                Ok(keys) => match &mut found {
                    Some(found) => found.merge(keys),
                    None => found = Some(keys),
                },
                Err(e) => tracing::debug!(%server, %notary, "notary: {e}"),
            }
        }
        match found {
            Some(keys) => self.keys.store(server, keys),
            None => Err(error),
        }
    }

    /// `GET /_matrix/key/v2/server` of `server` itself.
    async fn fetch_direct(&self, server: &ServerName) -> Result<ServerKeys> {
        let response = self
            .send_unauthenticated(server, get_server_keys::v2::Request::new())
            .await?;
        check_self_signed(server, &raw_to_object(&response.server_key)?)
    }

    /// `POST /_matrix/key/v2/query` at `notary` for `server`: each object must be signed by
    /// `server` itself and by the notary (whose keys come from the notary directly).
    async fn fetch_from_notary(
        &self,
        notary: &ServerName,
        server: &ServerName,
    ) -> Result<ServerKeys> {
        let request = get_remote_server_keys_batch::v2::Request::new(
            [(server.to_owned(), BTreeMap::new())].into(),
        );
        let response = self.send_unauthenticated(notary, request).await?;
        let notary_keys = match self.keys.get(notary)? {
            Some(keys) if keys.valid_until_ts > now() => keys,
            _ => self.keys.store(notary, self.fetch_direct(notary).await?)?,
        };
        let notary_set: PublicKeySet = notary_keys
            .keys
            .iter()
            .filter(|(_, k)| !k.expired && k.valid_until_ts > now())
            .filter_map(|(id, k)| Some((id.clone(), Base64::parse(&k.key).ok()?)))
            .collect();
        let notary_map: PublicKeyMap = [(notary.to_string(), notary_set)].into();
        let mut result: Option<ServerKeys> = None;
        for raw in &response.server_keys {
            let object = raw_to_object(raw)?;
            if object
                .get("server_name")
                .and_then(CanonicalJsonValue::as_str)
                != Some(server.as_str())
            {
                continue;
            }
            ruma::signatures::verify_json(
                &notary_map,
                &only_signatures_of(&object, notary.as_str()),
            )
            .map_err(|e| Error::bad_gateway(format!("notary {notary} signature: {e}")))?;
            let keys = check_self_signed(server, &object)?;
            match &mut result {
                Some(result) => result.merge(keys),
                None => result = Some(keys),
            }
        }
        result.ok_or_else(|| Error::bad_gateway(format!("notary {notary} has no keys")))
    }

    /// The key objects a notary answers for `server` (spec: `/_matrix/key/v2/query`): the
    /// cached object if it is valid until `minimum_valid_until_ts`, else a fresh one from
    /// the server; each with our signature added. Empty when nothing is known.
    pub async fn notary_keys(
        &self,
        server: &ServerName,
        minimum_valid_until_ts: u64,
    ) -> Result<Vec<CanonicalJsonObject>> {
        if server == self.globals.server_name() {
            return Ok(vec![self.own_key_object()?]);
        }
        let mut keys = self.keys.get(server)?;
        let fresh_enough = keys
            .as_ref()
            .is_some_and(|k| k.raw.is_some() && k.valid_until_ts >= minimum_valid_until_ts);
        if !fresh_enough && self.keys.may_fetch(server, "notary") {
            match self.fetch_direct(server).await {
                Ok(fetched) => keys = Some(self.keys.store(server, fetched)?),
                Err(e) => tracing::debug!(%server, "notary fetch failed: {e}"),
            }
        }
        let Some(raw) = keys.and_then(|k| k.raw.clone()) else {
            return Ok(Vec::new());
        };
        let mut object: CanonicalJsonObject = serde_json::from_value(raw)?;
        self.sign(&mut object)?;
        Ok(vec![object])
    }

    /// Checks that `object` carries a valid signature of `server` made with a key valid now.
    pub async fn verify_json(
        &self,
        server: &ServerName,
        object: &CanonicalJsonObject,
    ) -> Result<()> {
        let object = only_signatures_of(object, server.as_str());
        let wanted = signature_key_ids(&object, server.as_str());
        if wanted.is_empty() {
            return Err(Error::forbidden(format!("Not signed by {server}")));
        }
        let keys = self.keys_valid_at(server, &wanted, now(), true).await?;
        ruma::signatures::verify_json(&[(server.to_string(), keys)].into(), &object).map_err(|e| {
            tracing::debug!(%server, "signature refused: {e}");
            Error::forbidden(format!("Invalid signature of {server}"))
        })
    }

    /// Checks a PDU's content hash and the signatures the room version requires (the
    /// sender's server; for versions 1 and 2 the event id's server; for restricted joins
    /// the authorising server), with keys valid at the event's `origin_server_ts`,
    /// fetching keys as needed. `object` is the PDU as received (for versions 3+ without
    /// an `event_id`).
    pub async fn verify_pdu(
        &self,
        object: &CanonicalJsonObject,
        version: &RoomVersionId,
    ) -> Result<PduCheck> {
        let rules = version.rules().ok_or_else(|| {
            Error::unsupported_room_version(format!("Unsupported room version {version}"))
        })?;
        let servers =
            ruma::signatures::required_server_signatures_to_verify_event(object, &rules.signatures)
                .map_err(|e| Error::bad_json(format!("Invalid PDU: {e}")))?;
        let ts = match object.get("origin_server_ts") {
            Some(CanonicalJsonValue::Integer(ts)) => u64::try_from(i64::from(*ts)).unwrap_or(0),
            _ => return Err(Error::bad_json("Invalid PDU: no origin_server_ts")),
        };
        let mut map = PublicKeyMap::new();
        for server in servers {
            let wanted = signature_key_ids(object, server.as_str());
            if wanted.is_empty() {
                return Err(Error::forbidden(format!("PDU is not signed by {server}")));
            }
            let keys = self
                .keys_valid_at(&server, &wanted, ts, rules.enforce_key_validity)
                .await
                .map_err(|e| {
                    Error::forbidden(format!("No usable keys of {server}: {}", e.message))
                })?;
            map.insert(server.to_string(), keys);
        }
        match ruma::signatures::verify_event(&map, object, &rules) {
            Ok(Verified::All) => Ok(PduCheck::Valid),
            Ok(Verified::Signatures) => {
                let redacted = ruma::canonical_json::redact(object.clone(), &rules.redaction, None)
                    .map_err(|e| Error::bad_json(format!("Invalid PDU: {e}")))?;
                Ok(PduCheck::Redacted(redacted))
            }
            Err(e) => {
                tracing::debug!("PDU signature refused: {e}");
                Err(Error::forbidden(format!("Invalid PDU signature: {e}")))
            }
        }
    }
}

/// The key ids `entity` signed `object` with.
fn signature_key_ids(object: &CanonicalJsonObject, entity: &str) -> Vec<String> {
    match object.get("signatures") {
        Some(CanonicalJsonValue::Object(signatures)) => match signatures.get(entity) {
            Some(CanonicalJsonValue::Object(keys)) => keys.keys().cloned().collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}
