//! The group-commit pipeline: every event goes to the store before anyone is told about it.
//!
//! The tracker hands every event to a sink, synchronously and in global order. The sink only
//! pushes it onto a channel; a dedicated thread (`writer_thread.rs`) drains the channel, writes
//! everything it found in one transaction, and then
//!
//! 1. tells the [`Publisher`] it was given that the events are committed (the metrics count
//!    them, so an acknowledged change is in the metrics);
//! 2. publishes the highest global sequence number it has covered (a `watch` channel): a request
//!    handler replies only once that number reaches the last event of its own change — durable
//!    before acknowledged — and many handlers share one fsync;
//! 3. hands the events to the publisher for the live fan-out. Subscribers therefore never see an
//!    event that a crash could take back, and since the watermark moves first, a subscriber that
//!    reads it and then replays the store up to it misses nothing published before it subscribed.
//!
//! A written row is a snapshot taken from the tracker *after* its events were drained. Because
//! the tracker emits an event while holding the record's lock, that snapshot includes at least
//! every drained event. (It may be slightly ahead — a change whose event arrives in the next
//! batch; that change was not acknowledged yet, so a crash in between loses nothing anyone was
//! promised.)
//!
//! Heartbeats are the bulk of the traffic and are not worth an fsync each (`deferred.rs`): they
//! are published at once (no one waits for them), and only the latest per execution is written,
//! at least every `heartbeat_flush` — or sooner, together with the execution's row. Since a
//! published heartbeat may never be stored, the store reserves sequence numbers in blocks
//! ([`SEQUENCE_RESERVATION`]) and numbering resumes above the reservation after a crash: a number
//! a subscriber once saw is never handed out again.
//!
//! Rows wait too, where that is safe: an event whose change can be rebuilt from the event alone
//! (a phase transition, an agent-state update) is written at once — so it is durable before it
//! is acknowledged — but its execution's row only at the next flush, or sooner with a change that
//! needs the row (creation, a state change, the terminal event). A run through the golden path
//! then costs a handful of row writes instead of one per call; after a crash the store replays
//! the few events a row may be behind (`store/replay.rs`).
//!
//! Tokens and retention purges are writes too, so they go through the same thread (SQLite has
//! one writer); when to purge is the caller's business ([`Pipeline::purge`]). A purge keeps the
//! log's events for at least [`LOG_KEPT_AT_LEAST`] (and at least ten flush intervals), so that
//! every event a lagging row may need for its replay is still there.

mod deferred;
mod writer_thread;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use agentrack::{Event, ExecutionId, Tracker};
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};

use super::{Purged, StoreError, StoreWriter};
use crate::auth::TokenGrant;
use crate::serialized_event::SerializedEvent;

/// Settings of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// The longest a heartbeat waits before it is written.
    pub heartbeat_flush: Duration,
    /// At most this many messages go in one transaction.
    pub max_batch: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            heartbeat_flush: Duration::from_secs(1),
            max_batch: 8192,
        }
    }
}

/// Why a write was not confirmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The store did not confirm in time (it is failing or overloaded).
    #[error("the store did not confirm the write within {0:?}")]
    TimedOut(Duration),
    /// The pipeline has stopped.
    #[error("the store writer has stopped")]
    Stopped,
}

/// Counters of the pipeline, for `/metrics`.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Transactions committed.
    pub batches: AtomicU64,
    /// Events appended to the log.
    pub events_written: AtomicU64,
    /// Heartbeats received.
    pub heartbeats: AtomicU64,
    /// Heartbeats written (the rest were coalesced).
    pub heartbeats_written: AtomicU64,
    /// Failed commit attempts.
    pub commit_failures: AtomicU64,
    /// Executions purged by retention.
    pub purged_executions: AtomicU64,
    /// Microseconds spent in the latest commit.
    pub last_commit_micros: AtomicU64,
}

/// The youngest the log's events may be when a purge removes them, whatever the retention.
pub const LOG_KEPT_AT_LEAST: Duration = Duration::from_secs(60);

/// How many sequence numbers a reservation covers; see [`Batch::reserved`](super::Batch).
pub const SEQUENCE_RESERVATION: u64 = 10_000;

/// Where committed events go: called on the writer thread with the events of each transaction,
/// in global order (heartbeats included, whether written yet or coalesced).
pub trait Publisher: Send {
    /// The events are durable but not yet acknowledged: whatever must hold for an acknowledged
    /// change (being counted in the metrics) happens here.
    fn committed(&mut self, events: &[Arc<SerializedEvent>]);

    /// The acknowledged watermark now covers the events: the live fan-out.
    fn publish(&mut self, events: &[Arc<SerializedEvent>]);
}

/// A publisher that drops everything (a pipeline nobody subscribes to).
impl Publisher for () {
    fn committed(&mut self, _events: &[Arc<SerializedEvent>]) {}

    fn publish(&mut self, _events: &[Arc<SerializedEvent>]) {}
}

