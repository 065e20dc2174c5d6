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
//! every drained event — and possibly a change whose event was still queued. The writer then
//! drains again and takes those events into the same batch (and snapshots what they touch, and
//! drains again, until a round takes no snapshot), so a row is never committed ahead of its log.
//! It must not be: were the next batch lost (a crash, a takeover), a row ahead would claim a
//! change — a completion, say — whose event no subscriber ever receives.
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

pub use deferred::{HEARTBEATS_UNWRITTEN, SEQ_HEADROOM};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use agentrack::{Event, ExecutionId, Tracker};
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};

use dashmap::DashMap;

use super::{KeyOp, KeyState, Purged, Revoked, ShardId, StoreError, StoreWriter, TakenTicket, Ticket};
use crate::auth::TokenGrant;
use crate::serialized_event::SerializedEvent;

/// Settings of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// The longest a heartbeat waits before it is written.
    pub heartbeat_flush: Duration,
    /// At most this many messages go in one transaction.
    pub max_batch: usize,
    /// Past this many messages waiting for the writer, writes are refused before they change
    /// anything ([`Pipeline::has_room`]); see `max_store_queue`.
    pub max_queued: usize,
    /// The longest a token insert or an idempotency key waits for the writer's answer.
    pub answer_timeout: Duration,
    /// Idempotency keys older than this are removed by the retention purge.
    pub idempotency_retention: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            heartbeat_flush: Duration::from_secs(1),
            max_batch: 8192,
            max_queued: 65_536,
            answer_timeout: Duration::from_secs(30),
            idempotency_retention: Duration::from_secs(24 * 3600),
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

/// A shard joining the pipeline: its tracker (for snapshots), where its numbering stands, its
/// fencing number, and the watermark to move.
struct Attach {
    shard: ShardId,
    tracker: Tracker,
    high_water: u64,
    fence: Option<i64>,
    committed: watch::Sender<u64>,
}

