//! Following the shards other nodes own: their committed events reach this node's subscribers
//! through the store.
//!
//! Why through the store rather than node-to-node streams: an event is published only once it is
//! committed anyway, a commit tells every node which shards' logs grew (PostgreSQL `NOTIFY`, sent
//! in the same transaction and delivered only if it commits), and reading the log from a position
//! is exactly what a resuming subscriber does — so a shard changing hands, a node dying or a
//! notification lost in an outage all end the same way: read the log after the position the hub
//! has reached, and the hub drops what it already published. The cost is one indexed read per
//! notified batch per node. Coalesced heartbeats of other nodes' executions arrive as they are
//! stored (at least every heartbeat flush), not one by one.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Shards;
use crate::app::AppState;
use crate::hub::Hub;
use crate::serialized_event::SerializedEvent;
use crate::store::{ShardId, Store, StoreError};

/// Stored events read per query.
const PAGE: usize = 1000;

/// How often every followed shard is read even without a notification: a safety net for
/// notifications lost while the listening connection was down.
const SWEEP: Duration = Duration::from_secs(5);

/// Follows the other nodes' shards until `shutdown`; reconnects by itself.
pub async fn follow(store: Arc<dyn Store>, shards: Arc<Shards>, hub: Arc<Hub>, shutdown: CancellationToken) {
    let Some(cluster) = store.cluster() else { return };
    // Start at the logs' heads: history is for subscribers that ask for it (`since`).
    loop {
        match cluster.log_heads().await {
            Ok(heads) => {
                for (shard, head) in heads {
                    if shards.local_shard(shard).is_none() {
                        hub.advance(shard, head);
                    }
                }
                break;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the logs' heads; retrying");
                if wait(&shutdown, Duration::from_secs(1)).await {
                    return;
                }
            }
        }
    }
    while !shutdown.is_cancelled() {
        let mut notifications = match cluster.listen().await {
            Ok(notifications) => notifications,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for the log's growth; retrying");
                if wait(&shutdown, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        sweep(store.as_ref(), &shards, &hub).await;
        let mut tick = tokio::time::interval(SWEEP);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                grown = notifications.recv() => match grown {
                    Some((shard, seq)) => {
                        if shards.local_shard(shard).is_none() && seq > hub.position(shard)
                            && let Err(error) = read(store.as_ref(), &hub, shard).await
                        {
                            tracing::warn!(shard, %error, "cannot read a followed shard's log");
                        }
                    }
                    // The listening connection is gone: listen again (and sweep).
                    None => break,
                },
                _ = tick.tick() => sweep(store.as_ref(), &shards, &hub).await,
            }
        }
    }
}

/// Forgets what this node's token cache holds of every token made or revoked on any node, as
/// the store tells, until `shutdown`. Whenever the listening connection is made again after it
/// was lost, the whole cache is forgotten: a revocation notified while it was down must not be
/// missed. (Before the first connection, a revocation elsewhere reaches this node through the
/// revoking node's call.)
pub async fn follow_tokens(state: AppState, shutdown: CancellationToken) {
    let Some(cluster) = state.store.cluster() else { return };
    let mut lost = false;
    while !shutdown.is_cancelled() {
        let mut notifications = match cluster.listen_tokens().await {
            Ok(notifications) => notifications,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for token changes; retrying");
                if wait(&shutdown, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        if lost {
            state.tokens.clear();
        }
        lost = true;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                hash = notifications.recv() => match hash {
                    Some(hash) => state.tokens.forget(&hash),
                    None => break,
                },
            }
        }
    }
}

/// Reads every followed shard's log past the hub's position.
async fn sweep(store: &dyn Store, shards: &Shards, hub: &Hub) {
    for shard in 0..shards.count() {
        if shards.local_shard(shard).is_some() {
            continue;
        }
        if let Err(error) = read(store, hub, shard).await {
            tracing::warn!(shard, %error, "cannot read a followed shard's log");
            return;
        }
    }
}

/// Publishes a shard's stored events past the hub's position.
async fn read(store: &dyn Store, hub: &Hub, shard: ShardId) -> Result<(), StoreError> {
    let Some(cluster) = store.cluster() else { return Ok(()) };
    loop {
        let events = cluster.events_after(shard, hub.position(shard), PAGE).await?;
        for stored in &events {
            if let Some(event) = SerializedEvent::from_stored(shard, &stored.json) {
                hub.publish(&Arc::new(event));
            }
        }
        if events.len() < PAGE {
            return Ok(());
        }
    }
}

/// Waits `delay` unless shut down first; returns whether it was.
async fn wait(shutdown: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(delay) => false,
    }
}
