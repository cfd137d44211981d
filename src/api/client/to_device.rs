//! `PUT /sendToDevice/{eventType}/{txnId}` (spec: "Send-to-Device messaging"). Local
//! recipients get the messages in their next `/sync`; remote ones through an
//! `m.direct_to_device` EDU per server. A repeated transaction id does nothing again.

use std::{collections::BTreeMap, sync::Arc};

use ruma::api::client::to_device::send_event_to_device;
use serde_json::{Map, Value, json};

use crate::{
    api::{
        router::{AppRouter, route},
        ruma::Ruma,
    },
    error::{Error, Result},
    service::{Services, e2ee::to_device::Message, globals::random_string},
};

pub fn routes(router: AppRouter) -> AppRouter {
    route(router, send_to_device_route)
}

async fn send_to_device_route(
    services: Arc<Services>,
    body: Ruma<send_event_to_device::v3::Request>,
) -> Result<send_event_to_device::v3::Response> {
    let json = body.json_body().unwrap_or_default();
    let Some(messages) = json.get("messages").and_then(Value::as_object) else {
        return Err(Error::bad_json("messages must be an object"));
    };
    let sender = body.user();
    let kind = body.body.event_type.to_string();
    let own = services.globals.server_name().to_owned();
    let local = services.to_device_targets(messages, |u| u.server_name() == own)?;
    let batch: Vec<Message<'_>> = local
        .iter()
        .map(|(user, device, content)| Message {
            user,
            device,
            content,
        })
        .collect();
    let fresh = services.e2ee.queue_to_device(
        &[
            b"client",
            sender.as_bytes(),
            body.device().as_str().as_bytes(),
            body.body.txn_id.as_str().as_bytes(),
        ],
        sender,
        &kind,
        &batch,
    )?;
    if !fresh {
        return Ok(send_event_to_device::v3::Response::new());
    }
    services
        .notifier
        .wake_all(local.iter().map(|(u, _, _)| &**u));

    // Messages for other servers' users, one EDU per server.
    let mut remote: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for (user, devices) in messages {
        if let Ok(user_id) = ruma::UserId::parse(user.as_str())
            && user_id.server_name() != own
        {
            remote
                .entry(user_id.server_name().to_string())
                .or_default()
                .insert(user.clone(), devices.clone());
        }
    }
    for (server, messages) in remote {
        let Ok(server) = ruma::OwnedServerName::try_from(server) else {
            continue;
        };
        services.sending.queue_edu(
            &[server],
            json!({
                "edu_type": "m.direct_to_device",
                "content": {
                    "sender": sender,
                    "type": kind,
                    "message_id": random_string(16),
                    "messages": messages,
                },
            }),
        )?;
    }
    Ok(send_event_to_device::v3::Response::new())
}
