//! The background side: a dispatcher that gives every destination with something queued
//! one worker, and the workers, which send their destination's queue in order as
//! transactions and back off while it fails. Other destinations are not held up.

use std::{collections::HashSet, future::Future, sync::Arc, time::Duration};

use rand::Rng;
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedServerName, OwnedTransactionId, ServerName,
    api::federation::transactions::send_transaction_message, serde::Raw,
};
use tokio::{
    sync::watch,
    task::{JoinHandle, JoinSet},
};

use super::{
    Sending,
    queue::{self, Backoff, OutgoingTransaction},
};
use crate::{error::Result, service::globals::now_ms};

/// A peer gets this long to answer a transaction before the attempt counts as failed.
const SEND_TIMEOUT: Duration = Duration::from_secs(120);

impl Sending {
    /// Starts the dispatcher, which first resumes every destination with queued entries
    /// (from before a restart or a crash). It and its workers stop when `shutdown`
    /// completes; an interrupted transaction stays queued and is sent again, under the
    /// same id, on the next start.
    pub fn start(
        self: &Arc<Self>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move { this.dispatch(shutdown).await })
    }

    async fn dispatch(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut workers = JoinSet::new();
        match self.destinations() {
            Ok(destinations) => {
                for destination in destinations {
                    self.ensure_worker(destination, &mut workers, &stop_rx);
                }
            }
            Err(e) => tracing::error!("reading the outgoing queue failed: {e}"),
        }
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = self.wake.notified() => {
                    for destination in self.take_pending() {
                        self.ensure_worker(destination, &mut workers, &stop_rx);
                    }
                }
                Some(done) = workers.join_next(), if !workers.is_empty() => {
                    if let Err(e) = done
                        && e.is_panic()
                    {
                        tracing::error!("a federation sender panicked: {e}");
                    }
                }
            }
        }
        let _ = stop_tx.send(true);
        while workers.join_next().await.is_some() {}
    }

    /// Destinations whose new entries are readable: queued in a commit that is written.
    fn take_pending(&self) -> HashSet<OwnedServerName> {
        let committed = self.db.committed();
        let mut ready = HashSet::new();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(seq, destination)| {
                if *seq <= committed {
                    ready.insert(destination.clone());
                    false
                } else {
                    true
                }
            });
        ready
    }

    fn ensure_worker(
        self: &Arc<Self>,
        destination: OwnedServerName,
        workers: &mut JoinSet<()>,
        stop: &watch::Receiver<bool>,
    ) {
        // A running worker reads the queue again before it exits (see `release_if_idle`),
        // so it sees the new entries: nothing to do.
        if !self
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(destination.clone())
        {
            return;
        }
        let this = Arc::clone(self);
        let stop = stop.clone();
        workers.spawn(async move {
            let mut guard = ActiveGuard {
                sending: &this,
                destination: &destination,
                released: false,
            };
            this.run_destination(&destination, stop, &mut guard).await;
        });
    }

    /// Sends `destination`'s queue until it is empty or the server stops.
    async fn run_destination(
        &self,
        destination: &ServerName,
        mut stop: watch::Receiver<bool>,
        guard: &mut ActiveGuard<'_>,
    ) {
        let mut backoff = self.backoff(destination).unwrap_or_else(|e| {
            tracing::error!(%destination, "reading the retry state failed: {e}");
            None
        });
        loop {
            if let Some(b) = &backoff {
                let wait = b.retry_at_ms.saturating_sub(now_ms());
                if wait > 0 && !sleep_or_stop(Duration::from_millis(wait), &mut stop).await {
                    return;
                }
            }
            let txn = match self.next_transaction(destination) {
                Ok(Some(txn)) => txn,
                Ok(None) => {
                    if self.release_if_idle(destination) {
                        guard.released = true;
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(%destination, "reading the outgoing queue failed: {e}");
                    backoff = Some(self.record_failure(destination, backoff.as_ref()));
                    continue;
                }
            };
            let seqs = txn.seqs.clone();
            let txn_id = txn.txn_id.clone();
            let result = tokio::select! {
                r = tokio::time::timeout(SEND_TIMEOUT, self.deliver(destination, txn)) => r,
                _ = stop.wait_for(|stopping| *stopping) => return,
            };
            let done = match result {
                Ok(Ok(response)) => {
                    for (event_id, outcome) in response.pdus {
                        if let Err(e) = outcome {
                            tracing::warn!(%destination, %event_id, "the peer refused a PDU: {e}");
                        }
                    }
                    true
                }
                // The transaction itself is malformed or too large for the peer: sending
                // it again cannot help and would hold up everything behind it.
                Ok(Err(e)) if matches!(e.status.as_u16(), 400 | 413) => {
                    tracing::warn!(%destination, %txn_id, "the peer refused a transaction, dropping it: {} {}", e.errcode, e.message);
                    true
                }
                Ok(Err(e)) => {
                    tracing::debug!(%destination, %txn_id, "sending a transaction failed: {} {}", e.errcode, e.message);
                    false
                }
                Err(_) => {
                    tracing::debug!(%destination, %txn_id, "the peer did not answer in time");
                    false
                }
            };
            if !done {
                backoff = Some(self.record_failure(destination, backoff.as_ref()));
                continue;
            }
            match self.remove_sent(destination, &seqs, backoff.is_some()) {
                Ok(()) => backoff = None,
                Err(e) => {
                    tracing::error!(%destination, "removing sent entries failed: {e}");
                    backoff = Some(self.record_failure(destination, backoff.as_ref()));
                }
            }
        }
    }

    async fn deliver(
        &self,
        destination: &ServerName,
        txn: OutgoingTransaction,
    ) -> Result<send_transaction_message::v1::Response> {
        let mut request = send_transaction_message::v1::Request::new(
            OwnedTransactionId::from(txn.txn_id),
            self.globals.owned_server_name(),
            MilliSecondsSinceUnixEpoch::now(),
        );
        request.pdus = txn.pdus.into_iter().map(|(_, json)| json).collect();
        request.edus = txn.edus.into_iter().map(Raw::from_json).collect();
        self.federation.send(destination, request).await
    }

    /// Deletes exactly the entries a transaction carried (newer ones may have been queued
    /// meanwhile) and the destination's failure record, in one batch.
    fn remove_sent(&self, destination: &ServerName, seqs: &[u64], failing: bool) -> Result<()> {
        self.db.write(|b| {
            for seq in seqs {
                b.delete(&self.outgoing_queue, queue::queue_key(destination, *seq));
            }
            if failing {
                b.delete(&self.outgoing_state, destination.as_bytes());
            }
        })
    }

    fn record_failure(&self, destination: &ServerName, previous: Option<&Backoff>) -> Backoff {
        let failures = previous.map_or(0, |b| b.failures).saturating_add(1);
        let config = &self.globals.config;
        let delay = queue::retry_delay(
            Duration::from_millis(config.federation_retry_base_ms),
            Duration::from_millis(config.federation_retry_max_ms),
            failures,
            rand::thread_rng().r#gen::<f64>(),
        );
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        let backoff = Backoff {
            failures,
            delay_ms,
            retry_at_ms: now_ms().saturating_add(delay_ms),
        };
        if failures == 1 {
            tracing::info!(%destination, "federation destination unreachable, retrying with backoff");
        }
        let stored = serde_json::to_vec(&backoff)
            .map_err(crate::error::Error::from)
            .and_then(|json| self.outgoing_state.put(destination.as_bytes(), json));
        if let Err(e) = stored {
            tracing::error!(%destination, "storing the retry state failed: {e}");
        }
        backoff
    }

    /// Ends the destination's worker if its queue is empty. Checked under the lock the
    /// dispatcher takes to start workers: an entry written before this check is seen
    /// here, one written after it finds no worker and starts one.
    fn release_if_idle(&self, destination: &ServerName) -> bool {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let empty = self
            .outgoing_queue
            .scan_prefix(queue::queue_prefix(destination))
            .next()
            .is_none();
        if empty {
            active.remove(destination);
        }
        empty
    }
}

/// Frees the destination for a new worker when its worker ends other than through
/// `release_if_idle` (server stop, panic).
struct ActiveGuard<'a> {
    sending: &'a Sending,
    destination: &'a ServerName,
    released: bool,
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        if !self.released {
            self.sending
                .active
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(self.destination);
        }
    }
}

/// Sleeps for `duration`; false when the server stops first.
async fn sleep_or_stop(duration: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(duration) => true,
        _ = stop.wait_for(|stopping| *stopping) => false,
    }
}
