//! The report: what a run measured, as a table or as JSON (the same fields).
//!
//! Times are in milliseconds with microsecond resolution; rates are per second of the measured
//! window. With `--baseline`, every route also carries its figures divided by the trivial
//! handler's of the same run (`vs_baseline`): throughput above 1 is faster than the baseline,
//! latency above 1 is slower.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::stats::{Route, RouteStats, Stats};

/// Everything a run measured.
#[derive(Debug, Serialize)]
pub(super) struct Report {
    /// The server.
    pub(super) target: TargetReport,
    /// What was asked for.
    pub(super) settings: Settings,
    /// Whether Ctrl-C cut the run short.
    pub(super) interrupted: bool,
    /// Length of the measured window, in seconds.
    pub(super) elapsed_s: f64,
    /// Totals over every route of the measured window.
    pub(super) throughput: Throughput,
    /// The trivial handler, measured first with the same client and concurrency.
    pub(super) baseline: Option<RouteReport>,
    /// Each route of the measured window.
    pub(super) routes: Vec<RouteReport>,
    /// What the subscribers received.
    pub(super) events: EventsReport,
    /// Failures by kind, over the whole run (baseline included).
    pub(super) errors: BTreeMap<String, u64>,
    /// The sum of `errors`.
    pub(super) total_errors: u64,
    /// The local server's resources (absent for a remote server).
    pub(super) server: Option<ServerReport>,
    /// The untimed preparation.
    pub(super) setup: SetupReport,
    /// CPU this load generator used during the window, in cores: near the machine's core count
    /// means the generator, not the server, may be the limit.
    pub(super) generator_cpu_cores: Option<f64>,
    /// This generator's threads' time runnable but waiting for a CPU, per second of the window.
    pub(super) generator_run_queue_wait_cores: Option<f64>,
    /// CPU the `--server-pid` processes used during the window, in cores (summed).
    pub(super) remote_servers_cpu_cores: Option<f64>,
}

/// The server under load.
#[derive(Debug, Serialize)]
pub(super) struct TargetReport {
    /// Its URL.
    pub(super) url: String,
    /// Whether this command started it.
    pub(super) local: bool,
}

/// The run's parameters.
#[derive(Debug, Serialize)]
pub(super) struct Settings {
    /// `golden`, `heartbeat` or `batch`.
    pub(super) scenario: &'static str,
    /// Concurrent agents.
    pub(super) agents: usize,
    /// Interval between an agent's heartbeats, in milliseconds (0: back to back).
    pub(super) heartbeat_ms: f64,
    /// Heartbeats before each phase transition (golden scenario).
    pub(super) heartbeats_per_phase: u32,
    /// Executions per agent heartbeated in one request (batch scenario).
    pub(super) batch_size: Option<usize>,
    /// WebSocket subscribers.
    pub(super) subscribers: usize,
    /// Users the executions are spread over.
    pub(super) users: usize,
    /// The measured window's planned length, in seconds.
    pub(super) duration_s: Option<f64>,
    /// The number of executions asked for.
    pub(super) executions: Option<u64>,
    /// Whether the baseline was measured.
    pub(super) baseline: bool,
}

/// Totals of the measured window.
#[derive(Debug, Serialize)]
pub(super) struct Throughput {
    /// Successful calls.
    pub(super) requests: u64,
    /// Successful calls per second.
    pub(super) requests_per_s: f64,
    /// `requests_per_s` over the baseline's.
    pub(super) requests_per_s_vs_baseline: Option<f64>,
    /// Executions walked to completion.
    pub(super) executions: u64,
    /// Completed executions per second.
    pub(super) executions_per_s: f64,
    /// Heartbeats the server counted: successful single heartbeats plus accepted ids of batches.
    pub(super) heartbeats: u64,
    /// Counted heartbeats per second.
    pub(super) heartbeats_per_s: f64,
    /// `heartbeats_per_s` over the baseline's req/s: how many heartbeats one trivial request's
    /// worth of capacity buys.
    pub(super) heartbeats_per_s_vs_baseline: Option<f64>,
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct Percentiles {
    /// Median.
    pub(super) p50: f64,
    /// 90th percentile.
    pub(super) p90: f64,
    /// 99th percentile.
    pub(super) p99: f64,
    /// Largest.
    pub(super) max: f64,
    /// Mean.
    pub(super) mean: f64,
}

impl Percentiles {
    #[allow(
        clippy::cast_precision_loss,
        reason = "a figure in the report: counts past 2^53 only lose their lowest digits"
    )]
    fn of(histogram: &Histogram<u64>) -> Option<Self> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Some(Self {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1000.0,
        })
    }
}

