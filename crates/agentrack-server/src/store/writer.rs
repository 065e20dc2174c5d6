//! The group-commit pipeline: every event goes to the store before anyone is told about it.
//!
//! The tracker hands every event to a sink, synchronously and in global order. The sink only
//! pushes it onto an unbounded channel; a dedicated thread drains the channel, writes everything
//! it found in one transaction, and then
//!
//! 1. publishes the highest global sequence number it has covered (a `watch` channel): a request
//!    handler replies only once that number reaches the last event of its own change — durable
//!    before acknowledged — and many handlers share one fsync;
//! 2. fans the events out to WebSocket subscribers ([`Hub`]: per-user channels and a shared
//!    one), each serialised to JSON once. Subscribers therefore never see an event that a crash could take back.
//!
//! Each written execution also gets its materialised row: a snapshot taken from the tracker
//! *after* its events were drained. Because the tracker emits an event while holding the
//! record's lock, that snapshot includes at least every drained event, so a row is never behind
//! the log. (It may be slightly ahead — a change whose event arrives in the next batch; that
//! change was not acknowledged yet, so a crash in between loses nothing anyone was promised.)
//!
//! Heartbeats are the bulk of the traffic and are not worth an fsync each: they are published at
//! once (no one waits for them), and only the latest per execution is written, at least every
//! `heartbeat_flush` — or sooner, together with any other event of the same execution. Since a
//! published heartbeat may never be stored, the store reserves sequence numbers in blocks
//! ([`SEQUENCE_RESERVATION`]) and numbering resumes above the reservation after a crash: a
//! number a subscriber once saw is never handed out again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agentrack::{Event, EventKind, ExecutionId, Tracker};
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};

use super::{Batch, RowUpdate, StoreError, StoreWriter};
use crate::auth::TokenGrant;
use crate::hub::{self, Hub};

/// An event with its JSON, serialised once and shared by the store and every subscriber.
#[derive(Debug)]
pub struct SerializedEvent {
    /// The event.
    pub event: Arc<Event>,
    /// Its JSON text (UTF-8).
    pub json: Bytes,
}

impl SerializedEvent {
    /// Serialises `event`.
    pub fn new(event: Arc<Event>) -> Self {
        // Serialising our own types to a string cannot fail (string keys, finite floats are
        // written as numbers, non-finite ones as null).
        let json = serde_json::to_vec(&*event).unwrap_or_else(|_| b"{}".to_vec());
        Self {
            event,
            json: Bytes::from(json),
        }
    }

    /// The JSON as text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.json).unwrap_or("{}")
    }
}

/// Settings of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// The longest a heartbeat waits before it is written.
    pub heartbeat_flush: Duration,
    /// Finished executions older than this are purged from the store.
    pub retention: Duration,
    /// How often the purge runs.
    pub purge_interval: Duration,
    /// Events buffered per subscriber before it counts as too slow.
    pub subscriber_buffer: usize,
    /// At most this many messages go in one transaction.
    pub max_batch: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            heartbeat_flush: Duration::from_secs(1),
            retention: Duration::from_secs(7 * 24 * 3600),
            purge_interval: Duration::from_secs(3600),
            subscriber_buffer: 4096,
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

/// How many sequence numbers a reservation covers; see [`Batch::reserved`].
pub const SEQUENCE_RESERVATION: u64 = 10_000;

/// Called on the writer thread with every committed event, in order.
pub type Observer = Box<dyn FnMut(&Arc<Event>) + Send>;

