//! Benchmarks of the tracker's hot paths, each next to a baseline measured in the same run.
//!
//! Run with `cargo bench -p agentrack --bench tracker`. At the end the run prints a markdown
//! table of every benchmark's criterion mean (read back from the `new/estimates.json` files this
//! run wrote), the ratio of that mean to its baseline's, and a paired ratio: both workloads run
//! alternately in ~20 ms chunks, so that the two sides of each round see the same machine load.
//!
//! - `lifecycle`: create + start + 5 heartbeats + complete, vs a `HashMap` insert + 7 updates +
//!   remove; through the full calls (events built and returned) and through `Tracker::lean`
//!   (no subscriber, so no event is built), each with and without eviction at the cap.
//! - `heartbeat_100k`: a heartbeat on one of 100,000 alive records, round robin, vs a `HashMap`
//!   field update with the same access pattern; full and through `Tracker::lean`.
//! - `phase_transition_with_subscriber`: thinking ↔ `llm_interaction` with and without one
//!   subscriber attached.
//! - `monitor_tick_1m` and `monitor_scaling`: the deadline-driven `sweep` vs the full scan
//!   (`detect_dead`, the original's algorithm) on populations where exactly `due` records have
//!   passed their heartbeat deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use agentrack::{EventFilter, EventStream, ExecutionId, ManualClock, NewExecution, Phase, Tracker, TrackerConfig};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode};
use futures_core::Stream;

const AGENTS: [&str; 8] = [
    "researcher",
    "planner",
    "coder",
    "reviewer",
    "writer",
    "critic",
    "router",
    "summarizer",
];

/// Whether this is a real benchmark run (`--bench`); otherwise criterion runs each benchmark
/// once as a test (`cargo test --benches`) and the populations are shrunk.
fn full_run() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

/// Scales a population down for test mode.
fn scaled(n: usize) -> usize {
    if full_run() { n } else { (n / 100).max(1) }
}

/// Owner strings cycled through by the benchmarks, so creates clone realistic keys.
struct Owners {
    threads: Vec<String>,
    users: Vec<String>,
}

impl Owners {
    fn new() -> Self {
        Self {
            threads: (0..1024).map(|i| format!("thread-{i}")).collect(),
            users: (0..100).map(|i| format!("user-{i}")).collect(),
        }
    }

    fn new_execution(&self, n: usize) -> NewExecution {
        NewExecution::new(
            AGENTS[n % AGENTS.len()],
            self.threads[n % self.threads.len()].clone(),
            self.users[n % self.users.len()].clone(),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Paired ratios
//
// Criterion measures a benchmark and its baseline seconds apart; on a shared machine the load
// changes in between. So after each group, when both sides ran, the two workloads are also run
// alternately in short chunks (~20 ms, or one iteration if longer), and the ratio is taken per
// round: both sides of a round see the same load.

/// One subject/baseline pair's per-round ratios (subject time per iteration ÷ baseline's).
struct Paired {
    subject: String,
    baseline: String,
    ratios: Vec<f64>,
}

const CHUNK: Duration = Duration::from_millis(20);

/// Runs `run(is_subject, iters)` (which returns the time to count for `iters` iterations)
/// alternately for both sides, `rounds` times.
#[allow(
    clippy::cast_precision_loss,
    reason = "time per iteration is a float figure: counts past 2^53 only lose their lowest digits"
)]
fn pair(
    results: &mut Vec<Paired>,
    subject: &str,
    baseline: &str,
    rounds: usize,
    mut run: impl FnMut(bool, u64) -> Duration,
) {
    if !full_run() {
        return;
    }
    // Calibrate (and warm up) each side: iterations per chunk.
    let mut calibrate = |is_subject: bool| {
        let mut iters = 1;
        while run(is_subject, iters) < CHUNK && iters < 1 << 30 {
            iters *= 2;
        }
        iters
    };
    let (subject_iters, baseline_iters) = (calibrate(true), calibrate(false));
    let per_iter = |elapsed: Duration, iters: u64| elapsed.as_secs_f64() / iters as f64;
    let ratios = (0..rounds)
        .map(|round| {
            // Alternate which side goes first, so a steady drift cancels out.
            let (s, b) = if round % 2 == 0 {
                let s = run(true, subject_iters);
                (s, run(false, baseline_iters))
            } else {
                let b = run(false, baseline_iters);
                (run(true, subject_iters), b)
            };
            per_iter(s, subject_iters) / per_iter(b, baseline_iters)
        })
        .collect();
    results.push(Paired {
        subject: subject.to_owned(),
        baseline: baseline.to_owned(),
        ratios,
    });
}

// ---------------------------------------------------------------------------------------------
// 1. lifecycle

fn tracker_lifecycle(tracker: &Tracker, owners: &Owners, n: usize) -> ExecutionId {
    let id = tracker.create(owners.new_execution(n)).unwrap().id();
    tracker.start(id).unwrap();
    for _ in 0..5 {
        tracker.heartbeat(id).unwrap();
    }
    tracker.complete(id, None).unwrap();
    id
}

/// The same through [`Tracker::lean`]: no `Change` returned, so with nobody subscribed no event
/// is built (what the Python drop-in does).
fn lean_lifecycle(tracker: &Tracker, owners: &Owners, n: usize) -> ExecutionId {
    let lean = tracker.lean();
    let id = lean.create(owners.new_execution(n)).unwrap();
    lean.start(id).unwrap();
    for _ in 0..5 {
        lean.heartbeat(id).unwrap();
    }
    lean.complete(id, None).unwrap();
    id
}

/// The baseline's record: what a bare map would keep per execution.
struct SmallRecord {
    state: u8,
    heartbeat_count: u64,
    created: Instant,
    last_heartbeat: Instant,
    completed: Option<Instant>,
}

impl SmallRecord {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            state: 0,
            heartbeat_count: 0,
            created: now,
            last_heartbeat: now,
            completed: None,
        }
    }
}

