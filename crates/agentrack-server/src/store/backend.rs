//! The two traits a backend implements: [`Store`] (reads and start-up loading, shared by every
//! handler) and [`StoreWriter`] (the single writer the group-commit pipeline drives).

use std::future::Future;
use std::pin::Pin;

use agentrack::{ExecutionId, ExecutionRecord};
use chrono::{DateTime, Utc};

use super::{
    Batch, ClusterStore, Cutoff, EventQuery, ListQuery, Loaded, Page, Purged, ShardId, StoreError, StoredEvent,
};
use crate::auth::{TokenGrant, TokenInfo};
use crate::store::{KeyOp, KeyState};

/// What revoking a token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// Revoked now, or already before (then `info.revoked_at` is the first revocation's time).
    Done {
        /// The token as it is now.
        info: TokenInfo,
        /// Its hash, for the caches of every node to forget.
        hash: String,
    },
    /// No token has this id.
    Unknown,
    /// It is the last admin token that is neither revoked nor expired: refused, as nobody could
    /// make tokens over the API any more.
    LastAdmin,
}

/// A ticket taken from the store: the hash of its token, and its expiry.
pub type TakenTicket = (String, DateTime<Utc>);

/// A single-use event-stream ticket as stored: never the ticket itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The ticket's SHA-256 (lower-case hex).
    pub hash: String,
    /// The hash of the token it acts for.
    pub token_hash: String,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
}

/// A boxed future returned by [`Store`] methods.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The read side of a store, plus start-up loading and opening the writer.
pub trait Store: Send + Sync + 'static {
    /// How many shards the store has (1 for a store made for one node); fixed when it was made.
    fn shard_count(&self) -> u16;

    /// The cluster operations, on a store several nodes can share.
    fn cluster(&self) -> Option<&dyn ClusterStore>;

    /// Loads what taking over `shard` needs: its alive executions and those finished since
    /// `finished_since`, counts of all its executions, and its sequence high-water mark.
    ///
    /// # Errors
    ///
    /// A database or decoding error.
    fn load(&self, shard: ShardId, finished_since: DateTime<Utc>) -> StoreFuture<'_, Loaded>;

    /// Opens the single writer (one per store).
    ///
    /// # Errors
    ///
    /// A database error.
    fn writer(&self) -> StoreFuture<'_, Box<dyn StoreWriter>>;

    /// One stored execution.
    fn get(&self, id: ExecutionId) -> StoreFuture<'_, Option<ExecutionRecord>>;

    /// A page of stored executions, newest first.
    fn list(&self, query: ListQuery) -> StoreFuture<'_, Page>;

    /// Stored events after a global sequence number, oldest first.
    fn events(&self, query: EventQuery) -> StoreFuture<'_, Vec<StoredEvent>>;

    /// Whether an admin token exists (an empty store gets its first one at start-up).
    fn has_admin_token(&self) -> StoreFuture<'_, bool>;

    /// The token whose SHA-256 hash (lower-case hex) is `hash`, unless it was revoked (an
    /// expired one is returned: its grant says when it expired).
    fn token(&self, hash: String) -> StoreFuture<'_, Option<TokenGrant>>;

    /// Every token, revoked and expired ones included, oldest first.
    fn tokens(&self) -> StoreFuture<'_, Vec<TokenInfo>>;
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// The write side, driven from one thread: every call blocks until the backend is done.
pub trait StoreWriter: Send {
    /// Writes the batches (of different shards) in one transaction.
    ///
    /// # Errors
    ///
    /// [`StoreError::Fenced`] when a batch's fence no longer holds (another node took its shard);
    /// a database error otherwise. Nothing of any batch is written then.
    fn commit(&mut self, batches: &[Batch]) -> Result<(), StoreError>;

    /// Removes finished executions that completed before the cut-off, and the log's events older
    /// than its own.
    ///
    /// # Errors
    ///
    /// A database error.
    fn purge(&mut self, cutoff: &Cutoff) -> Result<Purged, StoreError>;

    /// Stores a token (its hash, never the token itself).
    ///
    /// # Errors
    ///
    /// A database error.
    fn insert_token(&mut self, hash: &str, grant: &TokenGrant) -> Result<(), StoreError>;

    /// Revokes the token whose public id is `id` at `at`, unless it is the last valid admin
    /// token. On a shared store every node is notified (with the token's hash).
    ///
    /// # Errors
    ///
    /// A database error.
    fn revoke_token(&mut self, id: &str, at: DateTime<Utc>) -> Result<Revoked, StoreError>;

    /// Stores an event-stream ticket (and forgets expired ones).
    ///
    /// # Errors
    ///
    /// A database error.
    fn insert_ticket(&mut self, ticket: &Ticket) -> Result<(), StoreError>;

    /// Removes the ticket of hash `hash` and returns its token's hash and expiry: a ticket is
    /// taken once, on whichever node.
    ///
    /// # Errors
    ///
    /// A database error.
    fn take_ticket(&mut self, hash: &str) -> Result<Option<TakenTicket>, StoreError>;

    /// Reserves, completes, releases or expires kept idempotency keys (see [`KeyOp`]).
    ///
    /// # Errors
    ///
    /// A database error.
    fn idempotency(&mut self, op: &KeyOp) -> Result<KeyState, StoreError> {
        let _ = op;
        Err(StoreError::database("this store keeps no idempotency keys"))
    }

    /// Checks that the backend still answers, reconnecting if it can; called when the writer is
    /// idle, so that an outage shows (and ends) without waiting for the next write.
    ///
    /// # Errors
    ///
    /// The backend does not answer.
    fn check(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Flushes whatever the backend buffers (e.g. a WAL checkpoint) before shutdown.
    ///
    /// # Errors
    ///
    /// A database error.
    fn close(&mut self) -> Result<(), StoreError>;
}
