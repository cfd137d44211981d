//! The outgoing federation queue: one sender per destination server that batches PDUs and
//! EDUs into transactions, retries with backoff and keeps its queue in RocksDB.
//!
//! Entries are written in the batch of the change that produces them (the event's commit),
//! so an acknowledged event is never lost to federation, also not to a crash. After the
//! commit, `wake` tells the dispatcher, which starts a worker for each destination that has
//! something new and no worker yet; a worker sends its destination's queue in order and
//! exits once the queue is empty.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use ruma::{EventId, OwnedServerName, ServerName};
use tokio::sync::Notify;

use crate::{
    database::{Commit, Database, Table},
    error::Result,
    service::{federation::Federation, globals::Globals},
};

pub mod queue;
mod worker;

pub use queue::{Backoff, MAX_EDUS, MAX_PDUS, Outgoing, OutgoingTransaction, Queued};

pub struct Sending {
    pub(crate) db: Arc<Database>,
    pub(crate) globals: Arc<Globals>,
    pub(crate) federation: Arc<Federation>,
    outgoing_queue: Table,
    outgoing_state: Table,
    /// Wakes the dispatcher.
    wake: Notify,
    /// Destinations with something queued since the dispatcher last looked, with the
    /// sequence of the entry: an entry queued inside a commit is only readable once the
    /// commit's positions are, so the dispatcher takes those up to `db.committed()`.
    pending: Mutex<Vec<(u64, OwnedServerName)>>,
    /// Destinations that have a worker.
    active: Mutex<HashSet<OwnedServerName>>,
}

impl Sending {
    pub fn new(
        db: &Arc<Database>,
        globals: Arc<Globals>,
        federation: Arc<Federation>,
    ) -> Result<Self> {
        Ok(Self {
            outgoing_queue: db.table("outgoing_queue"),
            outgoing_state: db.table("outgoing_state"),
            db: Arc::clone(db),
            globals,
            federation,
            wake: Notify::new(),
            pending: Mutex::default(),
            active: Mutex::default(),
        })
    }

    /// Queues a PDU for `servers`, in the commit that appends the event: an acknowledged
    /// event is never lost to federation. `pdu_json` is the event in federation form
    /// (`rooms::federation_format`). Call [`Sending::wake`] after the commit.
    pub fn queue_pdu(
        &self,
        c: &mut Commit,
        servers: &[OwnedServerName],
        event_id: &EventId,
        pdu_json: &[u8],
    ) -> Result<()> {
        let servers = self.remote(servers);
        if servers.is_empty() {
            return Ok(());
        }
        let value = queue::encode_pdu(event_id.as_str(), pdu_json);
        // One position for every destination: keys only need to be unique per destination.
        let seq = c.next_count();
        for server in &servers {
            c.put(&self.outgoing_queue, queue::queue_key(server, seq), &value);
        }
        self.note_pending(seq, servers);
        Ok(())
    }

    /// Queues an EDU (`{"edu_type": ..., "content": ...}`) for `servers` and wakes the senders.
    pub fn queue_edu(&self, servers: &[OwnedServerName], edu: serde_json::Value) -> Result<()> {
        let servers = self.remote(servers);
        if servers.is_empty() {
            return Ok(());
        }
        let value = queue::encode_edu(&serde_json::to_vec(&edu)?);
        let seq = self.db.commit(|c| {
            let seq = c.next_count();
            for server in &servers {
                c.put(&self.outgoing_queue, queue::queue_key(server, seq), &value);
            }
            Ok(seq)
        })?;
        self.note_pending(seq, servers);
        self.wake();
        Ok(())
    }

    /// Wakes the senders after a commit that queued something (cheap when it did not:
    /// every local event calls it).
    pub fn wake(&self) {
        if !self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            self.wake.notify_one();
        }
    }

    /// What is queued for `destination`, oldest first.
    pub fn queued(&self, destination: &ServerName) -> Result<Vec<Queued>> {
        Ok(self
            .outgoing_queue
            .scan_prefix(queue::queue_prefix(destination))
            .filter_map(|(k, v)| {
                Some(Queued {
                    seq: queue::seq_of(&k),
                    item: queue::decode(&v)?,
                })
            })
            .collect())
    }

    /// The transaction that would be sent to `destination` next, if anything is queued.
    pub fn next_transaction(
        &self,
        destination: &ServerName,
    ) -> Result<Option<OutgoingTransaction>> {
        let txn = queue::take_transaction(
            self.outgoing_queue
                .scan_prefix(queue::queue_prefix(destination))
                .map(|(k, v)| (queue::seq_of(&k), queue::decode(&v))),
        );
        Ok((!txn.is_empty()).then_some(txn))
    }

    /// Every destination with something queued.
    pub fn destinations(&self) -> Result<Vec<OwnedServerName>> {
        let mut out = Vec::new();
        let mut from = Vec::new();
        // One seek per destination, not one step per entry.
        loop {
            let next = self.outgoing_queue.scan_from(from, Vec::new()).next();
            let Some((k, _)) = next else { break };
            let Some(destination) = queue::destination_of(&k) else {
                tracing::warn!("dropping an outgoing queue entry with a bad key");
                self.outgoing_queue.delete(&k)?;
                from = k.to_vec();
                continue;
            };
            from = queue::after_destination(&destination);
            out.push(destination);
        }
        Ok(out)
    }

    /// The failures in a row of `destination` and when it is retried, if it is failing.
    pub fn backoff(&self, destination: &ServerName) -> Result<Option<Backoff>> {
        self.outgoing_state.get_json(destination.as_bytes())
    }

    fn remote(&self, servers: &[OwnedServerName]) -> Vec<OwnedServerName> {
        if !self.globals.config.allow_federation {
            return Vec::new();
        }
        let own = self.globals.server_name();
        let mut out: Vec<OwnedServerName> = servers
            .iter()
            .filter(|s| s.as_str() != own.as_str())
            .cloned()
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    fn note_pending(&self, seq: u64, servers: Vec<OwnedServerName>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.extend(servers.into_iter().map(|s| (seq, s)));
    }
}
