//! What start-up reads back, and what housekeeping removes.

use agentrack::{ExecutionRecord, ExecutionState};

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
    /// Whether an admin token exists.
    pub has_admin_token: bool,
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

/// What a retention purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Finished executions removed.
    pub executions: u64,
    /// Their events removed.
    pub events: u64,
}
