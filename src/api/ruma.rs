//! The one extractor every Matrix endpoint uses: it bounds and reads the body, finds the
//! caller from the access token, applies the rate limit and parses the ruma request type.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    body::Body,
    extract::{ConnectInfo, FromRequest, Path},
    response::{IntoResponse, Response},
};
use bytes::BytesMut;
use http::{Request, header};
use ruma::{
    OwnedDeviceId, OwnedUserId,
    api::{
        IncomingRequest, IncomingRequestExt, OutgoingResponse, OutgoingResponseExt,
        auth_scheme::{
            AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional,
            NoAccessToken, NoAuthentication,
        },
        error::{DeserializationError, FromHttpRequestError},
        path_builder::PathBuilder,
    },
};

use crate::{
    error::{Error, Result},
    service::{Services, users::TokenLookup},
};

/// How an endpoint authenticates its caller, read off ruma's auth scheme type.
pub trait AuthKind {
    const REQUIRED: bool;
    const ACCEPTS_TOKEN: bool = true;
    /// A federation endpoint: the caller is a server proven by its `X-Matrix` signature.
    const SERVER_SIGNATURES: bool = false;
}
impl AuthKind for AccessToken {
    const REQUIRED: bool = true;
}
impl AuthKind for AccessTokenOptional {
    const REQUIRED: bool = false;
}
impl AuthKind for AppserviceToken {
    const REQUIRED: bool = true;
}
impl AuthKind for AppserviceTokenOptional {
    const REQUIRED: bool = false;
}
impl AuthKind for NoAuthentication {
    const REQUIRED: bool = false;
    const ACCEPTS_TOKEN: bool = false;
}
impl AuthKind for NoAccessToken {
    const REQUIRED: bool = false;
    const ACCEPTS_TOKEN: bool = false;
}
impl AuthKind for ruma::api::federation::authentication::ServerSignatures {
    const REQUIRED: bool = true;
    const ACCEPTS_TOKEN: bool = false;
    const SERVER_SIGNATURES: bool = true;
}

/// A parsed request with its authenticated sender.
pub struct Ruma<T> {
    pub body: T,
    pub sender_user: Option<OwnedUserId>,
    pub sender_device: Option<OwnedDeviceId>,
    /// The body as sent (already checked to be JSON), for `json_body`.
    raw_body: bytes::Bytes,
    pub client_ip: Option<String>,
    /// The requesting server of a federation endpoint, from its verified `X-Matrix` header.
    pub origin: Option<ruma::OwnedServerName>,
}

impl<T> Ruma<T> {
    /// The sender of an endpoint that requires authentication.
    pub fn user(&self) -> &ruma::UserId {
        self.sender_user.as_deref().expect("authenticated endpoint")
    }

    /// The verified origin of a federation request.
    pub fn origin(&self) -> &ruma::ServerName {
        self.origin.as_deref().expect("federation endpoint")
    }

    pub fn device(&self) -> &ruma::DeviceId {
        self.sender_device
            .as_deref()
            .expect("authenticated endpoint")
    }

    /// The body as a JSON tree, for the few endpoints that read fields ruma does not model.
    /// Parsed on demand: the send path never pays for it.
    pub fn json_body(&self) -> Option<serde_json::Value> {
        if self.raw_body.is_empty() {
            return None;
        }
        serde_json::from_slice(&self.raw_body).ok()
    }
}

fn access_token(request: &http::request::Parts) -> Option<String> {
    if let Some(value) = request.headers.get(header::AUTHORIZATION)
        && let Ok(value) = value.to_str()
        && let Some(token) = value.strip_prefix("Bearer ")
    {
        return Some(token.trim().to_owned());
    }
    let query = request.uri.query()?;
    form_urlencoded_get(query, "access_token")
}

