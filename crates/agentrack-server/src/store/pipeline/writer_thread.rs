//! The writer thread: gather what the channel holds, write it in one transaction, publish it,
//! acknowledge it. See the [module documentation](super) for why each step is where it is.
//!
//! The thread serves every shard its node owns: each shard keeps its own numbering, deferred
//! heartbeats and rows, and watermark, and one transaction carries the batches of all of them —
//! unless the store refuses a shard's fence, which drops that shard and lets the others commit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use agentrack::{Event, EventKind, ExecutionId, ExecutionRecord, Tracker};
use tokio::sync::{oneshot, watch};

use super::deferred::Deferred;
use super::{Attach, LOG_KEPT_AT_LEAST, Message, PipelineConfig, PipelineStats, Publisher, SEQUENCE_RESERVATION};
use crate::serialized_event::SerializedEvent;
use crate::store::replay::row_can_wait;
use crate::store::{Batch, Cutoff, KeyOp, KeyState, RowUpdate, ShardId, StoreError, StoreWriter};

/// What the thread reports about itself to the [`Pipeline`](super::Pipeline) handle.
pub(super) struct Health {
    /// Whether the latest commit succeeded.
    pub(super) healthy: Arc<AtomicBool>,
    /// The counters.
    pub(super) stats: Arc<PipelineStats>,
    /// Told of every shard the store refused a write of (another node took it).
    pub(super) lost: tokio::sync::mpsc::UnboundedSender<ShardId>,
}

/// One shard's part of the pipeline.
struct Shard {
    tracker: Tracker,
    /// Its fencing number, on a shared store.
    fence: Option<i64>,
    /// The highest sequence number published so far.
    high_water: u64,
    /// The highest sequence number the store has reserved (see [`Batch::reserved`]).
    reserved: u64,
    committed: watch::Sender<u64>,
    deferred: Deferred,
}

/// The receiving end of the writer's channel, counting down what it takes (see
/// [`Pipeline::queued`](super::Pipeline::queued)).
pub(super) struct Inbox {
    receiver: mpsc::Receiver<Message>,
    queued: Arc<AtomicUsize>,
}

impl Inbox {
    pub(super) fn new(receiver: mpsc::Receiver<Message>, queued: Arc<AtomicUsize>) -> Self {
        Self { receiver, queued }
    }

    fn taken(&self, message: Message) -> Message {
        self.queued.fetch_sub(1, Ordering::Relaxed);
        message
    }

    fn recv_timeout(&self, timeout: Duration) -> Result<Message, mpsc::RecvTimeoutError> {
        self.receiver.recv_timeout(timeout).map(|message| self.taken(message))
    }

    fn try_recv(&self) -> Result<Message, mpsc::TryRecvError> {
        self.receiver.try_recv().map(|message| self.taken(message))
    }
}

pub(super) struct WriterThread {
    writer: Box<dyn StoreWriter>,
    receiver: Inbox,
    publisher: Box<dyn Publisher>,
    health: Health,
    shards: HashMap<ShardId, Shard>,
    /// Messages drained after a cycle's snapshots that belong to the next cycle.
    carried: Vec<Message>,
    config: PipelineConfig,
    /// When the store was last asked whether it answers (or last written to).
    last_check: Instant,
}

/// How often an idle writer checks that the store still answers.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Most drains of late events per cycle (see `WriterThread::catch_up`): each round lasts only as
/// long as its few snapshots take, so rounds shrink fast; the bound is for a tracker that never
/// pauses.
const CATCH_UP_ROUNDS: usize = 64;

/// What one cycle gathered from the channel.
#[derive(Default)]
struct Gathered {
    events: Vec<(ShardId, Arc<Event>)>,
    /// Token and ticket writes and purges: written on their own, not part of the event batch.
    requests: Vec<Message>,
    /// Shards coming and going, applied before the cycle's events.
    membership: Vec<Message>,
    flushes: Vec<oneshot::Sender<()>>,
    stop: bool,
}

impl Gathered {
    fn push(&mut self, message: Message) {
        match message {
            Message::Event(shard, event) => self.events.push((shard, event)),
            Message::Flush(reply) => self.flushes.push(reply),
            Message::Shutdown => self.stop = true,
            membership @ (Message::Attach(_)
            | Message::Detach { .. }
            | Message::HoldRows(..)
            | Message::WriteNextHeartbeat(..)) => {
                self.membership.push(membership);
            }
            request @ (Message::Token { .. }
            | Message::Revoke { .. }
            | Message::Ticket { .. }
            | Message::TakeTicket { .. }
            | Message::Purge { .. }
            | Message::Key { .. }) => self.requests.push(request),
        }
    }

