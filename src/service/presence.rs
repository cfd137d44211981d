//! Presence (spec: "Presence"). Each user's state is stored with a stream position so
//! `/sync` sends the changes of users sharing a room; local users fall to `unavailable`
//! and then `offline` after configured idle times by themselves (timers, not polling);
//! changes of local users go to the servers sharing a room with them as `m.presence`.
//! `allow_local_presence = false` turns all of it off.
//!
//! Across servers, as Synapse: a local user who is not offline has their presence sent
//! again every `presence_federation_ping_s` though it did not change, and another server's
//! user not heard of for `presence_remote_timeout_s` becomes offline here (their server may
//! be gone, and nobody else would ever say so). Synapse times out our users the same way,
//! so without the pings a user active for half an hour looked offline to its users.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::{OwnedServerName, OwnedUserId, UserId, presence::PresenceState};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Services, deadlines::Deadlines, globals::now_ms};
use crate::{
    database::{Database, Table, key},
    error::Result,
};

/// A user counts as currently active this long after their last activity.
const ACTIVE_WINDOW_MS: u64 = 60_000;
/// Activity refreshes `last_active_ts` in the database at most this often (or a quarter
/// of the idle time, if shorter) when nothing else changes, so a client syncing in a loop
/// does not write on every request. The idle timers are as precise as this.
const ACTIVITY_WRITE_MS: u64 = 30_000;

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Presence {
    pub presence: PresenceState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_msg: Option<String>,
    pub last_active_ts: u64,
    /// Stream position of the last visible change.
    pub count: u64,
}

impl Presence {
    pub fn currently_active(&self) -> bool {
        self.presence == PresenceState::Online
            && now_ms().saturating_sub(self.last_active_ts) < ACTIVE_WINDOW_MS
    }

    /// The `m.presence` event content.
    pub fn content(&self) -> Value {
        let mut content = json!({
            "presence": self.presence,
            "last_active_ago": now_ms().saturating_sub(self.last_active_ts),
            "currently_active": self.currently_active(),
        });
        if let Some(msg) = &self.status_msg {
            content["status_msg"] = json!(msg);
        }
        content
    }
}

pub struct PresenceService {
    db: Arc<Database>,
    /// user -> Presence
    presence: Table,
    /// count -> user (only the newest change of each user)
    presence_stream: Table,
    timers: Deadlines<OwnedUserId>,
    enabled: bool,
    idle: Duration,
    offline: Duration,
    activity_write_ms: u64,
    ping_every: Duration,
    remote_timeout: Duration,
    /// When each local user's presence last went to other servers.
    sent: Mutex<HashMap<OwnedUserId, Instant>>,
    /// When each other server's user was last heard of.
    heard: Mutex<HashMap<OwnedUserId, Instant>>,
}

impl PresenceService {
    pub fn new(db: &Arc<Database>, config: &crate::config::Config) -> Self {
        Self {
            db: Arc::clone(db),
            presence: db.table("presence"),
            presence_stream: db.table("presence_stream"),
            timers: Deadlines::default(),
            enabled: config.allow_local_presence,
            idle: Duration::from_secs(config.presence_idle_timeout_s),
            offline: Duration::from_secs(config.presence_offline_timeout_s),
            activity_write_ms: ACTIVITY_WRITE_MS
                .min(config.presence_idle_timeout_s.saturating_mul(250))
                .max(1),
            ping_every: Duration::from_secs(config.presence_federation_ping_s.max(1)),
            remote_timeout: Duration::from_secs(config.presence_remote_timeout_s.max(1)),
            sent: Mutex::default(),
            heard: Mutex::default(),
        }
    }

    fn sent_now(&self, user_id: &UserId) {
        stamp(&self.sent, user_id, Instant::now());
    }

    fn heard_now(&self, user_id: &UserId) {
        stamp(&self.heard, user_id, Instant::now());
    }

