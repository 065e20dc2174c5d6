//! Membership and shard ownership: every node says it is alive, renews the leases of the shards
//! it serves, takes its share of the shards nobody holds, and hands over what is more than its
//! share — all through the store, so nodes never talk to each other to agree.
//!
//! The model is Temporal's history service. Every taking of a shard increments its fencing
//! number (`range_id`); every write of the shard carries it, and the store refuses the write when
//! it moved on — so a node that paused past its lease and woke up can write nothing for a shard it
//! lost. It learns so from the refusal (or from its next renewal) and drops the shard.
//!
//! Each round (every quarter lease TTL):
//!
//! 1. say this node is alive, and renew its leases; shards whose renewal fails are dropped;
//! 2. read the nodes and the leases: a node is alive if it said so within one TTL, and the
//!    owner map used for forwarding is refreshed;
//! 3. the fair share is ⌈shards ÷ alive nodes⌉: below it, take shards whose lease is free or
//!    expired; above the floor (⌊shards ÷ alive nodes⌋) while another alive node is below the
//!    floor, hand shards over down to the floor (write what they defer, release the lease) for
//!    the nodes below the share to take at once. Balanced, every node holds the floor or the
//!    share, and nothing moves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Lease, Loader, Owner, Shards};
use crate::store::{ClusterStore, NodeRow, ShardId, ShardRow, Store, StoreError};

/// This node in the cluster.
#[derive(Debug, Clone)]
pub struct Member {
    /// Unique per process start.
    pub node_id: String,
    /// How the other nodes reach this one.
    pub url: String,
    /// How long a lease lasts without renewal.
    pub lease_ttl: Duration,
}

impl Member {
    /// The node of data directory `data`: its id is kept in `DATA/node.id`, so that a node
    /// restarted there takes its own shards back at once instead of waiting for their leases
    /// to expire.
    ///
    /// # Errors
    ///
    /// The id file cannot be read or written.
    pub fn of_data_dir(data: &std::path::Path, url: String, lease_ttl: Duration) -> std::io::Result<Self> {
        let path = data.join(NODE_ID_FILE);
        let node_id = match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => text.trim().to_owned(),
            _ => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                let id = format!("node-{}", &id[..12]);
                std::fs::write(&path, format!("{id}\n"))?;
                id
            }
        };
        Ok(Self {
            node_id,
            url,
            lease_ttl,
        })
    }

    fn round(&self) -> Duration {
        (self.lease_ttl / 4).max(Duration::from_millis(100))
    }
}

/// The file in the data directory that holds the node's id.
pub const NODE_ID_FILE: &str = "node.id";

/// What one round saw, for `/v1/cluster`.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The registered nodes, and whether each is alive.
    pub nodes: Vec<(NodeRow, bool)>,
    /// Every shard's lease.
    pub shards: Vec<ShardRow>,
    /// The database's clock when read.
    pub now_ms: i64,
}

/// Keeps this node's share of the shards until `shutdown`, then hands every shard over and
/// leaves. `lost` receives the shards the pipeline found fenced.
pub async fn run(
    member: Member,
    store: Arc<dyn Store>,
    loader: Loader,
    view: Arc<parking_lot::RwLock<View>>,
    mut lost: mpsc::UnboundedReceiver<ShardId>,
    shutdown: CancellationToken,
) {
    let Some(cluster) = store.cluster() else { return };
    let mut tick = tokio::time::interval(member.round());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            shard = lost.recv() => {
                if let Some(shard) = shard {
                    loader.give_up(shard, false).await;
                }
            }
            _ = tick.tick() => {
                if let Err(error) = round(&member, cluster, &loader, &view).await {
                    tracing::warn!(%error, "cluster round failed");
                }
            }
        }
    }
    leave(&member, cluster, &loader).await;
}

/// One round (see the module documentation).
///
/// # Errors
///
/// A store error; the round is tried again at the next tick.
pub async fn round(
    member: &Member,
    cluster: &dyn ClusterStore,
    loader: &Loader,
    view: &parking_lot::RwLock<View>,
) -> Result<(), StoreError> {
    cluster.heartbeat_node(&member.node_id, &member.url).await?;
    renew(member, cluster, loader).await?;
    let View { nodes, shards, now_ms } = read_view(member, cluster).await?;
    refresh_owners(member, &loader.shards, &nodes, &shards, now_ms);
    rebalance(member, cluster, loader, &nodes, &shards, now_ms).await?;
    *view.write() = View { nodes, shards, now_ms };
    Ok(())
}

/// What the store says now: its clock, every node (alive if it said so within one lease TTL)
/// and every shard's lease.
async fn read_view(member: &Member, cluster: &dyn ClusterStore) -> Result<View, StoreError> {
    let now_ms = cluster.now_ms().await?;
    let ttl_ms = i64::try_from(member.lease_ttl.as_millis()).unwrap_or(i64::MAX);
    let nodes = cluster
        .nodes()
        .await?
        .into_iter()
        .map(|node| {
            let alive = node.seen_ms + ttl_ms >= now_ms;
            (node, alive)
        })
        .collect();
    let shards = cluster.shards().await?;
    Ok(View { nodes, shards, now_ms })
}

/// Extends the leases of the shards served here; drops the ones lost.
async fn renew(member: &Member, cluster: &dyn ClusterStore, loader: &Loader) -> Result<(), StoreError> {
    let held: Vec<(ShardId, i64)> = loader
        .shards
        .locals()
        .iter()
        .filter_map(|shard| shard.fence.map(|fence| (shard.id, fence)))
        .collect();
    if held.is_empty() {
        return Ok(());
    }
    let asked = Instant::now();
    let renewed = cluster.renew(&member.node_id, &held, member.lease_ttl).await?;
    for (shard, _) in held {
        if renewed.contains(&shard) {
            if let Some(local) = loader.shards.local_shard(shard) {
                local.extend_lease(asked + member.lease_ttl);
            }
        } else {
            tracing::warn!(shard, "lost the lease of a shard");
            loader.give_up(shard, false).await;
        }
    }
    Ok(())
}

