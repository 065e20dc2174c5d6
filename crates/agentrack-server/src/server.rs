//! Start-up and shutdown of `agentrack serve`.
//!
//! Start-up: open the store (migrating it), rebuild the tracker from it (alive executions get
//! one heartbeat window of grace), make the admin token on first start, start the store
//! pipeline and only then the monitor (so that every event it makes is stored), and bind.
//!
//! Shutdown: stop accepting and let in-flight requests finish (they wait for their writes),
//! close every WebSocket with a close frame, stop the monitor, write whatever the pipeline holds
//! (coalesced heartbeats) and checkpoint the store.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::overview::OverviewCache;
use crate::app::{AppState, ClusterState, Settings, Shared};
use crate::auth::{RefusedBounds, Role, TokenCache, TokenGrant, generate_token, hash_token};
use crate::cluster::forward::Forwarder;
use crate::cluster::{Loader, Member, Shards, View, feed, membership};
use crate::config::{HttpConfig, ServerConfig};
use crate::housekeeping::{self, Retention};
use crate::http::requests::RequestLimit;
use crate::hub::Hub;
use crate::metrics::ServerMetrics;
use crate::permits::Permits;
use crate::quotas::Quotas;
use crate::serialized_event::SerializedEvent;
use crate::store::pipeline::{Pipeline, PipelineConfig, Publisher};
use crate::store::{self, StoreConfig, StoreError};

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A file could not be written or the server failed while running.
    #[error("{0}")]
    Io(String),
}

/// The name of the file that holds the first admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The fewest events the shared and per-tenant live channels buffer, whatever the
/// per-subscriber queue is set to: a burst of one flush must fit.
const MIN_HUB_BUFFER: usize = 4096;

/// A bound, ready server; [`Server::run`] serves until shutdown.
#[derive(Debug)]
pub struct Server {
    state: AppState,
    listener: TcpListener,
    loader: Loader,
    lost_shards: Option<tokio::sync::mpsc::UnboundedReceiver<crate::store::ShardId>>,
    admin_token: Option<String>,
    restored: usize,
    retention: Retention,
    http: HttpConfig,
}

