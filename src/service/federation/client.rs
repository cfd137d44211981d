//! The HTTP side of outgoing federation: one pooled client whose DNS hook follows the
//! resolver's SRV answers, a time limit per request, a bounded answer, and peer errors
//! turned into [`Error`]s.

use std::{sync::Arc, time::Duration};

use http::StatusCode;
use ruma::{
    ServerName,
    api::{IncomingResponse, IncomingResponseExt},
};

use super::resolver::{Overrides, Resolver};
use crate::error::{Error, Result};

/// Largest answer read from a peer. `/send_join` and `/state` of big rooms are tens of
/// MiB; more than this is not an answer we can use.
const MAX_RESPONSE_BYTES: usize = 128 * 1024 * 1024;

pub(super) struct Client {
    http: reqwest::Client,
}

impl Client {
    pub(super) fn new(
        overrides: Arc<Overrides>,
        timeout: Duration,
        allow_invalid_certs: bool,
    ) -> Result<Self> {
        let http = reqwest::Client::builder()
            .dns_resolver(overrides)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .danger_accept_invalid_certs(allow_invalid_certs)
            // Federation requests are signed for one destination: never follow elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("conduit/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::internal)?;
        Ok(Self { http })
    }

    /// Sends a request and hands back the answer unread, for bodies too big to buffer
    /// (media). A non-success status is turned into the peer's error here.
    pub(super) async fn execute_streaming(
        &self,
        resolver: &Resolver,
        server: &ServerName,
        host_header: &str,
        request: http::Request<Vec<u8>>,
    ) -> Result<reqwest::Response> {
        let mut request = reqwest::Request::try_from(request)
            .map_err(|e| Error::internal(format_args!("federation request: {e}")))?;
        let host = http::HeaderValue::from_str(host_header)
            .map_err(|e| Error::internal(format_args!("host header: {e}")))?;
        request.headers_mut().insert(http::header::HOST, host);
        let response = match self.http.execute(request).await {
            Ok(response) => response,
            Err(e) => {
                resolver.forget(server);
                tracing::debug!(%server, "federation media request failed: {e}");
                return Err(Error::bad_gateway(format!("{server}: request failed")));
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        // An error answer is small; a bounded read is enough to find its errcode.
        let mut response = response;
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() > 64 * 1024 {
                break;
            }
        }
        Err(peer_error(server, status, &body))
    }

    /// Sends a request built against the destination's base URL and parses the answer.
    pub(super) async fn execute<R: IncomingResponse>(
        &self,
        resolver: &Resolver,
        server: &ServerName,
        host_header: &str,
        request: http::Request<Vec<u8>>,
    ) -> Result<R> {
        let mut request = reqwest::Request::try_from(request)
            .map_err(|e| Error::internal(format_args!("federation request: {e}")))?;
        let host = http::HeaderValue::from_str(host_header)
            .map_err(|e| Error::internal(format_args!("host header: {e}")))?;
        request.headers_mut().insert(http::header::HOST, host);
        let mut response = match self.http.execute(request).await {
            Ok(response) => response,
            Err(e) => {
                // A fresh resolution next time: the peer may have moved.
                resolver.forget(server);
                let what = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "connection failed"
                } else {
                    "request failed"
                };
                tracing::debug!(%server, "federation {what}: {e}");
                return Err(Error::bad_gateway(format!("{server}: {what}")));
            }
        };
        let status = response.status();
        if response
            .content_length()
            .is_some_and(|len| len > MAX_RESPONSE_BYTES as u64)
        {
            return Err(Error::bad_gateway(format!("{server}: answer too large")));
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err(Error::bad_gateway(format!("{server}: answer too large")));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%server, "reading federation answer: {e}");
                    return Err(Error::bad_gateway(format!("{server}: answer cut short")));
                }
            }
        }
        if !status.is_success() {
            return Err(peer_error(server, status, &body));
        }
        let mut http_response = http::Response::new(body.as_slice());
        *http_response.status_mut() = status;
        *http_response.headers_mut() = response.headers().clone();
        R::try_from_http_response(http_response).map_err(|e| {
            tracing::debug!(%server, "unusable federation answer: {e}");
            Error::bad_gateway(format!("{server}: invalid answer: {e}"))
        })
    }
}

/// A peer's error answer: its Matrix error with its status, else a description.
fn peer_error(server: &ServerName, status: StatusCode, body: &[u8]) -> Error {
    #[derive(serde::Deserialize)]
    struct MatrixError {
        errcode: String,
        #[serde(default)]
        error: String,
    }
    match serde_json::from_slice::<MatrixError>(body) {
        Ok(e) => Error::remote(status, &e.errcode, e.error),
        // A proxy's page for an endpoint the peer does not serve.
        Err(_) if matches!(status.as_u16(), 404 | 405) => Error::remote(
            status,
            "M_UNRECOGNIZED",
            format!("{server} does not serve this endpoint"),
        ),
        Err(_) => Error::remote(status, "M_UNKNOWN", format!("{server} answered {status}")),
    }
}
