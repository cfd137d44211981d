//! Event filters (spec: "Filtering"): create/get stored filters, and the matching used by
//! `/sync`, `/messages` and `/context`.

use std::sync::Arc;

use ruma::{
    api::client::filter::{RoomEventFilter, create_filter, get_filter},
    events::TimelineEventType,
};

use crate::{
    api::{
        router::{AppRouter, route},
        ruma::Ruma,
    },
    error::{Error, Result},
    service::{Services, rooms::PduEvent},
};

pub fn routes(router: AppRouter) -> AppRouter {
    let router = route(router, create_filter_route);
    route(router, get_filter_route)
}

/// `types` entries may end in `*` as a prefix wildcard.
fn type_matches(pattern: &str, kind: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => pattern == kind,
    }
}

pub fn matches(filter: &RoomEventFilter, pdu: &PduEvent) -> bool {
    let kind = pdu.kind.to_string();
    if filter.not_types.iter().any(|t| type_matches(t, &kind)) {
        return false;
    }
    if let Some(types) = &filter.types
        && !types.iter().any(|t| type_matches(t, &kind))
    {
        return false;
    }
    if filter.not_senders.contains(&pdu.sender) {
        return false;
    }
    if let Some(senders) = &filter.senders
        && !senders.contains(&pdu.sender)
    {
        return false;
    }
    if filter.not_rooms.contains(&pdu.room_id) {
        return false;
    }
    if let Some(rooms) = &filter.rooms
        && !rooms.contains(&pdu.room_id)
    {
        return false;
    }
    if let Some(url_filter) = &filter.url_filter {
        let has_url = pdu.content_field("url").is_some_and(|u| u.is_string());
        let want = matches!(
            url_filter,
            ruma::api::client::filter::UrlFilter::EventsWithUrl
        );
        if has_url != want {
            return false;
        }
    }
    true
}

pub fn is_member_event(pdu: &PduEvent) -> bool {
    pdu.kind == TimelineEventType::RoomMember
}

async fn create_filter_route(
    services: Arc<Services>,
    body: Ruma<create_filter::v3::Request>,
) -> Result<create_filter::v3::Response> {
    if body.body.user_id != body.user() {
        return Err(Error::forbidden("You may only create filters for yourself"));
    }
    let filter = body.json_body().unwrap_or_else(|| serde_json::json!({}));
    let id = services.account_data.create_filter(body.user(), &filter)?;
    Ok(create_filter::v3::Response::new(id))
}

async fn get_filter_route(
    services: Arc<Services>,
    body: Ruma<get_filter::v3::Request>,
) -> Result<get_filter::v3::Response> {
    if body.body.user_id != body.user() {
        return Err(Error::forbidden("You may only read your own filters"));
    }
    let filter = services
        .account_data
        .get_filter(body.user(), &body.body.filter_id)?
        .ok_or_else(|| Error::not_found("Unknown filter"))?;
    let filter = serde_json::from_value(filter)
        .map_err(|e| Error::internal(format_args!("stored filter: {e}")))?;
    Ok(get_filter::v3::Response::new(filter))
}
