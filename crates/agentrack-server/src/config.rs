//! Server configuration: defaults, overridden by a TOML file, overridden by flags and the
//! environment.
//!
//! ```toml
//! data = "./agentrack-data"
//! listen = "127.0.0.1:7700"
//! log_format = "pretty"          # or "json"
//! retention = "7d"               # finished executions are purged from the store after this
//! heartbeat_flush = "1s"
//! metrics_require_auth = true    # false: /metrics without a token (on a private network)
//!
//! [tokens]
//! ticket_ttl = "30s"             # an event-stream ticket is valid this long, once
//! refused_cache_size = 10000     # refused tokens remembered per node (least recently seen go first)
//! refused_cache_ttl = "60s"      # how long a refusal is remembered
//!
//! [store]                        # see agentrack_server::store::StoreConfig
//! url = "sqlite://./agentrack-data/agentrack.db"   # the default: agentrack.db in `data`
//! synchronous = "full"           # SQLite only: or "normal"
//!
//! [http]                         # bounds on connections and requests
//! header_read_timeout = "30s"    # a request head must arrive within this (also the keep-alive idle limit)
//! body_read_timeout = "30s"      # a request body must arrive within this once it is read (else 408)
//! max_connections = 16384        # open connections, WebSockets included (past it: 503, closed)
//! max_requests = 1024            # requests handled at once (past it they queue)
//! queue_timeout = "10s"          # the longest a request queues (then 503 server_busy)
//!
//! [websocket]
//! pong_timeout = "30s"           # a stream whose client answers no ping for this long is closed
//! max_message_bytes = 65536      # larger messages close the stream with 1009
//! max_frame_bytes = 65536        # larger frames too, refused from their header
//!
//! [quotas]                       # per-tenant bounds (past them: 429 quota_exceeded, Retry-After)
//! executions_per_tenant = 100000 # alive executions
//! users_per_tenant = 100000      # distinct users with executions counted on this node
//! breakers_per_tenant = 1000     # named breakers
//! breaker_idle = "1h"            # a closed named breaker unused this long is dropped
//! permits_per_tenant = 10000     # breaker permits held at once
//! subscribers_per_token = 1000   # event streams open at once with one token
//! snapshot_executions = 1000     # executions in a stream's snapshot (the rest: next_cursor)
//! overview_cache = "1s"          # how long one scope's overview walk is reused
//!
//! [cluster]                      # nodes sharing one PostgreSQL store
//! advertise = "http://10.0.0.5:7700"   # how the others reach this node (default: the listen address)
//! lease_ttl = "10s"              # a dead node's shards are taken over within this
//!
//! [records]                      # what one execution may hold
//! max_metadata_bytes = 65536     # metadata of a create or a phase change, as JSON (past it: 413)
//! max_result_bytes = 262144      # a state change's result, as JSON (past it: 413)
//! max_phase_history = 200        # phase changes kept per record; older ones stay in the event log
//!
//! [tracker]                      # the core's TrackerConfig over the server's defaults (finished
//!                                # records stay in memory an hour); durations in seconds
//! heartbeat_timeout = 10.0
//! execution_timeout = 15.0
//! monitor_interval = 1.0
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentrack::TrackerConfig;
use serde::{Deserialize, Deserializer};

use crate::store::StoreConfig;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pretty" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format {other:?}; valid values: pretty, json")),
        }
    }
}

/// Everything `agentrack serve` can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The data directory (store, admin token).
    pub data: PathBuf,
    /// The address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Log format.
    pub log_format: LogFormat,
    /// Finished executions are purged from the store after this.
    #[serde(deserialize_with = "duration")]
    pub retention: Duration,
    /// How often the retention purge runs.
    #[serde(deserialize_with = "duration")]
    pub purge_interval: Duration,
    /// The longest a heartbeat waits before it is written to the store.
    #[serde(deserialize_with = "duration")]
    pub heartbeat_flush: Duration,
    /// How long a write may wait for the store before it fails with 503.
    #[serde(deserialize_with = "duration")]
    pub ack_timeout: Duration,
    /// Messages waiting for the store's writer past which writes are refused at once (503
    /// `store_unavailable`, nothing changed).
    pub max_store_queue: usize,
    /// How long the answer to a request sent with an `Idempotency-Key` is kept for its retries.
    #[serde(deserialize_with = "duration")]
    pub idempotency_retention: Duration,
    /// How often WebSockets are pinged.
    #[serde(deserialize_with = "duration")]
    pub keepalive: Duration,
    /// Messages queued per WebSocket subscriber before it is disconnected as too slow.
    pub subscriber_buffer: usize,
    /// Whether `/metrics` needs an admin or metrics token (the default); off, it is public.
    pub metrics_require_auth: bool,
    /// Tickets and the cache of refused tokens (the `[tokens]` section).
    pub tokens: TokensConfig,
    /// Where the store lives (the `[store]` section).
    pub store: StoreConfig,
    /// Bounds on HTTP connections and requests (the `[http]` section).
    pub http: HttpConfig,
    /// Bounds on WebSocket event streams (the `[websocket]` section).
    pub websocket: WebSocketConfig,
    /// Per-tenant and per-token quotas (the `[quotas]` section).
    pub quotas: QuotaConfig,
    /// How this node takes part in a cluster (the `[cluster]` section; only on a shared store).
    pub cluster: ClusterConfig,
    /// What one execution may hold (the `[records]` section).
    pub records: RecordLimits,
    /// The core's settings: a `[tracker]` section's keys over the server's defaults.
    #[serde(deserialize_with = "tracker_section")]
    pub tracker: TrackerConfig,
}

