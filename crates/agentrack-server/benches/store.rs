//! Durable transitions through the real store vs raw batched inserts into the same backend, in the
//! same run, for SQLite and (when a server is given) PostgreSQL.
//!
//! Run with `cargo bench -p agentrack-server --bench store` (issue 6's target: durable state
//! transitions at ≥ 30% of raw SQLite batched-insert throughput). A plain timed harness, not
//! criterion: both sides are throughput over a fixed window, and each round measures the two
//! back to back so that they see the same machine load.
//!
//! Per concurrency C (1, 16, 256), on a fresh database file in a temp dir:
//!
//! 1. **agentrack**: a real [`Tracker`], the real SQLite store (opened by URL through
//!    [`store::open`]) and the real group-commit [`Pipeline`], started as `src/server.rs` does (same `PipelineConfig`, the store's default
//!    `synchronous = FULL`), on a multi-threaded tokio runtime like `agentrack serve`'s. C tasks
//!    each loop over their own executions: create → start → the nine phases → complete, and wait
//!    after each of those twelve calls until its last event is committed
//!    (`Pipeline::wait_committed`, what `AppState::durable` does before a handler answers). A
//!    *transition* is one such acknowledged call. The store's writer is wrapped in a shim that
//!    only times `StoreWriter::commit`, to split the writer thread's time between SQLite and the
//!    rest of the pipeline.
//! 2. **raw SQLite**: the backend's own baseline ([`store::baseline`]) on another file in the same
//!    temp dir, with the store's connection settings (`journal_mode = WAL`, `synchronous = FULL`,
//!    `busy_timeout = 10 s`), one table
//!    (`seq INTEGER PRIMARY KEY, execution_id, type, json`, no other index) fed with the JSON of
//!    the same workload's events (same sizes), in transactions of B rows, where B is the events
//!    per commit the pipeline achieved in step 1 of the same round (a fractional B alternates
//!    ⌊B⌋ and ⌈B⌉ to keep the average). B = 1 and B = 1000 are measured for reference.
//!
//! 3. **store `commit()` alone** (a diagnostic): the store's own `StoreWriter::commit` on a third
//!    file, fed batches shaped like the pipeline's at that B (B events of executions moving in
//!    lockstep through the same life, plus a snapshot row of each), prepared outside the timing;
//!    rows/s = events ÷ time inside `commit`. It separates what the store's schema and
//!    materialised rows cost from what the pipeline around them costs.
//!
//! Each round: warm-up, then a timed window of agentrack, then a window of raw SQLite at that
//! round's B, then the store's commit alone at that B; the ratio is taken per round and the
//! table gives the median with the range.
//! PostgreSQL runs when `STORE_BENCH_PG_URL` (or `AGENTRACK_TEST_PG_URL`) names a server (an admin
//! URL: each store gets a fresh database); its raw side is one `INSERT … SELECT FROM UNNEST` of B
//! rows per transaction. `STORE_BENCH_BACKENDS=sqlite` or `=postgres` picks one backend.
//! `STORE_BENCH_SYNCHRONOUS=normal` runs both SQLite sides with `synchronous = NORMAL` instead;
//! `STORE_BENCH_CONCURRENCY=256` (a comma-separated list) picks the concurrency levels.
//! Without `--bench` (`cargo test --benches`) a tiny version runs as a smoke test.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agentrack::{ExecutionId, NewExecution, Phase, Tracker};
use agentrack_server::auth::TokenGrant;
use agentrack_server::serialized_event::SerializedEvent;
use agentrack_server::store::baseline::{RawInserts, RawRow, open_raw};
use agentrack_server::store::pipeline::{Pipeline, PipelineConfig};
use agentrack_server::store::{
    self, Batch, Cutoff, Purged, RowUpdate, Store, StoreConfig, StoreError, StoreUrl, StoreWriter, Synchronous,
};
use chrono::Utc;

const PHASES: [Phase; 9] = [
    Phase::WebsocketSetup,
    Phase::ContextValidation,
    Phase::Starting,
    Phase::Thinking,
    Phase::LlmInteraction,
    Phase::ToolExecution,
    Phase::ResultProcessing,
    Phase::Completing,
    Phase::Completed,
];

