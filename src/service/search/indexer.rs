//! The indexer thread: turns stored PDUs into documents and commits them in batches.
//!
//! Invariant, kept in every commit's payload: every live event at or below `live` and
//! every backfilled event at or above `floor` is indexed (or has no searchable text). A
//! crash loses only what came after the last commit, and the catch-up on start indexes it
//! again from the database.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Weak,
        mpsc::{Receiver, RecvTimeoutError},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tantivy::{Index, IndexReader, IndexWriter, TantivyDocument, Term, indexer::UserOperation};

use super::{FRESH_ENOUGH, Msg, Shared, schema::Fields};
use crate::{
    database::STREAM_BASE,
    error::{Error, Result},
    service::{Services, rooms::Rooms},
};

/// Commit intervals while searches come in (near real time: a message is searchable this
/// long after it is stored, plus the commit itself) and while none do (a search then has
/// the indexer commit first; see the module above).
const COMMIT_EVERY: Duration = FRESH_ENOUGH;
const IDLE_COMMIT_EVERY: Duration = Duration::from_secs(5);
/// After waking for an event, the indexer waits this long so that one pass reads, and
/// hands tantivy, every event stored meanwhile: waking for each event cost more than
/// indexing it (measured).
const GATHER: Duration = Duration::from_millis(20);
/// Operations handed to the writer at once during a catch-up. One: the writer's queue is
/// bounded in batches, not documents, and reading the database outruns indexing, so
/// batches of 1,000 let a rebuild of a million messages queue up 790 MB (measured; 108 MB
/// one at a time). Only the live feed, where wake-ups are what cost, gathers.
const CATCH_UP_BATCH: usize = 1;
const WRITER_MEMORY: usize = 20_000_000;

#[derive(Serialize, Deserialize)]
struct Payload {
    live: u64,
    backfill: u64,
}

pub struct Indexer {
    writer: IndexWriter,
    reader: IndexReader,
    fields: Fields,
    live: u64,
    floor: u64,
    dirty: bool,
    last_commit: Instant,
    /// Documents and deletions not yet handed to the writer, in order (a deletion only
    /// reaches documents handed over before it).
    ops: Vec<UserOperation<TantivyDocument>>,
    /// `stopping` is set by [`super::Search::stop`]: a long catch-up gives up instead of
    /// holding up the shutdown.
    shared: Arc<Shared>,
    /// A catch-up gave up: what was added since the last commit is dropped, not committed
    /// (the payload would not cover it, and the next start redoes it).
    abandoned: bool,
}

/// The searchable text of an event: `(key, text)`. Only plain messages, room names and
/// topics; encrypted events have nothing the server can read.
pub fn searchable_text(event: &Value) -> Option<(&'static str, &str)> {
    let content = event.get("content")?;
    let (key, text) = match event.get("type")?.as_str()? {
        "m.room.message" => ("content.body", content.get("body")?.as_str()?),
        "m.room.name" => ("content.name", content.get("name")?.as_str()?),
        "m.room.topic" => ("content.topic", content.get("topic")?.as_str()?),
        _ => return None,
    };
    (!text.trim().is_empty()).then_some((key, text))
}

impl Indexer {
    pub(crate) fn new(
        index: &Index,
        reader: IndexReader,
        fields: Fields,
        shared: Arc<Shared>,
    ) -> Result<Self> {
        let writer = index
            .writer_with_num_threads(1, WRITER_MEMORY)
            .map_err(Error::internal)?;
        let payload = index
            .load_metas()
            .map_err(Error::internal)?
            .payload
            .and_then(|p| serde_json::from_str::<Payload>(&p).ok());
        let (live, floor) = payload.map_or((0, STREAM_BASE), |p| (p.live, p.backfill));
        Ok(Self {
            writer,
            reader,
            fields,
            live,
            floor,
            dirty: false,
            last_commit: Instant::now(),
            ops: Vec::new(),
            shared,
            abandoned: false,
        })
    }

    /// Drops every document; the next catch-up indexes everything.
    pub fn clear(&mut self) -> Result<()> {
        self.writer
            .delete_all_documents()
            .map_err(Error::internal)?;
        self.live = 0;
        self.floor = STREAM_BASE;
        self.dirty = true;
        Ok(())
    }

