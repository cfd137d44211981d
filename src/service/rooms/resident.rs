//! This server as the resident of a room that a user of another server joins, leaves or
//! knocks on (`make_*` / `send_*`), and as the home of a user another server invites.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedUserId, RoomId,
    RoomVersionId, ServerName, UserId,
    events::{
        StateEventType, TimelineEventType,
        room::{
            join_rules::{AllowRule, JoinRule, RoomJoinRulesEventContent},
            member::MembershipState,
        },
    },
    room_version_rules::RoomVersionRules,
};
use serde_json::value::{RawValue as RawJsonValue, to_raw_value};

use super::{
    PduBuilder, Rooms, federation_format::to_federation_format, incoming::Incoming, state::StateMap,
};
use crate::{
    error::{Error, Result},
    service::federation::Federation,
};

/// What `send_join` answers: the state before the join and its auth chain, in federation
/// form, and the event as accepted (with this server's signature on a restricted join).
pub struct JoinState {
    pub state: Vec<Box<RawJsonValue>>,
    pub auth_chain: Vec<Box<RawJsonValue>>,
    pub event: Box<RawJsonValue>,
    pub servers_in_room: Vec<String>,
}

impl Rooms {
    /// Whether a user of this server is joined: only then can this server make membership
    /// events for others.
    pub fn is_resident(&self, room_id: &RoomId) -> Result<bool> {
        self.server_in_room(self.globals.server_name(), room_id)
    }

    /// `make_join` / `make_leave` / `make_knock`: an unsigned member event for a user of
    /// `origin`, built on the room's current tips.
    pub async fn membership_template(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        membership: MembershipState,
        supported_versions: Option<&[RoomVersionId]>,
    ) -> Result<(RoomVersionId, Box<RawJsonValue>)> {
        if user_id.server_name() != origin {
            return Err(Error::forbidden(
                "The user does not belong to the requesting server",
            ));
        }
        let version = self
            .room_version(room_id)?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        if !self.is_resident(room_id)? {
            return Err(Error::not_found("This server is not in the room"));
        }
        if !self.server_acl_allows(room_id, origin)? {
            return Err(Error::forbidden(
                "Server is banned from this room by its ACL",
            ));
        }
        if let Some(supported) = supported_versions
            && !supported.contains(&version)
        {
            return Err(Error::incompatible_room_version(
                "The room's version is not supported by the joining server",
            )
            .with("room_version", version.as_str().into()));
        }
        let mut content = serde_json::Map::new();
        content.insert("membership".to_owned(), membership.as_str().into());
        if membership == MembershipState::Join
            && let Some(authoriser) = self.join_authoriser(room_id, user_id)?
        {
            content.insert(
                "join_authorised_via_users_server".to_owned(),
                authoriser.as_str().into(),
            );
        }

        let _lock = self.lock_room(room_id).await;
        let builder = PduBuilder::state(StateEventType::RoomMember, user_id.as_str(), &content);
        let prepared = self.prepare_event(user_id, Some(room_id), builder)?;
        let mut template = prepared.object.clone();
        template.remove("unsigned");
        // Run the auth rules now so the joining server hears "banned" here rather than
        // after signing.
        let mut probe = template.clone();
        probe.insert(
            "event_id".to_owned(),
            CanonicalJsonValue::String("$template:localhost".to_owned()),
        );
        let pdu = super::PduEvent::from_canonical(&probe)?;
        self.auth_check(&prepared.rules, &pdu, &prepared.state)?;
        Ok((version, to_raw_value(&template)?))
    }

    /// For a restricted room: a local member who may invite, to vouch for a join the
    /// invite-free way, if the user is in one of the allowed rooms (as far as this server
    /// knows). None when the join rule is not restricted or the user is already invited.
    fn join_authoriser(&self, room_id: &RoomId, user_id: &UserId) -> Result<Option<OwnedUserId>> {
        let state = self.current_state(room_id)?;
        let rule = self
            .state_get(&state, &StateEventType::RoomJoinRules, "")?
            .and_then(|p| p.content_json::<RoomJoinRulesEventContent>())
            .map(|c| c.join_rule);
        let Some(JoinRule::Restricted(rule) | JoinRule::KnockRestricted(rule)) = rule else {
            return Ok(None);
        };
        if matches!(
            self.membership(user_id, room_id)?,
            Some(MembershipState::Join | MembershipState::Invite)
        ) {
            return Ok(None);
        }
        let allowed = rule.allow.iter().any(|allow| match allow {
            AllowRule::RoomMembership(m) => self.is_joined(user_id, &m.room_id).unwrap_or(false),
            _ => false,
        });
        if !allowed {
            // M_UNABLE_TO_AUTHORISE_JOIN says this server cannot check the conditions (it
            // is in none of the allowed rooms), so another server might; when it can
            // check them, the user is simply not allowed (403, as Synapse answers).
            let can_check = rule.allow.iter().any(|allow| match allow {
                AllowRule::RoomMembership(m) => self.is_resident(&m.room_id).unwrap_or(false),
                _ => false,
            });
            return Err(if can_check {
                Error::forbidden("The user is not in any room the join rules allow")
            } else {
                Error::unable_to_authorise_join("This server is in none of the allowed rooms")
            });
        }
        let power = self.power_levels_at(room_id, &state)?;
        let ours = self.globals.server_name();
        self.joined_members(room_id)?
            .into_iter()
            .find(|u| u.server_name() == ours && power.user_can_invite(u))
            .map(Some)
            .ok_or_else(|| Error::unable_to_authorise_join("No user here can authorise the join"))
    }

