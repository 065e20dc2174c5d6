//! Forwarding: a request about an execution (or a named breaker) whose shard another node owns
//! is sent on to that node over a keep-alive connection pool and answered as the owner answers.
//!
//! The request goes as it came — method, path, query, headers (the caller's token included),
//! body — so the owner checks access and validates exactly as if it had been asked directly. It
//! carries `x-agentrack-forwarded-by`; an owner that does not own the shard either (it moved
//! meanwhile) answers 503 with `Retry-After` instead of forwarding again, so a request never
//! travels in circles.

use std::time::Duration;

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::Route;
use crate::api::error::ApiError;
use crate::app::AppState;
use crate::auth::Scope;
use crate::store::ShardId;

/// Marks a forwarded request with the node that sent it.
pub const FORWARDED_BY: HeaderName = HeaderName::from_static("x-agentrack-forwarded-by");

/// The largest body forwarded (the API's own limit is below it).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// How long the owner may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// What a route's requests are about, for routing them to the shard's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKey {
    /// Served by any node.
    Any,
    /// The execution named by the `{id}` path parameter.
    Execution,
    /// The caller's named breaker `{name}`.
    Breaker,
}

/// The HTTP client pool to the other nodes.
#[derive(Debug, Clone)]
pub struct Forwarder {
    client: Client<HttpConnector, Body>,
}

impl Default for Forwarder {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(connector);
        Self { client }
    }
}

impl Forwarder {
    /// Sends the request of `parts` with `body` to the node at `base` and returns its answer.
    ///
    /// # Errors
    ///
    /// 503 `shard_unavailable` when the owner cannot be reached (it may just have died: the
    /// shard is taken over within a lease TTL).
    pub async fn send(&self, base: &str, node_id: &str, parts: &Parts, body: Bytes) -> Result<Response, ApiError> {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri: Uri = format!("{base}{path}")
            .parse()
            .map_err(|_| ApiError::internal(format!("cannot forward to {base}{path}")))?;
        let mut request = axum::http::Request::builder()
            .method(parts.method.clone())
            .uri(uri)
            .body(Body::from(body))
            .map_err(|error| ApiError::internal(format!("cannot forward to {base}{path}: {error}")))?;
        let headers = request.headers_mut();
        headers.extend(parts.headers.clone());
        headers.remove(axum::http::header::HOST);
        headers.remove(axum::http::header::CONNECTION);
        if let Ok(value) = HeaderValue::from_str(node_id) {
            headers.insert(FORWARDED_BY, value);
        }
        let answered = tokio::time::timeout(TIMEOUT, self.client.request(request)).await;
        match answered {
            Ok(Ok(response)) => Ok(response.map(Body::new)),
            Ok(Err(error)) => {
                tracing::warn!(%error, owner = %base, "forwarding failed");
                Err(ApiError::owner_unreachable(base))
            }
            Err(_) => Err(ApiError::owner_unreachable(base)),
        }
    }

    /// Posts `body` to `path` on the node at `base` for the caller holding `token`, and returns
    /// the owner's status and JSON answer (for requests this node splits by owner, such as a
    /// batch of heartbeats).
    ///
    /// # Errors
    ///
    /// 503 `shard_unavailable` when the node cannot be reached or does not answer JSON.
    pub async fn post_json(
        &self,
        base: &str,
        node_id: &str,
        path: &str,
        token: &str,
        body: &serde_json::Value,
    ) -> Result<(axum::http::StatusCode, serde_json::Value), ApiError> {
        self.json(axum::http::Method::POST, base, node_id, path, token, Some(body))
            .await
    }

    /// `method path` (no body) on the node at `base` for the caller holding `token` (a part of
    /// a cluster-wide read, or of a revocation).
    ///
    /// # Errors
    ///
    /// 503 `shard_unavailable` when the node cannot be reached or does not answer JSON.
    pub async fn request_json(
        &self,
        method: axum::http::Method,
        base: &str,
        node_id: &str,
        path: &str,
        token: &str,
    ) -> Result<(axum::http::StatusCode, serde_json::Value), ApiError> {
        self.json(method, base, node_id, path, token, None).await
    }

