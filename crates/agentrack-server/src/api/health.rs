//! `/healthz` (the process answers) and `/readyz` (it can take writes).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use super::{Access, Route, RouteDoc};
use crate::app::AppState;

/// The routes of this resource.
pub fn routes() -> Vec<Route> {
    vec![
        Route {
            doc: RouteDoc {
                method: "GET",
                path: "/healthz",
                operation_id: "health",
                summary: "Liveness: the process answers.",
                durable: false,
                access: Access::Public,
                request: None,
                success: (200, Some("Health")),
                errors: &[],
                query: &[],
            },
            handler: get(health),
        },
        Route {
            doc: RouteDoc {
                method: "GET",
                path: "/readyz",
                operation_id: "ready",
                summary: "Readiness: the store accepts writes and the server is not shutting down.",
                durable: false,
                access: Access::Public,
                request: None,
                success: (200, Some("Readiness")),
                errors: &[503],
                query: &[],
            },
            handler: get(ready),
        },
    ]
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let store = state.pipeline.is_healthy();
    let stopping = state.shutdown.is_cancelled();
    let status = if store && !stopping {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if status == StatusCode::OK { "ready" } else { "unavailable" },
            "store": if store { "ok" } else { "failing" },
            "shutting_down": stopping,
            "committed_seq": state.hub.position(0),
            "cursor": state.hub.positions().encode(state.shards.count()),
            "shards_served": state.shards.local_ids().len(),
        })),
    )
}
