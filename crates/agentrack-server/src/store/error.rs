//! Why a store operation failed.

/// The underlying error a backend reports, kept as the source of a [`StoreError`].
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database refused or failed; the backend's own error is the source.
    #[error("database error: {0}")]
    Database(#[source] BackendError),
    /// A stored value could not be decoded (or a value could not be encoded for storing).
    #[error("corrupt stored data: {0}")]
    Corrupt(#[source] BackendError),
    /// The data directory or file could not be used.
    #[error("cannot use {path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// What went wrong.
        #[source]
        source: BackendError,
    },
    /// The stored schema is newer than this binary understands.
    #[error("the store has schema version {found}, newer than the {supported} this binary supports")]
    SchemaTooNew {
        /// The version found in the store.
        found: i64,
        /// The newest version this binary knows.
        supported: i64,
    },
    /// The `--store` URL names no backend this binary has, or is malformed.
    #[error("invalid store URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given (without any password).
        url: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// The store refused a write because these shards' fences moved on: other nodes own them now.
    /// Never retried: the writer drops the shards.
    #[error("shards {shards:?} are owned by another node now")]
    Fenced {
        /// The shards lost.
        shards: Vec<super::ShardId>,
    },
    /// A blocking task or the writer thread could not run (the runtime is shutting down).
    #[error("store task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// A database error from any backend's error type.
    pub fn database(error: impl Into<BackendError>) -> Self {
        Self::Database(error.into())
    }

    /// A decoding (or encoding) error.
    pub fn corrupt(error: impl Into<BackendError>) -> Self {
        Self::Corrupt(error.into())
    }
}
