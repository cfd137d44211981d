//! Server-server API tests, one file per area.

mod keys;
mod sending;
mod serve;
