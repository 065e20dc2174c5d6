//! What start-up reads back, and what housekeeping removes.

use agentrack::{ExecutionId, ExecutionRecord, ExecutionState};
use chrono::{DateTime, Utc};

/// Everything needed to rebuild the tracker after a restart.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The stored executions worth keeping in memory (alive ones, and those finished since the
    /// cut-off), oldest first.
    pub records: Vec<ExecutionRecord>,
    /// How many stored executions there are, by tenant, user and state.
    pub counts: Vec<StateCount>,
    /// No global sequence number above this was ever published: the highest stored event or
    /// the latest reservation, whichever is higher. Numbering resumes after it.
    pub high_water: u64,
    /// The alive executions whose rows were behind their log and were caught up by replaying it:
    /// their rows are to be written again.
    pub replayed: Vec<ExecutionId>,
}

/// How many stored executions one user of one tenant has in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateCount {
    /// The tenant.
    pub tenant: String,
    /// The user.
    pub user_id: String,
    /// The state.
    pub state: ExecutionState,
    /// How many.
    pub count: u64,
}

/// What a retention purge removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cutoff {
    /// Finished executions that completed before this go, rows and all.
    pub finished_before: DateTime<Utc>,
    /// Events older than this go from the log (their executions' rows keep the history). Never
    /// later than what a replay onto a lagging row may still need (see the pipeline).
    pub events_before: DateTime<Utc>,
    /// The shards to purge: those the purging node serves (the log horizon above is its own
    /// deferral's), so nodes sharing a store each purge their own.
    pub shards: Vec<super::ShardId>,
}

/// What a retention purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Finished executions removed.
    pub executions: u64,
    /// Their events removed.
    pub events: u64,
}