/// As `ack_timeout`'s default: a write the store cannot confirm in time fails the run.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether this is a real benchmark run (`--bench`); otherwise a tiny smoke test.
fn full_run() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

struct Settings {
    concurrency: Vec<usize>,
    rounds: usize,
    warm_up: Duration,
    window: Duration,
    synchronous: Synchronous,
}

impl Settings {
    fn from_env() -> Self {
        let synchronous = match std::env::var("STORE_BENCH_SYNCHRONOUS").as_deref() {
            Ok("normal") => Synchronous::Normal,
            _ => Synchronous::Full,
        };
        let concurrency = std::env::var("STORE_BENCH_CONCURRENCY")
            .ok()
            .map(|list| list.split(',').map(|c| c.trim().parse().unwrap()).collect());
        if full_run() {
            Self {
                concurrency: concurrency.unwrap_or_else(|| vec![1, 16, 256]),
                rounds: 5,
                warm_up: Duration::from_millis(500),
                window: Duration::from_secs(2),
                synchronous,
            }
        } else {
            Self {
                concurrency: concurrency.unwrap_or_else(|| vec![1, 8]),
                rounds: 1,
                warm_up: Duration::from_millis(20),
                window: Duration::from_millis(100),
                synchronous,
            }
        }
    }

    fn pragma(&self) -> &'static str {
        match self.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }

    /// The store configuration for a SQLite file.
    fn store(&self, file: &Path) -> StoreConfig {
        StoreConfig {
            url: Some(format!("sqlite://{}", file.display())),
            synchronous: self.synchronous,
            ..StoreConfig::default()
        }
    }
}

