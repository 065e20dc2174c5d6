//! `agentrack load`: a load generator, so that users can size their own deployments.
//!
//! A run has an untimed setup and one measured window:
//!
//! 1. target: the server at `--url`, or (`--local`, the default) this binary's `serve` started
//!    on a free port with a temp data directory;
//! 2. tokens: an agent token for the agents and one viewer token per watched user, made through
//!    the admin API (concurrently, because 10,000 subscribers need 10,000 tokens);
//! 3. with `--baseline`: the trivial handler (`GET /healthz`: no auth, no store, a constant
//!    body) hammered by the same client at the same concurrency for the same time, so every
//!    figure of the window can be given as a ratio to what the HTTP stack alone achieves on this
//!    machine in this run — absolute numbers on a shared 2-core box say little, ratios say more;
//! 4. the subscribers' WebSockets are opened;
//! 5. the measured window: agents run their scenario until `--duration` or `--executions`, the
//!    subscribers count what arrives and how late;
//! 6. a short drain for events still in flight, then teardown and the report.
//!
//! The load generator runs on the same machine as a local server and competes with it for CPU;
//! the baseline is measured under the same handicap, which is one more reason to read ratios.

mod agents;
mod report;
mod setup;
mod stats;
mod subscribers;
mod target;
mod window;
mod ws_agents;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use agentrack_server::api::heartbeats;
use agentrack_server::config::parse_duration;
use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use futures_util::StreamExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use agents::{Beat, Behaviour, Fleet};
use report::{EventsReport, Report, RouteReport, ServerReport, Settings, SetupReport, TargetReport, Throughput};
use stats::{Live, Route, Stats};
use target::{Cores, CpuSample, LocalServer};
use window::window;

/// What the agents do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
    /// Each agent loops: create, start, the nine phases with heartbeats between them, complete.
    Golden,
    /// Each agent opens one execution and sends heartbeats for it as fast as it can (or every
    /// --heartbeat): the heartbeat route's throughput against the baseline's.
    Heartbeat,
    /// Each agent opens --batch-size executions and sends heartbeats for all of them in one
    /// `POST /v1/heartbeats` as fast as it can (or every --heartbeat).
    Batch,
    /// As batch, but each agent sends its heartbeats as messages on its own event WebSocket and
    /// times each until its `heartbeat_ack`; --batch-size at most 1,500.
    WsBatch,
}

impl Scenario {
    const fn name(self) -> &'static str {
        match self {
            Self::Golden => "golden",
            Self::Heartbeat => "heartbeat",
            Self::Batch => "batch",
            Self::WsBatch => "ws-batch",
        }
    }

    /// Executions each agent opens before the window (none: the golden scenario opens its own).
    fn executions_per_agent(self, batch_size: usize) -> usize {
        match self {
            Self::Golden => 0,
            Self::Heartbeat => 1,
            Self::Batch | Self::WsBatch => batch_size,
        }
    }
}

