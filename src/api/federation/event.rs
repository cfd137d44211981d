//! Reading a room's events, state and graph over federation (spec: "Retrieving events",
//! "Backfilling and retrieving missing events", "Authorization"). Each route takes the
//! verified origin and calls a public function of the same name, which the tests call
//! directly. Limits and walks follow Synapse.

use std::sync::Arc;

use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, RoomId, ServerName,
    api::federation::{
        authorization::get_event_authorization,
        backfill::get_backfill,
        event::{get_event, get_missing_events, get_room_state, get_room_state_ids},
    },
};
use serde_json::value::RawValue as RawJsonValue;

use super::require_origin;
use crate::{
    api::{
        router::{AppRouter, route},
        ruma::Ruma,
    },
    error::{Error, Result},
    service::{Services, rooms::Pdu},
};

/// Synapse asks for 100 events per backfill request and serves no more.
pub const MAX_BACKFILL: usize = 100;
/// Synapse serves at most 20 events per `/get_missing_events`.
pub const MAX_MISSING_EVENTS: usize = 20;

pub fn routes(router: AppRouter) -> AppRouter {
    let router = route(router, get_event_route);
    let router = route(router, get_room_state_route);
    let router = route(router, get_room_state_ids_route);
    let router = route(router, get_event_auth_route);
    let router = route(router, backfill_route);
    route(router, get_missing_events_route)
}

async fn get_event_route(
    services: Arc<Services>,
    body: Ruma<get_event::v1::Request>,
) -> Result<get_event::v1::Response> {
    get_pdu(&services, require_origin(&body)?, &body.body)
}

async fn get_room_state_route(
    services: Arc<Services>,
    body: Ruma<get_room_state::v1::Request>,
) -> Result<get_room_state::v1::Response> {
    get_state(&services, require_origin(&body)?, &body.body)
}

async fn get_room_state_ids_route(
    services: Arc<Services>,
    body: Ruma<get_room_state_ids::v1::Request>,
) -> Result<get_room_state_ids::v1::Response> {
    get_state_ids(&services, require_origin(&body)?, &body.body)
}

async fn get_event_auth_route(
    services: Arc<Services>,
    body: Ruma<get_event_authorization::v1::Request>,
) -> Result<get_event_authorization::v1::Response> {
    get_event_auth(&services, require_origin(&body)?, &body.body)
}

async fn backfill_route(
    services: Arc<Services>,
    body: Ruma<get_backfill::v1::Request>,
) -> Result<get_backfill::v1::Response> {
    backfill(&services, require_origin(&body)?, &body.body)
}

async fn get_missing_events_route(
    services: Arc<Services>,
    body: Ruma<get_missing_events::v1::Request>,
) -> Result<get_missing_events::v1::Response> {
    missing_events(&services, require_origin(&body)?, &body.body)
}

/// An event of `room_id` known here, after the room's access check (404 for an event of
/// another room: its existence is not the caller's business).
fn event_in_room(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &EventId,
) -> Result<Pdu> {
    services.rooms.check_server_room_access(origin, room_id)?;
    services
        .rooms
        .get_pdu(event_id)?
        .filter(|pdu| pdu.room_id == room_id)
        .ok_or_else(|| Error::not_found("Event not found in this room"))
}

/// Events in federation form, each whole or redacted as `origin` may see it.
fn pdus_for(
    services: &Services,
    origin: &ServerName,
    ids: &[OwnedEventId],
) -> Result<Vec<Box<RawJsonValue>>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(pdu) = services.rooms.pdu_for_server(origin, id)? {
            out.push(pdu);
        }
    }
    Ok(out)
}

/// Events in federation form, unredacted: state and auth chains, which a peer needs whole
/// to check anything.
fn full_pdus(services: &Services, ids: &[OwnedEventId]) -> Result<Vec<Box<RawJsonValue>>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(pdu) = services.rooms.pdu_for_federation(id)? {
            out.push(pdu);
        }
    }
    Ok(out)
}

/// `GET /event/{eventId}`: one event, redacted if its history is hidden from `origin`.
pub fn get_pdu(
    services: &Services,
    origin: &ServerName,
    request: &get_event::v1::Request,
) -> Result<get_event::v1::Response> {
    let pdu = services
        .rooms
        .get_pdu(&request.event_id)?
        .ok_or_else(|| Error::not_found("Event not found"))?;
    services
        .rooms
        .check_server_room_access(origin, &pdu.room_id)?;
    let json = services
        .rooms
        .pdu_for_server(origin, &request.event_id)?
        .ok_or_else(|| Error::not_found("Event not found"))?;
    Ok(get_event::v1::Response::new(
        services.globals.owned_server_name(),
        MilliSecondsSinceUnixEpoch::now(),
        json,
    ))
}

