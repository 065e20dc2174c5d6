//! One timed window (the baseline's or the measured one): workers run until told to stop, while
//! a progress bar shows the live rates.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::LoadArgs;
use super::report::rate;
use super::stats::{Live, Stats};

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
pub(super) async fn window(
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
                    rate(requests, seconds),
                    rate(events, seconds),
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