/// Options of `load`.
#[derive(Debug, Args)]
pub(crate) struct LoadArgs {
    /// Load the server at this URL (needs --token); without it, a local server is started. A
    /// cluster is given as a comma-separated list of its nodes' URLs: agent i (and subscriber
    /// i) talks to node i mod N, and in the heartbeat scenario every odd agent heartbeats through
    /// the next node, so the report shows forwarded and local heartbeats side by side.
    #[arg(long, value_name = "URL[,URL…]", conflicts_with = "local")]
    url: Option<String>,
    /// An admin token of --url (or an agent token, with --subscribers 0).
    #[arg(long, env = "AGENTRACK_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Start a local server (this binary's `serve`, temp data dir, free port) and stop it at the
    /// end; the default without --url.
    #[arg(long)]
    local: bool,
    /// An extra flag for the local server's `serve`, e.g. --server-arg=--heartbeat-flush=2s
    /// (repeatable).
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// With --url: a process on this machine whose CPU during the window is reported as the
    /// servers' (the nodes of a cluster on loopback); repeatable.
    #[arg(long = "server-pid", value_name = "PID", requires = "url")]
    server_pids: Vec<u32>,
    /// The local server's store (its `serve --store`), e.g. postgres://USER@HOST:PORT/DB — use a
    /// database you can throw away [default: SQLite in the temp data dir].
    #[arg(long, value_name = "URL", conflicts_with = "url")]
    store: Option<String>,
    /// What the agents do.
    #[arg(long, value_enum, default_value_t = Scenario::Golden)]
    scenario: Scenario,
    /// Concurrent simulated agents (one request in flight each).
    #[arg(long, default_value_t = 10, value_name = "N")]
    agents: usize,
    /// Interval between an agent's heartbeats (0: back to back).
    #[arg(long, default_value = "100ms", value_name = "DURATION", value_parser = parse_duration)]
    heartbeat: Duration,
    /// Executions per agent whose heartbeats go in one request (batch: at most 10,000; ws-batch:
    /// at most 1,500).
    #[arg(long, default_value_t = 100, value_name = "K")]
    batch_size: usize,
    /// Heartbeats an agent sends before each phase transition (golden scenario).
    #[arg(long, default_value_t = 1, value_name = "K")]
    heartbeats_per_phase: u32,
    /// WebSocket subscribers, each with a viewer token of one user.
    #[arg(long, default_value_t = 10, value_name = "M")]
    subscribers: usize,
    /// Users the executions are spread over [default: --subscribers, or --agents without
    /// subscribers]; subscriber i watches user i mod USERS.
    #[arg(long, value_name = "U")]
    users: Option<usize>,
    /// Length of the measured window [default: 10s, unless --executions is given].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Stop after this many executions (golden scenario); with --duration, whichever comes first.
    #[arg(long, value_name = "COUNT")]
    executions: Option<u64>,
    /// First measure the trivial handler (GET /healthz) with the same client and concurrency,
    /// and give every figure also as a ratio to it.
    #[arg(long)]
    baseline: bool,
    /// How long the baseline runs [default: the window's duration, or 5s with --executions].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    baseline_duration: Option<Duration>,
    /// The tenant the load's tokens and executions belong to.
    #[arg(long, default_value = "load")]
    tenant: String,
    /// A request that takes longer fails with `timeout`.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    request_timeout: Duration,
    /// Tokens made and streams opened at once during setup.
    #[arg(long, default_value_t = 128, value_name = "N")]
    setup_concurrency: usize,
    /// After the window, how long subscribers keep reading events still in flight.
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = parse_duration)]
    drain: Duration,
    /// Print the report as JSON (and no progress bar).
    #[arg(long)]
    json: bool,
    /// Also write the human-readable report to this file (with --json: both forms of one run).
    #[arg(long, value_name = "FILE")]
    text_report: Option<std::path::PathBuf>,
}

/// The server under load, wherever it is.
struct Target {
    /// The first node's URL: setup (tokens) goes there.
    url: String,
    /// Every node's URL (one for a single server).
    nodes: Vec<String>,
    token: String,
    local: Option<LocalServer>,
}

