//! Configuration: `conduit.toml` (section `[global]`, Conduit's key names) overridden by
//! `CONDUIT_<KEY>` environment variables. Every key has a default so an empty file works.

use std::{net::IpAddr, path::PathBuf};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use ruma::{OwnedServerName, RoomVersionId};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The server's name: the part after the colon in `@user:server_name`.
    #[serde(default = "default_server_name")]
    pub server_name: OwnedServerName,
    #[serde(default = "default_database_path")]
    pub database_path: PathBuf,
    /// Kept for Conduit compatibility; only `rocksdb` is supported.
    #[serde(default = "default_database_backend")]
    pub database_backend: String,
    /// RocksDB block cache, in MiB (Conduit's key). Memory grows into it only as data is read.
    #[serde(default = "default_db_cache_capacity_mb")]
    pub db_cache_capacity_mb: f64,
    #[serde(default = "default_address")]
    pub address: IpAddr,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Largest request body accepted, in bytes (`M_TOO_LARGE` above it).
    #[serde(default = "default_max_request_size")]
    pub max_request_size: usize,
    #[serde(default)]
    pub allow_registration: bool,
    /// When set, registration requires this token (`m.login.registration_token`), even when
    /// `allow_registration` is false: the way to create the first user.
    #[serde(default)]
    pub registration_token: Option<String>,
    #[serde(default = "default_true")]
    pub allow_federation: bool,
    #[serde(default = "default_trusted_servers")]
    pub trusted_servers: Vec<OwnedServerName>,
    #[serde(default = "default_room_version")]
    pub default_room_version: RoomVersionId,
    /// Allow users of this server to create rooms.
    #[serde(default = "default_true")]
    pub allow_room_creation: bool,
    /// Published at `/.well-known/matrix/client` as `m.homeserver.base_url`.
    #[serde(default)]
    pub well_known_client: Option<String>,
    /// Published at `/.well-known/matrix/server` as `m.server` (`host:port`).
    #[serde(default)]
    pub well_known_server: Option<String>,
    /// Log filter in `RUST_LOG` syntax; `RUST_LOG` wins when set.
    #[serde(default = "default_log")]
    pub log: String,
    /// Access tokens expire after this many milliseconds when the client asked for a refresh
    /// token; tokens of clients that did not ask never expire.
    #[serde(default = "default_access_token_lifetime_ms")]
    pub access_token_lifetime_ms: u64,
    #[serde(default)]
    pub rate_limits: RateLimits,
    /// First wait before retrying a destination that failed a transaction, in ms; it
    /// doubles with each failure in a row up to `federation_retry_max_ms`.
    #[serde(default = "default_federation_retry_base_ms")]
    pub federation_retry_base_ms: u64,
    #[serde(default = "default_federation_retry_max_ms")]
    pub federation_retry_max_ms: u64,
    /// Serve HTTPS directly (without a reverse proxy): `[global.tls]`.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Outgoing federation accepts any TLS certificate. Only for test setups with
    /// self-signed certificates: it lets anyone on the path impersonate other servers.
    #[serde(default)]
    pub allow_invalid_tls_certificates: bool,
    /// Time limit, in seconds, of one outgoing federation request (connecting, sending
    /// and reading the whole answer).
    #[serde(default = "default_federation_timeout")]
    pub federation_timeout: u64,
    /// Time limit, in seconds, of fetching a server's `/.well-known/matrix/server`.
    #[serde(default = "default_well_known_timeout")]
    pub well_known_timeout: u64,
    /// Presence (online, unavailable, offline; last active) for this server's users and
    /// from other servers (Conduit's key). Off: no presence in `/sync`, none sent or taken.
    #[serde(default = "default_true")]
    pub allow_local_presence: bool,
    /// Seconds without activity after which an online user becomes `unavailable`.
    #[serde(default = "default_presence_idle_timeout_s")]
    pub presence_idle_timeout_s: u64,
    /// Seconds without activity after which a user becomes `offline`.
    #[serde(default = "default_presence_offline_timeout_s")]
    pub presence_offline_timeout_s: u64,
    /// Seconds after which the presence of a local user who is not offline is sent again
    /// to the servers sharing a room with them, though it did not change (Synapse: 25
    /// minutes), so that they do not time it out.
    #[serde(default = "default_presence_federation_ping_s")]
    pub presence_federation_ping_s: u64,
    /// Seconds without word of another server's user (a change or a ping) after which they
    /// count as offline here (Synapse: 30 minutes): their server may be gone.
    #[serde(default = "default_presence_remote_timeout_s")]
    pub presence_remote_timeout_s: u64,
    /// Address ranges (CIDR) push gateways may be reached at although they are loopback,
    /// private, link-local or otherwise internal; by default only public addresses are.
    #[serde(default)]
    pub push_gateway_allowed_ranges: Vec<crate::service::net_policy::IpRange>,
    /// Serve the unauthenticated `/_matrix/media/v3/download|thumbnail|config` endpoints
    /// beside the authenticated `/_matrix/client/v1/media/...` ones (conduwuit's key).
    #[serde(default = "default_true")]
    pub allow_legacy_media: bool,
    /// Index messages and serve `POST /search` (Synapse's key). Off, nothing is indexed and
    /// searches answer `400 M_UNKNOWN`; turned on again, the index catches up on what was
    /// stored meanwhile.
    #[serde(default = "default_true")]
    pub enable_search: bool,
    /// Serve URL previews (`/preview_url`). Off, the endpoints answer as unknown ones, as
    /// Synapse's do.
    #[serde(default)]
    pub url_preview_enabled: bool,
    /// Domains that may be previewed: an entry matches the name and its subdomains, `*`
    /// matches any.
    #[serde(default = "default_url_preview_domain_allowlist")]
    pub url_preview_domain_allowlist: Vec<String>,
    /// Domains never previewed (and their subdomains); wins over the allowlist.
    #[serde(default)]
    pub url_preview_domain_denylist: Vec<String>,
    /// Largest page or image fetched for a preview, in bytes.
    #[serde(default = "default_url_preview_max_size")]
    pub url_preview_max_size: usize,
    /// Time limit of one preview (every redirect, the page and its image), in seconds.
    #[serde(default = "default_url_preview_timeout_s")]
    pub url_preview_timeout_s: u64,
    /// Address ranges (CIDR) previews may fetch from although internal (loopback, private,
    /// link-local, ...); by default only public addresses (Synapse's
    /// `url_preview_ip_range_whitelist`).
    #[serde(default)]
    pub url_preview_ip_allowlist: Vec<crate::service::net_policy::IpRange>,
    /// `[global.media]`: where uploads are stored and how long things are kept.
    #[serde(default)]
    pub media: MediaConfig,
}

