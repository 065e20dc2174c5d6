//! `Idempotency-Key`: a client that retries a create or a state change with the same key gets
//! the first answer instead of a second execution.
//!
//! The key lives in the store ([`crate::store::KeyOp`]), scoped to the caller's token, so that a
//! retry finds it after a restart and on any node of a cluster. A request with a key:
//!
//! 1. reserves it with one atomic insert, before anything changes: if the store cannot take the
//!    reservation the request is refused (503), unchanged. A key already answered replays its
//!    answer (`Idempotent-Replayed: true`); a key still running answers 409
//!    `idempotency_key_in_progress` with `Retry-After`; a key sent with another method, path
//!    or body answers 422 `idempotency_key_reused`.
//! 2. runs in a task of its own, which waits for its change to be durable however long the
//!    store takes ([`keyed`]) and then keeps the answer under the key. The client gets 503
//!    after `ack_timeout` if the store is that slow; its retry then gets 409 until the change is
//!    stored, and the first answer after. So the change happens once, and its answer is the one
//!    the client finally reads.
//! 3. An answer of 5xx (nothing was applied, or nobody can tell) is not kept: the reservation is
//!    released, and the key may be sent again.
//!
//! Keys are kept for `idempotency_retention` (24 h), removed by the retention purge. A request
//! forwarded to the shard's owner carries its key on: the owner reserves it, the forwarding node
//! does not (this layer runs inside the forwarding one).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::app::AppState;
use crate::auth::{Scope, hash_token};
use crate::store::{KeyOp, KeyState};

/// The request header.
pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");

/// The response header on a replayed answer.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 255;

/// Routes that take no key although durable: a token's answer holds the token itself, which
/// the store must never keep (only its hash).
const NOT_KEPT: &[&str] = &["createToken"];

/// Seconds a client is asked to wait while the first request with its key still runs.
const IN_PROGRESS_RETRY_AFTER: u64 = 1;

/// Whether the route of `operation_id` takes an `Idempotency-Key`: the durable ones (creates and
/// state changes), but for token creation.
pub fn applies(durable: bool, operation_id: &str) -> bool {
    durable && !NOT_KEPT.contains(&operation_id)
}

tokio::task_local! {
    static KEYED: ();
}

/// Whether the running request came with an `Idempotency-Key` (its durable wait then has no
/// timeout: see the module documentation).
pub fn keyed() -> bool {
    KEYED.try_with(|()| ()).is_ok()
}

fn invalid_key(reason: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_idempotency_key",
        format!(
            "the Idempotency-Key header {reason}; valid: 1 to {MAX_KEY_BYTES} visible ASCII characters (a UUID, say)"
        ),
    )
    .with("header", "Idempotency-Key")
}

