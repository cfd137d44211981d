//! The media repository: uploads (direct and asynchronous), downloads, thumbnails,
//! quarantine, deletion and the remote-cache sweep. Bytes live in a [`Storage`] backend
//! named by their SHA-256 (one blob per distinct content); the tables here say which
//! media ids (and thumbnails) point at which blob.
//!
//! Tables: `media` (`server 0xFF media_id` -> [`MediaMeta`]), `media_thumbnails` (`server
//! 0xFF media_id 0xFF width,height 0xFF method` -> [`ThumbnailMeta`]), `media_blob_refs`
//! (`sha256 0xFF server 0xFF media_id [0xFF thumbnail]` -> empty: who uses a blob, so a
//! delete removes the blob with its last user) and `media_pending` (`user 0xFF server
//! 0xFF media_id` -> expiry: reserved ids not uploaded yet).

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use ruma::{OwnedUserId, ServerName, UserId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::{
    config::{Config, MediaBackend},
    database::{Batch, Database, Table, key},
    error::{Error, Result},
    service::globals::{now_ms, random_string},
};

pub mod html_meta;
pub mod preview;
pub mod remote;
pub mod s3;
pub mod storage;
pub mod thumbnail;

pub use storage::{ByteStream, Storage};
use thumbnail::Method;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct MediaMeta {
    /// The blob; `None` while an id reserved with `/create` waits for its upload.
    pub sha256: Option<String>,
    pub size: u64,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub uploader: Option<OwnedUserId>,
    pub created_ms: u64,
    /// A reserved id not uploaded by then is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    #[serde(default)]
    pub quarantined: bool,
    /// A cached copy of another server's media (swept after `remote_max_age_s`).
    #[serde(default)]
    pub remote: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ThumbnailMeta {
    pub sha256: String,
    pub size: u64,
    pub content_type: String,
}

/// What a download serves: a blob with its type and name.
pub struct Content {
    pub sha256: String,
    pub size: u64,
    pub content_type: Option<String>,
    pub filename: Option<String>,
}

pub struct Media {
    db: Arc<Database>,
    media: Table,
    thumbnails: Table,
    blob_refs: Table,
    pending: Table,
    storage: Box<dyn Storage>,
    /// Temp files of uploads in progress; on the local disk for both backends.
    temp_dir: PathBuf,
    server_name: ruma::OwnedServerName,
    max_upload: usize,
    unused_expiration_ms: u64,
    max_pending: usize,
    /// Bumped whenever an upload completes: downloads waiting for a reserved id wake up
    /// and look again.
    uploaded: tokio::sync::watch::Sender<u64>,
    /// Serialises the check-and-write of a media id's metadata, so two uploads to one
    /// reserved id cannot both succeed.
    write_lock: Mutex<()>,
    /// Storing a blob and recording its first user (shared) against finding a blob
    /// unused and deleting it (exclusive): otherwise an upload that found the blob
    /// present could record it just after a delete removed it.
    blob_lock: tokio::sync::RwLock<()>,
    /// Fetches other servers' media.
    federation: Arc<crate::service::federation::Federation>,
    /// Plain GETs of a federation answer's `Location` part: no internal addresses.
    redirect_client: reqwest::Client,
    in_flight: remote::InFlight,
}

pub fn media_dir(config: &Config) -> PathBuf {
    config
        .media
        .path
        .clone()
        .unwrap_or_else(|| config.database_path.join("media"))
}

impl Media {
    pub fn new(
        db: &Arc<Database>,
        config: &Config,
        federation: Arc<crate::service::federation::Federation>,
    ) -> Result<Self> {
        let root = media_dir(config);
        let temp_dir = root.join("tmp");
        std::fs::create_dir_all(&temp_dir).map_err(|e| {
            Error::internal(format_args!(
                "media: cannot create {}: {e}",
                temp_dir.display()
            ))
        })?;
        // Leftovers of uploads cut off by a crash or restart: no metadata names them.
        if let Ok(entries) = std::fs::read_dir(&temp_dir) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let storage: Box<dyn Storage> = match config.media.backend {
            MediaBackend::Filesystem => Box::new(storage::FsStorage::new(root)),
            MediaBackend::S3 => {
                let s3 = config.media.s3.as_ref().ok_or_else(|| {
                    Error::internal("media.backend is s3 but [global.media.s3] is missing")
                })?;
                Box::new(s3::S3Storage::new(s3)?)
            }
        };
        let redirect_client = reqwest::Client::builder()
            .dns_resolver(Arc::new(crate::service::net_policy::FilteringResolver(
                Arc::new(crate::service::net_policy::AddressPolicy::default()),
            )))
            // Followed by hand, each hop checked.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(config.federation_timeout.max(1)))
            .user_agent(concat!("conduit/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::internal)?;
        Ok(Self {
            federation,
            redirect_client,
            in_flight: Default::default(),
            db: Arc::clone(db),
            media: db.table("media"),
            thumbnails: db.table("media_thumbnails"),
            blob_refs: db.table("media_blob_refs"),
            pending: db.table("media_pending"),
            storage,
            temp_dir,
            server_name: config.server_name.clone(),
            max_upload: config.max_request_size,
            unused_expiration_ms: config.media.unused_expiration_s.saturating_mul(1000),
            max_pending: config.media.max_pending_uploads,
            uploaded: tokio::sync::watch::channel(0).0,
            write_lock: Mutex::new(()),
            blob_lock: tokio::sync::RwLock::new(()),
        })
    }

    pub fn max_upload(&self) -> usize {
        self.max_upload
    }

    pub fn get(&self, server: &ServerName, media_id: &str) -> Result<Option<MediaMeta>> {
        self.media.get_json(media_key(server, media_id))
    }

    /// Reserves a media id for a later upload by `user` (`POST /create`).
    pub fn create_pending(&self, user: &UserId) -> Result<(String, u64)> {
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_ms();
        let held = self
            .pending
            .scan_prefix(key::prefix(&[user.as_bytes()]))
            .filter(|(_, v)| key::to_u64(v) > now)
            .count();
        if held >= self.max_pending {
            return Err(Error::new(
                http::StatusCode::TOO_MANY_REQUESTS,
                "M_LIMIT_EXCEEDED",
                "Too many media ids reserved and not uploaded yet",
            )
            .with("retry_after_ms", serde_json::json!(60_000)));
        }
        let media_id = random_string(24);
        let expires = now + self.unused_expiration_ms;
        let meta = MediaMeta {
            uploader: Some(user.to_owned()),
            created_ms: now,
            expires_ms: Some(expires),
            ..Default::default()
        };
        let value = serde_json::to_vec(&meta)?;
        self.db.write(|b| {
            b.put(&self.media, media_key(&self.server_name, &media_id), value);
            b.put(
                &self.pending,
                key::key(&[
                    user.as_bytes(),
                    self.server_name.as_bytes(),
                    media_id.as_bytes(),
                ]),
                key::u64_key(expires),
            );
        })?;
        Ok((media_id, expires))
    }

    /// Checks that `user` may upload to the reserved id now (before reading the body).
    pub fn check_pending(&self, user: &UserId, server: &ServerName, media_id: &str) -> Result<()> {
        if server != self.server_name {
            return Err(Error::not_found("Unknown media id"));
        }
        let meta = self
            .get(server, media_id)?
            .filter(|m| !expired(m))
            .ok_or_else(|| Error::not_found("Unknown or expired media id"))?;
        if meta.uploader.as_deref() != Some(user) {
            return Err(Error::forbidden(
                "This media id was reserved by another user",
            ));
        }
        if meta.sha256.is_some() {
            return Err(cannot_overwrite());
        }
        Ok(())
    }

    /// Streams `body` to a temp file, hashing as it goes, and stores it as the media
    /// `media_id` (a new one, or the reserved id `reserved` checked by [`check_pending`]).
    /// More than `max_upload` bytes -> `M_TOO_LARGE`, counted as they arrive.
    pub async fn upload<S, E>(
        &self,
        user: &UserId,
        reserved: Option<&str>,
        content_type: Option<String>,
        filename: Option<String>,
        body: S,
    ) -> Result<String>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let (temp, sha256, size) = self.receive(body).await?;
        let result = self
            .store_and_record(user, reserved, content_type, filename, &temp, sha256, size)
            .await;
        // Already moved on success; on failure it must not linger.
        let _ = tokio::fs::remove_file(&temp).await;
        result
    }

    async fn receive<S, E>(&self, body: S) -> Result<(PathBuf, String, u64)>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        self.receive_from(body, |e| {
            Error::new(
                http::StatusCode::BAD_REQUEST,
                "M_UNKNOWN",
                format!("The upload was interrupted: {e}"),
            )
        })
        .await
    }

    /// Streams `body` to a new temp file within the upload limit; `interrupted` makes the
    /// error for a body that fails midway (a client's upload, or another server's answer).
    /// Cancelled (a client gone, a fetch timed out), the temp file is removed on drop.
    async fn receive_from<S, E>(
        &self,
        mut body: S,
        interrupted: impl Fn(String) -> Error,
    ) -> Result<(PathBuf, String, u64)>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut guard = TempGuard(Some(self.temp_dir.join(random_string(20))));
        let temp = guard.0.clone().unwrap_or_default();
        let received = async {
            // Buffered: each write of a tokio file is a trip to the blocking pool.
            let mut file = tokio::io::BufWriter::with_capacity(
                storage::CHUNK,
                tokio::fs::File::create(&temp).await.map_err(temp_error)?,
            );
            let mut hasher = Sha256::new();
            let mut size: u64 = 0;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| interrupted(e.to_string()))?;
                size += chunk.len() as u64;
                if size > self.max_upload as u64 {
                    return Err(Error::too_large(format!(
                        "Uploads are limited to {} bytes",
                        self.max_upload
                    )));
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(temp_error)?;
            }
            file.flush().await.map_err(temp_error)?;
            file.get_ref().sync_all().await.map_err(temp_error)?;
            Ok((hex(&hasher.finalize()), size))
        }
        .await;
        match received {
            Ok((sha256, size)) => {
                guard.0 = None;
                Ok((temp, sha256, size))
            }
            // The guard removes the temp file.
            Err(e) => Err(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn store_and_record(
        &self,
        user: &UserId,
        reserved: Option<&str>,
        content_type: Option<String>,
        filename: Option<String>,
        temp: &Path,
        sha256: String,
        size: u64,
    ) -> Result<String> {
        let _blobs = self.blob_lock.read().await;
        // The blob first: metadata never names bytes that are not stored.
        self.storage.store(&sha256, temp, size).await?;
        let media_id = reserved.map_or_else(|| random_string(24), ToOwned::to_owned);
        let meta = MediaMeta {
            sha256: Some(sha256.clone()),
            size,
            content_type: content_type.filter(|t| !t.is_empty()),
            filename: filename.filter(|f| !f.is_empty()),
            uploader: Some(user.to_owned()),
            created_ms: now_ms(),
            ..Default::default()
        };
        let value = serde_json::to_vec(&meta)?;
        {
            let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(id) = reserved {
                // Checked before the body was read; again now, another upload may have won.
                self.check_pending(user, &self.server_name, id)?;
            }
            self.db.write(|b| {
                b.put(&self.media, media_key(&self.server_name, &media_id), value);
                b.put(
                    &self.blob_refs,
                    key::key(&[
                        sha256.as_bytes(),
                        self.server_name.as_bytes(),
                        media_id.as_bytes(),
                    ]),
                    [],
                );
                if reserved.is_some() {
                    b.delete(
                        &self.pending,
                        key::key(&[
                            user.as_bytes(),
                            self.server_name.as_bytes(),
                            media_id.as_bytes(),
                        ]),
                    );
                }
            })?;
        }
        self.uploaded.send_modify(|n| *n = n.wrapping_add(1));
        Ok(media_id)
    }

    /// Local content to serve; waits up to `timeout` for a reserved id's upload. Other
    /// servers' media goes through [`Media::fetch_remote`].
    pub async fn content(
        &self,
        server: &ServerName,
        media_id: &str,
        timeout: Duration,
    ) -> Result<Content> {
        if server != self.server_name {
            return self.fetch_remote(server, media_id, timeout).await;
        }
        let deadline = tokio::time::Instant::now() + timeout.min(MAX_WAIT);
        let mut uploads = self.uploaded.subscribe();
        loop {
            // Subscribed before looking, so an upload finishing in between is not missed.
            uploads.mark_unchanged();
            let meta = self
                .get(server, media_id)?
                .filter(|m| !m.quarantined && !expired(m))
                .ok_or_else(|| Error::not_found("Media not found"))?;
            if let Some(sha256) = meta.sha256 {
                return Ok(Content {
                    sha256,
                    size: meta.size,
                    content_type: meta.content_type,
                    filename: meta.filename,
                });
            }
            match tokio::time::timeout_at(deadline, uploads.changed()).await {
                Ok(Ok(())) => continue,
                _ => {
                    return Err(Error::new(
                        http::StatusCode::GATEWAY_TIMEOUT,
                        "M_NOT_YET_UPLOADED",
                        "The media has not been uploaded yet",
                    ));
                }
            }
        }
    }

    pub async fn read(&self, sha256: &str, range: Option<(u64, u64)>) -> Result<ByteStream> {
        self.storage.read(sha256, range).await
    }

    /// The whole blob in memory, for decoding; bounded by the upload limit.
    async fn read_all(&self, sha256: &str) -> Result<Vec<u8>> {
        let mut stream = self.storage.read(sha256, None).await?;
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.map_err(Error::internal)?);
        }
        Ok(out)
    }

    /// A stored or newly generated thumbnail; `Ok(None)`: serve the original.
    pub async fn thumbnail(
        &self,
        server: &ServerName,
        media_id: &str,
        content: &Content,
        width: u32,
        height: u32,
        method: Method,
    ) -> Result<Option<ThumbnailMeta>> {
        let thumb_key = key::key(&[
            server.as_bytes(),
            media_id.as_bytes(),
            &key::pair(u64::from(width), u64::from(height)),
            method.as_str().as_bytes(),
        ]);
        if let Some(meta) = self.thumbnails.get_json::<ThumbnailMeta>(&thumb_key)? {
            return Ok(Some(meta));
        }
        // Refuse what is no image from its first bytes, before reading all of it.
        let mut head = Vec::new();
        if content.size > 0 {
            let mut stream = self
                .storage
                .read(&content.sha256, Some((0, content.size.min(64))))
                .await?;
            while let Some(chunk) = stream.next().await {
                head.extend_from_slice(&chunk.map_err(Error::internal)?);
            }
        }
        if thumbnail::supported_format(&head).is_none() {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                "M_UNKNOWN",
                "The media is not an image the server can thumbnail",
            ));
        }
        let original = self.read_all(&content.sha256).await?;
        let generated = tokio::task::spawn_blocking(move || {
            thumbnail::generate(&original, width, height, method)
        })
        .await
        .map_err(Error::internal)??;
        let (bytes, content_type) = match generated {
            thumbnail::Thumbnail::Original => return Ok(None),
            thumbnail::Thumbnail::Generated {
                bytes,
                content_type,
            } => (bytes, content_type),
        };
        let (temp, sha256, size) = self
            .receive(futures::stream::iter([Ok::<_, Error>(Bytes::from(bytes))]))
            .await?;
        let _blobs = self.blob_lock.read().await;
        let stored = self.storage.store(&sha256, &temp, size).await;
        let _ = tokio::fs::remove_file(&temp).await;
        stored?;
        let meta = ThumbnailMeta {
            sha256: sha256.clone(),
            size,
            content_type: content_type.to_owned(),
        };
        let value = serde_json::to_vec(&meta)?;
        let mut ref_key = key::key(&[sha256.as_bytes()]);
        ref_key.push(0xFF);
        ref_key.extend_from_slice(&thumb_key);
        self.db.write(|b| {
            b.put(&self.thumbnails, &thumb_key, value);
            b.put(&self.blob_refs, ref_key, []);
        })?;
        Ok(Some(meta))
    }

    /// Quarantine (Synapse's admin API): the media is no longer served; the bytes stay.
    pub fn quarantine(&self, server: &ServerName, media_id: &str) -> Result<()> {
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut meta = self
            .get(server, media_id)?
            .ok_or_else(|| Error::not_found("Media not found"))?;
        meta.quarantined = true;
        self.media
            .put(media_key(server, media_id), serde_json::to_vec(&meta)?)
    }

    /// Deletes a media item with its thumbnails; blobs nobody else uses go too.
    pub async fn delete(&self, server: &ServerName, media_id: &str) -> Result<()> {
        let _blobs = self.blob_lock.write().await;
        let orphans = {
            let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
            let meta = self
                .get(server, media_id)?
                .ok_or_else(|| Error::not_found("Media not found"))?;
            let mut released = Vec::new();
            let mut batch_ops: Vec<(Table, Vec<u8>)> = Vec::new();
            let base = media_key(server, media_id);
            batch_ops.push((self.media.clone(), base.clone()));
            if let Some(sha) = &meta.sha256 {
                let mut k = key::key(&[sha.as_bytes()]);
                k.push(0xFF);
                k.extend_from_slice(&base);
                batch_ops.push((self.blob_refs.clone(), k.clone()));
                released.push((sha.clone(), k));
            }
            if let Some(user) = &meta.uploader {
                let mut k = key::key(&[user.as_bytes()]);
                k.push(0xFF);
                k.extend_from_slice(&base);
                batch_ops.push((self.pending.clone(), k));
            }
            let mut thumbs_prefix = base.clone();
            thumbs_prefix.push(0xFF);
            for (k, v) in self.thumbnails.scan_prefix(thumbs_prefix) {
                let thumb: ThumbnailMeta = serde_json::from_slice(&v)?;
                let mut r = key::key(&[thumb.sha256.as_bytes()]);
                r.push(0xFF);
                r.extend_from_slice(&k);
                batch_ops.push((self.thumbnails.clone(), k.to_vec()));
                batch_ops.push((self.blob_refs.clone(), r.clone()));
                released.push((thumb.sha256, r));
            }
            self.db.write(|b: &mut Batch<'_>| {
                for (table, k) in &batch_ops {
                    b.delete(table, k);
                }
            })?;
            // Blobs whose last reference just went.
            let mut orphans: Vec<String> = released
                .into_iter()
                .filter(|(sha, _)| {
                    self.blob_refs
                        .scan_prefix(key::prefix(&[sha.as_bytes()]))
                        .next()
                        .is_none()
                })
                .map(|(sha, _)| sha)
                .collect();
            orphans.dedup();
            orphans
        };
        for sha in orphans {
            self.storage.delete(&sha).await?;
        }
        Ok(())
    }

    /// Records a cached copy of another server's media (the retention sweep's tests use
    /// it directly).
    pub async fn insert_remote<S, E>(
        &self,
        server: &ServerName,
        media_id: &str,
        content_type: Option<String>,
        fetched_ms: u64,
        body: S,
    ) -> Result<()>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        self.insert_remote_named(server, media_id, content_type, None, fetched_ms, body)
            .await
    }

    /// Streams a fetched remote file to storage (within the upload limit) and records it
    /// as `remote: true` under its own server's name.
    async fn insert_remote_named<S, E>(
        &self,
        server: &ServerName,
        media_id: &str,
        content_type: Option<String>,
        filename: Option<String>,
        fetched_ms: u64,
        body: S,
    ) -> Result<()>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let (temp, sha256, size) = self
            .receive_from(body, |e| {
                Error::bad_gateway(format!("{server}: media answer cut short: {e}"))
            })
            .await?;
        let _blobs = self.blob_lock.read().await;
        let stored = self.storage.store(&sha256, &temp, size).await;
        let _ = tokio::fs::remove_file(&temp).await;
        stored?;
        let meta = MediaMeta {
            sha256: Some(sha256.clone()),
            size,
            content_type,
            filename,
            created_ms: fetched_ms,
            remote: true,
            ..Default::default()
        };
        let value = serde_json::to_vec(&meta)?;
        self.db.write(|b| {
            b.put(&self.media, media_key(server, media_id), value);
            b.put(
                &self.blob_refs,
                key::key(&[sha256.as_bytes(), server.as_bytes(), media_id.as_bytes()]),
                [],
            );
        })
    }

    /// Deletes remote cache entries older than `max_age_ms` and reserved ids that expired.
    /// Returns how many media items went.
    pub async fn sweep(&self, max_age_ms: Option<u64>) -> Result<usize> {
        let now = now_ms();
        let mut doomed = Vec::new();
        for (k, v) in self.media.iter() {
            let meta: MediaMeta = serde_json::from_slice(&v)?;
            let old_remote = meta.remote
                && max_age_ms.is_some_and(|age| meta.created_ms.saturating_add(age) <= now);
            if old_remote || expired(&meta) {
                let mut parts = key::parts(&k);
                let server = parts
                    .next()
                    .map(|p| String::from_utf8_lossy(p).into_owned());
                let id = parts
                    .next()
                    .map(|p| String::from_utf8_lossy(p).into_owned());
                if let (Some(server), Some(id)) = (server, id) {
                    doomed.push((server, id));
                }
            }
        }
        let mut deleted = 0;
        for (server, id) in doomed {
            let Ok(server) = ServerName::parse(&server) else {
                continue;
            };
            self.delete(&server, &id).await?;
            deleted += 1;
        }
        Ok(deleted)
    }
}

