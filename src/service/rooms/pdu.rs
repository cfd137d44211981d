//! A room event (PDU) as stored: the federation form of the event (hashes, signatures,
//! `prev_events`, `auth_events`) plus its `event_id`, so the same bytes serve clients,
//! peers and the auth rules.

use std::sync::Arc;

use ruma::{
    CanonicalJsonObject, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId,
    OwnedUserId, RoomId, UInt, UserId,
    events::{StateEventType, TimelineEventType},
    serde::Raw,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::{RawValue as RawJsonValue, to_raw_value};

use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct PduEvent {
    pub event_id: OwnedEventId,
    /// The room, also for a v12 `m.room.create` whose PDU has no `room_id` field.
    pub room_id: OwnedRoomId,
    room_id_in_pdu: bool,
    pub sender: OwnedUserId,
    pub origin_server_ts: UInt,
    pub kind: TimelineEventType,
    pub content: Box<RawJsonValue>,
    pub state_key: Option<String>,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub depth: UInt,
    pub redacts: Option<OwnedEventId>,
    pub unsigned: Option<Box<RawJsonValue>>,
}

#[derive(Deserialize)]
struct StoredPdu {
    event_id: OwnedEventId,
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    origin_server_ts: UInt,
    #[serde(rename = "type")]
    kind: TimelineEventType,
    content: Box<RawJsonValue>,
    state_key: Option<String>,
    #[serde(deserialize_with = "event_refs")]
    prev_events: Vec<OwnedEventId>,
    #[serde(deserialize_with = "event_refs")]
    auth_events: Vec<OwnedEventId>,
    depth: UInt,
    redacts: Option<OwnedEventId>,
    unsigned: Option<Box<RawJsonValue>>,
}

/// Room versions 1 and 2 reference events as `[event_id, {hashes}]`, later ones by id.
fn event_refs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<OwnedEventId>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Ref {
        Id(OwnedEventId),
        WithHashes(OwnedEventId, serde::de::IgnoredAny),
    }
    Ok(Vec::<Ref>::deserialize(d)?
        .into_iter()
        .map(|r| match r {
            Ref::Id(id) | Ref::WithHashes(id, _) => id,
        })
        .collect())
}

impl PduEvent {
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let raw: StoredPdu = serde_json::from_slice(bytes)?;
        Self::from_stored(raw)
    }

    pub fn from_canonical(object: &CanonicalJsonObject) -> Result<Self> {
        let raw: StoredPdu = serde_json::from_value(serde_json::to_value(object)?)
            .map_err(|e| Error::bad_json(format!("invalid event: {e}")))?;
        Self::from_stored(raw)
    }

    fn from_stored(raw: StoredPdu) -> Result<Self> {
        let room_id_in_pdu = raw.room_id.is_some();
        let room_id = match raw.room_id {
            Some(id) => id,
            // Room version 12: the room id is the create event's reference hash.
            None if raw.kind == TimelineEventType::RoomCreate => {
                RoomId::parse(format!("!{}", &raw.event_id.as_str()[1..]))
                    .map_err(|e| Error::bad_json(format!("invalid create event id: {e}")))?
            }
            None => return Err(Error::bad_json("event without room_id")),
        };
        let redacts = raw.redacts.or_else(|| {
            (raw.kind == TimelineEventType::RoomRedaction)
                .then(|| {
                    #[derive(Deserialize)]
                    struct R {
                        redacts: Option<OwnedEventId>,
                    }
                    serde_json::from_str::<R>(raw.content.get())
                        .ok()
                        .and_then(|r| r.redacts)
                })
                .flatten()
        });
        Ok(Self {
            event_id: raw.event_id,
            room_id,
            room_id_in_pdu,
            sender: raw.sender,
            origin_server_ts: raw.origin_server_ts,
            kind: raw.kind,
            content: raw.content,
            state_key: raw.state_key,
            prev_events: raw.prev_events,
            auth_events: raw.auth_events,
            depth: raw.depth,
            redacts,
            unsigned: raw.unsigned,
        })
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }

    pub fn state_event_type(&self) -> StateEventType {
        self.kind.to_string().into()
    }

    pub fn content_json<T: for<'a> Deserialize<'a>>(&self) -> Option<T> {
        serde_json::from_str(self.content.get()).ok()
    }

    pub fn content_field(&self, field: &str) -> Option<serde_json::Value> {
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(self.content.get())
            .ok()?
            .remove(field)
    }

    /// The event as a client sees it (the client-server API's `ClientEvent`).
    pub fn to_client_json(&self, transaction_id: Option<&str>) -> Box<RawJsonValue> {
        #[derive(Serialize)]
        struct ClientEvent<'a> {
            content: &'a RawJsonValue,
            event_id: &'a EventId,
            origin_server_ts: UInt,
            room_id: &'a RoomId,
            sender: &'a UserId,
            #[serde(skip_serializing_if = "Option::is_none")]
            state_key: Option<&'a str>,
            #[serde(rename = "type")]
            kind: &'a TimelineEventType,
            #[serde(skip_serializing_if = "Option::is_none")]
            redacts: Option<&'a EventId>,
            unsigned: serde_json::Map<String, serde_json::Value>,
        }
        let mut unsigned: serde_json::Map<String, serde_json::Value> = self
            .unsigned
            .as_ref()
            .and_then(|u| serde_json::from_str(u.get()).ok())
            .unwrap_or_default();
        // Server-to-server bookkeeping that clients do not need.
        unsigned.remove("age_ts");
        let now = MilliSecondsSinceUnixEpoch::now().get();
        unsigned.insert(
            "age".to_owned(),
            serde_json::json!(u64::from(now).saturating_sub(self.origin_server_ts.into())),
        );
        if let Some(txn) = transaction_id {
            unsigned.insert("transaction_id".to_owned(), serde_json::json!(txn));
        }
        let event = ClientEvent {
            content: &self.content,
            event_id: &self.event_id,
            origin_server_ts: self.origin_server_ts,
            room_id: &self.room_id,
            sender: &self.sender,
            state_key: self.state_key.as_deref(),
            kind: &self.kind,
            redacts: self.redacts.as_deref(),
            unsigned,
        };
        to_raw_value(&event).expect("client events serialise")
    }

    pub fn to_raw<T>(&self, transaction_id: Option<&str>) -> Raw<T> {
        Raw::from_json(self.to_client_json(transaction_id))
    }

    /// Stripped state, as invites and knocks show the room.
    pub fn to_stripped_json(&self) -> serde_json::Value {
        serde_json::json!({
            "content": serde_json::from_str::<serde_json::Value>(self.content.get()).unwrap_or_default(),
            "sender": self.sender,
            "state_key": self.state_key,
            "type": self.kind,
        })
    }
}

impl ruma::state_res::Event for PduEvent {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        self.room_id_in_pdu.then_some(&*self.room_id)
    }

    fn sender(&self) -> &UserId {
        &self.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        MilliSecondsSinceUnixEpoch(self.origin_server_ts)
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }

    fn content(&self) -> &RawJsonValue {
        &self.content
    }

    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        false
    }
}

pub type Pdu = Arc<PduEvent>;
