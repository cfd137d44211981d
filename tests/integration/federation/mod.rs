//! Server-server API tests, one file per area.

mod sending;
mod serve;