/// A `[tracker]` section: the keys it gives over the server's defaults — not the core's, which
/// would purge finished records from memory after a minute instead of an hour whenever the
/// section sets anything else — and an unknown key refused by name, as in every other section.
fn tracker_section<'de, D: Deserializer<'de>>(deserializer: D) -> Result<TrackerConfig, D::Error> {
    use serde::de::Error as _;
    use serde_json::Value;
    let given = serde_json::Map::<String, Value>::deserialize(deserializer)?;
    let Ok(Value::Object(mut merged)) = serde_json::to_value(ServerConfig::default().tracker) else {
        return Err(D::Error::custom("the default [tracker] settings cannot be written"));
    };
    for (key, value) in given {
        if !merged.contains_key(&key) {
            let valid: Vec<&str> = merged.keys().map(String::as_str).collect();
            return Err(D::Error::custom(format!(
                "unknown field `{key}` in [tracker]; valid: {}",
                valid.join(", ")
            )));
        }
        merged.insert(key, value);
    }
    serde_json::from_value(Value::Object(merged)).map_err(|error| D::Error::custom(format!("[tracker]: {error}")))
}

/// What one execution may hold, so that no client can grow a record (in memory, and in every
/// row and event written of it) without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordLimits {
    /// The largest `metadata` of a create or a phase change, in bytes of JSON.
    pub max_metadata_bytes: usize,
    /// The largest `result` of a state change, in bytes of JSON.
    pub max_result_bytes: usize,
    /// Phase changes kept in each record's `phase_history`; older ones are dropped from it (and
    /// counted in `phase_history_dropped`) and stay in the event log.
    pub max_phase_history: usize,
}

impl Default for RecordLimits {
    fn default() -> Self {
        Self {
            max_metadata_bytes: 64 * 1024,
            max_result_bytes: 256 * 1024,
            // Far more than a run's golden path (nine changes); a looping agent keeps its latest.
            max_phase_history: 200,
        }
    }
}

impl ServerConfig {
    /// The core's settings as this server runs them: [`RecordLimits::max_phase_history`] caps the
    /// history (the core keeps every change by default).
    pub fn tracker_config(&self) -> TrackerConfig {
        TrackerConfig {
            max_phase_history: Some(self.records.max_phase_history),
            ..self.tracker.clone()
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        let tracker = TrackerConfig {
            // Finished records leave memory after an hour; reads fall back to the store.
            cleanup_age: Duration::from_secs(3600),
            ..TrackerConfig::default()
        };
        Self {
            data: PathBuf::from("./agentrack-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            log_format: LogFormat::Pretty,
            retention: Duration::from_secs(7 * 24 * 3600),
            purge_interval: Duration::from_secs(3600),
            heartbeat_flush: Duration::from_secs(1),
            ack_timeout: Duration::from_secs(30),
            max_store_queue: 65_536,
            idempotency_retention: Duration::from_secs(24 * 3600),
            keepalive: Duration::from_secs(15),
            subscriber_buffer: 1024,
            metrics_require_auth: true,
            tokens: TokensConfig::default(),
            store: StoreConfig::default(),
            http: HttpConfig::default(),
            websocket: WebSocketConfig::default(),
            quotas: QuotaConfig::default(),
            cluster: ClusterConfig::default(),
            records: RecordLimits::default(),
            tracker,
        }
    }
}

/// The most connections or concurrent requests that may be configured (a semaphore's bound, far
/// past what one process can serve).
pub const MAX_LIMIT: usize = 1 << 24;

/// Bounds on HTTP connections and requests, so that no client can hold the server's sockets,
/// tasks or memory without bound (with or without a token).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// A connection must deliver a whole request head (request line and headers) within this
    /// of opening, or of the end of its previous response, or it is closed. The bound on slow
    /// heads (slowloris) is hence also the keep-alive idle timeout: hyper's header timer starts
    /// as soon as a connection waits for its next request.
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// A request body must arrive whole within this of the server starting to read it, or the
    /// request is refused with 408 `body_timeout` and the connection closed.
    #[serde(deserialize_with = "duration")]
    pub body_read_timeout: Duration,
    /// Open connections, WebSocket streams included; a connection past it is answered 503
    /// `too_many_connections` and closed.
    pub max_connections: usize,
    /// Requests handled at once; a request past it waits for its turn up to `queue_timeout`,
    /// then is answered 503 `server_busy` (its body still unread).
    pub max_requests: usize,
    /// The longest a request waits for its turn.
    #[serde(deserialize_with = "duration")]
    pub queue_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            // 10,000 event streams and their agents fit (see BENCHMARKS.md).
            max_connections: 16_384,
            max_requests: 1024,
            queue_timeout: Duration::from_secs(10),
        }
    }
}

