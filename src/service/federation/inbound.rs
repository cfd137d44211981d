//! Incoming transactions: one at a time per origin (a peer's retry waits for its first
//! attempt instead of racing it), and a repeated transaction id is answered from the record
//! of the first.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use ruma::{OwnedEventId, OwnedServerName, ServerName, TransactionId};

use crate::{
    database::{Database, Table, key},
    error::Result,
};

pub struct Inbound {
    federation_txns: Table,
    locks: Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<()>>>>,
}

pub type PduResults = BTreeMap<OwnedEventId, Result<(), String>>;

impl Inbound {
    pub fn new(db: &Arc<Database>) -> Self {
        Self {
            federation_txns: db.table("federation_txns"),
            locks: Mutex::default(),
        }
    }

    pub async fn lock_origin(&self, origin: &ServerName) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = Arc::clone(
            self.locks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(origin.to_owned())
                .or_default(),
        );
        lock.lock_owned().await
    }

    fn txn_key(origin: &ServerName, txn: &TransactionId) -> Vec<u8> {
        key::key(&[origin.as_bytes(), txn.as_bytes()])
    }

    pub fn finished_transaction(
        &self,
        origin: &ServerName,
        txn: &TransactionId,
    ) -> Result<Option<PduResults>> {
        let Some(bytes) = self.federation_txns.get(Self::txn_key(origin, txn))? else {
            return Ok(None);
        };
        let stored: BTreeMap<OwnedEventId, Option<String>> = serde_json::from_slice(&bytes)?;
        Ok(Some(
            stored
                .into_iter()
                .map(|(id, error)| (id, error.map_or(Ok(()), Err)))
                .collect(),
        ))
    }

    pub fn finish_transaction(
        &self,
        origin: &ServerName,
        txn: &TransactionId,
        results: &PduResults,
    ) -> Result<()> {
        let stored: BTreeMap<&OwnedEventId, Option<&String>> = results
            .iter()
            .map(|(id, r)| (id, r.as_ref().err()))
            .collect();
        self.federation_txns
            .put(Self::txn_key(origin, txn), serde_json::to_vec(&stored)?)
    }
}
