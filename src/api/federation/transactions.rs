//! `PUT /_matrix/federation/v1/send/{txnId}`: a peer pushes PDUs and EDUs. Each PDU is
//! judged on its own; one bad event does not fail the others. A repeated transaction id
//! from the same origin gets the first answer again without processing anything.

use std::{collections::BTreeMap, sync::Arc};

use ruma::{OwnedEventId, OwnedRoomId, api::federation::transactions::send_transaction_message};
use serde_json::value::RawValue as RawJsonValue;

use crate::{
    api::{
        router::{AppRouter, route},
        ruma::Ruma,
    },
    error::{Error, Result},
    service::{Services, presence, receipts, rooms::incoming, typing},
};

/// The spec's limits on one transaction.
const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;

pub fn routes(router: AppRouter) -> AppRouter {
    route(router, send_transaction_route)
}

async fn send_transaction_route(
    services: Arc<Services>,
    request: Ruma<send_transaction_message::v1::Request>,
) -> Result<send_transaction_message::v1::Response> {
    let origin = request.origin().to_owned();
    let body = request.body;
    if body.origin != origin {
        return Err(Error::forbidden(
            "The transaction's origin is not the server that signed the request",
        ));
    }
    if body.pdus.len() > MAX_PDUS || body.edus.len() > MAX_EDUS {
        return Err(Error::bad_json(format!(
            "A transaction holds at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs"
        )));
    }
    let _lock = services.federation.inbound.lock_origin(&origin).await;
    if let Some(done) = services
        .federation
        .inbound
        .finished_transaction(&origin, &body.transaction_id)?
    {
        return Ok(send_transaction_message::v1::Response::new(done));
    }

    let mut results = BTreeMap::new();
    for raw in &body.pdus {
        let (event_id, result) = handle_pdu(&services, &origin, raw).await;
        if let Some(event_id) = event_id {
            results.insert(event_id, result.map_err(|e| e.message));
        }
    }
    for edu in &body.edus {
        handle_edu(&services, &origin, edu.json());
    }
    services
        .federation
        .inbound
        .finish_transaction(&origin, &body.transaction_id, &results)?;
    Ok(send_transaction_message::v1::Response::new(results))
}

/// One EDU, handed to the service that owns its type. EDUs are best effort: a bad one is
/// logged and skipped, never failing the transaction.
fn handle_edu(services: &Services, origin: &ruma::ServerName, raw: &RawJsonValue) {
    let Ok(edu) = serde_json::from_str::<serde_json::Value>(raw.get()) else {
        return;
    };
    let content = &edu["content"];
    let result = match edu["edu_type"].as_str().unwrap_or_default() {
        "m.typing" => typing::handle_edu(services, origin, content),
        "m.receipt" => receipts::handle_edu(services, origin, content),
        "m.presence" => presence::handle_edu(services, origin, content),
        // Both say "this user's keys changed": their users query again.
        "m.device_list_update" | "m.signing_key_update" => {
            services.receive_device_list_update(origin, content)
        }
        "m.direct_to_device" => services.receive_direct_to_device(origin, content),
        other => {
            tracing::debug!(%origin, edu_type = other, "EDU not handled");
            Ok(())
        }
    };
    if let Err(e) = result {
        tracing::info!(%origin, "EDU not applied: {}", e.message);
    }
}

/// One PDU of a transaction; its id (when it has a readable one) and the outcome.
async fn handle_pdu(
    services: &Services,
    origin: &ruma::ServerName,
    raw: &RawJsonValue,
) -> (Option<OwnedEventId>, Result<()>) {
    let room_id: OwnedRoomId = match incoming::pdu_room_id(raw) {
        Ok(room_id) => room_id,
        Err(e) => {
            tracing::info!(%origin, "dropping a PDU without a room: {e}");
            return (None, Err(e));
        }
    };
    // Parsed once: the id the sender knows the PDU by, for the response map, and the
    // pipeline's input.
    let parsed = services
        .rooms
        .room_version(&room_id)
        .ok()
        .flatten()
        .and_then(|version| Some((incoming::parse_pdu(&version, raw).ok()?, version)));
    let Some((parsed, version)) = parsed else {
        tracing::info!(%origin, %room_id, "dropping a PDU of a room this server is not in");
        return (None, Err(Error::not_found("unknown room")));
    };
    let event_id = parsed.event_id.clone();
    match services.rooms.server_acl_allows(&room_id, origin) {
        Ok(true) => {}
        Ok(false) => {
            return (
                Some(event_id),
                Err(Error::forbidden(
                    "Server is banned from this room by its ACL",
                )),
            );
        }
        Err(e) => return (Some(event_id), Err(e)),
    }
    let result = services
        .rooms
        .handle_parsed_pdu(
            &services.federation,
            origin,
            &room_id,
            &version,
            parsed,
            true,
            false,
        )
        .await;
    if let Err(e) = &result {
        tracing::info!(%origin, %event_id, "PDU not accepted: {}", e.message);
    }
    (Some(event_id), result.map(|_| ()))
}
