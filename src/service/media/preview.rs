//! URL previews (`/preview_url`): fetch a page a client names, answer its Open Graph data
//! with the image stored as local media, as Synapse does. The server makes these requests
//! for its users, so every hop (redirects included) is checked: http(s) only, the domain
//! lists, and the address policy of [`net_policy`] on literal addresses and, through the
//! client's resolver, on every address a name resolves to. Bodies are read up to
//! `url_preview_max_size` and the whole preview runs under `url_preview_timeout_s`.
//!
//! Table `url_previews`: URL as requested -> [`Cached`] (the answer and when it was made),
//! reused for an hour so repeated requests (every client in a room) do not refetch.

use std::{convert::Infallible, io::Cursor, net::IpAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::StreamExt;
use http::StatusCode;
use ruma::UserId;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::time::{Instant, timeout_at};
use url::{Host, Url};

use super::{Media, html_meta};
use crate::{
    config::Config,
    database::{Database, Table},
    error::{Error, Result},
    service::{
        globals::now_ms,
        net_policy::{AddressPolicy, FilteringResolver, NoAllowedAddress},
    },
};

/// How long a preview is served from the cache (Synapse: one hour).
const CACHE_MS: u64 = 60 * 60 * 1000;
const MAX_REDIRECTS: usize = 5;
/// Synapse drops tags with longer names or values.
const MAX_KEY_LEN: usize = 50;
const MAX_VALUE_LEN: usize = 1000;
/// Sites that serve Open Graph data only to crawlers recognise this.
const USER_AGENT: &str = "conduit (bot; URL preview)";

#[derive(Deserialize, Serialize)]
struct Cached {
    created_ms: u64,
    og: Map<String, Value>,
}

struct Fetched {
    url: Url,
    content_type: String,
    body: Bytes,
    filename: Option<String>,
}

pub struct Previews {
    enabled: bool,
    cache: Table,
    client: reqwest::Client,
    policy: Arc<AddressPolicy>,
    allow: Vec<String>,
    deny: Vec<String>,
    max_size: usize,
    timeout: Duration,
}

impl Previews {
    pub fn new(db: &Arc<Database>, config: &Config) -> Result<Self> {
        let policy = Arc::new(AddressPolicy::new(config.url_preview_ip_allowlist.clone()));
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(FilteringResolver(Arc::clone(&policy))))
            // Followed by hand, each hop checked.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment would resolve names itself, past the policy.
            .no_proxy()
            .user_agent(USER_AGENT)
            .build()
            .map_err(Error::internal)?;
        let lower = |list: &[String]| -> Vec<String> {
            list.iter()
                .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
                .collect()
        };
        Ok(Self {
            enabled: config.url_preview_enabled,
            cache: db.table("url_previews"),
            client,
            policy,
            allow: lower(&config.url_preview_domain_allowlist),
            deny: lower(&config.url_preview_domain_denylist),
            max_size: config.url_preview_max_size,
            timeout: Duration::from_secs(config.url_preview_timeout_s),
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The preview of `url`, from the cache when made within the hour.
    pub async fn preview(
        &self,
        media: &Media,
        user: &UserId,
        url: &str,
    ) -> Result<Map<String, Value>> {
        let parsed = Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| Error::invalid_param("url must be an absolute http or https URL"))?;
        // Refused before the cache: a domain denied since stays denied.
        self.check(&parsed)?;
        if let Some(cached) = self.cache.get_json::<Cached>(url)?
            && now_ms().saturating_sub(cached.created_ms) < CACHE_MS
        {
            return Ok(cached.og);
        }
        let deadline = Instant::now() + self.timeout;
        let og = self.build(media, user, parsed, deadline).await?;
        let cached = Cached {
            created_ms: now_ms(),
            og,
        };
        self.cache.put(url, serde_json::to_vec(&cached)?)?;
        Ok(cached.og)
    }

    /// Drops cached previews older than the cache time (from the media sweeper).
    pub fn sweep_cache(&self) -> Result<usize> {
        let now = now_ms();
        let expired: Vec<Box<[u8]>> = self
            .cache
            .scan_prefix(Vec::new())
            .filter(|(_, v)| {
                serde_json::from_slice::<Cached>(v)
                    .map_or(true, |c| now.saturating_sub(c.created_ms) >= CACHE_MS)
            })
            .map(|(k, _)| k)
            .collect();
        for key in &expired {
            self.cache.delete(key)?;
        }
        Ok(expired.len())
    }

    async fn build(
        &self,
        media: &Media,
        user: &UserId,
        url: Url,
        deadline: Instant,
    ) -> Result<Map<String, Value>> {
        let page = self.fetch(url, deadline).await?;
        let mut og = Map::new();
        if is_image(&page.content_type) {
            og.extend(self.store_image(media, user, page).await?);
            return Ok(og);
        }
        let html = String::from_utf8_lossy(&page.body);
        let meta = html_meta::scan(&html);
        for (key, value) in meta.og {
            if key.len() <= MAX_KEY_LEN && value.len() <= MAX_VALUE_LEN && !og.contains_key(&key) {
                og.insert(key, Value::String(value));
            }
        }
        let mut fallback = |key: &str, value: Option<String>| {
            if let Some(v) = value.filter(|v| v.len() <= MAX_VALUE_LEN)
                && !og.contains_key(key)
            {
                og.insert(key.to_owned(), Value::String(v));
            }
        };
        fallback("og:title", meta.title);
        fallback("og:description", meta.description);
        // Replaced by the stored copy, or dropped: a client must not fetch the original
        // itself (that would tell the site who reads the room).
        if let Some(Value::String(image)) = og.remove("og:image")
            && let Ok(image_url) = page.url.join(&image)
        {
            match self.fetch_image(media, user, image_url, deadline).await {
                Ok(fields) => og.extend(fields),
                Err(e) => tracing::debug!("preview: image of {} not stored: {e}", page.url),
            }
        }
        Ok(og)
    }

    async fn fetch_image(
        &self,
        media: &Media,
        user: &UserId,
        url: Url,
        deadline: Instant,
    ) -> Result<Map<String, Value>> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::invalid_param("not an http(s) image"));
        }
        let image = self.fetch(url, deadline).await?;
        if !is_image(&image.content_type) {
            return Err(fetch_error(StatusCode::BAD_GATEWAY, "not an image"));
        }
        self.store_image(media, user, image).await
    }

    /// Stores a fetched image as the user's media; its Open Graph fields.
    async fn store_image(
        &self,
        media: &Media,
        user: &UserId,
        image: Fetched,
    ) -> Result<Map<String, Value>> {
        let size = image.body.len();
        // Only the header is read: cheap whatever the image.
        let dimensions = image::ImageReader::new(Cursor::new(&image.body[..]))
            .with_guessed_format()
            .ok()
            .and_then(|r| r.into_dimensions().ok());
        let body = futures::stream::iter([Ok::<_, Infallible>(image.body)]);
        let media_id = media
            .upload(
                user,
                None,
                Some(image.content_type.clone()),
                image.filename,
                body,
            )
            .await?;
        let mut og = Map::new();
        og.insert(
            "og:image".into(),
            json!(format!("mxc://{}/{media_id}", media.server_name)),
        );
        og.insert("og:image:type".into(), json!(image.content_type));
        og.insert("matrix:image:size".into(), json!(size));
        if let Some((width, height)) = dimensions {
            og.insert("og:image:width".into(), json!(width));
            og.insert("og:image:height".into(), json!(height));
        }
        Ok(og)
    }

    /// Whether this hop may be fetched: the domain lists, and the address policy for a
    /// literal address (names are checked by the resolver).
    fn check(&self, url: &Url) -> Result<()> {
        let host = match url.host() {
            Some(Host::Domain(d)) => d.trim_end_matches('.').to_ascii_lowercase(),
            Some(Host::Ipv4(ip)) => ip.to_string(),
            Some(Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(Error::invalid_param("The URL has no host")),
        };
        let matches = |entry: &String| {
            entry == "*"
                || host == *entry
                || host
                    .strip_suffix(entry.as_str())
                    .is_some_and(|p| p.ends_with('.'))
        };
        if self.deny.iter().any(matches) || !self.allow.iter().any(matches) {
            return Err(Error::new(
                StatusCode::FORBIDDEN,
                "M_UNKNOWN",
                "URL blocked by url pattern blocklist entry",
            ));
        }
        let literal: Option<IpAddr> = match url.host() {
            Some(Host::Ipv4(ip)) => Some(ip.into()),
            Some(Host::Ipv6(ip)) => Some(ip.into()),
            _ => None,
        };
        if literal.is_some_and(|ip| !self.policy.allows(ip)) {
            return Err(Error::new(
                StatusCode::FORBIDDEN,
                "M_UNKNOWN",
                "IP address blocked",
            ));
        }
        Ok(())
    }

    /// GETs `url`, following up to [`MAX_REDIRECTS`] redirects (each checked), and reads
    /// an HTML or image body of at most `max_size` bytes.
    async fn fetch(&self, mut url: Url, deadline: Instant) -> Result<Fetched> {
        for _ in 0..=MAX_REDIRECTS {
            self.check(&url)?;
            let response = timeout_at(deadline, self.client.get(url.clone()).send())
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| request_error(&e))?;
            let status = response.status();
            if status.is_redirection()
                && let Some(location) = response.headers().get(http::header::LOCATION)
            {
                let next = location
                    .to_str()
                    .ok()
                    .and_then(|l| url.join(l).ok())
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| fetch_error(StatusCode::BAD_GATEWAY, "Bad redirect"))?;
                url = next;
                continue;
            }
            if !status.is_success() {
                return Err(fetch_error(
                    StatusCode::BAD_GATEWAY,
                    format!("Got error {}", status.as_u16()),
                ));
            }
            let content_type = response
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/octet-stream")
                .to_owned();
            if !is_html(&content_type) && !is_image(&content_type) {
                return Err(fetch_error(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "Requested file's content type not allowed for this operation: {content_type}"
                    ),
                ));
            }
            let filename = response
                .headers()
                .get(http::header::CONTENT_DISPOSITION)
                .and_then(|v| v.to_str().ok())
                .and_then(disposition_filename);
            if response
                .content_length()
                .is_some_and(|l| l > self.max_size as u64)
            {
                return Err(self.too_large());
            }
            let body = timeout_at(deadline, self.read_capped(response))
                .await
                .map_err(|_| timed_out())??;
            return Ok(Fetched {
                url,
                content_type,
                body,
                filename,
            });
        }
        Err(fetch_error(StatusCode::BAD_GATEWAY, "Too many redirects"))
    }

    /// The body, stopping (and failing) as soon as it passes `max_size`, declared length
    /// or not.
    async fn read_capped(&self, response: reqwest::Response) -> Result<Bytes> {
        let mut stream = response.bytes_stream();
        let mut body = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| request_error(&e))?;
            if body.len() + chunk.len() > self.max_size {
                return Err(self.too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.into())
    }

    fn too_large(&self) -> Error {
        Error::new(
            StatusCode::BAD_GATEWAY,
            "M_TOO_LARGE",
            format!("Requested file is too large > {} bytes", self.max_size),
        )
    }
}