/// `[global.media]`. The upload size limit is `max_request_size`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// `filesystem` (files under `path`) or `s3` (objects in `[global.media.s3]`).
    #[serde(default)]
    pub backend: MediaBackend,
    /// Directory of the filesystem backend and of temporary upload files (both backends);
    /// default `<database_path>/media`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Media ids reserved with `POST /_matrix/media/v1/create` and not uploaded to expire
    /// after this many seconds (Synapse: 24 hours).
    #[serde(default = "default_unused_expiration_s")]
    pub unused_expiration_s: u64,
    /// Reserved, not yet uploaded media ids a user may hold at once (Synapse: 5).
    #[serde(default = "default_max_pending_uploads")]
    pub max_pending_uploads: usize,
    /// Cached media of other servers is deleted this many seconds after it was fetched;
    /// unset: kept forever.
    #[serde(default)]
    pub remote_max_age_s: Option<u64>,
    #[serde(default)]
    pub s3: Option<S3Config>,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            backend: MediaBackend::default(),
            path: None,
            unused_expiration_s: default_unused_expiration_s(),
            max_pending_uploads: default_max_pending_uploads(),
            remote_max_age_s: None,
            s3: None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MediaBackend {
    #[default]
    Filesystem,
    S3,
}

/// `[global.media.s3]`: an S3-compatible bucket.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// e.g. `https://s3.eu-west-1.amazonaws.com` or `http://127.0.0.1:9000`.
    pub endpoint: url::Url,
    pub bucket: String,
    #[serde(default = "default_s3_region")]
    pub region: String,
    /// `endpoint/bucket/key` instead of `bucket.endpoint/key` (MinIO, most self-hosted
    /// servers).
    #[serde(default)]
    pub path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// The secret stays out of logs and debug output.
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint.as_str())
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// `[global.tls]`: certificate and key in PEM files (Conduit's key names).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub certs: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Also accept plain HTTP on the TLS port, told apart by the first byte of the
    /// connection (a TLS handshake starts with 0x16).
    #[serde(default)]
    pub dual_protocol: bool,
}

