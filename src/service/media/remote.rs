//! Other servers' media: fetched once over federation (`/_matrix/federation/v1/media/
//! download`, falling back to the legacy unauthenticated `/_matrix/media/v3/download` for
//! servers without it), streamed to a temp file within the size limit and cached like a
//! local upload with `remote: true`, for the retention sweep to expire.
//!
//! The federation answer is `multipart/mixed`: a JSON metadata part, then either the
//! bytes or a part with a `Location` header to fetch them from. [`Multipart`] reads it
//! incrementally, so a big file never sits in memory.

use std::{
    net::IpAddr,
    sync::{Arc, Weak},
    time::Duration,
};

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http::{HeaderMap, StatusCode, header};
use ruma::{OwnedServerName, ServerName, api::federation::authenticated_media};

use super::{Content, MAX_WAIT, Media, MediaMeta};
use crate::{
    error::{Error, Result},
    service::globals::now_ms,
    service::net_policy::{AddressPolicy, NoAllowedAddress},
};

/// Longest metadata part or header block accepted before the file part.
const MAX_HEAD: usize = 64 * 1024;
/// Hops followed from a `Location` part.
const MAX_REDIRECTS: usize = 3;

/// One in-flight fetch per `(server, media id)`: later requests wait for it and then find
/// the media cached.
pub(super) type InFlight = std::sync::Mutex<
    std::collections::HashMap<(OwnedServerName, String), Weak<tokio::sync::Mutex<()>>>,
>;

impl Media {
    /// `mxc://server/media_id` of another server: from the cache, else fetched (at most
    /// `timeout` waited for), stored and served.
    pub(super) async fn fetch_remote(
        &self,
        server: &ServerName,
        media_id: &str,
        timeout: Duration,
    ) -> Result<Content> {
        if let Some(content) = self.cached_remote(server, media_id)? {
            return Ok(content);
        }
        if !self.federation.globals.config.allow_federation {
            return Err(Error::not_found("Media not found"));
        }
        let lock = self.in_flight_lock(server, media_id);
        let fetch = async {
            let _fetching = lock.lock().await;
            // Another request may have fetched it while this one waited.
            if let Some(content) = self.cached_remote(server, media_id)? {
                return Ok(content);
            }
            self.download_remote(server, media_id).await
        };
        match tokio::time::timeout(timeout.min(MAX_WAIT), fetch).await {
            Ok(result) => result,
            Err(_) => Err(Error::new(
                StatusCode::GATEWAY_TIMEOUT,
                "M_UNKNOWN",
                format!("{server} did not send the media in time"),
            )),
        }
    }

    fn cached_remote(&self, server: &ServerName, media_id: &str) -> Result<Option<Content>> {
        match self.get(server, media_id)? {
            Some(meta) if meta.quarantined => Err(Error::not_found("Media not found")),
            Some(MediaMeta {
                sha256: Some(sha256),
                size,
                content_type,
                filename,
                ..
            }) => Ok(Some(Content {
                sha256,
                size,
                content_type,
                filename,
            })),
            _ => Ok(None),
        }
    }

    fn in_flight_lock(&self, server: &ServerName, media_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, weak| weak.strong_count() > 0);
        let key = (server.to_owned(), media_id.to_owned());
        if let Some(lock) = map.get(&key).and_then(Weak::upgrade) {
            return lock;
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(key, Arc::downgrade(&lock));
        lock
    }

