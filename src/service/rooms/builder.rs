//! Creating a local event: choose `prev_events` and `auth_events`, hash and sign it, derive
//! its id, authorise it against the room's state with the room version's auth rules, and
//! append it. An event that fails the rules is never stored.

use std::sync::Arc;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId,
    OwnedRoomId, RoomId, RoomVersionId, UserId,
    canonical_json::{RedactedBecause, redact_in_place},
    events::{StateEventType, TimelineEventType},
    room_version_rules::{EventIdFormatVersion, RoomVersionRules},
    state_res,
};
use serde::Serialize;
use serde_json::value::{RawValue as RawJsonValue, to_raw_value};

use super::{
    Rooms,
    pdu::{Pdu, PduEvent},
    state::StateMap,
};
use crate::{
    database::key::{pair, u64_key},
    error::{Error, Result},
    service::globals::random_string,
};

/// What a local event is made of before the server fills in the graph fields.
pub struct PduBuilder {
    pub event_type: TimelineEventType,
    pub content: Box<RawJsonValue>,
    pub state_key: Option<String>,
    pub redacts: Option<OwnedEventId>,
    pub timestamp: Option<MilliSecondsSinceUnixEpoch>,
    /// The client request's transaction, for idempotency and `unsigned.transaction_id`.
    pub transaction: Option<Transaction>,
    /// Explicit `prev_events` (a fork); by default the room's forward extremities.
    pub prev_events: Option<Vec<OwnedEventId>>,
}

/// An event ready to be hashed and signed, with what appending it needs.
pub struct Prepared {
    /// The event without hashes, signatures or (from room version 3) id.
    pub object: CanonicalJsonObject,
    pub version: RoomVersionId,
    pub rules: RoomVersionRules,
    state_hash: Option<u64>,
    /// The state the event is authorised against.
    pub state: Arc<StateMap>,
    transaction: Option<Transaction>,
    tips_before: Vec<OwnedEventId>,
    is_create: bool,
}

/// A client's transaction id (spec: "Transaction identifiers"). It is scoped to the device
/// and to the endpoint, and, as in Synapse, to the room: the same id sent to another room
/// or to `/redact` is another request.
#[derive(Clone, Debug)]
pub struct Transaction {
    pub device: String,
    /// `"send"` or `"redact"`.
    pub endpoint: &'static str,
    pub txn: String,
}

impl PduBuilder {
    pub fn new(event_type: TimelineEventType, content: Box<RawJsonValue>) -> Self {
        Self {
            event_type,
            content,
            state_key: None,
            redacts: None,
            timestamp: None,
            transaction: None,
            prev_events: None,
        }
    }

    pub fn state(
        event_type: StateEventType,
        state_key: impl Into<String>,
        content: &impl Serialize,
    ) -> Self {
        let mut b = Self::new(
            event_type.to_string().into(),
            to_raw_value(content).expect("event content serialises"),
        );
        b.state_key = Some(state_key.into());
        b
    }

    pub fn state_raw(
        event_type: StateEventType,
        state_key: impl Into<String>,
        content: Box<RawJsonValue>,
    ) -> Self {
        let mut b = Self::new(event_type.to_string().into(), content);
        b.state_key = Some(state_key.into());
        b
    }
}

impl Rooms {
    /// Builds, authorises and appends an event in an existing room.
    pub async fn build_and_append(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        builder: PduBuilder,
    ) -> Result<Pdu> {
        let _lock = self.lock_room(room_id).await;
        // A retry that raced its original request (both passed the route's transaction
        // check) finds the original's event here: it was appended under this lock, in the
        // same batch as its transaction id.
        if let Some(transaction) = &builder.transaction
            && let Some(event_id) = self.existing_txn(sender, room_id, transaction)?
            && let Some(pdu) = self.get_pdu(&event_id)?
        {
            return Ok(pdu);
        }
        self.build_and_append_locked(sender, Some(room_id), builder)
    }