/// A route's figures divided by the baseline's.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct Ratios {
    /// Throughput ratio (≥ 0.5 is the target for heartbeats).
    pub(super) per_s: f64,
    /// Median latency ratio.
    pub(super) p50: f64,
    /// 90th percentile ratio.
    pub(super) p90: f64,
    /// 99th percentile ratio (≤ 2 is the target for heartbeats).
    pub(super) p99: f64,
    /// Largest latency ratio.
    pub(super) max: f64,
}

/// One route.
#[derive(Debug, Serialize)]
pub(super) struct RouteReport {
    /// Method and path.
    pub(super) route: &'static str,
    /// Successful calls.
    pub(super) count: u64,
    /// Failed calls.
    pub(super) errors: u64,
    /// Successful calls per second.
    pub(super) per_s: f64,
    /// Latency of the successful calls.
    pub(super) latency_ms: Option<Percentiles>,
    /// The figures over the baseline's.
    pub(super) vs_baseline: Option<Ratios>,
}

impl RouteReport {
    /// The report of `route`, measured over `elapsed_s` seconds.
    pub(super) fn new(route: Route, stats: &RouteStats, elapsed_s: f64) -> Self {
        let count = stats.latency.len();
        Self {
            route: route.label(),
            count,
            errors: stats.errors,
            per_s: rate(count, elapsed_s),
            latency_ms: Percentiles::of(&stats.latency),
            vs_baseline: None,
        }
    }

    fn compare(&mut self, baseline: &Self) {
        let (Some(mine), Some(base)) = (self.latency_ms, baseline.latency_ms) else {
            return;
        };
        self.vs_baseline = Some(Ratios {
            per_s: ratio(self.per_s, baseline.per_s),
            p50: ratio(mine.p50, base.p50),
            p90: ratio(mine.p90, base.p90),
            p99: ratio(mine.p99, base.p99),
            max: ratio(mine.max, base.max),
        });
    }
}

/// What the subscribers received.
#[derive(Debug, Serialize)]
pub(super) struct EventsReport {
    /// Subscribers asked for.
    pub(super) subscribers: usize,
    /// Subscribers whose stream opened.
    pub(super) connected: usize,
    /// Subscribers still connected when the window closed.
    pub(super) connected_at_end: u64,
    /// Events received inside the window.
    pub(super) delivered: u64,
    /// Events received per second.
    pub(super) per_s: f64,
    /// Events of another user received by a subscriber (must be 0).
    pub(super) foreign: u64,
    /// Receive time minus the event's timestamp.
    pub(super) lag_ms: Option<Percentiles>,
}

/// The local server's resources.
#[derive(Debug, Serialize)]
pub(super) struct ServerReport {
    /// Its process id.
    pub(super) pid: u32,
    /// Peak resident memory (`VmHWM`), in bytes.
    pub(super) peak_memory_bytes: Option<u64>,
    /// The same, in MiB.
    pub(super) peak_memory_mib: Option<f64>,
    /// Resident memory at the end, in MiB.
    pub(super) memory_at_end_mib: Option<f64>,
    /// CPU used during the measured window, in cores (CPU seconds per second).
    pub(super) cpu_cores: Option<f64>,
    /// Time its threads spent runnable but waiting for a CPU during the window, per second: a
    /// large value means the machine (other processes, this generator) starved the server.
    pub(super) run_queue_wait_cores: Option<f64>,
}

/// The untimed preparation.
#[derive(Debug, Serialize)]
pub(super) struct SetupReport {
    /// Viewer tokens made for the subscribers.
    pub(super) viewer_tokens: usize,
    /// Seconds spent making them.
    pub(super) tokens_s: f64,
    /// Seconds spent opening the subscribers' streams.
    pub(super) connect_s: f64,
    /// The open-file limit (soft) this process ran with; the local server inherits it.
    pub(super) open_files_limit: Option<u64>,
}

