//! The store: where events and executions outlive the process.
//!
//! The boundary is deliberately narrow so that a PostgreSQL backend can sit beside the embedded
//! SQLite one without the API layer noticing:
//!
//! - [`Store`] answers reads (one execution, a page of executions, stored events after a global
//!   sequence number, a token) as boxed futures, and loads everything back at start-up.
//! - [`StoreWriter`] is the single writer. It is driven by the group-commit pipeline in
//!   [`writer`], which runs it on a dedicated thread and hands it one
//!   [`Batch`] per transaction.
//!
//! What goes in a batch (which events, which execution snapshots, heartbeat coalescing) is
//! decided by the pipeline, not by the backend, so every backend gets the same semantics.

pub mod sqlite;
pub mod writer;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use agentrack::{Event, ExecutionId, ExecutionRecord, ExecutionState};
use chrono::{DateTime, Utc};

use crate::auth::TokenGrant;

/// A boxed future returned by [`Store`] reads.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database refused or failed.
    #[error("database error: {0}")]
    Database(String),
    /// A stored value could not be decoded.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The data directory or file could not be used.
    #[error("cannot use the data directory {path}: {reason}")]
    Io {
        /// The path involved.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The stored schema is newer than this binary understands.
    #[error("the store has schema version {found}, newer than the {supported} this binary supports")]
    SchemaTooNew {
        /// The version on disk.
        found: i64,
        /// The newest version this binary knows.
        supported: i64,
    },
    /// A blocking task could not run (the runtime is shutting down).
    #[error("store task failed: {0}")]
    Task(String),
}

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

/// One transaction's worth of changes.
#[derive(Debug, Default)]
pub struct Batch {
    /// Events to append, in global order, each serialised once.
    pub events: Vec<Arc<writer::SerializedEvent>>,
    /// Materialised rows to write.
    pub rows: Vec<RowUpdate>,
    /// Sequence numbers up to this one may be published before they are stored (coalesced
    /// heartbeats are published at once and written later, or never): after a crash, numbering
    /// resumes above it, so a number a subscriber saw is never reused.
    pub reserved: u64,
}

impl Batch {
    /// Whether there is nothing to write but the reservation.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.rows.is_empty()
    }
}

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

/// A request for stored events, in global order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventQuery {
    /// Events strictly after this global sequence number.
    pub after: u64,
    /// Events up to and including this one.
    pub up_to: u64,
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
    /// Its global sequence number.
    pub global_seq: u64,
    /// Its JSON, as it was written.
    pub json: String,
}

/// What a retention purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Finished executions removed.
    pub executions: u64,
    /// Their events removed.
    pub events: u64,
}

/// The read side of a store, plus start-up loading.
pub trait Store: Send + Sync + 'static {
    /// Loads what start-up needs (blocking): alive executions and those finished since
    /// `finished_since`, counts of all, and the sequence high-water mark.
    ///
    /// # Errors
    ///
    /// A database or decoding error.
    fn load(&self, finished_since: DateTime<Utc>) -> Result<Loaded, StoreError>;

    /// Opens the single writer (blocking; one per store).
    ///
    /// # Errors
    ///
    /// A database error.
    fn writer(&self) -> Result<Box<dyn StoreWriter>, StoreError>;

    /// One stored execution.
    fn get(&self, id: ExecutionId) -> StoreFuture<'_, Option<ExecutionRecord>>;

    /// A page of stored executions, newest first.
    fn list(&self, query: ListQuery) -> StoreFuture<'_, Page>;

    /// Stored events after a global sequence number, oldest first.
    fn events(&self, query: EventQuery) -> StoreFuture<'_, Vec<StoredEvent>>;

    /// The token whose SHA-256 hash (lower-case hex) is `hash`.
    fn token(&self, hash: String) -> StoreFuture<'_, Option<TokenGrant>>;
}

/// The write side: used from one thread only.
pub trait StoreWriter: Send {
    /// Writes a batch in one transaction.
    ///
    /// # Errors
    ///
    /// A database error; nothing of the batch is written then.
    fn commit(&mut self, batch: &Batch) -> Result<(), StoreError>;

    /// Removes finished executions that completed before `before`, with their events.
    ///
    /// # Errors
    ///
    /// A database error.
    fn purge_finished(&mut self, before: DateTime<Utc>) -> Result<Purged, StoreError>;

    /// Stores a token (its hash, never the token itself).
    ///
    /// # Errors
    ///
    /// A database error.
    fn insert_token(&mut self, hash: &str, grant: &TokenGrant) -> Result<(), StoreError>;

    /// Flushes whatever the backend buffers (e.g. a WAL checkpoint) before shutdown.
    ///
    /// # Errors
    ///
    /// A database error.
    fn close(&mut self) -> Result<(), StoreError>;
}