    /// Builds and appends with the room lock already held (or, for `m.room.create`, with no
    /// room yet).
    pub fn build_and_append_locked(
        &self,
        sender: &UserId,
        room_id: Option<&RoomId>,
        builder: PduBuilder,
    ) -> Result<Pdu> {
        let prepared = self.prepare_event(sender, room_id, builder)?;
        let (object, pdu) = self.hash_and_sign(prepared.object.clone(), &prepared.rules)?;
        self.auth_check(&prepared.rules, &pdu, &prepared.state)?;
        self.append_prepared(prepared, object, pdu)
    }

    /// Everything of a new event but its hashes, signatures and id: the template a
    /// `make_join` answers with, or the first step of a local event. Hold the room lock
    /// from here until the event is appended.
    pub fn prepare_event(
        &self,
        sender: &UserId,
        room_id: Option<&RoomId>,
        builder: PduBuilder,
    ) -> Result<Prepared> {
        let is_create = builder.event_type == TimelineEventType::RoomCreate;
        // Read once: the room lock keeps the tips as they are until the event is appended.
        let tips_before = match room_id {
            Some(room_id) if !is_create => self.forward_extremities(room_id)?,
            _ => vec![],
        };
        // The state the event is authorised against: the current state on the fast path
        // (one forward extremity), else the resolution of the states at its prev_events.
        let (version, state_hash, state, prev_events): (
            RoomVersionId,
            Option<u64>,
            Arc<StateMap>,
            Vec<OwnedEventId>,
        ) = match room_id {
            Some(room_id) if !is_create => {
                let version = self
                    .room_version(room_id)?
                    .ok_or_else(|| Error::not_found("Unknown room"))?;
                let extremities = tips_before.clone();
                match builder.prev_events.clone() {
                    Some(prev) if prev != extremities => {
                        if prev.is_empty() || prev.len() > 20 {
                            return Err(Error::bad_json("prev_events must list 1 to 20 events"));
                        }
                        for id in &prev {
                            if self.get_pduid(id)?.is_none_or(|(_, _)| {
                                self.get_pdu(id)
                                    .ok()
                                    .flatten()
                                    .is_none_or(|p| p.room_id != room_id)
                            }) {
                                return Err(Error::bad_json(format!(
                                    "prev_event {id} is not in this room"
                                )));
                            }
                        }
                        let state = self.state_at_tips(&version, &prev)?;
                        (version, None, state, prev)
                    }
                    _ if extremities.len() == 1 => {
                        let hash = self
                            .current_shortstatehash(room_id)?
                            .ok_or_else(|| Error::not_found("Unknown room"))?;
                        (version, Some(hash), self.load_state(hash)?, extremities)
                    }
                    _ => {
                        let mut prev = extremities;
                        prev.truncate(20);
                        let state = self.state_at_tips(&version, &prev)?;
                        (version, None, state, prev)
                    }
                }
            }
            _ => {
                #[derive(serde::Deserialize)]
                struct Create {
                    room_version: Option<RoomVersionId>,
                }
                let create: Create = serde_json::from_str(builder.content.get())
                    .map_err(|e| Error::bad_json(format!("invalid create content: {e}")))?;
                (
                    create.room_version.unwrap_or(RoomVersionId::V1),
                    None,
                    Arc::default(),
                    vec![],
                )
            }
        };
        let rules = version
            .rules()
            .ok_or_else(|| Error::unsupported_room_version("Unsupported room version"))?;

        let mut depth = 0u64;
        for prev in &prev_events {
            if let Some(pdu) = self.get_pdu(prev)? {
                depth = depth.max(pdu.depth.into());
            }
        }
        depth += 1;

        let auth_types = state_res::auth_types_for_event(
            &builder.event_type,
            sender,
            builder.state_key.as_deref(),
            &builder.content,
            &rules.authorization,
        )
        .map_err(Error::bad_json)?;
        let mut auth_events = Vec::new();
        for (kind, state_key) in &auth_types {
            if rules.authorization.room_create_event_id_as_room_id
                && *kind == StateEventType::RoomCreate
            {
                continue;
            }
            if let Some(pdu) = self.state_get(&state, kind, state_key)? {
                auth_events.push(pdu.event_id.clone());
            }
        }

        let mut unsigned = CanonicalJsonObject::new();
        if let Some(state_key) = &builder.state_key
            && let Some(prev) =
                self.state_get(&state, &builder.event_type.to_string().into(), state_key)?
        {
            unsigned.insert(
                "replaces_state".to_owned(),
                CanonicalJsonValue::String(prev.event_id.to_string()),
            );
            unsigned.insert(
                "prev_sender".to_owned(),
                CanonicalJsonValue::String(prev.sender.to_string()),
            );
            if let Ok(content) = serde_json::from_str::<CanonicalJsonValue>(prev.content.get()) {
                unsigned.insert("prev_content".to_owned(), content);
            }
        }

        let with_hashes = matches!(rules.event_id_format, EventIdFormatVersion::V1);
        let mut object = CanonicalJsonObject::new();
        let refs = |ids: &[OwnedEventId]| -> Result<CanonicalJsonValue> {
            Ok(CanonicalJsonValue::Array(
                ids.iter()
                    .map(|id| self.event_reference(id, with_hashes))
                    .collect::<Result<_>>()?,
            ))
        };
        let mut content: CanonicalJsonValue = serde_json::from_str(builder.content.get())
            .map_err(|e| Error::bad_json(format!("content is not canonical JSON: {e}")))?;
        if let (Some(redacts), CanonicalJsonValue::Object(map)) = (&builder.redacts, &mut content)
            && rules.redaction.content_field_redacts
        {
            map.insert(
                "redacts".to_owned(),
                CanonicalJsonValue::String(redacts.to_string()),
            );
        }
        object.insert("auth_events".to_owned(), refs(&auth_events)?);
        object.insert("content".to_owned(), content);
        object.insert(
            "depth".to_owned(),
            CanonicalJsonValue::Integer(depth.try_into().map_err(Error::internal)?),
        );
        if !rules.redaction.content_field_redacts {
            object.insert(
                "origin".to_owned(),
                CanonicalJsonValue::String(self.globals.server_name().to_string()),
            );
        }
        let ts = builder
            .timestamp
            .unwrap_or_else(MilliSecondsSinceUnixEpoch::now);
        object.insert(
            "origin_server_ts".to_owned(),
            CanonicalJsonValue::Integer(ts.0.into()),
        );
        object.insert("prev_events".to_owned(), refs(&prev_events)?);
        if let Some(room_id) = room_id
            && !(is_create && rules.authorization.room_create_event_id_as_room_id)
        {
            object.insert(
                "room_id".to_owned(),
                CanonicalJsonValue::String(room_id.to_string()),
            );
        }
        object.insert(
            "sender".to_owned(),
            CanonicalJsonValue::String(sender.to_string()),
        );
        if let Some(state_key) = &builder.state_key {
            object.insert(
                "state_key".to_owned(),
                CanonicalJsonValue::String(state_key.clone()),
            );
        }
        object.insert(
            "type".to_owned(),
            CanonicalJsonValue::String(builder.event_type.to_string()),
        );
        if let Some(redacts) = &builder.redacts
            && !rules.redaction.content_field_redacts
        {
            object.insert(
                "redacts".to_owned(),
                CanonicalJsonValue::String(redacts.to_string()),
            );
        }
        if !unsigned.is_empty() {
            object.insert("unsigned".to_owned(), CanonicalJsonValue::Object(unsigned));
        }

        Ok(Prepared {
            object,
            version,
            rules,
            state_hash,
            state,
            transaction: builder.transaction,
            tips_before,
            is_create,
        })
    }

