//! Server-server API tests, one file per area.

mod keys;
mod media;
mod robustness;
mod rooms;
mod sending;
mod serve;
