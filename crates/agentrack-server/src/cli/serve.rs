//! `agentrack serve`.

use std::io::Write;

use agentrack_server::config::{LogFormat, ServerConfig};
use agentrack_server::server::{Server, admin_token_path};
use anyhow::Context;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use super::ServeArgs;

fn config(args: ServeArgs) -> anyhow::Result<ServerConfig> {
    let mut config = match &args.config {
        Some(path) => ServerConfig::from_file(path)?,
        None => ServerConfig::default(),
    };
    if let Some(data) = args.data {
        config.data = data;
    }
    if let Some(store) = args.store {
        config.store.url = Some(store);
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(format) = args.log_format {
        config.log_format = format;
    }
    if let Some(timeout) = args.heartbeat_timeout {
        config.tracker.heartbeat_timeout = timeout;
    }
    if let Some(timeout) = args.execution_timeout {
        config.tracker.execution_timeout = timeout;
    }
    if let Some(interval) = args.monitor_interval {
        config.tracker.monitor_interval = interval;
    }
    if let Some(retention) = args.retention {
        config.retention = retention;
    }
    if let Some(flush) = args.heartbeat_flush {
        config.heartbeat_flush = flush;
    }
    if let Some(advertise) = args.advertise {
        config.cluster.advertise = Some(advertise);
    }
    if let Some(ttl) = args.lease_ttl {
        config.cluster.lease_ttl = ttl;
    }
    Ok(config)
}

fn init_logging(format: LogFormat) -> anyhow::Result<()> {
    let filter: Targets = std::env::var("AGENTRACK_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into())
        .parse()
        .context("invalid AGENTRACK_LOG / RUST_LOG filter")?;
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    }
    .context("cannot install the logger")
}

/// Installs the SIGINT/SIGTERM handlers now (before the server says it is ready, so that an
/// early signal is not fatal) and returns a future that resolves on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// Runs the server until SIGINT or SIGTERM.
pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = config(args)?;
    init_logging(config.log_format)?;
    let data = config.data.clone();
    let stop = shutdown_signal()?;
    let server = Server::bind(config).await.context("cannot start the server")?;
    let addr = server.local_addr()?;
    if let Some(token) = server.admin_token() {
        eprintln!(
            "admin token (saved to {}, shown only this once):\n  {token}",
            admin_token_path(&data).display()
        );
    }
    tracing::info!(%addr, data = %data.display(), restored = server.restored(), "agentrack ready");
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on http://{addr}")?;
    stdout.flush()?;
    server.run(stop).await?;
    Ok(())
}
