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
mod stats;
mod subscribers;
mod target;
mod ws_agents;

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentrack_server::api::heartbeats;
use agentrack_server::config::parse_duration;
use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use agents::{Agents, Beat, Behaviour, agent_name, user_id};
use report::{EventsReport, Report, RouteReport, ServerReport, Settings, SetupReport, TargetReport, Throughput};
use stats::{Live, Route, Stats};
use target::LocalServer;

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
    /// Load the server at this URL (needs --token); without it, a local server is started.
    #[arg(long, value_name = "URL", conflicts_with = "local")]
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
    url: String,
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
    let target = match &args.url {
        Some(url) => Target {
            url: url.trim_end_matches('/').to_owned(),
            token: args
                .token
                .clone()
                .context("--url needs --token (or AGENTRACK_TOKEN): an admin token of that server")?,
            local: None,
        },
        None => {
            if !args.json {
                eprintln!("starting a local server…");
            }
            let server = LocalServer::start(&args.server_args).await?;
            Target {
                url: server.url.clone(),
                token: server.admin_token.clone(),
                local: Some(server),
            }
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
    if let Some(url) = &args.url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        bail!("--url must start with http:// or https://, not {url:?}");
    }
    Ok(())
}

/// The stream's next item, or `None` once it ends or the run is interrupted: setup stops opening
/// more and keeps what it has.
async fn next_unless<S: futures_util::Stream + Unpin>(
    stream: &mut S,
    interrupt: &CancellationToken,
) -> Option<S::Item> {
    tokio::select! {
        next = stream.next() => next,
        () = interrupt.cancelled() => None,
    }
}

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

