//! Full-text search over room events (docs/search.md): a tantivy index in
//! `<database_path>/search`, kept by one background thread.
//!
//! The append path only sends `(short room, position)` over a channel (inside the commit,
//! so in stream order); the indexer reads the stored PDUs in batches and commits them. The
//! index may lag the database, never contradict it: each commit carries the positions it
//! covers as its payload, and on start the indexer catches up from there.
//!
//! How often it commits depends on whether anyone searches (as Elasticsearch's "search
//! idle" shards): every half second while searches come in, every few seconds otherwise.
//! Each commit writes a segment that later merges rewrite, so committing every half second
//! under a steady stream of messages cost a tenth of the server's CPU with nobody
//! searching (measured). A search that finds the last commit older than half a second
//! first has the indexer commit what it has, so a message is findable within a second
//! either way.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{Receiver, Sender, channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tantivy::{Index, IndexReader, ReloadPolicy, Searcher};

use crate::{
    error::{Error, Result},
    service::Services,
};

pub mod indexer;
pub mod query;
pub mod schema;

pub use schema::Fields;

pub(crate) enum Msg {
    /// An event was appended at this `(short room, position)`; sent under the commit lock,
    /// so messages arrive in position order (possibly before the write is visible).
    Appended { shortroomid: u64, count: u64 },
    /// History was backfilled below `STREAM_BASE`.
    Backfilled,
    /// A search is about to run: commit what is indexed (if anything) and answer.
    Refresh(tokio::sync::oneshot::Sender<()>),
    /// Commit and stop.
    Stop,
}

/// While a search came in within this long, the indexer commits every half second.
const SEARCH_ACTIVE: Duration = Duration::from_secs(60);
/// A search waits for a commit when the last one is older than this.
pub(crate) const FRESH_ENOUGH: Duration = Duration::from_millis(500);
/// How long a search waits for that commit before searching what is there.
const REFRESH_WAIT: Duration = Duration::from_secs(2);

/// What the searches and the indexer thread tell each other without the channel.
pub(crate) struct Shared {
    epoch: Instant,
    /// Milliseconds after `epoch`; 0: never.
    last_search_ms: AtomicU64,
    last_commit_ms: AtomicU64,
    /// The indexer has caught up and reads the feed (a search during a long catch-up does
    /// not wait for it).
    following: AtomicBool,
    stopping: AtomicBool,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn within(&self, stamp: &AtomicU64, span: Duration) -> bool {
        let at = stamp.load(Ordering::Relaxed);
        at != 0 && self.now_ms().saturating_sub(at) < span.as_millis() as u64
    }

    pub(crate) fn searched_lately(&self) -> bool {
        self.within(&self.last_search_ms, SEARCH_ACTIVE)
    }

    pub(crate) fn committed_now(&self) {
        self.last_commit_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    pub(crate) fn set_following(&self, following: bool) {
        self.following.store(following, Ordering::Relaxed);
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }
}

/// The append path's handle to the indexer: sending never blocks. `None` while search is
/// off (`enable_search = false`), so nothing queues up for an indexer that never runs.
#[derive(Clone)]
pub struct Feed(Option<Sender<Msg>>);

impl Feed {
    pub fn appended(&self, shortroomid: u64, count: u64) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(Msg::Appended { shortroomid, count });
        }
    }

    pub fn backfilled(&self) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(Msg::Backfilled);
        }
    }
}

pub struct Search {
    index: Index,
    reader: IndexReader,
    pub fields: Fields,
    feed: Feed,
    rx: Mutex<Option<Receiver<Msg>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    shared: Arc<Shared>,
}