fn is_html(content_type: &str) -> bool {
    let t = content_type.trim_start().to_ascii_lowercase();
    t.starts_with("text/html") || t.starts_with("application/xhtml")
}

fn is_image(content_type: &str) -> bool {
    content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("image/")
}

/// `filename="x"` or a bare `filename=x` from a `Content-Disposition`.
fn disposition_filename(header: &str) -> Option<String> {
    header.split(';').find_map(|part| {
        let value = part.trim().strip_prefix("filename=")?;
        let value = value.trim().trim_matches('"');
        (!value.is_empty()).then(|| value.to_owned())
    })
}

fn fetch_error(status: StatusCode, message: impl Into<String>) -> Error {
    Error::new(status, "M_UNKNOWN", message)
}

/// Synapse answers a download that fails for any other reason with 500.
fn timed_out() -> Error {
    fetch_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Failed to download content: timed out",
    )
}

fn request_error(e: &reqwest::Error) -> Error {
    if NoAllowedAddress::caused(e) {
        return fetch_error(
            StatusCode::BAD_GATEWAY,
            "DNS resolution failure during URL preview generation",
        );
    }
    fetch_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("Failed to download content: {}", without_url(e)),
    )
}

/// The error without the URL (which the client knows, and which may carry credentials in
/// its user info that have no place in a log or answer).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(&format!(" ({url})"), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
