//! `GET /v1/events`: the live event stream over a WebSocket (see [`crate::ws`]).

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;

use super::error::ApiError;
use super::{Access, Route, RouteDoc};
use crate::app::AppState;
use crate::auth::{Scope, url_pairs};
use crate::ws::{Protocol, Subscription};

/// The routes of this resource.
pub fn routes() -> Vec<Route> {
    vec![Route {
        doc: RouteDoc {
            method: "GET",
            path: "/v1/events",
            operation_id: "events",
            summary: "WebSocket stream of the events in the caller's scope; `since` replays stored events first.",
            access: Access::Read,
            request: None,
            success: (101, Some("EventStream")),
            errors: &[400, 401, 404, 422],
            query: &[
                ("thread_id", "Only this thread's executions."),
                ("execution_id", "Only this execution."),
                (
                    "since",
                    "Replay stored events after this global sequence number, then go live.",
                ),
                ("protocol", "agentrack (default) or agui."),
                (
                    "snapshot",
                    "true: start with the current state of the matching executions.",
                ),
            ],
        },
        handler: get(subscribe),
    }]
}

async fn subscribe(
    State(state): State<AppState>,
    scope: Scope,
    RawQuery(raw): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let mut subscription = Subscription {
        scope,
        thread_id: None,
        execution_id: None,
        since: None,
        protocol: Protocol::Agentrack,
        snapshot: false,
    };
    for (key, value) in url_pairs(raw.as_deref().unwrap_or("")) {
        match key.as_str() {
            "token" => {}
            "thread_id" => subscription.thread_id = (!value.is_empty()).then_some(value),
            "execution_id" => {
                let id = value.parse().map_err(|_| ApiError::unknown_id(&value))?;
                let record = match state.tracker.get(id) {
                    Ok(record) => Some(record),
                    Err(_) => state.store.get(id).await.map_err(ApiError::store)?,
                };
                let visible = record.is_some_and(|record| subscription.scope.sees(&record));
                if !visible {
                    return Err(ApiError::not_found(id));
                }
                subscription.execution_id = Some(id);
            }
            "since" => {
                subscription.since = Some(value.parse().map_err(|_| {
                    ApiError::invalid_query("since", format!("expected a global sequence number, not {value:?}"))
                })?)
            }
            "snapshot" => {
                subscription.snapshot = match value.as_str() {
                    "true" | "1" => true,
                    "false" | "0" | "" => false,
                    other => {
                        return Err(ApiError::invalid_query(
                            "snapshot",
                            format!("expected true or false, not {other:?}"),
                        ));
                    }
                }
            }
            "protocol" => {
                subscription.protocol = match value.as_str() {
                    "agentrack" | "" => Protocol::Agentrack,
                    "agui" => Protocol::Agui,
                    other => {
                        return Err(ApiError::invalid_field(
                            "protocol",
                            format!("unknown protocol {other:?}; valid values: agentrack, agui"),
                        )
                        .with("valid_values", vec!["agentrack", "agui"]));
                    }
                }
            }
            other => {
                return Err(ApiError::invalid_query(
                    other,
                    "unknown parameter; valid: thread_id, execution_id, since, protocol, snapshot, token",
                ));
            }
        }
    }
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "websocket_required",
            format!("this endpoint is a WebSocket: {rejection}"),
        )
    })?;
    // Clients say little on this stream (pings, close frames, an agent's heartbeats: about 1,500
    // ids fit in a message), so reads need no more than a small buffer. tungstenite's default
    // read buffer is 128 KiB per connection, allocated up front: 1.5 GiB at 10,000 subscribers
    // (see BENCHMARKS.md).
    Ok(upgrade
        .max_message_size(64 * 1024)
        .read_buffer_size(4 * 1024)
        .on_upgrade(move |socket| crate::ws::serve(socket, state, subscription)))
}