    /// Indexes what the database has beyond the covered positions: live events after
    /// `live` up to the committed position, backfilled ones below `floor`.
    pub fn catch_up(&mut self, services: &Services) -> Result<usize> {
        let committed = services.db.committed();
        let floor = services.rooms.backfill_floor()?;
        let from_live = self.live.max(STREAM_BASE) + 1;
        let mut indexed = 0;
        for short in services.rooms.short_room_ids() {
            if self.shared.stopping() {
                self.abandoned = true;
                return Ok(indexed);
            }
            if from_live <= committed {
                for (count, json) in services.rooms.pdus_between(short, from_live, committed) {
                    indexed += usize::from(self.index_json(&services.rooms, short, count, &json));
                    if self.ops.len() >= CATCH_UP_BATCH {
                        self.hand_over();
                    }
                }
            }
            if floor < self.floor {
                for (count, json) in services.rooms.pdus_between(short, floor, self.floor - 1) {
                    indexed += usize::from(self.index_json(&services.rooms, short, count, &json));
                    if self.ops.len() >= CATCH_UP_BATCH {
                        self.hand_over();
                    }
                }
            }
        }
        self.hand_over();
        self.live = self.live.max(committed);
        self.floor = self.floor.min(floor);
        self.dirty = true;
        Ok(indexed)
    }

    /// Adds the event's document, or for a redaction removes its target's if the target
    /// is stored redacted. Returns whether a document was added.
    fn index_json(&mut self, rooms: &Rooms, shortroomid: u64, count: u64, json: &[u8]) -> bool {
        let Ok(event) = serde_json::from_slice::<Value>(json) else {
            return false;
        };
        if event.get("type").and_then(Value::as_str) == Some("m.room.redaction") {
            self.apply_redaction(rooms, &event);
            return false;
        }
        let Some((key, text)) = searchable_text(&event) else {
            return false;
        };
        let str_of = |name: &str| event.get(name).and_then(Value::as_str).unwrap_or_default();
        let f = self.fields;
        let mut doc = TantivyDocument::default();
        doc.add_u64(f.pos, count);
        doc.add_u64(f.short_room, shortroomid);
        doc.add_text(f.room_id, str_of("room_id"));
        doc.add_text(f.sender, str_of("sender"));
        doc.add_text(f.key, key);
        doc.add_u64(
            f.ts,
            event
                .get("origin_server_ts")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        );
        doc.add_text(f.text, text);
        doc.add_text(f.text_raw, text);
        self.ops.push(UserOperation::Add(doc));
        self.dirty = true;
        true
    }

    /// Hands the gathered operations to the writer's thread in one batch (one wake-up).
    fn hand_over(&mut self) {
        if self.ops.is_empty() {
            return;
        }
        if let Err(e) = self.writer.run(std::mem::take(&mut self.ops)) {
            tracing::warn!("search: indexing failed: {e}");
        }
    }

    /// A redaction removes its target's document once the stored target has lost its text
    /// (the redaction was applied); replaying it after a crash removes it again.
    fn apply_redaction(&mut self, rooms: &Rooms, event: &Value) {
        let target = event
            .get("content")
            .and_then(|c| c.get("redacts"))
            .or_else(|| event.get("redacts"))
            .and_then(Value::as_str)
            .and_then(|id| ruma::EventId::parse(id).ok());
        let Some(target) = target else { return };
        let Ok(Some((short, count))) = rooms.get_pduid(&target) else {
            return;
        };
        let still_searchable = rooms
            .pdu_json_at(short, count)
            .ok()
            .flatten()
            .and_then(|json| serde_json::from_slice::<Value>(&json).ok())
            .is_some_and(|target| searchable_text(&target).is_some());
        if !still_searchable {
            self.ops.push(UserOperation::Delete(Term::from_field_u64(
                self.fields.pos,
                count,
            )));
            self.dirty = true;
        }
    }