/// A request to the writer thread.
enum Message {
    Event(Arc<Event>),
    Token {
        hash: String,
        grant: TokenGrant,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Purge {
        before: DateTime<Utc>,
        reply: oneshot::Sender<Result<Purged, StoreError>>,
    },
    /// Rows to write at the next flush (rows caught up by a replay at start-up).
    HoldRows(Vec<ExecutionId>),
    Flush(oneshot::Sender<()>),
    Shutdown,
}

/// The running pipeline; see the module documentation.
pub struct Pipeline {
    sender: Mutex<Option<mpsc::Sender<Message>>>,
    committed: watch::Receiver<u64>,
    healthy: Arc<AtomicBool>,
    stats: Arc<PipelineStats>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("committed", &*self.committed.borrow())
            .field("healthy", &self.healthy.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Starts the writer thread and installs the tracker's sink. `high_water` is the sequence
    /// number everything before start-up is covered by ([`Loaded::high_water`](super::Loaded)).
    ///
    /// # Errors
    ///
    /// The thread could not be spawned, or the tracker already has a sink.
    pub fn start(
        writer: Box<dyn StoreWriter>,
        tracker: &Tracker,
        high_water: u64,
        config: PipelineConfig,
        publisher: Box<dyn Publisher>,
    ) -> Result<Arc<Self>, StoreError> {
        let (sender, receiver) = mpsc::channel();
        let (committed_tx, committed) = watch::channel(high_water);
        let healthy = Arc::new(AtomicBool::new(true));
        let stats = Arc::new(PipelineStats::default());
        let thread = writer_thread::WriterThread::new(
            writer,
            tracker.clone(),
            receiver,
            committed_tx,
            publisher,
            writer_thread::Health {
                healthy: Arc::clone(&healthy),
                stats: Arc::clone(&stats),
            },
            high_water,
            config,
        );
        let thread = std::thread::Builder::new()
            .name("agentrack-store".into())
            .spawn(move || thread.run())
            .map_err(|error| StoreError::Task(error.to_string()))?;
        let sink = sender.clone();
        let installed = tracker.set_sink(move |event| {
            // Fails only once the writer is gone (shutdown); the event is then lost with it.
            let _ = sink.send(Message::Event(Arc::clone(event)));
        });
        if !installed {
            return Err(StoreError::Task("the tracker already has an event sink".into()));
        }
        Ok(Arc::new(Self {
            sender: Mutex::new(Some(sender)),
            committed,
            healthy,
            stats,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// The highest global sequence number known durable (or, for heartbeats, published).
    pub fn committed(&self) -> u64 {
        *self.committed.borrow()
    }

    /// A receiver of the committed-sequence watermark.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    /// Whether the latest commit succeeded.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// The counters.
    pub fn stats(&self) -> &PipelineStats {
        &self.stats
    }

    /// Waits until every event up to `seq` is committed.
    ///
    /// # Errors
    ///
    /// [`CommitError::TimedOut`] after `timeout`, [`CommitError::Stopped`] if the writer ended.
    pub async fn wait_committed(&self, seq: u64, timeout: Duration) -> Result<(), CommitError> {
        if *self.committed.borrow() >= seq {
            return Ok(());
        }
        let mut watch = self.committed.clone();
        match tokio::time::timeout(timeout, watch.wait_for(|committed| *committed >= seq)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(CommitError::Stopped),
            Err(_) => Err(CommitError::TimedOut(timeout)),
        }
    }

    fn send(&self, message: Message) -> Result<(), CommitError> {
        match &*self.sender.lock() {
            Some(sender) => sender.send(message).map_err(|_| CommitError::Stopped),
            None => Err(CommitError::Stopped),
        }
    }

    /// Sends a request that expects an answer, and waits for it.
    async fn ask<T>(
        &self,
        message: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Message,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(message(reply))
            .map_err(|error| StoreError::Task(error.to_string()))?;
        answer
            .await
            .map_err(|_| StoreError::Task(CommitError::Stopped.to_string()))?
    }

    /// Stores a token through the writer.
    ///
    /// # Errors
    ///
    /// The store's error, or [`StoreError::Task`] if the writer has stopped.
    pub async fn insert_token(&self, hash: String, grant: TokenGrant) -> Result<(), StoreError> {
        self.ask(|reply| Message::Token { hash, grant, reply }).await
    }

    /// Removes finished executions that completed before `before` from the store, with their
    /// events.
    ///
    /// # Errors
    ///
    /// The store's error, or [`StoreError::Task`] if the writer has stopped.
    pub async fn purge(&self, before: DateTime<Utc>) -> Result<Purged, StoreError> {
        self.ask(|reply| Message::Purge { before, reply }).await
    }

    /// Has the rows of `ids` written again at the next flush: the alive rows a replay caught up
    /// at start-up, so that the log they were rebuilt from can be purged.
    pub fn hold_rows(&self, ids: Vec<ExecutionId>) {
        if !ids.is_empty() {
            let _ = self.send(Message::HoldRows(ids));
        }
    }

    /// Writes every pending heartbeat now and waits for it.
    ///
    /// # Errors
    ///
    /// [`CommitError::Stopped`] if the writer has stopped.
    pub async fn flush(&self) -> Result<(), CommitError> {
        let (reply, answer) = oneshot::channel();
        self.send(Message::Flush(reply))?;
        answer.await.map_err(|_| CommitError::Stopped)
    }

    /// Writes everything pending, closes the store and stops the thread (blocking).
    pub fn shutdown(&self) {
        if let Some(sender) = self.sender.lock().take() {
            let _ = sender.send(Message::Shutdown);
        }
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests;
