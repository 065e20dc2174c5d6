//! `/v1/executions/{id}/breaker`: an execution's own circuit breaker (the original's
//! per-execution breaker), for agents in other processes.
//!
//! A remote agent runs its protected call itself: it asks for a permit (`acquire`; 503 with
//! `Retry-After` while the breaker is open), runs the call within the permit's `timeout_seconds`,
//! and reports the outcome (`record`). While a permit is held the execution cannot be declared
//! dead, as in-process. `record` without a permit counts an outcome as if a call had just been
//! admitted and finished: the original's `_on_circuit_breaker_success` / `_failure`
//! bookkeeping.

use agentrack::BreakerStatus;
use axum::Json;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::body::{Fields, JsonBody, OutcomeName};
use super::breakers::permit_not_found;
use super::error::ApiError;
use super::executions::{changeable, serving, visible};
use super::{Access, Route, RouteDoc};
use crate::app::AppState;
use crate::auth::Scope;
use crate::quotas::Quota;

/// Resetting an execution's breaker, and running calls under it.
const USE_BREAKER: Access = Access::Write("use an execution's breaker");

/// The routes of this resource.
pub fn routes() -> Vec<Route> {
    vec![
        Route {
            doc: RouteDoc {
                method: "GET",
                path: "/v1/executions/{id}/breaker",
                operation_id: "getExecutionBreaker",
                summary: "The execution's own circuit breaker.",
                durable: false,
                access: Access::Read,
                request: None,
                success: (200, Some("BreakerStatus")),
                errors: &[401, 404],
                query: &[],
            },
            handler: get(status),
        },
        Route {
            doc: RouteDoc {
                method: "POST",
                path: "/v1/executions/{id}/breaker/reset",
                operation_id: "resetExecutionBreaker",
                summary: "Close the execution's own circuit breaker and zero its counters.",
                durable: true,
                access: Access::Write("reset breakers"),
                request: None,
                success: (200, Some("BreakerStatus")),
                errors: &[400, 401, 403, 404, 413, 503],
                query: &[],
            },
            handler: post(reset),
        },
        Route {
            doc: RouteDoc {
                method: "POST",
                path: "/v1/executions/{id}/breaker/acquire",
                operation_id: "acquireExecutionPermit",
                summary: "Ask the execution's own breaker to admit one call (503 with Retry-After while it is open).",
                durable: true,
                access: USE_BREAKER,
                request: None,
                success: (200, Some("CallPermitGrant")),
                errors: &[400, 401, 403, 404, 409, 413, 429, 503],
                query: &[],
            },
            handler: post(acquire),
        },
        Route {
            doc: RouteDoc {
                method: "POST",
                path: "/v1/executions/{id}/breaker/record",
                operation_id: "recordExecutionOutcome",
                summary: "Report a call's outcome to the execution's own breaker (with its permit, or counted as a call just made).",
                durable: true,
                access: USE_BREAKER,
                request: Some("CallOutcome"),
                success: (200, Some("BreakerStatus")),
                errors: &[400, 401, 403, 404, 409, 413, 422, 503],
                query: &[],
            },
            handler: post(record),
        },
    ]
}

async fn status(
    State(state): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Json<BreakerStatus>, ApiError> {
    let record = visible(&state, &scope, &id).await?;
    let in_memory = state
        .shards
        .local(record.execution_id)
        .and_then(|shard| shard.tracker.breaker_status(record.execution_id).ok());
    let status = if let Some(status) = in_memory {
        status
    } else {
        // Finished and out of memory: what the stored record says about its breaker, with the
        // settings it ran under.
        let config = agentrack::BreakerConfig::from(
            record
                .timeout_config
                .as_deref()
                .unwrap_or(&state.shards.config().timeout_config),
        );
        BreakerStatus {
            name: record.execution_id.breaker_name(),
            state: record.circuit_breaker_state,
            failure_count: record.circuit_breaker_failures,
            failure_threshold: config.failure_threshold,
            // Trials are not stored; a finished execution makes none.
            success_count: 0,
            last_failure_time: record.last_failure_time,
            next_attempt_time: record.next_attempt_time,
            is_open: record.circuit_breaker_state == agentrack::BreakerState::Open,
            can_retry: false,
            recovery_timeout: config.recovery_timeout.as_secs_f64(),
        }
    };
    Ok(Json(status))
}

async fn reset(
    State(state): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
    body: JsonBody,
) -> Result<Json<BreakerStatus>, ApiError> {
    Fields::new(body, &[])?;
    let (id, tracker) = changeable(&state, &scope, &id).await?;
    let change = tracker.reset_breaker(id)?;
    state.durable(&change).await?;
    Ok(Json(tracker.breaker_status(id)?))
}

async fn acquire(
    State(state): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    Fields::new(body, &[])?;
    let (id, tracker) = changeable(&state, &scope, &id).await?;
    let room = state
        .permits
        .reserve(scope.tenant(), state.quotas.config.permits_per_tenant)
        .map_err(|held| state.quotas.refuse(Quota::Permits, held))?;
    let permit = tracker.begin_call(id)?;
    // A trial admission moved the breaker to half-open: durable before the caller hears of it.
    // (Should the store not confirm, the permit is dropped here, released uncounted.)
    if let Some(event) = permit.admission_event() {
        state.durable_up_to(state.shards.shard_of(id), event.global_seq).await?;
    }
    let breaker = tracker.breaker_status(id)?;
    let timeout = permit.timeout();
    let lifetime = timeout + state.shards.config().call_grace;
    let name = id.breaker_name();
    let permit = room.hold(permit, &name, lifetime);
    Ok(Json(json!({
        "permit": permit,
        "breaker": name,
        "state": breaker.state,
        "trial": breaker.state == agentrack::BreakerState::HalfOpen,
        "timeout_seconds": timeout.as_secs_f64(),
        "expires_in_seconds": lifetime.as_secs_f64(),
    })))
}

async fn record(
    State(state): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
    body: JsonBody,
) -> Result<Json<BreakerStatus>, ApiError> {
    let fields = Fields::new(body, &["outcome", "permit"])?;
    let OutcomeName(outcome) = fields.enumeration("outcome", "invalid_outcome", "outcome")?;
    let permit = fields.optional_string("permit")?;
    let (id, tracker) = match &permit {
        // A permit's call may outlive its execution: its outcome is still settled (and its slot
        // given back), so only whether the caller may see the execution is checked.
        Some(_) => {
            let record = visible(&state, &scope, &id).await?;
            let shard = serving(&state, record.execution_id)?;
            (record.execution_id, shard.tracker.clone())
        }
        None => changeable(&state, &scope, &id).await?,
    };
    let name = id.breaker_name();
    let event = match permit {
        Some(permit) => state
            .permits
            .settle(&permit, Some(scope.tenant()), &name, outcome)
            .map_err(|_| permit_not_found(&permit, &name))?,
        None => tracker.count_call_outcome(id, outcome)?.events.pop(),
    };
    if let Some(event) = event {
        state.durable_up_to(state.shards.shard_of(id), event.global_seq).await?;
    }
    Ok(Json(tracker.breaker_status(id)?))
}
