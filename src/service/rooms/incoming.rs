//! Events from other servers. Every PDU goes through the checks the spec lists under
//! "Checks performed on receipt of a PDU", in order: format and size, signatures, content
//! hash (a mismatch keeps the event, redacted), auth against its own `auth_events`, auth
//! against the state before it, and auth against the room's current state (a failure
//! there soft-fails the event: it is kept in the graph but not shown or built on).
//!
//! Missing pieces are fetched from the server that sent the event: its auth chain with
//! `/event_auth`, a gap before it with `/get_missing_events`, and where a gap remains the
//! state at the missing event with `/state_ids` (and `/event` for the events we lack).
//! Fetching happens before the room lock is taken, so a slow peer holds up only its own
//! events.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedRoomId, RoomId,
    RoomVersionId, ServerName, UInt,
    api::federation::{
        authorization::get_event_authorization, event::get_event, event::get_missing_events,
        event::get_room_state_ids,
    },
    events::{StateEventType, TimelineEventType},
    room_version_rules::{EventIdFormatVersion, RoomVersionRules},
    state_res,
};
use serde_json::value::RawValue as RawJsonValue;

use super::{Rooms, pdu::PduEvent, state::StateMap};
use crate::{
    database::key::u64_key,
    error::{Error, Result},
    service::federation::{Federation, PduCheck},
};

/// Largest PDU the spec allows, in bytes of its JSON.
const MAX_PDU_BYTES: usize = 65_536;
/// How many events one `/get_missing_events` may bring back.
const MISSING_EVENTS_LIMIT: u32 = 20;
/// Above this many unknown state events, one `/state` is cheaper than many `/event`s.
const MAX_SINGLE_FETCHES: usize = 100;

/// What became of an incoming PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// In the timeline and, if state, in the room's state.
    Accepted,
    /// Valid, but not allowed by the room's current state: kept out of the timeline.
    SoftFailed,
    /// Already in the graph.
    Known,
}

/// A PDU that passed the format, signature and hash checks.
pub struct CheckedPdu {
    pub event_id: OwnedEventId,
    /// The event as stored: redacted if its hash did not match, with `event_id`.
    pub object: CanonicalJsonObject,
    pub pdu: PduEvent,
}

/// A PDU parsed, with its id in its room version.
pub struct ParsedPdu {
    pub event_id: OwnedEventId,
    object: CanonicalJsonObject,
    /// Bytes as received; the size limit is checked with the signatures, once the id is
    /// known to report the refusal under.
    len: usize,
}

/// Canonical JSON and the event id: what a PDU is known by before any check.
pub fn parse_pdu(version: &RoomVersionId, raw: &RawJsonValue) -> Result<ParsedPdu> {
    let rules = version
        .rules()
        .ok_or_else(|| Error::unsupported_room_version("Unsupported room version"))?;
    let object: CanonicalJsonObject = serde_json::from_str(raw.get())
        .map_err(|e| Error::bad_json(format!("PDU is not canonical JSON: {e}")))?;
    let event_id = event_id_of(&object, &rules)?;
    Ok(ParsedPdu {
        event_id,
        object,
        len: raw.get().len(),
    })
}

/// The room a PDU claims to belong to, read before its version is known.
pub fn pdu_room_id(raw: &RawJsonValue) -> Result<OwnedRoomId> {
    #[derive(serde::Deserialize)]
    struct RoomOnly {
        room_id: OwnedRoomId,
    }
    serde_json::from_str::<RoomOnly>(raw.get())
        .map(|r| r.room_id)
        .map_err(|e| Error::bad_json(format!("PDU without a valid room_id: {e}")))
}

/// The id of an event in its room version: the `event_id` field in versions 1 and 2, the
/// reference hash from version 3 on.
pub fn event_id_of(object: &CanonicalJsonObject, rules: &RoomVersionRules) -> Result<OwnedEventId> {
    match rules.event_id_format {
        EventIdFormatVersion::V1 => match object.get("event_id") {
            Some(CanonicalJsonValue::String(id)) => {
                EventId::parse(id).map_err(|e| Error::bad_json(format!("invalid event_id: {e}")))
            }
            _ => Err(Error::bad_json("PDU without event_id")),
        },
        _ => {
            let hash = ruma::signatures::reference_hash(object, rules)
                .map_err(|e| Error::bad_json(format!("PDU cannot be hashed: {e}")))?;
            EventId::parse(format!("${hash}")).map_err(Error::internal)
        }
    }
}