enum Message {
    Event(Arc<Event>),
    Token {
        hash: String,
        grant: TokenGrant,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Flush(oneshot::Sender<()>),
    Shutdown,
}

/// The running pipeline; see the module documentation.
pub struct Pipeline {
    sender: Mutex<Option<mpsc::Sender<Message>>>,
    committed: watch::Receiver<u64>,
    hub: Arc<Hub>,
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
        observer: Observer,
    ) -> Result<Arc<Self>, StoreError> {
        let (sender, receiver) = mpsc::channel();
        let (committed_tx, committed) = watch::channel(high_water);
        let hub = Arc::new(Hub::new(config.subscriber_buffer));
        let healthy = Arc::new(AtomicBool::new(true));
        let stats = Arc::new(PipelineStats::default());
        let state = WriterThread {
            writer,
            tracker: tracker.clone(),
            receiver,
            committed: committed_tx,
            hub: Arc::clone(&hub),
            healthy: Arc::clone(&healthy),
            stats: Arc::clone(&stats),
            observer,
            pending_heartbeats: HashMap::new(),
            heartbeats_since: None,
            last_purge: None,
            high_water,
            reserved: high_water,
            config,
        };
        let thread = std::thread::Builder::new()
            .name("agentrack-store-writer".into())
            .spawn(move || state.run())
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
            hub,
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

    /// Subscribes to committed events, in global order: those of one user's executions, of one
    /// tenant's, or (both `None`) every event.
    pub fn subscribe(&self, tenant: Option<&str>, user_id: Option<&str>) -> hub::Receiver {
        self.hub.subscribe(tenant, user_id)
    }

    /// How many subscribers are connected.
    pub fn subscribers(&self) -> usize {
        self.hub.subscribers()
    }

    fn send(&self, message: Message) -> Result<(), CommitError> {
        match &*self.sender.lock() {
            Some(sender) => sender.send(message).map_err(|_| CommitError::Stopped),
            None => Err(CommitError::Stopped),
        }
    }

    /// Stores a token through the writer.
    ///
    /// # Errors
    ///
    /// The store's error, or [`StoreError::Task`] if the writer has stopped.
    pub async fn insert_token(&self, hash: String, grant: TokenGrant) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Message::Token { hash, grant, reply })
            .map_err(|error| StoreError::Task(error.to_string()))?;
        answer
            .await
            .map_err(|_| StoreError::Task("the store writer has stopped".into()))?
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

struct WriterThread {
    writer: Box<dyn StoreWriter>,
    tracker: Tracker,
    receiver: mpsc::Receiver<Message>,
    committed: watch::Sender<u64>,
    hub: Arc<Hub>,
    healthy: Arc<AtomicBool>,
    stats: Arc<PipelineStats>,
    observer: Observer,
    /// The latest unwritten heartbeat of each execution.
    pending_heartbeats: HashMap<ExecutionId, Arc<SerializedEvent>>,
    heartbeats_since: Option<Instant>,
    last_purge: Option<Instant>,
    /// The highest sequence number published so far.
    high_water: u64,
    /// The highest sequence number the store has reserved (see [`Batch::reserved`]).
    reserved: u64,
    config: PipelineConfig,
}

/// A token to store and whom to tell.
type PendingToken = (String, TokenGrant, oneshot::Sender<Result<(), StoreError>>);

/// What one cycle gathered from the channel.
#[derive(Default)]
struct Gathered {
    events: Vec<Arc<Event>>,
    tokens: Vec<PendingToken>,
    flushes: Vec<oneshot::Sender<()>>,
    stop: bool,
}

impl WriterThread {
    fn run(mut self) {
        loop {
            let mut gathered = Gathered::default();
            match self.receiver.recv_timeout(self.next_wakeup()) {
                Ok(message) => gathered.push(message),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => gathered.stop = true,
            }
            self.drain_into(&mut gathered);
            let stop = self.cycle(gathered);
            self.maybe_purge();
            if stop {
                if !self.pending_heartbeats.is_empty() {
                    self.cycle(Gathered {
                        stop: true,
                        ..Gathered::default()
                    });
                }
                break;
            }
        }
        if let Err(error) = self.writer.close() {
            tracing::error!(%error, "closing the store failed");
        }
    }

    fn next_wakeup(&self) -> Duration {
        let mut wait = Duration::from_secs(1);
        if let Some(since) = self.heartbeats_since {
            wait = wait.min(self.config.heartbeat_flush.saturating_sub(since.elapsed()));
        }
        wait.max(Duration::from_millis(1))
    }

    fn drain_into(&self, gathered: &mut Gathered) {
        while gathered.events.len() < self.config.max_batch {
            match self.receiver.try_recv() {
                Ok(message) => gathered.push(message),
                Err(_) => break,
            }
        }
    }

    /// Drains only events that are already queued (after snapshots were taken).
    fn drain_events(&self, gathered: &mut Gathered) -> usize {
        let before = gathered.events.len();
        self.drain_into(gathered);
        gathered.events.len() - before
    }

