//! Server-server API tests, one file per area.

mod keys;
mod rooms;
mod sending;
mod serve;