/// Refreshes who serves the shards not served here, now rather than at the next round (a
/// request found its shard's owner unknown: it may just have moved). Concurrent callers share
/// one read, and reads are at least [`REFRESH_SPACING`] apart.
///
/// # Errors
///
/// A store error.
pub async fn refresh_now(
    member: &Member,
    cluster: &dyn ClusterStore,
    shards: &Shards,
    last: &tokio::sync::Mutex<Option<Instant>>,
) -> Result<(), StoreError> {
    let asked = Instant::now();
    let mut last = last.lock().await;
    if last.is_some_and(|at| at >= asked || at.elapsed() < REFRESH_SPACING) {
        return Ok(());
    }
    let view = read_view(member, cluster).await?;
    refresh_owners(member, shards, &view.nodes, &view.shards, view.now_ms);
    *last = Some(Instant::now());
    Ok(())
}

/// The least time between two out-of-round refreshes of the owner map.
pub const REFRESH_SPACING: Duration = Duration::from_millis(100);

/// Who serves each shard not served here, for forwarding.
fn refresh_owners(member: &Member, shards: &Shards, nodes: &[(NodeRow, bool)], leases: &[ShardRow], now_ms: i64) {
    for lease in leases {
        if shards.local_shard(lease.shard).is_some() {
            continue;
        }
        let owner = lease
            .owner
            .as_ref()
            .filter(|owner| *owner != &member.node_id && lease.lease_until_ms >= now_ms)
            .and_then(|owner| nodes.iter().find(|(node, alive)| *alive && &node.node_id == owner))
            .map_or(Owner::Unknown, |(node, _)| Owner::There {
                node_id: node.node_id.clone(),
                url: node.url.clone(),
            });
        shards.set_owner(lease.shard, owner);
    }
}

/// Takes shards up to the fair share, or hands over what is above the floor to a node below it.
async fn rebalance(
    member: &Member,
    cluster: &dyn ClusterStore,
    loader: &Loader,
    nodes: &[(NodeRow, bool)],
    leases: &[ShardRow],
    now_ms: i64,
) -> Result<(), StoreError> {
    let alive: Vec<&str> = nodes
        .iter()
        .filter(|(_, alive)| *alive)
        .map(|(node, _)| node.node_id.as_str())
        .collect();
    let count = usize::from(loader.shards.count());
    let share = count.div_ceil(alive.len().max(1));
    let floor = count / alive.len().max(1);
    let mine = loader.shards.local_ids();
    let held_by = |node: &str| {
        leases
            .iter()
            .filter(|lease| lease.owner.as_deref() == Some(node) && lease.lease_until_ms >= now_ms)
            .count()
    };
    let someone_short = alive
        .iter()
        .any(|node| *node != member.node_id && held_by(node) < floor);
    // While another node is below the floor, what is free is its first: take only up to the
    // floor then (so that a node that just handed a shard over does not take it back).
    let target = if someone_short { floor } else { share };
    if mine.len() < target {
        let free = leases
            .iter()
            // Free, expired, or this node's own from a previous run.
            .filter(|lease| {
                lease.owner.is_none()
                    || lease.lease_until_ms < now_ms
                    || lease.owner.as_deref() == Some(member.node_id.as_str())
            })
            .filter(|lease| loader.shards.local_shard(lease.shard).is_none());
        let mut wanted = target - mine.len();
        for lease in free {
            if wanted == 0 {
                break;
            }
            let asked = Instant::now();
            if let Some(taken) = cluster.take(lease.shard, &member.node_id, member.lease_ttl).await? {
                let held = Lease {
                    fence: taken.range_id,
                    until: asked + member.lease_ttl,
                };
                if let Err(error) = loader.take(lease.shard, Some(held)).await {
                    tracing::error!(shard = lease.shard, %error, "could not load a shard taken; releasing it");
                    cluster.release(lease.shard, &member.node_id, taken.range_id).await?;
                    continue;
                }
                wanted -= 1;
            }
        }
        return Ok(());
    }
    // Down to the floor: with shards ÷ nodes not whole, the nodes at the share may all be full
    // while one is below the floor; what they release goes to the nodes below the share.
    if mine.len() > floor && someone_short {
        for shard in mine.iter().rev().take(mine.len() - floor) {
            hand_over(member, cluster, loader, *shard).await?;
        }
    }
    Ok(())
}

/// Hands a shard over: stop serving it, write what it defers, release the lease.
async fn hand_over(
    member: &Member,
    cluster: &dyn ClusterStore,
    loader: &Loader,
    shard: ShardId,
) -> Result<(), StoreError> {
    let Some(local) = loader.shards.local_shard(shard) else {
        return Ok(());
    };
    let fence = local.fence;
    loader.give_up(shard, true).await;
    if let Some(fence) = fence {
        cluster.release(shard, &member.node_id, fence).await?;
    }
    Ok(())
}

/// Hands every shard over and leaves the cluster (SIGTERM).
async fn leave(member: &Member, cluster: &dyn ClusterStore, loader: &Loader) {
    for shard in loader.shards.local_ids() {
        if let Err(error) = hand_over(member, cluster, loader, shard).await {
            tracing::warn!(shard, %error, "could not hand the shard over; its lease will expire");
        }
    }
    if let Err(error) = cluster.remove_node(&member.node_id).await {
        tracing::warn!(%error, "could not leave the cluster; its entry will go stale");
    }
    tracing::info!(node = %member.node_id, "left the cluster");
}
