//! Server metrics: per-scope execution counters, phase-duration samples, HTTP and WebSocket
//! counters, and the Prometheus text rendering of all of it.
//!
//! The tracker's own counters are global; a non-admin caller must only see numbers about its own
//! executions, so the server keeps counters per (tenant, user), fed by the store pipeline with
//! every committed event and rebuilt from the store at start-up.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use agentrack::{
    BreakerState, Event, EventKind, ExecutionRecord, ExecutionState, Finished, Phase, Tracker, Transition,
};
use parking_lot::Mutex;
use serde::Serialize;

use crate::cluster::LocalShard;
use crate::quotas::Quota;
use crate::store::pipeline::Pipeline;
use crate::store::{ShardId, StateCount};

/// Phase-duration samples kept per tenant and phase.
const SAMPLES: usize = 512;

/// Execution counts by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Created.
    pub total: u64,
    /// Alive now.
    pub active: u64,
    /// Completed.
    pub completed: u64,
    /// Failed.
    pub failed: u64,
    /// Timed out.
    pub timeout: u64,
    /// Declared dead.
    pub dead: u64,
    /// Cancelled.
    pub cancelled: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.total += other.total;
        self.active += other.active;
        self.completed += other.completed;
        self.failed += other.failed;
        self.timeout += other.timeout;
        self.dead += other.dead;
        self.cancelled += other.cancelled;
    }

    fn finish(&mut self, state: ExecutionState) {
        let counter = match state {
            ExecutionState::Completed => &mut self.completed,
            ExecutionState::Failed => &mut self.failed,
            ExecutionState::Timeout => &mut self.timeout,
            ExecutionState::Dead => &mut self.dead,
            ExecutionState::Cancelled => &mut self.cancelled,
            _ => return,
        };
        *counter += 1;
        self.active = self.active.saturating_sub(1);
    }
}

/// Summary statistics of one phase's durations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PhaseStats {
    /// Samples.
    pub count: usize,
    /// Median, ms.
    pub p50: u64,
    /// 90th percentile, ms.
    pub p90: u64,
    /// 99th percentile, ms.
    pub p99: u64,
    /// Longest, ms.
    pub max: u64,
}

/// What the server's counters make of one kind of event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Counted<'a> {
    /// An execution was created: counted, and alive.
    Created,
    /// An execution ended: counted by its terminal state.
    Finished(&'a Finished),
    /// A phase was left: a sample of the time spent in it.
    PhaseLeft(&'a Transition),
    /// Nothing to count.
    Nothing,
}

/// What the counters make of `kind`; `None` for a kind this server does not know yet (not
/// counted; `tests/event_kinds.rs` fails until it is decided here).
pub fn counted(kind: &EventKind) -> Option<Counted<'_>> {
    Some(match kind {
        EventKind::ExecutionCreated { .. } => Counted::Created,
        EventKind::ExecutionCompleted(finished)
        | EventKind::ExecutionFailed(finished)
        | EventKind::ExecutionCancelled(finished)
        | EventKind::TimedOut(finished)
        | EventKind::Dead(finished) => Counted::Finished(finished),
        EventKind::PhaseChanged { transition }
        | EventKind::AgentStarted { transition, .. }
        | EventKind::AgentThinking { transition, .. }
        | EventKind::ToolExecuting { transition, .. }
        | EventKind::AgentCompleted { transition, .. }
        | EventKind::AgentError { transition, .. } => Counted::PhaseLeft(transition),
        EventKind::StateChanged { .. }
        | EventKind::Heartbeat { .. }
        | EventKind::AgentStateUpdated { .. }
        | EventKind::RecordEdited { .. }
        | EventKind::BreakerOpened(_)
        | EventKind::BreakerHalfOpen(_)
        | EventKind::BreakerClosed(_) => Counted::Nothing,
        // `EventKind` is non-exhaustive: a kind newer than this match.
        _ => return None,
    })
}

