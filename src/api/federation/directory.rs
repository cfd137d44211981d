//! The public room directory as other servers browse it for their users (spec: "Public
//! Room Directory"). The same listing as the client-server `/publicRooms`.

use std::sync::Arc;

use ruma::{
    ServerName,
    api::federation::directory::{get_public_rooms, get_public_rooms_filtered},
    directory::Filter,
};

use super::require_origin;
use crate::{
    api::{
        router::{AppRouter, route},
        ruma::Ruma,
    },
    error::Result,
    service::Services,
};

pub fn routes(router: AppRouter) -> AppRouter {
    let router = route(router, public_rooms_route);
    route(router, public_rooms_filtered_route)
}

async fn public_rooms_route(
    services: Arc<Services>,
    body: Ruma<get_public_rooms::v1::Request>,
) -> Result<get_public_rooms::v1::Response> {
    public_rooms(&services, require_origin(&body)?, &body.body)
}

async fn public_rooms_filtered_route(
    services: Arc<Services>,
    body: Ruma<get_public_rooms_filtered::v1::Request>,
) -> Result<get_public_rooms_filtered::v1::Response> {
    public_rooms_filtered(&services, require_origin(&body)?, &body.body)
}

/// `GET /publicRooms?limit=&since=`.
pub fn public_rooms(
    services: &Services,
    _origin: &ServerName,
    request: &get_public_rooms::v1::Request,
) -> Result<get_public_rooms::v1::Response> {
    let page = services.rooms.public_rooms_page(
        request.limit,
        request.since.as_deref(),
        &Filter::new(),
        &request.room_network,
    )?;
    let mut response = get_public_rooms::v1::Response::new();
    response.chunk = page.chunk;
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.total_room_count_estimate = Some(page.total);
    Ok(response)
}

/// `POST /publicRooms` with a filter (`generic_search_term`, `room_types`).
pub fn public_rooms_filtered(
    services: &Services,
    _origin: &ServerName,
    request: &get_public_rooms_filtered::v1::Request,
) -> Result<get_public_rooms_filtered::v1::Response> {
    let page = services.rooms.public_rooms_page(
        request.limit,
        request.since.as_deref(),
        &request.filter,
        &request.room_network,
    )?;
    let mut response = get_public_rooms_filtered::v1::Response::new();
    response.chunk = page.chunk;
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.total_room_count_estimate = Some(page.total);
    Ok(response)
}
