//! `GET /notifications` (spec: "Listing notifications"): the events the user's push rules
//! notified for, newest first, with whether each is read.

use std::{collections::HashMap, sync::Arc};

use axum::Json;
use ruma::{OwnedRoomId, api::client::push::get_notifications};
use serde_json::{Value, json};

use crate::{
    api::{
        router::{AppRouter, route_any},
        ruma::Ruma,
    },
    error::{Error, Result},
    service::{Services, receipts::ReadUpTo},
};

pub fn routes(router: AppRouter) -> AppRouter {
    route_any(router, notifications_route)
}

const DEFAULT_LIMIT: usize = 50;

async fn notifications_route(
    services: Arc<Services>,
    body: Ruma<get_notifications::v3::Request>,
) -> Result<Json<Value>> {
    let user = body.user();
    let req = &body.body;
    let before = match req.from.as_deref() {
        None => u64::MAX,
        Some(token) => token
            .parse::<u64>()
            .map_err(|_| Error::invalid_param("from is not a token of this server"))?,
    };
    let limit = req
        .limit
        .map_or(DEFAULT_LIMIT, |l| {
            usize::try_from(u64::from(l)).unwrap_or(usize::MAX)
        })
        .clamp(1, 1000);
    let only_highlight = req.only.as_deref() == Some("highlight");
    let mut read: HashMap<OwnedRoomId, ReadUpTo> = HashMap::new();
    let mut out = Vec::new();
    let mut next_token = None;
    for (count, n) in services.push.notifications(user, before) {
        if only_highlight && !n.highlight {
            continue;
        }
        if out.len() == limit {
            next_token = Some(out_last_count(&out));
            break;
        }
        // An event redacted or purged since: listed no more.
        let Some(pdu) = services.rooms.get_pdu(&n.event_id)? else {
            continue;
        };
        let read_up_to = match read.get(&n.room_id) {
            Some(r) => r,
            None => read
                .entry(n.room_id.clone())
                .or_insert(services.receipts.read_up_to(&n.room_id, user)?),
        };
        let is_read = count <= read_up_to.of(n.thread.as_deref());
        out.push((
            count,
            json!({
                "actions": n.actions,
                "event": serde_json::from_str::<Value>(pdu.to_client_json(None).get())?,
                "read": is_read,
                "room_id": n.room_id,
                "ts": n.ts,
            }),
        ));
    }
    let mut body = json!({ "notifications": out.into_iter().map(|(_, n)| n).collect::<Vec<_>>() });
    if let Some(token) = next_token {
        body["next_token"] = json!(token.to_string());
    }
    Ok(Json(body))
}

fn out_last_count(out: &[(u64, Value)]) -> u64 {
    out.last().map_or(0, |(c, _)| *c)
}
