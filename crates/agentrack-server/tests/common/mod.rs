//! Shared fixture: the real `agentrack` binary on a random loopback port with a temp data dir,
//! plus small HTTP and WebSocket helpers.

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

// Cargo builds the binary for the integration tests only with its `cli` feature.
#[cfg(not(feature = "cli"))]
compile_error!("the integration tests drive the `agentrack` binary: run them with the default `cli` feature");

pub mod cluster;
pub mod pg_cluster;
pub mod postgres;

pub const BIN: &str = env!("CARGO_BIN_EXE_agentrack");

/// Which store a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: a SQLite file in the data directory.
    Sqlite,
    /// A fresh database on the test PostgreSQL (see [`postgres`]).
    Postgres,
}

/// Runs each `async fn name(backend: Backend)` listed as two tests, `name::sqlite` and
/// `name::postgres`: the same test function on both stores.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name($crate::common::Backend::Sqlite).await;
                }

                #[tokio::test]
                async fn postgres() {
                    super::$name($crate::common::Backend::Postgres).await;
                }
            }
        )*
    };
}

/// A running server process.
pub struct TestServer {
    child: Option<Child>,
    dir: Option<TempDir>,
    data: PathBuf,
    args: Vec<String>,
    /// The PostgreSQL database it runs on, dropped with it.
    database: Option<String>,
    pub url: String,
    pub admin: String,
    http: reqwest::Client,
}

fn spawn(data: &Path, args: &[String]) -> (Child, String) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.join("server.log"))
        .unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--data")
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("AGENTRACK_LOG", "info")
        .env_remove("AGENTRACK_CONFIG")
        .env_remove("AGENTRACK_STORE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("the agentrack binary starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        // Keep draining so the server never blocks on a full pipe.
        for _ in lines {}
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no `listening on` line; log:\n{}", read_log(data)));
    let url = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, url)
}

pub fn read_log(data: &Path) -> String {
    std::fs::read_to_string(data.join("server.log")).unwrap_or_default()
}

impl TestServer {
    /// A fresh server with default settings.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// A fresh server with extra `serve` flags, on SQLite.
    pub async fn start_with(args: &[&str]) -> Self {
        Self::start_on(Backend::Sqlite, args).await
    }

    /// A fresh server on SQLite with `config` as its TOML file (kept with the returned directory).
    pub async fn start_with_config(config: &str) -> (Self, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agentrack.toml");
        std::fs::write(&path, config).unwrap();
        let server = Self::start_with(&["--config", path.to_str().unwrap()]).await;
        (server, dir)
    }

