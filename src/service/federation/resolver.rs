//! Server discovery (spec: server-server API, "Resolving server names"): a server name
//! becomes the URL to send to, the `Host` header, and (for SRV records) the address to
//! connect to instead of the URL's host. Results are cached in memory.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use hickory_resolver::{TokioResolver, proto::rr::rdata::SRV};
use ruma::{OwnedServerName, ServerName};
use serde::Deserialize;

use crate::error::{Error, Result};

/// The spec's default federation port.
const DEFAULT_PORT: u16 = 8448;
/// How long a well-known answer is kept without `Cache-Control`, and the bounds put on the
/// peer's own `max-age` (Synapse's values).
const WELL_KNOWN_DEFAULT: Duration = Duration::from_secs(24 * 3600);
const WELL_KNOWN_MIN: Duration = Duration::from_secs(5 * 60);
const WELL_KNOWN_MAX: Duration = Duration::from_secs(48 * 3600);
/// A failed well-known lookup is retried after this long.
const WELL_KNOWN_ERROR: Duration = Duration::from_secs(3600);
/// A well-known document is a few bytes; more is not one.
const WELL_KNOWN_MAX_BYTES: usize = 64 * 1024;

/// Where and how to send a request to a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// `https://host:port`; `host` is the name the peer's certificate must be valid for.
    pub base_url: String,
    /// The `Host` header to send.
    pub host_header: String,
    /// From an SRV record: connect to this host and port instead of looking up the URL's
    /// host (the certificate and `Host` header stay those of the URL).
    pub connect_to: Option<(String, u16)>,
}

/// Connection targets of SRV-resolved names, read by the HTTP client's DNS hook.
#[derive(Default)]
pub(super) struct Overrides(RwLock<HashMap<String, (String, u16)>>);

pub struct Resolver {
    cache: Mutex<HashMap<OwnedServerName, (Destination, Instant)>>,
    overrides: Arc<Overrides>,
    dns: Option<TokioResolver>,
    well_known_client: reqwest::Client,
    well_known_port: Option<u16>,
}

#[derive(Deserialize)]
struct WellKnown {
    #[serde(rename = "m.server")]
    server: String,
}

impl Resolver {
    /// A resolver with its own well-known client; `allow_invalid_certs` as the config key
    /// `allow_invalid_tls_certificates`.
    pub fn new(well_known_timeout: Duration, allow_invalid_certs: bool) -> Result<Self> {
        let well_known_client = reqwest::Client::builder()
            .timeout(well_known_timeout)
            .connect_timeout(well_known_timeout)
            .danger_accept_invalid_certs(allow_invalid_certs)
            .redirect(reqwest::redirect::Policy::limited(10))
            .user_agent(concat!("conduit/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::internal)?;
        // Without a readable system DNS configuration SRV lookups are skipped (names still
        // resolve through the system resolver): better than asking a public resolver.
        let dns = match TokioResolver::builder_tokio() {
            Ok(builder) => Some(builder.build()),
            Err(e) => {
                tracing::warn!("no DNS configuration, SRV records are not used: {e}");
                None
            }
        };
        Ok(Self {
            cache: Mutex::default(),
            overrides: Arc::default(),
            dns,
            well_known_client,
            well_known_port: None,
        })
    }

    /// Tests only: fetch `/.well-known/matrix/server` from this port instead of 443.
    pub fn with_well_known_port(mut self, port: u16) -> Self {
        self.well_known_port = Some(port);
        self
    }

    pub(super) fn overrides(&self) -> Arc<Overrides> {
        Arc::clone(&self.overrides)
    }

    /// Forgets a cached resolution (after connection failures, say).
    pub fn forget(&self, server: &ServerName) {
        self.cache.lock().expect("cache lock").remove(server);
    }

    /// Resolves `server` as the spec's "Resolving server names" says; never fails: the last
    /// step is always `hostname:8448`.
    pub async fn resolve(&self, server: &ServerName) -> Destination {
        if let Some((destination, expires)) = self.cache.lock().expect("cache lock").get(server)
            && *expires > Instant::now()
        {
            return destination.clone();
        }
        let (destination, ttl) = self.resolve_uncached(server).await;
        if let Some((host, _)) = destination.base_url_host()
            && let Some(target) = &destination.connect_to
        {
            self.overrides
                .0
                .write()
                .expect("overrides lock")
                .insert(host, target.clone());
        }
        self.cache.lock().expect("cache lock").insert(
            server.to_owned(),
            (destination.clone(), Instant::now() + ttl),
        );
        destination
    }

    async fn resolve_uncached(&self, server: &ServerName) -> (Destination, Duration) {
        let (host, port) = split_port(server.as_str());
        // 1. IP literal, 2. hostname with an explicit port: no lookups.
        if host.parse::<IpAddr>().is_ok() || port.is_some() {
            return (
                direct(host, port.unwrap_or(DEFAULT_PORT), server.as_str()),
                WELL_KNOWN_DEFAULT,
            );
        }
        // 3. /.well-known/matrix/server.
        let (delegated, ttl) = match self.well_known(host).await {
            Ok((delegated, ttl)) => (Some(delegated), ttl),
            Err(e) => {
                tracing::debug!(%server, "no usable well-known: {e}");
                (None, WELL_KNOWN_ERROR)
            }
        };
        if let Some(delegated) = delegated {
            let (d_host, d_port) = split_port(&delegated);
            // 3.1 delegated IP literal, 3.2 delegated name with port.
            if d_host.parse::<IpAddr>().is_ok() || d_port.is_some() {
                return (
                    direct(d_host, d_port.unwrap_or(DEFAULT_PORT), &delegated),
                    ttl,
                );
            }
            // 3.3, 3.4 SRV of the delegated name, 3.5 delegated name on 8448.
            return (self.srv_or_default(d_host).await, ttl);
        }
        // 4., 5. SRV of the server name, 6. hostname:8448.
        (self.srv_or_default(host).await, ttl)
    }

    async fn srv_or_default(&self, host: &str) -> Destination {
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            if let Some((target, port)) = self.srv(&format!("{service}.{host}.")).await {
                return Destination {
                    base_url: format!("https://{host}:{port}"),
                    host_header: host.to_owned(),
                    connect_to: Some((target, port)),
                };
            }
        }
        Destination {
            base_url: format!("https://{host}:{DEFAULT_PORT}"),
            host_header: host.to_owned(),
            connect_to: None,
        }
    }

    /// The SRV target to use: lowest priority, then highest weight (no random choice: one
    /// stable target keeps connections pooled).
    async fn srv(&self, name: &str) -> Option<(String, u16)> {
        let lookup = self.dns.as_ref()?.srv_lookup(name).await.ok()?;
        let best: &SRV = lookup
            .iter()
            .min_by_key(|r| (r.priority(), std::cmp::Reverse(r.weight())))?;
        let target = best.target().to_utf8();
        let target = target.trim_end_matches('.');
        // "." means the service is explicitly not offered.
        (!target.is_empty()).then(|| (target.to_owned(), best.port()))
    }

    async fn well_known(&self, host: &str) -> Result<(String, Duration)> {
        let url = match self.well_known_port {
            Some(port) => format!("https://{host}:{port}/.well-known/matrix/server"),
            None => format!("https://{host}/.well-known/matrix/server"),
        };
        let mut response = self
            .well_known_client
            .get(&url)
            .send()
            .await
            .map_err(|e| Error::bad_gateway(format!("well-known: {e}")))?;
        if !response.status().is_success() {
            return Err(Error::bad_gateway(format!(
                "well-known: status {}",
                response.status()
            )));
        }
        let ttl = cache_period(response.headers());
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| Error::bad_gateway(format!("well-known: {e}")))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > WELL_KNOWN_MAX_BYTES {
                return Err(Error::bad_gateway("well-known: too large"));
            }
        }
        let document: WellKnown = serde_json::from_slice(&body)
            .map_err(|e| Error::bad_gateway(format!("well-known: {e}")))?;
        // The delegated name must itself be a valid server name.
        <&ServerName>::try_from(document.server.as_str())
            .map_err(|e| Error::bad_gateway(format!("well-known: m.server: {e}")))?;
        Ok((document.server, ttl))
    }
}

