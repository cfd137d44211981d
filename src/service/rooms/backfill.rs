//! History from before this server joined a room, fetched with `/backfill` when a client
//! pages back past the oldest event here. Backfilled events take stream positions below
//! [`STREAM_BASE`], counting down, so `/messages` keeps reading one key range; they never
//! reach `/sync` (their positions are older than any token) and change no current state.

use ruma::{
    OwnedEventId, RoomId, ServerName, UInt, api::federation::backfill::get_backfill,
    events::TimelineEventType,
};

use super::{Rooms, incoming::CheckedPdu};
use crate::{
    database::{
        STREAM_BASE,
        key::{pair, to_u64},
    },
    error::{Error, Result},
    service::federation::Federation,
};

pub(super) const BACKFILL_COUNTER: &[u8] = b"backfill_counter";
/// Events asked for per `/backfill` request (Synapse asks for 100 at most).
const BACKFILL_LIMIT: u32 = 50;

impl Rooms {
    /// The room's oldest event here, if its history goes further back (it is not the create
    /// event).
    fn backfill_point(&self, room_id: &RoomId) -> Result<Option<OwnedEventId>> {
        let Some(short) = self.get_shortroomid(room_id)? else {
            return Ok(None);
        };
        let Some((_, bytes)) = self
            .pdus
            .scan_from(pair(short, 0).to_vec(), short.to_be_bytes().to_vec())
            .next()
        else {
            return Ok(None);
        };
        let pdu = self.cached_pdu(&bytes)?;
        if pdu.kind == TimelineEventType::RoomCreate || pdu.prev_events.is_empty() {
            return Ok(None);
        }
        Ok(Some(pdu.event_id.clone()))
    }

    /// Asks the room's other servers for the events before our oldest one. Returns how many
    /// events were added.
    pub async fn backfill(&self, federation: &Federation, room_id: &RoomId) -> Result<usize> {
        let Some(oldest) = self.backfill_point(room_id)? else {
            return Ok(0);
        };
        let version = self
            .room_version(room_id)?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        let ours = self.globals.server_name().to_owned();
        let mut servers: Vec<_> = Vec::new();
        for member in self.joined_members(room_id)? {
            let server = member.server_name().to_owned();
            if server != ours && !servers.contains(&server) {
                servers.push(server);
            }
        }
        for server in servers {
            let request = get_backfill::v1::Request::new(
                room_id.to_owned(),
                vec![oldest.clone()],
                UInt::from(BACKFILL_LIMIT),
            );
            match federation.send(&server, request).await {
                Ok(response) => {
                    return self
                        .store_backfilled(federation, &server, room_id, &version, &response.pdus)
                        .await;
                }
                Err(e) => tracing::info!(%server, %room_id, "backfill failed: {e}"),
            }
        }
        Ok(0)
    }

    async fn store_backfilled(
        &self,
        federation: &Federation,
        origin: &ServerName,
        room_id: &RoomId,
        version: &ruma::RoomVersionId,
        raws: &[Box<serde_json::value::RawValue>],
    ) -> Result<usize> {
        let rules = version
            .rules()
            .ok_or_else(|| Error::unsupported_room_version("Unsupported room version"))?;
        let mut accepted: Vec<CheckedPdu> = Vec::new();
        for raw in raws.iter().take(BACKFILL_LIMIT as usize * 2) {
            let checked = match self.check_pdu(federation, version, raw).await {
                Ok(c) if c.pdu.room_id == room_id => c,
                Ok(_) => continue,
                Err(e) => {
                    tracing::info!(%origin, "dropping an invalid backfilled event: {e}");
                    continue;
                }
            };
            if self.get_pduid(&checked.event_id)?.is_some() {
                continue;
            }
            if let Err(e) = self
                .fetch_auth_chain(federation, origin, room_id, version, &checked.pdu)
                .await
                .and_then(|()| self.auth_against_auth_events(&rules, &checked.pdu))
            {
                tracing::info!(%origin, event_id = %checked.event_id, "rejecting a backfilled event: {e}");
                continue;
            }
            accepted.push(checked);
        }
        // Newest first, so positions count down in the order of the room's history.
        accepted.sort_by(|a, b| {
            b.pdu
                .depth
                .cmp(&a.pdu.depth)
                .then(b.pdu.origin_server_ts.cmp(&a.pdu.origin_server_ts))
        });
        let shortroomid = self.get_or_create_shortroomid(room_id)?;
        let global = self.global.clone();
        let stored = accepted.len();
        self.db.write(|b| {
            let mut next = global
                .get(BACKFILL_COUNTER)
                .ok()
                .flatten()
                .map(|v| to_u64(&v))
                .unwrap_or(STREAM_BASE);
            for checked in &accepted {
                next -= 1;
                let json = serde_json::to_vec(&checked.object).unwrap_or_default();
                let pduid = pair(shortroomid, next);
                b.put(&self.pdus, pduid, &json);
                b.put(&self.eventid_pduid, checked.event_id.as_bytes(), pduid);
                b.delete(&self.eventid_outlierpdu, checked.event_id.as_bytes());
            }
            b.put(&global, BACKFILL_COUNTER, next.to_be_bytes());
        })?;
        for checked in &accepted {
            self.forget_cached(&checked.event_id);
        }
        if stored > 0 {
            self.search_feed.backfilled();
        }
        Ok(stored)
    }

    /// The state to judge an event's visibility by: the state before it, or for backfilled
    /// history (which has none here) the oldest state this server knows in the room.
    pub fn visibility_state(
        &self,
        room_id: &RoomId,
        event_id: &ruma::EventId,
    ) -> Result<Option<u64>> {
        if let Some(hash) = self.state_before(event_id)? {
            return Ok(Some(hash));
        }
        let Some(short) = self.get_shortroomid(room_id)? else {
            return Ok(None);
        };
        for (_, bytes) in self
            .pdus
            .scan_from(
                pair(short, STREAM_BASE).to_vec(),
                short.to_be_bytes().to_vec(),
            )
            .take(16)
        {
            let pdu = self.cached_pdu(&bytes)?;
            if let Some(hash) = self.state_before(&pdu.event_id)? {
                return Ok(Some(hash));
            }
        }
        Ok(None)
    }
}
