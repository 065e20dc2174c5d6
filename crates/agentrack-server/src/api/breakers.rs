//! `/v1/breakers`: circuit breakers shared by name, for callers in other processes.
//!
//! A breaker is named by its caller (e.g. `openai:gpt-4o`) and belongs to the caller's tenant:
//! the tracker holds it as `TENANT/NAME`, so one tenant's failures never trip another's breaker.
//! A remote caller asks for a permit before its call and reports the outcome after it.

use std::sync::Arc;

use agentrack::BreakerStatus;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};

use super::body::{Fields, JsonBody, OutcomeName};
use super::error::ApiError;
use super::{Access, Route, RouteDoc};
use crate::app::AppState;
use crate::auth::Scope;
use crate::cluster::{LocalShard, gather};
use crate::names::NameKind;
use crate::quotas::Quota;

/// Who may list the named breakers (and see them on the overview).
pub const LIST_BREAKERS: Access = Access::Write("list breakers");

/// Asking for a permit and reporting its outcome.
const USE_BREAKERS: Access = Access::Write("use breakers");

/// The routes of this resource.
pub fn routes() -> Vec<Route> {
    vec![
        Route {
            doc: RouteDoc {
                method: "GET",
                path: "/v1/breakers",
                operation_id: "listBreakers",
                summary: "The named circuit breakers of the caller's tenant (all tenants for an admin).",
                durable: false,
                access: LIST_BREAKERS,
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
                durable: true,
                access: USE_BREAKERS,
                request: None,
                success: (200, Some("PermitGrant")),
                errors: &[400, 401, 403, 413, 422, 429, 503],
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
                durable: true,
                access: USE_BREAKERS,
                request: Some("PermitOutcome"),
                success: (200, Some("NamedBreaker")),
                errors: &[400, 401, 403, 404, 413, 422, 503],
                query: &[],
            },
            handler: post(record),
        },
    ]
}

/// A breaker's name from its path, under the names' rule (no `/`: the tenant is its key's
/// first part).
fn check_name(name: &str) -> Result<(), ApiError> {
    super::body::check_name("name", NameKind::Breaker, name)
}

/// A named breaker as the API shows it: its tenant beside its name rather than in it.
#[derive(Debug, Clone, Serialize)]
pub struct NamedBreaker {
    /// The tenant it belongs to.
    pub tenant: String,
    /// Its status, named as its callers name it.
    #[serde(flatten)]
    pub status: BreakerStatus,
}

/// The status of the breaker the tracker holds as `TENANT/NAME`, as the API shows it (by
/// `/v1/breakers` and `/v1/overview`).
pub fn public(mut status: BreakerStatus) -> NamedBreaker {
    // The last '/' separates: names have none, while a tenant stored before the names' rule may.
    let (tenant, name) = status
        .name
        .rsplit_once('/')
        .map(|(t, n)| (t.to_owned(), n.to_owned()))
        .unwrap_or_default();
    status.name = name;
    NamedBreaker { tenant, status }
}

/// The shard serving the caller's breaker `name` here: one breaker per name in the whole
/// cluster, held by the shard its name falls in (the forwarding layer sends requests about the
/// others to their owners); 503 while nobody serves it.
pub(crate) fn serving_breaker(state: &AppState, scope: &Scope, name: &str) -> Result<Arc<LocalShard>, ApiError> {
    let shard = state.shards.shard_of_breaker(&scope.breaker_key(name));
    state
        .shards
        .local_shard(shard)
        .ok_or_else(|| ApiError::shard_unavailable(shard))
}

/// The named breakers `scope` may see, as the API shows them.
pub fn visible(state: &AppState, scope: &Scope) -> Vec<NamedBreaker> {
    state
        .shards
        .trackers()
        .iter()
        .flat_map(agentrack::Tracker::breakers)
        .filter(|status| scope.sees_breaker(&status.name))
        .map(public)
        .collect()
}

async fn list(State(state): State<AppState>, scope: Scope, headers: HeaderMap) -> Json<Value> {
    let mut answer = json!({ "breakers": visible(&state, &scope) });
    if let Some(gathered) = gather::from_peers(&state, &scope, &headers, "/v1/breakers").await {
        super::cluster_wide::breakers(&mut answer, &gathered);
    }
    Json(answer)
}

async fn acquire(
    State(state): State<AppState>,
    scope: Scope,
    Path(name): Path<String>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    Fields::new(body, &[])?;
    check_name(&name)?;
    let shard = serving_breaker(&state, &scope, &name)?;
    let key = scope.breaker_key(&name);
    let tenant = scope.tenant();
    let limit = state.quotas.config.permits_per_tenant;
    let room = state
        .permits
        .reserve(tenant, limit)
        .map_err(|held| state.quotas.refuse(Quota::Permits, held))?;
    state.quotas.use_breaker(&state.shards.locals(), &shard, tenant, &key)?;
    let breaker = shard.tracker.breaker(&key);
    let permit = breaker.acquire()?;
    // A trial admission moved the breaker to half-open: durable before the caller hears of it.
    // (Should the store not confirm, the permit is dropped here, released uncounted.)
    if let Some(event) = permit.admission_event() {
        state.durable_up_to(shard.id, event.global_seq).await?;
    }
    let config = state.shards.config();
    let lifetime = config.timeout_config.llm_api_timeout + config.call_grace;
    let id = room.hold(permit, &name, lifetime);
    Ok(Json(json!({
        "permit": id,
        "breaker": name,
        "state": breaker.status().state,
        "expires_in_seconds": lifetime.as_secs_f64(),
    })))
}

/// The refusal of a permit that cannot be settled.
pub(crate) fn permit_not_found(permit: &str, breaker: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "permit_not_found",
        format!("permit {permit} is unknown, expired, already recorded, or not for breaker {breaker}"),
    )
}

/// `POST /v1/breakers/{name}/record`'s body: the permit and how its call went.
pub(crate) fn permit_outcome(body: JsonBody) -> Result<(String, agentrack::Outcome), ApiError> {
    let fields = Fields::new(body, &["permit", "outcome"])?;
    let permit = fields.string("permit")?;
    let OutcomeName(outcome) = fields.enumeration("outcome", "invalid_outcome", "outcome")?;
    Ok((permit, outcome))
}

async fn record(
    State(state): State<AppState>,
    scope: Scope,
    Path(name): Path<String>,
    body: JsonBody,
) -> Result<Json<NamedBreaker>, ApiError> {
    let (permit, outcome) = permit_outcome(body)?;
    check_name(&name)?;
    let shard = serving_breaker(&state, &scope, &name)?;
    let change = state
        .permits
        .settle(&permit, Some(scope.tenant()), &name, outcome)
        .map_err(|_| permit_not_found(&permit, &name))?;
    // The outcome opened or closed the breaker: answer once that change is durable.
    if let Some(event) = change {
        state.durable_up_to(shard.id, event.global_seq).await?;
    }
    let key = scope.breaker_key(&name);
    shard
        .named_breakers
        .touch(scope.tenant(), &key, std::time::Instant::now());
    let status = shard.tracker.breaker(&key).status();
    Ok(Json(public(status)))
}