/// A bare map holding `resident` finished entries, like the tracker at its `max_finished` cap.
struct MapLifecycle {
    map: HashMap<u64, SmallRecord>,
    key: u64,
    resident: u64,
}

impl MapLifecycle {
    fn new(resident: usize) -> Self {
        let resident = resident as u64;
        Self {
            map: (0..resident).map(|k| (k, SmallRecord::new())).collect(),
            key: resident,
            resident,
        }
    }

    /// Insert, 7 updates (start, 5 heartbeats, complete), and removal of the oldest finished
    /// entry (the tracker evicts its oldest finished record past `max_finished`).
    fn run(&mut self, iters: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            let key = self.key;
            self.key += 1;
            self.map.insert(key, SmallRecord::new());
            let record = self.map.get_mut(&key).unwrap();
            record.state = 1;
            record.last_heartbeat = Instant::now();
            for _ in 0..5 {
                let record = self.map.get_mut(&key).unwrap();
                record.state = 2;
                record.heartbeat_count += 1;
                record.last_heartbeat = Instant::now();
            }
            let record = self.map.get_mut(&key).unwrap();
            record.state = 3;
            record.completed = Some(Instant::now());
            black_box((record.created, record.completed));
            self.map.remove(&(key - self.resident));
        }
        start.elapsed()
    }
}

struct TrackerLifecycle {
    tracker: Tracker,
    owners: Owners,
    n: usize,
    /// [`tracker_lifecycle`] or [`lean_lifecycle`].
    lifecycle: fn(&Tracker, &Owners, usize) -> ExecutionId,
    /// Whether finished records are purged after each run (outside the timed region) instead of
    /// being evicted at the cap by `complete`.
    purge: bool,
}

impl TrackerLifecycle {
    /// A tracker at its steady state: `resident` finished records (the default `max_finished`),
    /// so that each completion evicts the oldest one.
    fn at_cap(resident: usize, lifecycle: fn(&Tracker, &Owners, usize) -> ExecutionId) -> Self {
        let tracker = Tracker::with_config(TrackerConfig {
            max_finished: resident,
            ..TrackerConfig::default()
        });
        let owners = Owners::new();
        for n in 0..resident {
            tracker_lifecycle(&tracker, &owners, n);
        }
        assert_eq!(tracker.len(), resident);
        Self {
            tracker,
            owners,
            n: resident,
            lifecycle,
            purge: false,
        }
    }

    /// No cap; finished records are purged between runs.
    fn purged(lifecycle: fn(&Tracker, &Owners, usize) -> ExecutionId) -> Self {
        Self {
            tracker: Tracker::with_config(TrackerConfig {
                max_finished: usize::MAX,
                ..TrackerConfig::default()
            }),
            owners: Owners::new(),
            n: 0,
            lifecycle,
            purge: true,
        }
    }

