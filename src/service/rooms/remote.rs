//! Rooms that live on other servers: joining, knocking and leaving through a resident
//! server (`make_*` then `send_*`), inviting a user of another server (their server
//! co-signs the invite), and receiving an invite for one of our users.

use std::collections::HashSet;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId,
    OwnedServerName, RoomId, RoomVersionId, ServerName, UserId,
    api::federation::membership::{
        RawStrippedState, create_invite, create_join_event, create_knock_event, create_leave_event,
        prepare_join_event, prepare_knock_event, prepare_leave_event,
    },
    events::{StateEventType, TimelineEventType, room::member::MembershipState},
    room_version_rules::{EventIdFormatVersion, RoomVersionRules},
};
use serde_json::value::{RawValue as RawJsonValue, to_raw_value};

use super::{
    PduBuilder, Rooms,
    federation_format::{rules_of, to_federation_format},
    incoming::{CheckedPdu, event_id_of},
    membership::MembershipChange,
    membership::STRIPPED_TYPES,
    pdu::{Pdu, PduEvent},
    state::StateMap,
};
use crate::{
    error::{Error, Result},
    service::federation::Federation,
};

/// Room versions this server can join, newest last.
pub const SUPPORTED_VERSIONS: &[RoomVersionId] = &[
    RoomVersionId::V1,
    RoomVersionId::V2,
    RoomVersionId::V3,
    RoomVersionId::V4,
    RoomVersionId::V5,
    RoomVersionId::V6,
    RoomVersionId::V7,
    RoomVersionId::V8,
    RoomVersionId::V9,
    RoomVersionId::V10,
    RoomVersionId::V11,
    RoomVersionId::V12,
];

/// The servers worth asking about a room, without duplicates or ourselves: those given,
/// then the room id's server (room versions before 12 name one).
pub fn candidate_servers(
    ours: &ServerName,
    room_id: &RoomId,
    given: &[OwnedServerName],
) -> Vec<OwnedServerName> {
    let mut out: Vec<OwnedServerName> = Vec::new();
    let mut seen = HashSet::new();
    for server in given
        .iter()
        .cloned()
        .chain(room_id.server_name().map(ToOwned::to_owned))
    {
        if server != ours && seen.insert(server.clone()) {
            out.push(server);
        }
    }
    out
}