/// `count` over `seconds`, 0 for an empty window.
#[allow(
    clippy::cast_precision_loss,
    reason = "a figure in the report: counts past 2^53 only lose their lowest digits"
)]
pub(super) fn rate(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 { count as f64 / seconds } else { 0.0 }
}

fn cores(value: Option<f64>) -> String {
    value.map_or_else(|| "?".to_owned(), |c| format!("{c:.2}"))
}

fn ratio(value: f64, base: f64) -> f64 {
    if base > 0.0 { value / base } else { 0.0 }
}

/// The per-route reports of `stats` over `elapsed_s`, compared with `baseline` if given.
pub(super) fn routes(stats: &Stats, elapsed_s: f64, baseline: Option<&RouteReport>) -> Vec<RouteReport> {
    stats
        .routes
        .iter()
        .filter(|(route, _)| **route != Route::Health)
        .map(|(route, route_stats)| {
            let mut report = RouteReport::new(*route, route_stats, elapsed_s);
            if let Some(baseline) = baseline {
                report.compare(baseline);
            }
            report
        })
        .collect()
}

/// Latency percentiles of a delivered-event histogram.
pub(super) fn lag(stats: &Stats) -> Option<Percentiles> {
    stats.lag.as_ref().and_then(Percentiles::of)
}

impl Report {
    /// The human-readable table.
    pub(super) fn text(&self) -> String {
        let mut out = String::new();
        self.write_heading(&mut out);
        let _ = writeln!(out);
        self.write_routes(&mut out);
        self.write_totals(&mut out);
        let _ = writeln!(out);
        self.write_events(&mut out);
        self.write_errors(&mut out);
        self.write_resources(&mut out);
        self.write_setup(&mut out);
        out
    }

    /// What ran against which server, and for how long.
    fn write_heading(&self, out: &mut String) {
        let s = &self.settings;
        let heartbeat = if s.heartbeat_ms > 0.0 {
            format!("every {} ms", s.heartbeat_ms)
        } else {
            "back to back".to_owned()
        };
        let _ = writeln!(
            out,
            "agentrack load: scenario {}, {} agents (heartbeats {heartbeat}{}), {} subscribers over {} users",
            s.scenario,
            s.agents,
            match (s.scenario, s.batch_size) {
                ("golden", _) => format!(", {} per phase", s.heartbeats_per_phase),
                (_, Some(size)) => format!(", {size} executions per batch"),
                _ => String::new(),
            },
            s.subscribers,
            s.users,
        );
        let _ = writeln!(
            out,
            "target: {} ({}); measured window {:.1} s{}",
            self.target.url,
            if self.target.local {
                "local server"
            } else {
                "remote server"
            },
            self.elapsed_s,
            if self.interrupted { " (interrupted)" } else { "" },
        );
    }

