//! Serving HTTP connections within bounds: how long a request head and body may take, how many
//! connections may be open and how many requests handled at once (see
//! [`crate::config::HttpConfig`]).
//!
//! - A connection past `max_connections` is answered 503 `too_many_connections` (a few at a
//!   time; past that it is closed at once) and closed. A WebSocket keeps its connection's slot
//!   for as long as it is open ([`ConnectionSlot`]).
//! - hyper's header timer closes a connection that has not delivered a whole request head
//!   within `header_read_timeout` of opening or of its previous response: slow heads and idle
//!   keep-alive connections alike.
//! - Bodies are read through a [`deadline::DeadlineBody`]: 408 `body_timeout` past
//!   `body_read_timeout`.
//! - [`requests`] bounds the requests handled at once.

pub mod deadline;
pub mod requests;

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;

use crate::api::error::ApiError;
use crate::config::HttpConfig;
use crate::metrics::ServerMetrics;

/// Connections past the limit answered at once; more are closed without an answer, so that a
/// flood of them costs no more than this many tasks.
const REFUSALS_AT_ONCE: usize = 64;

/// A connection's place under `http.max_connections`, in every request's extensions: a
/// WebSocket takes it along, so the slot is free only once the stream closes.
#[derive(Debug, Clone)]
pub struct ConnectionSlot(#[allow(dead_code, reason = "held for its drop")] Arc<OwnedSemaphorePermit>);

/// Counts an open connection for as long as it lives.
struct Open(Arc<ServerMetrics>);

impl Open {
    fn new(metrics: &Arc<ServerMetrics>) -> Self {
        metrics.http_connections.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(metrics))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.http_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The listener's side of serving.
struct Acceptor {
    router: Router,
    builder: http1::Builder,
    config: HttpConfig,
    slots: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    metrics: Arc<ServerMetrics>,
}

/// Serves `router` on `listener` within `config`'s bounds until `shutdown` resolves; then stops
/// accepting, lets every connection finish its request in flight, and returns once all closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: HttpConfig,
    metrics: Arc<ServerMetrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let acceptor = Acceptor {
        router,
        builder,
        slots: Arc::new(Semaphore::new(
            config.max_connections.clamp(1, crate::config::MAX_LIMIT),
        )),
        refusals: Arc::new(Semaphore::new(REFUSALS_AT_ONCE)),
        config,
        metrics,
    };
    // Connections watch `stop` to shut down gracefully; each holds a `closed` receiver, so
    // that the sender's `closed()` resolves once every connection is gone.
    let (stop, stopping) = watch::channel(false);
    let (closed, open) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
        };
        match Arc::clone(&acceptor.slots).try_acquire_owned() {
            Ok(slot) => acceptor.serve_one(stream, slot, stopping.clone(), open.clone()),
            Err(_) => acceptor.refuse(stream),
        }
    }
    drop(listener);
    let _ = stop.send(true);
    drop(open);
    closed.closed().await;
}

/// An accept that failed: a connection reset before it was accepted is nothing; anything else
/// (out of file descriptors, most likely) is logged, and accepting pauses a moment so that
/// connections can close, as hyper used to.
async fn accept_failed(error: &std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "cannot accept a connection");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

impl Acceptor {
    /// Serves one connection in its own task until it closes, or until shutdown (then after
    /// the request in flight).
    fn serve_one(
        &self,
        stream: TcpStream,
        slot: OwnedSemaphorePermit,
        mut stopping: watch::Receiver<bool>,
        open: watch::Receiver<()>,
    ) {
        let slot = ConnectionSlot(Arc::new(slot));
        let router = self.router.clone();
        let body_timeout = self.config.body_read_timeout;
        let service = service_fn(move |request: Request<Incoming>| {
            let (mut parts, body) = request.into_parts();
            parts.extensions.insert(slot.clone());
            let request = Request::from_parts(parts, Body::new(deadline::DeadlineBody::new(body, body_timeout)));
            router.clone().oneshot(request)
        });
        let builder = self.builder.clone();
        let metrics = Arc::clone(&self.metrics);
        tokio::spawn(async move {
            let _open = Open::new(&metrics);
            let mut connection = pin!(builder.serve_connection(TokioIo::new(stream), service).with_upgrades());
            let mut stop_asked = false;
            loop {
                tokio::select! {
                    served = connection.as_mut() => {
                        if let Err(error) = served {
                            if error.is_timeout() {
                                metrics.http_header_timeouts.fetch_add(1, Ordering::Relaxed);
                            }
                            tracing::debug!(%error, "connection ended");
                        }
                        break;
                    }
                    changed = stopping.changed(), if !stop_asked => {
                        stop_asked = true;
                        if changed.is_ok() {
                            connection.as_mut().graceful_shutdown();
                        }
                    }
                }
            }
            drop(open);
        });
    }

    /// Answers a connection past the limit with 503 and closes it.
    fn refuse(&self, stream: TcpStream) {
        self.metrics.http_connections_refused.fetch_add(1, Ordering::Relaxed);
        let Ok(turn) = Arc::clone(&self.refusals).try_acquire_owned() else {
            return;
        };
        let mut builder = self.builder.clone();
        builder.keep_alive(false);
        let limit = self.config.max_connections;
        tokio::spawn(async move {
            let service = service_fn(move |_: Request<Incoming>| async move {
                Ok::<Response, Infallible>(too_many_connections(limit))
            });
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            drop(turn);
        });
    }
}

fn too_many_connections(limit: usize) -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_connections",
        format!("the server holds its limit of {limit} open connections (http.max_connections); retry later"),
    )
    .with("limit", limit)
    .header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    .header(header::CONNECTION, HeaderValue::from_static("close"))
    .into_response()
}