/// Removes a temp file when dropped while it still holds its path.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Longest a download waits for a reserved id's upload, whatever `timeout_ms` asks.
const MAX_WAIT: Duration = Duration::from_secs(120);

fn expired(meta: &MediaMeta) -> bool {
    meta.sha256.is_none() && meta.expires_ms.is_some_and(|e| e <= now_ms())
}

fn media_key(server: &ServerName, media_id: &str) -> Vec<u8> {
    key::key(&[server.as_bytes(), media_id.as_bytes()])
}

pub fn cannot_overwrite() -> Error {
    Error::new(
        http::StatusCode::CONFLICT,
        "M_CANNOT_OVERWRITE_MEDIA",
        "This media id already has content",
    )
}

fn temp_error(e: std::io::Error) -> Error {
    Error::internal(format_args!("media: writing an upload's temp file: {e}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deletes expired remote cache entries and reserved ids, hourly, until shutdown.
pub async fn run_sweeper(services: Arc<crate::service::Services>) {
    let max_age_ms = services
        .config()
        .media
        .remote_max_age_s
        .map(|s| s.saturating_mul(1000));
    let mut shutdown = std::pin::pin!(services.shutdown_signal());
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(Duration::from_secs(60 * 60)) => {}
        }
        match services.media.sweep(max_age_ms).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("media: swept {n} expired items"),
            Err(e) => tracing::warn!("media: sweep failed: {e}"),
        }
        if let Err(e) = services.previews.sweep_cache() {
            tracing::warn!("media: URL preview cache sweep failed: {e}");
        }
    }
}