pub(crate) fn form_urlencoded_get(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The caller of an endpoint that reads its own body (uploads stream it, so they cannot
/// use [`Ruma`]): the access token's owner, with the same checks and rate limit.
pub(crate) fn authenticate(
    services: &Services,
    parts: &http::request::Parts,
    rate_limited: bool,
) -> Result<(OwnedUserId, OwnedDeviceId)> {
    let client_ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string());
    let token = access_token(parts).ok_or_else(|| Error::missing_token("Missing access token"))?;
    match services.users.find_token(&token)? {
        TokenLookup::Valid(user, device) => {
            services.users.touch_device(&user, &device, client_ip)?;
            if rate_limited {
                services.ratelimit.check(user.as_str())?;
            }
            Ok((user, device))
        }
        TokenLookup::Expired => Err(Error::unknown_token(true)),
        TokenLookup::Unknown => Err(Error::unknown_token(false)),
    }
}

/// Whether the body has an `"auth"` key anywhere: only then is the tree worth building.
fn mentions_auth(body: &[u8]) -> bool {
    body.windows(6).any(|w| w == b"\"auth\"")
}

/// Endpoints that create events or accounts are limited even where ruma's metadata says
/// otherwise (Synapse limits message sending too).
fn rate_limited_path(path: &str) -> bool {
    [
        "/send/",
        "/state/",
        "/redact/",
        "/createRoom",
        "/join",
        "/invite",
        "/knock/",
        "/register",
        "/login",
    ]
    .iter()
    .any(|p| path.contains(p))
        && !path.ends_with("/joined_rooms")
        && !path.ends_with("/joined_members")
}

pub fn map_parse_error(e: FromHttpRequestError) -> Error {
    match e {
        FromHttpRequestError::Deserialization(DeserializationError::Json(e)) => {
            Error::bad_json(format!("Invalid request body: {e}"))
        }
        FromHttpRequestError::Deserialization(DeserializationError::Ident(e)) => {
            Error::invalid_param(format!("Invalid identifier: {e}"))
        }
        FromHttpRequestError::Deserialization(DeserializationError::Query(e)) => {
            Error::invalid_param(format!("Invalid query parameter: {e}"))
        }
        other => Error::bad_json(format!("Invalid request: {other}")),
    }
}

impl<T> FromRequest<Arc<Services>> for Ruma<T>
where
    T: IncomingRequest + Send + 'static,
    T::Authentication: AuthKind,
{
    type Rejection = Error;

    async fn from_request(request: Request<Body>, services: &Arc<Services>) -> Result<Self> {
        let (mut parts, body) = request.into_parts();
        let limit = services.config().max_request_size;
        if let Some(len) = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            && len > limit
        {
            return Err(Error::too_large("Request body is too large"));
        }
        let bytes = axum::body::to_bytes(body, limit)
            .await
            .map_err(|_| Error::too_large("Request body is too large"))?;

        let mut path_args: Vec<String> = {
            use axum::extract::FromRequestParts;
            match Path::<Vec<String>>::from_request_parts(&mut parts, services).await {
                Ok(Path(args)) => args,
                Err(_) => vec![],
            }
        };
        // `/state/{type}` without a state key: the key is empty.
        let wanted = T::PATH_BUILDER._path_parameters().len();
        while path_args.len() < wanted {
            path_args.push(String::new());
        }
        let client_ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string());

        let (sender_user, sender_device) = if <T::Authentication as AuthKind>::ACCEPTS_TOKEN {
            match access_token(&parts) {
                Some(token) => match services.users.find_token(&token)? {
                    TokenLookup::Valid(user, device) => {
                        // Deactivation removes every device, so a valid token means an
                        // active account.
                        services
                            .users
                            .touch_device(&user, &device, client_ip.clone())?;
                        (Some(user), Some(device))
                    }
                    TokenLookup::Expired => return Err(Error::unknown_token(true)),
                    TokenLookup::Unknown => return Err(Error::unknown_token(false)),
                },
                None if <T::Authentication as AuthKind>::REQUIRED => {
                    return Err(Error::missing_token("Missing access token"));
                }
                None => (None, None),
            }
        } else {
            (None, None)
        };

        let origin = if <T::Authentication as AuthKind>::SERVER_SIGNATURES {
            Some(verify_x_matrix(services, &parts, &bytes).await?)
        } else {
            None
        };

        // Servers are not limited per request: their traffic is many users' (Synapse does
        // the same); federation paths contain `/send/`, `/invite` and `/join` too.
        let server_server = parts.uri.path().starts_with("/_matrix/federation/")
            || parts.uri.path().starts_with("/_matrix/key/");
        // Media reads are not counted per request: a client opening a room fetches dozens
        // of thumbnails at once (Synapse limits them by bytes, and only remote ones).
        let media_read = parts.method == http::Method::GET
            && (parts.uri.path().contains("/media/download/")
                || parts.uri.path().contains("/media/thumbnail/"));
        if !server_server && !media_read && (T::RATE_LIMITED || rate_limited_path(parts.uri.path()))
        {
            let key = sender_user
                .as_ref()
                .map(ToString::to_string)
                .or_else(|| client_ip.clone())
                .unwrap_or_default();
            services.ratelimit.check(&key)?;
        }

        // Syntax and object checks scan the body without building a tree.
        let mut raw_body = bytes;
        if !raw_body.is_empty() {
            let is_json_endpoint = !parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| {
                    !v.starts_with("application/json") && !v.starts_with("text/plain")
                });
            match serde_json::from_slice::<&serde_json::value::RawValue>(&raw_body) {
                Ok(raw) if !raw.get().starts_with('{') && parts.method != http::Method::GET => {
                    return Err(Error::bad_json("Request body must be a JSON object"));
                }
                Ok(_) => {}
                Err(_) if is_json_endpoint => {
                    return Err(Error::not_json("Request body is not valid JSON"));
                }
                Err(_) => raw_body = bytes::Bytes::new(),
            }
        }

        // An `auth` object with neither `type` nor `session` authenticates nothing (matrix-nio
        // opens token registration with `{"initial_device_display_name": ...}`): treat it
        // as absent, so the client gets the 401 challenge, as from Synapse, instead of
        // ruma's 400 for a missing `session`.
        if mentions_auth(&raw_body)
            && let Ok(serde_json::Value::Object(mut map)) = serde_json::from_slice(&raw_body)
            && map
                .get("auth")
                .and_then(serde_json::Value::as_object)
                .is_some_and(|auth| !auth.contains_key("type") && !auth.contains_key("session"))
        {
            map.remove("auth");
            raw_body = serde_json::to_vec(&map).map_err(Error::internal)?.into();
        }

        // ruma reads an empty body as no fields; give it `{}` so optional-only bodies parse.
        let body_bytes: &[u8] = if raw_body.is_empty() {
            b"{}"
        } else {
            &raw_body
        };
        let http_request = Request::from_parts(parts, body_bytes);
        let path_refs: Vec<&str> = path_args.iter().map(String::as_str).collect();
        let body = T::try_from_http_request(http_request, &path_refs).map_err(map_parse_error)?;
        Ok(Ruma {
            body,
            sender_user,
            sender_device,
            raw_body,
            client_ip,
            origin,
        })
    }
}

/// The `X-Matrix` check of a federation request: the signed origin, or 401 (403 while
/// federation is off). The signature covers the method, the path and query as sent, and
/// the body bytes as received.
async fn verify_x_matrix(
    services: &Services,
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<ruma::OwnedServerName> {
    use ruma::api::federation::authentication::XMatrix;

    if !services.config().allow_federation {
        return Err(Error::forbidden("Federation is disabled on this server"));
    }
    let xmatrix = XMatrix::extract_from_http_headers(&parts.headers).map_err(|e| {
        Error::unauthorized(format!("Missing or invalid X-Matrix authorization: {e}"))
    })?;
    let request = Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone())
        .body(body)
        .map_err(Error::internal)?;
    services
        .federation
        .verify_request(&xmatrix, &request)
        .await?;
    Ok(xmatrix.origin)
}

/// Wraps a ruma response type so axum can send it.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<BytesMut>() {
            Ok(response) => response.map(|b| Body::from(b.freeze())),
            Err(e) => Error::internal(format_args!("response serialisation: {e}")).into_response(),
        }
    }
}
