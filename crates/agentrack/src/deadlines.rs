//! Deadlines: a sharded min-heap of `(due, execution)` entries.
//!
//! Each alive execution has exactly one armed entry, at its earliest possible deadline. A
//! heartbeat only stores a timestamp; when the entry comes due, the monitor rechecks the record
//! and re-arms it if the deadline moved (as Temporal's timers do). A tick therefore costs
//! O(due · log n) however many executions are alive. Sharding keeps creates on different threads
//! off each other's lock.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use parking_lot::Mutex;

use crate::id::ExecutionId;

const SHARDS: usize = 16;

type Heap = BinaryHeap<Reverse<(Duration, ExecutionId)>>;

#[derive(Debug)]
pub(crate) struct DeadlineQueue {
    shards: Vec<Mutex<Heap>>,
}

impl DeadlineQueue {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(BinaryHeap::new())).collect(),
        }
    }

    pub(crate) fn arm(&self, id: ExecutionId, due: Duration) {
        self.shards[id.shard(SHARDS)].lock().push(Reverse((due, id)));
    }

    /// Removes and returns every entry due at or before `now`.
    pub(crate) fn pop_due(&self, now: Duration) -> Vec<(Duration, ExecutionId)> {
        let mut due = Vec::new();
        for shard in &self.shards {
            let mut heap = shard.lock();
            while heap.peek().is_some_and(|Reverse((at, _))| *at <= now) {
                if let Some(Reverse(entry)) = heap.pop() {
                    due.push(entry);
                }
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
            .filter_map(|shard| shard.lock().peek().map(|Reverse(entry)| (*entry, shard)))
            .min_by_key(|(entry, _)| *entry)
            .map(|(_, shard)| shard)?;
        shard.lock().pop().map(|Reverse(entry)| entry)
    }
}
