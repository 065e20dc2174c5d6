//! The writer thread: gather what the channel holds, write it in one transaction, publish it,
//! acknowledge it. See the [module documentation](super) for why each step is where it is.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use agentrack::{Event, EventKind, ExecutionId, ExecutionRecord, Tracker};
use tokio::sync::{oneshot, watch};

use super::deferred::Deferred;
use super::{LOG_KEPT_AT_LEAST, Message, PipelineConfig, PipelineStats, Publisher, SEQUENCE_RESERVATION};
use crate::serialized_event::SerializedEvent;
use crate::store::replay::row_can_wait;
use crate::store::{Batch, Cutoff, RowUpdate, StoreWriter};

/// What the thread reports about itself to the [`Pipeline`](super::Pipeline) handle.
pub(super) struct Health {
    /// Whether the latest commit succeeded.
    pub(super) healthy: Arc<AtomicBool>,
    /// The counters.
    pub(super) stats: Arc<PipelineStats>,
}

pub(super) struct WriterThread {
    writer: Box<dyn StoreWriter>,
    tracker: Tracker,
    receiver: mpsc::Receiver<Message>,
    committed: watch::Sender<u64>,
    publisher: Box<dyn Publisher>,
    health: Health,
    deferred: Deferred,
    /// The highest sequence number published so far.
    high_water: u64,
    /// The highest sequence number the store has reserved (see [`Batch::reserved`]).
    reserved: u64,
    config: PipelineConfig,
    /// When the store was last asked whether it answers (or last written to).
    last_check: Instant,
}

/// How often an idle writer checks that the store still answers.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// What one cycle gathered from the channel.
#[derive(Default)]
struct Gathered {
    events: Vec<Arc<Event>>,
    /// Token inserts and purges: written on their own, not part of the event batch.
    requests: Vec<Message>,
    flushes: Vec<oneshot::Sender<()>>,
    hold_rows: Vec<ExecutionId>,
    stop: bool,
}

impl Gathered {
    fn push(&mut self, message: Message) {
        match message {
            Message::Event(event) => self.events.push(event),
            Message::Flush(reply) => self.flushes.push(reply),
            Message::Shutdown => self.stop = true,
            Message::HoldRows(ids) => self.hold_rows.extend(ids),
            request @ (Message::Token { .. } | Message::Purge { .. }) => self.requests.push(request),
        }
    }

    fn answer_flushes(&mut self) {
        for reply in self.flushes.drain(..) {
            let _ = reply.send(());
        }
    }
}

/// The events of one cycle, sorted by what happens to them.
#[derive(Default)]
struct Sorted {
    /// Every event, in global order: all are published.
    published: Vec<Arc<SerializedEvent>>,
    /// The events to write now (heartbeats only when due).
    written: Vec<Arc<SerializedEvent>>,
    /// Executions whose row is written in this batch.
    touched: HashSet<ExecutionId>,
}

