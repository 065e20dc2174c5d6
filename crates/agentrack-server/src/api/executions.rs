//! `/v1/executions`: create, drive, read and list executions.

use std::collections::BTreeMap;

use std::sync::Arc;

use agentrack::{ExecutionId, ExecutionRecord, ExecutionState, NewExecution, Phase, StateUpdate, Tracker};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::body::{self, Fields, JsonBody};
use super::error::ApiError;
use super::{Access, Route, RouteDoc, heartbeats};
use crate::app::AppState;
use crate::auth::Scope;
use crate::cluster::LocalShard;
use crate::names::NameKind;
use crate::store::ListQuery;

/// Setting an execution's state or phase.
const CHANGE_EXECUTIONS: Access = Access::Write("change executions");

const ID_ERRORS: &[u16] = &[400, 401, 403, 404, 409, 413, 422, 503];

/// The routes of this resource.
pub fn routes() -> Vec<Route> {
    [record_routes(), change_routes(), settings_routes()]
        .into_iter()
        .flatten()
        .collect()
}

/// Creating, listing and reading executions.
fn record_routes() -> Vec<Route> {
    vec![
        Route {
            doc: RouteDoc {
                method: "POST",
                path: "/v1/executions",
                operation_id: "createExecution",
                summary: "Create an execution in the caller's tenant (state pending, phase created).",
                durable: true,
                access: Access::Write("create executions"),
                request: Some("NewExecution"),
                success: (201, Some("ExecutionRecord")),
                errors: &[400, 401, 403, 413, 422, 429, 503],
                query: &[],
            },
            handler: post(create),
        },
        Route {
            doc: RouteDoc {
                method: "GET",
                path: "/v1/executions",
                operation_id: "listExecutions",
                summary: "List the executions in the caller's scope, newest first, a page at a time.",
                durable: false,
                access: Access::Read,
                request: None,
                success: (200, Some("ExecutionPage")),
                errors: &[400, 401, 422],
                query: LIST_PARAMETERS,
            },
            handler: get(list),
        },
        Route {
            doc: RouteDoc {
                method: "GET",
                path: "/v1/executions/{id}",
                operation_id: "getExecution",
                summary: "One execution, with its phase history.",
                durable: false,
                access: Access::Read,
                request: None,
                success: (200, Some("ExecutionRecord")),
                errors: &[401, 404],
                query: &[],
            },
            handler: get(read),
        },
    ]
}

/// Moving an execution along: start, heartbeats, state and phase.
fn change_routes() -> Vec<Route> {
    vec![
        Route {
            doc: RouteDoc {
                method: "POST",
                path: "/v1/executions/{id}/start",
                operation_id: "startExecution",
                summary: "Move a pending execution to starting.",
                durable: true,
                access: Access::Write("start executions"),
                request: None,
                success: (200, Some("ExecutionRecord")),
                errors: ID_ERRORS,
                query: &[],
            },
            handler: post(start),
        },
        Route {
            doc: RouteDoc {
                method: "POST",
                path: "/v1/executions/{id}/heartbeat",
                operation_id: "heartbeat",
                summary: "Record a sign of life (starting becomes running); answers with a small acknowledgement.",
                durable: false,
                access: heartbeats::SEND_HEARTBEATS,
                request: None,
                success: (200, Some("HeartbeatAck")),
                errors: ID_ERRORS,
                query: &[],
            },
            handler: post(heartbeats::single),
        },
        Route {
            doc: RouteDoc {
                method: "POST",
                path: "/v1/heartbeats",
                operation_id: "heartbeats",
                summary: "Heartbeats for many executions at once; each id succeeds or fails on its own.",
                durable: false,
                access: heartbeats::SEND_HEARTBEATS,
                request: Some("HeartbeatBatch"),
                success: (200, Some("HeartbeatBatchReport")),
                errors: &[400, 401, 403, 413, 422, 503],
                query: &[],
            },
            handler: post(heartbeats::batch),
        },
        Route {
            doc: RouteDoc {
                method: "POST",
                path: "/v1/executions/{id}/state",
                operation_id: "setState",
                summary: "Set the lifecycle state, with an optional error and result.",
                durable: true,
                access: CHANGE_EXECUTIONS,
                request: Some("StateChange"),
                success: (200, Some("ExecutionRecord")),
                errors: ID_ERRORS,
                query: &[],
            },
            handler: post(set_state),
        },
        Route {
            doc: RouteDoc {
                method: "POST",
                path: "/v1/executions/{id}/phase",
                operation_id: "transition",
                summary: "Move to another phase; returns the record and the transition.",
                durable: true,
                access: CHANGE_EXECUTIONS,
                request: Some("PhaseChange"),
                success: (200, Some("ExecutionWithTransition")),
                errors: ID_ERRORS,
                query: &[],
            },
            handler: post(transition),
        },
    ]
}

