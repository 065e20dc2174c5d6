//! The shards this node serves, and where every other shard is: the one place that decides
//! whether an execution is answered here, forwarded, or not answerable right now.
//!
//! Each shard this node owns has a tracker of its own (its own sequence numbering, deadlines and
//! monitor): taking a shard over is loading exactly that tracker, giving it up is dropping it.
//! A store made for one node has a single shard, always here.

use std::sync::Arc;

use agentrack::{
    Change, ExecutionId, ExecutionRecord, MonitorHandle, NewExecution, Tracker, TrackerConfig, TrackerError,
};
use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};

use crate::store::{ShardId, shard_of, shard_of_name};

/// One shard served here.
#[derive(Debug)]
pub struct LocalShard {
    /// Its number.
    pub id: ShardId,
    /// Its executions, deadlines and breakers.
    pub tracker: Tracker,
    /// Its fencing number on a shared store.
    pub fence: Option<i64>,
    monitor: Mutex<Option<MonitorHandle>>,
}

impl LocalShard {
    /// A shard served here, its monitor running.
    pub fn new(id: ShardId, tracker: Tracker, fence: Option<i64>) -> Self {
        let monitor = tracker.spawn_monitor();
        Self {
            id,
            tracker,
            fence,
            monitor: Mutex::new(Some(monitor)),
        }
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
            return Route::Local(Arc::clone(local.value()));
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

    /// The served shard holding `id`, if this node serves it.
    pub fn local(&self, id: ExecutionId) -> Option<Arc<LocalShard>> {
        self.local
            .get(&self.shard_of(id))
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
        let locals = self.locals();
        if locals.is_empty() {
            return None;
        }
        // Ids are random; with k of n shards here, one in n/k lands on one of them.
        let id = loop {
            let id = ExecutionId::new();
            if self.local.contains_key(&self.shard_of(id)) {
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
}
