//! The monitor: marks dead and timed-out executions, runs callbacks, purges finished records.
//!
//! Its work is driven by the deadline queue, so a sweep touches only the executions whose
//! deadline has come — O(due · log n) — not every alive execution as the original did.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::record::ExecutionRecord;
use crate::slot::Expiry;
use crate::state::ExecutionState;
use crate::tracker::{Callback, Tracker, Want};

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sweep {
    /// Executions declared dead (no heartbeat within the heartbeat timeout).
    pub dead: Vec<ExecutionRecord>,
    /// Executions that ran past their execution timeout.
    pub timed_out: Vec<ExecutionRecord>,
    /// Deadlines that were due but had moved (renewed by heartbeats) and were re-armed.
    pub rearmed: usize,
    /// Finished records dropped from memory for age.
    pub purged: usize,
}

impl Tracker {
    /// Handles every deadline that has come due: marks executions `Dead` (error "No heartbeat
    /// for N s") or `Timeout` (error "Execution exceeded N s timeout"), emitting their terminal
    /// events, and purges finished records older than `cleanup_age`. Does not run callbacks
    /// (see [`Tracker::monitor_tick`]).
    pub fn sweep(&self) -> Sweep {
        let config = &self.inner.config;
        let mono = self.mono();
        let mut sweep = Sweep::default();
        for (due, id) in self.inner.deadlines.pop_due(mono) {
            let Ok(slot) = self.slot(id) else { continue };
            let mut slot = slot.lock();
            if slot.armed_at != Some(due) || slot.record.is_terminal() {
                continue;
            }
            let Some(expiry) = slot.expiry(config, mono) else {
                self.rearm(&mut slot);
                sweep.rearmed += 1;
                continue;
            };
            let now = self.inner.clock.now();
            let (state, error) = match expiry {
                Expiry::TimedOut => (
                    ExecutionState::Timeout,
                    format!("Execution exceeded {} s timeout", slot.record.timeout.as_secs_f64()),
                ),
                Expiry::Dead => (
                    ExecutionState::Dead,
                    format!(
                        "No heartbeat for {:.1} s",
                        mono.saturating_sub(slot.heartbeat_mono).as_secs_f64()
                    ),
                ),
            };
            slot.record.error = Some(error);
            self.finish(&mut slot, state, now, mono, Want::Events);
            let record = slot.record.clone();
            match expiry {
                Expiry::TimedOut => sweep.timed_out.push(record),
                Expiry::Dead => sweep.dead.push(record),
            }
        }
        sweep.purged = self.purge_finished(config.cleanup_age);
        self.enforce_finished_cap();
        sweep
    }

    /// One monitor pass: [`Tracker::sweep`], then the registered death and timeout callbacks.
    /// A callback that fails or panics is logged and never stops the others.
    pub async fn monitor_tick(&self) -> Sweep {
        let sweep = self.sweep();
        let (dead, timeout) = {
            let callbacks = self.inner.callbacks.read();
            (callbacks.dead.clone(), callbacks.timeout.clone())
        };
        let limit = self.inner.config.callback_timeout;
        run_callbacks(&dead, &sweep.dead, "dead", limit).await;
        run_callbacks(&timeout, &sweep.timed_out, "timeout", limit).await;
        sweep
    }

    /// Starts the monitor on the current tokio runtime: a [`Tracker::monitor_tick`] every
    /// `monitor_interval`. It stops when the handle is stopped or dropped.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn spawn_monitor(&self) -> MonitorHandle {
        let token = CancellationToken::new();
        let tracker = self.clone();
        let stop = token.clone();
        let period = self.inner.config.monitor_interval.max(Duration::from_millis(1));
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = interval.tick() => {
                        tracker.monitor_tick().await;
                    }
                }
            }
        });
        MonitorHandle {
            token,
            task: Some(task),
        }
    }
}

async fn run_callbacks(callbacks: &[Callback], records: &[ExecutionRecord], kind: &str, limit: Duration) {
    for record in records {
        for callback in callbacks {
            // The callback is invoked inside its own task, so a panic — even one raised before it
            // returns its future — is caught as a JoinError; the time limit keeps a callback
            // that never finishes from stalling detection.
            let (callback, owned) = (Arc::clone(callback), record.clone());
            let task = tokio::spawn(async move { tokio::time::timeout(limit, callback(owned)).await });
            let id = record.execution_id;
            match task.await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => tracing::warn!(execution_id = %id, kind, %error, "monitor callback failed"),
                Ok(Err(_)) => tracing::warn!(execution_id = %id, kind, ?limit, "monitor callback timed out"),
                Err(error) => tracing::error!(execution_id = %id, kind, %error, "monitor callback panicked"),
            }
        }
    }
}

/// The running monitor; dropping it stops the monitor.
#[derive(Debug)]
pub struct MonitorHandle {
    token: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl MonitorHandle {
    /// Stops the monitor and waits for its current pass to end.
    pub async fn stop(mut self) {
        self.token.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Whether the monitor task is still running.
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|task| !task.is_finished())
    }
}

impl Drop for MonitorHandle {
    fn drop(&mut self) {
        self.token.cancel();
    }
}
