//! conduit: a Matrix homeserver with an embedded RocksDB database.

pub mod api;
pub mod config;
pub mod database;
pub mod error;
pub mod server;
pub mod service;
