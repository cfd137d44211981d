//! Membership across servers, as the resident server (`make_*` / `send_*` for joins,
//! leaves and knocks) and as the invited user's server (`/invite`).

use std::sync::Arc;

use ruma::{
    api::federation::membership::{
        create_invite, create_join_event, create_knock_event, create_leave_event,
        prepare_join_event, prepare_knock_event, prepare_leave_event,
    },
    events::room::member::MembershipState,
};

use crate::{
    api::{
        router::{AppRouter, route},
        ruma::Ruma,
    },
    error::Result,
    service::Services,
};

pub fn routes(router: AppRouter) -> AppRouter {
    let router = route(router, make_join_route);
    let router = route(router, send_join_route);
    let router = route(router, make_leave_route);
    let router = route(router, send_leave_route);
    let router = route(router, make_knock_route);
    let router = route(router, send_knock_route);
    route(router, invite_route)
}

async fn make_join_route(
    services: Arc<Services>,
    request: Ruma<prepare_join_event::v1::Request>,
) -> Result<prepare_join_event::v1::Response> {
    let (version, event) = services
        .rooms
        .membership_template(
            request.origin(),
            &request.body.room_id,
            &request.body.user_id,
            MembershipState::Join,
            Some(&request.body.ver),
        )
        .await?;
    let mut response = prepare_join_event::v1::Response::new(event);
    response.room_version = Some(version);
    Ok(response)
}

async fn send_join_route(
    services: Arc<Services>,
    request: Ruma<create_join_event::v2::Request>,
) -> Result<create_join_event::v2::Response> {
    let body = &request.body;
    let event_id = services
        .rooms
        .accept_membership_event(
            &services.federation,
            request.origin(),
            &body.room_id,
            &body.event_id,
            &body.pdu,
            MembershipState::Join,
        )
        .await?;
    let joined = services.rooms.join_state(&body.room_id, &event_id)?;
    let mut state = create_join_event::v2::RoomState::new();
    state.state = joined.state;
    state.auth_chain = joined.auth_chain;
    state.event = Some(joined.event);
    state.servers_in_room = Some(joined.servers_in_room);
    Ok(create_join_event::v2::Response::new(state))
}

async fn make_leave_route(
    services: Arc<Services>,
    request: Ruma<prepare_leave_event::v1::Request>,
) -> Result<prepare_leave_event::v1::Response> {
    let (version, event) = services
        .rooms
        .membership_template(
            request.origin(),
            &request.body.room_id,
            &request.body.user_id,
            MembershipState::Leave,
            None,
        )
        .await?;
    Ok(prepare_leave_event::v1::Response::new(Some(version), event))
}

async fn send_leave_route(
    services: Arc<Services>,
    request: Ruma<create_leave_event::v2::Request>,
) -> Result<create_leave_event::v2::Response> {
    let body = &request.body;
    services
        .rooms
        .accept_membership_event(
            &services.federation,
            request.origin(),
            &body.room_id,
            &body.event_id,
            &body.pdu,
            MembershipState::Leave,
        )
        .await?;
    Ok(create_leave_event::v2::Response::new())
}

async fn make_knock_route(
    services: Arc<Services>,
    request: Ruma<prepare_knock_event::v1::Request>,
) -> Result<prepare_knock_event::v1::Response> {
    let (version, event) = services
        .rooms
        .membership_template(
            request.origin(),
            &request.body.room_id,
            &request.body.user_id,
            MembershipState::Knock,
            Some(&request.body.ver),
        )
        .await?;
    Ok(prepare_knock_event::v1::Response::new(version, event))
}

async fn send_knock_route(
    services: Arc<Services>,
    request: Ruma<create_knock_event::v1::Request>,
) -> Result<create_knock_event::v1::Response> {
    let body = &request.body;
    services
        .rooms
        .accept_membership_event(
            &services.federation,
            request.origin(),
            &body.room_id,
            &body.event_id,
            &body.pdu,
            MembershipState::Knock,
        )
        .await?;
    Ok(create_knock_event::v1::Response::new(
        services.rooms.stripped_state_pdus(&body.room_id)?,
    ))
}

async fn invite_route(
    services: Arc<Services>,
    request: Ruma<create_invite::v2::Request>,
) -> Result<create_invite::v2::Response> {
    let body = &request.body;
    let event = services
        .rooms
        .receive_invite(
            &services.federation,
            request.origin(),
            &body.room_id,
            &body.event_id,
            &body.room_version,
            &body.event,
            &body.invite_room_state,
        )
        .await?;
    Ok(create_invite::v2::Response::new(event))
}