    fn answer_flushes(&mut self) {
        for reply in self.flushes.drain(..) {
            let _ = reply.send(());
        }
    }
}

/// The events of one shard in one cycle, sorted by what happens to them.
#[derive(Default)]
struct Sorted {
    /// Every event, in the shard's order: all are published.
    published: Vec<Arc<SerializedEvent>>,
    /// The events to write now (heartbeats only when due).
    written: Vec<Arc<SerializedEvent>>,
    /// Executions whose row is written in this batch.
    touched: HashSet<ExecutionId>,
    snapshots: HashMap<ExecutionId, ExecutionRecord>,
}

/// A shard's share of one cycle, from sorting to acknowledging.
struct Pass {
    shard: ShardId,
    sorted: Sorted,
    high_water: u64,
    /// The reservation the batch moves to, if it does.
    reserved: Option<u64>,
    batch: Batch,
}

impl WriterThread {
    pub(super) fn new(
        writer: Box<dyn StoreWriter>,
        receiver: Inbox,
        publisher: Box<dyn Publisher>,
        health: Health,
        config: PipelineConfig,
    ) -> Self {
        Self {
            writer,
            receiver,
            publisher,
            health,
            shards: HashMap::new(),
            carried: Vec::new(),
            config,
            last_check: Instant::now(),
        }
    }