    fn commit(&mut self) {
        self.hand_over();
        let payload = serde_json::to_string(&Payload {
            live: self.live,
            backfill: self.floor,
        })
        .unwrap_or_default();
        let result = self.writer.prepare_commit().and_then(|mut prepared| {
            prepared.set_payload(&payload);
            prepared.commit()
        });
        match result.and_then(|_| self.reader.reload()) {
            Ok(()) => self.dirty = false,
            Err(e) => tracing::warn!("search: commit failed: {e}"),
        }
        self.last_commit = Instant::now();
        self.shared.committed_now();
    }

    /// Commits and waits for the writer's merges, releasing the index's lock.
    pub fn finish(mut self) -> Result<()> {
        if !self.abandoned {
            self.commit();
        }
        self.writer.wait_merging_threads().map_err(Error::internal)
    }

    /// The thread's body: catch up, then follow the feed until told to stop or the
    /// services are gone.
    pub(super) fn run(mut self, services: Weak<Services>, rx: Receiver<Msg>) {
        if let Some(s) = services.upgrade() {
            match self.catch_up(&s) {
                Ok(n) if n > 0 => tracing::info!(indexed = n, "search index caught up"),
                Ok(_) => {}
                Err(e) => tracing::warn!("search: catching up failed: {}", e.message),
            }
            if self.abandoned {
                drop(s);
                let _ = self.finish();
                return;
            }
            self.commit();
        }
        self.shared.set_following(true);
        let mut pending: VecDeque<(u64, u64)> = VecDeque::new();
        let mut waiting: Vec<tokio::sync::oneshot::Sender<()>> = Vec::new();
        loop {
            let every = if self.shared.searched_lately() {
                COMMIT_EVERY
            } else {
                IDLE_COMMIT_EVERY
            };
            let wait = if !pending.is_empty() {
                // The write of a sent position becomes visible within moments.
                Duration::from_millis(5)
            } else if self.dirty {
                every.saturating_sub(self.last_commit.elapsed())
            } else {
                Duration::from_secs(3600)
            };
            let (mut stop, mut backfilled, mut gone) = (false, false, false);
            let mut take =
                |msg: Msg, pending: &mut VecDeque<(u64, u64)>, waiting: &mut Vec<_>| match msg {
                    Msg::Appended { shortroomid, count } => {
                        pending.push_back((shortroomid, count));
                    }
                    Msg::Backfilled => backfilled = true,
                    Msg::Refresh(done) => waiting.push(done),
                    Msg::Stop => stop = true,
                };
            match rx.recv_timeout(wait) {
                Ok(msg) => {
                    let gather = matches!(msg, Msg::Appended { .. });
                    take(msg, &mut pending, &mut waiting);
                    if gather {
                        std::thread::sleep(GATHER);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => gone = true,
            }
            let Some(s) = services.upgrade() else {
                break;
            };
            // Read the committed position before draining: every event at or below it has
            // its message in the channel by then (sent before its write).
            let committed = s.db.committed();
            while let Ok(msg) = rx.try_recv() {
                take(msg, &mut pending, &mut waiting);
            }
            while let Some(&(short, count)) = pending.front() {
                if count > committed {
                    break;
                }
                pending.pop_front();
                if count <= self.live {
                    continue;
                }
                // Nothing there: the batch that took this position failed, and the
                // position goes to the next commit (whose message follows).
                if let Ok(Some(json)) = s.rooms.pdu_json_at(short, count) {
                    self.index_json(&s.rooms, short, count, &json);
                    self.live = count;
                }
            }
            if pending.is_empty() {
                self.live = self.live.max(committed);
            }
            self.hand_over();
            if backfilled && let Err(e) = self.catch_up(&s) {
                tracing::warn!("search: indexing backfilled events failed: {}", e.message);
            }
            drop(s);
            if stop || gone || self.abandoned {
                break;
            }
            if self.dirty && (!waiting.is_empty() || self.last_commit.elapsed() >= every) {
                self.commit();
            }
            for done in waiting.drain(..) {
                let _ = done.send(());
            }
        }
        self.shared.set_following(false);
        if let Err(e) = self.finish() {
            tracing::warn!("search: closing the index failed: {}", e.message);
        }
    }
}
