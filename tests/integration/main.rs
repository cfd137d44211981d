//! Integration tests: each module starts real servers in-process and talks HTTP to them.
//! One test binary, so the crate is linked once.

#[allow(dead_code)]
mod common;

mod basics;
mod client_compat;
mod config_files;
