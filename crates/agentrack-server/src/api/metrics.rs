//! `/v1/metrics` (JSON, scoped to the caller) and `/metrics` (Prometheus text, server-wide).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::cluster_wide;
use super::error::ApiError;
use super::overview::share;
use super::{Access, Route, RouteDoc};
use crate::app::AppState;
use crate::auth::Scope;
use crate::cluster::gather;
use crate::metrics::{phase_stats, samples_of};

/// The routes of this resource.
pub fn routes() -> Vec<Route> {
    vec![
        Route {
            doc: RouteDoc {
                method: "GET",
                path: "/v1/metrics",
                operation_id: "getMetrics",
                summary: "Execution counts and rates, and per-phase duration percentiles, for the caller's scope.",
                durable: false,
                access: Access::Read,
                request: None,
                success: (200, Some("Metrics")),
                errors: &[401],
                query: &[],
            },
            handler: get(scoped),
        },
        Route {
            doc: RouteDoc {
                method: "GET",
                path: "/metrics",
                operation_id: "prometheus",
                summary: "This node's metrics in the Prometheus text format (in a cluster, every sample is labelled with `node`: scrape every node and sum without it).",
                durable: false,
                access: Access::Metrics("read server metrics"),
                request: None,
                success: (200, None),
                errors: &[401, 403],
                query: &[],
            },
            handler: get(prometheus),
        },
    ]
}

async fn scoped(State(state): State<AppState>, scope: Scope, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let grant = scope.grant();
    let (tenant, user) = scope.counted();
    let counts = state.metrics.counts(tenant, user);
    let samples = match user {
        // One user's phase durations come from their own records, not the tenant's samples.
        Some(user) => {
            let records: Vec<_> = state
                .shards
                .by_user(user)
                .into_iter()
                .filter(|record| scope.sees(record))
                .collect();
            samples_of(&records)
        }
        None => state.metrics.phase_samples(tenant),
    };
    let rate = |n: u64| share(n, counts.total);
    let mut answer = json!({
        "total_executions": counts.total,
        "active_executions": counts.active,
        "successful_executions": counts.completed,
        "failed_executions": counts.failed,
        "timeout_executions": counts.timeout,
        "dead_executions": counts.dead,
        "cancelled_executions": counts.cancelled,
        "success_rate": rate(counts.completed),
        "failure_rate": rate(counts.failed + counts.timeout + counts.dead),
        "phase_durations_ms": phase_stats(samples.clone()),
        "scope": {
            "role": grant.role,
            "tenant": tenant,
            "user_id": grant.user_id,
        },
    });
    if gather::is_part_request(&headers) {
        cluster_wide::add_samples(&mut answer, &samples);
    } else if let Some(gathered) = gather::from_peers(&state, &scope, &headers, "/v1/metrics").await {
        cluster_wide::metrics(&mut answer, samples, &gathered);
    }
    Ok(Json(answer))
}

async fn prometheus(State(state): State<AppState>) -> Response {
    let node = state.cluster.as_ref().map(|cluster| cluster.member.node_id.as_str());
    let mut text = state
        .metrics
        .render(&state.shards.locals(), &state.pipeline, state.started.elapsed(), node);
    text += &state
        .tokens
        .prometheus(&node.map_or_else(String::new, |node| format!("{{node=\"{node}\"}}")));
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}