/// From room version 12 the create event is not listed in `auth_events`: its id is the
/// room id's opaque part.
fn implied_create(rules: &RoomVersionRules, pdu: &PduEvent) -> Option<OwnedEventId> {
    if !rules.authorization.room_create_event_id_as_room_id
        || pdu.kind == TimelineEventType::RoomCreate
    {
        return None;
    }
    EventId::parse(format!("${}", pdu.room_id.as_str().strip_prefix('!')?)).ok()
}

impl Rooms {
    /// Format, size, signature and hash checks. Nothing is stored.
    pub async fn check_pdu(
        &self,
        federation: &Federation,
        version: &RoomVersionId,
        raw: &RawJsonValue,
    ) -> Result<CheckedPdu> {
        self.check_parsed(federation, version, parse_pdu(version, raw)?)
            .await
    }

    /// Signature and hash checks of a parsed PDU.
    pub async fn check_parsed(
        &self,
        federation: &Federation,
        version: &RoomVersionId,
        parsed: ParsedPdu,
    ) -> Result<CheckedPdu> {
        let ParsedPdu {
            event_id,
            mut object,
            len,
        } = parsed;
        if len > MAX_PDU_BYTES {
            return Err(Error::too_large("PDU is larger than 64 KiB"));
        }
        if let PduCheck::Redacted(redacted) = federation.verify_pdu(&object, version).await? {
            tracing::info!(%event_id, "content hash mismatch: keeping the event redacted");
            object = redacted;
        }
        object.insert(
            "event_id".to_owned(),
            CanonicalJsonValue::String(event_id.to_string()),
        );
        let pdu = PduEvent::from_canonical(&object)?;
        Ok(CheckedPdu {
            event_id,
            object,
            pdu,
        })
    }

    /// Whether the event is in this room's graph with a state: a timeline or soft-failed
    /// event, not an outlier.
    pub fn has_state_for(&self, event_id: &EventId) -> Result<bool> {
        Ok(self.state_before(event_id)?.is_some())
    }

    /// Whether the event was soft-failed: it has a state (it is in the graph) but never
    /// entered the timeline. Clients are never shown such an event.
    pub fn is_soft_failed(&self, event_id: &EventId) -> Result<bool> {
        Ok(self.get_pduid(event_id)?.is_none() && self.has_state_for(event_id)?)
    }

    /// The whole pipeline for a PDU that should enter the timeline: a PDU of a transaction,
    /// or one fetched to close a gap (`fill_gaps` false: its own gaps are not chased further).
    pub async fn handle_incoming_pdu(
        &self,
        federation: &Federation,
        origin: &ServerName,
        room_id: &RoomId,
        raw: &RawJsonValue,
        fill_gaps: bool,
    ) -> Result<(OwnedEventId, Incoming)> {
        self.handle_incoming_pdu_inner(federation, origin, room_id, raw, fill_gaps, false)
            .await
    }

    /// The pipeline; `broadcast` when this server, as a resident, adds an event a remote
    /// server could not send to the room itself (`send_join`, `send_leave`, `send_knock`).
    pub(super) async fn handle_incoming_pdu_inner(
        &self,
        federation: &Federation,
        origin: &ServerName,
        room_id: &RoomId,
        raw: &RawJsonValue,
        fill_gaps: bool,
        broadcast: bool,
    ) -> Result<(OwnedEventId, Incoming)> {
        let version = self
            .room_version(room_id)?
            .ok_or_else(|| Error::not_found("This server is not in the room"))?;
        let parsed = parse_pdu(&version, raw)?;
        self.handle_parsed_pdu(
            federation, origin, room_id, &version, parsed, fill_gaps, broadcast,
        )
        .await
    }