/// Changing what an execution carries besides its lifecycle: counts, metadata, timeouts.
fn settings_routes() -> Vec<Route> {
    vec![
        Route {
            doc: RouteDoc {
                method: "POST",
                path: "/v1/executions/{id}/agent-state",
                operation_id: "setAgentState",
                summary: "Set the warning and error counts and merge metadata (the original's set_agent_state).",
                durable: true,
                access: CHANGE_EXECUTIONS,
                request: Some("AgentStateChange"),
                success: (200, Some("ExecutionRecord")),
                errors: ID_ERRORS,
                query: &[],
            },
            handler: post(set_agent_state),
        },
        Route {
            doc: RouteDoc {
                method: "POST",
                path: "/v1/executions/{id}/timeout-config",
                operation_id: "setTimeoutConfig",
                summary: "Change the execution's timeouts and breaker thresholds (the original's set_timeout); each field given replaces its current value.",
                durable: true,
                access: CHANGE_EXECUTIONS,
                request: Some("TimeoutConfigChange"),
                success: (200, Some("ExecutionRecord")),
                errors: ID_ERRORS,
                query: &[],
            },
            handler: post(set_timeout_config),
        },
    ]
}

pub(super) fn parse_id(text: &str) -> Result<ExecutionId, ApiError> {
    text.parse().map_err(|_| ApiError::unknown_id(text))
}

/// The execution `text` names, if the caller may see it (404 otherwise), from memory or, for
/// records that finished and left memory, from the store; and whether it is in memory.
async fn locate(state: &AppState, scope: &Scope, text: &str) -> Result<(ExecutionRecord, bool), ApiError> {
    let id = parse_id(text)?;
    if let Some(record) = state.shards.get(id) {
        return Ok((scope.visible(record)?, true));
    }
    let stored = state.store.get(id).await.map_err(ApiError::store)?;
    let record = stored.ok_or_else(|| ApiError::not_found(id))?;
    Ok((scope.visible(record)?, false))
}

/// The shard serving execution `id` here (the forwarding layer sends requests about the others
/// to their owners); 503 while nobody serves it.
pub(crate) fn serving(state: &AppState, id: ExecutionId) -> Result<Arc<LocalShard>, ApiError> {
    state
        .shards
        .local(id)
        .ok_or_else(|| ApiError::shard_unavailable(state.shards.shard_of(id)))
}

/// The execution `text` names, if the caller may see it.
pub(super) async fn visible(state: &AppState, scope: &Scope, text: &str) -> Result<ExecutionRecord, ApiError> {
    Ok(locate(state, scope, text).await?.0)
}

/// The execution to change, with the tracker of its shard: visible, and still in memory (a
/// finished one that left memory is terminal: 409).
pub(crate) async fn changeable(
    state: &AppState,
    scope: &Scope,
    text: &str,
) -> Result<(ExecutionId, Tracker), ApiError> {
    let id = parse_id(text)?;
    let shard = serving(state, id)?;
    // In memory, the owner alone decides (no record copy on the write path).
    if let Ok(owner) = shard.tracker.owner(id) {
        return if scope.sees_owner(&owner.tenant, &owner.user_id) {
            Ok((id, shard.tracker.clone()))
        } else {
            Err(ApiError::not_found(id))
        };
    }
    match locate(state, scope, text).await? {
        (record, true) => Ok((record.execution_id, shard.tracker.clone())),
        (record, false) => Err(ApiError::terminal(record.execution_id, record.state)),
    }
}