/// Percentiles per phase from raw samples.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "nearest-rank quantile: the product lies in 0..=len-1, so rounding it back to an index is exact enough and in range"
)]
pub fn phase_stats<S: BuildHasher>(
    samples: HashMap<Phase, Vec<u64>, S>,
) -> std::collections::BTreeMap<&'static str, PhaseStats> {
    samples
        .into_iter()
        .filter(|(_, values)| !values.is_empty())
        .map(|(phase, mut values)| {
            values.sort_unstable();
            let at = |q: f64| {
                let index = ((values.len() as f64 - 1.0) * q).round() as usize;
                values[index.min(values.len() - 1)]
            };
            (
                phase.as_str(),
                PhaseStats {
                    count: values.len(),
                    p50: at(0.5),
                    p90: at(0.9),
                    p99: at(0.99),
                    max: values[values.len() - 1],
                },
            )
        })
        .collect()
}

/// Samples of time spent per phase, from one user's records.
pub fn samples_of(records: &[ExecutionRecord]) -> HashMap<Phase, Vec<u64>> {
    let mut samples: HashMap<Phase, Vec<u64>> = HashMap::new();
    for record in records {
        for transition in &record.phase_history {
            samples
                .entry(transition.from_phase)
                .or_default()
                .push(transition.duration_ms);
        }
    }
    samples
}

/// What one tenant holds on this node's shards, for its quotas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Alive executions.
    pub alive: u64,
    /// Distinct users with counted executions.
    pub users: u64,
}

/// The execution counters, by shard, tenant and user, and their per-tenant sums.
#[derive(Debug, Default)]
struct Counters {
    /// By shard, tenant and user: a shard's counts leave with it when another node takes it.
    by_user: HashMap<(ShardId, String, String), Counts>,
    /// Per (tenant, user): on how many shards it has counts.
    users: HashMap<(String, String), u32>,
    /// Per tenant: alive executions and distinct users, kept with `by_user` so that a quota
    /// check costs one lookup.
    tenants: HashMap<String, Tally>,
}

impl Counters {
    /// Changes the counts of (`shard`, `tenant`, `user`), created at zero, and the tenant's tally.
    fn update(&mut self, shard: ShardId, tenant: &str, user: &str, change: impl FnOnce(&mut Counts)) {
        let key = (shard, tenant.to_owned(), user.to_owned());
        let (counts, new) = match self.by_user.get_mut(&key) {
            Some(counts) => (counts, false),
            None => (self.by_user.entry(key).or_default(), true),
        };
        let before = counts.active;
        change(counts);
        let after = counts.active;
        let tally = self.tenants.entry(tenant.to_owned()).or_default();
        tally.alive = (tally.alive + after).saturating_sub(before);
        if new {
            let shards = self.users.entry((tenant.to_owned(), user.to_owned())).or_default();
            *shards += 1;
            if *shards == 1 {
                tally.users += 1;
            }
        }
    }

    /// Drops a shard's counts and their share of the tallies.
    fn remove_shard(&mut self, shard: ShardId) {
        let keys: Vec<(ShardId, String, String)> =
            self.by_user.keys().filter(|(of, _, _)| *of == shard).cloned().collect();
        for key in keys {
            let Some(counts) = self.by_user.remove(&key) else {
                continue;
            };
            let (_, tenant, user) = key;
            let Some(tally) = self.tenants.get_mut(&tenant) else {
                continue;
            };
            tally.alive = tally.alive.saturating_sub(counts.active);
            let key = (tenant, user);
            if let Some(shards) = self.users.get_mut(&key) {
                *shards -= 1;
                if *shards == 0 {
                    self.users.remove(&key);
                    tally.users = tally.users.saturating_sub(1);
                }
            }
            if *tally == Tally::default() {
                self.tenants.remove(&key.0);
            }
        }
    }
}