    /// The pipeline from a parsed PDU (`/send` parses once, to report the event's id
    /// whatever happens to it).
    #[allow(clippy::too_many_arguments)]
    pub async fn handle_parsed_pdu(
        &self,
        federation: &Federation,
        origin: &ServerName,
        room_id: &RoomId,
        version: &RoomVersionId,
        parsed: ParsedPdu,
        fill_gaps: bool,
        broadcast: bool,
    ) -> Result<(OwnedEventId, Incoming)> {
        let version = version.clone();
        let rules = version
            .rules()
            .ok_or_else(|| Error::unsupported_room_version("Unsupported room version"))?;
        let checked = self.check_parsed(federation, &version, parsed).await?;
        let event_id = checked.event_id.clone();
        if checked.pdu.room_id != room_id {
            return Err(Error::bad_json("PDU of another room"));
        }
        if self.has_state_for(&event_id)? {
            return Ok((event_id, Incoming::Known));
        }
        if checked.pdu.kind == TimelineEventType::RoomCreate {
            return Err(Error::forbidden(
                "A room's create event cannot arrive later",
            ));
        }

        self.fetch_auth_chain(federation, origin, room_id, &version, &checked.pdu)
            .await?;
        self.auth_against_auth_events(&rules, &checked.pdu)?;

        let mut missing = self.missing_prev_events(&checked.pdu)?;
        if !missing.is_empty() && fill_gaps {
            self.fetch_missing_events(federation, origin, room_id, &checked.pdu)
                .await;
            missing = self.missing_prev_events(&checked.pdu)?;
        }
        let mut fetched_states = Vec::new();
        for prev in &missing {
            fetched_states.push(
                self.fetch_state_after(federation, origin, room_id, &version, prev)
                    .await?,
            );
        }

        let _lock = self.lock_room(room_id).await;
        if self.has_state_for(&event_id)? {
            return Ok((event_id, Incoming::Known));
        }
        let mut states = fetched_states;
        for prev in &checked.pdu.prev_events {
            if !missing.contains(prev) {
                states.push(self.state_after(prev)?);
            }
        }
        let state_before = self.resolve_states(&version, states, None)?;
        self.auth_check(&rules, &checked.pdu, &state_before)?;

        let current = self.current_state(room_id)?;
        if self.auth_check(&rules, &checked.pdu, &current).is_err() {
            tracing::info!(%event_id, "soft-failing an event the current state does not allow");
            self.store_soft_failed(&checked, &state_before)?;
            return Ok((event_id, Incoming::SoftFailed));
        }

        let apply_redaction = self.redaction_allowed(&checked.pdu, &current)?;
        let tips = self.forward_extremities(room_id)?;
        self.append_pdu(
            checked.object,
            checked.pdu,
            None,
            &state_before,
            &version,
            &rules,
            None,
            tips,
            apply_redaction,
            broadcast,
        )?;
        Ok((event_id, Incoming::Accepted))
    }

    /// The state-independent rules and the rules against the event's own auth events.
    pub(super) fn auth_against_auth_events(
        &self,
        rules: &RoomVersionRules,
        pdu: &PduEvent,
    ) -> Result<()> {
        let mut auth = HashMap::new();
        for id in pdu
            .auth_events
            .iter()
            .chain(implied_create(rules, pdu).as_ref())
        {
            let event = self
                .get_pdu(id)?
                .ok_or_else(|| Error::forbidden(format!("auth event {id} is unknown")))?;
            if event.room_id != pdu.room_id {
                return Err(Error::forbidden("auth event of another room"));
            }
            if let Some(key) = &event.state_key {
                auth.insert((event.state_event_type(), key.clone()), event);
            }
        }
        state_res::check_state_independent_auth_rules(&rules.authorization, pdu, |id: &EventId| {
            self.get_pdu(id).ok().flatten()
        })
        .map_err(|e| Error::forbidden(format!("Event is not allowed: {e}")))?;
        state_res::check_state_dependent_auth_rules(
            &rules.authorization,
            pdu,
            |kind: &StateEventType, key: &str| auth.get(&(kind.clone(), key.to_owned())).cloned(),
        )
        .map_err(|e| Error::forbidden(format!("Event is not allowed by its auth events: {e}")))
    }

    /// A redaction only takes effect when its sender may redact others' events or redacts
    /// an event of its own server (the rule room versions 3+ leave to the receiver).
    fn redaction_allowed(&self, pdu: &PduEvent, current: &StateMap) -> Result<bool> {
        if pdu.kind != TimelineEventType::RoomRedaction {
            return Ok(true);
        }
        let Some(target) = pdu.redacts.as_ref().map(|t| self.get_pdu(t)).transpose()? else {
            return Ok(false);
        };
        let Some(target) = target else {
            return Ok(false);
        };
        if target.sender.server_name() == pdu.sender.server_name() {
            return Ok(true);
        }
        let power = self.power_levels_at(&pdu.room_id, current)?;
        Ok(power.user_can_redact_event_of_other(&pdu.sender))
    }

