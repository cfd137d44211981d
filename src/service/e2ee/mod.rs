//! End-to-end encryption support: the server stores and hands out public keys and relays
//! opaque messages between devices; it never holds a private key or a plaintext.
//!
//! - `keys`: device keys, one-time keys, fallback keys and the key-change stream.
//! - `cross_signing`: master, self-signing and user-signing keys and signatures.
//! - `to_device`: per-device message queues.
//! - `backup`: server-side room key backup (`room_keys`).
//! - `device_lists`: which users' device lists changed for a user between two tokens.

use std::sync::{Arc, Mutex};

use crate::database::{Database, Table};

mod announce;
pub mod backup;
pub mod cross_signing;
pub mod device_lists;
pub mod keys;
pub mod query;
pub mod to_device;

pub struct E2ee {
    db: Arc<Database>,
    /// (user, device) -> the device's signed `DeviceKeys` object as uploaded.
    device_keys: Table,
    /// (user, device, "algorithm:key_id") -> one-time key.
    one_time_keys: Table,
    /// (user, device, algorithm) -> `{key_id, key, used}`.
    fallback_keys: Table,
    /// user -> stream position of the last change of the user's devices or keys.
    key_changes: Table,
    /// (position, user) for each user's last change: who changed in a range of positions.
    key_change_stream: Table,
    /// (user, kind) -> cross-signing key; kind is `master`, `self_signing`, `user_signing`.
    cross_signing_keys: Table,
    /// (target user, target key id, signer) -> `{signer key id: signature}`.
    key_signatures: Table,
    /// (user, device, position) -> `{type, sender, content}`.
    to_device: Table,
    /// Seen (sender, device, txn id) of sendToDevice and (origin, message id) of EDUs.
    to_device_txns: Table,
    /// (user, version) -> backup version record.
    backup_versions: Table,
    /// (user, version, room, session) -> `KeyBackupData`.
    backup_keys: Table,
    /// Serialises one-time key claims: each key is handed out exactly once.
    claim_lock: Mutex<()>,
    /// Serialises read-modify-write changes of backups and signatures.
    write_lock: Mutex<()>,
}

impl E2ee {
    pub fn new(db: &Arc<Database>) -> Self {
        Self {
            db: Arc::clone(db),
            device_keys: db.table("e2ee_device_keys"),
            one_time_keys: db.table("e2ee_one_time_keys"),
            fallback_keys: db.table("e2ee_fallback_keys"),
            key_changes: db.table("e2ee_key_changes"),
            key_change_stream: db.table("e2ee_key_change_stream"),
            cross_signing_keys: db.table("e2ee_cross_signing_keys"),
            key_signatures: db.table("e2ee_key_signatures"),
            to_device: db.table("e2ee_to_device"),
            to_device_txns: db.table("e2ee_to_device_txns"),
            backup_versions: db.table("e2ee_backup_versions"),
            backup_keys: db.table("e2ee_backup_keys"),
            claim_lock: Mutex::new(()),
            write_lock: Mutex::new(()),
        }
    }
}