/// The state before `event_id` (as Synapse answers: the event itself is not part of it),
/// as event ids, with the auth chain of that state.
fn state_ids_before(
    services: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &EventId,
) -> Result<(Vec<OwnedEventId>, Vec<OwnedEventId>)> {
    event_in_room(services, origin, room_id, event_id)?;
    let hash = services
        .rooms
        .state_before(event_id)?
        .ok_or_else(|| Error::not_found("The state at this event is not known here"))?;
    let state = services.rooms.load_state(hash)?;
    let mut ids = Vec::with_capacity(state.len());
    for short in state.values() {
        ids.push(services.rooms.get_eventid(*short)?);
    }
    let auth_chain = services.rooms.auth_chain_for_federation(room_id, &ids)?;
    Ok((ids, auth_chain))
}

/// `GET /state/{roomId}?event_id=`: the state before the event and its auth chain.
pub fn get_state(
    services: &Services,
    origin: &ServerName,
    request: &get_room_state::v1::Request,
) -> Result<get_room_state::v1::Response> {
    let (state, auth_chain) =
        state_ids_before(services, origin, &request.room_id, &request.event_id)?;
    Ok(get_room_state::v1::Response::new(
        full_pdus(services, &auth_chain)?,
        full_pdus(services, &state)?,
    ))
}

/// `GET /state_ids/{roomId}?event_id=`: the same as ids.
pub fn get_state_ids(
    services: &Services,
    origin: &ServerName,
    request: &get_room_state_ids::v1::Request,
) -> Result<get_room_state_ids::v1::Response> {
    let (state, auth_chain) =
        state_ids_before(services, origin, &request.room_id, &request.event_id)?;
    Ok(get_room_state_ids::v1::Response::new(auth_chain, state))
}

/// `GET /event_auth/{roomId}/{eventId}`: the event's whole auth chain, oldest first.
pub fn get_event_auth(
    services: &Services,
    origin: &ServerName,
    request: &get_event_authorization::v1::Request,
) -> Result<get_event_authorization::v1::Response> {
    event_in_room(services, origin, &request.room_id, &request.event_id)?;
    let chain = services
        .rooms
        .auth_chain_for_federation(&request.room_id, std::slice::from_ref(&request.event_id))?;
    Ok(get_event_authorization::v1::Response::new(full_pdus(
        services, &chain,
    )?))
}

/// `GET /backfill/{roomId}?v=&limit=`: the given events and those before them, newest
/// first. Unknown seeds are skipped, as Synapse does.
pub fn backfill(
    services: &Services,
    origin: &ServerName,
    request: &get_backfill::v1::Request,
) -> Result<get_backfill::v1::Response> {
    services
        .rooms
        .check_server_room_access(origin, &request.room_id)?;
    let limit = usize::try_from(u64::from(request.limit))
        .unwrap_or(MAX_BACKFILL)
        .min(MAX_BACKFILL);
    let ids = services
        .rooms
        .backfill_ids(&request.room_id, &request.v, limit)?;
    Ok(get_backfill::v1::Response::new(
        services.globals.owned_server_name(),
        MilliSecondsSinceUnixEpoch::now(),
        pdus_for(services, origin, &ids)?,
    ))
}

/// `POST /get_missing_events/{roomId}`: the events between `earliest_events` and
/// `latest_events`, oldest first.
pub fn missing_events(
    services: &Services,
    origin: &ServerName,
    request: &get_missing_events::v1::Request,
) -> Result<get_missing_events::v1::Response> {
    services
        .rooms
        .check_server_room_access(origin, &request.room_id)?;
    let limit = usize::try_from(u64::from(request.limit))
        .unwrap_or(MAX_MISSING_EVENTS)
        .min(MAX_MISSING_EVENTS);
    let ids = services.rooms.missing_event_ids(
        &request.room_id,
        &request.earliest_events,
        &request.latest_events,
        limit,
        request.min_depth.into(),
    )?;
    Ok(get_missing_events::v1::Response::new(pdus_for(
        services, origin, &ids,
    )?))
}