/// Runs `agentrack load`.
pub(crate) async fn run(args: LoadArgs) -> anyhow::Result<()> {
    validate(&args)?;
    let interrupt = CancellationToken::new();
    {
        let interrupt = interrupt.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupt.cancel();
            }
        });
    }
    let open_files_limit = raise_open_files_limit(&args);
    let target = if let Some(urls) = &args.url {
        let nodes = node_urls(urls);
        Target {
            url: nodes.first().cloned().unwrap_or_default(),
            nodes,
            token: args
                .token
                .clone()
                .context("--url needs --token (or AGENTRACK_TOKEN): an admin token of that server")?,
            local: None,
        }
    } else {
        if !args.json {
            eprintln!("starting a local server…");
        }
        let mut server_args = args.server_args.clone();
        if let Some(store) = &args.store {
            server_args.extend(["--store".to_owned(), store.clone()]);
        }
        let server = LocalServer::start(&server_args).await?;
        Target {
            url: server.url.clone(),
            nodes: vec![server.url.clone()],
            token: server.admin_token.clone(),
            local: Some(server),
        }
    };
    let mut target = target;
    let outcome = measure(&args, &target, &interrupt, open_files_limit).await;
    // Read before the server is stopped: the figures die with the process.
    let resources = target.local.as_mut().map(|server| {
        let alive = server.is_running();
        (alive, server.peak_memory(), server.memory(), server.log_tail())
    });
    if let Some(local) = target.local.take() {
        local.stop().await;
    }
    let mut report = outcome?;
    if let (Some(server), Some((alive, peak, now, log))) = (report.server.as_mut(), resources) {
        server.peak_memory_bytes = peak;
        server.peak_memory_mib = peak.map(mib);
        server.memory_at_end_mib = now.map(mib);
        if !alive {
            eprintln!("the local server died during the run; its log:\n{log}");
        }
    }
    if let Some(path) = &args.text_report {
        std::fs::write(path, report.text()).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

fn validate(args: &LoadArgs) -> anyhow::Result<()> {
    if args.agents == 0 {
        bail!("--agents must be at least 1");
    }
    if args.users == Some(0) {
        bail!("--users must be at least 1");
    }
    if args.scenario != Scenario::Golden && args.executions.is_some() {
        bail!(
            "--executions applies to the golden scenario; the {} scenario runs for --duration",
            args.scenario.name()
        );
    }
    if !(1..=heartbeats::MAX_BATCH).contains(&args.batch_size) {
        bail!(
            "--batch-size must be between 1 and {} (the server's limit)",
            heartbeats::MAX_BATCH
        );
    }
    if args.scenario == Scenario::WsBatch && args.batch_size > ws_agents::WS_MAX_BATCH {
        bail!(
            "--batch-size must be at most {} with ws-batch: the server reads WebSocket messages of at \
             most 64 KiB",
            ws_agents::WS_MAX_BATCH
        );
    }
    if args.duration.is_some_and(|d| d.is_zero()) {
        bail!("--duration must be longer than 0");
    }
    if args.setup_concurrency == 0 {
        bail!("--setup-concurrency must be at least 1");
    }
    if let Some(urls) = &args.url {
        let nodes = node_urls(urls);
        if nodes.is_empty() {
            bail!("--url names no server");
        }
        if let Some(url) = nodes
            .iter()
            .find(|url| !(url.starts_with("http://") || url.starts_with("https://")))
        {
            bail!("--url must start with http:// or https://, not {url:?}");
        }
    }
    Ok(())
}

/// The node URLs of `--url`: comma-separated, without trailing slashes.
fn node_urls(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(|url| url.trim().trim_end_matches('/').to_owned())
        .filter(|url| !url.is_empty())
        .collect()
}

#[allow(
    clippy::cast_precision_loss,
    reason = "a figure in the report: counts past 2^53 only lose their lowest digits"
)]
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Raises the soft open-file limit to the hard one: every subscriber is a socket here and one in
/// a local server (which inherits the limit). Returns the limit now in force.
fn raise_open_files_limit(args: &LoadArgs) -> Option<u64> {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(error) => {
            eprintln!("warning: cannot raise the open-file limit: {error}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).ok().map(|(soft, _)| soft)
        }
    };
    // Sockets of the agents and subscribers, plus a margin for the runtime and the store.
    let needed = (args.subscribers + args.agents + 64) as u64;
    if let Some(limit) = limit
        && limit < needed
    {
        eprintln!(
            "warning: the open-file limit is {limit} but this run needs about {needed} descriptors \
             ({} subscribers + {} agents + margin); raise it with `ulimit -n` — streams beyond it will \
             fail with ws_connect errors",
            args.subscribers, args.agents
        );
    }
    limit
}

