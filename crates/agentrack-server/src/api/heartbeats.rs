//! Heartbeats: the hottest path of the API. One execution's (`POST /v1/executions/{id}/heartbeat`),
//! many at once (`POST /v1/heartbeats`), and over an agent's WebSocket ([`crate::ws`], through
//! [`beat_many`]) all go through one function. All three need [`SEND_HEARTBEATS`]: the routes'
//! guard checks it, and [`beat_many`] checks it for the stream's messages.
//!
//! A heartbeat checks access on the execution's owner alone (no record copy) and answers with a
//! small acknowledgement rather than the whole record: an agent heartbeating every second wants
//! to know it was counted, not to download its phase history each time.

use agentrack::{EventKind, ExecutionId, ExecutionState, Phase};
use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use serde_json::Value;

use super::Access;
use super::body::{Fields, JsonBody};
use super::error::ApiError;
use super::executions::changeable;
use crate::app::AppState;
use crate::auth::Scope;
use crate::store::ShardId;

/// Who may send heartbeats: the level of both heartbeat routes and of the event stream's
/// heartbeat messages.
pub const SEND_HEARTBEATS: Access = Access::Write("send heartbeats");

/// Most ids one batch may carry.
pub const MAX_BATCH: usize = 10_000;

/// What a counted heartbeat reports back.
#[derive(Debug, Clone, Serialize)]
pub struct HeartbeatAck {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Its lifecycle state after the heartbeat (`starting` becomes `running`).
    pub state: ExecutionState,
    /// Its phase.
    pub current_phase: Phase,
    /// Heartbeats counted so far.
    pub heartbeat_count: u64,
    /// The sequence number of the heartbeat's event.
    pub global_seq: u64,
}

/// The outcome of a batch: one entry per id, in the order given.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BatchReport {
    /// How many were counted.
    pub accepted: usize,
    /// How many were refused (see `results`).
    pub rejected: usize,
    /// Per id: `{"ok": ack}` or `{"error": {...}}` as a single request would have answered.
    pub results: Vec<Value>,
}

/// Records one heartbeat for `text` (an execution id) on behalf of `scope`, which meets
/// [`SEND_HEARTBEATS`]. Returns the acknowledgement and, when the heartbeat also changed the
/// state, the sequence number to wait for before acknowledging (a state change is durable before
/// it is acknowledged; a bare heartbeat is written in batches and not waited for).
///
/// # Errors
///
/// As a single heartbeat request: 404 for a malformed, unknown or foreign id, 409 for a finished
/// one.
async fn beat(state: &AppState, scope: &Scope, text: &str) -> Result<(HeartbeatAck, Option<(ShardId, u64)>), ApiError> {
    let (id, tracker) = changeable(state, scope, text).await?;
    let shard = state.shards.shard_of(id);
    let change = tracker.heartbeat(id)?;
    let mut ack = None;
    let mut state_change = None;
    for event in &change.events {
        match &event.kind {
            EventKind::Heartbeat { heartbeat_count } => ack = Some((*heartbeat_count, event.global_seq)),
            _ => state_change = Some((shard, event.global_seq)),
        }
    }
    let (heartbeat_count, global_seq) = ack.unwrap_or_default();
    // As the heartbeat left them, or newer: a change racing in between is just as true.
    let (current_state, current_phase) = tracker.state_and_phase(id)?;
    Ok((
        HeartbeatAck {
            execution_id: id,
            state: current_state,
            current_phase,
            heartbeat_count,
            global_seq,
        },
        state_change,
    ))
}

/// Heartbeats for many executions sent over the event stream; each id succeeds or fails on its
/// own. The stream is opened with any token, so unlike a route (whose level its guard enforces)
/// each message is checked here against [`SEND_HEARTBEATS`].
///
/// # Errors
///
/// Only what fails the whole batch: 403 for a viewer, or 503 when the store does not confirm.
pub async fn beat_many(state: &AppState, scope: &Scope, ids: &[String]) -> Result<BatchReport, ApiError> {
    SEND_HEARTBEATS.check(scope)?;
    beat_all(state, scope, ids).await
}

/// Heartbeats for many executions, on behalf of `scope`, which meets [`SEND_HEARTBEATS`]. Waits
/// once for the state changes among them to be durable.
async fn beat_all(state: &AppState, scope: &Scope, ids: &[String]) -> Result<BatchReport, ApiError> {
    let mut report = BatchReport {
        results: Vec::with_capacity(ids.len()),
        ..BatchReport::default()
    };
    let mut wait_for: HashMap<ShardId, u64> = HashMap::new();
    for text in ids {
        match beat(state, scope, text).await {
            Ok((ack, state_change)) => {
                if let Some((shard, seq)) = state_change {
                    let latest = wait_for.entry(shard).or_default();
                    *latest = (*latest).max(seq);
                }
                report.accepted += 1;
                report.results.push(serde_json::json!({ "ok": ack }));
            }
            Err(error) => {
                report.rejected += 1;
                report.results.push(error.body());
            }
        }
    }
    for (shard, seq) in wait_for {
        state.durable_up_to(shard, seq).await?;
    }
    Ok(report)
}

/// `POST /v1/executions/{id}/heartbeat`.
///
/// # Errors
///
/// 400 for a body with fields, 404 for a malformed, unknown or foreign id, 409 for a finished
/// one, 503 when the store does not confirm a state change.
pub async fn single(
    State(state): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
    body: JsonBody,
) -> Result<Json<HeartbeatAck>, ApiError> {
    Fields::new(body, &[])?;
    let (ack, state_change) = beat(&state, &scope, &id).await?;
    if let Some((shard, seq)) = state_change {
        state.durable_up_to(shard, seq).await?;
    }
    Ok(Json(ack))
}

/// `POST /v1/heartbeats` with `{"execution_ids": [...]}`.
///
/// # Errors
///
/// Only what fails the whole batch: 400 for a body that is not a list of at most [`MAX_BATCH`]
/// ids, 503 when the store does not confirm.
pub async fn batch(State(state): State<AppState>, scope: Scope, body: JsonBody) -> Result<Json<BatchReport>, ApiError> {
    let fields = Fields::new(body, &["execution_ids"])?;
    let ids = fields.string_list("execution_ids", MAX_BATCH)?;
    Ok(Json(beat_all(&state, &scope, &ids).await?))
}