/// Opens the store `config` names, as `Server::bind` does.
async fn open_store(config: &StoreConfig) -> Arc<dyn Store> {
    store::open(config, Path::new(".")).await.unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. agentrack: tracker + pipeline + SQLite store

/// The real writer, with the time spent in `commit` counted.
struct TimedWriter {
    inner: Box<dyn StoreWriter>,
    commit_nanos: Arc<AtomicU64>,
}

impl StoreWriter for TimedWriter {
    fn commit(&mut self, batches: &[Batch]) -> Result<(), StoreError> {
        let start = Instant::now();
        let result = self.inner.commit(batches);
        let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.commit_nanos.fetch_add(nanos, Ordering::Relaxed);
        result
    }

    fn purge(&mut self, cutoff: &Cutoff) -> Result<Purged, StoreError> {
        self.inner.purge(cutoff)
    }

    fn insert_token(&mut self, hash: &str, grant: &TokenGrant) -> Result<(), StoreError> {
        self.inner.insert_token(hash, grant)
    }

    fn revoke_token(
        &mut self,
        id: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<agentrack_server::store::Revoked, StoreError> {
        self.inner.revoke_token(id, at)
    }

    fn insert_ticket(&mut self, ticket: &agentrack_server::store::Ticket) -> Result<(), StoreError> {
        self.inner.insert_ticket(ticket)
    }

    fn take_ticket(&mut self, hash: &str) -> Result<Option<agentrack_server::store::TakenTicket>, StoreError> {
        self.inner.take_ticket(hash)
    }

    fn close(&mut self) -> Result<(), StoreError> {
        self.inner.close()
    }
}

/// A tracker and its pipeline over a fresh store, set up as `Server::bind` does.
struct Agentrack {
    tracker: Tracker,
    pipeline: Arc<Pipeline>,
    commit_nanos: Arc<AtomicU64>,
    /// Acknowledged calls so far.
    acked: Arc<AtomicU64>,
}

/// Counters at one instant.
#[derive(Clone, Copy)]
struct Snapshot {
    at: Instant,
    acked: u64,
    batches: u64,
    events: u64,
    commit_nanos: u64,
}

/// One agentrack window.
struct AgentrackWindow {
    transitions_per_sec: f64,
    commits_per_sec: f64,
    /// Events written per commit.
    events_per_commit: f64,
    /// Acknowledged calls per commit.
    transitions_per_commit: f64,
    /// Share of the window the writer thread spent in `StoreWriter::commit`.
    commit_share: f64,
    /// Mean time of one `StoreWriter::commit`.
    commit_micros: f64,
}

impl Agentrack {
    async fn open(config: &StoreConfig) -> Self {
        let store = open_store(config).await;
        let loaded = store.load(0, Utc::now()).await.unwrap();
        let tracker = Tracker::new();
        tracker.resume_sequence(loaded.high_water);
        let commit_nanos = Arc::new(AtomicU64::new(0));
        let writer = TimedWriter {
            inner: store.writer().await.unwrap(),
            commit_nanos: Arc::clone(&commit_nanos),
        };
        let pipeline = Pipeline::start(
            Box::new(writer),
            PipelineConfig::default(),
            Box::new(()),
            tokio::sync::mpsc::unbounded_channel().0,
        )
        .unwrap();
        pipeline.attach(0, &tracker, loaded.high_water, None).unwrap();
        Self {
            tracker,
            pipeline,
            commit_nanos,
            acked: Arc::new(AtomicU64::new(0)),
        }
    }

    fn snapshot(&self) -> Snapshot {
        let stats = self.pipeline.stats();
        Snapshot {
            at: Instant::now(),
            acked: self.acked.load(Ordering::Relaxed),
            batches: stats.batches.load(Ordering::Relaxed),
            events: stats.events_written.load(Ordering::Relaxed),
            commit_nanos: self.commit_nanos.load(Ordering::Relaxed),
        }
    }

    /// Runs `concurrency` agents for `warm_up`, then measures `window`, then stops them.
    #[allow(
        clippy::cast_precision_loss,
        reason = "throughput figures are floats: counts past 2^53 only lose their lowest digits"
    )]
    async fn run(&self, concurrency: usize, warm_up: Duration, window: Duration) -> AgentrackWindow {
        let stop = Arc::new(AtomicBool::new(false));
        let agents: Vec<_> = (0..concurrency)
            .map(|agent| {
                let tracker = self.tracker.clone();
                let pipeline = Arc::clone(&self.pipeline);
                let acked = Arc::clone(&self.acked);
                let stop = Arc::clone(&stop);
                tokio::spawn(async move {
                    let user = format!("user-{}", agent % 100);
                    let thread = format!("thread-{agent}");
                    while !stop.load(Ordering::Relaxed) {
                        agent_execution(&tracker, &pipeline, &acked, &user, &thread).await;
                    }
                })
            })
            .collect();
        tokio::time::sleep(warm_up).await;
        let start = self.snapshot();
        tokio::time::sleep(window).await;
        let end = self.snapshot();
        stop.store(true, Ordering::Relaxed);
        for agent in agents {
            agent.await.unwrap();
        }
        let seconds = end.at.duration_since(start.at).as_secs_f64();
        let batches = (end.batches - start.batches).max(1) as f64;
        let acked = (end.acked - start.acked) as f64;
        let commit_nanos = (end.commit_nanos - start.commit_nanos) as f64;
        AgentrackWindow {
            transitions_per_sec: acked / seconds,
            commits_per_sec: batches / seconds,
            events_per_commit: (end.events - start.events) as f64 / batches,
            transitions_per_commit: acked / batches,
            commit_share: commit_nanos / 1e9 / seconds,
            commit_micros: commit_nanos / 1e3 / batches,
        }
    }

    fn shutdown(self) {
        self.pipeline.shutdown();
    }
}

/// One execution's life, each call acknowledged only once durable.
async fn agent_execution(tracker: &Tracker, pipeline: &Pipeline, acked: &AtomicU64, user: &str, thread: &str) {
    let change = tracker.create(NewExecution::new("researcher", thread, user)).unwrap();
    let id = change.id();
    durable(pipeline, acked, &change).await;
    durable(pipeline, acked, &tracker.start(id).unwrap()).await;
    for phase in PHASES {
        durable(pipeline, acked, &tracker.transition(id, phase, None).unwrap()).await;
    }
    let done = tracker.complete(id, Some(serde_json::json!("sunny"))).unwrap();
    durable(pipeline, acked, &done).await;
}