/// Event-stream tickets and the cache of refused tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokensConfig {
    /// How long a ticket from `POST /v1/events/ticket` may wait to be used (once).
    #[serde(deserialize_with = "duration")]
    pub ticket_ttl: Duration,
    /// Refused tokens remembered per node, so that repeating one costs no store query; past it
    /// the least recently seen is forgotten.
    pub refused_cache_size: usize,
    /// How long a refusal is remembered.
    #[serde(deserialize_with = "duration")]
    pub refused_cache_ttl: Duration,
}

impl Default for TokensConfig {
    fn default() -> Self {
        let refused = crate::auth::RefusedBounds::default();
        Self {
            ticket_ttl: Duration::from_secs(30),
            refused_cache_size: refused.capacity,
            refused_cache_ttl: refused.ttl,
        }
    }
}

/// Bounds on WebSocket event streams (the ping interval is the top-level `keepalive`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// A stream whose client has answered no ping (nor sent anything) for this long since the
    /// first unanswered ping is closed with 1008.
    #[serde(deserialize_with = "duration")]
    pub pong_timeout: Duration,
    /// The largest message a client may send; a larger one closes the stream with 1009.
    pub max_message_bytes: usize,
    /// The largest frame a client may send; a larger one is refused from its header, before
    /// its payload is read, and closes the stream with 1009.
    pub max_frame_bytes: usize,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            pong_timeout: Duration::from_secs(30),
            // Clients say little on this stream (pings, close frames, an agent's heartbeats:
            // about 1,500 ids fit in a message).
            max_message_bytes: 64 * 1024,
            max_frame_bytes: 64 * 1024,
        }
    }
}

/// Per-tenant (and per-token) quotas: what one tenant may hold at once on a node, so that no
/// tenant can grow the server without bound or crowd the others out. A request past one is
/// refused with 429 `quota_exceeded` and `Retry-After`, naming the quota, its limit and the
/// current count; nothing is changed. In a cluster each node counts what the shards it owns
/// hold (see CLUSTER.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    /// Alive executions per tenant (finished ones leave memory after the tracker's
    /// `cleanup_age` and the store after `retention`).
    pub executions_per_tenant: usize,
    /// Distinct users per tenant whose executions this node counts (the per-user counters of
    /// the overview and metrics): an execution for one more user is refused.
    pub users_per_tenant: usize,
    /// Named breakers per tenant held in memory.
    pub breakers_per_tenant: usize,
    /// A named breaker that is closed, holds no permit and has not been used for this long is
    /// dropped (its next use starts it afresh, closed), so the bound never locks a tenant out.
    #[serde(deserialize_with = "duration")]
    pub breaker_idle: Duration,
    /// Breaker permits a tenant holds at once (each until its outcome is recorded or it expires).
    pub permits_per_tenant: usize,
    /// Event streams open at once with one token.
    pub subscribers_per_token: usize,
    /// Executions a stream's snapshot carries at most, newest first; the snapshot's
    /// `next_cursor` pages the rest through `GET /v1/executions?active=true`.
    pub snapshot_executions: usize,
    /// How long an overview walk of the records in memory is reused for the same scope (0: a
    /// walk per request).
    #[serde(deserialize_with = "duration")]
    pub overview_cache: Duration,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            // Far above the loads of BENCHMARKS.md (its fan-out runs spread one tenant over 10,000 users).
            executions_per_tenant: 100_000,
            users_per_tenant: 100_000,
            breakers_per_tenant: 1000,
            breaker_idle: Duration::from_secs(3600),
            permits_per_tenant: 10_000,
            // An agent process per stream, sharing its tenant's agent token.
            subscribers_per_token: 1000,
            snapshot_executions: 1000,
            overview_cache: Duration::from_secs(1),
        }
    }
}