    /// Adds the content hash, this server's signature and, in room versions 1 and 2, a
    /// fresh event id; derives the id from the reference hash in later versions.
    pub fn hash_and_sign(
        &self,
        mut object: CanonicalJsonObject,
        rules: &RoomVersionRules,
    ) -> Result<(CanonicalJsonObject, PduEvent)> {
        let with_hashes = matches!(rules.event_id_format, EventIdFormatVersion::V1);
        if with_hashes && !object.contains_key("event_id") {
            let id = format!("${}:{}", random_string(18), self.globals.server_name());
            object.insert("event_id".to_owned(), CanonicalJsonValue::String(id));
        }
        ruma::signatures::hash_and_sign_event(
            self.globals.server_name().as_str(),
            &self.globals.keypair,
            &mut object,
            &rules.redaction,
        )
        .map_err(|e| match e {
            ruma::signatures::JsonError::PduTooLarge => {
                Error::too_large("Event is larger than 64 KiB")
            }
            e => Error::bad_json(format!("event cannot be signed: {e}")),
        })?;
        if !with_hashes {
            let hash = ruma::signatures::reference_hash(&object, rules)
                .map_err(|e| Error::too_large(format!("event is too large: {e}")))?;
            object.insert(
                "event_id".to_owned(),
                CanonicalJsonValue::String(format!("${hash}")),
            );
        }
        let pdu = PduEvent::from_canonical(&object)?;
        if serde_json::to_vec(&object)?.len() > 65_535 {
            return Err(Error::too_large("Event is larger than 64 KiB"));
        }
        Ok((object, pdu))
    }

