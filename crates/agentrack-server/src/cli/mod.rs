//! The command line: argument definitions and dispatch.

mod client;
mod load;
mod serve;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use agentrack_server::config::{LogFormat, parse_duration};
use clap::{Args, Parser, Subcommand};

/// Tracks LLM agent executions: run the server, or talk to one.
#[derive(Debug, Parser)]
#[command(name = "agentrack", version, about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: HTTP + WebSocket API over a durable embedded store.
    Serve(ServeArgs),
    /// Show execution counts, rates and phase durations.
    Status(ClientArgs),
    /// List executions, newest first.
    List(ListArgs),
    /// Show one execution as JSON.
    Get(GetArgs),
    /// Follow events live, one line each.
    Watch(WatchArgs),
    /// Manage tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// See the nodes sharing the store and the shards each serves.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Generate load: simulated agents and WebSocket subscribers against a server (a local one
    /// by default), then a report of throughput, latency, delivery lag and errors.
    Load(load::LoadArgs),
}

/// Options of `serve`. Flags override the environment, which overrides the config file.
#[allow(
    clippy::doc_markdown,
    reason = "these doc comments are the `--help` text, not rustdoc"
)]
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Data directory: the admin token, and the store unless --store names another [default:
    /// ./agentrack-data].
    #[arg(long, env = "AGENTRACK_DATA", value_name = "DIR")]
    data: Option<PathBuf>,
    /// The store's URL: sqlite://PATH [default: sqlite://DIR/agentrack.db in --data].
    #[arg(long, env = "AGENTRACK_STORE", value_name = "URL", hide_env_values = true)]
    store: Option<String>,
    /// Address to listen on; port 0 picks a free port [default: 127.0.0.1:7700].
    #[arg(long, env = "AGENTRACK_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// TOML configuration file (see the `config` module docs for its keys).
    #[arg(long, env = "AGENTRACK_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format: pretty or json [default: pretty].
    #[arg(long, env = "AGENTRACK_LOG_FORMAT", value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// An alive execution without a heartbeat for this long is declared dead (e.g. 10s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    heartbeat_timeout: Option<Duration>,
    /// Execution timeout for executions created without one (e.g. 15s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    execution_timeout: Option<Duration>,
    /// How often the monitor looks for dead and timed-out executions (e.g. 1s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    monitor_interval: Option<Duration>,
    /// Finished executions are purged from the store after this (e.g. 7d).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    retention: Option<Duration>,
    /// The longest a heartbeat waits before it is written to the store (e.g. 1s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    heartbeat_flush: Option<Duration>,
    /// On a shared store: how the other nodes reach this one [default: http:// and the bound
    /// address].
    #[arg(long, env = "AGENTRACK_ADVERTISE", value_name = "URL")]
    advertise: Option<String>,
    /// On a shared store: how long a shard lease lasts without renewal (e.g. 10s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    lease_ttl: Option<Duration>,
}

/// How to reach a server.
#[derive(Debug, Clone, Args)]
pub(crate) struct ClientArgs {
    /// The server's URL.
    #[arg(long, env = "AGENTRACK_URL", default_value = "http://127.0.0.1:7700")]
    url: String,
    /// A token; without one, DATA/admin.token is tried (see --data).
    #[arg(long, env = "AGENTRACK_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Data directory whose admin.token to use when no token is given.
    #[arg(long, env = "AGENTRACK_DATA", value_name = "DIR")]
    data: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Only this user's executions.
    #[arg(long)]
    user: Option<String>,
    /// Only this thread's executions.
    #[arg(long)]
    thread: Option<String>,
    /// Only this agent's executions.
    #[arg(long)]
    agent: Option<String>,
    /// Only these states (comma-separated, e.g. running,failed).
    #[arg(long)]
    state: Option<String>,
    /// Only alive executions.
    #[arg(long)]
    active: bool,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct GetArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The execution id (exec_...).
    id: String,
}

