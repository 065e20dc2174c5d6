//! Deadlines: sharded queues of `(due, execution)` entries, earliest first.
//!
//! Each alive execution has exactly one armed entry, at its earliest possible deadline. A
//! heartbeat only stores a timestamp; when the entry comes due, the monitor rechecks the record
//! and re-arms it if the deadline moved (as Temporal's timers do). A tick therefore costs
//! O(due · log n) however many executions are alive. Sharding keeps creates on different threads
//! off each other's lock.
//!
//! Two orders, for two patterns of use. Execution deadlines ([`Heap`]) are armed on every
//! create and taken only when due, by the monitor: a binary heap adds an entry whose time is
//! later than most in about one comparison, and never allocates but to grow. Completion times
//! ([`Ordered`]) are taken as often as they are added — the oldest finished record is evicted
//! on each completion at the `max_finished` cap — and a heap's pop sifts through the whole depth
//! of its array every time; an ordered set takes its first entry on a path of nodes that stays
//! in cache. Out-of-order times (a restored record, a back-dated edit) cost both a log-time
//! insert.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::time::Duration;

use parking_lot::Mutex;

use crate::id::ExecutionId;

const SHARDS: usize = 16;

type Entry = (Duration, ExecutionId);

/// How one shard keeps its entries.
pub(crate) trait Entries: Default {
    fn add(&mut self, entry: Entry);
    fn earliest(&self) -> Option<Entry>;
    fn take_earliest(&mut self) -> Option<Entry>;
}

/// A binary heap: cheapest to add to.
#[derive(Debug, Default)]
pub(crate) struct Heap(BinaryHeap<Reverse<Entry>>);

impl Entries for Heap {
    fn add(&mut self, entry: Entry) {
        self.0.push(Reverse(entry));
    }

    fn earliest(&self) -> Option<Entry> {
        self.0.peek().map(|Reverse(entry)| *entry)
    }

    fn take_earliest(&mut self) -> Option<Entry> {
        self.0.pop().map(|Reverse(entry)| entry)
    }
}

/// An ordered set: cheapest to take the earliest from. Two identical entries are one, which is
/// harmless: an entry only says "look at this execution then".
#[derive(Debug, Default)]
pub(crate) struct Ordered(BTreeSet<Entry>);

impl Entries for Ordered {
    fn add(&mut self, entry: Entry) {
        self.0.insert(entry);
    }

    fn earliest(&self) -> Option<Entry> {
        self.0.first().copied()
    }

    fn take_earliest(&mut self) -> Option<Entry> {
        self.0.pop_first()
    }
}

#[derive(Debug)]
pub(crate) struct DeadlineQueue<E: Entries = Heap> {
    shards: Vec<Mutex<E>>,
}

impl<E: Entries> DeadlineQueue<E> {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(E::default())).collect(),
        }
    }

    pub(crate) fn arm(&self, id: ExecutionId, due: Duration) {
        self.shards[id.shard(SHARDS)].lock().add((due, id));
    }

    /// Removes and returns every entry due at or before `now`.
    pub(crate) fn pop_due(&self, now: Duration) -> Vec<Entry> {
        let mut due = Vec::new();
        for shard in &self.shards {
            let mut entries = shard.lock();
            while entries.earliest().is_some_and(|(at, _)| at <= now) {
                due.extend(entries.take_earliest());
            }
        }
        due.sort_unstable();
        due
    }

    /// Removes and returns the earliest entry, whatever its time.
    pub(crate) fn pop_earliest(&self) -> Option<Entry> {
        let shard = self
            .shards
            .iter()
            .filter_map(|shard| shard.lock().earliest().map(|entry| (entry, shard)))
            .min_by_key(|(entry, _)| *entry)
            .map(|(_, shard)| shard)?;
        shard.lock().take_earliest()
    }
}
