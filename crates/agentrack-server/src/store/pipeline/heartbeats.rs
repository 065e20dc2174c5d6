//! Heartbeat coalescing: of the heartbeats published since the last write, only the latest per
//! execution is kept for the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentrack::ExecutionId;

use crate::serialized_event::SerializedEvent;

/// The latest unwritten heartbeat of each execution, and how long the oldest has waited.
#[derive(Debug, Default)]
pub(super) struct PendingHeartbeats {
    latest: HashMap<ExecutionId, Arc<SerializedEvent>>,
    since: Option<Instant>,
}

impl PendingHeartbeats {
    /// Keeps `heartbeat` as the one to write for `id`, replacing an older one.
    pub(super) fn hold(&mut self, id: ExecutionId, heartbeat: Arc<SerializedEvent>) {
        self.latest.insert(id, heartbeat);
        self.since.get_or_insert_with(Instant::now);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// The executions with a heartbeat waiting.
    pub(super) fn ids(&self) -> impl Iterator<Item = ExecutionId> + '_ {
        self.latest.keys().copied()
    }

    /// Whether the oldest waiting heartbeat has waited `flush` or longer.
    pub(super) fn due(&self, flush: Duration) -> bool {
        self.since.is_some_and(|since| since.elapsed() >= flush)
    }

    /// How long until the oldest waiting heartbeat is due, if any waits.
    pub(super) fn until_due(&self, flush: Duration) -> Option<Duration> {
        self.since.map(|since| flush.saturating_sub(since.elapsed()))
    }

    /// Takes the waiting heartbeat of `id`, to be written now.
    pub(super) fn take(&mut self, id: ExecutionId) -> Option<Arc<SerializedEvent>> {
        let taken = self.latest.remove(&id);
        if self.latest.is_empty() {
            self.since = None;
        }
        taken
    }
}
