//! `/v1/breakers`: circuit breakers shared by name, for callers in other processes.
//!
//! A breaker is named by its caller (e.g. `openai:gpt-4o`) and belongs to the caller's tenant:
//! the tracker holds it as `TENANT/NAME`, so one tenant's failures never trip another's breaker.
//! A remote caller asks for a permit before its call and reports the outcome after it.

use agentrack::BreakerStatus;
use axum::Json;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::body::{Fields, JsonBody, OutcomeName};
use super::error::ApiError;
use super::{Access, Route, RouteDoc};
use crate::app::AppState;
use crate::auth::Scope;

/// The routes of this resource.
pub fn routes() -> Vec<Route> {
    vec![
        Route {
            doc: RouteDoc {
                method: "GET",
                path: "/v1/breakers",
                operation_id: "listBreakers",
                summary: "The named circuit breakers of the caller's tenant (all tenants for an admin).",
                access: Access::Write,
                request: None,
                success: (200, Some("BreakerList")),
                errors: &[401, 403],
                query: &[],
            },
            handler: get(list),
        },
        Route {
            doc: RouteDoc {
                method: "POST",
                path: "/v1/breakers/{name}/acquire",
                operation_id: "acquirePermit",
                summary: "Ask the named breaker for permission to make one call (503 with Retry-After while it is open).",
                access: Access::Write,
                request: None,
                success: (200, Some("PermitGrant")),
                errors: &[400, 401, 403, 413, 422, 503],
                query: &[],
            },
            handler: post(acquire),
        },
        Route {
            doc: RouteDoc {
                method: "POST",
                path: "/v1/breakers/{name}/record",
                operation_id: "recordOutcome",
                summary: "Report the outcome of the call made under a permit.",
                access: Access::Write,
                request: Some("PermitOutcome"),
                success: (200, Some("BreakerStatus")),
                errors: &[400, 401, 403, 404, 413, 422],
                query: &[],
            },
            handler: post(record),
        },
    ]
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > 200 || name.contains('/') || name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            "name",
            "a breaker name must be 1 to 200 characters, without '/' or control characters",
        ));
    }
    Ok(())
}

/// A status as the API shows it: the tenant prefix split off the name.
fn public(mut status: BreakerStatus) -> Value {
    let (tenant, name) = status
        .name
        .split_once('/')
        .map(|(t, n)| (t.to_owned(), n.to_owned()))
        .unwrap_or_default();
    status.name = name;
    let mut value = serde_json::to_value(status).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("tenant".into(), Value::String(tenant));
    }
    value
}

async fn list(State(state): State<AppState>, scope: Scope) -> Result<Json<Value>, ApiError> {
    scope.require_writer("list breakers")?;
    let breakers: Vec<Value> = state
        .tracker
        .breakers()
        .into_iter()
        .filter(|status| scope.sees_breaker(&status.name))
        .map(public)
        .collect();
    Ok(Json(json!({ "breakers": breakers })))
}

async fn acquire(
    State(state): State<AppState>,
    scope: Scope,
    Path(name): Path<String>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    scope.require_writer("use breakers")?;
    Fields::new(body, &[])?;
    check_name(&name)?;
    let breaker = state.tracker.breaker(&scope.breaker_key(&name));
    let permit = breaker.acquire()?;
    // A trial admission moved the breaker to half-open: durable before the caller hears of it.
    // (Should the store not confirm, the permit is dropped here, released uncounted.)
    if let Some(event) = permit.admission_event() {
        state.durable_up_to(event.global_seq).await?;
    }
    let config = state.tracker.config();
    let lifetime = config.timeout_config.llm_api_timeout + config.call_grace;
    let id = state.permits.hold(permit, scope.tenant(), &name, lifetime);
    Ok(Json(json!({
        "permit": id,
        "breaker": name,
        "state": breaker.status().state,
        "expires_in_seconds": lifetime.as_secs_f64(),
    })))
}

async fn record(
    State(state): State<AppState>,
    scope: Scope,
    Path(name): Path<String>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    scope.require_writer("use breakers")?;
    let fields = Fields::new(body, &["permit", "outcome"])?;
    let permit = fields.string("permit")?;
    let OutcomeName(outcome) = fields.enumeration("outcome", "invalid_outcome", "outcome")?;
    check_name(&name)?;
    let change = state
        .permits
        .settle(&permit, Some(scope.tenant()), &name, outcome)
        .map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "permit_not_found",
                format!("permit {permit} is unknown, expired, already recorded, or not for breaker {name}"),
            )
        })?;
    // The outcome opened or closed the breaker: answer once that change is durable.
    if let Some(event) = change {
        state.durable_up_to(event.global_seq).await?;
    }
    let status = state.tracker.breaker(&scope.breaker_key(&name)).status();
    Ok(Json(public(status)))
}
