//! Read requests and their answers.

use agentrack::{ExecutionId, ExecutionRecord, ExecutionState};

use super::ShardId;

/// A page request for executions, newest first. Unset filters match everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this user.
    pub user_id: Option<String>,
    /// Only this thread.
    pub thread_id: Option<String>,
    /// Only this agent.
    pub agent_name: Option<String>,
    /// Only these states.
    pub states: Option<Vec<ExecutionState>>,
    /// Only executions created before this one (the cursor).
    pub before: Option<ExecutionId>,
    /// At most this many.
    pub limit: usize,
}

/// A page of executions.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The executions, newest first.
    pub records: Vec<ExecutionRecord>,
    /// Pass as the cursor to get the next page; `None` on the last one.
    pub next_cursor: Option<ExecutionId>,
}

/// Which part of one shard's log to read: after one number, up to and including another.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogRange {
    /// The shard.
    pub shard: ShardId,
    /// Events strictly after this number.
    pub after: u64,
    /// Events up to and including this one.
    pub up_to: u64,
}

/// A request for stored events: parts of shards' logs, each in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventQuery {
    /// The parts of the log to read.
    pub ranges: Vec<LogRange>,
    /// Only this tenant's executions.
    pub tenant: Option<String>,
    /// Only this user's executions.
    pub user_id: Option<String>,
    /// Only this thread's executions.
    pub thread_id: Option<String>,
    /// Only this execution.
    pub execution_id: Option<ExecutionId>,
    /// At most this many.
    pub limit: usize,
}

/// An event read back from the log.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Its shard.
    pub shard: ShardId,
    /// Its number in the shard's log (its `global_seq`).
    pub global_seq: u64,
    /// Its JSON, as it was written.
    pub json: String,
}