/// A request to the writer thread.
enum Message {
    Event(ShardId, Arc<Event>),
    Attach(Box<Attach>),
    /// The shard leaves: after writing what it defers when `flush` (a hand-over), or at once
    /// (lost: nothing more of it may be written).
    Detach {
        shard: ShardId,
        flush: bool,
        reply: oneshot::Sender<()>,
    },
    Token {
        hash: String,
        grant: TokenGrant,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Revoke {
        id: String,
        at: DateTime<Utc>,
        reply: oneshot::Sender<Result<Revoked, StoreError>>,
    },
    Ticket {
        ticket: Ticket,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    TakeTicket {
        hash: String,
        reply: oneshot::Sender<Result<Option<TakenTicket>, StoreError>>,
    },
    Purge {
        before: DateTime<Utc>,
        reply: oneshot::Sender<Result<Purged, StoreError>>,
    },
    Key {
        op: KeyOp,
        reply: oneshot::Sender<Result<KeyState, StoreError>>,
    },
    /// Rows to write at the next flush (rows caught up by a replay when the shard was loaded).
    HoldRows(ShardId, Vec<ExecutionId>),
    /// Executions whose next heartbeat is written rather than deferred (restored ones).
    WriteNextHeartbeat(ShardId, Vec<ExecutionId>),
    Flush(oneshot::Sender<()>),
    Shutdown,
}

/// The running pipeline; see the module documentation.
pub struct Pipeline {
    sender: Mutex<Option<Queue>>,
    /// Messages sent and not yet taken by the writer (every sender counts up, the writer down).
    queued: Arc<AtomicUsize>,
    max_queued: usize,
    answer_timeout: Duration,
    committed: DashMap<ShardId, watch::Receiver<u64>>,
    healthy: Arc<AtomicBool>,
    stats: Arc<PipelineStats>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("shards", &self.committed.len())
            .field("healthy", &self.healthy.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The sending end of the writer's channel, counting what it sends.
#[derive(Clone)]
struct Queue {
    sender: mpsc::Sender<Message>,
    queued: Arc<AtomicUsize>,
}

impl Queue {
    fn send(&self, message: Message) -> Result<(), CommitError> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.sender.send(message).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            CommitError::Stopped
        })
    }
}

impl Pipeline {
    /// Starts the writer thread, with no shard yet ([`Pipeline::attach`] adds them). Shards the
    /// store refuses a write of (their fence moved on) are sent to `lost`.
    ///
    /// # Errors
    ///
    /// The thread could not be spawned.
    pub fn start(
        writer: Box<dyn StoreWriter>,
        config: PipelineConfig,
        publisher: Box<dyn Publisher>,
        lost: tokio::sync::mpsc::UnboundedSender<ShardId>,
    ) -> Result<Arc<Self>, StoreError> {
        let (sender, receiver) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let healthy = Arc::new(AtomicBool::new(true));
        let stats = Arc::new(PipelineStats::default());
        let (max_queued, answer_timeout) = (config.max_queued, config.answer_timeout);
        let thread = writer_thread::WriterThread::new(
            writer,
            writer_thread::Inbox::new(receiver, Arc::clone(&queued)),
            publisher,
            writer_thread::Health {
                healthy: Arc::clone(&healthy),
                stats: Arc::clone(&stats),
                lost,
            },
            config,
        );
        let thread = std::thread::Builder::new()
            .name("agentrack-store".into())
            .spawn(move || thread.run())
            .map_err(|error| StoreError::Task(error.to_string()))?;
        Ok(Arc::new(Self {
            sender: Mutex::new(Some(Queue {
                sender,
                queued: Arc::clone(&queued),
            })),
            queued,
            max_queued,
            answer_timeout,
            committed: DashMap::new(),
            healthy,
            stats,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Adds a shard: installs `tracker`'s sink, so that every event it makes goes through the
    /// pipeline. `high_water` is the number everything before is covered by
    /// ([`Loaded::high_water`](super::Loaded)); `fence` is the shard's fencing number on a store
    /// others share.
    ///
    /// # Errors
    ///
    /// The tracker already has a sink, or the pipeline has stopped.
    pub fn attach(
        &self,
        shard: ShardId,
        tracker: &Tracker,
        high_water: u64,
        fence: Option<i64>,
    ) -> Result<(), StoreError> {
        let (committed_tx, committed) = watch::channel(high_water);
        self.send(Message::Attach(Box::new(Attach {
            shard,
            tracker: tracker.clone(),
            high_water,
            fence,
            committed: committed_tx,
        })))
        .map_err(|error| StoreError::Task(error.to_string()))?;
        self.committed.insert(shard, committed);
        let sink = self.sender.lock().clone();
        let installed = tracker.set_sink(move |event| {
            // Fails only once the writer is gone (shutdown); the event is then lost with it.
            if let Some(sink) = &sink {
                let _ = sink.send(Message::Event(shard, Arc::clone(event)));
            }
        });
        if installed {
            Ok(())
        } else {
            Err(StoreError::Task("the tracker already has an event sink".into()))
        }
    }

    /// Removes a shard. With `flush` (a hand-over) what it defers is written first; without
    /// (the shard is lost), nothing more of it is. Waiters on it are told it stopped.
    pub async fn detach(&self, shard: ShardId, flush: bool) {
        let (reply, answer) = oneshot::channel();
        if self.send(Message::Detach { shard, flush, reply }).is_ok() {
            let _ = answer.await;
        }
        self.committed.remove(&shard);
    }

    /// The highest sequence number of `shard` known durable (or, for heartbeats, published);
    /// `None` for a shard not in the pipeline.
    pub fn committed(&self, shard: ShardId) -> Option<u64> {
        self.committed.get(&shard).map(|watch| *watch.borrow())
    }

    /// Whether the latest commit succeeded.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Messages waiting for the writer (events, heartbeats, requests).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// The most messages that may wait before writes are refused.
    pub fn max_queued(&self) -> usize {
        self.max_queued
    }

    /// Whether the writer's queue has room for more: past [`PipelineConfig::max_queued`] every
    /// write is refused before it changes anything, so a store that stalls cannot make the
    /// queue (and the changes in memory nobody was promised) grow without bound.
    pub fn has_room(&self) -> bool {
        self.queued() < self.max_queued
    }

    /// The counters.
    pub fn stats(&self) -> &PipelineStats {
        &self.stats
    }

    /// Waits until every event of `shard` up to `seq` is committed.
    ///
    /// # Errors
    ///
    /// [`CommitError::TimedOut`] after `timeout`, [`CommitError::Stopped`] if the writer ended or
    /// the shard left the pipeline (its events may never be written).
    pub async fn wait_committed(&self, shard: ShardId, seq: u64, timeout: Duration) -> Result<(), CommitError> {
        let Some(mut watch) = self.committed.get(&shard).map(|watch| watch.clone()) else {
            return Err(CommitError::Stopped);
        };
        if *watch.borrow() >= seq {
            return Ok(());
        }
        match tokio::time::timeout(timeout, watch.wait_for(|committed| *committed >= seq)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(CommitError::Stopped),
            Err(_) => Err(CommitError::TimedOut(timeout)),
        }
    }

    fn send(&self, message: Message) -> Result<(), CommitError> {
        match &*self.sender.lock() {
            Some(sender) => sender.send(message),
            None => Err(CommitError::Stopped),
        }
    }

    /// Sends a request that expects an answer, and waits for it (at most `timeout`).
    async fn ask<T>(
        &self,
        message: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Message,
        timeout: Option<Duration>,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(message(reply))
            .map_err(|error| StoreError::Task(error.to_string()))?;
        let answer = match timeout {
            Some(timeout) => tokio::time::timeout(timeout, answer)
                .await
                .map_err(|_| StoreError::Task(format!("the store did not answer within {timeout:?} (ack_timeout)")))?,
            None => answer.await,
        };
        answer.map_err(|_| StoreError::Task(CommitError::Stopped.to_string()))?
    }

    /// Stores a token through the writer, waiting at most `answer_timeout` (should the store
    /// answer later, the token is stored unseen: nobody ever got it).
    ///
    /// # Errors
    ///
    /// The store's error, [`StoreError::Task`] if the writer has stopped or did not answer in
    /// time.
    pub async fn insert_token(&self, hash: String, grant: TokenGrant) -> Result<(), StoreError> {
        self.ask(|reply| Message::Token { hash, grant, reply }, Some(self.answer_timeout))
            .await
    }

    /// Reserves, completes or releases an idempotency key through the writer (see
    /// [`KeyOp`]), waiting at most `answer_timeout`.
    ///
    /// # Errors
    ///
    /// As for [`Pipeline::insert_token`].
    pub async fn idempotency(&self, op: KeyOp) -> Result<KeyState, StoreError> {
        self.ask(|reply| Message::Key { op, reply }, Some(self.answer_timeout))
            .await
    }

    /// Revokes the token of public id `id` through the writer (see [`StoreWriter::revoke_token`]).
    ///
    /// # Errors
    ///
    /// The store's error, or [`StoreError::Task`] if the writer has stopped.
    pub async fn revoke_token(&self, id: String, at: DateTime<Utc>) -> Result<Revoked, StoreError> {
        self.ask(|reply| Message::Revoke { id, at, reply }, Some(self.answer_timeout))
            .await
    }

    /// Stores an event-stream ticket through the writer.
    ///
    /// # Errors
    ///
    /// The store's error, or [`StoreError::Task`] if the writer has stopped.
    pub async fn insert_ticket(&self, ticket: Ticket) -> Result<(), StoreError> {
        self.ask(|reply| Message::Ticket { ticket, reply }, Some(self.answer_timeout))
            .await
    }

    /// Takes (removes) the ticket of hash `hash`: its token's hash and expiry, once.
    ///
    /// # Errors
    ///
    /// The store's error, or [`StoreError::Task`] if the writer has stopped.
    pub async fn take_ticket(&self, hash: String) -> Result<Option<TakenTicket>, StoreError> {
        self.ask(|reply| Message::TakeTicket { hash, reply }, Some(self.answer_timeout))
            .await
    }

    /// Removes finished executions that completed before `before` from the store, and the log's
    /// events older than that (but never younger than [`LOG_KEPT_AT_LEAST`]).
    ///
    /// # Errors
    ///
    /// The store's error, or [`StoreError::Task`] if the writer has stopped.
    pub async fn purge(&self, before: DateTime<Utc>) -> Result<Purged, StoreError> {
        self.ask(|reply| Message::Purge { before, reply }, None).await
    }

    /// Has the rows of `ids` (of `shard`) written again at the next flush: the alive rows a
    /// replay caught up when the shard was loaded, so that the log they were rebuilt from can be
    /// purged.
    pub fn hold_rows(&self, shard: ShardId, ids: Vec<ExecutionId>) {
        if !ids.is_empty() {
            let _ = self.send(Message::HoldRows(shard, ids));
        }
    }

    /// Has the next heartbeat of each of `ids` (of `shard`) written before it is published: the
    /// alive executions a shard was restored with, numbered [`SEQ_HEADROOM`] past their stored
    /// sequence number. Until one of their events is written, that jump exists only here — and a
    /// node taking the shard over next would number from the same stored value.
    pub fn write_next_heartbeat(&self, shard: ShardId, ids: Vec<ExecutionId>) {
        if !ids.is_empty() {
            let _ = self.send(Message::WriteNextHeartbeat(shard, ids));
        }
    }

    /// Writes every pending heartbeat and row now and waits for it.
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
