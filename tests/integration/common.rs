//! A real server in-process on 127.0.0.1:0 with a temporary RocksDB, and a small HTTP
//! client that speaks to it the way a Matrix client does.

use std::path::PathBuf;

use conduit::{config::Config, server::RunningServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub base: String,
    pub dir: TempDir,
    pub server_name: String,
    http: reqwest::Client,
}

#[derive(Clone, Debug)]
pub struct User {
    pub user_id: String,
    pub token: String,
    pub device_id: String,
    pub password: String,
}

pub fn test_config(server_name: &str, path: PathBuf) -> Config {
    let mut config = Config::with_defaults(server_name, path);
    config.allow_registration = true;
    config.rate_limits.enabled = false;
    config
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config("localhost", dir.path().join("db"));
        configure(&mut config);
        Self::start_in(dir, config).await
    }

    async fn start_in(dir: TempDir, config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Self::start_on(dir, config, listener).await
    }

    /// A server that federates: named `127.0.0.1:<port>` after the port it listens on,
    /// serving HTTPS with a self-signed certificate to its peers (which accept any
    /// certificate) and plain HTTP to the test client on the same port (`dual_protocol`).
    /// No notaries: tests never reach the internet.
    pub async fn start_federated() -> Self {
        Self::start_federated_with(|_| {}).await
    }

    pub async fn start_federated_with(configure: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let server_name = format!("127.0.0.1:{}", addr.port());
        let mut config = test_config(&server_name, dir.path().join("db"));
        let cert = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .expect("self-signed certificate");
        let certs = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&certs, cert.cert.pem()).expect("write cert");
        std::fs::write(&key, cert.key_pair.serialize_pem()).expect("write key");
        config.tls = Some(conduit::config::TlsConfig {
            certs,
            key,
            dual_protocol: true,
        });
        config.allow_invalid_tls_certificates = true;
        config.trusted_servers = Vec::new();
        config.federation_timeout = 10;
        configure(&mut config);
        Self::start_on(dir, config, listener).await
    }

    pub fn services(&self) -> &std::sync::Arc<conduit::service::Services> {
        &self.server.as_ref().expect("running").services
    }

    async fn start_on(dir: TempDir, config: Config, listener: tokio::net::TcpListener) -> Self {
        let server_name = config.server_name.to_string();
        let server = conduit::server::start(config, listener)
            .await
            .expect("server starts");
        let base = format!("http://{}", server.addr);
        Self {
            server: Some(server),
            base,
            dir,
            server_name,
            http: reqwest::Client::new(),
        }
    }

    /// Stops the server, runs `while_down` (the port stays closed, so peers see a dead
    /// server), then starts it again on the same port and database.
    pub async fn restart_after<F: std::future::Future<Output = ()>>(
        mut self,
        while_down: impl FnOnce() -> F,
    ) -> Self {
        let config = self.services().config().clone();
        let server = self.server.take().expect("running");
        let addr = server.addr;
        server.stop().await;
        while_down().await;
        let listener = tokio::net::TcpListener::bind(addr).await.expect("rebind");
        Self::start_on(self.dir, config, listener).await
    }

    /// Stops the server and starts it again on the same database with its configuration
    /// changed by `configure`.
    pub async fn restart_with(mut self, configure: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.services().config().clone();
        configure(&mut config);
        let server = self.server.take().expect("running");
        let addr = server.addr;
        server.stop().await;
        if config.tls.is_some() {
            // A federated server's name holds its port: come back on the same one.
            let listener = tokio::net::TcpListener::bind(addr).await.expect("rebind");
            return Self::start_on(self.dir, config, listener).await;
        }
        Self::start_in(self.dir, config).await
    }

    /// Stops the server (graceful shutdown, database flushed) and starts a new one on the
    /// same database.
    pub async fn restart(self) -> Self {
        self.restart_with(|_| {}).await
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let response = req.send().await.expect("request is answered");
        let status = response.status();
        let text = response.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// Sends raw bytes, for malformed-input tests.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .body(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let response = req.send().await.expect("request is answered");
        let status = response.status();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, Some(token), Some(body))
            .await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::PUT, path, Some(token), Some(body))
            .await
    }

    /// Registers through the dummy UIA flow, as clients do.
    pub async fn register(&self, localpart: &str) -> User {
        let password = format!("{localpart}-password");
        let body = json!({ "username": localpart, "password": password });
        let (status, challenge) = self
            .request(
                Method::POST,
                "/_matrix/client/v3/register",
                None,
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{challenge}");
        let mut body = body;
        body["auth"] = json!({ "type": "m.login.dummy", "session": challenge["session"] });
        let (status, response) = self
            .request(
                Method::POST,
                "/_matrix/client/v3/register",
                None,
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{response}");
        User {
            user_id: response["user_id"].as_str().expect("user_id").to_owned(),
            token: response["access_token"].as_str().expect("token").to_owned(),
            device_id: response["device_id"].as_str().expect("device").to_owned(),
            password,
        }
    }

    pub async fn login(&self, user: &User) -> User {
        let (status, response) = self
            .request(
                Method::POST,
                "/_matrix/client/v3/login",
                None,
                Some(json!({
                    "type": "m.login.password",
                    "identifier": { "type": "m.id.user", "user": user.user_id },
                    "password": user.password,
                })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{response}");
        User {
            user_id: user.user_id.clone(),
            token: response["access_token"].as_str().expect("token").to_owned(),
            device_id: response["device_id"].as_str().expect("device").to_owned(),
            password: user.password.clone(),
        }
    }

    pub async fn create_room(&self, user: &User, body: Value) -> String {
        let (status, response) = self
            .post("/_matrix/client/v3/createRoom", &user.token, body)
            .await;
        assert_eq!(status, StatusCode::OK, "{response}");
        response["room_id"].as_str().expect("room_id").to_owned()
    }

    pub async fn join(&self, user: &User, room: &str) {
        let (status, response) = self
            .post(
                &format!("/_matrix/client/v3/join/{}", enc(room)),
                &user.token,
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{response}");
    }

    pub async fn send_text(&self, user: &User, room: &str, body: &str) -> String {
        let txn = format!("t{}", rand_u64());
        let (status, response) = self
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
                    enc(room)
                ),
                &user.token,
                json!({ "msgtype": "m.text", "body": body }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{response}");
        response["event_id"].as_str().expect("event_id").to_owned()
    }

    pub async fn sync(&self, user: &User, since: Option<&str>, timeout_ms: u64) -> Value {
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}");
        if let Some(since) = since {
            path.push_str(&format!("&since={since}"));
        }
        let (status, response) = self.get(&path, &user.token).await;
        assert_eq!(status, StatusCode::OK, "{response}");
        response
    }
}

/// Percent-encodes a path segment (room ids contain `!` and `:`, aliases `#`).
/// `POST /join/{room}?via={via}`: a join through another server.
pub async fn join_via(
    server: &TestServer,
    user: &User,
    room: &str,
    via: &str,
) -> (StatusCode, Value) {
    server
        .post(
            &format!("/_matrix/client/v3/join/{}?via={}", enc(room), enc(via)),
            &user.token,
            json!({}),
        )
        .await
}

pub fn enc(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub fn rand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed) ^ (std::process::id() as u64) << 32
}

/// The timeline events of `room` in a sync response.
pub fn timeline<'a>(sync: &'a Value, room: &str) -> Vec<&'a Value> {
    sync["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

pub fn bodies(events: &[&Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str().map(ToOwned::to_owned))
        .collect()
}

/// The `errcode` of an error body.
pub fn errcode(body: &Value) -> Option<&str> {
    body["errcode"].as_str()
}

/// The `next_batch` of a sync response.
pub fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().expect("next_batch").to_owned()
}

impl TestServer {
    /// `GET /rooms/{room}/state/{type}/{key}`: the content of one state event.
    pub async fn state_event(
        &self,
        user: &User,
        room: &str,
        kind: &str,
        state_key: &str,
    ) -> (StatusCode, Value) {
        self.get(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/{kind}/{}",
                enc(room),
                enc(state_key)
            ),
            &user.token,
        )
        .await
    }

    /// The content of a state event that must exist.
    pub async fn state_content(&self, user: &User, room: &str, kind: &str) -> Value {
        let (status, body) = self.state_event(user, room, kind, "").await;
        assert_eq!(status, StatusCode::OK, "{kind}: {body}");
        body
    }

    /// The whole current state of a room, as `GET /rooms/{room}/state` returns it.
    pub async fn room_state(&self, user: &User, room: &str) -> Vec<Value> {
        let (status, body) = self
            .get(
                &format!("/_matrix/client/v3/rooms/{}/state", enc(room)),
                &user.token,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body.as_array().expect("state list").clone()
    }

    pub async fn send_event(
        &self,
        user: &User,
        room: &str,
        kind: &str,
        txn: &str,
        content: Value,
    ) -> (StatusCode, Value) {
        self.put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/{kind}/{}",
                enc(room),
                enc(txn)
            ),
            &user.token,
            content,
        )
        .await
    }

    pub async fn send_state(
        &self,
        user: &User,
        room: &str,
        kind: &str,
        state_key: &str,
        content: Value,
    ) -> (StatusCode, Value) {
        self.put(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/{kind}/{}",
                enc(room),
                enc(state_key)
            ),
            &user.token,
            content,
        )
        .await
    }

    /// `POST /rooms/{room}/{action}` for invite, kick, ban, unban, leave and forget.
    pub async fn membership(
        &self,
        user: &User,
        room: &str,
        action: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        self.post(
            &format!("/_matrix/client/v3/rooms/{}/{action}", enc(room)),
            &user.token,
            body,
        )
        .await
    }

    pub async fn invite(&self, user: &User, room: &str, target: &User) {
        let (status, body) = self
            .membership(user, room, "invite", json!({ "user_id": target.user_id }))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    pub async fn leave(&self, user: &User, room: &str) {
        let (status, body) = self.membership(user, room, "leave", json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// `GET /rooms/{room}/messages?{query}`.
    pub async fn messages(&self, user: &User, room: &str, query: &str) -> (StatusCode, Value) {
        self.get(
            &format!("/_matrix/client/v3/rooms/{}/messages?{query}", enc(room)),
            &user.token,
        )
        .await
    }

    /// A sync with extra query parameters (`filter=...`, `full_state=true`).
    pub async fn sync_with(&self, user: &User, since: Option<&str>, query: &str) -> Value {
        let mut path = format!("/_matrix/client/v3/sync?timeout=0&{query}");
        if let Some(since) = since {
            path.push_str(&format!("&since={since}"));
        }
        let (status, response) = self.get(&path, &user.token).await;
        assert_eq!(status, StatusCode::OK, "{response}");
        response
    }
}
