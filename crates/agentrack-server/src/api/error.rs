//! The one error type of the API and its mapping to status codes and bodies.
//!
//! Every error body is `{"error": {"code": "...", "message": "...", ...details}}`, where `code`
//! is a stable machine-readable name and the details say what was wrong and what would be valid.

use agentrack::{ExecutionId, ParseEnumError, TrackerError};
use axum::extract::rejection::QueryRejection;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::store::StoreError;
use crate::store::pipeline::CommitError;

/// An API error: a status, a code, a message and details.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    // Boxed: a JSON map is 72 bytes inline (serde_json's `preserve_order`), which made every
    // `Result<_, ApiError>` large.
    details: Box<Map<String, Value>>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Box::default(),
            headers: Vec::new(),
        }
    }

    /// Adds a detail field to the body.
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// Adds a response header.
    #[must_use]
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response body: `{"error": {"code", "message", ...details}}`.
    pub fn body(&self) -> Value {
        let mut error = Map::new();
        error.insert("code".into(), Value::from(self.code));
        error.insert("message".into(), Value::from(self.message.clone()));
        error.extend((*self.details).clone());
        json!({ "error": error })
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// 400: the body is not JSON.
    pub fn malformed_json(reason: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the request body is not valid JSON: {reason}"),
        )
    }

    /// 400: a query parameter cannot be read.
    pub fn invalid_query(parameter: &str, reason: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("query parameter {parameter}: {reason}"),
        )
        .with("parameter", parameter)
    }

    /// 400: a query parameter that the route does not take.
    pub fn unknown_parameter(parameter: &str, valid: &[(&str, &str)]) -> Self {
        let names: Vec<&str> = valid.iter().map(|(name, _)| *name).collect();
        Self::invalid_query(parameter, format!("unknown parameter; valid: {}", names.join(", ")))
    }

    /// 400: the query string does not decode into the route's parameters (a parameter given
    /// twice, say).
    #[allow(
        clippy::needless_pass_by_value,
        reason = "a `map_err` adapter: it takes the error the way `map_err` hands it over"
    )]
    pub fn unreadable_query(rejection: QueryRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("the query string cannot be read: {}", rejection.body_text()),
        )
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
            .header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 for an execution that does not exist *or* is outside the caller's scope.
    pub fn not_found(id: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("execution {id} not found"))
            .with("execution_id", id.to_string())
    }

    /// 404 for an id that is not even well-formed (reported like an unknown one).
    pub fn unknown_id(text: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("execution {text} not found"),
        )
        .with("execution_id", text)
    }

    /// 404 for something other than an execution.
    pub fn not_found_thing(what: &str, name: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} {name} not found"))
    }

    /// 409: the execution is finished.
    pub fn terminal(id: ExecutionId, state: agentrack::ExecutionState) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "terminal",
            format!("execution {id} is already {state} (terminal states are final)"),
        )
        .with("execution_id", id.to_string())
        .with("state", state.as_str())
    }

    /// 413.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
        .with("limit_bytes", limit)
    }

    /// 408: the request body did not arrive within `http.body_read_timeout`; the connection is
    /// closed (what is left of the body is never read).
    pub fn body_timeout(limit: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("the request body did not arrive within {limit:?} (http.body_read_timeout)"),
        )
        .with("limit_seconds", limit.as_secs_f64())
        .header(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        )
    }

    /// 422: a field has the wrong kind or value.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message).with("field", field)
    }

    /// 422: a required field is missing.
    pub fn missing_field(field: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_field",
            format!("field {field} is required"),
        )
        .with("field", field)
    }

    /// 422: a field holds something other than one of an enumeration's names.
    pub fn invalid_enum(code: &'static str, field: &str, error: &ParseEnumError) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
            format!("field {field}: {error}"),
        )
        .with("field", field)
        .with("valid_values", error.valid.to_vec())
    }

    /// 503: the store cannot answer.
    #[allow(
        clippy::needless_pass_by_value,
        reason = "a `map_err` adapter: it takes the error the way `map_err` hands it over"
    )]
    pub fn store(error: StoreError) -> Self {
        tracing::error!(%error, "store error");
        Self::unavailable(format!("the store is unavailable: {error}"))
    }

    /// 503: a write was applied but could not be confirmed durable.
    #[allow(
        clippy::needless_pass_by_value,
        reason = "a `map_err` adapter: it takes the error the way `map_err` hands it over"
    )]
    pub fn commit(error: CommitError) -> Self {
        tracing::error!(%error, "write not confirmed");
        Self::unavailable(format!("the change could not be confirmed durable: {error}"))
    }

    /// 503: the store is failing, so a change was refused before it was applied.
    pub fn store_failing() -> Self {
        Self::unavailable(format!(
            "the store is failing: nothing was changed; retry after {STORE_RETRY_AFTER} s (GET /readyz says when it is back)"
        ))
    }

    /// 503: the store's writer has `limit` messages waiting, so a change was refused before it
    /// was applied.
    pub fn store_backlog(limit: usize) -> Self {
        Self::unavailable(format!(
            "the store is behind: {limit} changes wait to be written (max_store_queue); nothing was changed; retry after {STORE_RETRY_AFTER} s"
        ))
        .with("limit", limit)
    }

    /// 503: the execution's shard is moving between nodes (or its owner is not known yet).
    pub fn shard_unavailable(shard: crate::store::ShardId) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shard_unavailable",
            format!("shard {shard} is moving between nodes; retry after {SHARD_RETRY_AFTER} s"),
        )
        .with("shard", shard)
        .with("retry_after_seconds", SHARD_RETRY_AFTER)
        .header(header::RETRY_AFTER, HeaderValue::from(SHARD_RETRY_AFTER))
    }

    /// 503: the node that owns the shard does not answer (it may have just died: its shards are
    /// taken over within a lease TTL).
    pub fn owner_unreachable(owner: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shard_unavailable",
            format!("the node that owns this shard ({owner}) does not answer; retry after {SHARD_RETRY_AFTER} s"),
        )
        .with("retry_after_seconds", SHARD_RETRY_AFTER)
        .header(header::RETRY_AFTER, HeaderValue::from(SHARD_RETRY_AFTER))
    }

    /// 503: this node serves no shard to create an execution on (it is starting or leaving).
    pub fn no_shard_here() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shard_unavailable",
            format!("this node serves no shard yet; retry after {SHARD_RETRY_AFTER} s or ask another node"),
        )
        .with("retry_after_seconds", SHARD_RETRY_AFTER)
        .header(header::RETRY_AFTER, HeaderValue::from(SHARD_RETRY_AFTER))
    }

    /// 503 `store_unavailable` with `Retry-After`.
    fn unavailable(message: String) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", message)
            .with("retry_after_seconds", STORE_RETRY_AFTER)
            .header(header::RETRY_AFTER, HeaderValue::from(STORE_RETRY_AFTER))
    }

    /// 429: past one of the caller's quotas; nothing was changed.
    pub fn quota(quota: crate::quotas::Quota, limit: usize, current: usize, counts: &str) -> Self {
        let retry_after = quota.retry_after();
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "quota_exceeded",
            format!(
                "quota {} exceeded: {current} {counts}, the limit is {limit} ({}); nothing was changed, retry after {retry_after} s",
                quota.name(),
                quota.key()
            ),
        )
        .with("quota", quota.name())
        .with("key", quota.key())
        .with("limit", limit)
        .with("current", current)
        .with("retry_after_seconds", retry_after)
        .header(header::RETRY_AFTER, HeaderValue::from(retry_after))
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

