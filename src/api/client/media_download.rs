//! Content repository, serving side: authenticated `/_matrix/client/v1/media/download` and
//! `thumbnail`, and the legacy unauthenticated `/_matrix/media/v3/...` forms while
//! `allow_legacy_media` is on. Files are streamed from storage (single byte ranges
//! honoured), with headers that keep a browser from running what it downloads.

// The legacy endpoints are deprecated by the spec, and served on purpose while configured.
#![allow(deprecated)]

use std::{future::Future, sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::State,
    response::{IntoResponse, Response},
    routing::{MethodFilter, on},
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use ruma::{
    ServerName,
    api::{
        IncomingRequest,
        client::{authenticated_media, media},
    },
    media::Method as RumaMethod,
};

use crate::{
    api::{
        router::{AppRouter, all_paths},
        ruma::{AuthKind, Ruma},
    },
    error::{Error, Result},
    service::{
        Services,
        media::thumbnail::{MAX_DIMENSION, Method},
    },
};

/// Registers a GET handler that also sees the request headers (for `Range`).
pub(crate) fn get<Req, F, Fut>(mut router: AppRouter, handler: F) -> AppRouter
where
    Req: IncomingRequest + Send + 'static,
    Req::Authentication: AuthKind,
    F: Fn(Arc<Services>, HeaderMap, Ruma<Req>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response>> + Send + 'static,
{
    let h = move |State(services): State<Arc<Services>>, headers: HeaderMap, request: Ruma<Req>| {
        let handler = handler.clone();
        async move { handler(services, headers, request).await.into_response() }
    };
    for path in all_paths::<Req>() {
        router = router.route(&path, on(MethodFilter::GET, h.clone()));
    }
    router
}

pub fn routes(router: AppRouter) -> AppRouter {
    let router = get(
        router,
        |s, h, r: Ruma<authenticated_media::get_content::v1::Request>| async move {
            let b = r.body;
            download(
                &s,
                &h,
                &b.server_name,
                &b.media_id,
                None,
                b.timeout_ms,
                Access::Authenticated,
            )
            .await
        },
    );
    let router = get(
        router,
        |s, h, r: Ruma<authenticated_media::get_content_as_filename::v1::Request>| async move {
            let b = r.body;
            download(
                &s,
                &h,
                &b.server_name,
                &b.media_id,
                Some(b.filename),
                b.timeout_ms,
                Access::Authenticated,
            )
            .await
        },
    );
    let router = get(
        router,
        |s, _h, r: Ruma<authenticated_media::get_content_thumbnail::v1::Request>| async move {
            let b = r.body;
            let size = (b.width, b.height);
            thumbnail(
                &s,
                &b.server_name,
                &b.media_id,
                size,
                b.method,
                b.timeout_ms,
                Access::Authenticated,
            )
            .await
        },
    );
    let router = get(
        router,
        |s, h, r: Ruma<media::get_content::v3::Request>| async move {
            let b = r.body;
            let access = Access::legacy(&s, b.allow_remote)?;
            download(
                &s,
                &h,
                &b.server_name,
                &b.media_id,
                None,
                b.timeout_ms,
                access,
            )
            .await
        },
    );
    let router = get(
        router,
        |s, h, r: Ruma<media::get_content_as_filename::v3::Request>| async move {
            let b = r.body;
            let access = Access::legacy(&s, b.allow_remote)?;
            download(
                &s,
                &h,
                &b.server_name,
                &b.media_id,
                Some(b.filename),
                b.timeout_ms,
                access,
            )
            .await
        },
    );
    get(
        router,
        |s, _h, r: Ruma<media::get_content_thumbnail::v3::Request>| async move {
            let b = r.body;
            let access = Access::legacy(&s, b.allow_remote)?;
            let size = (b.width, b.height);
            thumbnail(
                &s,
                &b.server_name,
                &b.media_id,
                size,
                b.method,
                b.timeout_ms,
                access,
            )
            .await
        },
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Authenticated,
    /// The unauthenticated endpoints; `allow_remote = false` keeps other servers' media out.
    Legacy {
        allow_remote: bool,
    },
}

impl Access {
    fn legacy(services: &Services, allow_remote: bool) -> Result<Self> {
        if !services.config().allow_legacy_media {
            return Err(Error::not_found("Legacy media endpoints are disabled"));
        }
        Ok(Self::Legacy { allow_remote })
    }

    fn check_server(self, services: &Services, server: &ServerName) -> Result<()> {
        if self
            == (Self::Legacy {
                allow_remote: false,
            })
            && server != services.globals.server_name()
        {
            return Err(Error::not_found("Remote media was not requested"));
        }
        Ok(())
    }

    /// Authenticated answers are for one user: no shared cache may keep them.
    fn cache_control(self) -> HeaderValue {
        match self {
            Self::Authenticated => HeaderValue::from_static("private, max-age=31536000, immutable"),
            Self::Legacy { .. } => HeaderValue::from_static("public, max-age=31536000, immutable"),
        }
    }
}

async fn download(
    services: &Services,
    headers: &HeaderMap,
    server: &ServerName,
    media_id: &str,
    filename: Option<String>,
    timeout: Duration,
    access: Access,
) -> Result<Response> {
    access.check_server(services, server)?;
    let content = services.media.content(server, media_id, timeout).await?;
    let range = match requested_range(headers, content.size) {
        RangeRequest::Whole => None,
        RangeRequest::Range(start, end) => Some((start, end)),
        RangeRequest::Unsatisfiable => {
            let mut response = Error::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "M_UNKNOWN",
                "The requested range is not satisfiable",
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", content.size)) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(response);
        }
    };
    let stream = services.media.read(&content.sha256, range).await?;
    let content_type = content
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let name = filename.or(content.filename);
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    set_content_headers(h, &content_type, name.as_deref(), access);
    match range {
        Some((start, end)) => {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let h = response.headers_mut();
            h.insert(header::CONTENT_LENGTH, (end - start).into());
            if let Ok(v) =
                HeaderValue::from_str(&format!("bytes {start}-{}/{}", end - 1, content.size))
            {
                h.insert(header::CONTENT_RANGE, v);
            }
        }
        None => {
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, content.size.into());
        }
    }
    Ok(response)
}

async fn thumbnail(
    services: &Services,
    server: &ServerName,
    media_id: &str,
    (width, height): (ruma::UInt, ruma::UInt),
    method: Option<RumaMethod>,
    timeout: Duration,
    access: Access,
) -> Result<Response> {
    access.check_server(services, server)?;
    let dimension = |v: ruma::UInt| {
        let v = u64::from(v);
        if v == 0 {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                "M_INVALID_PARAM",
                "width and height must be positive",
            ));
        }
        Ok(v.min(u64::from(MAX_DIMENSION)) as u32)
    };
    let (width, height) = (dimension(width)?, dimension(height)?);
    let method = match method {
        Some(RumaMethod::Crop) => Method::Crop,
        _ => Method::Scale,
    };
    let content = services.media.content(server, media_id, timeout).await?;
    let thumb = services
        .media
        .thumbnail(server, media_id, &content, width, height, method)
        .await?;
    let (sha256, size, content_type) = match thumb {
        Some(t) => (t.sha256, t.size, t.content_type),
        None => (
            content.sha256,
            content.size,
            content
                .content_type
                .unwrap_or_else(|| "application/octet-stream".to_owned()),
        ),
    };
    let stream = services.media.read(&sha256, None).await?;
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    set_content_headers(h, &content_type, None, access);
    h.insert(header::CONTENT_LENGTH, size.into());
    Ok(response)
}