/// Token-bucket limits, per user (or per IP address before login).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// Turn every limit off (test and benchmark setups).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Sustained requests per second to rate-limited endpoints (send, join, login, register).
    #[serde(default = "default_per_second")]
    pub per_second: f64,
    /// Requests that may be made at once before the sustained rate applies.
    #[serde(default = "default_burst")]
    pub burst: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            enabled: true,
            per_second: default_per_second(),
            burst: default_burst(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_server_name() -> OwnedServerName {
    "localhost".try_into().expect("valid server name")
}
fn default_database_path() -> PathBuf {
    PathBuf::from("./conduit-db")
}
fn default_database_backend() -> String {
    "rocksdb".to_owned()
}
/// Small on purpose: measured, a 32 MiB cache bought no speed in the benchmarks and cost
/// 25 MiB of memory; large deployments raise it.
fn default_db_cache_capacity_mb() -> f64 {
    8.0
}
fn default_address() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}
fn default_port() -> u16 {
    6167
}
fn default_max_request_size() -> usize {
    20 * 1024 * 1024
}
fn default_trusted_servers() -> Vec<OwnedServerName> {
    vec!["matrix.org".try_into().expect("valid server name")]
}
fn default_room_version() -> RoomVersionId {
    RoomVersionId::V12
}
fn default_log() -> String {
    "info,ruma_state_res=warn".to_owned()
}
fn default_access_token_lifetime_ms() -> u64 {
    24 * 60 * 60 * 1000
}
fn default_federation_timeout() -> u64 {
    30
}
fn default_well_known_timeout() -> u64 {
    10
}
fn default_presence_idle_timeout_s() -> u64 {
    5 * 60
}
fn default_presence_federation_ping_s() -> u64 {
    25 * 60
}
fn default_presence_remote_timeout_s() -> u64 {
    30 * 60
}
fn default_presence_offline_timeout_s() -> u64 {
    30 * 60
}
fn default_url_preview_domain_allowlist() -> Vec<String> {
    vec!["*".to_owned()]
}
fn default_url_preview_max_size() -> usize {
    10 * 1024 * 1024
}
fn default_url_preview_timeout_s() -> u64 {
    10
}
fn default_unused_expiration_s() -> u64 {
    24 * 60 * 60
}
fn default_max_pending_uploads() -> usize {
    5
}
fn default_s3_region() -> String {
    "us-east-1".to_owned()
}
fn default_per_second() -> f64 {
    10.0
}
fn default_burst() -> u32 {
    50
}
fn default_federation_retry_base_ms() -> u64 {
    5_000
}
fn default_federation_retry_max_ms() -> u64 {
    60 * 60 * 1000
}

impl Config {
    /// Reads the file (if given or present as `conduit.toml`) and the environment.
    pub fn load(path: Option<&std::path::Path>) -> Result<Self, figment::Error> {
        let path = path
            .map(ToOwned::to_owned)
            .or_else(|| std::env::var_os("CONDUIT_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("conduit.toml"));
        Figment::new()
            .merge(Toml::file(path).nested())
            // `CONDUIT_SERVER_NAME` sets `global.server_name`, `CONDUIT_RATE_LIMITS` takes a
            // TOML table, as in Conduit.
            .merge(Env::prefixed("CONDUIT_").ignore(&["CONFIG"]).global())
            .select("global")
            .extract()
    }

    /// A configuration with every default, for tests and tools.
    pub fn with_defaults(server_name: &str, database_path: PathBuf) -> Self {
        let mut config: Config = Figment::new()
            .select("global")
            .extract()
            .expect("defaults are valid");
        config.server_name = server_name.try_into().expect("valid server name");
        config.database_path = database_path;
        config
    }
}