/// Seconds a client is asked to wait before retrying when the store is unavailable: about the
/// writer's reconnect interval.
const STORE_RETRY_AFTER: u64 = 2;

/// Seconds a client is asked to wait while a shard moves between nodes.
pub const SHARD_RETRY_AFTER: u64 = 1;

fn names<T: std::fmt::Display>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

impl From<TrackerError> for ApiError {
    fn from(error: TrackerError) -> Self {
        let message = error.to_string();
        match error {
            TrackerError::NotFound { execution_id } => Self::not_found(execution_id),
            TrackerError::Terminal { execution_id, state } => Self::terminal(execution_id, state),
            TrackerError::InvalidLifecycle {
                execution_id,
                from,
                to,
                allowed,
            } => Self::new(StatusCode::CONFLICT, "invalid_lifecycle", message)
                .with("execution_id", execution_id.to_string())
                .with("from", from.as_str())
                .with("to", to.as_str())
                .with("allowed", names(&allowed)),
            TrackerError::InvalidTransition {
                execution_id,
                from,
                to,
                allowed,
            } => Self::new(StatusCode::CONFLICT, "invalid_transition", message)
                .with("execution_id", execution_id.to_string())
                .with("from", from.as_str())
                .with("to", to.as_str())
                .with("allowed", names(allowed)),
            TrackerError::CircuitOpen { breaker, retry_after } => {
                let seconds = retry_after.as_secs_f64();
                let header_secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "circuit_open", message)
                    .with("breaker", breaker)
                    .with("retry_after_seconds", seconds)
                    .header(header::RETRY_AFTER, HeaderValue::from(header_secs.max(1)))
            }
            TrackerError::Timeout { operation, .. } => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message).with("operation", operation)
            }
            TrackerError::InvalidInput { field, .. } => Self::invalid_field(field, message),
            _ => Self::internal(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut response = (self.status, axum::Json(body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}