/// The key of `request`, if it has one.
fn key_of(request: &Request) -> Result<Option<String>, ApiError> {
    let mut values = request.headers().get_all(&HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(invalid_key("is given more than once"));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_KEY_BYTES {
        return Err(invalid_key(&format!("is {} bytes long", bytes.len())));
    }
    if !bytes.iter().all(u8::is_ascii_graphic) {
        return Err(invalid_key("holds a character that is not visible ASCII"));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// The middleware of the routes [`applies`] to; runs after the access guard (the caller's scope
/// is known) and the forwarding layer (the request is answered here).
pub async fn remember(state: AppState, request: Request, next: Next) -> Response {
    let key = match key_of(&request) {
        Ok(Some(key)) => key,
        Ok(None) => return next.run(request).await,
        Err(error) => return error.into_response(),
    };
    // Keys are the caller's: a token's hash (only the hash of a token is ever stored).
    let scope = request.extensions().get::<Scope>().map(|scope| {
        scope
            .token()
            .map_or_else(|| format!("grant:{:?}", scope.grant()), hash_token)
    });
    let Some(scope) = scope else {
        return ApiError::internal("an idempotent route without the access guard's scope").into_response();
    };
    let (parts, body) = request.into_parts();
    let bytes = match super::body::read_limited(body).await {
        Ok(bytes) => bytes,
        Err(error) => return error.into_response(),
    };
    let fingerprint = {
        let mut hash = Sha256::new();
        hash.update(parts.method.as_str().as_bytes());
        hash.update(b" ");
        hash.update(parts.uri.path().as_bytes());
        hash.update(b"\n");
        hash.update(&bytes);
        format!("{:x}", hash.finalize())
    };
    let request = Request::from_parts(parts, Body::from(bytes));
    // A task of its own: a client that disconnects cannot leave a key reserved and its request
    // not run, nor a change applied and its answer not kept.
    let task = tokio::spawn(KEYED.scope((), once(state.clone(), next, request, scope, key, fingerprint)));
    match tokio::time::timeout(state.settings.ack_timeout, task).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => ApiError::internal(format!("the request's task failed: {error}")).into_response(),
        Err(_) => ApiError::commit(crate::store::pipeline::CommitError::TimedOut(
            state.settings.ack_timeout,
        ))
        .with(
            "idempotency",
            "the request goes on; a retry with the same Idempotency-Key gets its answer once it is stored",
        )
        .into_response(),
    }
}

/// Reserves the key; then runs the request, or answers what the key already holds.
async fn once(
    state: AppState,
    next: Next,
    request: Request,
    scope: String,
    key: String,
    fingerprint: String,
) -> Response {
    let reserve = KeyOp::Reserve {
        scope: scope.clone(),
        key: key.clone(),
        fingerprint: fingerprint.clone(),
        at: chrono::Utc::now(),
    };
    match state.pipeline.idempotency(reserve).await {
        Ok(KeyState::Reserved) => run_and_keep(state, next, request, scope, key).await,
        Ok(KeyState::Pending { fingerprint: first } | KeyState::Done { fingerprint: first, .. })
            if first != fingerprint =>
        {
            reused(&key).into_response()
        }
        Ok(KeyState::Done { status, body, .. }) => replay(status, body),
        Ok(KeyState::Pending { .. } | KeyState::Changed(_)) => in_progress(&key).into_response(),
        Err(error) => {
            // The writer may still make the reservation after giving up on its answer (it
            // takes requests in order): the release, queued after it, undoes it.
            let _ = state.pipeline.idempotency(KeyOp::Release { scope, key }).await;
            ApiError::store(error).into_response()
        }
    }
}

/// Runs the request and keeps its answer under the key (or releases the key after a 5xx).
async fn run_and_keep(state: AppState, next: Next, request: Request, scope: String, key: String) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(error) => return ApiError::internal(format!("the answer cannot be read: {error}")).into_response(),
    };
    let op = if status.is_server_error() {
        KeyOp::Release { scope, key }
    } else {
        KeyOp::Complete {
            scope,
            key,
            status: status.as_u16(),
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    };
    // The change is stored; should keeping its answer fail, the key stays reserved (409 to a
    // retry until it expires) rather than let a retry run the change again.
    for attempt in 1..=3u32 {
        match state.pipeline.idempotency(op.clone()).await {
            Ok(_) => break,
            Err(error) => {
                tracing::error!(%error, attempt, "keeping an idempotent request's answer failed");
                tokio::time::sleep(std::time::Duration::from_millis(100) * attempt).await;
            }
        }
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn reused(key: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        format!(
            "Idempotency-Key {key:?} was first sent with another method, path or body; a retry must repeat its request byte for byte, another request needs another key"
        ),
    )
    .with("header", "Idempotency-Key")
}

fn in_progress(key: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_key_in_progress",
        format!(
            "the first request with Idempotency-Key {key:?} is still running; retry after {IN_PROGRESS_RETRY_AFTER} s for its answer"
        ),
    )
    .with("header", "Idempotency-Key")
    .with("retry_after_seconds", IN_PROGRESS_RETRY_AFTER)
    .header(header::RETRY_AFTER, HeaderValue::from(IN_PROGRESS_RETRY_AFTER))
}

/// The kept answer, as it was given.
fn replay(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (REPLAYED, HeaderValue::from_static("true")),
        ],
        body,
    )
        .into_response()
}
