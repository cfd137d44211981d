//! What the search indexer reads of the timeline: PDUs by `(short room, position)` and
//! position ranges across every room, for catching up after a restart or a backfill.

use super::Rooms;
use crate::{
    database::{
        STREAM_BASE,
        key::{pair, split_pair, to_u64},
    },
    error::Result,
};

impl Rooms {
    /// The stored PDU JSON at `(short room, position)`, as it is now (redacted if it was).
    pub fn pdu_json_at(&self, shortroomid: u64, count: u64) -> Result<Option<Vec<u8>>> {
        self.pdus.get(pair(shortroomid, count))
    }

    /// Every room's short id.
    pub fn short_room_ids(&self) -> Vec<u64> {
        self.roomid_shortroomid
            .iter()
            .map(|(_, v)| to_u64(&v))
            .collect()
    }

    /// The room's PDUs with `from <= position <= to`, oldest first.
    pub fn pdus_between(
        &self,
        shortroomid: u64,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = (u64, Box<[u8]>)> + '_ {
        self.pdus
            .scan_from(
                pair(shortroomid, from).to_vec(),
                shortroomid.to_be_bytes().to_vec(),
            )
            .map(|(k, v)| (split_pair(&k).1, v))
            .take_while(move |(count, _)| *count <= to)
    }

    /// The lowest position backfilled history has taken (`STREAM_BASE` if none).
    pub fn backfill_floor(&self) -> Result<u64> {
        Ok(self
            .global
            .get(super::backfill::BACKFILL_COUNTER)?
            .map(|v| to_u64(&v))
            .unwrap_or(STREAM_BASE))
    }
}