    fn missing_prev_events(&self, pdu: &PduEvent) -> Result<Vec<OwnedEventId>> {
        let mut missing = Vec::new();
        for prev in &pdu.prev_events {
            if !self.has_state_for(prev)? {
                missing.push(prev.clone());
            }
        }
        Ok(missing)
    }

    /// Brings in the events between what we have and `pdu` with `/get_missing_events`,
    /// oldest first, each through the whole pipeline. Failures only leave the gap open.
    async fn fetch_missing_events(
        &self,
        federation: &Federation,
        origin: &ServerName,
        room_id: &RoomId,
        pdu: &PduEvent,
    ) {
        let earliest = self.forward_extremities(room_id).unwrap_or_default();
        let mut request = get_missing_events::v1::Request::new(
            room_id.to_owned(),
            earliest,
            vec![pdu.event_id.clone()],
        );
        request.limit = UInt::from(MISSING_EVENTS_LIMIT);
        request.min_depth = UInt::from(0u32);
        let response = match federation.send(origin, request).await {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(%origin, event_id = %pdu.event_id, "get_missing_events failed: {e}");
                return;
            }
        };
        for raw in response.events.iter().take(MISSING_EVENTS_LIMIT as usize) {
            let result =
                Box::pin(self.handle_incoming_pdu(federation, origin, room_id, raw, false)).await;
            if let Err(e) = result {
                tracing::info!(%origin, "a missing event was not accepted: {e}");
            }
        }
    }

    /// Makes sure every event in `pdu`'s auth chain is here, fetching the chain with
    /// `/event_auth` when one is not.
    pub(super) async fn fetch_auth_chain(
        &self,
        federation: &Federation,
        origin: &ServerName,
        room_id: &RoomId,
        version: &RoomVersionId,
        pdu: &PduEvent,
    ) -> Result<()> {
        let mut unknown = false;
        let rules = version
            .rules()
            .ok_or_else(|| Error::unsupported_room_version("Unsupported room version"))?;
        for id in pdu
            .auth_events
            .iter()
            .chain(implied_create(&rules, pdu).as_ref())
        {
            if self.get_pdu(id)?.is_none() {
                unknown = true;
            }
        }
        if !unknown {
            return Ok(());
        }
        let response = federation
            .send(
                origin,
                get_event_authorization::v1::Request::new(room_id.to_owned(), pdu.event_id.clone()),
            )
            .await?;
        self.store_outliers(federation, room_id, version, &response.auth_chain)
            .await
    }

    /// Verifies events we need for their content (auth chains, state at a gap) and stores
    /// those whose auth events allow them, each after its auth events.
    pub async fn store_outliers(
        &self,
        federation: &Federation,
        room_id: &RoomId,
        version: &RoomVersionId,
        raws: &[Box<RawJsonValue>],
    ) -> Result<()> {
        let rules = version
            .rules()
            .ok_or_else(|| Error::unsupported_room_version("Unsupported room version"))?;
        let mut pending: HashMap<OwnedEventId, CheckedPdu> = HashMap::new();
        for raw in raws {
            match self.check_pdu(federation, version, raw).await {
                Ok(checked) if checked.pdu.room_id == room_id => {
                    if self.get_pdu(&checked.event_id)?.is_none() {
                        pending.insert(checked.event_id.clone(), checked);
                    }
                }
                Ok(_) => tracing::info!("dropping an event of another room from a chain"),
                Err(e) => tracing::info!("dropping an invalid event from a chain: {e}"),
            }
        }
        // Store in dependency order: each pass takes the events whose auth events are all
        // here. An event whose auth events never arrive is dropped.
        loop {
            let ready: Vec<OwnedEventId> = pending
                .iter()
                .filter(|(_, c)| {
                    let create = implied_create(&rules, &c.pdu);
                    c.pdu.auth_events.iter().chain(create.as_ref()).all(|a| {
                        !pending.contains_key(a) && self.get_pdu(a).ok().flatten().is_some()
                    })
                })
                .map(|(id, _)| id.clone())
                .collect();
            if ready.is_empty() {
                break;
            }
            for id in ready {
                let checked = pending.remove(&id).expect("ready event is pending");
                let allowed = if checked.pdu.kind == TimelineEventType::RoomCreate {
                    state_res::check_state_independent_auth_rules(
                        &rules.authorization,
                        &checked.pdu,
                        |id: &EventId| self.get_pdu(id).ok().flatten(),
                    )
                    .map_err(|e| Error::forbidden(e.to_string()))
                } else {
                    self.auth_against_auth_events(&rules, &checked.pdu)
                };
                match allowed {
                    Ok(()) => self.store_outlier(&checked)?,
                    Err(e) => tracing::info!(event_id = %id, "rejecting a chain event: {e}"),
                }
            }
        }
        if !pending.is_empty() {
            tracing::info!(
                count = pending.len(),
                "dropping chain events whose auth events are missing"
            );
        }
        Ok(())
    }

    fn store_outlier(&self, checked: &CheckedPdu) -> Result<()> {
        let json = serde_json::to_vec(&checked.object)?;
        self.db.write(|b| {
            b.put(&self.eventid_outlierpdu, checked.event_id.as_bytes(), &json);
        })
    }

    /// A soft-failed event: kept (it may be a `prev_event` of later events) with the state
    /// before it, but not in the timeline and not a forward extremity.
    fn store_soft_failed(&self, checked: &CheckedPdu, state_before: &StateMap) -> Result<()> {
        let shorteventid = self.get_or_create_shorteventid(&checked.event_id)?;
        let json = serde_json::to_vec(&checked.object)?;
        let room_id = checked.pdu.room_id.clone();
        self.db.commit(|c| {
            c.put(&self.eventid_outlierpdu, checked.event_id.as_bytes(), &json);
            let parent = self.current_shortstatehash(&room_id)?;
            let hash = self.save_state(c, parent, state_before.clone())?;
            c.put(
                &self.shorteventid_shortstatehash,
                u64_key(shorteventid),
                u64_key(hash),
            );
            Ok(())
        })
    }

    /// The state after an event we do not have, from the server that referenced it:
    /// `/state_ids` gives the state before it; unknown events are fetched and stored as
    /// outliers; the event itself is added if it is a state event.
    async fn fetch_state_after(
        &self,
        federation: &Federation,
        origin: &ServerName,
        room_id: &RoomId,
        version: &RoomVersionId,
        event_id: &EventId,
    ) -> Result<Arc<StateMap>> {
        let ids = federation
            .send(
                origin,
                get_room_state_ids::v1::Request::new(event_id.to_owned(), room_id.to_owned()),
            )
            .await?;
        let mut wanted: Vec<OwnedEventId> = Vec::new();
        let mut seen = HashSet::new();
        for id in ids
            .auth_chain_ids
            .iter()
            .chain(ids.pdu_ids.iter())
            .chain(std::iter::once(&event_id.to_owned()))
        {
            if seen.insert(id.clone()) && self.get_pdu(id)?.is_none() {
                wanted.push(id.clone());
            }
        }
        if wanted.len() > MAX_SINGLE_FETCHES {
            return Err(Error::unknown(format!(
                "{} unknown state events at {event_id}: too many to fetch one by one",
                wanted.len()
            ))
            .with_status(http::StatusCode::BAD_GATEWAY));
        }
        let mut raws = Vec::with_capacity(wanted.len());
        for id in wanted {
            match federation
                .send(origin, get_event::v1::Request::new(id.clone()))
                .await
            {
                Ok(response) => raws.push(response.pdu),
                Err(e) => tracing::info!(event_id = %id, "fetching a state event failed: {e}"),
            }
        }
        self.store_outliers(federation, room_id, version, &raws)
            .await?;

        let mut state = StateMap::new();
        for id in &ids.pdu_ids {
            let Some(pdu) = self.get_pdu(id)? else {
                return Err(Error::forbidden(format!(
                    "state event {id} at {event_id} could not be fetched or was rejected"
                )));
            };
            let (Some(key), true) = (&pdu.state_key, pdu.room_id == room_id) else {
                return Err(Error::forbidden("a non-state event in a room's state"));
            };
            state.insert(
                self.get_or_create_shortstatekey(&pdu.state_event_type(), key)?,
                self.get_or_create_shorteventid(id)?,
            );
        }
        let event = self
            .get_pdu(event_id)?
            .ok_or_else(|| Error::forbidden(format!("{event_id} could not be fetched")))?;
        if let Some(key) = &event.state_key {
            state.insert(
                self.get_or_create_shortstatekey(&event.state_event_type(), key)?,
                self.get_or_create_shorteventid(event_id)?,
            );
        }
        Ok(Arc::new(state))
    }
}
