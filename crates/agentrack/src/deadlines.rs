//! Deadlines: a sharded ordered set of `(due, execution)` entries.
//!
//! Each alive execution has exactly one armed entry, at its earliest possible deadline. A
//! heartbeat only stores a timestamp; when the entry comes due, the monitor rechecks the record
//! and re-arms it if the deadline moved (as Temporal's timers do). A tick therefore costs
//! O(due · log n) however many executions are alive. Sharding keeps creates on different threads
//! off each other's lock.
//!
//! An ordered set rather than a binary heap: due times mostly grow (a create arms at now plus a
//! timeout, a completion at now), so entries are added at the set's right edge and taken at its
//! left one, both on paths of nodes that stay in cache, where a heap's pop sifted through the
//! whole depth of its array every time. Out-of-order times (a restored record, a back-dated
//! edit) cost a log-time insert, not a shift. Two identical entries are one: an entry only says
//! "look at this execution then".

use std::collections::BTreeSet;
use std::time::Duration;

use parking_lot::Mutex;

use crate::id::ExecutionId;

const SHARDS: usize = 16;

type Shard = BTreeSet<(Duration, ExecutionId)>;

#[derive(Debug)]
pub(crate) struct DeadlineQueue {
    shards: Vec<Mutex<Shard>>,
}

impl DeadlineQueue {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(BTreeSet::new())).collect(),
        }
    }

    pub(crate) fn arm(&self, id: ExecutionId, due: Duration) {
        self.shards[id.shard(SHARDS)].lock().insert((due, id));
    }

    /// Removes and returns every entry due at or before `now`.
    pub(crate) fn pop_due(&self, now: Duration) -> Vec<(Duration, ExecutionId)> {
        let mut due = Vec::new();
        for shard in &self.shards {
            let mut entries = shard.lock();
            while entries.first().is_some_and(|(at, _)| *at <= now) {
                due.extend(entries.pop_first());
            }
        }
        due.sort_unstable();
        due
    }

    /// Removes and returns the earliest entry, whatever its time.
    pub(crate) fn pop_earliest(&self) -> Option<(Duration, ExecutionId)> {
        let shard = self
            .shards
            .iter()
            .filter_map(|shard| shard.lock().first().map(|entry| (*entry, shard)))
            .min_by_key(|(entry, _)| *entry)
            .map(|(_, shard)| shard)?;
        shard.lock().pop_first()
    }
}
