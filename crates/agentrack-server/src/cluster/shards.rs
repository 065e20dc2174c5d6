//! The shards this node serves, and where every other shard is: the one place that decides
//! whether an execution is answered here, forwarded, or not answerable right now.
//!
//! Each shard this node owns has a tracker of its own (its own sequence numbering, deadlines and
//! monitor): taking a shard over is loading exactly that tracker, giving it up is dropping it.
//! A store made for one node has a single shard, always here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use agentrack::{
    Change, ExecutionId, ExecutionRecord, MonitorHandle, NewExecution, Tracker, TrackerConfig, TrackerError,
};
use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};

use crate::quotas::NamedBreakers;
use crate::store::{ShardId, shard_of, shard_of_name};

/// A shard's fencing number and how long this node may trust its lease.
#[derive(Debug, Clone, Copy)]
pub struct Lease {
    /// The fencing number every write of the shard carries.
    pub fence: i64,
    /// Until when the lease surely holds, by this node's clock: measured from before the
    /// store was asked, so it ends no later than the store's own expiry.
    pub until: Instant,
}

/// One shard served here.
#[derive(Debug)]
pub struct LocalShard {
    /// Its number.
    pub id: ShardId,
    /// Its executions, deadlines and breakers.
    pub tracker: Tracker,
    /// Its fencing number on a shared store.
    pub fence: Option<i64>,
    /// Its named breakers by tenant and when each was last used (for their quota).
    pub named_breakers: NamedBreakers,
    /// Where `until` counts from (its lease's end is kept as ms after it, to be read lock-free).
    base: Instant,
    /// When the lease ends, in ms after `base`; `u64::MAX` without a lease (a single node).
    lease_until_ms: AtomicU64,
    monitor: Mutex<Option<MonitorHandle>>,
}

impl LocalShard {
    /// A shard served here under `lease` (`None` on a store of one node's own), its monitor
    /// running.
    pub fn new(id: ShardId, tracker: Tracker, lease: Option<Lease>) -> Self {
        let monitor = tracker.spawn_monitor();
        let shard = Self {
            id,
            tracker,
            fence: lease.map(|lease| lease.fence),
            named_breakers: NamedBreakers::default(),
            base: Instant::now(),
            lease_until_ms: AtomicU64::new(u64::MAX),
            monitor: Mutex::new(Some(monitor)),
        };
        if let Some(lease) = lease {
            shard.extend_lease(lease.until);
        }
        shard
    }

    /// Records a renewal: the lease holds until `until`.
    pub fn extend_lease(&self, until: Instant) {
        let ms = u64::try_from(until.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX);
        self.lease_until_ms.store(ms, Ordering::Release);
    }

    /// Whether the lease still holds: a node that paused past it (and has not yet learnt it
    /// lost the shard) must not answer for it — another node may own it already.
    pub fn lease_holds(&self) -> bool {
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        now < self.lease_until_ms.load(Ordering::Acquire)
    }

    /// Stops its monitor (before it is handed over or dropped).
    pub async fn stop(&self) {
        let monitor = self.monitor.lock().take();
        if let Some(monitor) = monitor {
            monitor.stop().await;
        }
    }
}

/// Who serves a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// Nobody known right now (being taken over, or the cluster is starting).
    Unknown,
    /// This node.
    Here,
    /// Another node, reachable at its advertised URL.
    There {
        /// Its id.
        node_id: String,
        /// How to reach it.
        url: String,
    },
}

/// Where a request about a shard goes.
#[derive(Debug, Clone)]
pub enum Route {
    /// Answered here.
    Local(Arc<LocalShard>),
    /// Forwarded to the owner at this URL.
    Remote(String),
    /// Nobody serves it right now (503, retry).
    Unavailable,
}

/// The shards of the store, as this node sees them.
#[derive(Debug)]
pub struct Shards {
    count: u16,
    local: DashMap<ShardId, Arc<LocalShard>>,
    owners: RwLock<Vec<Owner>>,
    config: TrackerConfig,
}

impl Shards {
    /// `count` shards, none served yet; `config` is every shard tracker's.
    pub fn new(count: u16, config: TrackerConfig) -> Self {
        Self {
            count: count.max(1),
            local: DashMap::new(),
            owners: RwLock::new(vec![Owner::Unknown; usize::from(count.max(1))]),
            config,
        }
    }

    /// How many shards the store has.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// The configuration of every shard's tracker.
    pub fn config(&self) -> &TrackerConfig {
        &self.config
    }

    /// The shard of an execution.
    pub fn shard_of(&self, id: ExecutionId) -> ShardId {
        shard_of(id, self.count)
    }