/// The HTTP client of the agents and of setup: one idle connection kept per agent.
fn http_client(args: &LoadArgs) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(args.request_timeout)
        .pool_max_idle_per_host(args.agents)
        .tcp_nodelay(true)
        .build()
        .context("cannot build the HTTP client")
}

/// Users the executions are spread over: --users, or one per subscriber, or one per agent.
fn users(args: &LoadArgs) -> usize {
    args.users.unwrap_or(if args.subscribers > 0 {
        args.subscribers
    } else {
        args.agents
    })
}

/// What the agents do, from the arguments.
fn behaviour(args: &LoadArgs, users: usize) -> Behaviour {
    Behaviour {
        users,
        heartbeat: args.heartbeat,
        heartbeats_per_phase: args.heartbeats_per_phase,
        executions: args.executions,
    }
}

/// The measured window's planned length: --duration; none when only --executions bounds it;
/// else 10 s.
fn window_length(args: &LoadArgs) -> Option<Duration> {
    match (args.duration, args.executions) {
        (Some(duration), _) => Some(duration),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    }
}

/// Everything between setup and teardown; the report without the server's memory.
async fn measure(
    args: &LoadArgs,
    target: &Target,
    interrupt: &CancellationToken,
    open_files_limit: Option<u64>,
) -> anyhow::Result<Report> {
    let client = http_client(args)?;
    let live = Arc::new(Live::default());
    let users = users(args);
    let (token, _made) = setup::agent_token(&client, target, &args.tenant).await?;
    let behaviour = behaviour(args, users);
    let agents = Fleet::new(&client, &target.nodes, &token, behaviour, &live)?;
    let duration = window_length(args);
    // Failures outside the measured window: setup's and the baseline's.
    let mut all = Stats::default();

    let tokens_started = Instant::now();
    let watched = users.min(args.subscribers);
    let tokens = setup::viewer_tokens(
        &client,
        target,
        &args.tenant,
        watched,
        args.setup_concurrency,
        interrupt,
    )
    .await?;
    let tokens_s = tokens_started.elapsed().as_secs_f64();

    let baseline = measure_baseline(args, &agents, &live, duration, interrupt, &mut all).await;

    let connect_started = Instant::now();
    let subscribers = setup::open_subscribers(args, &target.nodes, &tokens, &live, interrupt, &mut all).await?;
    let connect_s = connect_started.elapsed().as_secs_f64();
    let connected = subscribers.connected;

    let open = setup::open_executions(args, &agents, interrupt, &mut all).await?;
    let sockets = setup::open_agent_streams(args, &target.nodes, &token, &open, &live, interrupt, &mut all).await?;

    let before = CpuSample::take(target.local.as_ref(), &args.server_pids);
    let (window, elapsed) = measured_window(args, &agents, &live, &open, sockets, duration, interrupt).await;
    let after = CpuSample::take(target.local.as_ref(), &args.server_pids);

    let (events, connected_at_end) = drain_subscribers(args, subscribers, &live, interrupt).await;
    complete_open_executions(args, &agents, &open).await;

    Ok(report(
        args,
        target,
        interrupt.is_cancelled(),
        Measured {
            users,
            duration,
            baseline,
            window,
            elapsed,
            events,
            connected,
            connected_at_end,
            all,
            cores: Cores::between(before, after, elapsed.as_secs_f64()),
            setup: SetupReport {
                viewer_tokens: tokens.len(),
                tokens_s,
                connect_s,
                open_files_limit,
            },
        },
    ))
}

