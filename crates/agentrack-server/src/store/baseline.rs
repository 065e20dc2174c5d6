//! Raw batched inserts into a backend: the baseline `benches/store.rs` measures the store
//! against, in the same run.
//!
//! It lives beside the backends, not in the bench, so that the baseline uses exactly the
//! connection settings of its backend (journal mode, sync level, …) and the bench names no backend.
//! The table is the plainest one that holds the same rows: a sequence number as primary key, the
//! execution id, the event type and the JSON, no other index.

use super::{StoreConfig, StoreError, StoreUrl};

/// One row of the baseline table.
#[derive(Debug, Clone)]
pub struct RawRow {
    /// Its primary key.
    pub seq: i64,
    /// The execution the event belongs to.
    pub execution_id: String,
    /// The event's type.
    pub kind: String,
    /// The event's JSON.
    pub json: String,
}

/// Batched inserts into a fresh baseline table.
pub trait RawInserts: Send {
    /// Inserts `rows` in one transaction, the fastest way the backend allows.
    ///
    /// # Errors
    ///
    /// A database error.
    fn insert_batch(&mut self, rows: &[RawRow]) -> Result<(), StoreError>;
}

/// Opens the baseline for the backend `url` names, on a fresh table (blocking).
///
/// # Errors
///
/// An unknown scheme, or what the backend reports.
pub fn open_raw(url: &StoreUrl, config: &StoreConfig) -> Result<Box<dyn RawInserts>, StoreError> {
    let backend = super::open::backend(url)?;
    (backend.open_raw)(url, config)
}
