//! To-device messages (spec: "Send-to-Device messaging"). Each message is stored under its
//! recipient device at a stream position; `/sync` delivers every message above its `since`
//! and deletes those at or below it, because a client that sends `since = s` has received
//! the response that ended at `s`. A retried request with the same `since` gets the same
//! messages again, and nothing is deleted before the client has proven it saw it.

use ruma::UserId;
use serde_json::{Value, json};

use super::E2ee;
use crate::{database::key, error::Result};

/// One message for one device.
pub struct Message<'a> {
    pub user: &'a UserId,
    pub device: &'a str,
    pub content: &'a Value,
}

impl E2ee {
    /// Stores `messages` of one `kind` from `sender`, unless `txn` (the sender's device and
    /// transaction id, or an EDU's origin and message id) was seen before. Checked and
    /// recorded under the commit lock, so a retried request is stored at most once.
    /// Returns whether the messages were stored.
    pub fn queue_to_device(
        &self,
        txn: &[&[u8]],
        sender: &UserId,
        kind: &str,
        messages: &[Message<'_>],
    ) -> Result<bool> {
        let txn_key = key::key(txn);
        self.db.commit(|c| {
            if self.to_device_txns.contains(&txn_key)? {
                return Ok(false);
            }
            c.put(&self.to_device_txns, &txn_key, b"");
            for message in messages {
                let position = c.next_count();
                let event = json!({ "type": kind, "sender": sender, "content": message.content });
                c.put(
                    &self.to_device,
                    key::key(&[
                        message.user.as_bytes(),
                        message.device.as_bytes(),
                        &key::u64_key(position),
                    ]),
                    serde_json::to_vec(&event)?,
                );
            }
            Ok(true)
        })
    }

    /// Deletes the device's messages at or below `acknowledged` and returns those in
    /// `(acknowledged, until]`, oldest first, at most `limit` of them, with where the
    /// returned range ends: `until`, or the `limit`th message's position when more wait.
    /// Every stream shares the one counter, so a `/sync` that ends there instead is a
    /// consistent cut and the client gets the rest on its next sync.
    pub fn take_to_device(
        &self,
        user: &UserId,
        device: &str,
        acknowledged: Option<u64>,
        until: u64,
        limit: usize,
    ) -> Result<(Vec<Value>, u64)> {
        let prefix = key::prefix(&[user.as_bytes(), device.as_bytes()]);
        let mut delete = Vec::new();
        let mut out = Vec::new();
        let mut end = until;
        for (k, v) in self.to_device.scan_prefix(prefix.clone()) {
            let position = key::to_u64(&k[prefix.len()..]);
            if acknowledged.is_some_and(|a| position <= a) {
                delete.push(k);
            } else if position <= until && out.len() < limit {
                out.push(serde_json::from_slice(&v)?);
                end = position;
            } else {
                break;
            }
        }
        if out.len() < limit {
            end = until;
        }
        if !delete.is_empty() {
            self.db.write(|b| {
                for k in &delete {
                    b.delete(&self.to_device, k);
                }
            })?;
        }
        Ok((out, end))
    }
}