/// The server's counters.
#[derive(Debug, Default)]
pub struct ServerMetrics {
    counts: Mutex<Counters>,
    phases: Mutex<HashMap<String, HashMap<Phase, VecDeque<u64>>>>,
    http: [AtomicU64; 5],
    /// WebSocket connections open now.
    pub websockets: AtomicU64,
    /// WebSockets closed because the client fell behind.
    pub slow_disconnects: AtomicU64,
    /// WebSockets closed because the client answered no ping in time.
    pub pong_timeouts: AtomicU64,
    /// HTTP connections open now (upgraded WebSockets not included).
    pub http_connections: AtomicU64,
    /// Connections refused past `http.max_connections`.
    pub http_connections_refused: AtomicU64,
    /// Connections closed for not delivering a request head in time (slow or idle).
    pub http_header_timeouts: AtomicU64,
    /// Requests refused with 503 `server_busy` past `http.max_requests`.
    pub requests_refused: AtomicU64,
    /// Requests refused with 429 `quota_exceeded`, by [`Quota::index`].
    pub quota_refusals: [AtomicU64; Quota::ALL.len()],
    /// Named breakers dropped for being idle.
    pub breakers_evicted: AtomicU64,
    /// Overviews computed by walking the records in memory.
    pub overview_walks: AtomicU64,
    /// Overviews answered from a recent walk of the same scope.
    pub overview_cache_hits: AtomicU64,
}

impl ServerMetrics {
    /// Starts a shard from the store's counts and the phase durations of its executions in
    /// memory (when this node takes the shard).
    pub fn restore(&self, shard: ShardId, stored: &[StateCount], records: &[ExecutionRecord]) {
        let mut counters = self.counts.lock();
        counters.remove_shard(shard);
        for entry in stored {
            counters.update(shard, &entry.tenant, &entry.user_id, |counts| {
                counts.total += entry.count;
                match entry.state {
                    ExecutionState::Completed => counts.completed += entry.count,
                    ExecutionState::Failed => counts.failed += entry.count,
                    ExecutionState::Timeout => counts.timeout += entry.count,
                    ExecutionState::Dead => counts.dead += entry.count,
                    ExecutionState::Cancelled => counts.cancelled += entry.count,
                    _ => counts.active += entry.count,
                }
            });
        }
        drop(counters);
        let mut phases = self.phases.lock();
        for record in records {
            let tenant = phases.entry(record.tenant.clone()).or_default();
            for transition in &record.phase_history {
                push_sample(tenant, transition.from_phase, transition.duration_ms);
            }
        }
    }

    /// Forgets a shard's counts (another node serves it now).
    pub fn forget(&self, shard: ShardId) {
        self.counts.lock().remove_shard(shard);
    }

    /// Counts one committed event of `shard`.
    pub fn observe(&self, shard: ShardId, event: &Event) {
        let Some(scope) = &event.execution else { return };
        let owner = &scope.owner;
        match counted(&event.kind) {
            Some(Counted::Created) => {
                self.counts
                    .lock()
                    .update(shard, &owner.tenant, &owner.user_id, |counts| {
                        counts.total += 1;
                        counts.active += 1;
                    });
            }
            Some(Counted::Finished(finished)) => {
                self.counts
                    .lock()
                    .update(shard, &owner.tenant, &owner.user_id, |counts| {
                        counts.finish(finished.state);
                    });
            }
            Some(Counted::PhaseLeft(transition)) => {
                let mut phases = self.phases.lock();
                let tenant = phases.entry(owner.tenant.clone()).or_default();
                push_sample(tenant, transition.from_phase, transition.duration_ms);
            }
            Some(Counted::Nothing) | None => {}
        }
    }

    /// Counts in one tenant (and optionally for one user); every tenant when `tenant` is `None`.
    pub fn counts(&self, tenant: Option<&str>, user_id: Option<&str>) -> Counts {
        let counts = self.counts.lock();
        let mut sum = Counts::default();
        for ((_, t, u), c) in &counts.by_user {
            if tenant.is_none_or(|x| x == t) && user_id.is_none_or(|x| x == u) {
                sum.add(c);
            }
        }
        sum
    }