impl Rooms {
    /// Turns a resident server's template into our signed member event.
    fn sign_template(
        &self,
        template: &RawJsonValue,
        version: &RoomVersionId,
        user_id: &UserId,
        membership: MembershipState,
        content: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(CanonicalJsonObject, PduEvent)> {
        let rules = rules_of(version)?;
        let mut object: CanonicalJsonObject = serde_json::from_str(template.get())
            .map_err(|e| Error::bad_json(format!("invalid event template: {e}")))?;
        let field = |name: &str| match object.get(name) {
            Some(CanonicalJsonValue::String(s)) => Some(s.clone()),
            _ => None,
        };
        if field("type").as_deref() != Some("m.room.member")
            || field("state_key").as_deref() != Some(user_id.as_str())
            || field("sender").as_deref() != Some(user_id.as_str())
        {
            return Err(Error::bad_json("The resident server sent a wrong template"));
        }
        let mut merged = match object.remove("content") {
            Some(CanonicalJsonValue::Object(map)) => map,
            _ => CanonicalJsonObject::new(),
        };
        for (k, v) in content {
            let v: CanonicalJsonValue =
                serde_json::from_value(v.clone()).map_err(|e| Error::bad_json(e.to_string()))?;
            merged.insert(k.clone(), v);
        }
        merged.insert(
            "membership".to_owned(),
            CanonicalJsonValue::String(membership.as_str().to_owned()),
        );
        object.insert("content".to_owned(), CanonicalJsonValue::Object(merged));
        for stale in ["signatures", "hashes", "unsigned"] {
            object.remove(stale);
        }
        if !matches!(rules.event_id_format, EventIdFormatVersion::V1) {
            object.remove("event_id");
        }
        if !rules.redaction.content_field_redacts {
            object.insert(
                "origin".to_owned(),
                CanonicalJsonValue::String(self.globals.server_name().to_string()),
            );
        }
        object.insert(
            "origin_server_ts".to_owned(),
            CanonicalJsonValue::Integer(MilliSecondsSinceUnixEpoch::now().0.into()),
        );
        self.hash_and_sign(object, &rules)
    }

    /// Joins a room this server is not in, through the first of `servers` that answers.
    pub async fn join_remote(
        &self,
        federation: &Federation,
        user_id: &UserId,
        room_id: &RoomId,
        servers: &[OwnedServerName],
        content: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<OwnedEventId> {
        let mut last_error = Error::not_found("No known servers for this room");
        for server in servers {
            match self
                .join_through(federation, server, user_id, room_id, content)
                .await
            {
                Ok(event_id) => return Ok(event_id),
                Err(e) => {
                    tracing::info!(%server, %room_id, "joining through this server failed: {e}");
                    last_error = e;
                }
            }
        }
        Err(last_error)
    }

    async fn join_through(
        &self,
        federation: &Federation,
        server: &ServerName,
        user_id: &UserId,
        room_id: &RoomId,
        content: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<OwnedEventId> {
        let mut request =
            prepare_join_event::v1::Request::new(room_id.to_owned(), user_id.to_owned());
        request.ver = SUPPORTED_VERSIONS.to_vec();
        let template = federation.send(server, request).await?;
        let version = template.room_version.unwrap_or(RoomVersionId::V1);
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(Error::incompatible_room_version("Unsupported room version"));
        }
        let rules = rules_of(&version)?;
        let (object, pdu) = self.sign_template(
            &template.event,
            &version,
            user_id,
            MembershipState::Join,
            content,
        )?;
        let event_id = pdu.event_id.clone();
        let mut outgoing = object.clone();
        to_federation_format(&mut outgoing, &rules);
        let response = federation
            .send(
                server,
                create_join_event::v2::Request::new(
                    room_id.to_owned(),
                    event_id.clone(),
                    to_raw_value(&outgoing)?,
                ),
            )
            .await?;
        let room_state = response.room_state;

        // A restricted join comes back with the resident's signature added.
        let (object, pdu) = match &room_state.event {
            Some(raw) => {
                let checked = self.check_pdu(federation, &version, raw).await?;
                if checked.event_id != event_id {
                    return Err(Error::bad_json("send_join returned another event"));
                }
                (checked.object, checked.pdu)
            }
            None => (object, pdu),
        };

        let mut all = room_state.auth_chain.clone();
        all.extend(room_state.state.iter().cloned());
        self.store_outliers(federation, room_id, &version, &all)
            .await?;
        let mut state = StateMap::new();
        for raw in &room_state.state {
            let object: CanonicalJsonObject = serde_json::from_str(raw.get())
                .map_err(|e| Error::bad_json(format!("invalid state event: {e}")))?;
            let id = event_id_of(&object, &rules)?;
            let event = self.get_pdu(&id)?.ok_or_else(|| {
                Error::forbidden(format!("state event {id} from send_join was rejected"))
            })?;
            let (Some(key), true) = (&event.state_key, event.room_id == room_id) else {
                return Err(Error::bad_json(
                    "send_join returned a non-state event as state",
                ));
            };
            state.insert(
                self.get_or_create_shortstatekey(&event.state_event_type(), key)?,
                self.get_or_create_shorteventid(&id)?,
            );
        }
        let create = self
            .state_get(&state, &StateEventType::RoomCreate, "")?
            .ok_or_else(|| Error::bad_json("send_join returned no create event"))?;
        let create_version = create
            .content_field("room_version")
            .and_then(|v| v.as_str().map(ToOwned::to_owned))
            .unwrap_or_else(|| "1".to_owned());
        if create_version != version.as_str() {
            return Err(Error::bad_json(
                "The room's version does not match its create event",
            ));
        }

        let _lock = self.lock_room(room_id).await;
        self.auth_check(&rules, &pdu, &state)?;
        self.room_info.put(room_id.as_bytes(), version.as_str())?;
        self.versions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(room_id.to_owned(), version.clone());
        self.index_members_of(room_id, &state)?;
        let tips = self.forward_extremities(room_id)?;
        self.append_pdu(
            object, pdu, None, &state, &version, &rules, None, tips, true, false,
        )?;
        Ok(event_id)
    }

    /// Records the memberships of a state we took over whole (a remote join), so member
    /// lists, sync and the servers to send to are right from the start.
    fn index_members_of(&self, room_id: &RoomId, state: &StateMap) -> Result<()> {
        let mut changes = Vec::new();
        for (short_key, short_event) in state {
            if !self.is_member_statekey(*short_key)? {
                continue;
            }
            let Some(pdu) = self.get_pdu(&self.get_eventid(*short_event)?)? else {
                continue;
            };
            if let Some(change) = self.membership_change(&pdu, state)? {
                changes.push(change);
            }
        }
        self.db.commit(|c| {
            let count = c.next_count();
            for change in &changes {
                self.write_membership(c, room_id, change, count)?;
            }
            Ok(())
        })
    }

    /// Leaves a room this server is not joined to (rejecting an invite, retracting a
    /// knock) through `servers`. Whatever the remote servers say, the user is out here.
    pub async fn leave_remote(
        &self,
        federation: &Federation,
        user_id: &UserId,
        room_id: &RoomId,
        servers: &[OwnedServerName],
        content: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<()> {
        let mut event_id = None;
        for server in servers {
            match self
                .leave_through(federation, server, user_id, room_id, content)
                .await
            {
                Ok(id) => {
                    event_id = Some(id);
                    break;
                }
                Err(e) => {
                    tracing::info!(%server, %room_id, "leaving through this server failed: {e}")
                }
            }
        }
        let change = MembershipChange {
            user_id: user_id.to_owned(),
            membership: MembershipState::Leave,
            event_id: event_id.map(|e| e.to_string()).unwrap_or_default(),
            stripped: None,
        };
        self.db.commit(|c| {
            let count = c.next_count();
            self.write_membership(c, room_id, &change, count)
        })?;
        self.notifier.wake(user_id);
        Ok(())
    }

    async fn leave_through(
        &self,
        federation: &Federation,
        server: &ServerName,
        user_id: &UserId,
        room_id: &RoomId,
        content: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<OwnedEventId> {
        let template = federation
            .send(
                server,
                prepare_leave_event::v1::Request::new(room_id.to_owned(), user_id.to_owned()),
            )
            .await?;
        let version = template.room_version.unwrap_or(RoomVersionId::V1);
        let rules = rules_of(&version)?;
        let (mut object, pdu) = self.sign_template(
            &template.event,
            &version,
            user_id,
            MembershipState::Leave,
            content,
        )?;
        to_federation_format(&mut object, &rules);
        federation
            .send(
                server,
                create_leave_event::v2::Request::new(
                    room_id.to_owned(),
                    pdu.event_id.clone(),
                    to_raw_value(&object)?,
                ),
            )
            .await?;
        Ok(pdu.event_id)
    }

    /// Knocks on a room this server is not in.
    pub async fn knock_remote(
        &self,
        federation: &Federation,
        user_id: &UserId,
        room_id: &RoomId,
        servers: &[OwnedServerName],
        content: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<()> {
        let mut last_error = Error::not_found("No known servers for this room");
        for server in servers {
            let result: Result<()> = async {
                let mut request =
                    prepare_knock_event::v1::Request::new(room_id.to_owned(), user_id.to_owned());
                request.ver = SUPPORTED_VERSIONS.to_vec();
                let template = federation.send(server, request).await?;
                let version = template.room_version;
                let rules = rules_of(&version)?;
                let (mut object, pdu) = self.sign_template(
                    &template.event,
                    &version,
                    user_id,
                    MembershipState::Knock,
                    content,
                )?;
                let stripped_self = pdu.to_stripped_json();
                to_federation_format(&mut object, &rules);
                let response = federation
                    .send(
                        server,
                        create_knock_event::v1::Request::new(
                            room_id.to_owned(),
                            pdu.event_id.clone(),
                            to_raw_value(&object)?,
                        ),
                    )
                    .await?;
                let mut stripped = stripped_from(&response.knock_room_state);
                stripped.push(stripped_self);
                let change = MembershipChange {
                    user_id: user_id.to_owned(),
                    membership: MembershipState::Knock,
                    event_id: pdu.event_id.to_string(),
                    stripped: Some(stripped),
                };
                self.db.commit(|c| {
                    let count = c.next_count();
                    self.write_membership(c, room_id, &change, count)
                })?;
                self.notifier.wake(user_id);
                Ok(())
            }
            .await;
            match result {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::info!(%server, %room_id, "knocking through this server failed: {e}");
                    last_error = e;
                }
            }
        }
        Err(last_error)
    }

    /// The stripped state a remote server gets with an invite or a knock, as full PDUs
    /// (spec 1.16).
    pub fn stripped_state_pdus(&self, room_id: &RoomId) -> Result<Vec<RawStrippedState>> {
        let state = self.current_state(room_id)?;
        let mut out = Vec::new();
        for kind in STRIPPED_TYPES {
            if let Some(pdu) = self.state_get(&state, kind, "")?
                && let Some(json) = self.pdu_for_federation(&pdu.event_id)?
            {
                out.push(RawStrippedState::Pdu(json));
            }
        }
        Ok(out)
    }

    /// Invites a user of another server: their server signs the invite before it is
    /// added to the room.
    pub async fn invite_remote(
        &self,
        federation: &Federation,
        sender: &UserId,
        room_id: &RoomId,
        target: &UserId,
        content: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Pdu> {
        let _lock = self.lock_room(room_id).await;
        let builder = PduBuilder::state(StateEventType::RoomMember, target.as_str(), content);
        let prepared = self.prepare_event(sender, Some(room_id), builder)?;
        let (object, pdu) = self.hash_and_sign(prepared.object.clone(), &prepared.rules)?;
        self.auth_check(&prepared.rules, &pdu, &prepared.state)?;
        let mut outgoing = object.clone();
        to_federation_format(&mut outgoing, &prepared.rules);
        let request = create_invite::v2::Request::new(
            room_id.to_owned(),
            pdu.event_id.clone(),
            prepared.version.clone(),
            to_raw_value(&outgoing)?,
            self.stripped_state_pdus(room_id)?,
        );
        let response = federation.send(target.server_name(), request).await?;
        let checked: CheckedPdu = self
            .check_pdu(federation, &prepared.version, &response.event)
            .await?;
        if checked.event_id != pdu.event_id {
            return Err(Error::bad_json(
                "The invited user's server changed the invite",
            ));
        }
        // Event signatures cover the redacted event.
        let redacted = ruma::canonical_json::redact(
            federation_copy(&checked.object, &prepared.rules),
            &prepared.rules.redaction,
            None,
        )
        .map_err(|e| Error::bad_json(e.to_string()))?;
        if federation
            .verify_json(target.server_name(), &redacted)
            .await
            .is_err()
        {
            return Err(Error::forbidden(
                "The invited user's server did not sign the invite",
            ));
        }
        self.append_prepared(prepared, checked.object, checked.pdu)
    }

    /// `PUT /invite/v2`: another server invites one of our users. We sign the event and
    /// show the invite to the user; the room itself stays remote until they join.
    pub async fn receive_invite(
        &self,
        federation: &Federation,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        version: &RoomVersionId,
        raw: &RawJsonValue,
        invite_room_state: &[RawStrippedState],
    ) -> Result<Box<RawJsonValue>> {
        if !SUPPORTED_VERSIONS.contains(version) {
            return Err(Error::incompatible_room_version("Unsupported room version")
                .with("room_version", version.as_str().into()));
        }
        let rules = rules_of(version)?;
        let checked = self.check_pdu(federation, version, raw).await?;
        let pdu = &checked.pdu;
        if checked.event_id != event_id || pdu.room_id != room_id {
            return Err(Error::bad_json(
                "The event does not match the request's ids",
            ));
        }
        let target = pdu
            .state_key
            .as_deref()
            .and_then(|k| UserId::parse(k).ok())
            .ok_or_else(|| Error::bad_json("An invite names a user in state_key"))?;
        let is_invite = pdu
            .content_field("membership")
            .is_some_and(|m| m == "invite");
        if pdu.kind != TimelineEventType::RoomMember || !is_invite {
            return Err(Error::bad_json("Not an invite"));
        }
        if pdu.sender.server_name() != origin {
            return Err(Error::forbidden(
                "The inviter does not belong to the sending server",
            ));
        }
        if target.server_name() != self.globals.server_name() {
            return Err(Error::bad_json("The invited user is not on this server"));
        }
        if matches!(
            self.membership(&target, &pdu.room_id)?,
            Some(MembershipState::Ban)
        ) {
            return Err(Error::forbidden("The user is banned from the room"));
        }

        let mut object = federation_copy(&checked.object, &rules);
        ruma::signatures::sign_event(
            self.globals.server_name().as_str(),
            &self.globals.keypair,
            &mut object,
            &rules.redaction,
        )
        .map_err(Error::internal)?;

        // Already in the room: the invite is an event of a room we hold, and must be in our
        // state before the user answers it (the same event arrives again, later, in a
        // transaction).
        if self.exists(room_id)? && self.is_resident(room_id)? {
            let raw = to_raw_value(&object)?;
            match self
                .handle_incoming_pdu(federation, origin, room_id, &raw, true)
                .await
            {
                Ok(_) => return Ok(raw),
                Err(e) => tracing::info!(%event_id, "invite not added to the room's graph: {e}"),
            }
        }
        let mut stripped = stripped_from(invite_room_state);
        stripped.push(pdu.to_stripped_json());
        let mut stored = object.clone();
        stored.insert(
            "event_id".to_owned(),
            CanonicalJsonValue::String(event_id.to_string()),
        );
        let json = serde_json::to_vec(&stored)?;
        let change = MembershipChange {
            user_id: target.clone(),
            membership: MembershipState::Invite,
            event_id: event_id.to_string(),
            stripped: Some(stripped),
        };
        let room_id = pdu.room_id.clone();
        self.db.commit(|c| {
            if self.get_pduid(event_id)?.is_none() {
                c.put(&self.eventid_outlierpdu, event_id.as_bytes(), &json);
            }
            let count = c.next_count();
            self.write_membership(c, &room_id, &change, count)
        })?;
        self.notifier.wake(&target);
        Ok(to_raw_value(&object)?)
    }
}

/// The event as sent over federation, leaving the stored form alone.
fn federation_copy(object: &CanonicalJsonObject, rules: &RoomVersionRules) -> CanonicalJsonObject {
    let mut out = object.clone();
    to_federation_format(&mut out, rules);
    out
}

/// Stripped state events (`type`, `state_key`, `content`, `sender`) from what a peer sent:
/// full PDUs (spec 1.16) or already stripped events.
fn stripped_from(events: &[RawStrippedState]) -> Vec<serde_json::Value> {
    events
        .iter()
        .filter_map(|e| {
            #[allow(deprecated)]
            let raw = match e {
                RawStrippedState::Pdu(raw) => raw.get(),
                RawStrippedState::Stripped(raw) => raw.json().get(),
                _ => return None,
            };
            let value: serde_json::Value = serde_json::from_str(raw).ok()?;
            Some(serde_json::json!({
                "type": value.get("type")?,
                "state_key": value.get("state_key")?,
                "content": value.get("content")?,
                "sender": value.get("sender")?,
            }))
        })
        .collect()
}
