//! Integration tests: each module starts real servers in-process and talks HTTP to them.
//! One test binary, so the crate is linked once.

#[allow(dead_code)]
mod common;

mod account;
mod account_data;
mod auth_rules;
mod basics;
mod client_compat;
mod config_files;
mod crash;
mod device;
mod directory;
mod discovery;
mod e2ee;
mod errors;
mod federation;
mod media;
mod messages;
mod profile;
mod realtime;
mod relations;
mod rooms;
mod search;
mod state_res;
mod sync;
