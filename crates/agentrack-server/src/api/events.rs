//! `GET /v1/events`: the live event stream over a WebSocket (see [`crate::ws`]), and
//! `POST /v1/events/ticket`: a ticket to open it with.
//!
//! Browsers cannot set an `Authorization` header on a WebSocket, and a token in the URL ends up
//! in proxies' access logs. So a browser first asks for a ticket (with its bearer token, in a
//! header) and opens the stream with `?ticket=`: a ticket is good for one connection, within
//! `tokens.ticket_ttl` (30 s by default), on any node (tickets are kept in the store and taken
//! from it once), and carries the scope of its token as it stands when the stream opens (a
//! revoked token's tickets are refused). `?token=` is refused with a 401 saying so: no switch
//! brings it back, as one switch left on would put every token back into the logs.

use std::collections::BTreeMap;

use agentrack::ExecutionId;
use axum::Extension;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::{Access, Route, RouteDoc};
use crate::app::AppState;
use crate::auth::{Scope, generate_ticket, hash_token};
use crate::cursor::Positions;
use crate::http::ConnectionSlot;
use crate::quotas::Quotas;
use crate::store::Ticket;
use crate::ws::{Protocol, Subscription};

/// The routes of this resource.
pub fn routes() -> Vec<Route> {
    vec![
        Route {
            doc: RouteDoc {
                method: "POST",
                path: "/v1/events/ticket",
                operation_id: "eventTicket",
                summary: "A single-use ticket for one event stream (`GET /v1/events?ticket=`), valid briefly on any node, with the caller's scope.",
                durable: true,
                access: Access::Read,
                request: None,
                success: (201, Some("EventTicket")),
                errors: &[401, 403, 503],
                query: &[],
            },
            handler: post(ticket),
        },
        Route {
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
        },
    ]
}

async fn ticket(State(state): State<AppState>, scope: Scope) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Some(token) = scope.token() else {
        return Err(ApiError::unauthorized("a ticket is made for a bearer token"));
    };
    let ticket = generate_ticket().map_err(|error| ApiError::internal(format!("no randomness: {error}")))?;
    let ttl = state.settings.ticket_ttl;
    let expires_at = Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(30));
    state
        .pipeline
        .insert_ticket(Ticket {
            hash: hash_token(&ticket),
            token_hash: hash_token(token),
            expires_at,
        })
        .await
        .map_err(ApiError::store)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "ticket": ticket,
            "expires_at": expires_at,
            "expires_in_seconds": ttl.as_secs_f64(),
        })),
    ))
}

/// The stream's query parameters, for its documentation and its error messages. Listing
/// `ticket` is what makes the access guard accept `?ticket=` here.
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
        "ticket",
        "A single-use ticket from POST /v1/events/ticket, for clients that cannot set headers (a browser's WebSocket).",
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
    #[serde(rename = "ticket")]
    _ticket: Option<String>,
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

/// The stream's parameters, checked as far as they can be without the caller's scope.
struct Checked {
    thread_id: Option<String>,
    execution_id: Option<ExecutionId>,
    since: Option<Positions>,
    protocol: Protocol,
    snapshot: bool,
}

/// Names, forms and values of the stream's parameters; whether the caller may see the
/// execution it names is for [`subscription`].
fn check(parameters: Parameters, shards: u16) -> Result<Checked, ApiError> {
    let Parameters {
        thread_id,
        execution_id,
        since,
        protocol,
        snapshot,
        _ticket,
        unknown,
    } = parameters;
    if let Some(name) = unknown.keys().next() {
        return Err(ApiError::unknown_parameter(name, PARAMETERS));
    }
    let execution_id = execution_id
        .map(|text| text.parse().map_err(|_| ApiError::unknown_id(&text)))
        .transpose()?;
    let since = since_parameter(since, shards)?;
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
    Ok(Checked {
        thread_id: thread_id.filter(|t| !t.is_empty()),
        execution_id,
        since,
        protocol,
        snapshot,
    })
}

/// A `since=` event cursor of a store of `shards` shards (the stream's, the overview's), refused
/// with the reason when this server did not write it.
pub(crate) fn since_parameter(text: Option<String>, shards: u16) -> Result<Option<Positions>, ApiError> {
    text.map(|text| Positions::decode(&text, shards).map_err(|error| ApiError::invalid_query("since", error)))
        .transpose()
}

/// The access guard's check of a stream request that came with a `?ticket=`, before the ticket
/// is used up: a request refused for its parameters leaves the ticket for the corrected one.
pub(crate) fn check_before_ticket(state: &AppState, uri: &Uri) -> Result<(), ApiError> {
    let Query(parameters) = Query::<Parameters>::try_from_uri(uri).map_err(ApiError::unreadable_query)?;
    check(parameters, state.shards.count()).map(drop)
}

/// What the parameters subscribe to.
async fn subscription(state: &AppState, scope: Scope, parameters: Parameters) -> Result<Subscription, ApiError> {
    let Checked {
        thread_id,
        execution_id,
        since,
        protocol,
        snapshot,
    } = check(parameters, state.shards.count())?;
    if let Some(id) = execution_id {
        let record = match state.shards.get(id) {
            Some(record) => Some(record),
            None => state.store.get(id).await.map_err(ApiError::store)?,
        };
        if !record.is_some_and(|record| scope.sees(&record)) {
            return Err(ApiError::not_found(id));
        }
    }
    Ok(Subscription {
        scope,
        thread_id,
        execution_id,
        since,
        protocol,
        snapshot,
    })
}