impl ServerConfig {
    /// Checks the values no default would ever hold: zero or absurd limits and timeouts.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the key, what it holds and what is valid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            key: key.to_owned(),
            reason,
        };
        for (key, value) in [
            ("http.max_connections", self.http.max_connections),
            ("http.max_requests", self.http.max_requests),
            ("websocket.max_message_bytes", self.websocket.max_message_bytes),
            ("websocket.max_frame_bytes", self.websocket.max_frame_bytes),
            ("quotas.executions_per_tenant", self.quotas.executions_per_tenant),
            ("quotas.users_per_tenant", self.quotas.users_per_tenant),
            ("quotas.breakers_per_tenant", self.quotas.breakers_per_tenant),
            ("quotas.permits_per_tenant", self.quotas.permits_per_tenant),
            ("quotas.subscribers_per_token", self.quotas.subscribers_per_token),
            ("quotas.snapshot_executions", self.quotas.snapshot_executions),
            ("tokens.refused_cache_size", self.tokens.refused_cache_size),
            ("max_store_queue", self.max_store_queue),
            ("records.max_metadata_bytes", self.records.max_metadata_bytes),
            ("records.max_result_bytes", self.records.max_result_bytes),
            ("records.max_phase_history", self.records.max_phase_history),
        ] {
            if value == 0 || value > MAX_LIMIT {
                return Err(invalid(key, format!("{value} is not between 1 and {MAX_LIMIT}")));
            }
        }
        for (key, value) in [
            ("http.header_read_timeout", self.http.header_read_timeout),
            ("http.body_read_timeout", self.http.body_read_timeout),
            ("http.queue_timeout", self.http.queue_timeout),
            ("websocket.pong_timeout", self.websocket.pong_timeout),
            ("keepalive", self.keepalive),
            ("quotas.breaker_idle", self.quotas.breaker_idle),
            ("tokens.ticket_ttl", self.tokens.ticket_ttl),
            ("tokens.refused_cache_ttl", self.tokens.refused_cache_ttl),
            ("idempotency_retention", self.idempotency_retention),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "a duration of 0 is not valid; give e.g. 10s".into()));
            }
        }
        Ok(())
    }
}

/// How a node takes part in a cluster of nodes sharing one store.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// How the other nodes reach this one (e.g. `http://10.0.0.5:7700`); derived from the
    /// listen address when unset.
    pub advertise: Option<String>,
    /// How long a shard lease lasts without renewal: a dead node's shards are taken over within
    /// it (plus a quarter of it).
    #[serde(deserialize_with = "duration")]
    pub lease_ttl: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            advertise: None,
            lease_ttl: Duration::from_secs(10),
        }
    }
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file is not valid.
    #[error("invalid config file {path}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A setting holds a value that cannot work.
    #[error("invalid setting {key}: {reason}")]
    Invalid {
        /// The setting's key (`section.name`).
        key: String,
        /// What is wrong and what is valid.
        reason: String,
    },
}

impl ServerConfig {
    /// Reads a TOML file over the defaults.
    ///
    /// # Errors
    ///
    /// The file cannot be read or parsed.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.display().to_string(),
            reason: error.to_string(),
        })?;
        toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: path.display().to_string(),
            reason: error.to_string(),
        })
    }
}