    /// Writes what was gathered; returns whether the pipeline was asked to stop.
    fn cycle(&mut self, mut gathered: Gathered) -> bool {
        for (hash, grant, reply) in gathered.tokens.drain(..) {
            let _ = reply.send(self.writer.insert_token(&hash, &grant));
        }
        let flush_all = gathered.stop
            || !gathered.flushes.is_empty()
            || self
                .heartbeats_since
                .is_some_and(|since| since.elapsed() >= self.config.heartbeat_flush);
        let heartbeats_due = flush_all && !self.pending_heartbeats.is_empty();
        if gathered.events.is_empty() && !heartbeats_due {
            for reply in gathered.flushes {
                let _ = reply.send(());
            }
            return gathered.stop;
        }

        let mut published: Vec<Arc<SerializedEvent>> = Vec::with_capacity(gathered.events.len());
        let mut written: Vec<Arc<SerializedEvent>> = Vec::new();
        let mut touched: HashSet<ExecutionId> = HashSet::new();
        self.sort_events(&gathered.events, &mut published, &mut written, &mut touched);
        if flush_all {
            touched.extend(self.pending_heartbeats.keys().copied());
        }
        let mut snapshots = self.snapshots(&touched);

        // Events queued while the snapshots were taken: include the ones the snapshots already
        // reflect, so that a row and the log agree (see the module documentation).
        let mut more = Gathered::default();
        if self.drain_events(&mut more) > 0 {
            let mut newly: HashSet<ExecutionId> = HashSet::new();
            self.sort_events(&more.events, &mut published, &mut written, &mut newly);
            let stale: HashSet<ExecutionId> = newly
                .into_iter()
                .filter(|id| !snapshots.contains_key(id) || more.events.iter().any(|e| is_ahead(e, *id, &snapshots)))
                .collect();
            snapshots.extend(self.snapshots(&stale));
            touched.extend(stale);
            gathered.tokens.extend(more.tokens);
            gathered.flushes.extend(more.flushes);
            gathered.stop |= more.stop;
        }
        for id in &touched {
            if let Some(heartbeat) = self.pending_heartbeats.remove(id) {
                written.push(heartbeat);
                self.stats.heartbeats_written.fetch_add(1, Ordering::Relaxed);
            }
        }
        if self.pending_heartbeats.is_empty() {
            self.heartbeats_since = None;
        }
        written.sort_by_key(|e| e.event.global_seq);
        let high_water = published
            .last()
            .map_or(self.high_water, |e| e.event.global_seq)
            .max(self.high_water);

        let mut rows: Vec<RowUpdate> = Vec::with_capacity(touched.len());
        for id in &touched {
            match snapshots.remove(id) {
                Some(record) => rows.push(RowUpdate::Snapshot(Box::new(record))),
                None => {
                    let terminal = written.iter().find(|e| {
                        e.event.kind.finished().is_some()
                            && e.event.execution.as_ref().is_some_and(|s| s.execution_id == *id)
                    });
                    if let Some(terminal) = terminal {
                        rows.push(RowUpdate::Finish {
                            execution_id: *id,
                            event: Arc::clone(&terminal.event),
                        });
                    }
                }
            }
        }
        // Sequence numbers are reserved in blocks: a batch of bare heartbeats (published, not
        // written) costs no transaction unless it runs past the reservation.
        let reserved = if high_water > self.reserved {
            high_water + SEQUENCE_RESERVATION
        } else {
            self.reserved
        };
        let batch = Batch {
            events: written,
            rows,
            reserved,
        };
        if !batch.is_empty() || reserved > self.reserved {
            self.commit_with_retry(&batch, gathered.stop);
        }
        self.high_water = high_water;
        self.reserved = reserved;
        for (hash, grant, reply) in gathered.tokens.drain(..) {
            let _ = reply.send(self.writer.insert_token(&hash, &grant));
        }
        // Counted before anyone is told, so that an acknowledged change is in the metrics.
        for event in &published {
            (self.observer)(&event.event);
        }
        let _ = self.committed.send(high_water);
        for event in &published {
            self.hub.publish(event);
        }
        for reply in gathered.flushes {
            let _ = reply.send(());
        }
        gathered.stop
    }

    /// Serialises events; heartbeats go to the pending set, the rest to `written`.
    fn sort_events(
        &mut self,
        events: &[Arc<Event>],
        published: &mut Vec<Arc<SerializedEvent>>,
        written: &mut Vec<Arc<SerializedEvent>>,
        touched: &mut HashSet<ExecutionId>,
    ) {
        for event in events {
            let serialized = Arc::new(SerializedEvent::new(Arc::clone(event)));
            published.push(Arc::clone(&serialized));
            let id = event.execution.as_ref().map(|scope| scope.execution_id);
            match (&event.kind, id) {
                (EventKind::Heartbeat { .. }, Some(id)) => {
                    self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                    self.pending_heartbeats.insert(id, serialized);
                    self.heartbeats_since.get_or_insert_with(Instant::now);
                }
                (_, id) => {
                    written.push(serialized);
                    if let Some(id) = id {
                        touched.insert(id);
                    }
                }
            }
        }
    }