    pub(super) fn run(mut self) {
        loop {
            let mut gathered = Gathered::default();
            for message in std::mem::take(&mut self.carried) {
                gathered.push(message);
            }
            if gathered.events.is_empty() {
                match self.receiver.recv_timeout(self.next_wakeup()) {
                    Ok(message) => gathered.push(message),
                    Err(mpsc::RecvTimeoutError::Timeout) => self.check_when_idle(),
                    Err(mpsc::RecvTimeoutError::Disconnected) => gathered.stop = true,
                }
            }
            self.drain_into(&mut gathered);
            if self.cycle(gathered) {
                if self.shards.values().any(|shard| !shard.deferred.is_empty()) {
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
        let flush = self.config.heartbeat_flush;
        let wait = self
            .shards
            .values()
            .filter_map(|shard| shard.deferred.until_due(flush))
            .min()
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
        self.apply_membership(&mut gathered.membership);
        self.answer_requests(&mut gathered.requests);
        let flush_all = gathered.stop || !gathered.flushes.is_empty();
        let mut by_shard: HashMap<ShardId, Vec<Arc<Event>>> = HashMap::new();
        for (shard, event) in gathered.events.drain(..) {
            // Events of a shard no longer here were never acknowledged: they go with it.
            if self.shards.contains_key(&shard) {
                by_shard.entry(shard).or_default().push(event);
            }
        }
        let flush = self.config.heartbeat_flush;
        let due: Vec<ShardId> = self
            .shards
            .iter()
            .filter(|(id, shard)| {
                !shard.deferred.is_empty() && (flush_all || shard.deferred.due(flush)) || by_shard.contains_key(id)
            })
            .map(|(id, _)| *id)
            .collect();
        if due.is_empty() {
            gathered.answer_flushes();
            return gathered.stop;
        }

        let mut passes: Vec<Pass> = due
            .into_iter()
            .filter_map(|shard| {
                let events = by_shard.remove(&shard).unwrap_or_default();
                let flushing = flush_all || self.shards.get(&shard).is_some_and(|s| s.deferred.due(flush));
                self.sort_shard(shard, &events, flushing)
            })
            .collect();
        self.catch_up(&mut gathered, &mut passes);
        for pass in &mut passes {
            self.finish_pass(pass);
        }
        self.commit_passes(&mut passes, gathered.stop);
        self.answer_requests(&mut gathered.requests);

        for pass in &passes {
            self.publisher.committed(&pass.sorted.published);
        }
        for pass in &passes {
            if let Some(shard) = self.shards.get(&pass.shard) {
                let _ = shard.committed.send(pass.high_water);
            }
        }
        for pass in &passes {
            self.publisher.publish(&pass.sorted.published);
        }
        gathered.answer_flushes();
        gathered.stop
    }

    /// Shards attached, detached, and rows to hold, in the order they were asked for.
    fn apply_membership(&mut self, membership: &mut Vec<Message>) {
        for message in membership.drain(..) {
            match message {
                Message::Attach(attach) => {
                    let Attach {
                        shard,
                        tracker,
                        high_water,
                        fence,
                        committed,
                    } = *attach;
                    self.shards.insert(
                        shard,
                        Shard {
                            tracker,
                            fence,
                            high_water,
                            reserved: high_water,
                            committed,
                            deferred: Deferred::default(),
                        },
                    );
                }
                Message::Detach { shard, flush, reply } => {
                    if flush {
                        self.flush_shard(shard);
                    }
                    self.shards.remove(&shard);
                    let _ = reply.send(());
                }
                Message::HoldRows(shard, ids) => {
                    if let Some(shard) = self.shards.get_mut(&shard) {
                        for id in ids {
                            shard.deferred.hold_row(id);
                        }
                    }
                }
                Message::WriteNextHeartbeat(shard, ids) => {
                    if let Some(shard) = self.shards.get_mut(&shard) {
                        shard.deferred.write_next_heartbeat(ids);
                    }
                }
                _ => {}
            }
        }
    }

    /// Writes a shard's queued events and everything it defers, before it is handed over.
    fn flush_shard(&mut self, shard: ShardId) {
        let mut events = Vec::new();
        let mut others = Vec::new();
        while let Ok(message) = self.receiver.try_recv() {
            match message {
                Message::Event(of, event) if of == shard => events.push(event),
                other => others.push(other),
            }
        }
        self.carried.extend(others);
        let Some(mut pass) = self.sort_shard(shard, &events, true) else {
            return;
        };
        self.finish_pass(&mut pass);
        let mut passes = vec![pass];
        self.commit_passes(&mut passes, true);
        for pass in &passes {
            self.publisher.committed(&pass.sorted.published);
            if let Some(state) = self.shards.get(&pass.shard) {
                let _ = state.committed.send(pass.high_water);
            }
            self.publisher.publish(&pass.sorted.published);
        }
    }

    /// Sorts one shard's events and takes its snapshots; `None` for a shard no longer here.
    fn sort_shard(&mut self, shard: ShardId, events: &[Arc<Event>], flushing: bool) -> Option<Pass> {
        let state = self.shards.get_mut(&shard)?;
        let mut sorted = Sorted::default();
        sort(state, shard, events, &mut sorted, &self.health.stats);
        if flushing {
            sorted.touched.extend(state.deferred.ids());
        }
        sorted.snapshots = snapshots(&state.tracker, &sorted.touched);
        Some(Pass {
            shard,
            sorted,
            high_water: state.high_water,
            reserved: None,
            batch: Batch::default(),
        })
    }

    /// Events queued while the snapshots were taken: take them in, so that no row is written
    /// ahead of the log (see the module documentation). Events of shards without a pass in this
    /// cycle wait for the next one. A snapshot taken for an event taken in may itself be ahead of
    /// what is queued by then, so this repeats until a round takes no snapshot: then every
    /// snapshot was taken before the last drain, and each of its events is in hand.
    fn catch_up(&mut self, gathered: &mut Gathered, passes: &mut [Pass]) {
        for _ in 0..CATCH_UP_ROUNDS {
            if self.catch_up_round(gathered, passes) == 0 {
                return;
            }
        }
        tracing::warn!(
            rounds = CATCH_UP_ROUNDS,
            "rows may be ahead of the log in this batch: events kept arriving while they were read"
        );
    }

    /// One drain of what is queued into the cycle's passes; returns how many snapshots it took.
    fn catch_up_round(&mut self, gathered: &mut Gathered, passes: &mut [Pass]) -> usize {
        let mut late = Gathered::default();
        while let Ok(message) = self.receiver.try_recv() {
            late.push(message);
        }
        gathered.requests.append(&mut late.requests);
        gathered.flushes.append(&mut late.flushes);
        gathered.stop |= late.stop;
        self.carried.append(&mut late.membership);
        let mut by_shard: HashMap<ShardId, Vec<Arc<Event>>> = HashMap::new();
        for (shard, event) in late.events {
            if passes.iter().any(|pass| pass.shard == shard) {
                by_shard.entry(shard).or_default().push(event);
            } else {
                self.carried.push(Message::Event(shard, event));
            }
        }
        let mut taken = 0;
        for pass in passes.iter_mut() {
            let Some(events) = by_shard.remove(&pass.shard) else {
                continue;
            };
            let Some(shard) = self.shards.get_mut(&pass.shard) else {
                continue;
            };
            let mut newly = Sorted::default();
            sort(shard, pass.shard, &events, &mut newly, &self.health.stats);
            let sorted = &mut pass.sorted;
            let stale: HashSet<ExecutionId> = newly
                .touched
                .into_iter()
                .filter(|id| {
                    !sorted.snapshots.contains_key(id) || events.iter().any(|e| is_ahead(e, *id, &sorted.snapshots))
                })
                .collect();
            taken += stale.len();
            sorted.snapshots.extend(snapshots(&shard.tracker, &stale));
            sorted.touched.extend(stale);
            sorted.published.append(&mut newly.published);
            sorted.written.append(&mut newly.written);
        }
        taken
    }

    /// Every touched execution's waiting heartbeat goes in with its row; the rows and the
    /// reservation make the shard's batch.
    fn finish_pass(&mut self, pass: &mut Pass) {
        let Some(state) = self.shards.get_mut(&pass.shard) else {
            return;
        };
        let sorted = &mut pass.sorted;
        for id in &sorted.touched {
            if let Some(heartbeat) = state.deferred.take(*id) {
                sorted.written.push(heartbeat);
                self.health.stats.heartbeats_written.fetch_add(1, Ordering::Relaxed);
            }
        }
        sorted.written.sort_by_key(|e| e.event.global_seq);
        pass.high_water = sorted
            .published
            .last()
            .map_or(state.high_water, |e| e.event.global_seq)
            .max(state.high_water);
        pass.reserved = (pass.high_water > state.reserved).then_some(pass.high_water + SEQUENCE_RESERVATION);
        pass.batch = Batch {
            shard: pass.shard,
            fence: state.fence,
            events: std::mem::take(&mut sorted.written),
            rows: rows(sorted),
            // Sequence numbers are reserved in blocks: a batch of bare heartbeats (published,
            // not written) costs no transaction unless it runs past the reservation.
            reserved: pass.reserved,
            // Everything emitted after this cycle's snapshots is numbered above what earlier
            // cycles published.
            replay_from: state.high_water,
        };
    }

    /// Commits the passes' batches in one transaction, retrying until the store takes them;
    /// a shard whose fence the store refuses is dropped (its pass too) and the rest retried.
    fn commit_passes(&mut self, passes: &mut Vec<Pass>, stopping: bool) {
        let stats = Arc::clone(&self.health.stats);
        let mut batches: Vec<Batch> = passes
            .iter_mut()
            .map(|pass| std::mem::take(&mut pass.batch))
            .filter(|batch| !batch.is_empty())
            .collect();
        let mut delay = Duration::from_millis(50);
        let mut attempts = 0u32;
        while !batches.is_empty() {
            let started = Instant::now();
            match self.writer.commit(&batches) {
                Ok(()) => {
                    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    stats.last_commit_micros.store(micros, Ordering::Relaxed);
                    stats.batches.fetch_add(1, Ordering::Relaxed);
                    let events: usize = batches.iter().map(|batch| batch.events.len()).sum();
                    stats.events_written.fetch_add(events as u64, Ordering::Relaxed);
                    self.health.healthy.store(true, Ordering::Relaxed);
                    self.last_check = Instant::now();
                    break;
                }
                Err(StoreError::Fenced { shards }) => {
                    for shard in &shards {
                        tracing::warn!(shard, "another node owns the shard now: dropping it");
                        self.shards.remove(shard);
                        let _ = self.health.lost.send(*shard);
                    }
                    passes.retain(|pass| !shards.contains(&pass.shard));
                    batches.retain(|batch| !shards.contains(&batch.shard));
                }
                Err(error) => {
                    attempts += 1;
                    stats.commit_failures.fetch_add(1, Ordering::Relaxed);
                    self.health.healthy.store(false, Ordering::Relaxed);
                    let events: usize = batches.iter().map(|batch| batch.events.len()).sum();
                    tracing::error!(%error, attempts, events, "store commit failed; retrying");
                    if stopping && attempts >= 5 {
                        tracing::error!("giving up on the last batch at shutdown");
                        break;
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
        for pass in passes.iter() {
            if let Some(state) = self.shards.get_mut(&pass.shard) {
                state.high_water = pass.high_water;
                if let Some(reserved) = pass.reserved {
                    state.reserved = reserved;
                }
            }
        }
    }

    /// Token and ticket writes and purges, each on its own.
    fn answer_requests(&mut self, requests: &mut Vec<Message>) {
        for request in requests.drain(..) {
            match request {
                Message::Token { hash, grant, reply } => {
                    let _ = reply.send(self.writer.insert_token(&hash, &grant));
                }
                Message::Revoke { id, at, reply } => {
                    let _ = reply.send(self.writer.revoke_token(&id, at));
                }
                Message::Ticket { ticket, reply } => {
                    let _ = reply.send(self.writer.insert_ticket(&ticket));
                }
                Message::TakeTicket { hash, reply } => {
                    let _ = reply.send(self.writer.take_ticket(&hash));
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
                        shards: self.shards.keys().copied().collect(),
                    };
                    let purged = self.writer.purge(&cutoff);
                    if let Ok(purged) = &purged {
                        self.health
                            .stats
                            .purged_executions
                            .fetch_add(purged.executions, Ordering::Relaxed);
                    }
                    self.expire_keys();
                    let _ = reply.send(purged);
                }
                Message::Key { op, reply } => {
                    let _ = reply.send(self.writer.idempotency(&op));
                }
                _ => {}
            }
        }
    }
}

impl WriterThread {
    /// Forgets the idempotency keys older than their retention (with each retention purge).
    fn expire_keys(&mut self) {
        let before = chrono::Duration::from_std(self.config.idempotency_retention)
            .ok()
            .and_then(|kept| chrono::Utc::now().checked_sub_signed(kept))
            .unwrap_or_default();
        match self.writer.idempotency(&KeyOp::Expire { before }) {
            Ok(KeyState::Changed(0)) => {}
            Ok(expired) => tracing::debug!(?expired, "idempotency keys expired"),
            Err(error) => tracing::warn!(%error, "expiring idempotency keys failed"),
        }
    }
}

/// Serialises events. Heartbeats wait (only the latest is written, and at the latest the
/// [`HEARTBEATS_UNWRITTEN`](super::HEARTBEATS_UNWRITTEN)th since the last); every other event is
/// written now, and so is its execution's row unless the event can be replayed onto it
/// ([`row_can_wait`]), in which case the row waits for the flush.
fn sort(pipe: &mut Shard, shard: ShardId, events: &[Arc<Event>], sorted: &mut Sorted, counters: &PipelineStats) {
    for event in events {
        let serialized = Arc::new(SerializedEvent::of_shard(shard, Arc::clone(event)));
        sorted.published.push(Arc::clone(&serialized));
        let id = event.execution.as_ref().map(|scope| scope.execution_id);
        match (&event.kind, id) {
            (EventKind::Heartbeat { .. }, Some(id)) => {
                counters.heartbeats.fetch_add(1, Ordering::Relaxed);
                if pipe.deferred.hold_heartbeat(id, serialized) {
                    // Written with its row in this batch (see `HEARTBEATS_UNWRITTEN`)
                    sorted.touched.insert(id);
                }
            }
            (kind, Some(id)) if row_can_wait(kind) => {
                sorted.written.push(serialized);
                pipe.deferred.hold_row(id);
            }
            (_, id) => {
                sorted.written.push(serialized);
                sorted.touched.extend(id);
            }
        }
    }
}

fn snapshots(tracker: &Tracker, ids: &HashSet<ExecutionId>) -> HashMap<ExecutionId, ExecutionRecord> {
    ids.iter()
        .filter_map(|id| tracker.get(*id).ok().map(|record| (*id, record)))
        .collect()
}

/// The rows of a batch: each touched execution's snapshot, or, for one that left memory before
/// it could be snapshotted, its terminal event applied to the stored row.
fn rows(sorted: &mut Sorted) -> Vec<RowUpdate> {
    let mut snapshots = std::mem::take(&mut sorted.snapshots);
    let mut rows = Vec::with_capacity(sorted.touched.len());
    for id in &sorted.touched {
        if let Some(record) = snapshots.remove(id) {
            rows.push(RowUpdate::Snapshot(Box::new(record)));
            continue;
        }
        let terminal = sorted.written.iter().chain(&sorted.published).find(|e| {
            e.event.kind.finished().is_some() && e.event.execution.as_ref().is_some_and(|s| s.execution_id == *id)
        });
        if let Some(terminal) = terminal {
            rows.push(RowUpdate::Finish {
                execution_id: *id,
                event: Arc::clone(&terminal.event),
            });
        }
    }
    rows
}

/// Whether `event` belongs to `id` and is newer than its snapshot.
fn is_ahead(event: &Event, id: ExecutionId, snapshots: &HashMap<ExecutionId, ExecutionRecord>) -> bool {
    event.execution.as_ref().is_some_and(|scope| {
        scope.execution_id == id && snapshots.get(&id).is_some_and(|record| scope.seq > record.seq)
    })
}