/// The current record after a change (the store's copy if it left memory meanwhile).
pub(super) async fn current(state: &AppState, id: ExecutionId) -> Result<ExecutionRecord, ApiError> {
    match state.shards.get(id) {
        Some(record) => Ok(record),
        None => state
            .store
            .get(id)
            .await
            .map_err(ApiError::store)?
            .ok_or_else(|| ApiError::not_found(id)),
    }
}

async fn create(
    State(state): State<AppState>,
    scope: Scope,
    body: JsonBody,
) -> Result<(StatusCode, Json<ExecutionRecord>), ApiError> {
    let (new, tenant) = new_execution(body, &state.shards.config().timeout_config)?;
    metadata_within(&state, Some(&new.metadata))?;
    let tenant = scope.owning_tenant(tenant)?;
    let creating = state.quotas.admit_execution(&tenant, &new.user_id)?;
    let new = new.tenant(tenant);
    let change = match state.shards.create(new) {
        Some(created) => created?.1,
        None => return Err(ApiError::no_shard_here()),
    };
    state.durable(&change).await?;
    // Durable, so counted as alive: no longer a creation under way.
    drop(creating);
    Ok((StatusCode::CREATED, Json(current(&state, change.id()).await?)))
}

/// `POST /v1/executions`' body: the new execution, and the tenant it names (whether the caller
/// may name it is the caller's scope's business). `defaults` fill the fields a `timeout_config`
/// leaves out.
pub(crate) fn new_execution(
    body: JsonBody,
    defaults: &agentrack::TimeoutConfig,
) -> Result<(NewExecution, Option<String>), ApiError> {
    let fields = Fields::new(
        body,
        &[
            "agent_name",
            "thread_id",
            "user_id",
            "timeout_seconds",
            "metadata",
            "tenant",
            "heartbeat_timeout_seconds",
            "timeout_config",
        ],
    )?;
    let agent_name = fields.name("agent_name", NameKind::Agent)?;
    let thread_id = fields.name("thread_id", NameKind::Thread)?;
    let user_id = fields.name("user_id", NameKind::User)?;
    let timeout = fields.optional_seconds("timeout_seconds")?;
    let metadata = fields.optional_object("metadata")?;
    let heartbeat_timeout = fields.optional_seconds("heartbeat_timeout_seconds")?;
    let timeout_config = fields
        .optional_object("timeout_config")?
        .map(|given| timeout_config(JsonBody(given), defaults))
        .transpose()?;
    let tenant = fields.optional_name("tenant", NameKind::Tenant)?;
    let mut new = NewExecution::new(agent_name, thread_id, user_id);
    new.timeout = timeout;
    new.metadata = metadata.unwrap_or_default();
    new.heartbeat_timeout = heartbeat_timeout;
    new.timeout_config = timeout_config;
    Ok((new, tenant))
}

/// The fields of a per-execution `TimeoutConfig`.
const TIMEOUT_CONFIG_FIELDS: &[&str] = &[
    "agent_execution_timeout",
    "llm_api_timeout",
    "failure_threshold",
    "recovery_timeout",
    "success_threshold",
    "max_retries",
    "retry_base_delay",
    "retry_max_delay",
    "retry_exponential_base",
];

