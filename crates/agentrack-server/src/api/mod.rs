//! The HTTP API: one file per resource, assembled here from a single route table.
//!
//! Each resource module returns its [`Route`]s: the handler *and* its description (method,
//! path, who may call it, what it takes and returns). The router and `/openapi.json` are both
//! built from that one list, so the published document covers every route by construction.

pub mod access;
pub mod body;
pub mod breakers;
pub mod cluster;
pub mod cluster_wide;
pub mod error;
pub mod events;
pub mod execution_breaker;
pub mod executions;
pub mod health;
pub mod heartbeats;
pub mod idempotency;
pub mod metrics;
pub mod openapi;
pub mod overview;
pub mod schemas;
pub mod tokens;

use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::MethodRouter;

pub use self::access::Access;
use crate::app::AppState;
use crate::cluster::forward::{self, RouteKey};

/// A route's description, for the OpenAPI document.
#[derive(Debug, Clone, Copy)]
pub struct RouteDoc {
    /// HTTP method, upper case.
    pub method: &'static str,
    /// Path, with `{name}` parameters.
    pub path: &'static str,
    /// A unique operation id.
    pub operation_id: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
    /// Whether its changes are acknowledged only once stored. While the store is failing such a
    /// route is refused at once (503 `store_unavailable` with `Retry-After`) before anything is
    /// changed, instead of applying a change nobody can be promised. Heartbeats are not durable:
    /// they keep agents alive through an outage.
    pub durable: bool,
    /// Who may call it: enforced by [`access::guard`], which every route is mounted behind.
    pub access: Access,
    /// The request body's schema (a component name), if it takes one.
    pub request: Option<&'static str>,
    /// The success status and its body's schema (a component name, or `None` for text).
    pub success: (u16, Option<&'static str>),
    /// The error statuses it can answer with.
    pub errors: &'static [u16],
    /// Query parameters: name and description. A route that lists `ticket` accepts a
    /// single-use `?ticket=` (from `POST /v1/events/ticket`) in place of a bearer token.
    pub query: &'static [(&'static str, &'static str)],
}

impl RouteDoc {
    /// What the route's requests are about, from its path: an execution (`{id}`), a named breaker
    /// (`{name}`), or nothing a shard owns.
    pub fn key(&self) -> RouteKey {
        if self.path.contains("{id}") {
            RouteKey::Execution
        } else if self.path.contains("{name}") {
            RouteKey::Breaker
        } else {
            RouteKey::Any
        }
    }

    /// How the access guard takes this route's token.
    pub fn guard(&self) -> access::Guard {
        let query_ticket = self.query.iter().any(|(name, _)| *name == "ticket");
        access::Guard {
            access: self.access,
            query_ticket,
            // Tickets are for the event stream, which browsers open without headers.
            ticket_check: query_ticket.then_some(events::check_before_ticket as _),
            durable: self.durable,
            writes: self.method != "GET",
        }
    }
}

/// A handler with its description.
#[derive(Debug)]
pub struct Route {
    /// The description.
    pub doc: RouteDoc,
    /// The handler.
    pub handler: MethodRouter<AppState>,
}

/// Every route of the server.
pub fn routes() -> Vec<Route> {
    let mut all = Vec::new();
    all.extend(executions::routes());
    all.extend(execution_breaker::routes());
    all.extend(breakers::routes());
    all.extend(tokens::routes());
    all.extend(events::routes());
    all.extend(metrics::routes());
    all.extend(overview::routes());
    all.extend(cluster::routes());
    all.extend(health::routes());
    all.extend(openapi::routes());
    all
}

/// The descriptions of every route.
pub fn route_docs() -> Vec<RouteDoc> {
    routes().into_iter().map(|route| route.doc).collect()
}

/// The application: every route behind the guard of its access level, and the web dashboard,
/// with request logging and counting.
pub fn router(state: AppState) -> Router {
    let mut router: Router<AppState> = Router::new();
    for route in routes() {
        let guard = route.doc.guard();
        let key = route.doc.key();
        // The guard runs first (the caller's scope decides a breaker's shard), then the request
        // is answered here or forwarded to the shard's owner.
        let mut handler = route.handler;
        if idempotency::applies(route.doc.durable, route.doc.operation_id) {
            // Inside the forwarding layer: the node that answers keeps the key.
            handler = handler.route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                |State(state): State<AppState>, request: Request, next: Next| {
                    idempotency::remember(state, request, next)
                },
            ));
        }
        let guarded = handler
            .route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                move |State(state): State<AppState>, request: Request, next: Next| {
                    forward::route(key, state, request, next)
                },
            ))
            .route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                move |State(state): State<AppState>, request: Request, next: Next| {
                    access::guard(guard, state, request, next)
                },
            ));
        router = router.route(route.doc.path, guarded);
    }
    router
        .merge(crate::dashboard::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::http::requests::admit,
        ))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn not_found(request: Request) -> error::ApiError {
    error::ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "route_not_found",
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> error::ApiError {
    error::ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", request.method(), request.uri().path()),
    )
}

async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    state.metrics.http_response(status);
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    if status >= 500 {
        tracing::warn!(%method, %path, status, micros, "request failed");
    } else {
        tracing::debug!(%method, %path, status, micros, "request");
    }
    response
}
