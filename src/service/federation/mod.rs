//! The server-server transport: resolving a server name to an address (`resolver`),
//! signing and sending requests with `X-Matrix` (`client`), and fetching, caching and
//! checking remote signing keys (`keys`).

use std::{sync::Arc, time::Duration};

pub mod inbound;

use ruma::{
    CanonicalJsonObject, ServerName,
    api::{
        IncomingResponse, OutgoingRequest, OutgoingRequestExt,
        auth_scheme::NoAuthentication,
        federation::authentication::{ServerSignatures, XMatrix, XMatrixSigningInput},
        path_builder::SinglePath,
    },
};

use crate::{
    database::Database,
    error::{Error, Result},
    service::globals::Globals,
};

mod client;
mod keys;
pub mod resolver;

pub use keys::rotate_signing_key;
pub use resolver::{Destination, Resolver};

/// What checking a PDU's hashes and signatures found.
#[derive(Debug)]
pub enum PduCheck {
    /// Signatures and content hash are valid.
    Valid,
    /// Signatures are valid but the content hash is not: the spec says to keep the event
    /// redacted. Holds the redacted object.
    Redacted(CanonicalJsonObject),
}

pub struct Federation {
    pub(crate) globals: Arc<Globals>,
    /// Bookkeeping of incoming transactions.
    pub inbound: inbound::Inbound,
    resolver: Resolver,
    client: client::Client,
    keys: keys::KeyCache,
}

impl Federation {
    pub fn new(db: &Arc<Database>, globals: Arc<Globals>) -> Result<Self> {
        let config = &globals.config;
        let resolver = Resolver::new(
            Duration::from_secs(config.well_known_timeout.max(1)),
            config.allow_invalid_tls_certificates,
        )?;
        let client = client::Client::new(
            resolver.overrides(),
            Duration::from_secs(config.federation_timeout.max(1)),
            config.allow_invalid_tls_certificates,
        )?;
        Ok(Self {
            keys: keys::KeyCache::new(db),
            globals,
            inbound: inbound::Inbound::new(db),
            resolver,
            client,
        })
    }

    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// Refuses when federation is off or the destination is this server, which is never
    /// asked through the network.
    fn check_destination(&self, destination: &ServerName) -> Result<()> {
        if !self.globals.config.allow_federation {
            return Err(Error::forbidden("Federation is disabled on this server"));
        }
        if destination == self.globals.server_name() {
            return Err(Error::internal(format_args!(
                "federation request to ourselves ({destination})"
            )));
        }
        Ok(())
    }

    /// The request for `destination`, resolved and signed with `X-Matrix`, with the
    /// `Host` header to send: what [`Federation::send`] and `send_streaming` share.
    async fn signed<T>(
        &self,
        destination: &ServerName,
        request: T,
    ) -> Result<(String, http::Request<Vec<u8>>)>
    where
        T: OutgoingRequest<Authentication = ServerSignatures, PathBuilder = SinglePath>,
    {
        self.check_destination(destination)?;
        let target = self.resolver.resolve(destination).await;
        let input = XMatrixSigningInput::new(
            self.globals.owned_server_name(),
            destination.to_owned(),
            &self.globals.keypair,
        );
        let http_request = request
            .try_into_http_request::<Vec<u8>>(&target.base_url, input, ())
            .map_err(|e| Error::internal(format_args!("building federation request: {e}")))?;
        Ok((target.host_header, http_request))
    }

    /// Signs `request` with `X-Matrix` and sends it to `destination`'s federation API,
    /// resolved as the spec says. A Matrix error from the peer comes back as an [`Error`]
    /// with the peer's errcode and status; an unreachable peer as `M_UNKNOWN` 502.
    pub async fn send<T>(&self, destination: &ServerName, request: T) -> Result<T::IncomingResponse>
    where
        T: OutgoingRequest<Authentication = ServerSignatures, PathBuilder = SinglePath>
            + Send
            + 'static,
        T::IncomingResponse: IncomingResponse + Send,
    {
        let (host_header, http_request) = self.signed(destination, request).await?;
        self.client
            .execute(&self.resolver, destination, &host_header, http_request)
            .await
    }

    /// Like [`Federation::send`], but the answer's body is left unread for the caller to
    /// stream (federation media). Error statuses come back as the peer's [`Error`].
    pub async fn send_streaming<T>(
        &self,
        destination: &ServerName,
        request: T,
    ) -> Result<reqwest::Response>
    where
        T: OutgoingRequest<Authentication = ServerSignatures, PathBuilder = SinglePath>
            + Send
            + 'static,
    {
        let (host_header, http_request) = self.signed(destination, request).await?;
        self.client
            .execute_streaming(&self.resolver, destination, &host_header, http_request)
            .await
    }

    /// An unauthenticated GET of `path_and_query` on `destination`'s resolved address,
    /// body left unread: the legacy media download of servers without federation media.
    pub async fn get_streaming(
        &self,
        destination: &ServerName,
        path_and_query: &str,
    ) -> Result<reqwest::Response> {
        self.check_destination(destination)?;
        let target = self.resolver.resolve(destination).await;
        let url = format!("{}{path_and_query}", target.base_url.trim_end_matches('/'));
        let http_request = http::Request::get(url)
            .body(Vec::new())
            .map_err(|e| Error::internal(format_args!("building media request: {e}")))?;
        self.client
            .execute_streaming(
                &self.resolver,
                destination,
                &target.host_header,
                http_request,
            )
            .await
    }

    /// Sends an unauthenticated request (the key endpoints) to `destination`.
    pub async fn send_unauthenticated<T>(
        &self,
        destination: &ServerName,
        request: T,
    ) -> Result<T::IncomingResponse>
    where
        T: OutgoingRequest<Authentication = NoAuthentication, PathBuilder = SinglePath>
            + Send
            + 'static,
        T::IncomingResponse: IncomingResponse + Send,
    {
        self.check_destination(destination)?;
        let target = self.resolver.resolve(destination).await;
        let http_request = request
            .try_into_http_request::<Vec<u8>>(&target.base_url, (), ())
            .map_err(|e| Error::internal(format_args!("building federation request: {e}")))?;
        self.client
            .execute(
                &self.resolver,
                destination,
                &target.host_header,
                http_request,
            )
            .await
    }

    /// Checks an incoming request's `X-Matrix` header: the destination is us and the
    /// signature over method, URI and body verifies with one of the origin's current keys.
    /// Every failure is `401 M_UNAUTHORIZED`.
    pub async fn verify_request(
        &self,
        xmatrix: &XMatrix,
        request: &http::Request<&[u8]>,
    ) -> Result<()> {
        let ours = self.globals.server_name();
        if xmatrix.destination.as_deref().is_some_and(|d| d != ours) {
            return Err(Error::unauthorized(
                "X-Matrix destination is not this server",
            ));
        }
        let origin = xmatrix.origin.as_str();
        let key_ids = [xmatrix.key.to_string()];
        let keys = match self
            .keys_valid_at(&xmatrix.origin, &key_ids, keys::now(), true)
            .await
        {
            Ok(keys) if keys.contains_key(xmatrix.key.as_str()) => keys,
            Ok(_) | Err(_) => {
                return Err(Error::unauthorized(format!(
                    "Unknown or expired key {} of {origin}",
                    xmatrix.key
                )));
            }
        };
        let map = [(origin.to_owned(), keys)].into();
        xmatrix
            .verify_http_request(request, ours, &map)
            .map_err(|e| {
                tracing::debug!(%origin, "X-Matrix signature refused: {e}");
                Error::unauthorized("Invalid X-Matrix signature")
            })
    }
}
