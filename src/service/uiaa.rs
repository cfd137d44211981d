//! User-interactive authentication sessions. Sessions live in memory for 10 minutes: a
//! restart only makes a client start the dance again.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{error::Error, service::globals::random_string};

const SESSION_TTL: Duration = Duration::from_secs(600);

#[derive(Default)]
pub struct Uiaa {
    sessions: Mutex<HashMap<String, (Instant, Vec<String>)>>,
}

impl Uiaa {
    /// The 401 challenge for `flows` (each a list of stage names) with a session.
    pub fn challenge(
        &self,
        flows: &[Vec<&str>],
        session: Option<&str>,
        params: Value,
        error: Option<Error>,
    ) -> Error {
        let session = match session {
            Some(s)
                if self
                    .sessions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains_key(s) =>
            {
                s.to_owned()
            }
            _ => {
                let s = random_string(24);
                let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
                sessions.retain(|_, (t, _)| t.elapsed() < SESSION_TTL);
                sessions.insert(s.clone(), (Instant::now(), vec![]));
                s
            }
        };
        let completed = self.completed(&session);
        let mut body = serde_json::Map::new();
        body.insert(
            "flows".to_owned(),
            Value::Array(
                flows
                    .iter()
                    .map(|stages| json!({ "stages": stages }))
                    .collect(),
            ),
        );
        body.insert("params".to_owned(), params);
        body.insert("session".to_owned(), json!(session));
        if !completed.is_empty() {
            body.insert("completed".to_owned(), json!(completed));
        }
        if let Some(error) = error {
            body.insert("errcode".to_owned(), json!(error.errcode));
            body.insert("error".to_owned(), json!(error.message));
        }
        Error::uiaa(body)
    }

    pub fn completed(&self, session: &str) -> Vec<String> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(session)
            .map(|(_, c)| c.clone())
            .unwrap_or_default()
    }

    pub fn complete_stage(&self, session: &str, stage: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let entry = sessions
            .entry(session.to_owned())
            .or_insert_with(|| (Instant::now(), vec![]));
        if !entry.1.iter().any(|s| s == stage) {
            entry.1.push(stage.to_owned());
        }
    }

    pub fn finish(&self, session: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(session);
    }
}
