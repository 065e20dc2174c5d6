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
use axum::http::HeaderMap;
use serde::Serialize;
use serde_json::Value;

use super::Access;
use super::body::{Fields, JsonBody};
use super::error::ApiError;
use super::executions::changeable;
use crate::app::AppState;
use crate::auth::Scope;
use crate::cluster::forward::FORWARDED_BY;
use crate::cluster::{Route, membership};
use crate::store::ShardId;

/// Who may send heartbeats: the level of both heartbeat routes and of the event stream's
/// heartbeat messages.
pub const SEND_HEARTBEATS: Access = Access::Write("send heartbeats");

/// Most ids one batch may carry.
pub const MAX_BATCH: usize = 10_000;

/// Most heartbeats one id of a batch may stand for.
pub const MAX_COUNT: u32 = 1_000_000;

/// A batch of heartbeats: ids, each standing for as many heartbeats as its count (a client that
/// batches sends each id once per flush, with how often it was beaten).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The execution ids, in the order given.
    pub ids: Vec<String>,
    /// How many heartbeats each id stands for, in the same order (1 to [`MAX_COUNT`]).
    pub counts: Vec<u32>,
}

impl Batch {
    /// One heartbeat for each of `ids`.
    pub fn once_each(ids: Vec<String>) -> Self {
        let counts = vec![1; ids.len()];
        Self { ids, counts }
    }
}

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
async fn beat(
    state: &AppState,
    scope: &Scope,
    text: &str,
    count: u32,
) -> Result<(HeartbeatAck, Option<(ShardId, u64)>), ApiError> {
    let (id, tracker) = changeable(state, scope, text).await?;
    let shard = state.shards.shard_of(id);
    let change = tracker.heartbeats(id, count)?;
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
pub async fn beat_many(state: &AppState, scope: &Scope, batch: &Batch) -> Result<BatchReport, ApiError> {
    SEND_HEARTBEATS.check(scope)?;
    beat_all(state, scope, batch, false).await
}

/// Heartbeats for many executions, on behalf of `scope`, which meets [`SEND_HEARTBEATS`]. Ids on
/// shards another node owns go to that node in one request per node (unless this batch was
/// itself forwarded: then they are refused as moving, so a batch never travels in circles).
/// Ids refused because their shard moved are tried once more after the owner map is read
/// again. Waits once per shard for the state changes among them to be durable.
async fn beat_all(state: &AppState, scope: &Scope, batch: &Batch, forwarded: bool) -> Result<BatchReport, ApiError> {
    let mut results: Vec<Value> = vec![Value::Null; batch.ids.len()];
    let mut wait_for: HashMap<ShardId, u64> = HashMap::new();
    let all: Vec<usize> = (0..batch.ids.len()).collect();
    beat_pass(state, scope, batch, &all, forwarded, &mut results, &mut wait_for).await;
    let moved: Vec<usize> = all
        .into_iter()
        .filter(|&index| results[index]["error"]["code"] == "shard_unavailable")
        .collect();
    if !moved.is_empty()
        && !forwarded
        && let (Some(cluster), Some(store)) = (state.cluster.as_ref(), state.store.cluster())
    {
        let refreshed = membership::refresh_now(&cluster.member, store, &state.shards, &cluster.owners_refreshed);
        if refreshed.await.is_ok() {
            beat_pass(state, scope, batch, &moved, forwarded, &mut results, &mut wait_for).await;
        }
    }
    for (shard, seq) in wait_for {
        state.durable_up_to(shard, seq).await?;
    }
    let accepted = results.iter().filter(|result| result.get("ok").is_some()).count();
    Ok(BatchReport {
        accepted,
        rejected: results.len() - accepted,
        results,
    })
}

/// One pass over the ids at `indexes`: each heartbeat recorded here or sent to its owner, its
/// outcome written into `results`.
async fn beat_pass(
    state: &AppState,
    scope: &Scope,
    batch: &Batch,
    indexes: &[usize],
    forwarded: bool,
    results: &mut [Value],
    wait_for: &mut HashMap<ShardId, u64>,
) {
    let mut elsewhere: HashMap<String, Vec<usize>> = HashMap::new();
    for &index in indexes {
        let text = &batch.ids[index];
        if let Some(url) = owner_elsewhere(state, scope, text, forwarded) {
            elsewhere.entry(url).or_default().push(index);
            continue;
        }
        results[index] = match beat(state, scope, text, batch.counts[index]).await {
            Ok((ack, state_change)) => {
                if let Some((shard, seq)) = state_change {
                    let latest = wait_for.entry(shard).or_default();
                    *latest = (*latest).max(seq);
                }
                serde_json::json!({ "ok": ack })
            }
            Err(error) => error.body(),
        };
    }
    let answers = futures_util::future::join_all(
        elsewhere
            .into_iter()
            .map(|(url, indexes)| beat_elsewhere(state, scope, url, batch, indexes)),
    )
    .await;
    for (indexes, answered) in answers {
        for (index, result) in indexes.into_iter().zip(answered) {
            results[index] = result;
        }
    }
}

/// The URL of the node that owns `text`'s shard, when it is another node and the batch may go
/// there.
fn owner_elsewhere(state: &AppState, scope: &Scope, text: &str, forwarded: bool) -> Option<String> {
    if forwarded || state.cluster.is_none() || scope.token().is_none() {
        return None;
    }
    match state.shards.route(text.parse().ok()?) {
        Route::Remote(url) => Some(url),
        Route::Local(_) | Route::Unavailable => None,
    }
}

/// The heartbeats of `indexes` (into the batch) sent to the node at `url`: one result per
/// index, as that node answered, or its failure for each.
async fn beat_elsewhere(
    state: &AppState,
    scope: &Scope,
    url: String,
    batch: &Batch,
    indexes: Vec<usize>,
) -> (Vec<usize>, Vec<Value>) {
    let (Some(cluster), Some(token)) = (state.cluster.as_ref(), scope.token()) else {
        return (indexes, Vec::new());
    };
    let beats: Vec<Value> = indexes
        .iter()
        .map(|&index| serde_json::json!({ "execution_id": batch.ids[index], "count": batch.counts[index] }))
        .collect();
    let body = serde_json::json!({ "beats": beats });
    let answer = cluster
        .forwarder
        .post_json(&url, &cluster.member.node_id, "/v1/heartbeats", token, &body)
        .await;
    let failed = |error: Value| vec![error; indexes.len()];
    let results = match answer {
        Ok((status, mut answer)) if status.is_success() => match answer.get_mut("results").map(Value::take) {
            Some(Value::Array(results)) if results.len() == indexes.len() => results,
            _ => failed(ApiError::owner_unreachable(&url).body()),
        },
        // The whole batch failed there (a store outage, a revoked token): as it said, per id.
        Ok((_, answer)) if answer.get("error").is_some() => failed(answer),
        Ok(_) => failed(ApiError::owner_unreachable(&url).body()),
        Err(error) => failed(error.body()),
    };
    (indexes, results)
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
    let (ack, state_change) = beat(&state, &scope, &id, 1).await?;
    if let Some((shard, seq)) = state_change {
        state.durable_up_to(shard, seq).await?;
    }
    Ok(Json(ack))
}

/// `POST /v1/heartbeats` with `{"execution_ids": [...]}` or `{"beats": [{"execution_id", "count"}, ...]}`.
///
/// # Errors
///
/// Only what fails the whole batch: 400 for a body that is not a list of at most [`MAX_BATCH`]
/// ids, 503 when the store does not confirm.
pub async fn batch(
    State(state): State<AppState>,
    scope: Scope,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Json<BatchReport>, ApiError> {
    let batch = parse_batch(body)?;
    let forwarded = headers.contains_key(FORWARDED_BY);
    Ok(Json(beat_all(&state, &scope, &batch, forwarded).await?))
}

/// A batch of heartbeats (`POST /v1/heartbeats`, or a stream's heartbeat message without its
/// `type`): either `execution_ids`, one heartbeat each, or `beats`, ids each with the number of
/// heartbeats it stands for (`{"execution_id", "count"}`).
///
/// # Errors
///
/// 422 for another field, for both or neither, for anything but 1 to [`MAX_BATCH`] non-empty
/// ids, or for a count that is not a whole number from 1 to [`MAX_COUNT`].
pub fn parse_batch(body: JsonBody) -> Result<Batch, ApiError> {
    // Unlike other bodies, a null counts as given here (one of the two must be an array).
    if body.0.contains_key("beats") && body.0.contains_key("execution_ids") {
        return Err(ApiError::invalid_field(
            "beats",
            "give execution_ids (one heartbeat each) or beats (ids with counts), not both",
        ));
    }
    let fields = Fields::new(body, &["execution_ids", "beats"])?;
    match fields.present("beats") {
        Some(beats) => parse_beats(beats),
        None => Ok(Batch::once_each(fields.string_list("execution_ids", MAX_BATCH)?)),
    }
}

/// `beats`: 1 to [`MAX_BATCH`] objects of exactly `execution_id` (a non-empty string) and
/// `count` (1 to [`MAX_COUNT`]).
fn parse_beats(value: &Value) -> Result<Batch, ApiError> {
    let invalid = |why: String| {
        ApiError::invalid_field(
            "beats",
            format!(
                "beats must be an array of 1 to {MAX_BATCH} objects {{\"execution_id\": a non-empty string, \"count\": 1 to {MAX_COUNT}}}: {why}"
            ),
        )
    };
    let items = value
        .as_array()
        .ok_or_else(|| invalid(format!("not {}", super::body::describe(value))))?;
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(invalid(format!("{} items", items.len())));
    }
    let mut batch = Batch {
        ids: Vec::with_capacity(items.len()),
        counts: Vec::with_capacity(items.len()),
    };
    for (i, item) in items.iter().enumerate() {
        let beat = item.as_object().filter(|object| object.len() == 2);
        let id = beat
            .and_then(|object| object.get("execution_id"))
            .and_then(Value::as_str)
            .filter(|id| !id.trim().is_empty());
        let count = beat
            .and_then(|object| object.get("count"))
            .and_then(super::body::whole_u32)
            .filter(|n| (1..=MAX_COUNT).contains(n));
        let (Some(id), Some(count)) = (id, count) else {
            return Err(invalid(format!("beats[{i}] is {}", super::body::describe(item))));
        };
        batch.ids.push(id.to_owned());
        batch.counts.push(count);
    }
    Ok(batch)
}
