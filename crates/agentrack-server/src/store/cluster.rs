//! What a store shared by several nodes offers them: membership, shard leases with fencing, the
//! record of shard moves, and the log's growth (to follow the shards other nodes own).
//!
//! Time here is the database's: every node compares leases against the same clock.

use std::time::Duration;

use tokio::sync::mpsc;

use super::{ShardId, StoreFuture, StoredEvent};
use crate::auth::TokenGrant;

/// A node as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeRow {
    /// Its id (unique per process start).
    pub node_id: String,
    /// How the other nodes reach it.
    pub url: String,
    /// When it joined (ms since the epoch, database time).
    pub started_ms: i64,
    /// When it last said it is alive.
    pub seen_ms: i64,
}

/// A shard's lease as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ShardRow {
    /// The shard.
    pub shard: ShardId,
    /// Who holds it (`None`: released or never taken).
    pub owner: Option<String>,
    /// Its fencing number: every taking of the shard increments it.
    pub range_id: i64,
    /// Until when the owner's lease holds (ms since the epoch, database time).
    pub lease_until_ms: i64,
}

/// One move of a shard between nodes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ShardMove {
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// The shard.
    pub shard: ShardId,
    /// The node that had it, if any.
    pub from_node: Option<String>,
    /// The node that took it.
    pub to_node: Option<String>,
    /// Why: `free` (taken while nobody held it, e.g. after a hand-over), `released` (handed
    /// over), `expired` (its owner stopped renewing), `restarted` (its owner took it back after a
    /// restart, before the lease ran out).
    pub reason: String,
}

/// A shard taken: its new fencing number and who had it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The fencing number every write of this owner carries.
    pub range_id: i64,
    /// The node that held it before (its lease expired or it released it).
    pub from_node: Option<String>,
}

/// The operations of a store several nodes share.
pub trait ClusterStore: Send + Sync {
    /// The database's clock, in ms since the epoch.
    fn now_ms(&self) -> StoreFuture<'_, i64>;

    /// Stores the token of hash `hash` as the store's first admin token unless an admin token
    /// exists, under a lock every node takes for it: nodes starting together on an empty store
    /// make one admin token between them. Returns whether this call stored it.
    fn insert_first_admin(&self, hash: &str, grant: &TokenGrant) -> StoreFuture<'_, bool>;

    /// Registers (or re-registers) a node, or says it is still alive.
    fn heartbeat_node(&self, node_id: &str, url: &str) -> StoreFuture<'_, ()>;

    /// Removes a node (it is leaving).
    fn remove_node(&self, node_id: &str) -> StoreFuture<'_, ()>;

    /// Every registered node.
    fn nodes(&self) -> StoreFuture<'_, Vec<NodeRow>>;

    /// Every shard's lease.
    fn shards(&self) -> StoreFuture<'_, Vec<ShardRow>>;

    /// Takes `shard` for `node_id` if nobody else holds a live lease on it (its own lease, from a
    /// previous run, it takes back), for `ttl`; `None` when another node does.
    fn take(&self, shard: ShardId, node_id: &str, ttl: Duration) -> StoreFuture<'_, Option<Taken>>;

    /// Extends the leases `node_id` holds (shard, fencing number) by `ttl`; returns the shards
    /// it still holds (a shard whose number moved on is lost).
    fn renew(&self, node_id: &str, leases: &[(ShardId, i64)], ttl: Duration) -> StoreFuture<'_, Vec<ShardId>>;

    /// Gives a shard up (for another node to take at once), if `node_id` still holds it.
    fn release(&self, shard: ShardId, node_id: &str, range_id: i64) -> StoreFuture<'_, ()>;

    /// The latest shard moves, newest first.
    fn moves(&self, limit: usize) -> StoreFuture<'_, Vec<ShardMove>>;

    /// Every shard's highest stored event number (where following its log starts).
    fn log_heads(&self) -> StoreFuture<'_, Vec<(ShardId, u64)>>;

    /// A shard's stored events after `after`, in order, at most `limit`.
    fn events_after(&self, shard: ShardId, after: u64, limit: usize) -> StoreFuture<'_, Vec<StoredEvent>>;

    /// Notifications of the log's growth, `(shard, highest number)`, as commits land. The
    /// channel closes when the listening connection is lost (listen again).
    fn listen(&self) -> StoreFuture<'_, mpsc::UnboundedReceiver<(ShardId, u64)>>;

    /// Notifications of tokens made or revoked (their hashes), from every node, as their
    /// transactions commit. The channel closes when the listening connection is lost (listen
    /// again, and forget every cached token: notifications may have been missed meanwhile).
    fn listen_tokens(&self) -> StoreFuture<'_, mpsc::UnboundedReceiver<String>>;
}
