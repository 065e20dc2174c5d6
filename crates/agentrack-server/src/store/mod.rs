//! The store: where events and executions outlive the process.
//!
//! The boundary is deliberately narrow so that backends sit side by side without the API layer
//! noticing:
//!
//! - [`open`] is the one place a `--store` URL becomes a backend; nothing outside this module
//!   names one.
//! - [`Store`] answers reads (one execution, a page of executions, stored events after a global
//!   sequence number, a token) and loads everything back at start-up.
//! - [`StoreWriter`] is the single writer. The group-commit [`pipeline`] runs it on a dedicated
//!   thread and hands it one [`Batch`] per transaction.
//!
//! What goes in a batch (which events, which execution snapshots, heartbeat coalescing) is
//! decided by the pipeline, not by the backend, so every backend gets the same semantics.

mod backend;
pub mod baseline;
mod batch;
mod cluster;
mod config;
mod error;
mod idempotency;
mod loaded;
mod open;
pub mod pipeline;
mod postgres;
mod query;
pub(crate) mod replay;
pub(crate) mod row;
mod shard;
mod sqlite;
pub mod unreadable;

pub use backend::{Revoked, Store, StoreFuture, StoreWriter, TakenTicket, Ticket};
pub use batch::{Batch, RowUpdate};
pub use cluster::{ClusterStore, NodeRow, ShardMove, ShardRow, Taken};
pub use config::{DEFAULT_SQLITE_FILE, StoreConfig, StoreUrl, Synchronous};
pub use error::{BackendError, StoreError};
pub use idempotency::{KeyOp, KeyState};
pub use loaded::{Cutoff, Loaded, Purged, StateCount};
pub use open::open;
pub use query::{EventQuery, ListQuery, LogRange, Page, StoredEvent};
pub use shard::{ShardId, shard_of, shard_of_name};

#[cfg(test)]
mod conformance;