/// A `timeout_config` (a creation's, or a change's): each field given replaces its value in
/// `defaults`. Durations are seconds (greater than 0, at most a year), thresholds whole numbers
/// of at least 1.
fn timeout_config(given: JsonBody, defaults: &agentrack::TimeoutConfig) -> Result<agentrack::TimeoutConfig, ApiError> {
    let fields = Fields::new(given, TIMEOUT_CONFIG_FIELDS)?;
    let mut config = *defaults;
    let seconds = |name: &str, target: &mut std::time::Duration| -> Result<(), ApiError> {
        if let Some(value) = fields.optional_seconds(name)? {
            *target = value;
        }
        Ok(())
    };
    seconds("agent_execution_timeout", &mut config.agent_execution_timeout)?;
    seconds("llm_api_timeout", &mut config.llm_api_timeout)?;
    seconds("recovery_timeout", &mut config.recovery_timeout)?;
    seconds("retry_base_delay", &mut config.retry_base_delay)?;
    seconds("retry_max_delay", &mut config.retry_max_delay)?;
    let count = |name: &str, least: u32, target: &mut u32| -> Result<(), ApiError> {
        if let Some(value) = fields.optional_count(name, least)? {
            *target = value;
        }
        Ok(())
    };
    count("failure_threshold", 1, &mut config.failure_threshold)?;
    count("success_threshold", 1, &mut config.success_threshold)?;
    count("max_retries", 0, &mut config.max_retries)?;
    if let Some(value) = fields.value("retry_exponential_base")? {
        config.retry_exponential_base = value.as_f64().filter(|b| b.is_finite() && *b >= 1.0).ok_or_else(|| {
            ApiError::invalid_field(
                "retry_exponential_base",
                format!("timeout_config.retry_exponential_base must be a number of at least 1, not {value}"),
            )
        })?;
    }
    Ok(config)
}

/// `metadata`, unless it is over `records.max_metadata_bytes`.
fn metadata_within<T: serde::Serialize>(state: &AppState, metadata: Option<T>) -> Result<Option<T>, ApiError> {
    let limit = state.settings.records.max_metadata_bytes;
    body::within("metadata", metadata, limit, "records.max_metadata_bytes")
}

