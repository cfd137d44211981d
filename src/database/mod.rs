//! The embedded RocksDB database: one column family per table, typed keys (parts joined by
//! 0xFF, integers big-endian so byte order is numeric order) and atomic write batches.
//!
//! Every change that needs a stream position goes through [`Database::commit`], which hands
//! out positions from one global counter and writes the batch under one lock, so the
//! position a `/sync` reads as "committed" never has an unwritten hole below it.

use std::{
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options,
    WriteBatch,
};

use crate::error::Result;

pub mod key;

/// Every table of the server. A service owns the tables named after its data.
pub const TABLES: &[&str] = &[
    "global",
    // users
    "users",
    "devices",
    "token_device",
    "refreshtoken_device",
    "openid_tokens",
    "uiaa_sessions",
    "filters",
    "account_data",
    "txnid_eventid",
    // rooms
    "roomid_shortroomid",
    "eventid_shorteventid",
    "shorteventid_eventid",
    "statekey_shortstatekey",
    "shortstatekey_statekey",
    "shortstatehash_state",
    "shorteventid_shortstatehash",
    "roomid_shortstatehash",
    "roomid_forwardextremities",
    "pdus",
    "eventid_pduid",
    "eventid_outlierpdu",
    "user_rooms",
    "room_members",
    "alias_roomid",
    "roomid_aliases",
    "public_rooms",
    "relations",
    "room_info",
    // federation: remote server keys, resolved destinations, the outgoing queue, incoming
    // transaction ids
    "server_signingkeys",
    "outgoing_queue",
    "outgoing_state",
    "federation_txns",
    // receipts (newest per user, type and thread; and by stream position)
    "receipts_latest",
    "receipts_stream",
    // push: notifications per user and room (unread counts) and per user (the list)
    "user_notifications",
    "notification_stream",
    // presence: the state of each user, and who changed by stream position
    "presence",
    "presence_stream",
    // pushers and the queue of pushes to send
    "pushers",
    "push_queue",
    // end-to-end encryption: public keys, signatures, to-device queues, key backups
    "e2ee_device_keys",
    "e2ee_one_time_keys",
    "e2ee_fallback_keys",
    "e2ee_key_changes",
    "e2ee_key_change_stream",
    "e2ee_cross_signing_keys",
    "e2ee_key_signatures",
    "e2ee_to_device",
    "e2ee_to_device_txns",
    "e2ee_backup_versions",
    "e2ee_backup_keys",
    // media: metadata, thumbnails, blob users, reserved ids, URL preview cache (service/media)
    "media",
    "media_thumbnails",
    "media_blob_refs",
    "media_pending",
    "url_previews",
];

pub struct Database {
    pub db: DB,
    /// Last stream position handed out.
    counter: AtomicU64,
    /// Serialises `commit` so positions become visible in order.
    commit_lock: Mutex<()>,
    /// Every position up to this one is written.
    committed: AtomicU64,
}

const COUNTER_KEY: &[u8] = b"counter";

/// Stream positions of live events start here; history fetched from other servers later
/// (backfill) takes positions counting down from it, so a room's timeline stays one key
/// range in the order of the room's history.
pub const STREAM_BASE: u64 = 1 << 40;

impl Database {
    pub fn open(path: &Path, cache_mb: f64) -> Result<Arc<Self>> {
        let cache = Cache::new_lru_cache((cache_mb.max(1.0) * 1024.0 * 1024.0) as usize);
        let mut block = BlockBasedOptions::default();
        block.set_block_cache(&cache);
        block.set_bloom_filter(10.0, false);
        block.set_cache_index_and_filter_blocks(true);
        // Partitioned index and filters: a lookup reads a 4 KiB partition, not a table's
        // whole filter (over 1 MiB in a 100 MiB table). With whole filters in a small cache,
        // every read of a big database fetched and evicted megabytes (measured: sends fell
        // from 1,750 to about 100 a second past half a million messages).
        block.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
        block.set_partition_filters(true);
        block.set_metadata_block_size(4096);
        block.set_pin_top_level_index_and_filter(true);
        block.set_pin_l0_filter_and_index_blocks_in_cache(true);

        let mut table_opts = Options::default();
        table_opts.set_block_based_table_factory(&block);
        table_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Many small tables: small memtables (arena blocks are an eighth of this) keep an
        // idle server's memory low; the shared budget below bounds the total.
        table_opts.set_write_buffer_size(2 * 1024 * 1024);

        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(2);
        db_opts.set_keep_log_file_num(3);
        db_opts.set_max_total_wal_size(64 * 1024 * 1024);
        // Several small tables share the memtable budget instead of each getting its own.
        db_opts.set_db_write_buffer_size(8 * 1024 * 1024);

        let cfs = TABLES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, table_opts.clone()));
        let db = DB::open_cf_descriptors(&db_opts, path, cfs)?;
        let counter = db
            .get_cf(db.cf_handle("global").expect("global table"), COUNTER_KEY)?
            .map(|v| key::to_u64(&v))
            .unwrap_or(0)
            .max(STREAM_BASE);
        Ok(Arc::new(Self {
            db,
            counter: AtomicU64::new(counter),
            commit_lock: Mutex::new(()),
            committed: AtomicU64::new(counter),
        }))
    }

    pub fn table(self: &Arc<Self>, name: &'static str) -> Table {
        assert!(TABLES.contains(&name), "unknown table {name}");
        Table {
            db: Arc::clone(self),
            name,
        }
    }

    /// The newest stream position whose writes are all visible.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Builds and writes one batch atomically. `f` may take stream positions from the
    /// [`Commit`]; they become visible together when the batch is written.
    pub fn commit<T>(&self, f: impl FnOnce(&mut Commit) -> Result<T>) -> Result<T> {
        let _guard = self.commit_lock.lock().unwrap_or_else(|e| e.into_inner());
        let start = self.counter.load(Ordering::Acquire);
        let mut commit = Commit {
            batch: WriteBatch::default(),
            next: start,
            db: self,
        };
        let value = f(&mut commit)?;
        let last = commit.next;
        let mut batch = commit.batch;
        if last != start {
            batch.put_cf(self.cf("global"), COUNTER_KEY, last.to_be_bytes());
        }
        self.db.write(batch)?;
        self.counter.store(last, Ordering::Release);
        self.committed.store(last, Ordering::Release);
        Ok(value)
    }

    /// Writes a batch that needs no stream position.
    pub fn write(&self, f: impl FnOnce(&mut Batch<'_>)) -> Result<()> {
        let mut batch = Batch {
            batch: WriteBatch::default(),
            db: self,
        };
        f(&mut batch);
        self.db.write(batch.batch)?;
        Ok(())
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every table is opened at start")
    }

    pub fn flush(&self) -> Result<()> {
        for name in TABLES {
            self.db.flush_cf(self.cf(name))?;
        }
        self.db.flush_wal(true)?;
        Ok(())
    }
}

