//! Rooms: the signed event graph (timeline), state snapshots, short ids and memberships.
//! One service owns every room table; the work is split by topic across this folder.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock, atomic::AtomicU64},
};

use ruma::{OwnedEventId, OwnedRoomId, RoomId, RoomVersionId};

use crate::{
    database::{Database, Table, key::to_u64},
    error::Result,
    service::{globals::Globals, notifier::Notifier, push::Push, search, sending::Sending},
};

pub mod alias;
pub mod backfill;
pub mod builder;
pub mod directory;
pub mod federation_format;
pub mod incoming;
pub mod membership;
pub mod outgoing;
pub mod pdu;
pub mod power;
pub mod relations;
pub mod remote;
pub mod resident;
pub mod resolve;
pub mod search_source;
pub mod server_access;
pub mod short;
pub mod state;
pub mod timeline;

pub use builder::{PduBuilder, Transaction};
pub use pdu::{Pdu, PduEvent};

pub struct Rooms {
    pub(crate) db: Arc<Database>,
    pub(crate) globals: Arc<Globals>,
    pub(crate) notifier: Arc<Notifier>,
    pub(crate) sending: Arc<Sending>,
    /// Push rules run on every appended event (`builder.rs`).
    pub(crate) push: Arc<Push>,
    /// Tells the search indexer about every stored event (`builder.rs`, `backfill.rs`).
    pub(crate) search_feed: search::Feed,
    global: Table,
    roomid_shortroomid: Table,
    eventid_shorteventid: Table,
    shorteventid_eventid: Table,
    statekey_shortstatekey: Table,
    shortstatekey_statekey: Table,
    shortstatehash_state: Table,
    shorteventid_shortstatehash: Table,
    roomid_shortstatehash: Table,
    roomid_forwardextremities: Table,
    pdus: Table,
    eventid_pduid: Table,
    eventid_outlierpdu: Table,
    user_rooms: Table,
    room_members: Table,
    alias_roomid: Table,
    roomid_aliases: Table,
    public_rooms: Table,
    relations: Table,
    room_info: Table,
    txnid_eventid: Table,
    short_lock: Mutex<()>,
    next_short: AtomicU64,
    state_cache: Mutex<HashMap<u64, Arc<state::StateMap>>>,
    pdu_cache: Mutex<HashMap<OwnedEventId, Pdu>>,
    /// The stream position of each room's newest event, so `/sync` skips quiet rooms
    /// without touching the database.
    last_count: RwLock<HashMap<OwnedRoomId, u64>>,
    room_locks: Mutex<HashMap<OwnedRoomId, Arc<tokio::sync::Mutex<()>>>>,
    versions: RwLock<HashMap<OwnedRoomId, RoomVersionId>>,
    member_keys: RwLock<HashMap<u64, bool>>,
    /// Joined members per server of each room (`outgoing.rs`).
    room_servers: Mutex<HashMap<OwnedRoomId, outgoing::ServerCounts>>,
    alias_lock: Mutex<()>,
}

impl Rooms {
    pub fn new(
        db: &Arc<Database>,
        globals: Arc<Globals>,
        notifier: Arc<Notifier>,
        sending: Arc<Sending>,
        push: Arc<Push>,
        search_feed: search::Feed,
    ) -> Result<Self> {
        let global = db.table("global");
        let next_short = global
            .get(short::SHORTID_KEY)?
            .map(|v| to_u64(&v))
            .unwrap_or(0);
        Ok(Self {
            db: Arc::clone(db),
            globals,
            notifier,
            sending,
            push,
            search_feed,
            global,
            roomid_shortroomid: db.table("roomid_shortroomid"),
            eventid_shorteventid: db.table("eventid_shorteventid"),
            shorteventid_eventid: db.table("shorteventid_eventid"),
            statekey_shortstatekey: db.table("statekey_shortstatekey"),
            shortstatekey_statekey: db.table("shortstatekey_statekey"),
            shortstatehash_state: db.table("shortstatehash_state"),
            shorteventid_shortstatehash: db.table("shorteventid_shortstatehash"),
            roomid_shortstatehash: db.table("roomid_shortstatehash"),
            roomid_forwardextremities: db.table("roomid_forwardextremities"),
            pdus: db.table("pdus"),
            eventid_pduid: db.table("eventid_pduid"),
            eventid_outlierpdu: db.table("eventid_outlierpdu"),
            user_rooms: db.table("user_rooms"),
            room_members: db.table("room_members"),
            alias_roomid: db.table("alias_roomid"),
            roomid_aliases: db.table("roomid_aliases"),
            public_rooms: db.table("public_rooms"),
            relations: db.table("relations"),
            room_info: db.table("room_info"),
            txnid_eventid: db.table("txnid_eventid"),
            short_lock: Mutex::new(()),
            next_short: AtomicU64::new(next_short),
            state_cache: Mutex::default(),
            pdu_cache: Mutex::default(),
            last_count: RwLock::default(),
            room_locks: Mutex::default(),
            versions: RwLock::default(),
            member_keys: RwLock::default(),
            room_servers: Mutex::default(),
            alias_lock: Mutex::new(()),
        })
    }

    /// Serialises event creation in one room: `prev_events` and the state an event is
    /// authorised against must not change while it is built.
    pub async fn lock_room(&self, room_id: &RoomId) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = Arc::clone(
            self.room_locks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(room_id.to_owned())
                .or_default(),
        );
        lock.lock_owned().await
    }

    pub fn exists(&self, room_id: &RoomId) -> Result<bool> {
        Ok(self.current_shortstatehash(room_id)?.is_some())
    }

    pub fn room_version(&self, room_id: &RoomId) -> Result<Option<RoomVersionId>> {
        if let Some(v) = self
            .versions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(room_id)
        {
            return Ok(Some(v.clone()));
        }
        let Some(bytes) = self.room_info.get(room_id.as_bytes())? else {
            return Ok(None);
        };
        let version = RoomVersionId::try_from(String::from_utf8_lossy(&bytes).as_ref())
            .map_err(crate::error::Error::internal)?;
        self.versions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(room_id.to_owned(), version.clone());
        Ok(Some(version))
    }
}