/// What `AppState::durable` does before a handler answers.
async fn durable(pipeline: &Pipeline, acked: &AtomicU64, change: &agentrack::Change) {
    let last = change.events.last().unwrap().global_seq;
    pipeline.wait_committed(0, last, ACK_TIMEOUT).await.unwrap();
    acked.fetch_add(1, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------------------
// 2. raw batched inserts

/// Event rows as the workload writes them: (execution id, type, JSON) of one execution's life.
fn sample_rows() -> Vec<(String, String, String)> {
    let tracker = Tracker::new();
    let mut changes = Vec::new();
    let create = tracker
        .create(NewExecution::new("researcher", "thread-0", "user-0"))
        .unwrap();
    let id: ExecutionId = create.id();
    changes.push(create);
    changes.push(tracker.start(id).unwrap());
    for phase in PHASES {
        changes.push(tracker.transition(id, phase, None).unwrap());
    }
    changes.push(tracker.complete(id, Some(serde_json::json!("sunny"))).unwrap());
    changes
        .iter()
        .flat_map(|change| change.events.iter())
        .map(|event| {
            let serialized = SerializedEvent::new(Arc::clone(event));
            (
                id.to_string(),
                event.kind.name().to_owned(),
                serialized.text().to_owned(),
            )
        })
        .collect()
}

struct Raw {
    inserts: Box<dyn RawInserts>,
    rows: Vec<(String, String, String)>,
    seq: i64,
}

/// One raw window.
struct RawWindow {
    rows_per_sec: f64,
    commits_per_sec: f64,
}

impl Raw {
    fn open(config: &StoreConfig) -> Self {
        let url = StoreUrl::parse(config.url.as_deref().unwrap()).unwrap();
        Self {
            inserts: open_raw(&url, config).unwrap(),
            rows: sample_rows(),
            seq: 0,
        }
    }

    /// Inserts rows in transactions averaging `batch` rows for `window`.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "throughput figures are floats, and a batch size is a small positive float rounded back to a count"
    )]
    fn run(&mut self, batch: f64, window: Duration) -> RawWindow {
        let batch = batch.max(1.0);
        let start = Instant::now();
        let (mut rows, mut commits) = (0u64, 0u64);
        let mut pending = Vec::new();
        while commits == 0 || start.elapsed() < window {
            // Transaction k takes ⌊(k+1)·B⌋ − ⌊k·B⌋ rows: B on average.
            let size = ((commits + 1) as f64 * batch).floor() as u64 - (commits as f64 * batch).floor() as u64;
            pending.clear();
            for _ in 0..size {
                self.seq += 1;
                let (id, kind, json) = &self.rows[usize::try_from(self.seq).unwrap() % self.rows.len()];
                pending.push(RawRow {
                    seq: self.seq,
                    execution_id: id.clone(),
                    kind: kind.clone(),
                    json: json.clone(),
                });
            }
            self.inserts.insert_batch(&pending).unwrap();
            rows += size;
            commits += 1;
        }
        let seconds = start.elapsed().as_secs_f64();
        RawWindow {
            rows_per_sec: rows as f64 / seconds,
            commits_per_sec: commits as f64 / seconds,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. the store's commit alone

/// The store's writer fed pipeline-shaped batches: one call on each of `n` executions moving in
/// lockstep through create → start → nine phases → complete, with a snapshot of each.
struct WriterAlone {
    writer: Box<dyn StoreWriter>,
    tracker: Tracker,
    ids: Vec<ExecutionId>,
    step: usize,
    created: usize,
}

impl WriterAlone {
    async fn open(config: &StoreConfig) -> Self {
        let store = open_store(config).await;
        Self {
            writer: store.writer().await.unwrap(),
            tracker: Tracker::new(),
            ids: Vec::new(),
            step: 0,
            created: 0,
        }
    }

    fn next_batch(&mut self, n: usize) -> Batch {
        let mut changes = Vec::new();
        if self.step == 0 || self.ids.len() != n {
            self.ids.clear();
            self.step = 0;
            for _ in 0..n {
                let new = NewExecution::new(
                    "researcher",
                    format!("thread-{}", self.created),
                    format!("user-{}", self.created % 100),
                );
                self.created += 1;
                let change = self.tracker.create(new).unwrap();
                self.ids.push(change.id());
                changes.push(change);
            }
        } else {
            for &id in &self.ids {
                changes.push(match self.step {
                    1 => self.tracker.start(id).unwrap(),
                    2..=10 => self.tracker.transition(id, PHASES[self.step - 2], None).unwrap(),
                    _ => self.tracker.complete(id, Some(serde_json::json!("sunny"))).unwrap(),
                });
            }
        }
        // As the pipeline does: a row with creation, the state change and the terminal event; the
        // phase transitions' rows wait for the flush (none comes within a life this short).
        let with_rows = matches!(self.step, 0 | 1 | 11);
        self.step = (self.step + 1) % 12;
        let events = changes
            .iter()
            .flat_map(|change| change.events.iter())
            .map(|event| Arc::new(SerializedEvent::new(Arc::clone(event))))
            .collect();
        let rows = self
            .ids
            .iter()
            .filter(|_| with_rows)
            .map(|id| RowUpdate::Snapshot(Box::new(self.tracker.get(*id).unwrap())))
            .collect();
        Batch {
            shard: 0,
            fence: None,
            events,
            rows,
            reserved: Some(self.tracker.last_seq() + 10_000),
            replay_from: self.tracker.last_seq(),
        }
    }

    /// Commits batches of `batch` executions until `window` was spent inside `commit`.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "throughput figures are floats, and a batch size is a small positive float rounded back to a count"
    )]
    fn run(&mut self, batch: f64, window: Duration) -> RawWindow {
        let n = (batch.round() as usize).max(1);
        let (mut inside, mut rows, mut commits) = (Duration::ZERO, 0u64, 0u64);
        while commits == 0 || inside < window {
            let batch = self.next_batch(n);
            let start = Instant::now();
            self.writer.commit(std::slice::from_ref(&batch)).unwrap();
            inside += start.elapsed();
            rows += batch.events.len() as u64;
            commits += 1;
        }
        RawWindow {
            rows_per_sec: rows as f64 / inside.as_secs_f64(),
            commits_per_sec: commits as f64 / inside.as_secs_f64(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run and its table

struct Round {
    agentrack: AgentrackWindow,
    raw: RawWindow,
    alone: RawWindow,
}

impl Round {
    fn ratio(&self) -> f64 {
        self.agentrack.transitions_per_sec / self.raw.rows_per_sec
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        f64::midpoint(values[n / 2 - 1], values[n / 2])
    }
}

fn range(values: &[f64]) -> (f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// The median of one field over the rounds.
fn med(rounds: &[Round], f: impl Fn(&Round) -> f64) -> f64 {
    median(rounds.iter().map(f).collect())
}

/// A backend under test, and where its fresh stores go.
enum Backend {
    /// Files in a temp dir.
    Sqlite(tempfile::TempDir),
    /// Fresh databases on the server at this admin URL.
    Postgres(String),
}

impl Backend {
    /// SQLite always; PostgreSQL when `STORE_BENCH_PG_URL` (or `AGENTRACK_TEST_PG_URL`) names a
    /// server. `STORE_BENCH_BACKENDS=sqlite` (or `postgres`) picks one.
    fn all() -> Vec<Self> {
        let wanted = std::env::var("STORE_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
        let pg = std::env::var("STORE_BENCH_PG_URL")
            .or_else(|_| std::env::var("AGENTRACK_TEST_PG_URL"))
            .ok();
        let mut backends = Vec::new();
        for name in wanted.split(',').map(str::trim) {
            match (name, &pg) {
                ("sqlite", _) => backends.push(Self::Sqlite(tempfile::tempdir().unwrap())),
                ("postgres", Some(url)) => backends.push(Self::Postgres(url.clone())),
                ("postgres", None) => println!(
                    "store bench: no PostgreSQL (set STORE_BENCH_PG_URL=postgres://USER@HOST:PORT/postgres, or \
                     run scripts/pg-cluster start DIR); measuring SQLite only"
                ),
                (other, _) => panic!("unknown backend {other:?} in STORE_BENCH_BACKENDS; valid: sqlite, postgres"),
            }
        }
        backends
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "SQLite",
            Self::Postgres(_) => "PostgreSQL",
        }
    }

    /// A fresh store named `label`.
    fn store(&self, settings: &Settings, runtime: &tokio::runtime::Runtime, label: &str) -> StoreConfig {
        match self {
            Self::Sqlite(dir) => settings.store(&dir.path().join(format!("{label}.db"))),
            Self::Postgres(admin) => {
                let name = format!("agentrack_bench_{label}_{}", std::process::id()).replace('-', "_");
                runtime.block_on(async {
                    let (client, connection) = tokio_postgres::connect(admin, tokio_postgres::NoTls).await.unwrap();
                    tokio::spawn(connection);
                    for sql in [
                        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                        format!("CREATE DATABASE {name}"),
                    ] {
                        client.batch_execute(&sql).await.unwrap();
                    }
                });
                let url = StoreUrl::parse(admin).unwrap();
                let authority = url.rest().split('/').next().unwrap_or_default().to_owned();
                StoreConfig {
                    url: Some(format!("postgres://{authority}/{name}")),
                    ..settings.store(Path::new("unused"))
                }
            }
        }
    }

    /// Drops the databases this run made (a PostgreSQL server is someone's; leave it as found).
    fn clean_up(&self, runtime: &tokio::runtime::Runtime) {
        let Self::Postgres(admin) = self else { return };
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(admin, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            let pattern = format!("agentrack_bench_%_{}", std::process::id());
            let made = client
                .query("SELECT datname FROM pg_database WHERE datname LIKE $1", &[&pattern])
                .await
                .unwrap();
            for row in made {
                let name: String = row.get(0);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .unwrap();
            }
        });
    }

    /// What the durability setting is called on this backend.
    fn durability(&self, settings: &Settings) -> String {
        match self {
            Self::Sqlite(_) => format!("synchronous = {}", settings.pragma()),
            Self::Postgres(_) => "the server's synchronous_commit (default on)".into(),
        }
    }
}

fn main() {
    let settings = Settings::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for backend in Backend::all() {
        run_backend(&backend, &settings, &runtime);
        backend.clean_up(&runtime);
    }
}

fn run_backend(backend: &Backend, settings: &Settings, runtime: &tokio::runtime::Runtime) {
    let name = backend.name();
    println!(
        "\nstore bench: {name}, {}, {} round(s) of {:?} (after {:?} warm-up) per concurrency",
        backend.durability(settings),
        settings.rounds,
        settings.window,
        settings.warm_up
    );

    let mut results: Vec<(usize, Vec<Round>)> = Vec::new();
    for &concurrency in &settings.concurrency {
        let agentrack = runtime.block_on(Agentrack::open(&backend.store(
            settings,
            runtime,
            &format!("agentrack-c{concurrency}"),
        )));
        let mut raw = Raw::open(&backend.store(settings, runtime, &format!("raw-c{concurrency}")));
        let mut alone = runtime.block_on(WriterAlone::open(&backend.store(
            settings,
            runtime,
            &format!("alone-c{concurrency}"),
        )));
        let mut rounds = Vec::new();
        for round in 0..settings.rounds {
            let a = runtime.block_on(agentrack.run(concurrency, settings.warm_up, settings.window));
            let r = raw.run(a.events_per_commit, settings.window);
            let w = alone.run(a.events_per_commit, settings.window);
            println!(
                "C={concurrency:<4} round {round}: agentrack {:>9.0} transitions/s, {:>7.0} commits/s, \
                 {:>6.1} events/commit ({:.1} transitions), commit() {:>6.0} µs = {:>3.0}% of the window | \
                 raw B={:.1}: {:>9.0} rows/s, {:>7.0} commits/s | ratio {:.3} | store commit() alone: \
                 {:>9.0} events/s, {:>5.0} µs/commit",
                a.transitions_per_sec,
                a.commits_per_sec,
                a.events_per_commit,
                a.transitions_per_commit,
                a.commit_micros,
                a.commit_share * 100.0,
                a.events_per_commit,
                r.rows_per_sec,
                r.commits_per_sec,
                a.transitions_per_sec / r.rows_per_sec,
                w.rows_per_sec,
                1e6 / w.commits_per_sec,
            );
            rounds.push(Round {
                agentrack: a,
                raw: r,
                alone: w,
            });
        }
        runtime.block_on(async {
            let _ = tokio::task::spawn_blocking(move || agentrack.shutdown()).await;
        });
        results.push((concurrency, rounds));
    }

    let mut reference = Raw::open(&backend.store(settings, runtime, "raw-reference"));
    let references: Vec<(usize, Vec<RawWindow>)> = [1u16, 1000]
        .into_iter()
        .map(|batch| {
            let windows = (0..settings.rounds)
                .map(|_| reference.run(f64::from(batch), settings.window))
                .collect();
            (usize::from(batch), windows)
        })
        .collect();

    print_summary(backend, settings, &results, &references);
}

/// The table of one backend's rounds and references, and what its columns measure.
fn print_summary(
    backend: &Backend,
    settings: &Settings,
    results: &[(usize, Vec<Round>)],
    references: &[(usize, Vec<RawWindow>)],
) {
    let name = backend.name();
    println!(
        "\n| concurrency | agentrack transitions/s | avg batch (events/commit) | agentrack commits/s | \
         writer in commit(): share of window (per commit) | raw {name} rows/s at that batch | raw commits/s | \
         ratio: median (min–max) | store commit() alone: events/s (per commit) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (concurrency, rounds) in results {
        let ratios: Vec<f64> = rounds.iter().map(Round::ratio).collect();
        let (min, max) = range(&ratios);
        println!(
            "| {concurrency} | {:.0} | {:.1} | {:.0} | {:.0}% ({:.0} µs) | {:.0} | {:.0} | {:.1}% ({:.1}–{:.1}%) | \
             {:.0} ({:.0} µs) |",
            med(rounds, |r| r.agentrack.transitions_per_sec),
            med(rounds, |r| r.agentrack.events_per_commit),
            med(rounds, |r| r.agentrack.commits_per_sec),
            med(rounds, |r| r.agentrack.commit_share) * 100.0,
            med(rounds, |r| r.agentrack.commit_micros),
            med(rounds, |r| r.raw.rows_per_sec),
            med(rounds, |r| r.raw.commits_per_sec),
            median(ratios) * 100.0,
            min * 100.0,
            max * 100.0,
            med(rounds, |r| r.alone.rows_per_sec),
            med(rounds, |r| 1e6 / r.alone.commits_per_sec),
        );
    }
    for (batch, windows) in references {
        let rows: Vec<f64> = windows.iter().map(|w| w.rows_per_sec).collect();
        let commits: Vec<f64> = windows.iter().map(|w| w.commits_per_sec).collect();
        println!(
            "| raw reference, B = {batch} | | {batch} | | | {:.0} | {:.0} | | |",
            median(rows),
            median(commits)
        );
    }
    println!(
        "\nagentrack: Tracker + {name} store + group-commit Pipeline ({}), C tokio tasks each \
         creating, starting, moving through 9 phases and completing executions, waiting after each of the 12 \
         calls until it is committed (Pipeline::wait_committed, as AppState::durable); a transition = one \
         acknowledged call. raw: the backend's baseline (store::baseline), same connection settings, one 4-column \
         table without secondary indexes, the same \
         events' JSON, transactions of B rows with B = that round's events/commit. store commit() alone: the \
         store's StoreWriter::commit on batches of B events, with B execution snapshots where the pipeline writes \
         rows (creation, state change, terminal), timed inside commit only. Medians of {} round(s) of {:?}; ratio = agentrack transitions/s ÷ raw \
         rows/s, per round.",
        backend.durability(settings),
        settings.rounds,
        settings.window
    );
}
