//! What waits for the flush: the latest heartbeat of each execution (only the latest is worth
//! storing), and the rows of executions whose recent changes can be rebuilt from their events
//! (see [`replay`](crate::store)).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentrack::ExecutionId;

use crate::serialized_event::SerializedEvent;

/// Heartbeats and rows waiting to be written, and how long the oldest has waited.
#[derive(Debug, Default)]
pub(super) struct Deferred {
    heartbeats: HashMap<ExecutionId, Arc<SerializedEvent>>,
    rows: HashSet<ExecutionId>,
    since: Option<Instant>,
}

impl Deferred {
    /// Keeps `heartbeat` as the one to write for `id`, replacing an older one.
    pub(super) fn hold_heartbeat(&mut self, id: ExecutionId, heartbeat: Arc<SerializedEvent>) {
        self.heartbeats.insert(id, heartbeat);
        self.since.get_or_insert_with(Instant::now);
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
        let taken = self.heartbeats.remove(&id);
        if self.is_empty() {
            self.since = None;
        }
        taken
    }
}