impl WriterThread {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        writer: Box<dyn StoreWriter>,
        tracker: Tracker,
        receiver: mpsc::Receiver<Message>,
        committed: watch::Sender<u64>,
        publisher: Box<dyn Publisher>,
        health: Health,
        high_water: u64,
        config: PipelineConfig,
    ) -> Self {
        Self {
            writer,
            tracker,
            receiver,
            committed,
            publisher,
            health,
            deferred: Deferred::default(),
            high_water,
            reserved: high_water,
            config,
            last_check: Instant::now(),
        }
    }

    pub(super) fn run(mut self) {
        loop {
            let mut gathered = Gathered::default();
            match self.receiver.recv_timeout(self.next_wakeup()) {
                Ok(message) => gathered.push(message),
                Err(mpsc::RecvTimeoutError::Timeout) => self.check_when_idle(),
                Err(mpsc::RecvTimeoutError::Disconnected) => gathered.stop = true,
            }
            self.drain_into(&mut gathered);
            if self.cycle(gathered) {
                if !self.deferred.is_empty() {
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

    /// Asks the store whether it still answers, at most once a second while nothing is written:
    /// an outage shows on `/readyz` before the next write fails, and its end shows without one.
    fn check_when_idle(&mut self) {
        if self.last_check.elapsed() < IDLE_CHECK {
            return;
        }
        self.last_check = Instant::now();
        let healthy = match self.writer.check() {
            Ok(()) => true,
            Err(error) => {
                if self.health.healthy.load(Ordering::Relaxed) {
                    tracing::error!(%error, "the store does not answer");
                }
                false
            }
        };
        if healthy && !self.health.healthy.load(Ordering::Relaxed) {
            tracing::info!("the store answers again");
        }
        self.health.healthy.store(healthy, Ordering::Relaxed);
    }

    fn next_wakeup(&self) -> Duration {
        let idle = Duration::from_secs(1);
        let wait = self
            .deferred
            .until_due(self.config.heartbeat_flush)
            .map_or(idle, |due| due.min(idle));
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

    /// Writes what was gathered; returns whether the pipeline was asked to stop.
    fn cycle(&mut self, mut gathered: Gathered) -> bool {
        for id in gathered.hold_rows.drain(..) {
            self.deferred.hold_row(id);
        }
        self.answer_requests(&mut gathered.requests);
        let flush_all = gathered.stop || !gathered.flushes.is_empty() || self.deferred.due(self.config.heartbeat_flush);
        if gathered.events.is_empty() && (!flush_all || self.deferred.is_empty()) {
            gathered.answer_flushes();
            return gathered.stop;
        }

        let mut sorted = Sorted::default();
        self.sort(&gathered.events, &mut sorted);
        if flush_all {
            sorted.touched.extend(self.deferred.ids());
        }
        let mut snapshots = self.snapshots(&sorted.touched);
        self.catch_up(&mut gathered, &mut sorted, &mut snapshots);
        self.take_heartbeats(&mut sorted);

        let high_water = sorted
            .published
            .last()
            .map_or(self.high_water, |e| e.event.global_seq)
            .max(self.high_water);
        let rows = rows(&sorted, snapshots);
        let batch = Batch {
            events: sorted.written,
            rows,
            reserved: self.reservation(high_water),
            // Everything emitted after this cycle's snapshots is numbered above what earlier
            // cycles published.
            replay_from: self.high_water,
        };
        if !batch.is_empty() {
            self.commit_with_retry(&batch, gathered.stop);
        }
        self.high_water = high_water;
        if let Some(reserved) = batch.reserved {
            self.reserved = reserved;
        }
        self.answer_requests(&mut gathered.requests);

        self.publisher.committed(&sorted.published);
        let _ = self.committed.send(high_water);
        self.publisher.publish(&sorted.published);
        gathered.answer_flushes();
        gathered.stop
    }

    /// Serialises events. Heartbeats wait (only the latest is written); every other event is
    /// written now, and so is its execution's row unless the event can be replayed onto it
    /// ([`row_can_wait`]), in which case the row waits for the flush.
    fn sort(&mut self, events: &[Arc<Event>], sorted: &mut Sorted) {
        for event in events {
            let serialized = Arc::new(SerializedEvent::new(Arc::clone(event)));
            sorted.published.push(Arc::clone(&serialized));
            let id = event.execution.as_ref().map(|scope| scope.execution_id);
            match (&event.kind, id) {
                (EventKind::Heartbeat { .. }, Some(id)) => {
                    self.health.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                    self.deferred.hold_heartbeat(id, serialized);
                }
                (kind, Some(id)) if row_can_wait(kind) => {
                    sorted.written.push(serialized);
                    self.deferred.hold_row(id);
                }
                (_, id) => {
                    sorted.written.push(serialized);
                    sorted.touched.extend(id);
                }
            }
        }
    }

    fn snapshots(&self, ids: &HashSet<ExecutionId>) -> HashMap<ExecutionId, ExecutionRecord> {
        ids.iter()
            .filter_map(|id| self.tracker.get(*id).ok().map(|record| (*id, record)))
            .collect()
    }

    /// Events queued while the snapshots were taken: take in the ones the snapshots already
    /// reflect, so that a row and the log agree (see the module documentation).
    fn catch_up(
        &mut self,
        gathered: &mut Gathered,
        sorted: &mut Sorted,
        snapshots: &mut HashMap<ExecutionId, ExecutionRecord>,
    ) {
        let mut late = Gathered::default();
        self.drain_into(&mut late);
        if late.events.is_empty() {
            gathered.requests.append(&mut late.requests);
            gathered.flushes.append(&mut late.flushes);
            for id in late.hold_rows.drain(..) {
                self.deferred.hold_row(id);
            }
            gathered.stop |= late.stop;
            return;
        }
        let mut newly = Sorted::default();
        self.sort(&late.events, &mut newly);
        let stale: HashSet<ExecutionId> = newly
            .touched
            .into_iter()
            .filter(|id| !snapshots.contains_key(id) || late.events.iter().any(|e| is_ahead(e, *id, snapshots)))
            .collect();
        snapshots.extend(self.snapshots(&stale));
        sorted.touched.extend(stale);
        sorted.published.append(&mut newly.published);
        sorted.written.append(&mut newly.written);
        gathered.requests.append(&mut late.requests);
        gathered.flushes.append(&mut late.flushes);
        for id in late.hold_rows.drain(..) {
            self.deferred.hold_row(id);
        }
        gathered.stop |= late.stop;
    }

    /// Every touched execution's waiting heartbeat goes in with its row, and its row stops waiting.
    fn take_heartbeats(&mut self, sorted: &mut Sorted) {
        for id in &sorted.touched {
            if let Some(heartbeat) = self.deferred.take(*id) {
                sorted.written.push(heartbeat);
                self.health.stats.heartbeats_written.fetch_add(1, Ordering::Relaxed);
            }
        }
        sorted.written.sort_by_key(|e| e.event.global_seq);
    }

    /// Sequence numbers are reserved in blocks: a batch of bare heartbeats (published, not
    /// written) costs no transaction unless it runs past the reservation.
    fn reservation(&self, high_water: u64) -> Option<u64> {
        (high_water > self.reserved).then_some(high_water + SEQUENCE_RESERVATION)
    }

    fn commit_with_retry(&mut self, batch: &Batch, stopping: bool) {
        let stats = &self.health.stats;
        let mut delay = Duration::from_millis(50);
        let mut attempts = 0u32;
        loop {
            let started = Instant::now();
            match self.writer.commit(batch) {
                Ok(()) => {
                    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    stats.last_commit_micros.store(micros, Ordering::Relaxed);
                    stats.batches.fetch_add(1, Ordering::Relaxed);
                    stats
                        .events_written
                        .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
                    self.health.healthy.store(true, Ordering::Relaxed);
                    self.last_check = Instant::now();
                    return;
                }
                Err(error) => {
                    attempts += 1;
                    stats.commit_failures.fetch_add(1, Ordering::Relaxed);
                    self.health.healthy.store(false, Ordering::Relaxed);
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

    /// Token inserts and purges, each on its own.
    fn answer_requests(&mut self, requests: &mut Vec<Message>) {
        for request in requests.drain(..) {
            match request {
                Message::Token { hash, grant, reply } => {
                    let _ = reply.send(self.writer.insert_token(&hash, &grant));
                }
                Message::Purge { before, reply } => {
                    let kept = LOG_KEPT_AT_LEAST.max(self.config.heartbeat_flush * 10);
                    let log_horizon = chrono::Duration::from_std(kept)
                        .ok()
                        .and_then(|kept| chrono::Utc::now().checked_sub_signed(kept))
                        .unwrap_or_default();
                    let cutoff = Cutoff {
                        finished_before: before,
                        events_before: before.min(log_horizon),
                    };
                    let purged = self.writer.purge(&cutoff);
                    if let Ok(purged) = &purged {
                        self.health
                            .stats
                            .purged_executions
                            .fetch_add(purged.executions, Ordering::Relaxed);
                    }
                    let _ = reply.send(purged);
                }
                Message::Event(_) | Message::HoldRows(_) | Message::Flush(_) | Message::Shutdown => {}
            }
        }
    }
}

/// The rows of a batch: each touched execution's snapshot, or, for one that left memory before
/// it could be snapshotted, its terminal event applied to the stored row.
fn rows(sorted: &Sorted, mut snapshots: HashMap<ExecutionId, ExecutionRecord>) -> Vec<RowUpdate> {
    sorted
        .touched
        .iter()
        .filter_map(|id| match snapshots.remove(id) {
            Some(record) => Some(RowUpdate::Snapshot(Box::new(record))),
            None => sorted
                .written
                .iter()
                .find(|e| {
                    e.event.kind.finished().is_some()
                        && e.event.execution.as_ref().is_some_and(|s| s.execution_id == *id)
                })
                .map(|terminal| RowUpdate::Finish {
                    execution_id: *id,
                    event: Arc::clone(&terminal.event),
                }),
        })
        .collect()
}

/// Whether `event` belongs to `id` and is newer than its snapshot.
fn is_ahead(event: &Event, id: ExecutionId, snapshots: &HashMap<ExecutionId, ExecutionRecord>) -> bool {
    event.execution.as_ref().is_some_and(|scope| {
        scope.execution_id == id && snapshots.get(&id).is_some_and(|record| scope.seq > record.seq)
    })
}