async fn read(
    State(state): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Json<ExecutionRecord>, ApiError> {
    Ok(Json(visible(&state, &scope, &id).await?))
}

async fn start(
    State(state): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
    body: JsonBody,
) -> Result<Json<ExecutionRecord>, ApiError> {
    Fields::new(body, &[])?;
    let (id, tracker) = changeable(&state, &scope, &id).await?;
    let change = tracker.start(id)?;
    state.durable(&change).await?;
    Ok(Json(current(&state, id).await?))
}

async fn set_state(
    State(state): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
    body: JsonBody,
) -> Result<Json<ExecutionRecord>, ApiError> {
    let (new_state, mut update, metadata) = state_change(body)?;
    let metadata = metadata_within(&state, metadata)?;
    update.result = body::within(
        "result",
        update.result.take(),
        state.settings.records.max_result_bytes,
        "records.max_result_bytes",
    )?;
    let (id, tracker) = changeable(&state, &scope, &id).await?;
    // Merged first, so that the state change's events carry it (a completion's execution time,
    // a failure's context).
    if let Some(metadata) = metadata {
        let update = agentrack::AgentStateUpdate {
            metadata: Some(metadata),
            ..agentrack::AgentStateUpdate::default()
        };
        let change = tracker.update_agent_state(id, update)?;
        state.durable(&change).await?;
    }
    let change = tracker.set_state(id, new_state, update)?;
    state.durable(&change).await?;
    Ok(Json(current(&state, id).await?))
}

/// A state change as its body gives it: the new state, its error and result, and metadata to
/// merge first.
pub(crate) type StateChange = (ExecutionState, StateUpdate, Option<Map<String, Value>>);

/// `POST /v1/executions/{id}/state`'s body.
pub(crate) fn state_change(body: JsonBody) -> Result<StateChange, ApiError> {
    let fields = Fields::new(body, &["state", "error", "result", "metadata"])?;
    let new_state: ExecutionState = fields.enumeration("state", "invalid_state", "execution state")?;
    let update = StateUpdate {
        error: fields.optional_text("error", MAX_ERROR_CHARS)?,
        result: fields.value("result")?,
    };
    Ok((new_state, update, fields.optional_object("metadata")?))
}

/// `POST /v1/executions/{id}/phase`'s body.
pub(crate) fn phase_change(body: JsonBody) -> Result<(Phase, Option<Map<String, Value>>), ApiError> {
    let fields = Fields::new(body, &["phase", "metadata"])?;
    let phase: Phase = fields.enumeration("phase", "invalid_phase", "phase")?;
    Ok((phase, fields.optional_object("metadata")?))
}

async fn set_agent_state(
    State(state): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
    body: JsonBody,
) -> Result<Json<ExecutionRecord>, ApiError> {
    let fields = Fields::new(body, &["warning_count", "error_count", "metadata"])?;
    let update = agentrack::AgentStateUpdate {
        warning_count: fields.optional_count("warning_count", 0)?,
        error_count: fields.optional_count("error_count", 0)?,
        metadata: metadata_within(&state, fields.optional_object("metadata")?)?,
    };
    let (id, tracker) = changeable(&state, &scope, &id).await?;
    let change = tracker.update_agent_state(id, update)?;
    state.durable(&change).await?;
    Ok(Json(current(&state, id).await?))
}

async fn transition(
    State(state): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    let (phase, metadata) = phase_change(body)?;
    let metadata = metadata_within(&state, metadata)?;
    let (id, tracker) = changeable(&state, &scope, &id).await?;
    let change = tracker.transition(id, phase, metadata)?;
    state.durable(&change).await?;
    let transition = change.transition().cloned();
    let mut body = serde_json::to_value(current(&state, id).await?).map_err(|e| ApiError::internal(e.to_string()))?;
    if let Value::Object(map) = &mut body {
        map.insert("transition".into(), json!(transition));
    }
    Ok(Json(body))
}

async fn set_timeout_config(
    State(state): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
    body: JsonBody,
) -> Result<Json<ExecutionRecord>, ApiError> {
    let (id, tracker) = changeable(&state, &scope, &id).await?;
    let current_config = tracker
        .get(id)?
        .timeout_config
        .map_or(state.shards.config().timeout_config, |config| *config);
    let config = timeout_config(body, &current_config)?;
    let change = tracker.set_timeout_config(id, config)?;
    state.durable(&change).await?;
    Ok(Json(current(&state, id).await?))
}

/// The longest `error` text a state change takes, in characters.
pub(super) const MAX_ERROR_CHARS: usize = 64 * 1024;

/// The page size when none is asked for.
const DEFAULT_LIMIT: usize = 50;
/// The largest page.
pub(super) const MAX_LIMIT: usize = 1000;

/// `GET /v1/executions`' query parameters, for its documentation and its error messages.
const LIST_PARAMETERS: &[(&str, &str)] = &[
    ("user_id", "Only this user's executions."),
    ("thread_id", "Only this thread's executions."),
    ("agent_name", "Only this agent's executions."),
    ("state", "Only these states (comma-separated)."),
    ("active", "true: only alive executions; false: only finished ones."),
    ("limit", "Page size, 1 to 1000 (default 50)."),
    ("cursor", "The next_cursor of the previous page."),
];

/// `GET /v1/executions`' query parameters as given: text, so that each is checked with an error
/// naming it and what would be valid (as request bodies are, see [`super::body`]).
#[derive(Debug, Default, Deserialize)]
struct ListParameters {
    user_id: Option<String>,
    thread_id: Option<String>,
    agent_name: Option<String>,
    state: Option<String>,
    active: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    /// Anything else, refused by name.
    #[serde(flatten)]
    unknown: BTreeMap<String, String>,
}

fn parse_list_query(parameters: ListParameters) -> Result<ListQuery, ApiError> {
    let ListParameters {
        user_id,
        thread_id,
        agent_name,
        state,
        active,
        limit,
        cursor,
        unknown,
    } = parameters;
    if let Some(name) = unknown.keys().next() {
        return Err(ApiError::unknown_parameter(name, LIST_PARAMETERS));
    }
    let given = |value: Option<String>| value.filter(|v| !v.is_empty());
    let mut query = ListQuery {
        user_id: given(user_id),
        thread_id: given(thread_id),
        agent_name: given(agent_name),
        limit: DEFAULT_LIMIT,
        ..ListQuery::default()
    };
    if let Some(states) = state {
        let states = states
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<ExecutionState>()
                    .map_err(|e| ApiError::invalid_enum("invalid_state", "state", &e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !states.is_empty() {
            query.states = Some(states);
        }
    }
    if let Some(limit) = limit {
        let limit: usize = limit
            .parse()
            .map_err(|_| ApiError::invalid_query("limit", format!("expected a whole number, not {limit:?}")))?;
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid_field(
                "limit",
                format!("limit must be between 1 and {MAX_LIMIT}, not {limit}"),
            ));
        }
        query.limit = limit;
    }
    if let Some(cursor) = cursor {
        query.before = Some(
            cursor
                .parse()
                .map_err(|_| ApiError::invalid_query("cursor", "not a cursor returned by this API"))?,
        );
    }
    if let Some(active) = active {
        let wanted = match active.as_str() {
            "true" | "1" => ExecutionState::ALIVE,
            "false" | "0" => ExecutionState::TERMINAL,
            other => {
                return Err(ApiError::invalid_query(
                    "active",
                    format!("expected true or false, not {other:?}"),
                ));
            }
        };
        query.states = Some(match query.states.take() {
            Some(states) => states.into_iter().filter(|s| wanted.contains(s)).collect(),
            None => wanted.to_vec(),
        });
    }
    Ok(query)
}

async fn list(
    State(state): State<AppState>,
    scope: Scope,
    parameters: Result<Query<ListParameters>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(parameters) = parameters.map_err(ApiError::unreadable_query)?;
    let query = parse_list_query(parameters)?;
    let Some(query) = scope.narrow(query) else {
        return Ok(Json(json!({ "executions": [], "next_cursor": null })));
    };
    if query.states.as_ref().is_some_and(Vec::is_empty) {
        return Ok(Json(json!({ "executions": [], "next_cursor": null })));
    }
    let page = state.store.list(query).await.map_err(ApiError::store)?;
    // The stored rows are current for everything but coalesced heartbeats: prefer memory.
    let records: Vec<ExecutionRecord> = page
        .records
        .into_iter()
        .map(|stored| state.shards.get(stored.execution_id).unwrap_or(stored))
        .collect();
    Ok(Json(json!({
        "executions": records,
        "next_cursor": page.next_cursor.map(|id| id.to_string()),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> Result<ListQuery, ApiError> {
        let uri: axum::http::Uri = format!("/v1/executions?{query}").parse().unwrap();
        let Query(parameters) = Query::<ListParameters>::try_from_uri(&uri).map_err(ApiError::unreadable_query)?;
        parse_list_query(parameters)
    }

    #[test]
    fn list_parameters_are_decoded_and_checked_by_name() {
        let query = parse("thread_id=t+1&agent_name=a%2Fb&user_id=&state=failed,cancelled&limit=7").unwrap();
        assert_eq!(query.thread_id.as_deref(), Some("t 1"));
        assert_eq!(query.agent_name.as_deref(), Some("a/b"));
        assert_eq!(query.user_id, None, "an empty value filters nothing");
        assert_eq!(
            query.states,
            Some(vec![ExecutionState::Failed, ExecutionState::Cancelled])
        );
        assert_eq!(query.limit, 7);
        assert_eq!(parse("").unwrap().limit, DEFAULT_LIMIT);
        let alive = parse("active=true&state=running,failed").unwrap();
        assert_eq!(alive.states, Some(vec![ExecutionState::Running]));

        let unknown = parse("limit=5&colour=red").unwrap_err().body();
        assert_eq!(unknown["error"]["code"], "invalid_query");
        assert_eq!(unknown["error"]["parameter"], "colour");
        assert_eq!(
            unknown["error"]["message"],
            "query parameter colour: unknown parameter; valid: user_id, thread_id, agent_name, state, active, limit, cursor"
        );
        let twice = parse("limit=5&limit=6").unwrap_err();
        assert_eq!((twice.status().as_u16(), twice.code()), (400, "invalid_query"));
        assert!(
            twice.body()["error"]["message"].as_str().unwrap().contains("limit"),
            "{}",
            twice.body()
        );
        assert_eq!(parse("limit=abc").unwrap_err().code(), "invalid_query");
        assert_eq!(parse("active=maybe").unwrap_err().code(), "invalid_query");
        assert_eq!(parse("state=finished").unwrap_err().code(), "invalid_state");
    }
}