/// POSTs `body` to `path` with `token`; the JSON answer, or an error naming the status.
async fn admin_post(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    path: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let response = client
        .post(format!("{url}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let message = answer["error"]["message"].as_str().unwrap_or("no details");
        bail!("POST {path} → {}: {message}", status.as_u16());
    }
    Ok(answer)
}

/// The agents' token: a fresh agent token if `token` is an admin's, else `token` itself.
async fn agent_token(client: &reqwest::Client, target: &Target, tenant: &str) -> anyhow::Result<(String, bool)> {
    let made = admin_post(
        client,
        &target.url,
        &target.token,
        "/v1/tokens",
        json!({"role": "agent", "tenant": tenant, "label": "agentrack load"}),
    )
    .await;
    match made {
        Ok(answer) => match answer["token"].as_str() {
            Some(token) => Ok((token.to_owned(), true)),
            None => bail!("POST /v1/tokens answered without a token"),
        },
        // Not an admin token: take it for an agent token and let the first call tell.
        Err(_) if target.local.is_none() => Ok((target.token.clone(), false)),
        Err(error) => Err(error),
    }
}

/// One viewer token per user `0..users`, made `concurrency` at a time.
async fn viewer_tokens(
    client: &reqwest::Client,
    target: &Target,
    tenant: &str,
    users: usize,
    concurrency: usize,
    interrupt: &CancellationToken,
) -> anyhow::Result<Vec<String>> {
    let made = futures_util::stream::iter(0..users)
        .map(|user| async move {
            let answer = admin_post(
                client,
                &target.url,
                &target.token,
                "/v1/tokens",
                json!({"role": "viewer", "tenant": tenant, "user_id": user_id(user), "label": "agentrack load"}),
            )
            .await?;
            answer["token"]
                .as_str()
                .map(str::to_owned)
                .context("POST /v1/tokens answered without a token")
        })
        .buffered(concurrency)
        .collect::<Vec<_>>();
    let made = tokio::select! {
        made = made => made,
        () = interrupt.cancelled() => bail!("interrupted while making tokens"),
    };
    made.into_iter()
        .collect::<anyhow::Result<Vec<_>>>()
        .context("cannot make the subscribers' viewer tokens (an admin token is needed)")
}

/// A progress bar on stderr, or a hidden one.
fn progress(args: &LoadArgs, length: u64, unit: &str) -> ProgressBar {
    if args.json || !std::io::stderr().is_terminal() {
        return ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::new(length);
    let template = format!("{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit}  {{msg}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Runs `workers` until `stop`; shows progress meanwhile; returns their merged stats and the
/// window's length.
async fn window(
    args: &LoadArgs,
    label: &str,
    workers: JoinSet<Stats>,
    stop: &CancellationToken,
    live: &Live,
    duration: Option<Duration>,
    executions: Option<u64>,
) -> (Stats, Duration) {
    let started = Instant::now();
    let (length, unit) = match (executions, duration) {
        (Some(count), _) => (count, "executions"),
        (None, Some(duration)) => (duration.as_secs(), "s"),
        (None, None) => (0, ""),
    };
    let bar = progress(args, length, unit);
    bar.set_prefix(label.to_owned());
    let before = (Live::read(&live.requests), Live::read(&live.events));
    let mut workers = workers;
    let mut merged = Stats::default();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let deadline = tokio::time::sleep(duration.unwrap_or(Duration::from_secs(365 * 86_400)));
    tokio::pin!(deadline);
    let mut timed = duration.is_some();
    // The window ends when it is told to stop, not when the last worker has cleaned up after it.
    let mut stopped_at = None;
    loop {
        tokio::select! {
            () = &mut deadline, if timed => {
                timed = false;
                stop.cancel();
            }
            () = stop.cancelled(), if stopped_at.is_none() => {
                stopped_at = Some(Instant::now());
            }
            joined = workers.join_next() => match joined {
                Some(Ok(stats)) => merged.merge(stats),
                Some(Err(error)) => {
                    // A worker that panicked is a bug in this tool; its numbers are lost but the
                    // run goes on and says so.
                    merged.error(None, if error.is_panic() { "worker_panicked" } else { "worker_cancelled" });
                }
                None => break,
            },
            _ = tick.tick() => {
                let elapsed = started.elapsed();
                let seconds = elapsed.as_secs_f64().max(0.001);
                let requests = Live::read(&live.requests) - before.0;
                let events = Live::read(&live.events) - before.1;
                let position = match executions {
                    Some(_) => Live::read(&live.executions),
                    None => elapsed.as_secs(),
                };
                bar.set_position(position.min(length));
                bar.set_message(format!(
                    "{:.0} req/s  {:.0} events/s  {} errors  {} subscribers",
                    requests as f64 / seconds,
                    events as f64 / seconds,
                    Live::read(&live.errors),
                    Live::read(&live.subscribers),
                ));
            }
        }
    }
    let elapsed = stopped_at.unwrap_or_else(Instant::now).duration_since(started);
    bar.finish_and_clear();
    (merged, elapsed)
}

/// Everything between setup and teardown; the report without the server's memory.
async fn measure(
    args: &LoadArgs,
    target: &Target,
    interrupt: &CancellationToken,
    open_files_limit: Option<u64>,
) -> anyhow::Result<Report> {
    let client = reqwest::Client::builder()
        .timeout(args.request_timeout)
        .pool_max_idle_per_host(args.agents)
        .tcp_nodelay(true)
        .build()
        .context("cannot build the HTTP client")?;
    let live = Arc::new(Live::default());
    let users = args.users.unwrap_or(if args.subscribers > 0 {
        args.subscribers
    } else {
        args.agents
    });
    let (token, _made) = agent_token(&client, target, &args.tenant).await?;
    let agents = Arc::new(Agents::new(
        client.clone(),
        &target.url,
        &token,
        Behaviour {
            users,
            heartbeat: args.heartbeat,
            heartbeats_per_phase: args.heartbeats_per_phase,
            executions: args.executions,
        },
        Arc::clone(&live),
    )?);
    let duration = match (args.duration, args.executions) {
        (Some(duration), _) => Some(duration),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    let mut all = Stats::default();

    // Viewer tokens: one per watched user.
    let tokens_started = Instant::now();
    let watched = users.min(args.subscribers);
    let tokens = if watched > 0 {
        viewer_tokens(
            &client,
            target,
            &args.tenant,
            watched,
            args.setup_concurrency,
            interrupt,
        )
        .await?
    } else {
        Vec::new()
    };
    let tokens_s = tokens_started.elapsed().as_secs_f64();

    // The baseline.
    let mut baseline = None;
    if args.baseline && !interrupt.is_cancelled() {
        let stop = interrupt.child_token();
        let mut workers = JoinSet::new();
        for _ in 0..args.agents {
            workers.spawn(Arc::clone(&agents).run_baseline(stop.clone()));
        }
        let length = args.baseline_duration.or(duration).unwrap_or(Duration::from_secs(5));
        let (stats, elapsed) = window(args, "baseline", workers, &stop, &live, Some(length), None).await;
        if let Some(health) = stats.routes.get(&Route::Health) {
            baseline = Some(RouteReport::new(Route::Health, health, elapsed.as_secs_f64()));
        }
        all.merge(stats);
    }

    // The subscribers.
    let connect_started = Instant::now();
    let subscribers_stop = CancellationToken::new();
    let mut subscribers = JoinSet::new();
    let mut connected = 0;
    if args.subscribers > 0 && !interrupt.is_cancelled() {
        let url = subscribers::events_url(&target.url)?;
        let tokens = &tokens;
        let url = &url;
        let mut opening = futures_util::stream::iter(0..args.subscribers)
            .map(|index| async move {
                let user = index % tokens.len().max(1);
                let token = tokens.get(user).map(String::as_str).unwrap_or_default();
                (user, subscribers::connect(url, token).await)
            })
            .buffer_unordered(args.setup_concurrency);
        while let Some((user, socket)) = next_unless(&mut opening, interrupt).await {
            match socket {
                Ok(socket) => {
                    connected += 1;
                    subscribers.spawn(subscribers::run(
                        socket,
                        user_id(user),
                        Arc::clone(&live),
                        subscribers_stop.clone(),
                    ));
                }
                Err(kind) => {
                    all.error(None, kind);
                    Live::bump(&live.errors);
                }
            }
        }
    }
    let connect_s = connect_started.elapsed().as_secs_f64();

    // The heartbeat and batch scenarios' executions are opened before the window: agent i owns
    // open[i].
    let per_agent = args.scenario.executions_per_agent(args.batch_size);
    let mut open = vec![Vec::new(); args.agents];
    if per_agent > 0 && !interrupt.is_cancelled() {
        let mut setup = Stats::default();
        let mut opened =
            futures_util::stream::iter((0..args.agents).flat_map(|index| (0..per_agent).map(move |_| index)))
                .map(|index| {
                    let agents = Arc::clone(&agents);
                    async move {
                        let mut stats = Stats::default();
                        let mut slot = None;
                        let id = agents.open(&mut stats, &agent_name(index), &mut slot).await;
                        (index, id, stats)
                    }
                })
                .buffer_unordered(args.setup_concurrency);
        // agents × batch size executions take a while to open: Ctrl-C stops opening more, and
        // those already open are kept so that the cleanup below completes them.
        while let Some((index, id, stats)) = next_unless(&mut opened, interrupt).await {
            setup.merge(stats);
            if let (Ok(id), Some(owned)) = (id, open.get_mut(index)) {
                owned.push(id);
            }
        }
        // Setup calls are not part of the window's figures, but their failures are reported.
        for (kind, count) in setup.errors {
            *all.errors.entry(kind).or_default() += count;
        }
        if open.iter().all(Vec::is_empty) && !interrupt.is_cancelled() {
            bail!("could not open any execution for the {} scenario", args.scenario.name());
        }
    }

    // The ws-batch agents' streams, opened during setup like the subscribers'; agent i's is
    // sockets[i] (None: it has no executions, or its stream did not open).
    let mut sockets: Vec<Option<subscribers::Socket>> = (0..args.agents).map(|_| None).collect();
    if args.scenario == Scenario::WsBatch && !interrupt.is_cancelled() {
        let url = subscribers::events_url(&target.url)?;
        let (url, token) = (&url, &token);
        let mut opening = futures_util::stream::iter(
            open.iter()
                .enumerate()
                .filter(|(_, ids)| !ids.is_empty())
                .map(|(index, _)| index),
        )
        .map(|index| async move {
            let stream = ws_agents::stream_url(url, &agent_name(index));
            (index, subscribers::connect(&stream, token).await)
        })
        .buffer_unordered(args.setup_concurrency);
        while let Some((index, socket)) = next_unless(&mut opening, interrupt).await {
            match (socket, sockets.get_mut(index)) {
                (Ok(socket), Some(slot)) => *slot = Some(socket),
                (Ok(_), None) => {}
                (Err(kind), _) => {
                    all.error(None, kind);
                    Live::bump(&live.errors);
                }
            }
        }
        if sockets.iter().all(Option::is_none) && !interrupt.is_cancelled() {
            bail!("could not open any agent's event stream for the ws-batch scenario");
        }
    }

    // The measured window.
    let cpu_before = target.local.as_ref().and_then(LocalServer::cpu_time);
    let own_cpu_before = target::cpu_time("self");
    let wait_before = target.local.as_ref().and_then(LocalServer::run_queue_wait);
    let own_wait_before = target::run_queue_wait("self");
    let stop = interrupt.child_token();
    let mut workers = JoinSet::new();
    live.recording.store(true, std::sync::atomic::Ordering::Relaxed);
    match args.scenario {
        Scenario::Golden => {
            for index in 0..args.agents {
                workers.spawn(Arc::clone(&agents).run_golden(index, stop.clone()));
            }
        }
        Scenario::Heartbeat => {
            for id in open.iter().flatten() {
                workers.spawn(Arc::clone(&agents).run_heartbeats(Beat::One(id.clone()), stop.clone()));
            }
        }
        Scenario::Batch => {
            // An agent whose executions all failed to open has nothing to send.
            for ids in open.iter().filter(|ids| !ids.is_empty()) {
                workers.spawn(Arc::clone(&agents).run_heartbeats(Beat::many(ids), stop.clone()));
            }
        }
        Scenario::WsBatch => {
            for (ids, socket) in open.iter().zip(sockets) {
                if let Some(socket) = socket {
                    workers.spawn(ws_agents::run(
                        Arc::clone(&agents),
                        socket,
                        ids.clone(),
                        args.request_timeout,
                        stop.clone(),
                    ));
                }
            }
        }
    }
    let (stats, elapsed) = window(
        args,
        args.scenario.name(),
        workers,
        &stop,
        &live,
        duration,
        args.executions,
    )
    .await;
    let cpu_after = target.local.as_ref().and_then(LocalServer::cpu_time);
    let own_cpu_after = target::cpu_time("self");
    let wait_after = target.local.as_ref().and_then(LocalServer::run_queue_wait);
    let own_wait_after = target::run_queue_wait("self");

    // Events still in flight when the window closed belong to it.
    if args.subscribers > 0 && !interrupt.is_cancelled() {
        tokio::select! {
            () = tokio::time::sleep(args.drain) => {}
            () = interrupt.cancelled() => {}
        }
    }
    let connected_at_end = Live::read(&live.subscribers);
    subscribers_stop.cancel();
    let mut events = Stats::default();
    while let Some(joined) = subscribers.join_next().await {
        match joined {
            Ok(stats) => events.merge(stats),
            Err(_) => events.error(None, "worker_panicked"),
        }
    }
    live.recording.store(false, std::sync::atomic::Ordering::Relaxed);

    // Cleanup, untimed: the heartbeat and batch scenarios' executions are completed.
    futures_util::stream::iter(open.iter().flatten())
        .for_each_concurrent(args.setup_concurrency, |id| {
            let agents = Arc::clone(&agents);
            async move { agents.finish(id, "completed").await }
        })
        .await;

    let elapsed_s = elapsed.as_secs_f64();
    let routes = report::routes(&stats, elapsed_s, baseline.as_ref());
    let requests = stats.requests();
    let requests_per_s = report::rate(requests, elapsed_s);
    let executions = stats.executions;
    let heartbeats = stats.heartbeats;
    let heartbeats_per_s = report::rate(heartbeats, elapsed_s);
    let events_report = EventsReport {
        subscribers: args.subscribers,
        connected,
        connected_at_end,
        delivered: events.events,
        per_s: report::rate(events.events, elapsed_s),
        foreign: events.foreign_events,
        lag_ms: report::lag(&events),
    };
    all.merge(stats);
    all.merge(events);
    let total_errors = all.errors.values().sum();
    let cores = |before: Option<Duration>, after: Option<Duration>| match (before, after) {
        (Some(before), Some(after)) if elapsed_s > 0.0 => Some(after.saturating_sub(before).as_secs_f64() / elapsed_s),
        _ => None,
    };
    let cpu_cores = cores(cpu_before, cpu_after);
    let generator_cpu_cores = cores(own_cpu_before, own_cpu_after);
    let run_queue_wait_cores = cores(wait_before, wait_after);
    let generator_run_queue_wait_cores = cores(own_wait_before, own_wait_after);
    Ok(Report {
        target: TargetReport {
            url: target.url.clone(),
            local: target.local.is_some(),
        },
        settings: Settings {
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
        },
        interrupted: interrupt.is_cancelled(),
        elapsed_s,
        throughput: Throughput {
            requests,
            requests_per_s,
            requests_per_s_vs_baseline: baseline
                .as_ref()
                .filter(|b| b.per_s > 0.0)
                .map(|b| requests_per_s / b.per_s),
            executions,
            executions_per_s: report::rate(executions, elapsed_s),
            heartbeats,
            heartbeats_per_s,
            heartbeats_per_s_vs_baseline: baseline
                .as_ref()
                .filter(|b| b.per_s > 0.0)
                .map(|b| heartbeats_per_s / b.per_s),
        },
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
            cpu_cores,
            run_queue_wait_cores,
        }),
        setup: SetupReport {
            viewer_tokens: tokens.len(),
            tokens_s,
            connect_s,
            open_files_limit,
        },
        generator_cpu_cores,
        generator_run_queue_wait_cores,
    })
}
