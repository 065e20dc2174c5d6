//! What the workers measure.
//!
//! Every agent and subscriber task owns a [`Stats`] and hands it back when it ends; the
//! orchestrator merges them. Nothing on the hot path takes a lock, so the load generator's own
//! bookkeeping does not show up as server latency. Only the few counters the progress bar reads
//! while the run goes on are shared ([`Live`]), as relaxed atomics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies and lags are recorded in microseconds up to this; longer ones are clamped to it.
const MAX_MICROS: u64 = 3_600_000_000;

/// A histogram of microseconds, 3 significant digits (0.1 % resolution).
pub(super) fn histogram() -> Histogram<u64> {
    // The bounds are constants that satisfy hdrhistogram's rules (low ≥ 1, high ≥ 2 · low).
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant histogram bounds are valid")
}

/// Records `elapsed` into `histogram` (in microseconds, at least 1).
pub(super) fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).max(1);
    histogram.saturating_record(micros.min(MAX_MICROS));
}

/// A route the load generator calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Route {
    /// `GET /healthz`: the trivial handler of the baseline.
    Health,
    /// `POST /v1/executions`.
    Create,
    /// `POST /v1/executions/{id}/start`.
    Start,
    /// `POST /v1/executions/{id}/heartbeat`.
    Heartbeat,
    /// `POST /v1/executions/{id}/heartbeat` sent to a node that does not own the execution,
    /// which forwards it to the owner (`--url` with several nodes).
    HeartbeatForwarded,
    /// `POST /v1/executions/{id}/phase`.
    Phase,
    /// `POST /v1/executions/{id}/state` (completion).
    State,
    /// `POST /v1/heartbeats`: heartbeats for many executions in one call.
    Batch,
    /// A `heartbeat` message on the event WebSocket, until its `heartbeat_ack`.
    WsBatch,
}

impl Route {
    /// How the route appears in the report.
    pub(super) const fn label(self) -> &'static str {
        match self {
            Self::Health => "GET /healthz",
            Self::Create => "POST /v1/executions",
            Self::Start => "POST /v1/executions/{id}/start",
            Self::Heartbeat => "POST /v1/executions/{id}/heartbeat",
            Self::HeartbeatForwarded => "POST /v1/executions/{id}/heartbeat (forwarded)",
            Self::Phase => "POST /v1/executions/{id}/phase",
            Self::State => "POST /v1/executions/{id}/state",
            Self::Batch => "POST /v1/heartbeats",
            Self::WsBatch => "WS heartbeat → heartbeat_ack",
        }
    }
}

/// One route's measurements.
pub(super) struct RouteStats {
    /// Latency of the successful calls, request sent to body read.
    pub(super) latency: Histogram<u64>,
    /// Calls that failed (any kind).
    pub(super) errors: u64,
}

impl Default for RouteStats {
    fn default() -> Self {
        Self {
            latency: histogram(),
            errors: 0,
        }
    }
}

/// One task's measurements.
#[derive(Default)]
pub(super) struct Stats {
    /// Per route.
    pub(super) routes: BTreeMap<Route, RouteStats>,
    /// Failures by kind (`http_409`, `timeout`, `ws_closed_1008`, ...).
    pub(super) errors: BTreeMap<String, u64>,
    /// Event delivery lag: receive time minus the event's `timestamp`.
    pub(super) lag: Option<Histogram<u64>>,
    /// Events received (with a timestamp) while recording.
    pub(super) events: u64,
    /// Events received by a subscriber that belong to another user: an isolation failure.
    pub(super) foreign_events: u64,
    /// Executions walked to completion.
    pub(super) executions: u64,
    /// Heartbeats the server counted: one per successful single heartbeat, one per accepted id
    /// of a batch. Requests alone cannot compare the scenarios, since a batch carries many.
    pub(super) heartbeats: u64,
}

impl Stats {
    /// Counts one failure of `kind`, charged to `route` if it was a call.
    pub(super) fn error(&mut self, route: Option<Route>, kind: impl Into<String>) {
        if let Some(route) = route {
            self.routes.entry(route).or_default().errors += 1;
        }
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    /// Records one successful call.
    pub(super) fn success(&mut self, route: Route, elapsed: Duration) {
        record(&mut self.routes.entry(route).or_default().latency, elapsed);
    }

    /// Records one delivered event.
    pub(super) fn event(&mut self, lag: Duration) {
        self.events += 1;
        record(self.lag.get_or_insert_with(histogram), lag);
    }

    /// Adds `other` into `self`.
    pub(super) fn merge(&mut self, other: Self) {
        for (route, stats) in other.routes {
            let mine = self.routes.entry(route).or_default();
            // Both histograms have the same bounds, so adding cannot fail; a failure would
            // only lose samples, never corrupt the report.
            let _ = mine.latency.add(&stats.latency);
            mine.errors += stats.errors;
        }
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
        if let Some(lag) = other.lag {
            let _ = self.lag.get_or_insert_with(histogram).add(&lag);
        }
        self.events += other.events;
        self.foreign_events += other.foreign_events;
        self.executions += other.executions;
        self.heartbeats += other.heartbeats;
    }

    /// Successful calls over every route.
    pub(super) fn requests(&self) -> u64 {
        self.routes.values().map(|route| route.latency.len()).sum()
    }
}

/// Counters the progress bar reads while the run goes on.
#[derive(Debug, Default)]
pub(super) struct Live {
    /// Successful calls.
    pub(super) requests: AtomicU64,
    /// Failures of any kind.
    pub(super) errors: AtomicU64,
    /// Events delivered to subscribers.
    pub(super) events: AtomicU64,
    /// Executions completed.
    pub(super) executions: AtomicU64,
    /// Subscribers currently connected.
    pub(super) subscribers: AtomicU64,
    /// Whether subscribers count what they receive (only inside the measured window).
    pub(super) recording: AtomicBool,
}

impl Live {
    /// Adds one to `counter`.
    pub(super) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads `counter`.
    pub(super) fn read(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
