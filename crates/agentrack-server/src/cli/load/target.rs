//! The server under load: one given by URL, or a local one this command starts and stops.
//!
//! The local server is this same binary's `serve`, in its own process (so its memory is its own
//! and can be read from `/proc`), on a free loopback port, with a temp data directory that is
//! removed afterwards. Its log goes to a file in that directory rather than to this terminal,
//! where it would tear the progress bar; the file's tail is shown if it fails to start.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long the local server may take to say it listens.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A server started by `agentrack load --local`.
pub(super) struct LocalServer {
    child: Child,
    pid: u32,
    /// Removed on drop, after the process is gone.
    dir: TempDir,
    /// The server's URL.
    pub(super) url: String,
    /// Its admin token.
    pub(super) admin_token: String,
}

impl LocalServer {
    /// Starts `agentrack serve` with `extra` flags on a free port and a temp data directory.
    pub(super) async fn start(extra: &[String]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("agentrack-load-")
            .tempdir()
            .context("cannot make a temp data directory for the local server")?;
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create the server log {}", log_path.display()))?;
        let binary = std::env::current_exe().context("cannot find this program's own binary")?;
        let mut command = Command::new(&binary);
        command
            .arg("serve")
            .arg("--data")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env(
                "AGENTRACK_LOG",
                std::env::var("AGENTRACK_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env_remove("AGENTRACK_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        // Its own process group: a Ctrl-C in the terminal reaches only this command, which then
        // reads the server's figures before it stops it, instead of racing the server's own exit.
        #[cfg(unix)]
        command.process_group(0);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {} serve", binary.display()))?;
        let pid = child.id().context("the local server exited at once")?;
        let stdout = child.stdout.take().context("no pipe to the local server")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(START_TIMEOUT, lines.next_line()).await;
        let Ok(Ok(Some(line))) = first else {
            let _ = child.kill().await;
            bail!("the local server did not start; its log:\n{}", tail(&log_path, 40));
        };
        // Keep draining so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let Some(url) = line.strip_prefix("listening on ") else {
            let _ = child.kill().await;
            bail!("unexpected first line from the local server: {line:?}");
        };
        let token_path = agentrack_server::server::admin_token_path(dir.path());
        let admin_token = std::fs::read_to_string(&token_path)
            .with_context(|| format!("cannot read the local server's admin token {}", token_path.display()))?
            .trim()
            .to_owned();
        Ok(Self {
            child,
            pid,
            url: url.to_owned(),
            admin_token,
            dir,
        })
    }

    /// The process id.
    pub(super) fn pid(&self) -> u32 {
        self.pid
    }

    /// The most memory the server has held so far (`VmHWM`), in bytes.
    pub(super) fn peak_memory(&self) -> Option<u64> {
        status_field(self.pid, "VmHWM:")
    }

    /// The memory it holds now (`VmRSS`), in bytes.
    pub(super) fn memory(&self) -> Option<u64> {
        status_field(self.pid, "VmRSS:")
    }

    /// The CPU time it has used so far (user + system).
    pub(super) fn cpu_time(&self) -> Option<Duration> {
        cpu_time(&self.pid.to_string())
    }

    /// The time its threads have waited for a CPU so far.
    pub(super) fn run_queue_wait(&self) -> Option<Duration> {
        run_queue_wait(&self.pid.to_string())
    }

    /// Whether the process is still running.
    pub(super) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of its log.
    pub(super) fn log_tail(&self) -> String {
        tail(&self.dir.path().join("server.log"), 20)
    }

    /// Stops the server and removes its data directory.
    pub(super) async fn stop(mut self) {
        // The data is thrown away, so there is nothing to flush: no need for a graceful stop.
        let _ = self.child.kill().await;
        drop(self.dir);
    }
}

/// The CPU time (user + system) process `pid` has used so far; `"self"` for this one.
fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces: count fields after its closing paren.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, i.e. 11 and 12 after it.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux architecture this runs on.
    Some(Duration::from_millis(ticks * 10))
}

/// The time the threads of process `pid` (`"self"` for this one) have spent runnable but
/// waiting for a CPU (`/proc/PID/task/*/schedstat`, second field): large when the machine, not
/// the process, is the limit.
fn run_queue_wait(pid: &str) -> Option<Duration> {
    let mut nanos: u64 = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        // A thread may end between the listing and the read: skip it.
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        if let Some(wait) = text.split_whitespace().nth(1).and_then(|n| n.parse::<u64>().ok()) {
            nanos = nanos.saturating_add(wait);
        }
    }
    Some(Duration::from_nanos(nanos))
}

/// CPU time and run-queue wait of the local server (if any) and of this process, at one moment.
#[derive(Debug, Clone, Copy)]
pub(super) struct CpuSample {
    server_cpu: Option<Duration>,
    /// The `--server-pid` processes' CPU, summed (none without them).
    remote_cpu: Option<Duration>,
    own_cpu: Option<Duration>,
    server_wait: Option<Duration>,
    own_wait: Option<Duration>,
}

impl CpuSample {
    /// Reads them now.
    pub(super) fn take(server: Option<&LocalServer>, remote: &[u32]) -> Self {
        Self {
            server_cpu: server.and_then(LocalServer::cpu_time),
            remote_cpu: (!remote.is_empty()).then(|| remote.iter().filter_map(|pid| cpu_time(&pid.to_string())).sum()),
            own_cpu: cpu_time("self"),
            server_wait: server.and_then(LocalServer::run_queue_wait),
            own_wait: run_queue_wait("self"),
        }
    }
}

/// What the server and this process used between two samples, per second in between: in cores.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cores {
    /// The local server's CPU.
    pub(super) server_cpu: Option<f64>,
    /// The local server's threads' time waiting for a CPU.
    pub(super) server_wait: Option<f64>,
    /// The `--server-pid` processes' CPU.
    pub(super) remote_cpu: Option<f64>,
    /// This process's CPU.
    pub(super) own_cpu: Option<f64>,
    /// This process's threads' time waiting for a CPU.
    pub(super) own_wait: Option<f64>,
}

impl Cores {
    /// From `before` to `after`, `seconds` apart (nothing for an empty interval).
    pub(super) fn between(before: CpuSample, after: CpuSample, seconds: f64) -> Self {
        let cores = |before: Option<Duration>, after: Option<Duration>| match (before, after) {
            (Some(before), Some(after)) if seconds > 0.0 => Some(after.saturating_sub(before).as_secs_f64() / seconds),
            _ => None,
        };
        Self {
            server_cpu: cores(before.server_cpu, after.server_cpu),
            server_wait: cores(before.server_wait, after.server_wait),
            remote_cpu: cores(before.remote_cpu, after.remote_cpu),
            own_cpu: cores(before.own_cpu, after.own_cpu),
            own_wait: cores(before.own_wait, after.own_wait),
        }
    }
}

fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    let kib: u64 = line
        .get(field.len()..)?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