    /// The table: the baseline, each route, and all routes together.
    fn write_routes(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "{:<36} {:>9} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7}",
            "ROUTE", "COUNT", "ERR", "REQ/S", "P50 ms", "P90 ms", "P99 ms", "MAX ms", "×REQ/S", "×P50", "×P99"
        );
        if let Some(baseline) = &self.baseline {
            write_route(out, "GET /healthz (baseline)", baseline);
        }
        for route in &self.routes {
            let label = route.route.strip_prefix("POST /v1/executions").map_or_else(
                || route.route.to_owned(),
                |rest| format!("POST …{}", if rest.is_empty() { "/v1/executions" } else { rest }),
            );
            write_route(out, &label, route);
        }
        let t = &self.throughput;
        let _ = writeln!(
            out,
            "{:<36} {:>9} {:>6} {:>9.0}{}",
            "all routes",
            t.requests,
            self.routes.iter().map(|r| r.errors).sum::<u64>(),
            t.requests_per_s,
            t.requests_per_s_vs_baseline
                .map(|r| format!("   ({r:.2}× the baseline's req/s)"))
                .unwrap_or_default(),
        );
    }

    /// Heartbeats counted and executions completed, when there were any.
    fn write_totals(&self, out: &mut String) {
        let t = &self.throughput;
        if t.heartbeats > 0 {
            let _ = writeln!(
                out,
                "heartbeats counted: {} ({:.0}/s{})",
                t.heartbeats,
                t.heartbeats_per_s,
                t.heartbeats_per_s_vs_baseline
                    .map(|r| format!(", {r:.2}× the baseline's req/s"))
                    .unwrap_or_default(),
            );
        }
        if t.executions > 0 {
            let _ = writeln!(
                out,
                "executions completed: {} ({:.1}/s)",
                t.executions, t.executions_per_s
            );
        }
    }

    /// What the subscribers received and how late.
    fn write_events(&self, out: &mut String) {
        let e = &self.events;
        if e.subscribers == 0 {
            let _ = writeln!(out, "events: no subscribers");
            return;
        }
        let _ = writeln!(
            out,
            "events: {} delivered to {}/{} subscribers ({} still connected at the end), {:.0}/s; {} of another user",
            e.delivered, e.connected, e.subscribers, e.connected_at_end, e.per_s, e.foreign
        );
        if let Some(lag) = e.lag_ms {
            let _ = writeln!(
                out,
                "delivery lag ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  mean {:.2}",
                lag.p50, lag.p90, lag.p99, lag.max, lag.mean
            );
        }
    }

    /// Failures by kind.
    fn write_errors(&self, out: &mut String) {
        if self.errors.is_empty() {
            let _ = writeln!(out, "errors: none");
        } else {
            let list: Vec<String> = self.errors.iter().map(|(kind, n)| format!("{kind} {n}")).collect();
            let _ = writeln!(out, "errors: {} ({})", self.total_errors, list.join(", "));
        }
    }

    /// The server's memory and CPU, and this generator's CPU.
    fn write_resources(&self, out: &mut String) {
        match &self.server {
            Some(server) => {
                let mib = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.1} MiB"));
                let _ = writeln!(
                    out,
                    "server (pid {}): peak memory {} (VmHWM), {} at the end; during the window CPU {} cores, \
                     waiting for a CPU {} cores",
                    server.pid,
                    mib(server.peak_memory_mib),
                    mib(server.memory_at_end_mib),
                    cores(server.cpu_cores),
                    cores(server.run_queue_wait_cores),
                );
            }
            None => match self.remote_servers_cpu_cores {
                Some(cpu) => {
                    let _ = writeln!(
                        out,
                        "servers (--server-pid): during the window CPU {} cores; memory not measured",
                        cores(Some(cpu))
                    );
                }
                None => {
                    let _ = writeln!(out, "server: remote, memory not measured");
                }
            },
        }
        if self.generator_cpu_cores.is_some() {
            let _ = writeln!(
                out,
                "load generator: during the window CPU {} cores, waiting for a CPU {} cores",
                cores(self.generator_cpu_cores),
                cores(self.generator_run_queue_wait_cores),
            );
        }
    }

    /// How long the untimed preparation took.
    fn write_setup(&self, out: &mut String) {
        let setup = &self.setup;
        let _ = writeln!(
            out,
            "setup: {} viewer tokens in {:.1} s, streams opened in {:.1} s, open-file limit {}",
            setup.viewer_tokens,
            setup.tokens_s,
            setup.connect_s,
            setup
                .open_files_limit
                .map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
        );
    }
}

/// One row of the table.
fn write_route(out: &mut String, label: &str, route: &RouteReport) {
    let p = route.latency_ms;
    let cell = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    let times = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}×"));
    let _ = writeln!(
        out,
        "{:<36} {:>9} {:>6} {:>9.0} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7}",
        label,
        route.count,
        route.errors,
        route.per_s,
        cell(p.map(|p| p.p50)),
        cell(p.map(|p| p.p90)),
        cell(p.map(|p| p.p99)),
        cell(p.map(|p| p.max)),
        times(route.vs_baseline.map(|r| r.per_s)),
        times(route.vs_baseline.map(|r| r.p50)),
        times(route.vs_baseline.map(|r| r.p99)),
    );
}
