//! Taking a shard into service and out of it: the one sequence both a single node's start-up
//! and a cluster's shard moves go through.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentrack::{Tracker, TrackerConfig};

use super::{Lease, LocalShard, Shards};
use crate::hub::Hub;
use crate::metrics::ServerMetrics;
use crate::serialized_event::SerializedEvent;
use crate::store::pipeline::{Pipeline, SEQ_HEADROOM};
use crate::store::{ShardId, Store, StoreError};

/// Stored events read per query when catching the hub up on a shard's log.
const CATCH_UP_PAGE: usize = 1000;

/// Everything a shard is loaded into.
#[derive(Debug, Clone)]
pub struct Loader {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The writer every served shard's tracker feeds.
    pub pipeline: Arc<Pipeline>,
    /// The shards served here.
    pub shards: Arc<Shards>,
    /// The per-shard counts.
    pub metrics: Arc<ServerMetrics>,
    /// The live fan-out.
    pub hub: Arc<Hub>,
    /// Every shard tracker's configuration.
    pub config: TrackerConfig,
    /// How long heartbeats wait to be written: how far a stored heartbeat may lag.
    pub heartbeat_flush: Duration,
}

/// How long an agent may take to find a shard's new owner after a takeover: twice the
/// `Retry-After` its requests were answered with meanwhile.
pub const RECONNECT: Duration = Duration::from_secs(2 * crate::api::error::SHARD_RETRY_AFTER);

impl Loader {
    /// Starts serving `shard` (its `lease` already held; none on a store of one node's own): the
    /// hub first catches up on what the previous owner committed, then the shard's alive
    /// executions and recently finished ones are loaded into a tracker of its own, which joins
    /// the pipeline. Returns how many executions were loaded.
    ///
    /// Alive executions get time to hear from their agents: after a restart of a single node, a
    /// full heartbeat window; after a takeover, their stored heartbeat counts, late by at most a
    /// heartbeat flush, and agents get at least [`RECONNECT`] to find this node
    /// ([`Tracker::restore_after_failover`]) — so a failover kills no agent that kept
    /// heartbeating, and one that stopped dies by its own deadline (or the takeover plus
    /// [`RECONNECT`]).
    ///
    /// # Errors
    ///
    /// The store cannot be read, or the pipeline has stopped; nothing is served then.
    pub async fn take(&self, shard: ShardId, lease: Option<Lease>) -> Result<usize, StoreError> {
        let fence = lease.map(|lease| lease.fence);
        let started = Instant::now();
        self.catch_up(shard).await?;
        // Finished executions older than the tracker keeps in memory stay in the store only.
        let cutoff = chrono::Duration::from_std(self.config.cleanup_age)
            .ok()
            .and_then(|age| chrono::Utc::now().checked_sub_signed(age))
            .unwrap_or_default();
        let mut loaded = self.store.load(shard, cutoff).await?;
        self.metrics.restore(shard, &loaded.counts, &loaded.records);
        let tracker = Tracker::with_config(self.config.clone());
        let restored = loaded.records.len();
        let mut renumbered = Vec::new();
        for mut record in std::mem::take(&mut loaded.records) {
            let id = record.execution_id;
            if record.is_alive() {
                // Past any heartbeat the previous owner published but had not written yet.
                record.seq += SEQ_HEADROOM;
                renumbered.push(id);
            }
            let restored = match lease {
                Some(_) => tracker.restore_after_failover(record, self.heartbeat_flush, RECONNECT),
                None => tracker.restore(record),
            };
            if let Err(error) = restored {
                tracing::error!(execution_id = %id, %error, "could not restore an execution");
            }
        }
        tracker.resume_sequence(loaded.high_water);
        // This tracker numbers above the high-water mark; everything up to it is in the store.
        self.hub.advance(shard, loaded.high_water);
        self.pipeline.attach(shard, &tracker, loaded.high_water, fence)?;
        self.pipeline.hold_rows(shard, std::mem::take(&mut loaded.replayed));
        self.pipeline.write_next_heartbeat(shard, renumbered);
        self.shards.serve(Arc::new(LocalShard::new(shard, tracker, lease)));
        tracing::info!(
            shard,
            restored,
            high_water = loaded.high_water,
            millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "serving the shard"
        );
        Ok(restored)
    }

    /// Stops serving `shard`: requests about it stop being answered here at once, its monitor
    /// stops, and it leaves the pipeline — after writing what it defers when `hand_over` (the
    /// next owner finds everything), or at once when it was lost (nothing more of it may be
    /// written).
    pub async fn give_up(&self, shard: ShardId, hand_over: bool) {
        if let Some(local) = self.shards.drop_shard(shard) {
            local.stop().await;
        }
        self.pipeline.detach(shard, hand_over).await;
        self.metrics.forget(shard);
        tracing::info!(shard, hand_over, "no longer serving the shard");
    }

    /// Publishes what is in the shard's log beyond what the hub has published: on a shared
    /// store, the previous owner's last events, before this node numbers any of its own.
    async fn catch_up(&self, shard: ShardId) -> Result<(), StoreError> {
        let Some(cluster) = self.store.cluster() else {
            return Ok(());
        };
        loop {
            let after = self.hub.position(shard);
            let events = cluster.events_after(shard, after, CATCH_UP_PAGE).await?;
            for stored in &events {
                if let Some(event) = SerializedEvent::from_stored(shard, &stored.json) {
                    self.hub.publish(&Arc::new(event));
                }
            }
            if events.len() < CATCH_UP_PAGE {
                return Ok(());
            }
        }
    }
}