    /// A fresh server on `backend` (a fresh database for PostgreSQL) with extra `serve` flags.
    pub async fn start_on(backend: Backend, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        let mut args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let (url, name) = postgres::fresh_database().await;
                args.extend(["--store".to_owned(), url]);
                Some(name)
            }
        };
        let (child, url) = spawn(&data, &args);
        let admin = std::fs::read_to_string(data.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        Self {
            child: Some(child),
            dir: Some(dir),
            data,
            args,
            database,
            url,
            admin,
            http: reqwest::Client::new(),
        }
    }

    /// A node on an existing store (`--store store`), one of a cluster: the store and its
    /// database belong to the caller. `admin` is the admin token when another node made it.
    pub fn on_store(store: &str, args: &[&str], admin: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        let mut args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        args.extend(["--store".to_owned(), store.to_owned()]);
        let (child, url) = spawn(&data, &args);
        let admin = admin.map_or_else(
            || {
                std::fs::read_to_string(data.join("admin.token"))
                    .unwrap()
                    .trim()
                    .to_owned()
            },
            str::to_owned,
        );
        Self {
            child: Some(child),
            dir: Some(dir),
            data,
            args,
            database: None,
            url,
            admin,
            http: reqwest::Client::new(),
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends a signal (`STOP`, `CONT`, …) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    pub fn data(&self) -> &Path {
        &self.data
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        for _ in 0..500 {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap();
        panic!("the server did not stop on SIGTERM");
    }

    /// Starts the server again on the same data directory and flags.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        let (child, url) = spawn(&self.data, &self.args);
        self.child = Some(child);
        self.url = url;
    }

    pub fn log(&self) -> String {
        read_log(&self.data)
    }

    pub async fn request(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.request("POST", path, Some(token), Some(&body.to_string())).await
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.request("GET", path, Some(token), None).await
    }

    /// POST that must succeed; returns the body.
    pub async fn ok(&self, path: &str, token: &str, body: Value) -> Value {
        let (status, value) = self.post(path, token, body).await;
        assert!((200..300).contains(&status), "POST {path} → {status} {value}");
        value
    }

    pub async fn token(&self, role: &str, tenant: &str, user: Option<&str>) -> String {
        let body = self
            .ok(
                "/v1/tokens",
                &self.admin,
                json!({"role": role, "tenant": tenant, "user_id": user}),
            )
            .await;
        body["token"].as_str().unwrap().to_owned()
    }

    /// A single-use event-stream ticket for `token` (`?ticket=`).
    pub async fn ticket(&self, token: &str) -> String {
        let (status, body) = self.request("POST", "/v1/events/ticket", Some(token), None).await;
        assert_eq!(status, 201, "{body}");
        body["ticket"].as_str().unwrap().to_owned()
    }

    /// The Prometheus text of `/metrics`, read with the admin token.
    pub async fn prometheus(&self) -> String {
        let (status, text) = self.request("GET", "/metrics", Some(&self.admin), None).await;
        assert_eq!(status, 200, "{text}");
        text.as_str().unwrap().to_owned()
    }

    pub async fn create(&self, token: &str, agent: &str, thread: &str, user: &str) -> String {
        let body = self
            .ok(
                "/v1/executions",
                token,
                json!({"agent_name": agent, "thread_id": thread, "user_id": user, "timeout_seconds": 300}),
            )
            .await;
        body["execution_id"].as_str().unwrap().to_owned()
    }

    /// Starts execution `id`.
    pub async fn start_execution(&self, token: &str, id: &str) {
        self.ok(&format!("/v1/executions/{id}/start"), token, json!({})).await;
    }

    /// Creates an execution and starts it; returns its id.
    pub async fn create_started(&self, token: &str, agent: &str, thread: &str, user: &str) -> String {
        let id = self.create(token, agent, thread, user).await;
        self.start_execution(token, &id).await;
        id
    }

    /// One heartbeat for execution `id`.
    pub async fn heartbeat(&self, token: &str, id: &str) {
        self.ok(&format!("/v1/executions/{id}/heartbeat"), token, json!({}))
            .await;
    }

    /// Start, heartbeat, the nine golden-path phases, complete.
    pub async fn golden_path(&self, token: &str, id: &str) {
        self.start_execution(token, id).await;
        self.finish_golden_path(token, id).await;
    }

    /// Heartbeat, the nine golden-path phases, complete (for a started execution).
    pub async fn finish_golden_path(&self, token: &str, id: &str) {
        self.heartbeat(token, id).await;
        for (phase, metadata) in golden_phases() {
            self.ok(
                &format!("/v1/executions/{id}/phase"),
                token,
                json!({"phase": phase, "metadata": metadata}),
            )
            .await;
        }
        self.ok(
            &format!("/v1/executions/{id}/state"),
            token,
            json!({"state": "completed", "result": {"answer": "sunny"}}),
        )
        .await;
    }

    pub async fn ws(&self, query: &str, token: Option<&str>) -> Ws {
        let url = format!("{}/v1/events{query}", self.url.replacen("http://", "ws://", 1));
        let mut request = url.into_client_request().unwrap();
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("WebSocket connects");
        Ws { socket }
    }

    /// The HTTP status a WebSocket handshake is refused with.
    pub async fn ws_refused(&self, query: &str, token: Option<&str>) -> u16 {
        let url = format!("{}/v1/events{query}", self.url.replacen("http://", "ws://", 1));
        let mut request = url.into_client_request().unwrap();
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        match tokio_tungstenite::connect_async(request).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("the handshake was accepted"),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- server log ---\n{}", read_log(&self.data));
        }
        if let Some(database) = self.database.take() {
            postgres::drop_database(&database);
        }
        drop(self.dir.take());
    }
}

