//! Cluster-wide reads: a node answering `/v1/overview`, `/v1/metrics` or `/v1/breakers` asks
//! every other alive node for its own part (the same route, marked as forwarded, with the
//! caller's token, so each node applies the caller's scope itself) and adds the parts up.
//!
//! A node that does not answer within [`PEER_TIMEOUT`] (paused, or dead but not yet seen so) is
//! left out and named in the answer, rather than holding the read up: a dashboard keeps
//! refreshing while a node fails.

use std::time::Duration;

use axum::http::{HeaderMap, Method};
use serde_json::Value;

use super::forward::FORWARDED_BY;
use crate::app::AppState;
use crate::auth::Scope;

/// How long a peer may take to answer its part.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// The other nodes' answers to one read.
#[derive(Debug, Default)]
pub struct Gathered {
    /// Each answering node's id and JSON answer.
    pub answers: Vec<(String, Value)>,
    /// The alive nodes that did not answer.
    pub missing: Vec<String>,
}

/// Whether this request is another node asking for this node's part.
pub fn is_part_request(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED_BY)
}

/// The parts of every other alive node for `GET path` (with its query), or `None` when this
/// node answers alone: no cluster, the request is itself a part request, or the caller is
/// in-process.
pub async fn from_peers(state: &AppState, scope: &Scope, headers: &HeaderMap, path: &str) -> Option<Gathered> {
    ask_peers(state, scope, headers, Method::GET, path).await
}

/// As [`from_peers`], with any method: `method path` on every other alive node, as a part
/// request (a revocation's, for each node to forget the token).
pub async fn ask_peers(
    state: &AppState,
    scope: &Scope,
    headers: &HeaderMap,
    method: Method,
    path: &str,
) -> Option<Gathered> {
    let cluster = state.cluster.as_ref()?;
    let token = scope.token()?;
    if is_part_request(headers) {
        return None;
    }
    let peers: Vec<(String, String)> = cluster
        .view
        .read()
        .nodes
        .iter()
        .filter(|(node, alive)| *alive && node.node_id != cluster.member.node_id)
        .map(|(node, _)| (node.node_id.clone(), node.url.clone()))
        .collect();
    let asked = peers.into_iter().map(|(node_id, url)| {
        let method = method.clone();
        async move {
            let answer = tokio::time::timeout(
                PEER_TIMEOUT,
                cluster
                    .forwarder
                    .request_json(method, &url, &cluster.member.node_id, path, token),
            )
            .await;
            match answer {
                Ok(Ok((status, body))) if status.is_success() => Ok((node_id, body)),
                Ok(Ok((status, body))) => {
                    tracing::warn!(node = %node_id, %status, %body, "a node refused its part of a cluster-wide read");
                    Err(node_id)
                }
                Ok(Err(_)) | Err(_) => Err(node_id),
            }
        }
    });
    let mut gathered = Gathered::default();
    for answer in futures_util::future::join_all(asked).await {
        match answer {
            Ok(answer) => gathered.answers.push(answer),
            Err(node_id) => gathered.missing.push(node_id),
        }
    }
    gathered.missing.sort();
    Some(gathered)
}