    /// `send_join` / `send_leave` / `send_knock`: a remote user's signed member event,
    /// added to the room and sent on to the other servers.
    pub async fn accept_membership_event(
        &self,
        federation: &Federation,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        raw: &RawJsonValue,
        membership: MembershipState,
    ) -> Result<OwnedEventId> {
        let version = self
            .room_version(room_id)?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        let rules = version
            .rules()
            .ok_or_else(|| Error::unsupported_room_version("Unsupported room version"))?;
        let vouched = self.vouch_for_join(room_id, raw, &rules)?;
        let checked = self
            .check_pdu(federation, &version, vouched.as_deref().unwrap_or(raw))
            .await?;
        if checked.event_id != event_id {
            return Err(Error::bad_json("The event id does not match the event"));
        }
        let pdu = &checked.pdu;
        let target = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok());
        if pdu.kind != TimelineEventType::RoomMember
            || pdu.room_id != room_id
            || target.as_deref() != Some(&*pdu.sender)
            || pdu.sender.server_name() != origin
        {
            return Err(Error::bad_json(
                "Expected a member event of a user of the sending server about themselves",
            ));
        }
        #[derive(serde::Deserialize)]
        struct Content {
            membership: MembershipState,
        }
        let content: Content = pdu
            .content_json()
            .ok_or_else(|| Error::bad_json("Invalid member content"))?;
        if content.membership != membership {
            return Err(Error::bad_json(format!(
                "Expected membership {}",
                membership.as_str()
            )));
        }
        if !self.server_acl_allows(room_id, origin)? {
            return Err(Error::forbidden(
                "Server is banned from this room by its ACL",
            ));
        }

        let mut object = checked.object.clone();
        to_federation_format(&mut object, &rules);
        let raw = to_raw_value(&object)?;
        let (event_id, outcome) = self
            .handle_incoming_pdu_inner(federation, origin, room_id, &raw, false, true)
            .await?;
        if outcome == Incoming::SoftFailed {
            return Err(Error::forbidden(
                "The event is not allowed by the room's state",
            ));
        }
        Ok(event_id)
    }

    /// A restricted join that names one of our users as its authoriser needs our signature
    /// before its signatures can be checked; it gets it only if the join rules let the
    /// user in (the auth rules trust the signature, so this is where that is checked).
    /// None when the event names no user of ours.
    fn vouch_for_join(
        &self,
        room_id: &RoomId,
        raw: &RawJsonValue,
        rules: &RoomVersionRules,
    ) -> Result<Option<Box<RawJsonValue>>> {
        let mut object: CanonicalJsonObject = serde_json::from_str(raw.get())
            .map_err(|e| Error::bad_json(format!("PDU is not canonical JSON: {e}")))?;
        let authoriser = match object.get("content") {
            Some(CanonicalJsonValue::Object(content)) => {
                match content.get("join_authorised_via_users_server") {
                    Some(CanonicalJsonValue::String(user)) => UserId::parse(user).ok(),
                    _ => None,
                }
            }
            _ => None,
        };
        if authoriser.is_none_or(|a| a.server_name() != self.globals.server_name()) {
            return Ok(None);
        }
        let user = match object.get("state_key") {
            Some(CanonicalJsonValue::String(key)) => UserId::parse(key)
                .map_err(|_| Error::bad_json("A join's state_key must be a user id"))?,
            _ => return Err(Error::bad_json("A join needs a state_key")),
        };
        if self.join_authoriser(room_id, &user)?.is_none() {
            return Err(Error::forbidden(
                "This join does not need or cannot have this server's authorisation",
            ));
        }
        ruma::signatures::sign_event(
            self.globals.server_name().as_str(),
            &self.globals.keypair,
            &mut object,
            &rules.redaction,
        )
        .map_err(|e| Error::bad_json(format!("The event cannot be signed: {e}")))?;
        Ok(Some(to_raw_value(&object)?))
    }

    /// The `send_join` answer for an accepted join.
    pub fn join_state(&self, room_id: &RoomId, event_id: &EventId) -> Result<JoinState> {
        let hash = self
            .state_before(event_id)?
            .ok_or_else(|| Error::not_found("Unknown event"))?;
        let state: std::sync::Arc<StateMap> = self.load_state(hash)?;
        let ids: Vec<OwnedEventId> = state
            .values()
            .map(|short| self.get_eventid(*short))
            .collect::<Result<_>>()?;
        let chain = self.auth_chain(ids.iter().cloned(), None)?;
        let mut out = JoinState {
            state: Vec::with_capacity(ids.len()),
            auth_chain: Vec::new(),
            event: self
                .pdu_for_federation(event_id)?
                .ok_or_else(|| Error::not_found("Unknown event"))?,
            servers_in_room: self
                .room_servers(room_id)?
                .iter()
                .map(ToString::to_string)
                .collect(),
        };
        for id in &ids {
            if let Some(json) = self.pdu_for_federation(id)? {
                out.state.push(json);
            }
        }
        for id in chain.iter() {
            if let Some(json) = self.pdu_for_federation(id)? {
                out.auth_chain.push(json);
            }
        }
        Ok(out)
    }
}