    /// What `tenant` holds on this node's shards: alive executions and distinct users.
    pub fn tally(&self, tenant: &str) -> Tally {
        self.counts.lock().tenants.get(tenant).copied().unwrap_or_default()
    }

    /// Whether this node counts executions of `user_id` in `tenant`.
    pub fn knows_user(&self, tenant: &str, user_id: &str) -> bool {
        self.counts
            .lock()
            .users
            .contains_key(&(tenant.to_owned(), user_id.to_owned()))
    }

    /// Phase-duration samples of one tenant, or of all.
    pub fn phase_samples(&self, tenant: Option<&str>) -> HashMap<Phase, Vec<u64>> {
        let phases = self.phases.lock();
        let mut samples: HashMap<Phase, Vec<u64>> = HashMap::new();
        for (t, by_phase) in phases.iter() {
            if tenant.is_some_and(|x| x != t) {
                continue;
            }
            for (phase, values) in by_phase {
                samples.entry(*phase).or_default().extend(values.iter().copied());
            }
        }
        samples
    }

    /// Counts an HTTP response by status class.
    pub fn http_response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.http[class].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of everything.
    pub fn render(
        &self,
        shards: &[Arc<LocalShard>],
        pipeline: &Pipeline,
        uptime: std::time::Duration,
        node: Option<&str>,
    ) -> String {
        let trackers: Vec<Tracker> = shards.iter().map(|shard| shard.tracker.clone()).collect();
        let trackers = trackers.as_slice();
        let mut out = Exposition {
            text: String::new(),
            node: node.map(|node| format!("node=\"{node}\"")),
        };
        self.render_executions(&mut out, trackers);
        render_store(&mut out, pipeline, shards);
        self.render_connections(&mut out);
        self.render_quotas(&mut out);
        render_breakers(&mut out, trackers);
        self.render_phases(&mut out);
        out.one(
            "agentrack_uptime_seconds",
            "gauge",
            "Seconds since the server started.",
            uptime.as_secs_f64(),
        );
        out.text
    }