/// With --baseline: the trivial handler, hammered by the same agents at the same concurrency,
/// for --baseline-duration (or the window's, or 5 s). Its calls are counted in `all`.
async fn measure_baseline(
    args: &LoadArgs,
    agents: &Fleet,
    live: &Live,
    duration: Option<Duration>,
    interrupt: &CancellationToken,
    all: &mut Stats,
) -> Option<RouteReport> {
    if !args.baseline || interrupt.is_cancelled() {
        return None;
    }
    let stop = interrupt.child_token();
    let mut workers = JoinSet::new();
    for index in 0..args.agents {
        workers.spawn(agents.home(index).run_baseline(stop.clone()));
    }
    let length = args.baseline_duration.or(duration).unwrap_or(Duration::from_secs(5));
    let (stats, elapsed) = window(args, "baseline", workers, &stop, live, Some(length), None).await;
    let baseline = stats
        .routes
        .get(&Route::Health)
        .map(|health| RouteReport::new(Route::Health, health, elapsed.as_secs_f64()));
    all.merge(stats);
    baseline
}

/// The measured window: the scenario's workers (on the `open` executions and, for ws-batch,
/// their agents' `sockets`) until --duration or --executions; their stats and its length.
async fn measured_window(
    args: &LoadArgs,
    agents: &Fleet,
    live: &Live,
    open: &[Vec<String>],
    sockets: Vec<Option<subscribers::Socket>>,
    duration: Option<Duration>,
    interrupt: &CancellationToken,
) -> (Stats, Duration) {
    let stop = interrupt.child_token();
    let mut workers = JoinSet::new();
    live.recording.store(true, Ordering::Relaxed);
    match args.scenario {
        Scenario::Golden => {
            for index in 0..args.agents {
                workers.spawn(agents.home(index).run_golden(index, stop.clone()));
            }
        }
        Scenario::Heartbeat => {
            for (index, ids) in open.iter().enumerate() {
                for id in ids {
                    workers.spawn(
                        agents
                            .beating(index)
                            .run_heartbeats(Beat::One(id.clone()), stop.clone()),
                    );
                }
            }
        }
        Scenario::Batch => {
            // An agent whose executions all failed to open has nothing to send.
            for (index, ids) in open.iter().enumerate().filter(|(_, ids)| !ids.is_empty()) {
                workers.spawn(agents.home(index).run_heartbeats(Beat::many(ids), stop.clone()));
            }
        }
        Scenario::WsBatch => {
            for (index, (ids, socket)) in open.iter().zip(sockets).enumerate() {
                if let Some(socket) = socket {
                    workers.spawn(ws_agents::run(
                        agents.home(index),
                        socket,
                        ids.clone(),
                        args.request_timeout,
                        stop.clone(),
                    ));
                }
            }
        }
    }
    window(
        args,
        args.scenario.name(),
        workers,
        &stop,
        live,
        duration,
        args.executions,
    )
    .await
}

/// After the window: waits --drain for events still in flight (they belong to the window),
/// then stops the subscribers. What they received, and how many were still connected.
async fn drain_subscribers(
    args: &LoadArgs,
    subscribers: setup::Subscribers,
    live: &Live,
    interrupt: &CancellationToken,
) -> (Stats, u64) {
    if args.subscribers > 0 && !interrupt.is_cancelled() {
        tokio::select! {
            () = tokio::time::sleep(args.drain) => {}
            () = interrupt.cancelled() => {}
        }
    }
    let connected_at_end = Live::read(&live.subscribers);
    subscribers.stop.cancel();
    let mut tasks = subscribers.tasks;
    let mut events = Stats::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(stats) => events.merge(stats),
            Err(_) => events.error(None, "worker_panicked"),
        }
    }
    live.recording.store(false, Ordering::Relaxed);
    (events, connected_at_end)
}

/// Teardown, untimed: the heartbeat and batch scenarios' executions are completed.
async fn complete_open_executions(args: &LoadArgs, agents: &Fleet, open: &[Vec<String>]) {
    let owned = open
        .iter()
        .enumerate()
        .flat_map(|(index, ids)| ids.iter().map(move |id| (index, id)));
    futures_util::stream::iter(owned)
        .for_each_concurrent(args.setup_concurrency, |(index, id)| {
            let agents = agents.home(index);
            async move { agents.finish(id, "completed").await }
        })
        .await;
}