    fn run(&mut self, iters: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            black_box((self.lifecycle)(&self.tracker, &self.owners, self.n));
            self.n += 1;
        }
        let elapsed = start.elapsed();
        if self.purge {
            self.tracker.purge_finished(Duration::ZERO);
        }
        elapsed
    }
}

fn bench_lifecycle(c: &mut Criterion, paired: &mut Vec<Paired>) {
    let resident = scaled(TrackerConfig::default().max_finished);
    let mut group = c.benchmark_group("lifecycle");
    // Criterion calls each closure many times (warm-up rounds, samples): state is built once,
    // on first use, outside the closures.
    let mut baseline = None;
    let mut capped = None;
    let mut purged = None;
    let mut lean_capped = None;
    let mut lean_purged = None;
    group.bench_function("hashmap_baseline", |b| {
        let w = baseline.get_or_insert_with(|| MapLifecycle::new(resident));
        b.iter_custom(|iters| w.run(iters));
    });
    group.bench_function("tracker", |b| {
        let w = capped.get_or_insert_with(|| TrackerLifecycle::at_cap(resident, tracker_lifecycle));
        b.iter_custom(|iters| w.run(iters));
    });
    // The same without eviction: finished records are purged outside the timed region.
    group.bench_function("tracker_no_eviction", |b| {
        let w = purged.get_or_insert_with(|| TrackerLifecycle::purged(tracker_lifecycle));
        b.iter_custom(|iters| w.run(iters));
    });
    // Both again through `Tracker::lean`, with no subscriber: no event is built.
    group.bench_function("lean", |b| {
        let w = lean_capped.get_or_insert_with(|| TrackerLifecycle::at_cap(resident, lean_lifecycle));
        b.iter_custom(|iters| w.run(iters));
    });
    group.bench_function("lean_no_eviction", |b| {
        let w = lean_purged.get_or_insert_with(|| TrackerLifecycle::purged(lean_lifecycle));
        b.iter_custom(|iters| w.run(iters));
    });
    group.finish();
    if let Some(base) = &mut baseline {
        for (name, subject) in [
            ("tracker", &mut capped),
            ("tracker_no_eviction", &mut purged),
            ("lean", &mut lean_capped),
            ("lean_no_eviction", &mut lean_purged),
        ] {
            if let Some(subject) = subject {
                pair(
                    paired,
                    &format!("lifecycle/{name}"),
                    "lifecycle/hashmap_baseline",
                    20,
                    |s, iters| if s { subject.run(iters) } else { base.run(iters) },
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. heartbeat_100k

struct HeartbeatRecord {
    heartbeat_count: u64,
    last_heartbeat: Instant,
}

/// `count` alive (running) records, heartbeaten round robin.
struct TrackerHeartbeat {
    tracker: Tracker,
    ids: Vec<ExecutionId>,
    next: usize,
    /// Through [`Tracker::lean`] (no event built) rather than the full call.
    lean: bool,
}

impl TrackerHeartbeat {
    fn new(count: usize) -> Self {
        let owners = Owners::new();
        let tracker = Tracker::new();
        let ids: Vec<ExecutionId> = (0..count)
            .map(|n| {
                let id = tracker.create(owners.new_execution(n)).unwrap().id();
                tracker.start(id).unwrap();
                tracker.heartbeat(id).unwrap();
                id
            })
            .collect();
        assert_eq!(tracker.active_count(), count);
        Self {
            tracker,
            ids,
            next: 0,
            lean: false,
        }
    }

    /// Another tracker's handle on the same records, heartbeating through `lean`.
    fn lean_twin(&self) -> Self {
        Self {
            tracker: self.tracker.clone(),
            ids: self.ids.clone(),
            next: 0,
            lean: true,
        }
    }

    fn run(&mut self, iters: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            let id = self.ids[self.next];
            if self.lean {
                self.tracker.lean().heartbeat(id).unwrap();
            } else {
                black_box(self.tracker.heartbeat(id).unwrap());
            }
            self.next = if self.next + 1 == self.ids.len() {
                0
            } else {
                self.next + 1
            };
        }
        start.elapsed()
    }
}

/// The same ids in a bare map, updated with the same access pattern.
struct MapHeartbeat {
    map: HashMap<ExecutionId, HeartbeatRecord>,
    ids: Vec<ExecutionId>,
    next: usize,
}

impl MapHeartbeat {
    fn new(ids: &[ExecutionId]) -> Self {
        let map = ids
            .iter()
            .map(|id| {
                let record = HeartbeatRecord {
                    heartbeat_count: 0,
                    last_heartbeat: Instant::now(),
                };
                (*id, record)
            })
            .collect();
        Self {
            map,
            ids: ids.to_vec(),
            next: 0,
        }
    }

    fn run(&mut self, iters: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            let record = self.map.get_mut(&self.ids[self.next]).unwrap();
            record.heartbeat_count += 1;
            record.last_heartbeat = Instant::now();
            black_box(record);
            self.next = if self.next + 1 == self.ids.len() {
                0
            } else {
                self.next + 1
            };
        }
        start.elapsed()
    }
}

fn bench_heartbeat(c: &mut Criterion, paired: &mut Vec<Paired>) {
    let count = scaled(100_000);
    let mut group = c.benchmark_group("heartbeat_100k");
    let mut tracker: Option<TrackerHeartbeat> = None;
    let mut baseline = None;
    group.bench_function("hashmap_baseline", |b| {
        let ids = &tracker.get_or_insert_with(|| TrackerHeartbeat::new(count)).ids;
        let w = baseline.get_or_insert_with(|| MapHeartbeat::new(ids));
        b.iter_custom(|iters| w.run(iters));
    });
    group.bench_function("tracker", |b| {
        let w = tracker.get_or_insert_with(|| TrackerHeartbeat::new(count));
        b.iter_custom(|iters| w.run(iters));
    });
    let mut lean: Option<TrackerHeartbeat> = None;
    group.bench_function("lean", |b| {
        let full = tracker.get_or_insert_with(|| TrackerHeartbeat::new(count));
        let w = lean.get_or_insert_with(|| full.lean_twin());
        b.iter_custom(|iters| w.run(iters));
    });
    group.finish();
    for (name, subject) in [("tracker", &mut tracker), ("lean", &mut lean)] {
        if let (Some(subject), Some(base)) = (subject, &mut baseline) {
            pair(
                paired,
                &format!("heartbeat_100k/{name}"),
                "heartbeat_100k/hashmap_baseline",
                20,
                |s, iters| if s { subject.run(iters) } else { base.run(iters) },
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. phase_transition_with_subscriber

/// Executions parked in `thinking`, each flipped thinking ↔ `llm_interaction` in turn.
struct Phaser {
    tracker: Tracker,
    ids: Vec<ExecutionId>,
    thinking: Vec<bool>,
    next: usize,
}

impl Phaser {
    fn new(count: usize) -> Self {
        let owners = Owners::new();
        let tracker = Tracker::new();
        let ids: Vec<ExecutionId> = (0..count)
            .map(|n| {
                let id = tracker.create(owners.new_execution(n)).unwrap().id();
                tracker.start(id).unwrap();
                tracker.heartbeat(id).unwrap();
                for phase in [
                    Phase::WebsocketSetup,
                    Phase::ContextValidation,
                    Phase::Starting,
                    Phase::Thinking,
                ] {
                    tracker.transition(id, phase, None).unwrap();
                }
                id
            })
            .collect();
        Self {
            tracker,
            thinking: vec![true; ids.len()],
            ids,
            next: 0,
        }
    }

    fn step(&mut self) {
        let i = self.next;
        self.next = if i + 1 == self.ids.len() { 0 } else { i + 1 };
        let to = if self.thinking[i] {
            Phase::LlmInteraction
        } else {
            Phase::Thinking
        };
        self.thinking[i] = !self.thinking[i];
        black_box(self.tracker.transition(self.ids[i], to, None).unwrap());
    }

    fn run(&mut self, iters: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            self.step();
        }
        start.elapsed()
    }
}

/// Transitions between drains; well under the default `event_buffer` (4096), so nothing lags.
const DRAIN_EVERY: u64 = 1024;

/// A [`Phaser`] with one `EventFilter::all()` subscriber, drained every `DRAIN_EVERY`
/// transitions.
struct Watched {
    phaser: Phaser,
    stream: EventStream,
    /// Whether the drains (the subscriber's receiving and filtering) are timed too.
    time_drain: bool,
}

impl Watched {
    fn new(count: usize, time_drain: bool) -> Self {
        let phaser = Phaser::new(count);
        let stream = phaser.tracker.subscribe(EventFilter::all());
        Self {
            phaser,
            stream,
            time_drain,
        }
    }

    fn run(&mut self, iters: u64) -> Duration {
        let mut elapsed = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let chunk = left.min(DRAIN_EVERY);
            let start = Instant::now();
            for _ in 0..chunk {
                self.phaser.step();
            }
            if !self.time_drain {
                elapsed += start.elapsed();
            }
            assert_eq!(drain(&mut self.stream) as u64, chunk);
            if self.time_drain {
                elapsed += start.elapsed();
            }
            left -= chunk;
        }
        elapsed
    }
}

/// Takes every event buffered for `stream` without blocking; panics if the subscriber lagged.
fn drain(stream: &mut EventStream) -> usize {
    let mut cx = Context::from_waker(Waker::noop());
    let mut taken = 0;
    while let Poll::Ready(Some(event)) = Pin::new(&mut *stream).poll_next(&mut cx) {
        black_box(event.expect("the subscriber is drained before the buffer fills"));
        taken += 1;
    }
    taken
}

fn bench_phase_transition(c: &mut Criterion, paired: &mut Vec<Paired>) {
    let executions = scaled(10_000);
    let mut group = c.benchmark_group("phase_transition_with_subscriber");
    let mut plain = None;
    let mut watched = None;
    let mut drained = None;
    group.bench_function("no_subscriber", |b| {
        let w = plain.get_or_insert_with(|| Phaser::new(executions));
        b.iter_custom(|iters| w.run(iters));
    });
    // The producer's cost with a subscriber attached and keeping up: the drains happen between
    // timed chunks.
    group.bench_function("subscriber", |b| {
        let w = watched.get_or_insert_with(|| Watched::new(executions, false));
        b.iter_custom(|iters| w.run(iters));
    });
    // The same with the subscriber's draining (receiving and filtering) counted too.
    group.bench_function("subscriber_incl_drain", |b| {
        let w = drained.get_or_insert_with(|| Watched::new(executions, true));
        b.iter_custom(|iters| w.run(iters));
    });
    group.finish();
    if let Some(base) = &mut plain {
        for (name, subject) in [("subscriber", &mut watched), ("subscriber_incl_drain", &mut drained)] {
            if let Some(subject) = subject {
                pair(
                    paired,
                    &format!("phase_transition_with_subscriber/{name}"),
                    "phase_transition_with_subscriber/no_subscriber",
                    20,
                    |s, iters| if s { subject.run(iters) } else { base.run(iters) },
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. monitor_tick_1m and monitor_scaling

/// Time between two creates; deadlines are staggered by as much.
const SPACING: Duration = Duration::from_micros(100);
const FOREVER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `size` alive records on a manual clock, of which exactly `due` have passed their heartbeat
/// deadline whenever a sweep is about to run.
///
/// Records are created one `SPACING` apart (at half steps; sweeps happen at whole steps) and
/// never heartbeat again, with `heartbeat_timeout = (size - due) · SPACING`: at a sweep, the
/// `size - due` most recent creates are within their timeout and the `due` before them are past
/// it. After a sweep, creating `due` more records (advancing the clock `due` steps) restores
/// both numbers, so every timed sweep sees the same population.
struct Population {
    tracker: Tracker,
    clock: ManualClock,
    owners: Owners,
    size: usize,
    due: usize,
    created: usize,
}

impl Population {
    fn new(size: usize, due: usize) -> Self {
        let size = scaled(size);
        let due = scaled(due);
        let clock = ManualClock::new();
        let config = TrackerConfig {
            heartbeat_timeout: SPACING * u32::try_from(size - due).unwrap(),
            execution_timeout: FOREVER,
            // Finished records are purged between sweeps, outside the timed region.
            cleanup_age: FOREVER,
            max_finished: usize::MAX,
            ..TrackerConfig::default()
        };
        let tracker = Tracker::with_clock(config, Arc::new(clock.clone()));
        let mut population = Self {
            tracker,
            clock,
            owners: Owners::new(),
            size,
            due,
            created: 0,
        };
        population.create(size);
        population.check();
        population
    }

    fn create(&mut self, count: usize) {
        for _ in 0..count {
            self.clock.advance(SPACING / 2);
            let id = self
                .tracker
                .create(self.owners.new_execution(self.created))
                .unwrap()
                .id();
            self.tracker.start(id).unwrap();
            self.tracker.heartbeat(id).unwrap();
            self.created += 1;
            self.clock.advance(SPACING / 2);
        }
    }

    fn check(&self) {
        assert_eq!(self.tracker.active_count(), self.size);
        assert_eq!(self.tracker.len(), self.size);
    }

    /// Times `detect_dead`, which reports the due records and changes nothing.
    fn full_scan(&self, iters: u64) -> Duration {
        let mut elapsed = Duration::ZERO;
        for _ in 0..iters {
            let start = Instant::now();
            let dead = self.tracker.detect_dead();
            elapsed += start.elapsed();
            assert_eq!(dead.len(), self.due);
        }
        elapsed
    }

    /// Times `sweep`, which marks the due records dead; then (untimed) drops them from memory
    /// and creates as many new ones.
    fn sweep(&mut self, iters: u64) -> Duration {
        let mut elapsed = Duration::ZERO;
        for _ in 0..iters {
            let start = Instant::now();
            let sweep = self.tracker.sweep();
            elapsed += start.elapsed();
            assert_eq!(sweep.dead.len(), self.due);
            assert!(sweep.timed_out.is_empty() && sweep.rearmed == 0 && sweep.purged == 0);
            drop(sweep);
            assert_eq!(self.tracker.purge_finished(Duration::ZERO), self.due);
            self.create(self.due);
            self.check();
        }
        elapsed
    }
}

fn short(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}m", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

fn bench_monitor_pair(
    group: &mut BenchmarkGroup<'_, WallTime>,
    group_name: &str,
    size: usize,
    due: usize,
    paired: &mut Vec<Paired>,
) {
    // The 1M/1% pair is the headline group's only pair and goes unlabelled.
    let label = (group_name != "monitor_tick_1m").then(|| format!("{}_pop_{}_due", short(size), short(due)));
    let id = |name: &str| match &label {
        Some(label) => BenchmarkId::new(name, label),
        None => BenchmarkId::from_parameter(name),
    };
    let path = |name: &str| match &label {
        Some(label) => format!("{group_name}/{name}/{label}"),
        None => format!("{group_name}/{name}"),
    };
    // Built on first use, so that a filtered-out pair costs nothing.
    let mut population: Option<Population> = None;
    let mut ran = [false; 2];
    group.bench_function(id("full_scan"), |b| {
        let population = population.get_or_insert_with(|| Population::new(size, due));
        ran[0] = true;
        b.iter_custom(|iters| population.full_scan(iters));
    });
    group.bench_function(id("sweep"), |b| {
        let population = population.get_or_insert_with(|| Population::new(size, due));
        ran[1] = true;
        b.iter_custom(|iters| population.sweep(iters));
    });
    if let (Some(population), [true, true]) = (&mut population, ran) {
        let rounds = if size >= 1_000_000 { 8 } else { 12 };
        pair(paired, &path("sweep"), &path("full_scan"), rounds, |s, iters| {
            if s {
                population.sweep(iters)
            } else {
                population.full_scan(iters)
            }
        });
    }
}

fn bench_monitor(c: &mut Criterion, paired: &mut Vec<Paired>) {
    {
        let mut group = c.benchmark_group("monitor_tick_1m");
        group.sampling_mode(SamplingMode::Flat).sample_size(10);
        bench_monitor_pair(&mut group, "monitor_tick_1m", 1_000_000, 10_000, paired);
        group.finish();
    }
    let mut group = c.benchmark_group("monitor_scaling");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    // 1% due: the sweep follows the due count.
    bench_monitor_pair(&mut group, "monitor_scaling", 10_000, 100, paired);
    bench_monitor_pair(&mut group, "monitor_scaling", 100_000, 1_000, paired);
    // 100 due whatever the population: the sweep stays flat while the scan grows.
    bench_monitor_pair(&mut group, "monitor_scaling", 100_000, 100, paired);
    bench_monitor_pair(&mut group, "monitor_scaling", 1_000_000, 100, paired);
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// The summary table

/// (benchmark, its baseline) as criterion's directory names under `target/criterion`.
const SUMMARY: &[(&str, &str)] = &[
    ("lifecycle/hashmap_baseline", ""),
    ("lifecycle/tracker", "lifecycle/hashmap_baseline"),
    ("lifecycle/tracker_no_eviction", "lifecycle/hashmap_baseline"),
    ("lifecycle/lean", "lifecycle/hashmap_baseline"),
    ("lifecycle/lean_no_eviction", "lifecycle/hashmap_baseline"),
    ("heartbeat_100k/hashmap_baseline", ""),
    ("heartbeat_100k/tracker", "heartbeat_100k/hashmap_baseline"),
    ("heartbeat_100k/lean", "heartbeat_100k/hashmap_baseline"),
    ("phase_transition_with_subscriber/no_subscriber", ""),
    (
        "phase_transition_with_subscriber/subscriber",
        "phase_transition_with_subscriber/no_subscriber",
    ),
    (
        "phase_transition_with_subscriber/subscriber_incl_drain",
        "phase_transition_with_subscriber/no_subscriber",
    ),
    ("monitor_tick_1m/full_scan", ""),
    ("monitor_tick_1m/sweep", "monitor_tick_1m/full_scan"),
    ("monitor_scaling/full_scan/10k_pop_100_due", ""),
    (
        "monitor_scaling/sweep/10k_pop_100_due",
        "monitor_scaling/full_scan/10k_pop_100_due",
    ),
    ("monitor_scaling/full_scan/100k_pop_1k_due", ""),
    (
        "monitor_scaling/sweep/100k_pop_1k_due",
        "monitor_scaling/full_scan/100k_pop_1k_due",
    ),
    ("monitor_scaling/full_scan/100k_pop_100_due", ""),
    (
        "monitor_scaling/sweep/100k_pop_100_due",
        "monitor_scaling/full_scan/100k_pop_100_due",
    ),
    ("monitor_scaling/full_scan/1m_pop_100_due", ""),
    (
        "monitor_scaling/sweep/1m_pop_100_due",
        "monitor_scaling/full_scan/1m_pop_100_due",
    ),
];

fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    // target/<profile>/deps/<bench binary>
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(|target| target.join("criterion")))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// The mean in nanoseconds of a benchmark measured since `since`.
fn mean_ns(home: &std::path::Path, bench: &str, since: SystemTime) -> Option<f64> {
    let path = home.join(bench).join("new/estimates.json");
    let fresh = std::fs::metadata(&path).and_then(|m| m.modified()).ok()? >= since;
    if !fresh {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

fn human(ns: f64) -> String {
    match ns {
        ns if ns >= 1e9 => format!("{:.3} s", ns / 1e9),
        ns if ns >= 1e6 => format!("{:.3} ms", ns / 1e6),
        ns if ns >= 1e3 => format!("{:.3} µs", ns / 1e3),
        ns => format!("{ns:.1} ns"),
    }
}

fn print_summary(since: SystemTime, paired: &[Paired]) {
    let home = criterion_home();
    println!("\n| benchmark | criterion mean | ratio of means to baseline | paired ratio: median (min–max, rounds) |");
    println!("|---|---:|---:|---:|");
    for (bench, baseline) in SUMMARY {
        let Some(mean) = mean_ns(&home, bench, since) else {
            continue;
        };
        let ratio = match mean_ns(&home, baseline, since) {
            Some(base) if !baseline.is_empty() => format!("{:.3}× `{baseline}`", mean / base),
            _ => "(baseline)".to_owned(),
        };
        let paired = match paired.iter().find(|p| p.subject == *bench && p.baseline == *baseline) {
            Some(p) => {
                let mut r = p.ratios.clone();
                r.sort_by(f64::total_cmp);
                let median = if r.len() % 2 == 1 {
                    r[r.len() / 2]
                } else {
                    f64::midpoint(r[r.len() / 2 - 1], r[r.len() / 2])
                };
                format!("{median:.4}× ({:.4}–{:.4}, {})", r[0], r[r.len() - 1], r.len())
            }
            None => String::new(),
        };
        println!("| `{bench}` | {} | {ratio} | {paired} |", human(mean));
    }
}

fn main() {
    let since = SystemTime::now();
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        // The HTML plots take seconds per benchmark without gnuplot; the numbers are printed.
        .without_plots()
        .configure_from_args();
    let mut paired = Vec::new();
    bench_lifecycle(&mut c, &mut paired);
    bench_heartbeat(&mut c, &mut paired);
    bench_phase_transition(&mut c, &mut paired);
    bench_monitor(&mut c, &mut paired);
    c.final_summary();
    if full_run() {
        print_summary(since, &paired);
    }
}