/// A batch being built under the commit lock, with stream positions to hand out.
pub struct Commit<'a> {
    batch: WriteBatch,
    next: u64,
    db: &'a Database,
}

impl Commit<'_> {
    pub fn next_count(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    pub fn put(&mut self, table: &Table, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.batch.put_cf(self.db.cf(table.name), key, value);
    }

    pub fn delete(&mut self, table: &Table, key: impl AsRef<[u8]>) {
        self.batch.delete_cf(self.db.cf(table.name), key);
    }
}

/// A batch of writes that need no stream position.
pub struct Batch<'a> {
    batch: WriteBatch,
    db: &'a Database,
}

impl Batch<'_> {
    pub fn put(&mut self, table: &Table, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.batch.put_cf(self.db.cf(table.name), key, value);
    }

    pub fn delete(&mut self, table: &Table, key: impl AsRef<[u8]>) {
        self.batch.delete_cf(self.db.cf(table.name), key);
    }
}

/// One column family.
#[derive(Clone)]
pub struct Table {
    db: Arc<Database>,
    name: &'static str,
}

impl Table {
    fn cf(&self) -> &rocksdb::ColumnFamily {
        self.db.cf(self.name)
    }

    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        Ok(self.db.db.get_cf(self.cf(), key)?)
    }

    pub fn contains(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        Ok(self.db.db.get_pinned_cf(self.cf(), key)?.is_some())
    }

    pub fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<T>> {
        match self.get(key)? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// A put outside any batch, for single-key changes.
    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        Ok(self.db.db.put_cf(self.cf(), key, value)?)
    }

    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<()> {
        Ok(self.db.db.delete_cf(self.cf(), key)?)
    }

    /// Entries whose key starts with `prefix`, in key order.
    pub fn scan_prefix<'a>(
        &'a self,
        prefix: Vec<u8>,
    ) -> impl Iterator<Item = (Box<[u8]>, Box<[u8]>)> + 'a {
        self.db
            .db
            .iterator_cf(self.cf(), IteratorMode::From(&prefix, Direction::Forward))
            .map_while(Result::ok)
            .take_while(move |(k, _)| k.starts_with(&prefix))
    }

    /// Entries from `from` (inclusive) forwards while the key starts with `prefix`.
    pub fn scan_from<'a>(
        &'a self,
        from: Vec<u8>,
        prefix: Vec<u8>,
    ) -> impl Iterator<Item = (Box<[u8]>, Box<[u8]>)> + 'a {
        self.db
            .db
            .iterator_cf(self.cf(), IteratorMode::From(&from, Direction::Forward))
            .map_while(Result::ok)
            .take_while(move |(k, _)| k.starts_with(&prefix))
    }

    /// Entries from `from` (inclusive) backwards while the key starts with `prefix`.
    pub fn scan_back<'a>(
        &'a self,
        from: Vec<u8>,
        prefix: Vec<u8>,
    ) -> impl Iterator<Item = (Box<[u8]>, Box<[u8]>)> + 'a {
        self.db
            .db
            .iterator_cf(self.cf(), IteratorMode::From(&from, Direction::Reverse))
            .map_while(Result::ok)
            .take_while(move |(k, _)| k.starts_with(&prefix))
    }

    pub fn iter(&self) -> impl Iterator<Item = (Box<[u8]>, Box<[u8]>)> + '_ {
        self.db
            .db
            .iterator_cf(self.cf(), IteratorMode::Start)
            .map_while(Result::ok)
    }

    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }
}