fn set_content_headers(
    h: &mut HeaderMap,
    content_type: &str,
    filename: Option<&str>,
    access: Access,
) {
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type)
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream")),
    );
    if let Ok(v) = HeaderValue::from_str(&content_disposition(content_type, filename)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
             style-src 'unsafe-inline'; media-src 'self'; object-src 'self';",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    h.insert(header::CACHE_CONTROL, access.cache_control());
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
}

/// Types a browser may show in place without risk: images (except SVG, which can hold
/// script), video, audio and plain text. Everything else is an attachment.
pub fn is_inline_safe(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    (essence.starts_with("image/") && !essence.starts_with("image/svg"))
        || essence.starts_with("video/")
        || essence.starts_with("audio/")
        || essence == "text/plain"
}

/// `inline` or `attachment`, with the name as a quoted ASCII `filename` when it is plain
/// enough, else as RFC 5987 `filename*=utf-8''...` (RFC 6266).
pub fn content_disposition(content_type: &str, filename: Option<&str>) -> String {
    let kind = if is_inline_safe(content_type) {
        "inline"
    } else {
        "attachment"
    };
    let Some(name) = filename.filter(|n| !n.is_empty()) else {
        return kind.to_owned();
    };
    let plain = name
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    if plain {
        format!("{kind}; filename=\"{name}\"")
    } else {
        let mut encoded = String::new();
        for b in name.bytes() {
            // RFC 5987 attr-char.
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                encoded.push(b as char);
            } else {
                encoded.push_str(&format!("%{b:02X}"));
            }
        }
        format!("{kind}; filename*=utf-8''{encoded}")
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    Whole,
    /// Start inclusive, end exclusive.
    Range(u64, u64),
    Unsatisfiable,
}

/// A single `bytes=` range (RFC 9110 14.2). Several ranges or an unreadable header are
/// answered with the whole content, which the RFC allows.
pub fn requested_range(headers: &HeaderMap, size: u64) -> RangeRequest {
    let Some(spec) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // Suffix: the last N bytes.
        return match last.parse::<u64>() {
            Ok(0) => RangeRequest::Unsatisfiable,
            Ok(_) if size == 0 => RangeRequest::Unsatisfiable,
            Ok(n) => RangeRequest::Range(size.saturating_sub(n), size),
            Err(_) => RangeRequest::Whole,
        };
    }
    let Ok(start) = first.parse::<u64>() else {
        return RangeRequest::Whole;
    };
    let end = if last.is_empty() {
        size
    } else {
        match last.parse::<u64>() {
            Ok(l) if l >= start => l.saturating_add(1).min(size),
            _ => return RangeRequest::Whole,
        }
    };
    if start >= size {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Range(start, end)
}
