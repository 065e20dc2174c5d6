//! `GET /v1/cluster` (admin): the nodes sharing the store, the shards each owns and until when,
//! the shards nobody serves right now, and the latest shard moves. Read from the store on every
//! call (not from this node's last round), so it shows a node's death as soon as its lease runs
//! out. A single node answers with itself owning its one shard.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use serde::Serialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::schemas::exact;
use super::{Access, Route, RouteDoc};
use crate::app::AppState;
use crate::store::{ShardId, ShardMove};

/// How many shard moves the answer lists.
pub const MOVES_LISTED: usize = 50;

/// The routes of this resource.
pub fn routes() -> Vec<Route> {
    vec![Route {
        doc: RouteDoc {
            method: "GET",
            path: "/v1/cluster",
            operation_id: "getCluster",
            summary: "The cluster (admin only): nodes, their URLs, the shards each owns and until when, recent shard moves.",
            durable: false,
            access: Access::Admin("see the cluster"),
            request: None,
            success: (200, Some("ClusterStatus")),
            errors: &[401, 403, 503],
            query: &[],
        },
        handler: get(status),
    }]
}

/// The cluster as the store sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// Whether the store is shared by several nodes (PostgreSQL) or this node's own.
    pub clustered: bool,
    /// The node that answered.
    pub this_node: String,
    /// How many shards the store has (fixed when it was created).
    pub shard_count: u16,
    /// How long a lease lasts without renewal, in ms (0 for a single node).
    pub lease_ttl_ms: u64,
    /// The store's clock when read (ms since the epoch): the time leases are compared with.
    pub now_ms: i64,
    /// Every registered node, alive ones first.
    pub nodes: Vec<NodeStatus>,
    /// Shards without a live lease: nobody serves them until one is taken.
    pub unowned_shards: Vec<ShardId>,
    /// The latest shard moves, newest first.
    pub recent_moves: Vec<ShardMove>,
}

/// One node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// Its id (kept in its data directory).
    pub node_id: String,
    /// How the other nodes reach it.
    pub url: String,
    /// Whether it said it is alive within one lease TTL.
    pub alive: bool,
    /// When it joined (ms since the epoch).
    pub started_ms: i64,
    /// When it last said it is alive.
    pub seen_ms: i64,
    /// The shards it holds a live lease on.
    pub shards: Vec<ShardId>,
    /// When the first of those leases runs out unless renewed (`null` when it holds none).
    pub lease_until_ms: Option<i64>,
}

/// `GET /v1/cluster`.
///
/// # Errors
///
/// 503 when the store cannot be read.
async fn status(State(state): State<AppState>) -> Result<Json<ClusterStatus>, ApiError> {
    let (Some(cluster), Some(store)) = (state.cluster.as_ref(), state.store.cluster()) else {
        return Ok(Json(single_node(&state)));
    };
    let now_ms = store.now_ms().await.map_err(ApiError::store)?;
    let nodes = store.nodes().await.map_err(ApiError::store)?;
    let leases = store.shards().await.map_err(ApiError::store)?;
    let recent_moves = store.moves(MOVES_LISTED).await.map_err(ApiError::store)?;
    let lease_ttl_ms = u64::try_from(cluster.member.lease_ttl.as_millis()).unwrap_or(u64::MAX);
    let ttl = i64::try_from(lease_ttl_ms).unwrap_or(i64::MAX);
    let mut held: BTreeMap<&str, Vec<(ShardId, i64)>> = BTreeMap::new();
    let mut unowned_shards = Vec::new();
    for lease in &leases {
        match &lease.owner {
            Some(owner) if lease.lease_until_ms >= now_ms => {
                held.entry(owner).or_default().push((lease.shard, lease.lease_until_ms));
            }
            _ => unowned_shards.push(lease.shard),
        }
    }
    let mut nodes: Vec<NodeStatus> = nodes
        .into_iter()
        .map(|node| {
            let leases = held.get(node.node_id.as_str()).map(Vec::as_slice).unwrap_or_default();
            NodeStatus {
                alive: node.seen_ms.saturating_add(ttl) >= now_ms,
                shards: leases.iter().map(|(shard, _)| *shard).collect(),
                lease_until_ms: leases.iter().map(|(_, until)| *until).min(),
                node_id: node.node_id,
                url: node.url,
                started_ms: node.started_ms,
                seen_ms: node.seen_ms,
            }
        })
        .collect();
    nodes.sort_by(|a, b| b.alive.cmp(&a.alive).then_with(|| a.node_id.cmp(&b.node_id)));
    Ok(Json(ClusterStatus {
        clustered: true,
        this_node: cluster.member.node_id.clone(),
        shard_count: state.shards.count(),
        lease_ttl_ms,
        now_ms,
        nodes,
        unowned_shards,
        recent_moves,
    }))
}

/// A store of one node's own: this node, serving every shard, for as long as it runs.
fn single_node(state: &AppState) -> ClusterStatus {
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX);
    let started_ms = now_ms.saturating_sub(i64::try_from(state.started.elapsed().as_millis()).unwrap_or(0));
    ClusterStatus {
        clustered: false,
        this_node: "local".to_owned(),
        shard_count: state.shards.count(),
        lease_ttl_ms: 0,
        now_ms,
        nodes: vec![NodeStatus {
            node_id: "local".to_owned(),
            url: String::new(),
            alive: true,
            started_ms,
            seen_ms: now_ms,
            shards: state.shards.local_ids(),
            lease_until_ms: None,
        }],
        unowned_shards: Vec::new(),
        recent_moves: Vec::new(),
    }
}

/// The schema of [`ClusterStatus`].
pub fn schema() -> Value {
    let integer = json!({"type": "integer", "minimum": 0});
    let time = json!({"type": "integer", "description": "ms since the epoch, the store's clock"});
    let shards = json!({"type": "array", "items": integer});
    let node = exact(json!({
        "node_id": {"type": "string"}, "url": {"type": "string"}, "alive": {"type": "boolean"},
        "started_ms": time, "seen_ms": time, "shards": shards,
        "lease_until_ms": {"anyOf": [time, {"type": "null"}]},
    }));
    let nullable_string = json!({"anyOf": [{"type": "string"}, {"type": "null"}]});
    let shard_move = exact(json!({
        "at_ms": time, "shard": integer, "from_node": nullable_string, "to_node": nullable_string,
        "reason": {"type": "string", "enum": ["free", "released", "expired", "restarted"]},
    }));
    exact(json!({
        "clustered": {"type": "boolean"},
        "this_node": {"type": "string"},
        "shard_count": integer,
        "lease_ttl_ms": integer,
        "now_ms": time,
        "nodes": {"type": "array", "items": node},
        "unowned_shards": shards,
        "recent_moves": {"type": "array", "items": shard_move},
    }))
}
