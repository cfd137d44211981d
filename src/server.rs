//! Starting and stopping the server; used by `main` and by the integration tests. Serves
//! plain HTTP (behind a reverse proxy) or, with `[global.tls]`, HTTPS itself.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::serve::ListenerExt;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use crate::{
    config::{Config, TlsConfig},
    error::{Error, Result},
    service::Services,
};

pub struct RunningServer {
    pub addr: SocketAddr,
    pub services: Arc<Services>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    /// The federation sender; it stops on the services' shutdown signal.
    sender: tokio::task::JoinHandle<()>,
    /// Timers and queues (typing, presence, push); they stop on the shutdown signal too.
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish, and flushes the database.
    pub async fn stop(mut self) {
        self.services.begin_shutdown();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = self.task.await;
        let _ = self.sender.await;
        for task in self.background {
            let _ = task.await;
        }
        // The indexer commits what it has and releases the index for the next start.
        let services = Arc::clone(&self.services);
        let _ = tokio::task::spawn_blocking(move || services.search.stop()).await;
        if let Err(e) = self.services.db.flush() {
            tracing::error!("flushing the database failed: {e}");
        }
    }
}

/// Builds the services and serves on `listener` until `stop` is called.
pub async fn start(config: Config, listener: TcpListener) -> Result<RunningServer> {
    // Read the certificate before anything else: a bad path stops the start-up.
    let acceptor = config.tls.as_ref().map(tls_acceptor).transpose()?;
    let dual_protocol = config.tls.as_ref().is_some_and(|t| t.dual_protocol);
    if config.allow_invalid_tls_certificates {
        tracing::warn!(
            "allow_invalid_tls_certificates is on: outgoing federation accepts any certificate; \
             use this only in test setups"
        );
    }
    let services = Services::build(config)?;
    let addr = listener.local_addr().map_err(Error::internal)?;
    let sender = services.sending.start({
        let services = Arc::clone(&services);
        async move { services.shutdown_signal().await }
    });
    let background = services.start_background();
    let app = crate::api::router::build(Arc::clone(&services));
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = rx.await;
        };
        let make_service = app.into_make_service_with_connect_info::<SocketAddr>();
        let result = match acceptor {
            Some(acceptor) => {
                // `tap_io` only to get axum's generic `ConnectInfo<SocketAddr>` impl.
                let listener = TlsListener::new(listener, acceptor, dual_protocol).tap_io(|_| {});
                axum::serve(listener, make_service)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            None => {
                axum::serve(listener, make_service)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        };
        if let Err(e) = result {
            tracing::error!("server error: {e}");
        }
    });
    Ok(RunningServer {
        addr,
        services,
        shutdown: Some(tx),
        task,
        sender,
        background,
    })
}

/// Loads the PEM certificate chain and key; ALPN offers h2 and HTTP/1.1.
pub fn tls_acceptor(tls: &TlsConfig) -> Result<TlsAcceptor> {
    let read = |path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| Error::internal(format_args!("tls: cannot read {}: {e}", path.display())))
    };
    let certs = rustls_pemfile::certs(&mut read(&tls.certs)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::internal(format_args!("tls: {}: {e}", tls.certs.display())))?;
    if certs.is_empty() {
        return Err(Error::internal(format_args!(
            "tls: no certificate in {}",
            tls.certs.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut read(&tls.key)?.as_slice())
        .map_err(|e| Error::internal(format_args!("tls: {}: {e}", tls.key.display())))?
        .ok_or_else(|| {
            Error::internal(format_args!("tls: no private key in {}", tls.key.display()))
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Error::internal)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::internal(format_args!("tls: certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A TLS handshake that takes longer is dropped: a slow or silent client must not hold a
/// task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// Accepts TCP connections and hands out finished TLS streams. Handshakes run in their own
/// tasks, so one slow client never delays the next `accept`.
pub struct TlsListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<(MaybeTlsStream, SocketAddr)>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor, dual_protocol: bool) -> Self {
        let local_addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(accept_loop(listener, acceptor, dual_protocol, tx));
        Self { local_addr, ready }
    }
}

/// Runs until the `TlsListener` is dropped (the receiver closes).
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    dual_protocol: bool,
    tx: mpsc::Sender<(MaybeTlsStream, SocketAddr)>,
) {
    loop {
        let accepted = tokio::select! {
            _ = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Mostly EMFILE: wait instead of spinning, as axum's own listener does.
                tracing::debug!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let handshake = handshake(stream, acceptor, dual_protocol);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(stream)) => {
                    let _ = tx.send((stream, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, "tls handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
            }
        });
    }
}

async fn handshake(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    dual_protocol: bool,
) -> io::Result<MaybeTlsStream> {
    if dual_protocol {
        // Peek, not read: a plain HTTP connection is served from its first byte.
        let mut first = [0u8; 1];
        let n = stream.peek(&mut first).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before sending anything",
            ));
        }
        if first[0] != 0x16 {
            return Ok(MaybeTlsStream::Plain(stream));
        }
    }
    let tls = acceptor.accept(stream).await?;
    Ok(MaybeTlsStream::Tls(Box::new(tls)))
}

impl axum::serve::Listener for TlsListener {
    type Io = MaybeTlsStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(pair) => pair,
            // The accept loop only ends once this listener is gone; never reached while
            // `self` is alive, but waiting forever is the honest answer if it were.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// A served connection: TLS, or plain HTTP on a `dual_protocol` port.
pub enum MaybeTlsStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for MaybeTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }
}