    /// The shard of a named breaker (its tenant-qualified key).
    pub fn shard_of_breaker(&self, key: &str) -> ShardId {
        shard_of_name(key, self.count)
    }

    /// Starts serving a shard.
    pub fn serve(&self, shard: Arc<LocalShard>) {
        let id = shard.id;
        self.local.insert(id, shard);
        self.set_owner(id, Owner::Here);
    }

    /// Stops serving a shard; returns it (to stop its monitor) if it was served.
    pub fn drop_shard(&self, id: ShardId) -> Option<Arc<LocalShard>> {
        let removed = self.local.remove(&id).map(|(_, shard)| shard);
        if removed.is_some() {
            self.set_owner(id, Owner::Unknown);
        }
        removed
    }

    /// Records who owns a shard (for shards not served here).
    pub fn set_owner(&self, id: ShardId, owner: Owner) {
        if let Some(slot) = self.owners.write().get_mut(usize::from(id)) {
            *slot = owner;
        }
    }

    /// Who owns a shard, as last seen.
    pub fn owner(&self, id: ShardId) -> Owner {
        self.owners
            .read()
            .get(usize::from(id))
            .cloned()
            .unwrap_or(Owner::Unknown)
    }

    /// Where a request about `shard` goes.
    pub fn route_shard(&self, shard: ShardId) -> Route {
        if let Some(local) = self.local.get(&shard) {
            return if local.lease_holds() {
                Route::Local(Arc::clone(local.value()))
            } else {
                Route::Unavailable
            };
        }
        match self.owner(shard) {
            Owner::There { url, .. } => Route::Remote(url),
            Owner::Here | Owner::Unknown => Route::Unavailable,
        }
    }

    /// Where a request about execution `id` goes.
    pub fn route(&self, id: ExecutionId) -> Route {
        self.route_shard(self.shard_of(id))
    }

    /// The served shard holding `id`, if this node serves it (under a lease that holds).
    pub fn local(&self, id: ExecutionId) -> Option<Arc<LocalShard>> {
        self.local
            .get(&self.shard_of(id))
            .filter(|shard| shard.lease_holds())
            .map(|shard| Arc::clone(shard.value()))
    }

    /// A served shard by number.
    pub fn local_shard(&self, shard: ShardId) -> Option<Arc<LocalShard>> {
        self.local.get(&shard).map(|shard| Arc::clone(shard.value()))
    }

    /// Every shard served here.
    pub fn locals(&self) -> Vec<Arc<LocalShard>> {
        let mut shards: Vec<_> = self.local.iter().map(|shard| Arc::clone(shard.value())).collect();
        shards.sort_by_key(|shard| shard.id);
        shards
    }

    /// The numbers of the shards served here.
    pub fn local_ids(&self) -> Vec<ShardId> {
        let mut ids: Vec<ShardId> = self.local.iter().map(|shard| *shard.key()).collect();
        ids.sort_unstable();
        ids
    }

    /// An execution's record, if a shard served here holds it in memory.
    pub fn get(&self, id: ExecutionId) -> Option<ExecutionRecord> {
        self.local(id).and_then(|shard| shard.tracker.get(id).ok())
    }

    /// Creates an execution on a shard served here, under an id that lands on it; `None` when
    /// this node serves no shard.
    ///
    /// # Errors
    ///
    /// What [`Tracker::create`] refuses.
    pub fn create(&self, new: NewExecution) -> Option<Result<(Arc<LocalShard>, Change), TrackerError>> {
        let mut here = vec![false; usize::from(self.count)];
        let mut any = false;
        for shard in self.locals().iter().filter(|shard| shard.lease_holds()) {
            if let Some(slot) = here.get_mut(usize::from(shard.id)) {
                *slot = true;
            }
            any = true;
        }
        if !any {
            return None;
        }
        // Ids are random; with k of n shards here, one in n/k lands on one of them.
        let id = loop {
            let id = ExecutionId::new();
            if here.get(usize::from(self.shard_of(id))) == Some(&true) {
                break id;
            }
        };
        let shard = self.local(id)?;
        let created = shard
            .tracker
            .create_as(id, new)
            .map(|change| (Arc::clone(&shard), change));
        Some(created)
    }

    /// Every tracker served here (to visit or count their executions).
    pub fn trackers(&self) -> Vec<Tracker> {
        self.locals().into_iter().map(|shard| shard.tracker.clone()).collect()
    }

    /// User `user`'s executions in every shard served here, through each tracker's user index.
    pub fn by_user(&self, user: &str) -> Vec<ExecutionRecord> {
        self.locals()
            .iter()
            .flat_map(|shard| shard.tracker.by_user(user))
            .collect()
    }
}