    async fn download_remote(&self, server: &ServerName, media_id: &str) -> Result<Content> {
        let request = authenticated_media::get_content::v1::Request::new(media_id.to_owned());
        let response = match self.federation.send_streaming(server, request).await {
            Ok(response) => response,
            // A server from before federation media (Synapse falls back the same way).
            Err(e) if e.errcode == "M_UNRECOGNIZED" => {
                return self.download_legacy(server, media_id).await;
            }
            Err(e) => return Err(not_found_or(e)),
        };
        let boundary = multipart_boundary(response.headers()).ok_or_else(|| {
            Error::bad_gateway(format!("{server}: media answer is not multipart/mixed"))
        })?;
        let mut parts = Multipart::new(Box::pin(body_stream(response)), &boundary);
        // The metadata part: `{}` today, read and ignored within a bound.
        parts.next_part().await?.ok_or_else(|| truncated(server))?;
        let mut metadata = Vec::new();
        while let Some(chunk) = parts.chunk().await? {
            metadata.extend_from_slice(&chunk);
            if metadata.len() > MAX_HEAD {
                return Err(Error::bad_gateway(format!("{server}: metadata too large")));
            }
        }
        let headers = parts.next_part().await?.ok_or_else(|| truncated(server))?;
        if let Some(location) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) {
            let location = location.to_owned();
            return self.download_location(server, media_id, &location).await;
        }
        let (content_type, filename) = describe(&headers);
        let body = futures::stream::unfold(parts, |mut parts| async move {
            match parts.chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), parts)),
                Ok(None) => None,
                Err(e) => Some((Err(e), parts)),
            }
        });
        self.store_fetched(server, media_id, content_type, filename, Box::pin(body))
            .await
    }

    async fn download_legacy(&self, server: &ServerName, media_id: &str) -> Result<Content> {
        let path = format!(
            "/_matrix/media/v3/download/{}/{}?allow_remote=false",
            url_segment(server.as_str()),
            url_segment(media_id)
        );
        let response = self
            .federation
            .get_streaming(server, &path)
            .await
            .map_err(not_found_or)?;
        let (content_type, filename) = describe(response.headers());
        self.store_fetched(
            server,
            media_id,
            content_type,
            filename,
            Box::pin(body_stream(response)),
        )
        .await
    }

    /// A `Location` part: a plain GET of that URL (no signature), never to an internal
    /// address, redirects followed by hand so each hop is checked.
    async fn download_location(
        &self,
        server: &ServerName,
        media_id: &str,
        location: &str,
    ) -> Result<Content> {
        let policy = AddressPolicy::default();
        let mut url = url::Url::parse(location)
            .map_err(|_| Error::bad_gateway(format!("{server}: invalid media location")))?;
        for _ in 0..=MAX_REDIRECTS {
            if !matches!(url.scheme(), "https" | "http") {
                return Err(Error::bad_gateway(format!(
                    "{server}: media location is not http(s)"
                )));
            }
            let literal = match url.host() {
                Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
                _ => None,
            };
            if literal.is_some_and(|ip| !policy.allows(ip)) {
                return Err(Error::bad_gateway(format!(
                    "{server}: media location is an internal address"
                )));
            }
            let response = self
                .redirect_client
                .get(url.clone())
                .send()
                .await
                .map_err(|e| {
                    if NoAllowedAddress::caused(&e) {
                        Error::bad_gateway(format!(
                            "{server}: media location is an internal address"
                        ))
                    } else {
                        Error::bad_gateway(format!("{server}: media location unreachable"))
                    }
                })?;
            let status = response.status();
            if status.is_redirection() {
                let next = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|l| url.join(l).ok())
                    .ok_or_else(|| Error::bad_gateway(format!("{server}: bad media redirect")))?;
                url = next;
                continue;
            }
            if status == StatusCode::NOT_FOUND {
                return Err(Error::not_found("Media not found"));
            }
            if !status.is_success() {
                return Err(Error::bad_gateway(format!(
                    "{server}: media location answered {status}"
                )));
            }
            let (content_type, filename) = describe(response.headers());
            return self
                .store_fetched(
                    server,
                    media_id,
                    content_type,
                    filename,
                    Box::pin(body_stream(response)),
                )
                .await;
        }
        Err(Error::bad_gateway(format!(
            "{server}: too many media redirects"
        )))
    }

    async fn store_fetched<S>(
        &self,
        server: &ServerName,
        media_id: &str,
        content_type: Option<String>,
        filename: Option<String>,
        body: S,
    ) -> Result<Content>
    where
        S: Stream<Item = Result<Bytes, Error>> + Unpin,
    {
        self.insert_remote_named(server, media_id, content_type, filename, now_ms(), body)
            .await?;
        self.cached_remote(server, media_id)?
            .ok_or_else(|| Error::not_found("Media not found"))
    }
}

/// A peer's 404 (whatever its errcode) is the client's `M_NOT_FOUND`; other failures keep
/// their status (502 for an unreachable peer).
fn not_found_or(e: Error) -> Error {
    if e.status == StatusCode::NOT_FOUND {
        Error::not_found("Media not found")
    } else {
        e
    }
}

fn truncated(server: &ServerName) -> Error {
    Error::bad_gateway(format!("{server}: media answer cut short"))
}

