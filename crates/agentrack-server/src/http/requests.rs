//! The bound on requests handled at once: past it a request waits for its turn, briefly, and
//! is then refused with 503 `server_busy`, its body still unread (so a flood of requests costs
//! queued tasks, not buffered bodies).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::api::error::ApiError;
use crate::app::AppState;

/// Turns for requests (`http.max_requests`, `http.queue_timeout`).
#[derive(Debug)]
pub struct RequestLimit {
    turns: Arc<Semaphore>,
    limit: usize,
    queue_timeout: Duration,
}

impl RequestLimit {
    /// At most `limit` requests at once (at most [`crate::config::MAX_LIMIT`]); others wait up
    /// to `queue_timeout`.
    pub fn new(limit: usize, queue_timeout: Duration) -> Self {
        let limit = limit.clamp(1, crate::config::MAX_LIMIT);
        Self {
            turns: Arc::new(Semaphore::new(limit)),
            limit,
            queue_timeout,
        }
    }

    fn busy(&self) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_busy",
            format!(
                "the server is handling its limit of {} requests at once (http.max_requests) and none finished \
                 within {:?} (http.queue_timeout); retry later",
                self.limit, self.queue_timeout
            ),
        )
        .with("limit", self.limit)
        .header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    }
}

impl Default for RequestLimit {
    fn default() -> Self {
        let config = crate::config::HttpConfig::default();
        Self::new(config.max_requests, config.queue_timeout)
    }
}

/// The middleware every request passes: it runs with a turn, or is refused.
pub async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = &state.requests;
    let turn = if let Ok(turn) = Arc::clone(&limit.turns).try_acquire_owned() {
        turn
    } else {
        let waited = tokio::time::timeout(limit.queue_timeout, Arc::clone(&limit.turns).acquire_owned()).await;
        let Ok(Ok(turn)) = waited else {
            state
                .metrics
                .requests_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return limit.busy().into_response();
        };
        turn
    };
    let response = next.run(request).await;
    drop(turn);
    response
}