    fn snapshots(&self, ids: &HashSet<ExecutionId>) -> HashMap<ExecutionId, agentrack::ExecutionRecord> {
        ids.iter()
            .filter_map(|id| self.tracker.get(*id).ok().map(|record| (*id, record)))
            .collect()
    }

    fn commit_with_retry(&mut self, batch: &Batch, stopping: bool) {
        let mut delay = Duration::from_millis(50);
        let mut attempts = 0u32;
        loop {
            let started = Instant::now();
            match self.writer.commit(batch) {
                Ok(()) => {
                    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    self.stats.last_commit_micros.store(micros, Ordering::Relaxed);
                    self.stats.batches.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .events_written
                        .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
                    self.healthy.store(true, Ordering::Relaxed);
                    return;
                }
                Err(error) => {
                    attempts += 1;
                    self.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
                    self.healthy.store(false, Ordering::Relaxed);
                    tracing::error!(%error, attempts, events = batch.events.len(), "store commit failed; retrying");
                    if stopping && attempts >= 5 {
                        tracing::error!("giving up on the last batch at shutdown");
                        return;
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    fn maybe_purge(&mut self) {
        if self
            .last_purge
            .is_some_and(|last| last.elapsed() < self.config.purge_interval)
        {
            return;
        }
        self.last_purge = Some(Instant::now());
        let Ok(age) = chrono::Duration::from_std(self.config.retention) else {
            return;
        };
        let before = chrono::Utc::now() - age;
        match self.writer.purge_finished(before) {
            Ok(purged) => {
                self.stats
                    .purged_executions
                    .fetch_add(purged.executions, Ordering::Relaxed);
                if purged.executions > 0 {
                    tracing::info!(
                        executions = purged.executions,
                        events = purged.events,
                        "purged finished executions past retention"
                    );
                }
            }
            Err(error) => tracing::warn!(%error, "retention purge failed"),
        }
    }
}

impl Gathered {
    fn push(&mut self, message: Message) {
        match message {
            Message::Event(event) => self.events.push(event),
            Message::Token { hash, grant, reply } => self.tokens.push((hash, grant, reply)),
            Message::Flush(reply) => self.flushes.push(reply),
            Message::Shutdown => self.stop = true,
        }
    }
}

/// Whether `event` belongs to `id` and is newer than its snapshot.
fn is_ahead(event: &Event, id: ExecutionId, snapshots: &HashMap<ExecutionId, agentrack::ExecutionRecord>) -> bool {
    event.execution.as_ref().is_some_and(|scope| {
        scope.execution_id == id && snapshots.get(&id).is_some_and(|record| scope.seq > record.seq)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use agentrack::{NewExecution, Phase};

    use super::*;
    use crate::store::Purged;

    /// One committed batch: (global_seq, type) of its events, (id, seq) of its rows.
    type Written = (Vec<(u64, &'static str)>, Vec<(ExecutionId, u64)>);

    /// A writer that remembers what it was given and fails while told to.
    #[derive(Clone, Default)]
    struct Recorder {
        batches: Arc<Mutex<Vec<Written>>>,
        failures_left: Arc<AtomicUsize>,
    }

    impl StoreWriter for Recorder {
        fn commit(&mut self, batch: &Batch) -> Result<(), StoreError> {
            if self
                .failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(StoreError::Database("disk on fire".into()));
            }
            let events = batch
                .events
                .iter()
                .map(|e| (e.event.global_seq, e.event.kind.name()))
                .collect();
            let rows = batch
                .rows
                .iter()
                .filter_map(|row| match row {
                    RowUpdate::Snapshot(record) => Some((record.execution_id, record.seq)),
                    RowUpdate::Finish { .. } => None,
                })
                .collect();
            self.batches.lock().push((events, rows));
            Ok(())
        }
        fn purge_finished(&mut self, _before: chrono::DateTime<chrono::Utc>) -> Result<Purged, StoreError> {
            Ok(Purged::default())
        }
        fn insert_token(&mut self, _hash: &str, _grant: &TokenGrant) -> Result<(), StoreError> {
            Ok(())
        }
        fn close(&mut self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    fn start(recorder: &Recorder, flush: Duration) -> (Tracker, Arc<Pipeline>) {
        let tracker = Tracker::new();
        let pipeline = Pipeline::start(
            Box::new(recorder.clone()),
            &tracker,
            0,
            PipelineConfig {
                heartbeat_flush: flush,
                ..PipelineConfig::default()
            },
            Box::new(|_| {}),
        )
        .unwrap();
        (tracker, pipeline)
    }

    #[tokio::test]
    async fn every_event_is_written_in_order_with_a_row_at_least_as_new() {
        let recorder = Recorder::default();
        let (tracker, pipeline) = start(&recorder, Duration::from_secs(60));
        let id = tracker.create(NewExecution::new("a", "t", "u")).unwrap().id();
        tracker.start(id).unwrap();
        let change = tracker.transition(id, Phase::WebsocketSetup, None).unwrap();
        let last = change.events.last().unwrap().global_seq;
        pipeline.wait_committed(last, Duration::from_secs(5)).await.unwrap();
        let batches = recorder.batches.lock().clone();
        let seqs: Vec<u64> = batches
            .iter()
            .flat_map(|(events, _)| events.iter().map(|e| e.0))
            .collect();
        assert_eq!(seqs, (1..=last).collect::<Vec<_>>());
        let newest_row = batches.iter().flat_map(|(_, rows)| rows).map(|r| r.1).max().unwrap();
        assert!(newest_row >= 3, "the row reflects every written event of its execution");
        pipeline.shutdown();
    }

    #[tokio::test]
    async fn heartbeats_are_coalesced_to_the_latest_and_flushed_at_shutdown() {
        let recorder = Recorder::default();
        let (tracker, pipeline) = start(&recorder, Duration::from_secs(60));
        let id = tracker.create(NewExecution::new("a", "t", "u")).unwrap().id();
        tracker.start(id).unwrap();
        // The first heartbeat moves the execution to running: a state change, written at once
        // (with its heartbeat).
        let first = tracker.heartbeat(id).unwrap();
        let first_heartbeat = first.events.last().unwrap().global_seq;
        pipeline
            .wait_committed(first_heartbeat, Duration::from_secs(5))
            .await
            .unwrap();
        let mut last = 0;
        for _ in 0..10 {
            last = tracker.heartbeat(id).unwrap().events.last().unwrap().global_seq;
        }
        // Published (nobody waits for heartbeats) but not yet written.
        pipeline.wait_committed(last, Duration::from_secs(5)).await.unwrap();
        let written = |recorder: &Recorder| {
            recorder
                .batches
                .lock()
                .iter()
                .flat_map(|(events, _)| events.clone())
                .filter(|e| e.1 == "heartbeat")
                .collect::<Vec<_>>()
        };
        assert!(written(&recorder).iter().all(|(seq, _)| *seq <= first_heartbeat));
        let stopper = Arc::clone(&pipeline);
        tokio::task::spawn_blocking(move || stopper.shutdown()).await.unwrap();
        let seqs: Vec<u64> = written(&recorder).into_iter().map(|(seq, _)| seq).collect();
        assert_eq!(seqs.last(), Some(&last));
        assert!(
            seqs.iter().all(|seq| *seq == first_heartbeat || *seq == last),
            "only the latest of the plain heartbeats: {seqs:?}"
        );
    }

    #[tokio::test]
    async fn a_failing_store_holds_acknowledgements_until_it_recovers() {
        let recorder = Recorder::default();
        recorder.failures_left.store(3, Ordering::SeqCst);
        let (tracker, pipeline) = start(&recorder, Duration::from_secs(60));
        let change = tracker.create(NewExecution::new("a", "t", "u")).unwrap();
        let seq = change.events[0].global_seq;
        // The first attempts fail: nothing is confirmed, and the pipeline says it is unhealthy.
        let early = pipeline.wait_committed(seq, Duration::from_millis(40)).await;
        assert_eq!(early, Err(CommitError::TimedOut(Duration::from_millis(40))));
        // Retries (50, 100, 200 ms) then succeed; the same batch goes in whole, once.
        pipeline.wait_committed(seq, Duration::from_secs(5)).await.unwrap();
        assert!(pipeline.is_healthy());
        assert_eq!(pipeline.stats().commit_failures.load(Ordering::Relaxed), 3);
        assert_eq!(recorder.batches.lock().len(), 1);
        pipeline.shutdown();
    }

    #[tokio::test]
    async fn subscribers_only_see_committed_events() {
        let recorder = Recorder::default();
        recorder.failures_left.store(1, Ordering::SeqCst);
        let (tracker, pipeline) = start(&recorder, Duration::from_secs(60));
        let mut events = pipeline.subscribe(None, None);
        tracker.create(NewExecution::new("a", "t", "u")).unwrap();
        let published = events.recv().await.unwrap();
        assert_eq!(published.event.global_seq, 1);
        assert!(!recorder.batches.lock().is_empty(), "written before it was published");
        assert!(published.text().contains("execution_created"));
        pipeline.shutdown();
    }
}