    /// Appends a prepared event once signed (and authorised: callers check).
    pub fn append_prepared(
        &self,
        prepared: Prepared,
        object: CanonicalJsonObject,
        pdu: PduEvent,
    ) -> Result<Pdu> {
        if prepared.is_create {
            self.room_info
                .put(pdu.room_id.as_bytes(), prepared.version.as_str())?;
        }
        self.append_pdu(
            object,
            pdu,
            prepared.state_hash,
            &prepared.state,
            &prepared.version,
            &prepared.rules,
            prepared.transaction,
            prepared.tips_before,
            true,
            true,
        )
    }

    /// The room version's authorisation rules, against the state before the event.
    pub fn auth_check(
        &self,
        rules: &RoomVersionRules,
        pdu: &PduEvent,
        state: &StateMap,
    ) -> Result<()> {
        state_res::check_state_independent_auth_rules(&rules.authorization, pdu, |id: &EventId| {
            self.get_pdu(id).ok().flatten()
        })
        .map_err(|e| Error::forbidden(format!("Event is not allowed: {e}")))?;
        state_res::check_state_dependent_auth_rules(
            &rules.authorization,
            pdu,
            |kind: &StateEventType, key: &str| self.state_get(state, kind, key).ok().flatten(),
        )
        .map_err(|e| Error::forbidden(format!("Event is not allowed: {e}")))
    }

