//! Server identity: the name and the ed25519 signing key, created on first start.

use std::sync::Arc;

use ruma::{OwnedServerName, ServerName, signatures::Ed25519KeyPair};

use crate::{
    config::Config,
    database::{Database, Table},
    error::{Error, Result},
};

pub struct Globals {
    pub config: Config,
    pub keypair: Ed25519KeyPair,
    global: Table,
}

const KEYPAIR: &[u8] = b"keypair";

impl Globals {
    pub fn new(config: Config, db: &Arc<Database>) -> Result<Self> {
        let global = db.table("global");
        // Stored as "<version>\xFF<pkcs8 document>".
        let stored = match global.get(KEYPAIR)? {
            Some(bytes) => bytes,
            None => {
                let document = Ed25519KeyPair::generate();
                let version: String = {
                    use rand::Rng;
                    rand::thread_rng()
                        .sample_iter(&rand::distributions::Alphanumeric)
                        .take(8)
                        .map(char::from)
                        .collect()
                };
                let mut bytes = version.into_bytes();
                bytes.push(0xFF);
                bytes.extend_from_slice(&document);
                global.put(KEYPAIR, &bytes)?;
                bytes
            }
        };
        let split = stored
            .iter()
            .position(|b| *b == 0xFF)
            .ok_or_else(|| Error::internal("corrupt signing key"))?;
        let version = String::from_utf8_lossy(&stored[..split]).into_owned();
        let keypair =
            Ed25519KeyPair::from_der(&stored[split + 1..], version).map_err(Error::internal)?;
        Ok(Self {
            config,
            keypair,
            global,
        })
    }

    pub fn server_name(&self) -> &ServerName {
        &self.config.server_name
    }

    pub fn owned_server_name(&self) -> OwnedServerName {
        self.config.server_name.clone()
    }

    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.keypair.version())
    }

    pub fn global_table(&self) -> &Table {
        &self.global
    }
}

pub fn random_string(length: usize) -> String {
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(length)
        .map(char::from)
        .collect()
}

pub fn now_ms() -> u64 {
    ruma::MilliSecondsSinceUnixEpoch::now().get().into()
}
