//! One error type for every request: it carries the Matrix `errcode`, the HTTP status and
//! the text a client can act on. Internal failures are logged and reported as `M_UNKNOWN`.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Value, json};

#[derive(Debug)]
pub struct Error {
    pub status: StatusCode,
    pub errcode: &'static str,
    pub message: String,
    /// Fields merged into the error body (`soft_logout`, `retry_after_ms`, UIA state ...).
    pub extra: Option<serde_json::Map<String, Value>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

macro_rules! kinds {
    ($($fn:ident => $status:ident, $code:literal;)*) => {
        impl Error {
            $(
                pub fn $fn(message: impl Into<String>) -> Self {
                    Self::new(StatusCode::$status, $code, message)
                }
            )*
        }
    };
}

kinds! {
    forbidden => FORBIDDEN, "M_FORBIDDEN";
    bad_json => BAD_REQUEST, "M_BAD_JSON";
    not_json => BAD_REQUEST, "M_NOT_JSON";
    invalid_param => BAD_REQUEST, "M_INVALID_PARAM";
    missing_param => BAD_REQUEST, "M_MISSING_PARAM";
    not_found => NOT_FOUND, "M_NOT_FOUND";
    too_large => PAYLOAD_TOO_LARGE, "M_TOO_LARGE";
    missing_token => UNAUTHORIZED, "M_MISSING_TOKEN";
    user_in_use => BAD_REQUEST, "M_USER_IN_USE";
    invalid_username => BAD_REQUEST, "M_INVALID_USERNAME";
    exclusive => BAD_REQUEST, "M_EXCLUSIVE";
    unrecognized => NOT_FOUND, "M_UNRECOGNIZED";
    unsupported_room_version => BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION";
    room_in_use => BAD_REQUEST, "M_ROOM_IN_USE";
    invalid_room_state => BAD_REQUEST, "M_INVALID_ROOM_STATE";
    bad_state => BAD_REQUEST, "M_BAD_STATE";
    guest_access_forbidden => FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN";
    user_deactivated => FORBIDDEN, "M_USER_DEACTIVATED";
    bad_alias => BAD_REQUEST, "M_BAD_ALIAS";
    unknown => INTERNAL_SERVER_ERROR, "M_UNKNOWN";
    incompatible_room_version => BAD_REQUEST, "M_INCOMPATIBLE_ROOM_VERSION";
    unable_to_authorise_join => BAD_REQUEST, "M_UNABLE_TO_AUTHORISE_JOIN";
}

/// The errcodes of the client-server and server-server specs, for [`Error::remote`].
const KNOWN_ERRCODES: &[&str] = &[
    "M_FORBIDDEN",
    "M_UNKNOWN_TOKEN",
    "M_MISSING_TOKEN",
    "M_USER_LOCKED",
    "M_USER_SUSPENDED",
    "M_BAD_JSON",
    "M_NOT_JSON",
    "M_NOT_FOUND",
    "M_LIMIT_EXCEEDED",
    "M_UNRECOGNIZED",
    "M_UNKNOWN",
    "M_UNAUTHORIZED",
    "M_USER_DEACTIVATED",
    "M_USER_IN_USE",
    "M_INVALID_USERNAME",
    "M_ROOM_IN_USE",
    "M_INVALID_ROOM_STATE",
    "M_THREEPID_IN_USE",
    "M_THREEPID_NOT_FOUND",
    "M_THREEPID_AUTH_FAILED",
    "M_THREEPID_DENIED",
    "M_SERVER_NOT_TRUSTED",
    "M_UNSUPPORTED_ROOM_VERSION",
    "M_INCOMPATIBLE_ROOM_VERSION",
    "M_BAD_STATE",
    "M_GUEST_ACCESS_FORBIDDEN",
    "M_CAPTCHA_NEEDED",
    "M_CAPTCHA_INVALID",
    "M_MISSING_PARAM",
    "M_INVALID_PARAM",
    "M_TOO_LARGE",
    "M_EXCLUSIVE",
    "M_RESOURCE_LIMIT_EXCEEDED",
    "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM",
    "M_THREEPID_MEDIUM_NOT_SUPPORTED",
    "M_BAD_ALIAS",
    "M_UNABLE_TO_AUTHORISE_JOIN",
    "M_UNABLE_TO_GRANT_JOIN",
    "M_WRONG_ROOM_KEYS_VERSION",
];

impl Error {
    pub fn new(status: StatusCode, errcode: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            errcode,
            message: message.into(),
            extra: None,
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra
            .get_or_insert_with(Default::default)
            .insert(key.to_owned(), value);
        self
    }

    pub fn unknown_token(soft_logout: bool) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
            "Unknown or expired access token",
        )
        .with("soft_logout", json!(soft_logout))
    }

    pub fn limit_exceeded(retry_after_ms: u64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "M_LIMIT_EXCEEDED",
            "Too many requests",
        )
        .with("retry_after_ms", json!(retry_after_ms))
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED", message)
    }

    /// An error another server answered with, kept with its status and errcode. The
    /// errcode is one of the spec's (unknown ones become `M_UNKNOWN`, their name kept in the
    /// message) so a peer cannot make us relay arbitrary codes.
    pub fn remote(status: StatusCode, errcode: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        match KNOWN_ERRCODES.iter().find(|known| **known == errcode) {
            Some(known) => Self::new(status, known, message),
            None => Self::new(status, "M_UNKNOWN", format!("{errcode}: {message}")),
        }
    }

    /// Another server could not be reached or gave no usable answer (502).
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "M_UNKNOWN", message)
    }

    /// A user-interactive authentication challenge: 401 with the flows and session.
    pub fn uiaa(body: serde_json::Map<String, Value>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            errcode: "",
            message: String::new(),
            extra: Some(body),
        }
    }

    /// Logs the real cause; the client only learns that something went wrong inside.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {cause}");
        Self::unknown("Internal server error")
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.errcode, self.message)
    }
}

impl std::error::Error for Error {}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Self::internal(format_args!("database: {e}"))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self::internal(format_args!("json: {e}"))
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let retry_after_s = self
            .extra
            .as_ref()
            .and_then(|e| e.get("retry_after_ms"))
            .and_then(Value::as_u64)
            .map(|ms| ms.div_ceil(1000));
        let mut body = self.extra.unwrap_or_default();
        if !self.errcode.is_empty() {
            body.insert("errcode".to_owned(), json!(self.errcode));
            body.insert("error".to_owned(), json!(self.message));
        }
        let mut response = (self.status, axum::Json(Value::Object(body))).into_response();
        if let Some(seconds) = retry_after_s {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}