    /// Executions by outcome, in memory, and the latest sequence number.
    #[allow(
        clippy::cast_precision_loss,
        reason = "Prometheus samples are floats: counts past 2^53 only lose their lowest digits"
    )]
    fn render_executions(&self, out: &mut Exposition, trackers: &[Tracker]) {
        // The server's counts include executions that finished before a restart.
        let counts = self.counts(None, None);
        out.one(
            "agentrack_executions_total",
            "counter",
            "Executions created.",
            counts.total as f64,
        );
        out.one(
            "agentrack_executions_active",
            "gauge",
            "Executions alive now.",
            counts.active as f64,
        );
        out.metric(
            "agentrack_executions_finished_total",
            "counter",
            "Executions finished, by terminal state.",
            &[
                ("completed", counts.completed),
                ("failed", counts.failed),
                ("timeout", counts.timeout),
                ("dead", counts.dead),
                ("cancelled", counts.cancelled),
            ]
            .map(|(state, n)| (format!("{{state=\"{state}\"}}"), n as f64)),
        );
        out.one(
            "agentrack_executions_in_memory",
            "gauge",
            "Execution records held in memory.",
            trackers.iter().map(Tracker::len).sum::<usize>() as f64,
        );
        out.one(
            "agentrack_events_last_seq",
            "gauge",
            "Sequence number of the latest event (the highest of this node's shards).",
            trackers.iter().map(Tracker::last_seq).max().unwrap_or(0) as f64,
        );
    }

    /// HTTP responses and WebSocket streams.
    fn render_connections(&self, out: &mut Exposition) {
        out.metric(
            "agentrack_http_responses_total",
            "counter",
            "HTTP responses by status class.",
            &["1xx", "2xx", "3xx", "4xx", "5xx"]
                .iter()
                .zip(&self.http)
                .map(|(class, n)| (format!("{{class=\"{class}\"}}"), load(n)))
                .collect::<Vec<_>>(),
        );
        out.one(
            "agentrack_websocket_connections",
            "gauge",
            "WebSocket event streams open now.",
            load(&self.websockets),
        );
        out.one(
            "agentrack_websocket_slow_disconnects_total",
            "counter",
            "Event streams closed because the client fell behind.",
            load(&self.slow_disconnects),
        );
        out.one(
            "agentrack_websocket_pong_timeouts_total",
            "counter",
            "Event streams closed because the client answered no ping in time.",
            load(&self.pong_timeouts),
        );
        out.one(
            "agentrack_http_connections",
            "gauge",
            "HTTP connections open now (upgraded WebSockets are counted as event streams).",
            load(&self.http_connections),
        );
        out.one(
            "agentrack_http_connections_refused_total",
            "counter",
            "Connections refused past http.max_connections.",
            load(&self.http_connections_refused),
        );
        out.one(
            "agentrack_http_header_timeouts_total",
            "counter",
            "Connections closed for not sending a request head within http.header_read_timeout.",
            load(&self.http_header_timeouts),
        );
        out.one(
            "agentrack_store_unreadable_rows_total",
            "counter",
            "Times a read skipped a stored execution that cannot be decoded (each logged once).",
            load(crate::store::unreadable::skipped()),
        );
        out.one(
            "agentrack_http_requests_refused_total",
            "counter",
            "Requests refused with 503 server_busy past http.max_requests.",
            load(&self.requests_refused),
        );
    }

    /// Quota refusals, breaker evictions and overview walks.
    fn render_quotas(&self, out: &mut Exposition) {
        out.metric(
            "agentrack_quota_refusals_total",
            "counter",
            "Requests refused with 429 quota_exceeded, by quota.",
            &Quota::ALL.map(|quota| {
                (
                    format!("{{quota=\"{}\"}}", quota.name()),
                    load(&self.quota_refusals[quota.index()]),
                )
            }),
        );
        out.one(
            "agentrack_breakers_evicted_total",
            "counter",
            "Named breakers dropped after quotas.breaker_idle unused (closed, no permit held).",
            load(&self.breakers_evicted),
        );
        out.one(
            "agentrack_overview_walks_total",
            "counter",
            "Overviews computed by walking the records in memory.",
            load(&self.overview_walks),
        );
        out.one(
            "agentrack_overview_cache_hits_total",
            "counter",
            "Overviews answered from a walk of the same scope at most quotas.overview_cache old.",
            load(&self.overview_cache_hits),
        );
    }

    /// Phase-duration quantiles over recent transitions of every tenant.
    #[allow(
        clippy::cast_precision_loss,
        reason = "Prometheus samples are floats: counts past 2^53 only lose their lowest digits"
    )]
    fn render_phases(&self, out: &mut Exposition) {
        let mut phases = Vec::new();
        for (phase, stats) in phase_stats(self.phase_samples(None)) {
            for (quantile, value) in [("0.5", stats.p50), ("0.9", stats.p90), ("0.99", stats.p99)] {
                phases.push((format!("{{phase=\"{phase}\",quantile=\"{quantile}\"}}"), value as f64));
            }
        }
        out.metric(
            "agentrack_phase_duration_milliseconds",
            "summary",
            "Time spent per phase over recent transitions.",
            &phases,
        );
    }
}

/// The Prometheus text format, written one metric family at a time.
#[derive(Default)]
struct Exposition {
    text: String,
    /// `node="…"` on every sample of a cluster's node, so that scrapes of every node add up
    /// to the cluster (`sum without (node)`).
    node: Option<String>,
}