impl Search {
    /// Opens the index in `dir`, or starts an empty one there if it is missing or cannot be
    /// read (the indexer then fills it from the database). Not `enabled`: the index is
    /// left as it is, nothing is fed to it and [`Search::start`] starts no indexer.
    pub fn open(dir: &Path, enabled: bool) -> Result<Self> {
        let (schema, fields) = schema::schema();
        let index = match open_existing(dir, &schema) {
            Some(index) => index,
            None => {
                if dir.exists() {
                    tracing::warn!(dir = %dir.display(), "search index unreadable; rebuilding it");
                    std::fs::remove_dir_all(dir).map_err(Error::internal)?;
                }
                std::fs::create_dir_all(dir).map_err(Error::internal)?;
                Index::create_in_dir(dir, schema).map_err(Error::internal)?
            }
        };
        schema::register_analyzers(&index);
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(Error::internal)?;
        let (tx, rx) = channel();
        Ok(Self {
            index,
            reader,
            fields,
            feed: Feed(enabled.then_some(tx)),
            rx: Mutex::new(enabled.then_some(rx)),
            thread: Mutex::new(None),
            shared: Arc::new(Shared {
                epoch: Instant::now(),
                last_search_ms: AtomicU64::new(0),
                last_commit_ms: AtomicU64::new(0),
                following: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
            }),
        })
    }

    pub fn dir(database_path: &Path) -> PathBuf {
        database_path.join("search")
    }

    pub fn feed(&self) -> Feed {
        self.feed.clone()
    }

    pub fn enabled(&self) -> bool {
        self.feed.0.is_some()
    }

    pub fn searcher(&self) -> Searcher {
        self.reader.searcher()
    }

    /// Called before a search: keeps the indexer committing often for a while, and unless
    /// the last commit is recent, has it commit what it has first (bounded wait).
    pub async fn refresh(&self) {
        let shared = &self.shared;
        shared
            .last_search_ms
            .store(shared.now_ms(), Ordering::Relaxed);
        let Some(tx) = &self.feed.0 else { return };
        if !shared.following.load(Ordering::Relaxed)
            || shared.within(&shared.last_commit_ms, FRESH_ENOUGH)
        {
            return;
        }
        let (done, wait) = tokio::sync::oneshot::channel();
        if tx.send(Msg::Refresh(done)).is_ok() {
            let _ = tokio::time::timeout(REFRESH_WAIT, wait).await;
        }
    }

    /// Starts the indexer thread: it catches up with the database, then follows the feed.
    /// It holds the services only weakly, so dropping them ends it.
    pub fn start(&self, services: Weak<Services>) {
        let Some(rx) = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let indexer = match indexer::Indexer::new(
            &self.index,
            self.reader.clone(),
            self.fields,
            Arc::clone(&self.shared),
        ) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!("search indexer cannot start; search stays as it is: {e}");
                return;
            }
        };
        let handle = std::thread::Builder::new()
            .name("search-indexer".to_owned())
            .spawn(move || indexer.run(services, rx))
            .map_err(|e| tracing::error!("search indexer thread: {e}"))
            .ok();
        *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = handle;
    }

    /// Commits what is indexed and waits for the indexer to end (blocking).
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        if let Some(tx) = &self.feed.0 {
            let _ = tx.send(Msg::Stop);
        }
        if let Some(handle) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = handle.join();
        }
    }

    /// Empties the index and indexes the whole database again, in the foreground (the
    /// `conduit search rebuild` command; the server must not be running). Returns how many
    /// events were indexed.
    pub fn rebuild(&self, services: &Services) -> Result<usize> {
        let mut indexer = indexer::Indexer::new(
            &self.index,
            self.reader.clone(),
            self.fields,
            Arc::clone(&self.shared),
        )?;
        indexer.clear()?;
        let indexed = indexer.catch_up(services)?;
        indexer.finish()?;
        Ok(indexed)
    }
}

fn open_existing(dir: &Path, schema: &tantivy::schema::Schema) -> Option<Index> {
    if !dir.join("meta.json").exists() {
        return None;
    }
    let index = Index::open_in_dir(dir)
        .map_err(|e| tracing::warn!("search index: {e}"))
        .ok()?;
    // An index of another layout (an older version of this schema) is rebuilt.
    (index.schema() == *schema).then_some(index)
}