    async fn json(
        &self,
        method: axum::http::Method,
        base: &str,
        node_id: &str,
        path: &str,
        token: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(axum::http::StatusCode, serde_json::Value), ApiError> {
        let unreachable = || ApiError::owner_unreachable(base);
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(format!("{base}{path}"))
            .header(FORWARDED_BY, HeaderValue::from_str(node_id).map_err(|_| unreachable())?);
        if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
            request = request.header(axum::http::header::AUTHORIZATION, value);
        }
        let body = match body {
            Some(body) => {
                request = request.header(axum::http::header::CONTENT_TYPE, "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        let request = request
            .body(body)
            .map_err(|error| ApiError::internal(format!("cannot send to {base}{path}: {error}")))?;
        let response = tokio::time::timeout(TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| unreachable())?
            .map_err(|error| {
                tracing::warn!(%error, node = %base, "a request to another node failed");
                unreachable()
            })?;
        let status = response.status();
        let bytes = http_body_util::Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|_| unreachable())?
            .to_bytes();
        let answer = serde_json::from_slice(&bytes).map_err(|_| unreachable())?;
        Ok((status, answer))
    }
}

/// The middleware of keyed routes: answers here when this node serves the shard, forwards to the
/// owner otherwise, 503 while the shard moves.
///
/// The owner map is refreshed from the store before refusing or re-sending, so a move costs a
/// request at most one extra lookup rather than a 503: when no owner is known here, and when
/// the node forwarded to answers it is not the owner (the shard moved since the last round).
pub async fn route(key: RouteKey, state: AppState, request: Request, next: Next) -> Response {
    let Some(cluster) = state.cluster.clone() else {
        return next.run(request).await;
    };
    let (mut parts, body) = request.into_parts();
    let Some(shard) = shard_of(key, &state, &mut parts).await else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    let forwarded = parts.headers.contains_key(FORWARDED_BY);
    let mut route = state.shards.route_shard(shard);
    if matches!(route, Route::Unavailable) && state.shards.local_shard(shard).is_none() {
        route = refreshed_route(&state, &cluster, shard).await;
    }
    let url = match route {
        Route::Local(_) => return next.run(Request::from_parts(parts, body)).await,
        Route::Remote(url) if !forwarded => url,
        // Asked by another node about a shard not served here: its map is stale.
        Route::Remote(_) | Route::Unavailable => {
            let mut refused = ApiError::shard_unavailable(shard).into_response();
            refused.headers_mut().insert(NOT_OWNER, HeaderValue::from(shard));
            return refused;
        }
    };
    let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) => {
            let slow = error
                .downcast_ref::<axum::Error>()
                .and_then(crate::http::deadline::timed_out);
            if let Some(limit) = slow {
                return ApiError::body_timeout(limit).into_response();
            }
            return ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "body too large to forward",
            )
            .into_response();
        }
    };
    let node_id = &cluster.member.node_id;
    let response = match cluster.forwarder.send(&url, node_id, &parts, body.clone()).await {
        Ok(response) if response.headers().contains_key(NOT_OWNER) => response,
        Ok(response) => return response,
        Err(error) => return error.into_response(),
    };
    // The shard moved: ask again where it is, and try once more.
    match refreshed_route(&state, &cluster, shard).await {
        Route::Local(_) => next.run(Request::from_parts(parts, Body::from(body))).await,
        Route::Remote(again) if again != url => match cluster.forwarder.send(&again, node_id, &parts, body).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        },
        Route::Remote(_) | Route::Unavailable => response,
    }
}

/// Marks a node's refusal of a forwarded request about a shard it does not serve.
pub const NOT_OWNER: HeaderName = HeaderName::from_static("x-agentrack-not-owner");

/// The route of `shard` after reading its owner from the store.
async fn refreshed_route(state: &AppState, cluster: &crate::app::ClusterState, shard: ShardId) -> Route {
    if let Some(store) = state.store.cluster() {
        let refreshed =
            super::membership::refresh_now(&cluster.member, store, &state.shards, &cluster.owners_refreshed);
        if let Err(error) = refreshed.await {
            tracing::warn!(%error, "could not refresh the shard owners");
        }
    }
    state.shards.route_shard(shard)
}

/// The shard a keyed request is about; `None` when the route is not keyed or its parameter is
/// malformed (the handler then answers as for any bad request).
async fn shard_of(key: RouteKey, state: &AppState, parts: &mut Parts) -> Option<ShardId> {
    let params = RawPathParams::from_request_parts(parts, state).await.ok()?;
    let param = |wanted: &str| {
        params
            .iter()
            .find(|(name, _)| *name == wanted)
            .map(|(_, value)| value.to_owned())
    };
    match key {
        RouteKey::Any => None,
        RouteKey::Execution => {
            let id = param("id")?.parse().ok()?;
            Some(state.shards.shard_of(id))
        }
        RouteKey::Breaker => {
            let name = param("name")?;
            let scope = parts.extensions.get::<Scope>()?;
            Some(state.shards.shard_of_breaker(&scope.breaker_key(&name)))
        }
    }
}