fn body_stream(response: reqwest::Response) -> impl Stream<Item = Result<Bytes, Error>> {
    response
        .bytes_stream()
        .map(|chunk| chunk.map_err(|e| Error::bad_gateway(format!("reading remote media: {e}"))))
}

fn url_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Content type and file name of a part or response.
fn describe(headers: &HeaderMap) -> (Option<String>, Option<String>) {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    let filename = headers
        .get(header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .and_then(disposition_filename);
    (content_type, filename)
}

/// The `filename*` (RFC 5987, UTF-8) or else `filename` parameter of a Content-Disposition.
pub fn disposition_filename(value: &str) -> Option<String> {
    let mut plain = None;
    for param in split_params(value).into_iter().skip(1) {
        let Some((name, v)) = param.split_once('=') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let v = v.trim();
        if name == "filename*" {
            let (charset, rest) = v.split_once('\'')?;
            let (_, encoded) = rest.split_once('\'')?;
            if charset.eq_ignore_ascii_case("utf-8") {
                let bytes = percent_decode(encoded)?;
                return String::from_utf8(bytes).ok().filter(|s| !s.is_empty());
            }
        } else if name == "filename" {
            plain = Some(unquote(v));
        }
    }
    plain.filter(|s| !s.is_empty())
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// `;`-separated parameters, semicolons inside quotes kept.
fn split_params(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            current.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => {
                current.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ';' if !quoted => out.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    out.push(current);
    out
}

fn unquote(v: &str) -> String {
    let Some(inner) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return v.to_owned();
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The boundary of a `multipart/mixed` Content-Type.
pub fn multipart_boundary(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let params = split_params(value);
    let essence = params.first()?.trim().to_ascii_lowercase();
    if essence != "multipart/mixed" {
        return None;
    }
    params.iter().skip(1).find_map(|p| {
        let (name, v) = p.split_once('=')?;
        (name.trim().eq_ignore_ascii_case("boundary"))
            .then(|| unquote(v.trim()))
            .filter(|b| !b.is_empty() && b.len() <= 70)
    })
}

/// An incremental `multipart/mixed` reader (RFC 2046 5.1): [`Multipart::next_part`] moves
/// to the next part and returns its headers, [`Multipart::chunk`] yields its body.
pub struct Multipart<S> {
    body: S,
    buf: BytesMut,
    /// `CRLF--boundary`: what ends a part's body.
    delimiter: Vec<u8>,
    /// Inside a part's body (false before the first part and after the last).
    in_body: bool,
    finished: bool,
    eof: bool,
}

impl<S> Multipart<S>
where
    S: Stream<Item = Result<Bytes, Error>> + Unpin,
{
    pub fn new(body: S, boundary: &str) -> Self {
        let mut buf = BytesMut::new();
        // The first delimiter may open the body without a CRLF before it.
        buf.extend_from_slice(b"\r\n");
        Self {
            body,
            buf,
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            in_body: false,
            finished: false,
            eof: false,
        }
    }

    async fn fill(&mut self) -> Result<bool> {
        if self.eof {
            return Ok(false);
        }
        match self.body.next().await {
            Some(chunk) => {
                self.buf.extend_from_slice(&chunk?);
                Ok(true)
            }
            None => {
                self.eof = true;
                Ok(false)
            }
        }
    }

    fn malformed(what: &str) -> Error {
        Error::bad_gateway(format!("malformed multipart media answer: {what}"))
    }

    /// The next piece of the current part's body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        if !self.in_body {
            return Ok(None);
        }
        loop {
            if let Some(pos) = find(&self.buf, &self.delimiter) {
                self.in_body = false;
                if pos == 0 {
                    return Ok(None);
                }
                return Ok(Some(self.buf.split_to(pos).freeze()));
            }
            // All but what could be the start of a delimiter is body.
            let keep = self.delimiter.len() - 1;
            if self.buf.len() > keep {
                let n = self.buf.len() - keep;
                return Ok(Some(self.buf.split_to(n).freeze()));
            }
            if !self.fill().await? {
                return Err(Self::malformed("body ends inside a part"));
            }
        }
    }

    /// Skips the rest of the current part and returns the next one's headers; `None`
    /// after the closing delimiter.
    pub async fn next_part(&mut self) -> Result<Option<HeaderMap>> {
        if self.finished {
            return Ok(None);
        }
        if self.in_body {
            while self.chunk().await?.is_some() {}
        } else {
            // Before the first part: skip the preamble up to the first delimiter.
            loop {
                if let Some(pos) = find(&self.buf, &self.delimiter) {
                    self.buf.advance(pos);
                    break;
                }
                if self.buf.len() > MAX_HEAD {
                    return Err(Self::malformed("no boundary"));
                }
                if !self.fill().await? {
                    return Err(Self::malformed("no boundary"));
                }
            }
        }
        // At the delimiter: then `--` (the end) or padding and CRLF.
        while self.buf.len() < self.delimiter.len() + 2 {
            if !self.fill().await? {
                return Err(Self::malformed("body ends at a boundary"));
            }
        }
        self.buf.advance(self.delimiter.len());
        if self.buf.starts_with(b"--") {
            self.finished = true;
            return Ok(None);
        }
        let headers_end = loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                break pos;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(Self::malformed("part headers too long"));
            }
            if !self.fill().await? {
                return Err(Self::malformed("body ends in part headers"));
            }
        };
        let block = self.buf.split_to(headers_end + 4);
        // The boundary line's end (and any padding) comes first; headers follow.
        let text = std::str::from_utf8(&block).map_err(|_| Self::malformed("headers"))?;
        let mut headers = HeaderMap::new();
        for line in text.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if let (Ok(name), Ok(value)) = (
                header::HeaderName::from_bytes(name.trim().as_bytes()),
                http::HeaderValue::from_str(value.trim()),
            ) {
                headers.append(name, value);
            }
        }
        self.in_body = true;
        Ok(Some(headers))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads every part of `body` delivered in pieces of `step` bytes.
    fn parts(body: &[u8], boundary: &str, step: usize) -> Result<Vec<(HeaderMap, Vec<u8>)>> {
        let chunks: Vec<Result<Bytes>> = body
            .chunks(step)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut reader = Multipart::new(futures::stream::iter(chunks), boundary);
        futures::executor::block_on(async {
            let mut out = Vec::new();
            while let Some(headers) = reader.next_part().await? {
                let mut data = Vec::new();
                while let Some(chunk) = reader.chunk().await? {
                    data.extend_from_slice(&chunk);
                }
                out.push((headers, data));
            }
            Ok(out)
        })
    }

    #[test]
    fn multipart_parts_are_found_whatever_the_chunking() {
        let body = b"preamble\r\n--xyz\r\nContent-Type: application/json\r\n\r\n{}\r\n--xyz  \r\n\
                     Content-Type: image/png\r\nContent-Disposition: inline; filename=\"a;b.png\"\r\n\r\n\
                     \r\n--xy not the end\r\n--xyz\r\n\r\n\r\n--xyz--\r\nepilogue";
        for step in [1, 2, 3, 7, 64, body.len()] {
            let parts = parts(body, "xyz", step).expect("parses");
            assert_eq!(parts.len(), 3, "step {step}");
            assert_eq!(parts[0].1, b"{}");
            assert_eq!(parts[1].0[header::CONTENT_TYPE], "image/png");
            assert_eq!(parts[1].1, b"\r\n--xy not the end");
            assert_eq!(describe(&parts[1].0).1.as_deref(), Some("a;b.png"));
            assert!(parts[2].0.is_empty());
            assert_eq!(parts[2].1, b"");
        }
        // No preamble: the first delimiter opens the body.
        let parts = parts(b"--b\r\n\r\nx\r\n--b--", "b", 1).expect("parses");
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].1, b"x");
    }

    #[test]
    fn truncated_multipart_is_an_error() {
        for body in [
            &b"--b\r\nContent-Type: text/plain\r\n\r\nhalf a fi"[..],
            b"--b\r\nContent-Type: text/pl",
            b"no boundary at all",
        ] {
            assert!(
                parts(body, "b", 3).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn boundaries_and_file_names_are_read_from_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "multipart/mixed; boundary=\"a b\"".parse().unwrap(),
        );
        assert_eq!(multipart_boundary(&headers).as_deref(), Some("a b"));
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert_eq!(multipart_boundary(&headers), None);
        assert_eq!(
            disposition_filename("attachment; filename=\"x.txt\"; filename*=utf-8''%C3%BC.txt")
                .as_deref(),
            Some("ü.txt")
        );
        assert_eq!(
            disposition_filename("inline; filename=plain.txt").as_deref(),
            Some("plain.txt")
        );
        assert_eq!(disposition_filename("inline"), None);
    }
}
