//! `GET /notifications` (spec: "Listing notifications"): the events the user's push rules
//! notified for, newest first, with whether each is read. And the user's pushers
//! (`GET /pushers`, `POST /pushers/set`); delivery is `service/push/sender.rs`.

use std::{collections::HashMap, sync::Arc};

use axum::Json;
use ruma::{
    OwnedRoomId,
    api::client::push::{
        PusherKind, get_notifications, get_pushers,
        set_pusher::{self, v3::PusherAction},
    },
};
use serde_json::{Value, json};

use crate::{
    api::{
        router::{AppRouter, route, route_any},
        ruma::Ruma,
    },
    error::{Error, Result},
    service::{Services, receipts::ReadUpTo},
};

pub fn routes(router: AppRouter) -> AppRouter {
    let router = route(router, get_pushers_route);
    let router = route(router, set_pusher_route);
    route_any(router, notifications_route)
}

/// The only path the spec lets a pusher URL have.
const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";

async fn get_pushers_route(
    services: Arc<Services>,
    body: Ruma<get_pushers::v3::Request>,
) -> Result<get_pushers::v3::Response> {
    Ok(get_pushers::v3::Response::new(
        services
            .push
            .pushers(body.user())?
            .into_iter()
            .map(|p| p.pusher)
            .collect(),
    ))
}

async fn set_pusher_route(
    services: Arc<Services>,
    body: Ruma<set_pusher::v3::Request>,
) -> Result<set_pusher::v3::Response> {
    let user = body.user();
    match &body.body.action {
        PusherAction::Delete(ids) => {
            services
                .push
                .remove_pusher(user, &ids.app_id, &ids.pushkey)?;
        }
        PusherAction::Post(data) => {
            let pusher = &data.pusher;
            if pusher.ids.pushkey.is_empty() || pusher.ids.pushkey.len() > 512 {
                return Err(Error::invalid_param("pushkey must be 1 to 512 bytes"));
            }
            if pusher.ids.app_id.is_empty() || pusher.ids.app_id.len() > 64 {
                return Err(Error::invalid_param("app_id must be 1 to 64 bytes"));
            }
            let PusherKind::Http(http) = &pusher.kind else {
                return Err(Error::invalid_param("Only http pushers are supported"));
            };
            let url = reqwest::Url::parse(&http.url)
                .map_err(|_| Error::invalid_param("data.url is not a URL"))?;
            if !matches!(url.scheme(), "http" | "https") || url.path() != NOTIFY_PATH {
                return Err(Error::invalid_param(format!(
                    "data.url must be an http(s) URL with the path {NOTIFY_PATH}"
                )));
            }
            services.push.set_pusher(
                user,
                body.sender_device.as_deref().map(|d| d.as_str()),
                pusher.clone(),
                data.append,
            )?;
        }
        _ => return Err(Error::invalid_param("Unknown pusher action")),
    }
    Ok(set_pusher::v3::Response::new())
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
