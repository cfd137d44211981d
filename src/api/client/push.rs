//! Push rules (spec: "Push Rules"): reading the whole ruleset (clients such as matrix-js-sdk
//! and Element refuse to start without it) and editing single rules. The ruleset is the
//! account data `m.push_rules` merged over the server defaults (`service/push`).

use std::sync::Arc;

use ruma::{
    UserId,
    api::client::push::{
        delete_pushrule, get_pushrule, get_pushrule_actions, get_pushrule_enabled,
        get_pushrules_all, get_pushrules_global_scope, set_pushrule, set_pushrule_actions,
        set_pushrule_enabled,
    },
    push::{InsertPushRuleError, RemovePushRuleError, RuleKind, Ruleset},
};

use crate::{
    api::{
        router::{AppRouter, route},
        ruma::Ruma,
    },
    error::{Error, Result},
    service::Services,
};

pub fn routes(router: AppRouter) -> AppRouter {
    let router = route(router, get_all_route);
    let router = route(router, get_global_route);
    let router = route(router, get_rule_route);
    let router = route(router, set_rule_route);
    let router = route(router, delete_rule_route);
    let router = route(router, get_enabled_route);
    let router = route(router, set_enabled_route);
    let router = route(router, get_actions_route);
    route(router, set_actions_route)
}

/// The user's ruleset: the server defaults with the user's changes merged in.
pub fn ruleset(services: &Services, user_id: &UserId) -> Result<Ruleset> {
    Ok((*services.push.ruleset(user_id)?).clone())
}

fn not_found(kind: &RuleKind, rule_id: &str) -> Error {
    Error::not_found(format!("No push rule {rule_id} of kind {kind}"))
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

async fn get_rule_route(
    services: Arc<Services>,
    body: Ruma<get_pushrule::v3::Request>,
) -> Result<get_pushrule::v3::Response> {
    let rules = services.push.ruleset(body.user())?;
    let rule = rules
        .get(body.body.kind.clone(), &body.body.rule_id)
        .ok_or_else(|| not_found(&body.body.kind, &body.body.rule_id))?;
    Ok(get_pushrule::v3::Response::new(rule.to_owned().into()))
}

async fn set_rule_route(
    services: Arc<Services>,
    body: Ruma<set_pushrule::v3::Request>,
) -> Result<set_pushrule::v3::Response> {
    let req = body.body;
    services.push.update_rules(
        body.sender_user.as_deref().expect("authenticated"),
        |rules| {
            rules
                .insert(req.rule, req.after.as_deref(), req.before.as_deref())
                .map_err(|e| match e {
                    InsertPushRuleError::UnknownRuleId => {
                        Error::not_found("The before or after rule does not exist")
                    }
                    other => Error::invalid_param(other.to_string()),
                })
        },
    )?;
    Ok(set_pushrule::v3::Response::new())
}

async fn delete_rule_route(
    services: Arc<Services>,
    body: Ruma<delete_pushrule::v3::Request>,
) -> Result<delete_pushrule::v3::Response> {
    let req = &body.body;
    services.push.update_rules(body.user(), |rules| {
        rules
            .remove(req.kind.clone(), &req.rule_id)
            .map_err(|e| match e {
                RemovePushRuleError::ServerDefault => {
                    Error::invalid_param("Server-default rules cannot be deleted")
                }
                _ => not_found(&req.kind, &req.rule_id),
            })
    })?;
    Ok(delete_pushrule::v3::Response::new())
}

async fn get_enabled_route(
    services: Arc<Services>,
    body: Ruma<get_pushrule_enabled::v3::Request>,
) -> Result<get_pushrule_enabled::v3::Response> {
    let rules = services.push.ruleset(body.user())?;
    let rule = rules
        .get(body.body.kind.clone(), &body.body.rule_id)
        .ok_or_else(|| not_found(&body.body.kind, &body.body.rule_id))?;
    Ok(get_pushrule_enabled::v3::Response::new(rule.enabled()))
}

async fn set_enabled_route(
    services: Arc<Services>,
    body: Ruma<set_pushrule_enabled::v3::Request>,
) -> Result<set_pushrule_enabled::v3::Response> {
    let req = &body.body;
    services.push.update_rules(body.user(), |rules| {
        rules
            .set_enabled(req.kind.clone(), &req.rule_id, req.enabled)
            .map_err(|_| not_found(&req.kind, &req.rule_id))
    })?;
    Ok(set_pushrule_enabled::v3::Response::new())
}

async fn get_actions_route(
    services: Arc<Services>,
    body: Ruma<get_pushrule_actions::v3::Request>,
) -> Result<get_pushrule_actions::v3::Response> {
    let rules = services.push.ruleset(body.user())?;
    let rule = rules
        .get(body.body.kind.clone(), &body.body.rule_id)
        .ok_or_else(|| not_found(&body.body.kind, &body.body.rule_id))?;
    Ok(get_pushrule_actions::v3::Response::new(
        rule.actions().to_vec(),
    ))
}

async fn set_actions_route(
    services: Arc<Services>,
    body: Ruma<set_pushrule_actions::v3::Request>,
) -> Result<set_pushrule_actions::v3::Response> {
    let req = &body.body;
    services.push.update_rules(body.user(), |rules| {
        rules
            .set_actions(req.kind.clone(), &req.rule_id, req.actions.clone())
            .map_err(|_| not_found(&req.kind, &req.rule_id))
    })?;
    Ok(set_pushrule_actions::v3::Response::new())
}
