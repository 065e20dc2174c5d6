//! What one transaction writes: events for the log and materialised execution rows.

use std::sync::Arc;

use agentrack::{Event, ExecutionId, ExecutionRecord};

use super::ShardId;
use crate::serialized_event::SerializedEvent;

/// What to do with one execution's materialised row.
#[derive(Debug, Clone)]
pub enum RowUpdate {
    /// Write this snapshot (taken after every event of the batch for the execution).
    Snapshot(Box<ExecutionRecord>),
    /// The record left memory before it could be snapshotted: apply its terminal event to the
    /// stored row.
    Finish {
        /// The execution.
        execution_id: ExecutionId,
        /// Its terminal event.
        event: Arc<Event>,
    },
}

/// One shard's share of a transaction; [`StoreWriter::commit`](super::StoreWriter::commit) writes
/// several in one.
#[derive(Debug, Default)]
pub struct Batch {
    /// The shard written (0 on a store with one shard).
    pub shard: ShardId,
    /// The writer's fencing number for the shard (its lease's `range_id`): the transaction is
    /// refused, whole, when the shard's number has moved on. `None` on a store nobody else shares.
    pub fence: Option<i64>,
    /// Events to append, in the shard's order, each serialised once.
    pub events: Vec<Arc<SerializedEvent>>,
    /// Materialised rows to write, at most one per execution.
    pub rows: Vec<RowUpdate>,
    /// When the reservation moved: sequence numbers up to this one may be published before they
    /// are stored (coalesced heartbeats are published at once and written later, or never); after
    /// a crash, numbering resumes above it, so a number a subscriber saw is never reused. `None`
    /// when it did not move (nothing to write for it).
    pub reserved: Option<u64>,
    /// Every event of these rows' executions that a snapshot may not reflect has a higher global
    /// sequence number than this: where a replay of the log onto the rows starts (see
    /// `replay.rs`).
    pub replay_from: u64,
}

impl Batch {
    /// Whether there is nothing to write at all.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.rows.is_empty() && self.reserved.is_none()
    }
}
