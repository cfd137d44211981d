//! Typing notifications, read receipts and read markers (spec: "Typing Notifications",
//! "Receipts", "Fully read markers").

use std::sync::Arc;

use ruma::{
    EventId, RoomId, UserId,
    api::client::{
        read_marker::set_read_marker,
        receipt::create_receipt::{self, v3::ReceiptType},
        typing::create_typing_event::{self, v3::Typing},
    },
    events::receipt::ReceiptThread,
};
use serde_json::{json, value::to_raw_value};

use crate::{
    api::{
        router::{AppRouter, route},
        ruma::Ruma,
    },
    error::{Error, Result},
    service::{
        Services,
        globals::now_ms,
        receipts::{self, READ, READ_PRIVATE, Receipt},
        typing,
    },
};

pub fn routes(router: AppRouter) -> AppRouter {
    let router = route(router, typing_route);
    let router = route(router, receipt_route);
    route(router, read_markers_route)
}

async fn typing_route(
    services: Arc<Services>,
    body: Ruma<create_typing_event::v3::Request>,
) -> Result<create_typing_event::v3::Response> {
    let user = body.user();
    if body.body.user_id != user {
        return Err(Error::forbidden(
            "You cannot set the typing state of another user",
        ));
    }
    let room_id = &body.body.room_id;
    if !services.rooms.is_joined(user, room_id)? {
        return Err(Error::forbidden("You are not joined to this room"));
    }
    let timeout = match body.body.state {
        Typing::Yes(info) => Some(info.timeout),
        Typing::No => None,
    };
    typing::set_typing(&services, room_id, user, timeout)?;
    Ok(create_typing_event::v3::Response::new())
}

/// The stream position of an event of the room the user may acknowledge.
fn receipt_target(
    services: &Services,
    user: &UserId,
    room_id: &RoomId,
    event_id: &EventId,
) -> Result<u64> {
    if !services.rooms.is_joined(user, room_id)? {
        return Err(Error::forbidden("You are not joined to this room"));
    }
    services
        .rooms
        .get_pdu(event_id)?
        .filter(|p| p.room_id == room_id)
        .and_then(|_| services.rooms.pdu_count(event_id).transpose())
        .transpose()?
        .ok_or_else(|| Error::not_found(format!("Event {event_id} is not in this room")))
}

/// The thread an event belongs to (its root), if any.
fn thread_of(services: &Services, event_id: &EventId) -> Result<Option<String>> {
    let Some(pdu) = services.rooms.get_pdu(event_id)? else {
        return Ok(None);
    };
    Ok(match pdu.relation() {
        Some((rel, root)) if rel == "m.thread" => Some(root.to_string()),
        _ => None,
    })
}

async fn receipt_route(
    services: Arc<Services>,
    body: Ruma<create_receipt::v3::Request>,
) -> Result<create_receipt::v3::Response> {
    let user = body.user();
    let req = &body.body;
    let kind = match &req.receipt_type {
        ReceiptType::Read => READ,
        ReceiptType::ReadPrivate => READ_PRIVATE,
        ReceiptType::FullyRead => {
            if req.thread != ReceiptThread::Unthreaded {
                return Err(Error::invalid_param("m.fully_read cannot be threaded"));
            }
            set_fully_read(&services, user, &req.room_id, &req.event_id)?;
            return Ok(create_receipt::v3::Response::new());
        }
        other => {
            return Err(Error::invalid_param(format!(
                "Unknown receipt type {}",
                other.as_str()
            )));
        }
    };
    let thread_id = match &req.thread {
        ReceiptThread::Unthreaded => None,
        ReceiptThread::Main => Some("main".to_owned()),
        ReceiptThread::Thread(root) => Some(root.to_string()),
        _ => {
            return Err(Error::invalid_param(
                "thread_id must be \"main\" or an event id",
            ));
        }
    };
    read_receipt(
        &services,
        user,
        &req.room_id,
        &req.event_id,
        kind,
        thread_id,
    )?;
    Ok(create_receipt::v3::Response::new())
}

fn read_receipt(
    services: &Services,
    user: &UserId,
    room_id: &RoomId,
    event_id: &EventId,
    kind: &str,
    thread_id: Option<String>,
) -> Result<()> {
    let event_count = receipt_target(services, user, room_id, event_id)?;
    if let Some(thread) = &thread_id {
        // A threaded receipt must point into its thread (the root counts as in it).
        let actual = thread_of(services, event_id)?;
        let fits = match thread.as_str() {
            "main" => actual.is_none(),
            root => actual.as_deref() == Some(root) || event_id.as_str() == root,
        };
        if !fits {
            return Err(Error::invalid_param(format!(
                "Event {event_id} is not in thread {thread}"
            )));
        }
    }
    receipts::set_receipt(
        services,
        room_id,
        Receipt {
            user_id: user.to_owned(),
            kind: kind.to_owned(),
            event_id: event_id.to_owned(),
            ts: now_ms(),
            thread_id,
            event_count: Some(event_count),
            count: 0,
        },
    )
}

/// Moves the `m.fully_read` marker (room account data), never backwards.
fn set_fully_read(
    services: &Services,
    user: &UserId,
    room_id: &RoomId,
    event_id: &EventId,
) -> Result<()> {
    let target = receipt_target(services, user, room_id, event_id)?;
    let current = services
        .account_data
        .get(user, Some(room_id), "m.fully_read")?
        .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw.get()).ok())
        .and_then(|v| v["event_id"].as_str().and_then(|e| EventId::parse(e).ok()))
        .and_then(|e| services.rooms.pdu_count(&e).ok().flatten());
    if current.is_some_and(|c| c >= target) {
        return Ok(());
    }
    services.account_data.set(
        user,
        Some(room_id),
        "m.fully_read",
        to_raw_value(&json!({ "event_id": event_id }))?,
    )
}

async fn read_markers_route(
    services: Arc<Services>,
    body: Ruma<set_read_marker::v3::Request>,
) -> Result<set_read_marker::v3::Response> {
    let user = body.user();
    let req = &body.body;
    // Check every target first: a bad one changes nothing.
    for event_id in [
        &req.fully_read,
        &req.read_receipt,
        &req.private_read_receipt,
    ]
    .into_iter()
    .flatten()
    {
        receipt_target(&services, user, &req.room_id, event_id)?;
    }
    if let Some(event_id) = &req.fully_read {
        set_fully_read(&services, user, &req.room_id, event_id)?;
    }
    if let Some(event_id) = &req.read_receipt {
        read_receipt(&services, user, &req.room_id, event_id, READ, None)?;
    }
    if let Some(event_id) = &req.private_read_receipt {
        read_receipt(&services, user, &req.room_id, event_id, READ_PRIVATE, None)?;
    }
    Ok(set_read_marker::v3::Response::new())
}