/// What a run measured, gathered for its report.
struct Measured {
    /// Users the executions were spread over.
    users: usize,
    /// The window's planned length.
    duration: Option<Duration>,
    /// The trivial handler's figures.
    baseline: Option<RouteReport>,
    /// The measured window's calls.
    window: Stats,
    /// Its length.
    elapsed: Duration,
    /// What the subscribers received.
    events: Stats,
    /// Subscribers whose stream opened.
    connected: usize,
    /// Subscribers still connected at the end of the window.
    connected_at_end: u64,
    /// Failures outside the window.
    all: Stats,
    /// CPU used during the window.
    cores: Cores,
    /// The untimed preparation.
    setup: SetupReport,
}

/// The report of a run; the server's memory is filled in after it.
fn report(args: &LoadArgs, target: &Target, interrupted: bool, measured: Measured) -> Report {
    let Measured {
        users,
        duration,
        baseline,
        window,
        elapsed,
        events,
        connected,
        connected_at_end,
        mut all,
        cores,
        setup,
    } = measured;
    let elapsed_s = elapsed.as_secs_f64();
    let routes = report::routes(&window, elapsed_s, baseline.as_ref());
    let throughput = throughput(&window, elapsed_s, baseline.as_ref());
    let events_report = EventsReport {
        subscribers: args.subscribers,
        connected,
        connected_at_end,
        delivered: events.events,
        per_s: report::rate(events.events, elapsed_s),
        foreign: events.foreign_events,
        lag_ms: report::lag(&events),
    };
    all.merge(window);
    all.merge(events);
    let total_errors = all.errors.values().sum();
    Report {
        target: TargetReport {
            url: target.url.clone(),
            local: target.local.is_some(),
        },
        settings: settings(args, users, duration),
        interrupted,
        elapsed_s,
        throughput,
        baseline,
        routes,
        events: events_report,
        errors: all.errors,
        total_errors,
        server: target.local.as_ref().map(|server| ServerReport {
            pid: server.pid(),
            peak_memory_bytes: None,
            peak_memory_mib: None,
            memory_at_end_mib: None,
            cpu_cores: cores.server_cpu,
            run_queue_wait_cores: cores.server_wait,
        }),
        setup,
        generator_cpu_cores: cores.own_cpu,
        generator_run_queue_wait_cores: cores.own_wait,
        remote_servers_cpu_cores: cores.remote_cpu,
    }
}

/// The run's parameters as the report gives them.
fn settings(args: &LoadArgs, users: usize, duration: Option<Duration>) -> Settings {
    Settings {
        scenario: args.scenario.name(),
        agents: args.agents,
        heartbeat_ms: args.heartbeat.as_secs_f64() * 1000.0,
        heartbeats_per_phase: args.heartbeats_per_phase,
        batch_size: matches!(args.scenario, Scenario::Batch | Scenario::WsBatch).then_some(args.batch_size),
        subscribers: args.subscribers,
        users,
        duration_s: duration.map(|d| d.as_secs_f64()),
        executions: args.executions,
        baseline: args.baseline,
    }
}

/// The window's totals over `elapsed_s`, as ratios to the baseline's req/s too if it was measured.
fn throughput(window: &Stats, elapsed_s: f64, baseline: Option<&RouteReport>) -> Throughput {
    let requests = window.requests();
    let requests_per_s = report::rate(requests, elapsed_s);
    let heartbeats_per_s = report::rate(window.heartbeats, elapsed_s);
    let baseline_per_s = baseline.map(|b| b.per_s).filter(|per_s| *per_s > 0.0);
    Throughput {
        requests,
        requests_per_s,
        requests_per_s_vs_baseline: baseline_per_s.map(|base| requests_per_s / base),
        executions: window.executions,
        executions_per_s: report::rate(window.executions, elapsed_s),
        heartbeats: window.heartbeats,
        heartbeats_per_s,
        heartbeats_per_s_vs_baseline: baseline_per_s.map(|base| heartbeats_per_s / base),
    }
}
