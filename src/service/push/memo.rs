//! Rule outcomes shared between the members of a room. Whether a push rule applies to an
//! event depends on the event, the room (member count, power levels) and the rule itself,
//! but not on the user whose rule it is, except for the display-name condition (and the
//! sender, whom evaluation skips). So a rule that several members have alike, which is
//! most of the defaults, is decided once per event, and each member's remaining cost is a
//! table lookup per rule instead of a pattern match on the event.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    sync::Arc,
};

use ruma::push::{AnyPushRuleRef, PushCondition, Ruleset};
use sha2::{Digest, Sha256};

/// A user's merged ruleset and, per rule in evaluation order, the key under which its
/// outcome is shared (`None`: depends on the user, evaluated for each).
pub struct Compiled {
    pub rules: Arc<Ruleset>,
    pub keys: Vec<Option<u128>>,
}

impl Compiled {
    pub fn new(rules: Arc<Ruleset>) -> Self {
        let keys = rules.iter().map(|rule| share_key(&rule)).collect();
        Self { rules, keys }
    }
}

/// A digest of the rule's kind and its whole definition (id, enabled, conditions or
/// pattern, actions): two rules with the same key decide any event alike.
fn share_key(rule: &AnyPushRuleRef<'_>) -> Option<u128> {
    let (kind, json) = match rule {
        AnyPushRuleRef::Override(r) | AnyPushRuleRef::Underride(r) => {
            let per_user = r.conditions.iter().any(|c| {
                #[allow(deprecated)]
                let display = matches!(c, PushCondition::ContainsDisplayName);
                // Conditions this server does not know are kept per user: their
                // inputs are unknown.
                display || matches!(c, PushCondition::_Custom(_))
            });
            if per_user {
                return None;
            }
            let kind = if matches!(rule, AnyPushRuleRef::Override(_)) {
                "override"
            } else {
                "underride"
            };
            (kind, serde_json::to_vec(r).ok()?)
        }
        AnyPushRuleRef::Content(r) => ("content", serde_json::to_vec(r).ok()?),
        AnyPushRuleRef::Room(r) => ("room", serde_json::to_vec(r).ok()?),
        AnyPushRuleRef::Sender(r) => ("sender", serde_json::to_vec(r).ok()?),
        #[allow(unreachable_patterns)]
        _ => return None,
    };
    let digest = Sha256::new()
        .chain_update(kind)
        .chain_update([0])
        .chain_update(json)
        .finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    Some(u128::from_be_bytes(first))
}

/// The keys are digests already: hashing them again would only cost time.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// Outcomes decided so far for one event.
pub type Memo = HashMap<u128, bool, BuildHasherDefault<KeyHasher>>;