/// Parses a duration: a number of seconds (`1.5`), or a number with a unit (`500ms`, `10s`,
/// `5m`, `2h`, `7d`).
///
/// # Errors
///
/// Anything else, with a message saying what is accepted.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 1.5, 500ms, 10s, 5m, 2h or 7d"))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        other => return Err(format!("invalid duration unit {other:?}: expected ms, s, m, h or d")),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|error| format!("invalid duration {text:?}: {error}"))
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(f64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Seconds(secs) => Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom),
        Raw::Text(text) => parse_duration(&text).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3w").is_err());
    }

    #[test]
    fn a_toml_file_overrides_defaults() {
        let config: ServerConfig =
            toml::from_str("retention = \"2h\"\nlisten = \"127.0.0.1:0\"\n[tracker]\nheartbeat_timeout = 1.0\n")
                .unwrap();
        assert_eq!(config.retention, Duration::from_secs(7200));
        assert_eq!(config.tracker.heartbeat_timeout, Duration::from_secs(1));
        assert_eq!(config.tracker.execution_timeout, Duration::from_secs(15));
        assert_eq!(
            config.tracker.cleanup_age,
            ServerConfig::default().tracker.cleanup_age,
            "keys the section leaves out keep the server's defaults, not the core's"
        );
        let unknown = toml::from_str::<ServerConfig>("[tracker]\nheartbeat_timout = 1.0\n").unwrap_err();
        assert!(
            unknown
                .to_string()
                .contains("unknown field `heartbeat_timout` in [tracker]; valid: "),
            "{unknown}"
        );
        let bad = toml::from_str::<ServerConfig>("[tracker]\nheartbeat_timeout = \"soon\"\n").unwrap_err();
        assert!(bad.to_string().contains("[tracker]"), "{bad}");
        assert!(toml::from_str::<ServerConfig>("retention_days = 3").is_err());
        let config: ServerConfig =
            toml::from_str("[store]\nurl = \"sqlite:///tmp/a.db\"\nsynchronous = \"normal\"\n").unwrap();
        assert_eq!(config.store.url.as_deref(), Some("sqlite:///tmp/a.db"));
        assert_eq!(config.store.synchronous, crate::store::Synchronous::Normal);
        assert!(
            toml::from_str::<ServerConfig>("synchronous = \"normal\"").is_err(),
            "synchronous belongs to [store]"
        );
    }

    #[test]
    fn limits_are_read_and_checked() {
        let config: ServerConfig = toml::from_str(
            "[http]\nheader_read_timeout = \"200ms\"\nmax_connections = 8\n[websocket]\npong_timeout = 1\n",
        )
        .unwrap();
        assert_eq!(config.http.header_read_timeout, Duration::from_millis(200));
        assert_eq!(config.http.max_connections, 8);
        assert_eq!(config.http.max_requests, 1024);
        assert_eq!(config.websocket.pong_timeout, Duration::from_secs(1));
        assert!(config.validate().is_ok());
        let zero: ServerConfig = toml::from_str("[http]\nmax_requests = 0\n").unwrap();
        let error = zero.validate().unwrap_err().to_string();
        assert!(error.contains("http.max_requests"), "{error}");
        let instant: ServerConfig = toml::from_str("[websocket]\npong_timeout = \"0s\"\n").unwrap();
        assert!(instant.validate().is_err());
        let quotas: ServerConfig =
            toml::from_str("[quotas]\nexecutions_per_tenant = 5\nbreaker_idle = \"10m\"\n").unwrap();
        assert_eq!(quotas.quotas.executions_per_tenant, 5);
        assert_eq!(quotas.quotas.breaker_idle, Duration::from_secs(600));
        assert_eq!(quotas.quotas.permits_per_tenant, 10_000);
        let none: ServerConfig = toml::from_str("[quotas]\nsubscribers_per_token = 0\n").unwrap();
        let error = none.validate().unwrap_err().to_string();
        assert!(error.contains("quotas.subscribers_per_token"), "{error}");
        let tokens: ServerConfig = toml::from_str("[tokens]\nticket_ttl = \"5s\"\nrefused_cache_size = 7\n").unwrap();
        assert_eq!(tokens.tokens.ticket_ttl, Duration::from_secs(5));
        assert_eq!(tokens.tokens.refused_cache_size, 7);
        assert!(tokens.metrics_require_auth, "/metrics needs a token unless opened");
        for bad in ["[tokens]\nrefused_cache_size = 0\n", "[tokens]\nticket_ttl = \"0s\"\n"] {
            let error = toml::from_str::<ServerConfig>(bad)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(error.contains("tokens."), "{error}");
        }
        let records: ServerConfig = toml::from_str("[records]\nmax_phase_history = 5\n").unwrap();
        assert_eq!(records.records.max_metadata_bytes, 64 * 1024);
        assert_eq!(records.tracker_config().max_phase_history, Some(5));
        let none: ServerConfig = toml::from_str("[records]\nmax_phase_history = 0\n").unwrap();
        let error = none.validate().unwrap_err().to_string();
        assert!(error.contains("records.max_phase_history"), "{error}");
    }
}
