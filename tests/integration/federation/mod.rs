//! Server-server API tests; each area has its own file.

mod sending;