impl Exposition {
    /// One family: its help and type lines, then one line per labelled sample.
    fn metric(&mut self, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            match (&self.node, labels.strip_prefix('{')) {
                (None, _) => writeln!(self.text, "{name}{labels} {value}"),
                (Some(node), None) => writeln!(self.text, "{name}{{{node}}} {value}"),
                (Some(node), Some(rest)) => writeln!(self.text, "{name}{{{node},{rest} {value}"),
            }
            .unwrap_or_default();
        }
    }

    /// A family of one unlabelled sample.
    fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.metric(name, kind, help, &[(String::new(), value)]);
    }
}

#[allow(
    clippy::cast_precision_loss,
    reason = "Prometheus samples are floats: counts past 2^53 only lose their lowest digits"
)]
fn load(counter: &AtomicU64) -> f64 {
    counter.load(Ordering::Relaxed) as f64
}

/// The store pipeline's progress, throughput and health.
#[allow(
    clippy::cast_precision_loss,
    reason = "Prometheus samples are floats: counts past 2^53 only lose their lowest digits"
)]
fn render_store(out: &mut Exposition, pipeline: &Pipeline, shards: &[Arc<LocalShard>]) {
    let stats = pipeline.stats();
    out.one(
        "agentrack_store_shards",
        "gauge",
        "Shards this node serves.",
        shards.len() as f64,
    );
    out.one(
        "agentrack_store_committed_seq",
        "gauge",
        "Sequence numbers confirmed durable, summed over this node's shards.",
        shards
            .iter()
            .filter_map(|shard| pipeline.committed(shard.id))
            .sum::<u64>() as f64,
    );
    for (name, kind, help, counter) in [
        (
            "agentrack_store_batches_total",
            "counter",
            "Store transactions committed.",
            &stats.batches,
        ),
        (
            "agentrack_store_events_written_total",
            "counter",
            "Events appended to the store.",
            &stats.events_written,
        ),
        (
            "agentrack_store_heartbeats_total",
            "counter",
            "Heartbeat events received by the store pipeline.",
            &stats.heartbeats,
        ),
        (
            "agentrack_store_heartbeats_written_total",
            "counter",
            "Heartbeat events written (the rest were coalesced).",
            &stats.heartbeats_written,
        ),
        (
            "agentrack_store_commit_failures_total",
            "counter",
            "Failed store commit attempts.",
            &stats.commit_failures,
        ),
    ] {
        out.one(name, kind, help, load(counter));
    }
    out.one(
        "agentrack_store_last_commit_seconds",
        "gauge",
        "Duration of the latest store commit.",
        load(&stats.last_commit_micros) / 1e6,
    );
    out.one(
        "agentrack_store_purged_executions_total",
        "counter",
        "Finished executions purged by retention.",
        load(&stats.purged_executions),
    );
    out.one(
        "agentrack_store_healthy",
        "gauge",
        "1 when the latest store commit succeeded.",
        if pipeline.is_healthy() { 1.0 } else { 0.0 },
    );
}

/// Each named circuit breaker's state.
fn render_breakers(out: &mut Exposition, trackers: &[Tracker]) {
    let breakers: Vec<(String, f64)> = trackers
        .iter()
        .flat_map(Tracker::breakers)
        .map(|status| {
            let value = match status.state {
                BreakerState::Closed => 0.0,
                BreakerState::HalfOpen => 1.0,
                BreakerState::Open => 2.0,
            };
            (format!("{{breaker=\"{}\"}}", escape_label(&status.name)), value)
        })
        .collect();
    out.metric(
        "agentrack_breaker_state",
        "gauge",
        "Named circuit breaker state: 0 closed, 1 half-open, 2 open.",
        &breakers,
    );
}

fn push_sample(tenant: &mut HashMap<Phase, VecDeque<u64>>, phase: Phase, value: u64) {
    let samples = tenant.entry(phase).or_default();
    if samples.len() == SAMPLES {
        samples.pop_front();
    }
    samples.push_back(value);
}

fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
