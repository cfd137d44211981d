//! Integration tests: each module starts real servers in-process and talks HTTP to them.
//! One test binary, so the crate is linked once.

#[allow(dead_code)]
mod common;

mod account;
mod auth_rules;
mod basics;
mod errors;
mod messages;
mod rooms;
mod state_res;
mod sync;
