//! Starting and stopping the server; used by `main` and by the integration tests.

use std::{net::SocketAddr, sync::Arc};

use tokio::{net::TcpListener, sync::oneshot};

use crate::{config::Config, error::Result, service::Services};

pub struct RunningServer {
    pub addr: SocketAddr,
    pub services: Arc<Services>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    /// The federation sender; it stops on the services' shutdown signal.
    sender: tokio::task::JoinHandle<()>,
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
        if let Err(e) = self.services.db.flush() {
            tracing::error!("flushing the database failed: {e}");
        }
    }
}

/// Builds the services and serves on `listener` until `stop` is called.
pub async fn start(config: Config, listener: TcpListener) -> Result<RunningServer> {
    let services = Services::build(config)?;
    let addr = listener
        .local_addr()
        .map_err(crate::error::Error::internal)?;
    let sender = services.sending.start({
        let services = Arc::clone(&services);
        async move { services.shutdown_signal().await }
    });
    let app = crate::api::router::build(Arc::clone(&services));
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let serve = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = rx.await;
        });
        if let Err(e) = serve.await {
            tracing::error!("server error: {e}");
        }
    });
    Ok(RunningServer {
        addr,
        services,
        shutdown: Some(tx),
        task,
        sender,
    })
}
