//! `GET /v1/events`: the live event stream over a WebSocket (see [`crate::ws`]).

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;

use super::error::ApiError;
use super::{Access, Route, RouteDoc};
use crate::app::AppState;
use crate::auth::Scope;
use crate::cursor::Positions;
use crate::http::ConnectionSlot;
use crate::quotas::Quotas;
use crate::ws::{Protocol, Subscription};

/// The routes of this resource.
pub fn routes() -> Vec<Route> {
    vec![Route {
        doc: RouteDoc {
            method: "GET",
            path: "/v1/events",
            operation_id: "events",
            summary: "WebSocket stream of the events in the caller's scope; `since` replays stored events first.",
            durable: false,
            access: Access::Read,
            request: None,
            success: (101, Some("EventStream")),
            errors: &[400, 401, 404, 422, 429],
            query: PARAMETERS,
        },
        handler: get(subscribe),
    }]
}

/// The stream's query parameters, for its documentation and its error messages. Listing `token`
/// is what makes the access guard accept `?token=` here.
const PARAMETERS: &[(&str, &str)] = &[
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
    (
        "token",
        "The token, for clients that cannot set headers (a browser's WebSocket).",
    ),
];

/// The stream's query parameters as given: text, so that each is checked with an error naming
/// it and what would be valid.
#[derive(Debug, Default, Deserialize)]
struct Parameters {
    thread_id: Option<String>,
    execution_id: Option<String>,
    since: Option<String>,
    protocol: Option<String>,
    snapshot: Option<String>,
    /// Read by the access guard.
    #[serde(rename = "token")]
    _token: Option<String>,
    /// Anything else, refused by name.
    #[serde(flatten)]
    unknown: BTreeMap<String, String>,
}

async fn subscribe(
    State(state): State<AppState>,
    slot: Option<Extension<ConnectionSlot>>,
    scope: Scope,
    parameters: Result<Query<Parameters>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let Query(parameters) = parameters.map_err(ApiError::unreadable_query)?;
    let subscription = subscription(&state, scope, parameters).await?;
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
    // (see BENCHMARKS.md). The frame limit is what refuses a large frame from its header: the
    // message limit alone is checked only once the frame (up to 16 MiB by default) is buffered.
    // Counted against the token from before the handshake until the stream ends.
    let stream_slot = Quotas::open_stream(&state, &subscription.scope)?;
    let subscribed = crate::ws::subscribe(&state, &subscription);
    let limits = &state.settings.websocket;
    let (message, frame) = (limits.max_message_bytes, limits.max_frame_bytes);
    Ok(upgrade
        .max_message_size(message)
        .max_frame_size(frame)
        .read_buffer_size(4 * 1024)
        .on_upgrade(move |socket| async move {
            // The stream keeps its connection's slot under http.max_connections until it closes.
            let _slot = slot;
            let _stream_slot = stream_slot;
            crate::ws::serve(socket, state, subscription, subscribed).await;
        }))
}

/// What the parameters subscribe to.
async fn subscription(state: &AppState, scope: Scope, parameters: Parameters) -> Result<Subscription, ApiError> {
    let Parameters {
        thread_id,
        execution_id,
        since,
        protocol,
        snapshot,
        _token,
        unknown,
    } = parameters;
    if let Some(name) = unknown.keys().next() {
        return Err(ApiError::unknown_parameter(name, PARAMETERS));
    }
    let execution_id = match execution_id {
        Some(text) => {
            let id = text.parse().map_err(|_| ApiError::unknown_id(&text))?;
            let record = match state.shards.get(id) {
                Some(record) => Some(record),
                None => state.store.get(id).await.map_err(ApiError::store)?,
            };
            if !record.is_some_and(|record| scope.sees(&record)) {
                return Err(ApiError::not_found(id));
            }
            Some(id)
        }
        None => None,
    };
    let since = since
        .map(|text| {
            Positions::decode(&text, state.shards.count())
                .map_err(|error| ApiError::invalid_query("since", error.to_string()))
        })
        .transpose()?;
    let snapshot = match snapshot.as_deref() {
        None | Some("false" | "0" | "") => false,
        Some("true" | "1") => true,
        Some(other) => {
            return Err(ApiError::invalid_query(
                "snapshot",
                format!("expected true or false, not {other:?}"),
            ));
        }
    };
    let protocol = match protocol.as_deref() {
        None | Some("agentrack" | "") => Protocol::Agentrack,
        Some("agui") => Protocol::Agui,
        Some(other) => {
            return Err(ApiError::invalid_field(
                "protocol",
                format!("unknown protocol {other:?}; valid values: agentrack, agui"),
            )
            .with("valid_values", vec!["agentrack", "agui"]));
        }
    };
    Ok(Subscription {
        scope,
        thread_id: thread_id.filter(|t| !t.is_empty()),
        execution_id,
        since,
        protocol,
        snapshot,
    })
}
