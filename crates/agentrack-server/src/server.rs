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
use crate::metrics::ServerMetrics;
use crate::permits::Permits;
use crate::store::sqlite::SqliteStore;
use crate::store::writer::{Pipeline, PipelineConfig};
use crate::store::{Store, StoreError};

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

/// A bound, ready server; [`Server::run`] serves until shutdown.
#[derive(Debug)]
pub struct Server {
    state: AppState,
    listener: TcpListener,
    monitor: MonitorHandle,
    admin_token: Option<String>,
    restored: usize,
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

/// Makes a token directly in a store (no server needed); returns the token.
///
/// # Errors
///
/// The store cannot be opened or written.
pub fn create_token_in(data: &Path, grant: TokenGrant) -> Result<String, ServerError> {
    let store = SqliteStore::open(data, crate::store::sqlite::Synchronous::Full)?;
    let mut writer = store.writer()?;
    let token = generate_token().map_err(|error| ServerError::Io(format!("no randomness: {error}")))?;
    writer.insert_token(&hash_token(&token), &grant)?;
    writer.close()?;
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
        let store = SqliteStore::open(&config.data, config.synchronous)?;
        let tracker = Tracker::with_config(config.tracker.clone());
        let metrics = Arc::new(ServerMetrics::default());

        let started = Instant::now();
        // Finished executions older than the tracker keeps in memory stay in the store only.
        let cutoff = chrono::Duration::from_std(config.tracker.cleanup_age)
            .ok()
            .and_then(|age| chrono::Utc::now().checked_sub_signed(age))
            .unwrap_or_default();
        let loaded = store.load(cutoff)?;
        metrics.restore(&loaded.counts, &loaded.records);
        let restored = loaded.records.len();
        for record in loaded.records {
            let id = record.execution_id;
            if let Err(error) = tracker.restore(record) {
                tracing::error!(execution_id = %id, %error, "could not restore an execution");
            }
        }
        tracker.resume_sequence(loaded.high_water);
        tracing::info!(
            restored,
            high_water = loaded.high_water,
            millis = started.elapsed().as_millis() as u64,
            "rebuilt the tracker from the store"
        );

        let mut writer = store.writer()?;
        let tokens = TokenCache::default();
        let admin_token = if loaded.has_admin_token {
            None
        } else {
            let token = generate_token().map_err(|error| ServerError::Io(format!("no randomness: {error}")))?;
            let grant = TokenGrant::new(
                Role::Admin,
                agentrack::DEFAULT_TENANT.to_owned(),
                None,
                Some("first admin".into()),
            )
            .map_err(|error| ServerError::Io(error.to_string()))?;
            let hash = hash_token(&token);
            writer.insert_token(&hash, &grant)?;
            write_secret(&config.data.join(ADMIN_TOKEN_FILE), &token)?;
            tokens.insert(hash, grant);
            Some(token)
        };

        let observer_metrics = Arc::clone(&metrics);
        let pipeline = Pipeline::start(
            writer,
            &tracker,
            loaded.high_water,
            PipelineConfig {
                heartbeat_flush: config.heartbeat_flush,
                retention: config.retention,
                purge_interval: config.purge_interval,
                subscriber_buffer: config
                    .subscriber_buffer
                    .max(PipelineConfig::default().subscriber_buffer),
                ..PipelineConfig::default()
            },
            Box::new(move |event| observer_metrics.observe(event)),
        )?;
        let monitor = tracker.spawn_monitor();
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|error| ServerError::Bind {
                addr: config.listen,
                reason: error.to_string(),
            })?;
        let state = AppState(Arc::new(Shared {
            tracker,
            store: Arc::new(store),
            pipeline,
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
        let housekeeping = {
            let state = state.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        () = state.shutdown.cancelled() => break,
                        _ = tick.tick() => { state.permits.expire(); }
                    }
                }
            })
        };
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