impl Destination {
    /// The URL's host and port.
    fn base_url_host(&self) -> Option<(String, u16)> {
        let rest = self.base_url.strip_prefix("https://")?;
        let (host, port) = rest.rsplit_once(':')?;
        Some((host.to_owned(), port.parse().ok()?))
    }
}

/// A destination reached at `host:port` directly; `host_header` is the (delegated) server
/// name as written, with its port if it had one.
fn direct(host: &str, port: u16, host_header: &str) -> Destination {
    Destination {
        base_url: format!("https://{host}:{port}"),
        host_header: host_header.to_owned(),
        connect_to: None,
    }
}

/// Splits `host[:port]`; IPv6 literals keep their brackets (`[::1]:8448`).
fn split_port(name: &str) -> (&str, Option<u16>) {
    if let Some(end) = name.rfind(']') {
        let port = name[end + 1..]
            .strip_prefix(':')
            .and_then(|p| p.parse().ok());
        return (&name[..=end], port);
    }
    match name.rsplit_once(':') {
        Some((host, port)) => match port.parse() {
            Ok(port) => (host, Some(port)),
            Err(_) => (name, None),
        },
        None => (name, None),
    }
}

/// How long to keep a well-known answer: its `Cache-Control: max-age`, within bounds.
fn cache_period(headers: &http::HeaderMap) -> Duration {
    let Some(value) = headers
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
    else {
        return WELL_KNOWN_DEFAULT;
    };
    let directives = value.split(',').map(str::trim);
    let mut max_age = None;
    for directive in directives {
        if directive.eq_ignore_ascii_case("no-store") || directive.eq_ignore_ascii_case("no-cache")
        {
            return WELL_KNOWN_MIN;
        }
        if let Some(seconds) = directive
            .strip_prefix("max-age=")
            .and_then(|s| s.parse::<u64>().ok())
        {
            max_age = Some(Duration::from_secs(seconds));
        }
    }
    max_age.map_or(WELL_KNOWN_DEFAULT, |age| {
        age.clamp(WELL_KNOWN_MIN, WELL_KNOWN_MAX)
    })
}

/// The HTTP client's DNS hook: SRV-resolved names connect to their target; every other
/// name goes to the system resolver.
impl reqwest::dns::Resolve for Overrides {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let target = self
            .0
            .read()
            .expect("overrides lock")
            .get(name.as_str())
            .cloned();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let (host, port) = target.unwrap_or((host, 0));
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}
