//! Domain logic. Every service is built once at start-up and shared through [`Services`];
//! each owns its tables.

use std::sync::Arc;

use crate::{config::Config, database::Database, error::Result};

pub mod account_data;
pub mod deadlines;
pub mod e2ee;
pub mod federation;
pub mod globals;
pub mod media;
pub mod net_policy;
pub mod notifier;
pub mod presence;
pub mod push;
pub mod ratelimit;
pub mod receipts;
pub mod rooms;
pub mod search;
pub mod sending;
pub mod typing;
pub mod uiaa;
pub mod users;

pub struct Services {
    pub db: Arc<Database>,
    pub globals: Arc<globals::Globals>,
    pub federation: Arc<federation::Federation>,
    pub sending: Arc<sending::Sending>,
    pub notifier: Arc<notifier::Notifier>,
    pub users: users::Users,
    pub rooms: rooms::Rooms,
    pub account_data: Arc<account_data::AccountData>,
    pub push: Arc<push::Push>,
    pub e2ee: e2ee::E2ee,
    pub uiaa: uiaa::Uiaa,
    pub ratelimit: ratelimit::RateLimiter,
    pub typing: typing::Typing,
    pub presence: presence::PresenceService,
    pub receipts: receipts::Receipts,
    pub media: media::Media,
    pub previews: media::preview::Previews,
    pub search: search::Search,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Services {
    pub fn build(config: Config) -> Result<Arc<Self>> {
        let db = Database::open(&config.database_path, config.db_cache_capacity_mb)?;
        let globals = Arc::new(globals::Globals::new(config.clone(), &db)?);
        let notifier = Arc::new(notifier::Notifier::default());
        let federation = Arc::new(federation::Federation::new(&db, Arc::clone(&globals))?);
        let sending = Arc::new(sending::Sending::new(
            &db,
            Arc::clone(&globals),
            Arc::clone(&federation),
        )?);
        let account_data = Arc::new(account_data::AccountData::new(&db, Arc::clone(&notifier)));
        let push = Arc::new(push::Push::new(&db, Arc::clone(&account_data), &config)?);
        let search = search::Search::open(
            &search::Search::dir(&config.database_path),
            config.enable_search,
        )?;
        Ok(Arc::new(Self {
            users: users::Users::new(&db, config.access_token_lifetime_ms),
            rooms: rooms::Rooms::new(
                &db,
                Arc::clone(&globals),
                Arc::clone(&notifier),
                Arc::clone(&sending),
                Arc::clone(&push),
                search.feed(),
            )?,
            account_data,
            push,
            e2ee: e2ee::E2ee::new(&db),
            uiaa: uiaa::Uiaa::default(),
            ratelimit: ratelimit::RateLimiter::new(&config.rate_limits),
            typing: typing::Typing::new(&db),
            presence: presence::PresenceService::new(&db, &config),
            receipts: receipts::Receipts::new(&db),
            media: media::Media::new(&db, &config, Arc::clone(&federation))?,
            previews: media::preview::Previews::new(&db, &config)?,
            search,
            federation,
            sending,
            db,
            globals,
            notifier,
            shutdown: tokio::sync::watch::channel(false).0,
        }))
    }

    /// Tells long-polls to answer now: the server is stopping.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub async fn shutdown_signal(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|stopping| *stopping).await;
    }

    /// The timers and queues that run beside the request handlers; each stops on the
    /// shutdown signal.
    pub fn start_background(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        self.search.start(Arc::downgrade(self));
        vec![
            tokio::spawn(typing::run_timers(Arc::clone(self))),
            tokio::spawn(presence::run_timers(Arc::clone(self))),
            tokio::spawn(push::sender::run(Arc::clone(self))),
            tokio::spawn(media::run_sweeper(Arc::clone(self))),
        ]
    }

    /// Removes a device: its tokens, and its keys and pending to-device messages, which
    /// other users' devices learn of as a device-list change.
    pub fn remove_device(&self, user_id: &ruma::UserId, device_id: &str) -> Result<()> {
        self.users.remove_device(user_id, device_id)?;
        self.e2ee.remove_device(user_id, device_id)?;
        self.push.remove_device_pushers(user_id, device_id)?;
        self.announce_device_change(user_id, device_id, true)
    }

    pub fn remove_all_devices(&self, user_id: &ruma::UserId, except: Option<&str>) -> Result<()> {
        for device in self.users.devices(user_id)? {
            if Some(device.device_id.as_str()) != except {
                self.remove_device(user_id, device.device_id.as_str())?;
            }
        }
        Ok(())
    }

    pub fn config(&self) -> &Config {
        &self.globals.config
    }
}