/// How the other nodes reach this one: the configured URL, or `http://` and the bound address
/// (loopback when bound to every interface, which only suits a cluster on one machine).
fn advertised(configured: Option<&str>, local: SocketAddr) -> String {
    if let Some(url) = configured {
        return url.trim_end_matches('/').to_owned();
    }
    let mut addr = local;
    if addr.ip().is_unspecified() {
        tracing::warn!("listening on every interface: advertising 127.0.0.1; set --advertise for other machines");
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{addr}")
}

impl From<crate::files::FileError> for ServerError {
    fn from(error: crate::files::FileError) -> Self {
        Self::Io(error.to_string())
    }
}

fn write_secret(path: &Path, secret: &str) -> Result<(), ServerError> {
    Ok(crate::files::write_secret(path, secret)?)
}

/// Creates the data directory if needed, readable by its owner only (it holds the admin token,
/// and by default the store); an existing one, and the admin token in it, are checked and
/// tightened (see [`crate::files`]).
fn prepare_data_dir(data: &Path) -> Result<(), ServerError> {
    crate::files::private_dir(data)
        .map_err(|error| ServerError::Io(format!("the data directory cannot be used: {error}")))?;
    for name in [ADMIN_TOKEN_FILE, ADMIN_TOKEN_PENDING_FILE] {
        crate::files::check_secret(&data.join(name))?;
    }
    Ok(())
}

fn new_token() -> Result<String, ServerError> {
    generate_token().map_err(|error| ServerError::Io(format!("no randomness: {error}")))
}

/// Makes a token directly in a store (no server needed); returns the token.
///
/// # Errors
///
/// The store cannot be opened or written.
pub async fn create_token_in(store: &StoreConfig, data: &Path, grant: TokenGrant) -> Result<String, ServerError> {
    let store = store::open(store, data).await?;
    let mut writer = store.writer().await?;
    let token = new_token()?;
    let hash = hash_token(&token);
    tokio::task::spawn_blocking(move || {
        writer.insert_token(&hash, &grant)?;
        writer.close()
    })
    .await
    .map_err(|error| ServerError::Io(error.to_string()))??;
    Ok(token)
}

/// What the pipeline's committed events feed: the metrics (before the change is acknowledged)
/// and the live fan-out (after).
struct CommittedEvents {
    metrics: Arc<ServerMetrics>,
    hub: Arc<Hub>,
}

impl Publisher for CommittedEvents {
    fn committed(&mut self, events: &[Arc<SerializedEvent>]) {
        for event in events {
            self.metrics.observe(event.shard, &event.event);
        }
    }

    fn publish(&mut self, events: &[Arc<SerializedEvent>]) {
        for event in events {
            self.hub.publish(event);
        }
    }
}

/// The admin token file while its token is not yet known to be the store's first.
pub const ADMIN_TOKEN_PENDING_FILE: &str = "admin.token.new";

/// On the first start of an empty store: an admin token, stored, cached and written to the data
/// directory (mode 0600). On a shared store only the node whose token the store takes first
/// keeps one (`None` for the others): nodes started together make one admin token.
async fn bootstrap_admin(
    store: &dyn store::Store,
    pipeline: &Pipeline,
    tokens: &TokenCache,
    data: &Path,
) -> Result<Option<String>, ServerError> {
    let token = new_token()?;
    let grant = TokenGrant::new(
        Role::Admin,
        agentrack::DEFAULT_TENANT.to_owned(),
        None,
        Some("first admin".into()),
    )
    .map_err(|error| ServerError::Io(error.to_string()))?;
    let hash = hash_token(&token);
    // The file first: if storing then fails, the next start makes a new token and overwrites it,
    // whereas a stored token whose file was never written would lock everyone out.
    let path = data.join(ADMIN_TOKEN_FILE);
    if let Some(cluster) = store.cluster() {
        // Written aside until the store says this token is the first; a crash in between
        // leaves the token in the pending file, not lost.
        let pending = data.join(ADMIN_TOKEN_PENDING_FILE);
        write_secret(&pending, &token)?;
        if !cluster.insert_first_admin(&hash, &grant).await? {
            let _ = std::fs::remove_file(&pending);
            tracing::info!("another node made the store's first admin token");
            return Ok(None);
        }
        std::fs::rename(&pending, &path).map_err(|error| ServerError::Io(format!("{}: {error}", path.display())))?;
    } else {
        write_secret(&path, &token)?;
        pipeline.insert_token(hash.clone(), grant.clone()).await?;
    }
    tokens.insert(hash, grant);
    Ok(Some(token))
}

/// Starts serving shards: a store made for one node has one, always here; on a shared store the
/// node joins the cluster, and runs its first round before serving (a node alone takes every
/// shard, one joining learns who serves what).
async fn serve_shards(
    loader: &Loader,
    config: &ServerConfig,
    local: SocketAddr,
    view: &parking_lot::RwLock<View>,
) -> Result<Option<Member>, ServerError> {
    let Some(cluster) = loader.store.cluster() else {
        loader.take(0, None).await?;
        return Ok(None);
    };
    let member = Member::of_data_dir(
        &config.data,
        advertised(config.cluster.advertise.as_deref(), local),
        config.cluster.lease_ttl,
    )
    .map_err(|error| ServerError::Io(format!("cannot keep the node id in {}: {error}", config.data.display())))?;
    tracing::info!(node = %member.node_id, url = %member.url, shards = loader.shards.count(), "joining the cluster");
    membership::round(&member, cluster, loader, view).await?;
    Ok(Some(member))
}

impl Server {
    /// Opens the store, rebuilds the tracker, starts the pipeline and the monitor, and binds.
    ///
    /// # Errors
    ///
    /// The store cannot be opened or loaded, the admin token cannot be written, or the address
    /// cannot be bound.
    pub async fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        config.validate().map_err(|error| ServerError::Io(error.to_string()))?;
        prepare_data_dir(&config.data)?;
        let store = store::open(&config.store, &config.data).await?;
        let metrics = Arc::new(ServerMetrics::default());
        let hub = Arc::new(Hub::new(config.subscriber_buffer.max(MIN_HUB_BUFFER)));
        let shards = Arc::new(Shards::new(store.shard_count(), config.tracker_config()));
        let (lost, lost_shards) = tokio::sync::mpsc::unbounded_channel();
        let pipeline = Pipeline::start(
            store.writer().await?,
            PipelineConfig {
                heartbeat_flush: config.heartbeat_flush,
                max_queued: config.max_store_queue,
                answer_timeout: config.ack_timeout,
                idempotency_retention: config.idempotency_retention,
                ..PipelineConfig::default()
            },
            Box::new(CommittedEvents {
                metrics: Arc::clone(&metrics),
                hub: Arc::clone(&hub),
            }),
            lost,
        )?;
        let loader = Loader {
            store: Arc::clone(&store),
            pipeline: Arc::clone(&pipeline),
            shards: Arc::clone(&shards),
            metrics: Arc::clone(&metrics),
            hub: Arc::clone(&hub),
            config: config.tracker_config(),
            heartbeat_flush: config.heartbeat_flush,
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|error| ServerError::Bind {
                addr: config.listen,
                reason: error.to_string(),
            })?;
        let local = listener
            .local_addr()
            .map_err(|error| ServerError::Io(error.to_string()))?;
        let view = Arc::new(parking_lot::RwLock::new(View::default()));
        let member = serve_shards(&loader, &config, local, &view).await?;
        let restored = shards.trackers().iter().map(agentrack::Tracker::len).sum();
        let tokens = TokenCache::new(RefusedBounds {
            capacity: config.tokens.refused_cache_size,
            ttl: config.tokens.refused_cache_ttl,
        });
        let admin_token = if store.has_admin_token().await? {
            None
        } else {
            bootstrap_admin(store.as_ref(), &pipeline, &tokens, &config.data).await?
        };
        let cluster = member.map(|member| {
            Arc::new(ClusterState {
                member,
                view,
                forwarder: Forwarder::default(),
                owners_refreshed: tokio::sync::Mutex::new(None),
            })
        });
        let state = AppState(Arc::new(Shared {
            shards,
            store,
            pipeline,
            hub,
            cluster,
            tokens,
            permits: Permits::default(),
            quotas: Quotas::new(config.quotas.clone(), Arc::clone(&metrics)),
            overview: OverviewCache::default(),
            requests: RequestLimit::new(config.http.max_requests, config.http.queue_timeout),
            metrics,
            settings: Settings {
                ack_timeout: config.ack_timeout,
                keepalive: config.keepalive,
                metrics_require_auth: config.metrics_require_auth,
                subscriber_queue: config.subscriber_buffer,
                websocket: config.websocket.clone(),
                ticket_ttl: config.tokens.ticket_ttl,
                records: config.records,
            },
            shutdown: CancellationToken::new(),
            started: Instant::now(),
        }));
        Ok(Self {
            state,
            listener,
            loader,
            lost_shards: Some(lost_shards),
            admin_token,
            restored,
            retention: Retention {
                keep: config.retention,
                interval: config.purge_interval,
            },
            http: config.http,
        })
    }

    /// The address actually bound (the port is filled in when 0 was asked for).
    ///
    /// # Errors
    ///
    /// The socket cannot report its address.
    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.listener
            .local_addr()
            .map_err(|error| ServerError::Io(error.to_string()))
    }

    /// The admin token made on this (first) start, if one was.
    pub fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    /// How many executions were restored from the store.
    pub fn restored(&self) -> usize {
        self.restored
    }

    /// The shared state (the tracker, the store, ...).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully.
    ///
    /// # Errors
    ///
    /// The server failed while running.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServerError> {
        let state = self.state.clone();
        let housekeeping = tokio::spawn(housekeeping::run(state.clone(), self.retention));
        // Membership stops on its own token: after the listener, so that shards are handed over
        // once no request is in flight.
        let leaving = CancellationToken::new();
        let cluster = state.cluster.clone().map(|cluster| {
            // Ends on `leaving` by itself.
            drop(tokio::spawn(feed::follow_tokens(state.clone(), leaving.clone())));
            let feed = tokio::spawn(feed::follow(
                Arc::clone(&state.store),
                Arc::clone(&state.shards),
                Arc::clone(&state.hub),
                leaving.clone(),
            ));
            let lost = self
                .lost_shards
                .take()
                .unwrap_or_else(|| tokio::sync::mpsc::unbounded_channel().1);
            let membership = tokio::spawn(membership::run(
                cluster.member.clone(),
                Arc::clone(&state.store),
                self.loader.clone(),
                Arc::clone(&cluster.view),
                lost,
                leaving.clone(),
            ));
            (feed, membership)
        });
        let stop = state.shutdown.clone();
        let app = crate::api::router(state.clone());
        crate::http::serve(self.listener, app, self.http, Arc::clone(&state.metrics), async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, finishing requests");
            stop.cancel();
        })
        .await;
        state.shutdown.cancel();
        let _ = housekeeping.await;
        // WebSockets close on the cancelled token; give them a moment to send their frames.
        let deadline = Instant::now() + Duration::from_secs(2);
        while state.metrics.websockets.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        leaving.cancel();
        if let Some((feed, membership)) = cluster {
            // Hands every shard over (written, released) and leaves the cluster.
            let _ = membership.await;
            let _ = feed.await;
        }
        for shard in state.shards.locals() {
            shard.stop().await;
        }
        let pipeline = Arc::clone(&state.pipeline);
        tokio::task::spawn_blocking(move || pipeline.shutdown())
            .await
            .map_err(|error| ServerError::Io(error.to_string()))?;
        tracing::info!("store flushed; stopped");
        Ok(())
    }
}

/// The data directory's admin token file.
pub fn admin_token_path(data: &Path) -> PathBuf {
    data.join(ADMIN_TOKEN_FILE)
}
