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

use agentrack::{MonitorHandle, Tracker};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::{AppState, Settings, Shared};
use crate::auth::{Role, TokenCache, TokenGrant, generate_token, hash_token};
use crate::config::ServerConfig;
use crate::housekeeping::{self, Retention};
use crate::hub::Hub;
use crate::metrics::ServerMetrics;
use crate::permits::Permits;
use crate::serialized_event::SerializedEvent;
use crate::store::pipeline::{Pipeline, PipelineConfig, Publisher};
use crate::store::{self, Store, StoreConfig, StoreError};

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
    monitor: MonitorHandle,
    admin_token: Option<String>,
    restored: usize,
    retention: Retention,
}

fn write_secret(path: &Path, secret: &str) -> Result<(), ServerError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|error| ServerError::Io(format!("cannot write {}: {error}", path.display())))?;
    file.write_all(format!("{secret}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|error| ServerError::Io(format!("cannot write {}: {error}", path.display())))
}

/// Creates the data directory if needed, readable by its owner only (it holds the admin token,
/// and by default the store).
fn prepare_data_dir(data: &Path) -> Result<(), ServerError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(data)
        .map_err(|error| ServerError::Io(format!("cannot create the data directory {}: {error}", data.display())))
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
            self.metrics.observe(&event.event);
        }
    }

    fn publish(&mut self, events: &[Arc<SerializedEvent>]) {
        for event in events {
            self.hub.publish(event);
        }
    }
}

/// Rebuilds the tracker from the store: alive executions (with one heartbeat window of grace)
/// and recently finished ones, the counters, and the sequence numbering.
async fn restore(
    store: &dyn Store,
    tracker: &Tracker,
    metrics: &ServerMetrics,
    config: &ServerConfig,
) -> Result<(store::Loaded, usize), ServerError> {
    let started = Instant::now();
    // Finished executions older than the tracker keeps in memory stay in the store only.
    let cutoff = chrono::Duration::from_std(config.tracker.cleanup_age)
        .ok()
        .and_then(|age| chrono::Utc::now().checked_sub_signed(age))
        .unwrap_or_default();
    let mut loaded = store.load(cutoff).await?;
    metrics.restore(&loaded.counts, &loaded.records);
    let restored = loaded.records.len();
    for record in std::mem::take(&mut loaded.records) {
        let id = record.execution_id;
        if let Err(error) = tracker.restore(record) {
            tracing::error!(execution_id = %id, %error, "could not restore an execution");
        }
    }
    tracker.resume_sequence(loaded.high_water);
    tracing::info!(
        restored,
        high_water = loaded.high_water,
        millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "rebuilt the tracker from the store"
    );
    Ok((loaded, restored))
}

/// On the first start of an empty store: an admin token, stored, cached and written to the data
/// directory (mode 0600).
async fn bootstrap_admin(pipeline: &Pipeline, tokens: &TokenCache, data: &Path) -> Result<String, ServerError> {
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
    write_secret(&data.join(ADMIN_TOKEN_FILE), &token)?;
    pipeline.insert_token(hash.clone(), grant.clone()).await?;
    tokens.insert(hash, grant);
    Ok(token)
}

impl Server {
    /// Opens the store, rebuilds the tracker, starts the pipeline and the monitor, and binds.
    ///
    /// # Errors
    ///
    /// The store cannot be opened or loaded, the admin token cannot be written, or the address
    /// cannot be bound.
    pub async fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        prepare_data_dir(&config.data)?;
        let store = store::open(&config.store, &config.data).await?;
        let tracker = Tracker::with_config(config.tracker.clone());
        let metrics = Arc::new(ServerMetrics::default());
        let (loaded, restored) = restore(store.as_ref(), &tracker, &metrics, &config).await?;

        let hub = Arc::new(Hub::new(config.subscriber_buffer.max(MIN_HUB_BUFFER)));
        let pipeline = Pipeline::start(
            store.writer().await?,
            &tracker,
            loaded.high_water,
            PipelineConfig {
                heartbeat_flush: config.heartbeat_flush,
                ..PipelineConfig::default()
            },
            Box::new(CommittedEvents {
                metrics: Arc::clone(&metrics),
                hub: Arc::clone(&hub),
            }),
        )?;
        pipeline.hold_rows(loaded.replayed);
        let tokens = TokenCache::default();
        let admin_token = if loaded.has_admin_token {
            None
        } else {
            Some(bootstrap_admin(&pipeline, &tokens, &config.data).await?)
        };
        let monitor = tracker.spawn_monitor();
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|error| ServerError::Bind {
                addr: config.listen,
                reason: error.to_string(),
            })?;
        let state = AppState(Arc::new(Shared {
            tracker,
            store,
            pipeline,
            hub,
            tokens,
            permits: Permits::default(),
            metrics,
            settings: Settings {
                ack_timeout: config.ack_timeout,
                keepalive: config.keepalive,
                metrics_require_auth: config.metrics_require_auth,
                subscriber_queue: config.subscriber_buffer,
            },
            shutdown: CancellationToken::new(),
            started: Instant::now(),
        }));
        Ok(Self {
            state,
            listener,
            monitor,
            admin_token,
            restored,
            retention: Retention {
                keep: config.retention,
                interval: config.purge_interval,
            },
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
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServerError> {
        let state = self.state.clone();
        let housekeeping = tokio::spawn(housekeeping::run(state.clone(), self.retention));
        let stop = state.shutdown.clone();
        let app = crate::api::router(state.clone());
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
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
        self.monitor.stop().await;
        let pipeline = Arc::clone(&state.pipeline);
        tokio::task::spawn_blocking(move || pipeline.shutdown())
            .await
            .map_err(|error| ServerError::Io(error.to_string()))?;
        tracing::info!("store flushed; stopped");
        served.map_err(|error| ServerError::Io(error.to_string()))
    }
}

/// The data directory's admin token file.
pub fn admin_token_path(data: &Path) -> PathBuf {
    data.join(ADMIN_TOKEN_FILE)
}
