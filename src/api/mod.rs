//! HTTP handlers: thin, one file per spec area.

pub mod admin;
pub mod client;
pub mod federation;
pub mod router;
pub mod ruma;
pub mod server;