/// The events of the golden path (`golden_path`) in order, heartbeats left out.
pub const GOLDEN_EVENTS: [&str; 13] = [
    "execution_created",
    "state_changed",
    "state_changed",
    "phase_changed",
    "phase_changed",
    "agent_started",
    "agent_thinking",
    "agent_thinking",
    "tool_executing",
    "agent_thinking",
    "agent_thinking",
    "agent_completed",
    "execution_completed",
];

/// The nine golden-path phases after `created`, each with the metadata the tests send.
pub fn golden_phases() -> Vec<(&'static str, Value)> {
    vec![
        ("websocket_setup", json!({})),
        ("context_validation", json!({"user_context": "ok"})),
        ("starting", json!({"request": "weather in Paris"})),
        ("thinking", json!({"reasoning": "need a forecast"})),
        ("llm_interaction", json!({"model": "gpt"})),
        (
            "tool_execution",
            json!({"tool_name": "get_forecast", "parameters": {"city": "Paris"}}),
        ),
        ("result_processing", json!({})),
        ("completing", json!({})),
        ("completed", json!({"result": "sunny"})),
    ]
}

/// A WebSocket client.
pub struct Ws {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

pub enum Frame {
    Event(Value),
    Closed(Option<(u16, String)>),
    Timeout,
}

impl Ws {
    /// The next JSON message, close, or timeout.
    pub async fn next(&mut self, wait: Duration) -> Frame {
        loop {
            match tokio::time::timeout(wait, self.socket.next()).await {
                Err(_) => return Frame::Timeout,
                Ok(None | Some(Err(_))) => return Frame::Closed(None),
                Ok(Some(Ok(Message::Text(text)))) => return Frame::Event(serde_json::from_str(&text).unwrap()),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Frame::Closed(frame.map(|f| (u16::from(f.code), f.reason.to_string())));
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Events until `done` says stop (inclusive), failing after `wait` of silence.
    pub async fn until(&mut self, wait: Duration, mut done: impl FnMut(&Value) -> bool) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            match self.next(wait).await {
                Frame::Event(event) => {
                    let stop = done(&event);
                    events.push(event);
                    if stop {
                        return events;
                    }
                }
                Frame::Closed(reason) => panic!("stream closed early: {reason:?}; got {events:#?}"),
                Frame::Timeout => panic!("no more events after {} : {events:#?}", events.len()),
            }
        }
    }

    /// Every event that arrives within `quiet` of the previous one.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Value> {
        let mut events = Vec::new();
        while let Frame::Event(event) = self.next(quiet).await {
            events.push(event);
        }
        events
    }

    pub async fn close(mut self) {
        let _ = self.socket.send(Message::Close(None)).await;
    }
}

pub fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("?").to_owned())
        .collect()
}

pub const SECOND: Duration = Duration::from_secs(1);

/// Polls `check` until it holds, failing with `what` if it still does not after 10 s (a
/// generous bound: the condition, not the clock, is what the test waits for).
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(10 * SECOND, what, check).await;
}

/// Polls `check` until it holds, failing with `what` after `limit`; returns how long it took.
pub async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = tokio::time::Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "still not true after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// The value of sample `name` in a Prometheus text: unlabelled, or labelled only with the
/// `node` a cluster's node adds.
pub fn metric_value(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let value = match rest.strip_prefix('{') {
            Some(labels) => {
                let (labels, value) = labels.split_once("} ")?;
                labels
                    .split(',')
                    .all(|label| label.starts_with("node="))
                    .then_some(value)?
            }
            None => rest.strip_prefix(' ')?,
        };
        value.parse().ok()
    })
}
