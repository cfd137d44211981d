//! Push rules and notifications (spec: "Push Notifications"). The user's rules are the
//! account data `m.push_rules` (as Synapse keeps them) merged over the server defaults;
//! every new event is evaluated against the rules of each local member in the append path
//! (`counts.rs`), which feeds the unread counts of `/sync`, `GET /notifications` and the
//! pushers.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{OwnedRoomId, OwnedUserId, UserId, push::Ruleset};
use serde_json::{Value, json};

use crate::{
    database::{Database, Table},
    error::Result,
    service::{account_data::AccountData, net_policy},
};

pub mod counts;
mod memo;
pub mod pushers;
pub mod sender;

pub use counts::{Notification, Outcome, Unread};

pub const PUSH_RULES: &str = "m.push_rules";

pub struct Push {
    db: Arc<Database>,
    account_data: Arc<AccountData>,
    /// user 0xFF app id 0xFF pushkey -> pusher
    pushers: Table,
    /// event count 0xFF user 0xFF app id 0xFF pushkey -> queued push (`sender.rs`)
    push_queue: Table,
    /// Wakes the sender after a commit that queued something.
    wake: tokio::sync::Notify,
    /// The push client: no redirects, and only addresses the policy allows.
    client: reqwest::Client,
    policy: Arc<net_policy::AddressPolicy>,
    /// user 0xFF room 0xFF count -> small record for the unread counts
    user_notifications: Table,
    /// user 0xFF count -> the notification, for `GET /notifications`
    notification_stream: Table,
    /// Each user's merged ruleset, with the account data position it was built from.
    rulesets: Mutex<HashMap<OwnedUserId, (u64, Arc<memo::Compiled>)>>,
    /// Per room: the power-levels context, keyed by the power-levels event it came from.
    power: Mutex<HashMap<OwnedRoomId, counts::PowerCache>>,
    /// Members' display names for the display-name rule, by what never changes: a user's
    /// member state key, and a member event's name.
    names: Mutex<counts::NameCache>,
    /// Each user's pusher ids, for the append path (`pushers.rs`).
    pusher_cache: Mutex<pushers::PusherCache>,
}

impl Push {
    pub fn new(
        db: &Arc<Database>,
        account_data: Arc<AccountData>,
        config: &crate::config::Config,
    ) -> Result<Self> {
        let policy = Arc::new(net_policy::AddressPolicy::new(
            config.push_gateway_allowed_ranges.clone(),
        ));
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(net_policy::FilteringResolver(Arc::clone(&policy))))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(crate::error::Error::internal)?;
        Ok(Self {
            db: Arc::clone(db),
            account_data,
            pushers: db.table("pushers"),
            push_queue: db.table("push_queue"),
            wake: tokio::sync::Notify::new(),
            client,
            policy,
            user_notifications: db.table("user_notifications"),
            notification_stream: db.table("notification_stream"),
            rulesets: Mutex::default(),
            power: Mutex::default(),
            names: Mutex::default(),
            pusher_cache: Mutex::default(),
        })
    }

    /// Wakes the sender: called after a commit that queued pushes.
    pub fn wake_sender(&self) {
        self.wake.notify_one();
    }

    /// The user's ruleset: the server defaults with the user's changes and rules merged in.
    pub fn ruleset(&self, user_id: &UserId) -> Result<Arc<Ruleset>> {
        Ok(Arc::clone(&self.compiled(user_id)?.rules))
    }

    /// The ruleset with the keys that let members share rule outcomes (`memo.rs`).
    fn compiled(&self, user_id: &UserId) -> Result<Arc<memo::Compiled>> {
        let stored = self.account_data.get_versioned(user_id, None, PUSH_RULES)?;
        let version = stored.as_ref().map_or(0, |(c, _)| *c);
        if let Some((v, compiled)) = self
            .rulesets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(user_id)
            && *v == version
        {
            return Ok(Arc::clone(compiled));
        }
        let stored = stored.and_then(|(_, raw)| serde_json::from_str::<Value>(raw.get()).ok());
        let rules = Arc::new(merge(
            default_ruleset(user_id)?,
            stored.as_ref().map(|s| &s["global"]),
        )?);
        let compiled = Arc::new(memo::Compiled::new(rules));
        let mut cache = self.rulesets.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 4096 {
            cache.clear();
        }
        cache.insert(user_id.to_owned(), (version, Arc::clone(&compiled)));
        Ok(compiled)
    }

    /// Changes the user's rules with `f` and stores the result (one account data write).
    pub fn update_rules<T>(
        &self,
        user_id: &UserId,
        f: impl FnOnce(&mut Ruleset) -> Result<T>,
    ) -> Result<T> {
        let mut rules = (*self.ruleset(user_id)?).clone();
        let out = f(&mut rules)?;
        self.account_data.set(
            user_id,
            None,
            PUSH_RULES,
            serde_json::value::to_raw_value(&json!({ "global": rules }))?,
        )?;
        Ok(out)
    }
}

const KINDS: [&str; 5] = ["override", "content", "room", "sender", "underride"];

/// The defaults with what the user stored: the user's `enabled` and `actions` of each
/// server-default rule, and the user's own rules where Synapse puts them (override rules
/// after `.m.rule.master` and before the other defaults, content and underride rules before
/// the defaults of their kind). Defaults added by a newer server appear on their own.
fn merge(defaults: Ruleset, stored: Option<&Value>) -> Result<Ruleset> {
    let Some(stored) = stored.filter(|s| s.is_object()) else {
        return Ok(defaults);
    };
    let mut merged = serde_json::to_value(&defaults)?;
    for kind in KINDS {
        let stored_rules: Vec<Value> = stored[kind].as_array().cloned().unwrap_or_default();
        let mut base: Vec<Value> = merged[kind].as_array().cloned().unwrap_or_default();
        for rule in &mut base {
            if let Some(own) = stored_rules
                .iter()
                .find(|r| r["rule_id"] == rule["rule_id"])
            {
                for field in ["enabled", "actions"] {
                    if !own[field].is_null() {
                        rule[field] = own[field].clone();
                    }
                }
            }
        }
        let user: Vec<Value> = stored_rules
            .into_iter()
            .filter(|r| r["rule_id"].as_str().is_some_and(|id| !id.starts_with('.')))
            .collect();
        let at = match kind {
            "override" => base
                .iter()
                .position(|r| r["rule_id"] == ".m.rule.master")
                .map_or(0, |i| i + 1),
            _ => 0,
        };
        base.splice(at..at, user);
        merged[kind] = Value::Array(base);
    }
    // A stored rule that no longer parses is dropped rather than breaking every request.
    Ok(serde_json::from_value(merged.clone()).or_else(|_| {
        tracing::warn!("stored push rules do not parse; using the defaults");
        Ok::<_, serde_json::Error>(defaults)
    })?)
}

/// The spec's defaults plus the two legacy mention rules Synapse still serves
/// (`.m.rule.contains_display_name`, `.m.rule.roomnotif`): clients expect them, and messages
/// from clients that predate intentional mentions rely on them.
pub fn default_ruleset(user_id: &UserId) -> Result<Ruleset> {
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