#[derive(Debug, Args)]
struct WatchArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Only this thread's events.
    #[arg(long)]
    thread: Option<String>,
    /// Only this execution's events.
    #[arg(long)]
    execution: Option<String>,
    /// Replay stored events after this position first: an event's `cursor` (on a single node,
    /// also its `global_seq`).
    #[arg(long, value_name = "CURSOR")]
    since: Option<String>,
    /// Print raw JSON lines instead of formatted ones.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// The nodes, their URLs, the shards each owns and until when, recent shard moves (admin).
    Status(ClusterStatusArgs),
}

#[derive(Debug, Args)]
struct ClusterStatusArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Make a token; prints it (it is shown only once).
    Create(TokenCreateArgs),
    /// List every token (admin): id, role, tenant, user, label, created, expiry, revoked. Never
    /// the tokens themselves.
    List(TokenListArgs),
    /// Revoke a token by its id (tok_..., from `token list`): refused from the next request on,
    /// on every node. The last valid admin token cannot be revoked.
    Revoke(TokenRevokeArgs),
}

#[derive(Debug, Args)]
struct TokenListArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct TokenRevokeArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The token's id (tok_...).
    id: String,
}

#[allow(
    clippy::doc_markdown,
    reason = "these doc comments are the `--help` text, not rustdoc"
)]
#[derive(Debug, Args)]
struct TokenCreateArgs {
    /// admin, agent, viewer or metrics (reads /metrics only).
    #[arg(long)]
    role: String,
    /// The tenant it acts in.
    #[arg(long)]
    tenant: String,
    /// For viewers: the user whose executions it may read.
    #[arg(long)]
    user: Option<String>,
    /// A note to remember it by.
    #[arg(long)]
    label: Option<String>,
    /// The token stops being accepted after this (e.g. 90d, 12h); never by default.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    expires_in: Option<Duration>,
    /// Write the token straight into this data directory's store instead of asking a server.
    #[arg(long = "data", value_name = "DIR", conflicts_with_all = ["url", "token"])]
    data: Option<PathBuf>,
    /// With --data: the store's URL, when it is not the SQLite file in --data.
    #[arg(
        long,
        env = "AGENTRACK_STORE",
        value_name = "URL",
        hide_env_values = true,
        requires = "data"
    )]
    store: Option<String>,
    /// The server's URL (when not using --data).
    #[arg(long, env = "AGENTRACK_URL", default_value = "http://127.0.0.1:7700")]
    url: String,
    /// An admin token (when not using --data).
    #[arg(long, env = "AGENTRACK_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Runs a parsed command line.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Status(args) => client::status(&args).await,
        Command::List(args) => {
            let mut query: Vec<(&str, String)> = vec![("limit", args.limit.to_string())];
            for (key, value) in [
                ("user_id", &args.user),
                ("thread_id", &args.thread),
                ("agent_name", &args.agent),
                ("state", &args.state),
            ] {
                if let Some(value) = value {
                    query.push((key, value.clone()));
                }
            }
            if args.active {
                query.push(("active", "true".into()));
            }
            client::list(&args.client, &query, args.json).await
        }
        Command::Get(args) => client::get(&args.client, &args.id).await,
        Command::Watch(args) => {
            watch::run(
                &args.client,
                watch::Options {
                    thread: args.thread,
                    execution: args.execution,
                    since: args.since,
                    json: args.json,
                },
            )
            .await
        }
        Command::Token(TokenCommand::Create(args)) => client::token_create(args).await,
        Command::Token(TokenCommand::List(args)) => client::token_list(&args.client, args.json).await,
        Command::Token(TokenCommand::Revoke(args)) => client::token_revoke(&args.client, &args.id).await,
        Command::Cluster(ClusterCommand::Status(args)) => client::cluster_status(&args.client, args.json).await,
        Command::Load(args) => load::run(args).await,
    }
}
