//! Push rules (spec: "Push Rules"). Clients read the user's ruleset at start-up (matrix-js-sdk
//! and Element refuse to start without it); it is the account data `m.push_rules`, the
//! server-default ruleset until the user changes it. Editing rules, pushers and
//! notification counts belong to the notifications work.

use std::sync::Arc;

use ruma::{
    UserId,
    api::client::push::{get_pushrules_all, get_pushrules_global_scope},
    push::Ruleset,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    api::{
        router::{AppRouter, route},
        ruma::Ruma,
    },
    error::Result,
    service::Services,
};

pub fn routes(router: AppRouter) -> AppRouter {
    let router = route(router, get_all_route);
    route(router, get_global_route)
}

/// The user's ruleset: stored in account data, else the server defaults.
pub fn ruleset(services: &Services, user_id: &UserId) -> Result<Ruleset> {
    #[derive(Deserialize)]
    struct Content {
        global: Ruleset,
    }
    let stored = services
        .account_data
        .get(user_id, None, "m.push_rules")?
        .and_then(|raw| serde_json::from_str::<Content>(raw.get()).ok());
    match stored {
        Some(content) => Ok(content.global),
        None => default_ruleset(user_id),
    }
}

/// The spec's defaults plus the two legacy mention rules Synapse still serves
/// (`.m.rule.contains_display_name`, `.m.rule.roomnotif`): clients expect them, and messages
/// from clients that predate intentional mentions rely on them.
fn default_ruleset(user_id: &UserId) -> Result<Ruleset> {
    let mut rules = serde_json::to_value(Ruleset::server_default(user_id))?;
    let display_name = json!({
        "rule_id": ".m.rule.contains_display_name", "default": true, "enabled": true,
        "conditions": [{ "kind": "contains_display_name" }],
        "actions": ["notify", { "set_tweak": "sound", "value": "default" }, { "set_tweak": "highlight" }],
    });
    let room_notif = json!({
        "rule_id": ".m.rule.roomnotif", "default": true, "enabled": true,
        "conditions": [
            { "kind": "event_match", "key": "content.body", "pattern": "@room" },
            { "kind": "sender_notification_permission", "key": "room" },
        ],
        "actions": ["notify", { "set_tweak": "highlight" }],
    });
    if let Some(overrides) = rules.get_mut("override").and_then(Value::as_array_mut) {
        // Each right after its intentional-mention counterpart, as Synapse orders them.
        for (after, rule) in [
            (".m.rule.is_user_mention", display_name),
            (".m.rule.is_room_mention", room_notif),
        ] {
            let at = overrides
                .iter()
                .position(|r| r["rule_id"] == after)
                .map_or(overrides.len(), |i| i + 1);
            overrides.insert(at, rule);
        }
    }
    Ok(serde_json::from_value(rules)?)
}

async fn get_all_route(
    services: Arc<Services>,
    body: Ruma<get_pushrules_all::v3::Request>,
) -> Result<get_pushrules_all::v3::Response> {
    Ok(get_pushrules_all::v3::Response::new(ruleset(
        &services,
        body.user(),
    )?))
}

async fn get_global_route(
    services: Arc<Services>,
    body: Ruma<get_pushrules_global_scope::v3::Request>,
) -> Result<get_pushrules_global_scope::v3::Response> {
    Ok(get_pushrules_global_scope::v3::Response::new(ruleset(
        &services,
        body.user(),
    )?))
}
