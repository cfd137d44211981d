//! Federation: several servers in-process talking to each other over HTTPS.

mod keys;