    /// Writes an authorised event, its state snapshot and every index in one batch, then
    /// wakes the users it concerns.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn append_pdu(
        &self,
        mut object: CanonicalJsonObject,
        pdu: PduEvent,
        state_hash: Option<u64>,
        state: &StateMap,
        version: &RoomVersionId,
        rules: &RoomVersionRules,
        transaction: Option<Transaction>,
        tips_before: Vec<OwnedEventId>,
        apply_redaction: bool,
        // Send the event to the other servers in the room: for events made here and for
        // those a remote server asked us, as the resident server, to add (send_join ...).
        broadcast: bool,
    ) -> Result<Pdu> {
        let room_id: OwnedRoomId = pdu.room_id.clone();
        let shortroomid = self.get_or_create_shortroomid(&room_id)?;
        let shorteventid = self.get_or_create_shorteventid(&pdu.event_id)?;
        let shortstatekey = match &pdu.state_key {
            Some(k) => Some(self.get_or_create_shortstatekey(&pdu.state_event_type(), k)?),
            None => None,
        };
        // A redaction only ever applies to an event of its own room.
        let redaction_target = match &pdu.redacts {
            Some(target)
                if apply_redaction
                    && pdu.kind == TimelineEventType::RoomRedaction
                    && self
                        .get_pdu(target)?
                        .is_some_and(|t| t.room_id == pdu.room_id) =>
            {
                self.get_pdu_json(target)?
                    .map(|json| (target.clone(), json))
            }
            _ => None,
        };
        let member_change = self.membership_change(&pdu, state)?;
        let pdu = Arc::new(pdu);

        // Tips that stay after this event: where there are others, the room's current state
        // is the resolution of this event's state with theirs.
        let other_tips: Vec<OwnedEventId> = tips_before
            .into_iter()
            .filter(|e| !pdu.prev_events.contains(e))
            .collect();
        let mut state_after = state.clone();
        if let Some(shortstatekey) = shortstatekey {
            state_after.insert(shortstatekey, shorteventid);
        }
        let current = if other_tips.is_empty() {
            None
        } else {
            let mut states = vec![Arc::new(state_after.clone())];
            for tip in &other_tips {
                states.push(self.state_after(tip)?);
            }
            Some(self.resolve_states(version, states, Some(&pdu))?)
        };

        // `event_id` is stored with the PDU for every room version so one read serves all.
        object.insert(
            "event_id".to_owned(),
            CanonicalJsonValue::String(pdu.event_id.to_string()),
        );
        let json = serde_json::to_vec(&object)?;
        // Run before the commit (it only reads); a failure costs notifications, not the event.
        let pushes = self
            .push
            .evaluate(self, &pdu, state, self.globals.server_name())
            .unwrap_or_else(|e| {
                tracing::warn!(event_id = %pdu.event_id, "push rules failed: {}", e.message);
                Vec::new()
            });

        let count = self.db.commit(|c| {
            let count = c.next_count();
            let pduid = pair(shortroomid, count);
            c.put(&self.pdus, pduid, &json);
            // Under the commit lock, so the indexer hears of events in position order.
            self.search_feed.appended(shortroomid, count);
            c.put(&self.eventid_pduid, pdu.event_id.as_bytes(), pduid);

            let before = match state_hash {
                Some(h) => h,
                None => {
                    let parent = self.current_shortstatehash(&room_id)?;
                    self.save_state(c, parent, state.clone())?
                }
            };
            c.put(
                &self.shorteventid_shortstatehash,
                u64_key(shorteventid),
                u64_key(before),
            );
            let after = if shortstatekey.is_some() {
                self.save_state(c, Some(before), state_after.clone())?
            } else {
                before
            };
            let current = match &current {
                Some(resolved) => self.save_state(c, Some(after), (**resolved).clone())?,
                None => after,
            };
            c.put(
                &self.roomid_shortstatehash,
                room_id.as_bytes(),
                u64_key(current),
            );

            let mut tips = other_tips.clone();
            tips.push(pdu.event_id.clone());
            c.put(
                &self.roomid_forwardextremities,
                room_id.as_bytes(),
                Self::encode_extremities(&tips),
            );

            if let Some(transaction) = &transaction {
                for (k, v) in Self::txn_keys(&pdu.sender, &room_id, transaction, &pdu.event_id) {
                    c.put(&self.txnid_eventid, k, v);
                }
            }
            if let Some((target, mut json)) = redaction_target.clone() {
                let because = serde_json::from_slice(&json_without_unsigned(&object)?)?;
                redact_in_place(
                    &mut json,
                    &rules.redaction,
                    Some(RedactedBecause::from_json(because)),
                )
                .map_err(Error::internal)?;
                let key = self.eventid_pduid.get(target.as_bytes())?;
                match key {
                    Some(k) => c.put(&self.pdus, k, serde_json::to_vec(&json)?),
                    None => c.put(
                        &self.eventid_outlierpdu,
                        target.as_bytes(),
                        serde_json::to_vec(&json)?,
                    ),
                }
            }
            self.index_relation(c, &pdu, pduid)?;
            if let Some(change) = &member_change {
                self.write_membership(c, &room_id, change, count)?;
            }
            self.queue_outgoing(c, &pdu, &object, rules, broadcast)?;
            self.push
                .record(c, &pdu, count, pdu.origin_server_ts.into(), &pushes)?;
            self.set_last_count(&room_id, count);
            Ok(count)
        });
        let count = count.inspect_err(|_| self.forget_joined_servers(&room_id))?;
        self.sending.wake();
        if pushes.iter().any(|o| !o.pushers.is_empty()) {
            self.push.wake_sender();
        }
        if let Some((target, _)) = redaction_target {
            self.forget_cached(&target);
        }
        let _ = count;

        let mut woken = self.joined_members(&room_id)?;
        if let Some(change) = &member_change {
            woken.push(change.user_id.clone());
        }
        self.notifier.wake_all(woken.iter().map(|u| &**u));
        Ok(pdu)
    }
}

fn json_without_unsigned(object: &CanonicalJsonObject) -> Result<Vec<u8>> {
    let mut copy = object.clone();
    copy.remove("unsigned");
    Ok(serde_json::to_vec(&copy)?)
}