    /// Every stored record (local and remote users), read in one pass.
    fn all_records(&self) -> impl Iterator<Item = (OwnedUserId, Presence)> + '_ {
        self.presence.iter().filter_map(|(k, v)| {
            let user = UserId::parse(String::from_utf8_lossy(&k).as_ref()).ok()?;
            Some((user, serde_json::from_slice(&v).ok()?))
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn get(&self, user_id: &UserId) -> Result<Option<Presence>> {
        self.presence.get_json(user_id.as_bytes())
    }

    /// The record after a change, whether the change is visible (it takes a stream
    /// position) and whether only the activity time moved far enough to be written.
    fn apply(
        &self,
        old: Option<&Presence>,
        presence: &PresenceState,
        status_msg: Option<&Option<String>>,
        last_active_ts: Option<u64>,
    ) -> (Presence, bool, bool) {
        let mut new = old.cloned().unwrap_or(Presence {
            presence: PresenceState::Offline,
            status_msg: None,
            last_active_ts: 0,
            count: 0,
        });
        new.presence = presence.clone();
        if let Some(msg) = status_msg {
            new.status_msg = msg.clone();
        }
        if let Some(ts) = last_active_ts {
            new.last_active_ts = new.last_active_ts.max(ts);
        }
        let visible = old.is_none_or(|o| {
            o.presence != new.presence
                || o.status_msg != new.status_msg
                || o.currently_active() != new.currently_active()
        });
        let stale = old.is_some_and(|o| {
            new.last_active_ts.saturating_sub(o.last_active_ts) >= self.activity_write_ms
        });
        (new, visible, stale)
    }

    /// Stores a new state; a visible change takes a stream position, a bare activity
    /// refresh does not. Returns the stored record if the change is visible.
    fn store(
        &self,
        user_id: &UserId,
        presence: PresenceState,
        status_msg: Option<Option<String>>,
        last_active_ts: Option<u64>,
    ) -> Result<Option<Presence>> {
        // The common case, a sync of a user already online, writes nothing: checked
        // without the commit lock first (and again under it).
        let old = self.get(user_id)?;
        let (_, visible, stale) =
            self.apply(old.as_ref(), &presence, status_msg.as_ref(), last_active_ts);
        if !visible && !stale {
            return Ok(None);
        }
        self.db.commit(|c| {
            let old: Option<Presence> = self.presence.get_json(user_id.as_bytes())?;
            let (mut new, visible, stale) =
                self.apply(old.as_ref(), &presence, status_msg.as_ref(), last_active_ts);
            if !visible {
                if stale {
                    c.put(
                        &self.presence,
                        user_id.as_bytes(),
                        serde_json::to_vec(&new)?,
                    );
                }
                return Ok(None);
            }
            if let Some(old) = &old {
                c.delete(&self.presence_stream, old.count.to_be_bytes());
            }
            new.count = c.next_count();
            c.put(
                &self.presence,
                user_id.as_bytes(),
                serde_json::to_vec(&new)?,
            );
            c.put(
                &self.presence_stream,
                new.count.to_be_bytes(),
                user_id.as_bytes(),
            );
            Ok(Some(new))
        })
    }

    /// Users whose presence changed in `(since, until]`.
    pub fn changed_since(&self, since: u64, until: u64) -> Result<Vec<OwnedUserId>> {
        let mut out = Vec::new();
        for (k, v) in self
            .presence_stream
            .scan_from(since.saturating_add(1).to_be_bytes().to_vec(), Vec::new())
        {
            if key::to_u64(&k) > until {
                break;
            }
            if let Ok(user) = UserId::parse(String::from_utf8_lossy(&v).as_ref()) {
                out.push(user);
            }
        }
        Ok(out)
    }

    /// Every user with a presence record.
    pub fn all_users(&self) -> Vec<OwnedUserId> {
        self.presence
            .iter()
            .filter_map(|(k, _)| UserId::parse(String::from_utf8_lossy(&k).as_ref()).ok())
            .collect()
    }

    /// Arms the idle timer of a local user after activity or a state change.
    fn schedule(&self, user_id: &UserId, p: &Presence) {
        let since_active = Duration::from_millis(now_ms().saturating_sub(p.last_active_ts));
        let after = match p.presence {
            PresenceState::Online => self.idle,
            PresenceState::Unavailable => self.offline,
            _ => {
                self.timers.cancel(&user_id.to_owned());
                return;
            }
        };
        self.timers.set(
            user_id.to_owned(),
            Instant::now() + after.saturating_sub(since_active),
        );
    }
}

/// One of the spec's three states (ruma also parses any other string).
pub fn is_known(state: &PresenceState) -> bool {
    matches!(
        state,
        PresenceState::Online | PresenceState::Unavailable | PresenceState::Offline
    )
}

/// The servers sharing a room with `user_id`.
fn servers_of(services: &Services, user_id: &UserId) -> Result<Vec<OwnedServerName>> {
    let mut servers = BTreeSet::new();
    for room in services.rooms.rooms_joined(user_id)? {
        servers.extend(services.rooms.joined_servers(&room)?);
    }
    Ok(servers.into_iter().collect())
}

/// Wakes the local users who share a room with `user_id` (and the user).
fn wake_watchers(services: &Services, user_id: &UserId) -> Result<()> {
    let mut users = BTreeSet::from([user_id.to_owned()]);
    for room in services.rooms.rooms_joined(user_id)? {
        users.extend(services.rooms.joined_members(&room)?);
    }
    services.notifier.wake_all(users.iter().map(|u| &**u));
    Ok(())
}

/// Sets a local user's presence: `active` for a request made by the user (a sync, a
/// status update) rather than a timer.
pub fn set_local(
    services: &Services,
    user_id: &UserId,
    presence: PresenceState,
    status_msg: Option<Option<String>>,
    active: bool,
) -> Result<()> {
    let p = &services.presence;
    if !p.enabled {
        return Ok(());
    }
    let ts = active.then(now_ms);
    let stored = p.store(user_id, presence.clone(), status_msg, ts)?;
    if (active || stored.is_some())
        && let Some(current) = p.get(user_id)?
    {
        p.schedule(user_id, &current);
    }
    let Some(stored) = stored else {
        return Ok(());
    };
    wake_watchers(services, user_id)?;
    send_to_servers(services, user_id, &stored)
}

fn send_to_servers(services: &Services, user_id: &UserId, p: &Presence) -> Result<()> {
    let mut entry = p.content();
    entry["user_id"] = json!(user_id);
    services.presence.sent_now(user_id);
    services.sending.queue_edu(
        &servers_of(services, user_id)?,
        json!({ "edu_type": "m.presence", "content": { "push": [entry] } }),
    )?;
    Ok(())
}

/// The federation side of the timers: pings for local users whose presence went out
/// `ping_every` ago and is not offline; offline for other servers' users not heard of for
/// `remote_timeout`.
fn federation_tick(services: &Services) -> Result<()> {
    let p = &services.presence;
    let own = services.globals.server_name();
    let now = Instant::now();
    for (user, current) in p.all_records() {
        if current.presence == PresenceState::Offline {
            continue;
        }
        // Users first seen here count as just sent or heard (after a restart: at start).
        if user.server_name() == own {
            if since(&p.sent, &user, now) >= p.ping_every {
                send_to_servers(services, &user, &current)?;
            }
        } else if since(&p.heard, &user, now) >= p.remote_timeout
            && p.store(&user, PresenceState::Offline, None, None)?
                .is_some()
        {
            tracing::debug!(%user, "no presence from their server for a while: offline");
            wake_watchers(services, &user)?;
        }
    }
    Ok(())
}

fn stamp(map: &Mutex<HashMap<OwnedUserId, Instant>>, user: &UserId, at: Instant) {
    map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(user.to_owned(), at);
}

/// How long ago `map` stamped `user`; a user it has no stamp for is stamped `now`.
fn since(map: &Mutex<HashMap<OwnedUserId, Instant>>, user: &UserId, now: Instant) -> Duration {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    now.saturating_duration_since(*map.entry(user.to_owned()).or_insert(now))
}

/// `/sync`'s `set_presence`: online marks activity, unavailable is kept as asked, offline
/// leaves the state alone (the client does not want to look online).
pub fn on_sync(services: &Services, user_id: &UserId, set: &PresenceState) -> Result<()> {
    match set {
        PresenceState::Offline => Ok(()),
        other if !is_known(other) => Ok(()),
        other => set_local(services, user_id, other.clone(), None, true),
    }
}

/// Moves idle local users to unavailable and then offline, until the server stops. At
/// start every local user who was not offline is armed again.
pub async fn run_timers(services: Arc<Services>) {
    if !services.presence.enabled {
        return;
    }
    let own = services.globals.server_name().to_owned();
    for (user, p) in services.presence.all_records() {
        if user.server_name() == own {
            services.presence.schedule(&user, &p);
        }
    }
    let p = &services.presence;
    let tick = (p.ping_every.min(p.remote_timeout) / 4)
        .clamp(Duration::from_millis(250), Duration::from_secs(60));
    let mut federation = tokio::time::interval(tick);
    federation.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let user = tokio::select! {
            user = services.presence.timers.next_expired() => user,
            _ = federation.tick() => {
                if let Err(e) = federation_tick(&services) {
                    tracing::warn!("presence federation timers: {}", e.message);
                }
                continue;
            }
            () = services.shutdown_signal() => return,
        };
        let Ok(Some(p)) = services.presence.get(&user) else {
            continue;
        };
        let idle_for = Duration::from_millis(now_ms().saturating_sub(p.last_active_ts));
        let next = match p.presence {
            PresenceState::Online if idle_for >= services.presence.idle => {
                PresenceState::Unavailable
            }
            PresenceState::Unavailable if idle_for >= services.presence.offline => {
                PresenceState::Offline
            }
            _ => {
                // Activity since the timer was armed: wait again from it.
                services.presence.schedule(&user, &p);
                continue;
            }
        };
        if let Err(e) = set_local(&services, &user, next, None, false) {
            tracing::warn!(%user, "presence timer failed: {}", e.message);
        }
    }
}

/// An `m.presence` EDU: updates of `origin`'s users who share a room with this server.
pub fn handle_edu(services: &Services, origin: &ruma::ServerName, content: &Value) -> Result<()> {
    if !services.presence.enabled {
        return Ok(());
    }
    for entry in content["push"].as_array().into_iter().flatten() {
        let Some(user_id) = entry["user_id"]
            .as_str()
            .and_then(|u| UserId::parse(u).ok())
        else {
            continue;
        };
        if user_id.server_name() != origin || services.rooms.rooms_joined(&user_id)?.is_empty() {
            tracing::debug!(%origin, %user_id, "ignoring presence of a user of another server or in no shared room");
            continue;
        }
        let Ok(presence) = serde_json::from_value::<PresenceState>(entry["presence"].clone())
        else {
            continue;
        };
        if !is_known(&presence) {
            continue;
        }
        services.presence.heard_now(&user_id);
        let ago = entry["last_active_ago"].as_u64().unwrap_or(0);
        let status = entry["status_msg"].as_str().map(ToOwned::to_owned);
        if services
            .presence
            .store(
                &user_id,
                presence,
                Some(status),
                Some(now_ms().saturating_sub(ago)),
            )?
            .is_some()
        {
            wake_watchers(services, &user_id)?;
        }
    }
    Ok(())
}

/// The `m.presence` events a user's sync shows: the changes in `(since, until]` (all
/// known states on an initial sync) of the user and of users sharing a room with them,
/// and the current presence of the members of `new_rooms` (rooms joined since the token).
pub fn sync_events(
    services: &Services,
    user_id: &UserId,
    since: Option<u64>,
    until: u64,
    new_rooms: &[ruma::OwnedRoomId],
) -> Result<Vec<Value>> {
    if !services.presence.enabled {
        return Ok(Vec::new());
    }
    let mut users: BTreeSet<OwnedUserId> = match since {
        Some(since) => services
            .presence
            .changed_since(since, until)?
            .into_iter()
            .collect(),
        None => services.presence.all_users().into_iter().collect(),
    };
    let changed = users.clone();
    for room in new_rooms {
        users.extend(services.rooms.joined_members(room)?);
    }
    let mut out = Vec::new();
    for other in users {
        if changed.contains(&other)
            && other != user_id
            && !services.rooms.share_room(user_id, &other)?
        {
            continue;
        }
        let Some(p) = services.presence.get(&other)? else {
            continue;
        };
        if since.is_none() && p.count > until {
            continue;
        }
        out.push(json!({ "type": "m.presence", "sender": other, "content": p.content() }));
    }
    Ok(out)
}
