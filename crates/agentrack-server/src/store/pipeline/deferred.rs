//! What waits for the flush: the latest heartbeat of each execution (only the latest is worth
//! storing), and the rows of executions whose recent changes can be rebuilt from their events
//! (see [`replay`](crate::store)).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentrack::ExecutionId;

use crate::serialized_event::SerializedEvent;

/// Most heartbeats of one execution published before one is written: with this bound, a node
/// that takes the execution over from the store (after a crash or a takeover) numbers its
/// events from [`SEQ_HEADROOM`] past the stored sequence number and never reuses one a
/// subscriber has seen — provided that jump is itself written before a heartbeat above it is
/// published (`Pipeline::write_next_heartbeat`), or the node after would jump from the same place.
pub const HEARTBEATS_UNWRITTEN: u32 = 32;

/// How far past its stored sequence number an execution taken from the store numbers on: more
/// than the heartbeats it may have published unwritten ([`HEARTBEATS_UNWRITTEN`]).
pub const SEQ_HEADROOM: u64 = 2 * HEARTBEATS_UNWRITTEN as u64;

/// Heartbeats and rows waiting to be written, and how long the oldest has waited.
#[derive(Debug, Default)]
pub(super) struct Deferred {
    /// Per execution: the latest heartbeat, and how many were published since one was written.
    heartbeats: HashMap<ExecutionId, (Arc<SerializedEvent>, u32)>,
    rows: HashSet<ExecutionId>,
    /// Executions whose next heartbeat is written, not held.
    write_next: HashSet<ExecutionId>,
    since: Option<Instant>,
}

impl Deferred {
    /// Keeps `heartbeat` as the one to write for `id`, replacing an older one. Returns whether
    /// it must be written now: `id` has reached [`HEARTBEATS_UNWRITTEN`], or was restored and
    /// this is its first heartbeat since ([`Self::write_next_heartbeat`]).
    pub(super) fn hold_heartbeat(&mut self, id: ExecutionId, heartbeat: Arc<SerializedEvent>) -> bool {
        let count = self.heartbeats.get(&id).map_or(0, |(_, count)| *count) + 1;
        self.heartbeats.insert(id, (heartbeat, count));
        self.since.get_or_insert_with(Instant::now);
        // Empty but just after a takeover: spares a lookup per heartbeat.
        count >= HEARTBEATS_UNWRITTEN || (!self.write_next.is_empty() && self.write_next.remove(&id))
    }

    /// Has the next heartbeat of each of `ids` written at once (see [`Self::hold_heartbeat`]).
    pub(super) fn write_next_heartbeat(&mut self, ids: Vec<ExecutionId>) {
        self.write_next.extend(ids);
    }

    /// Notes that `id`'s row is behind its written events.
    pub(super) fn hold_row(&mut self, id: ExecutionId) {
        self.rows.insert(id);
        self.since.get_or_insert_with(Instant::now);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.heartbeats.is_empty() && self.rows.is_empty()
    }

    /// The executions with something waiting.
    pub(super) fn ids(&self) -> impl Iterator<Item = ExecutionId> + '_ {
        self.heartbeats.keys().chain(self.rows.iter()).copied()
    }

    /// Whether the oldest waiting item has waited `flush` or longer.
    pub(super) fn due(&self, flush: Duration) -> bool {
        self.since.is_some_and(|since| since.elapsed() >= flush)
    }

    /// How long until the oldest waiting item is due, if any waits.
    pub(super) fn until_due(&self, flush: Duration) -> Option<Duration> {
        self.since.map(|since| flush.saturating_sub(since.elapsed()))
    }

    /// `id`'s row is written now: takes its waiting heartbeat, to be written with it.
    pub(super) fn take(&mut self, id: ExecutionId) -> Option<Arc<SerializedEvent>> {
        self.rows.remove(&id);
        self.write_next.remove(&id);
        let taken = self.heartbeats.remove(&id).map(|(heartbeat, _)| heartbeat);
        if self.is_empty() {
            self.since = None;
        }
        taken
    }
}
