//! The state every handler shares.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentrack::Change;
use tokio_util::sync::CancellationToken;

use crate::api::error::ApiError;
use crate::api::overview::OverviewCache;
use crate::auth::TokenCache;
use crate::cluster::forward::Forwarder;
use crate::cluster::{Member, Shards, View};
use crate::config::{RecordLimits, WebSocketConfig};
use crate::http::requests::RequestLimit;
use crate::hub::Hub;
use crate::metrics::ServerMetrics;
use crate::permits::Permits;
use crate::quotas::Quotas;
use crate::store::ShardId;
use crate::store::Store;
use crate::store::pipeline::Pipeline;

/// Settings the handlers read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a write may wait for the store before it fails with 503.
    pub ack_timeout: Duration,
    /// How often a WebSocket gets a ping.
    pub keepalive: Duration,
    /// Whether `/metrics` needs an admin or metrics token.
    pub metrics_require_auth: bool,
    /// Messages queued per WebSocket before its client counts as too slow.
    pub subscriber_queue: usize,
    /// Bounds on WebSocket streams: pong deadline, message and frame sizes.
    pub websocket: WebSocketConfig,
    /// How long an event-stream ticket is valid.
    pub ticket_ttl: Duration,
    /// What one execution may hold.
    pub records: RecordLimits,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(15),
            metrics_require_auth: true,
            subscriber_queue: 1024,
            websocket: WebSocketConfig::default(),
            ticket_ttl: Duration::from_secs(30),
            records: RecordLimits::default(),
        }
    }
}

/// What a node of a cluster knows beyond its own shards.
#[derive(Debug)]
pub struct ClusterState {
    /// Who this node is.
    pub member: Member,
    /// What the latest membership round saw.
    pub view: Arc<parking_lot::RwLock<View>>,
    /// Sends requests on to the owners of other shards.
    pub forwarder: Forwarder,
    /// When the owner map was last refreshed out of round (see
    /// [`crate::cluster::membership::refresh_now`]).
    pub owners_refreshed: tokio::sync::Mutex<Option<Instant>>,
}

/// The shared state behind [`AppState`].
#[derive(Debug)]
pub struct Shared {
    /// The shards: the trackers of those served here, and who serves the others.
    pub shards: Arc<Shards>,
    /// Reads from the store.
    pub store: Arc<dyn Store>,
    /// Writes to the store.
    pub pipeline: Arc<Pipeline>,
    /// The live fan-out of committed events to subscribers.
    pub hub: Arc<Hub>,
    /// This node's part in a cluster, on a store several nodes share.
    pub cluster: Option<Arc<ClusterState>>,
    /// Known tokens.
    pub tokens: TokenCache,
    /// Breaker permits handed to remote callers.
    pub permits: Permits,
    /// Per-tenant and per-token quotas.
    pub quotas: Quotas,
    /// Recent overview walks, per scope.
    pub overview: OverviewCache,
    /// Turns for requests handled at once (`http.max_requests`).
    pub requests: RequestLimit,
    /// Counters for `/metrics`.
    pub metrics: Arc<ServerMetrics>,
    /// Settings.
    pub settings: Settings,
    /// Cancelled when the server shuts down (WebSockets close on it).
    pub shutdown: CancellationToken,
    /// When the server started.
    pub started: Instant,
}

/// The handlers' state: a cheap handle to [`Shared`].
#[derive(Debug, Clone)]
pub struct AppState(pub Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// Waits until every event of `change` is durable: the point after which a write may be
    /// acknowledged.
    ///
    /// # Errors
    ///
    /// 503 when the store does not confirm in time.
    pub async fn durable(&self, change: &Change) -> Result<(), ApiError> {
        let Some(last) = change.events.last() else {
            return Ok(());
        };
        self.durable_up_to(self.shards.shard_of(change.execution_id), last.global_seq)
            .await
    }

    /// Waits until every event of `shard` up to `seq` is durable.
    ///
    /// # Errors
    ///
    /// 503 when the store does not confirm in time (or the shard moved to another node).
    pub async fn durable_up_to(&self, shard: ShardId, seq: u64) -> Result<(), ApiError> {
        // A request with an Idempotency-Key runs in its own task (api/idempotency.rs), which
        // waits for its change however long the store takes, so that the key keeps its answer;
        // its client got its 503 after ack_timeout from the middleware.
        let timeout = if crate::api::idempotency::keyed() {
            Duration::MAX
        } else {
            self.settings.ack_timeout
        };
        self.pipeline
            .wait_committed(shard, seq, timeout)
            .await
            .map_err(ApiError::commit)
    }
}
