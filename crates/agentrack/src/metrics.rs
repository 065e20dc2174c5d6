//! Counters of executions by outcome.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::state::ExecutionState;

/// A snapshot of the tracker's counters (the original's `get_metrics()`, plus `cancelled`).
///
/// `total_executions = active_executions + successful + failed + timeout + dead + cancelled`
/// always holds: counters survive cleanup of the records they count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Executions ever created.
    pub total_executions: u64,
    /// Executions alive now.
    pub active_executions: u64,
    /// Completed.
    pub successful_executions: u64,
    /// Failed.
    pub failed_executions: u64,
    /// Timed out.
    pub timeout_executions: u64,
    /// Declared dead.
    pub dead_executions: u64,
    /// Cancelled.
    pub cancelled_executions: u64,
    /// successful / total, 0 when there are none.
    pub success_rate: f64,
    /// (failed + timeout + dead) / total, 0 when there are none.
    pub failure_rate: f64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) total: AtomicU64,
    pub(crate) active: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    timeout: AtomicU64,
    dead: AtomicU64,
    cancelled: AtomicU64,
}

impl Counters {
    pub(crate) fn created(&self) {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    /// How many executions are alive.
    pub(crate) fn alive(&self) -> usize {
        usize::try_from(self.active.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }

    /// The counter of a terminal state, or the active one.
    fn of(&self, state: ExecutionState) -> &AtomicU64 {
        match state {
            ExecutionState::Completed => &self.completed,
            ExecutionState::Failed => &self.failed,
            ExecutionState::Timeout => &self.timeout,
            ExecutionState::Dead => &self.dead,
            ExecutionState::Cancelled => &self.cancelled,
            _ => &self.active,
        }
    }

    pub(crate) fn finished(&self, state: ExecutionState) {
        self.moved(ExecutionState::Running, state);
    }

    /// Moves one execution's count from `from`'s counter to `to`'s (an edit changed its state).
    pub(crate) fn moved(&self, from: ExecutionState, to: ExecutionState) {
        let (from, to) = (self.of(from), self.of(to));
        if !std::ptr::eq(from, to) {
            to.fetch_add(1, Ordering::Relaxed);
            from.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Counts a record brought back from a store.
    pub(crate) fn restored(&self, state: ExecutionState) {
        self.created();
        self.finished(state);
    }

    #[allow(
        clippy::cast_precision_loss,
        reason = "rates are floats: counts past 2^53 only lose their lowest digits"
    )]
    pub(crate) fn snapshot(&self) -> Metrics {
        let total = self.total.load(Ordering::Relaxed);
        let successful = self.completed.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let timeout = self.timeout.load(Ordering::Relaxed);
        let dead = self.dead.load(Ordering::Relaxed);
        let rate = |n: u64| if total == 0 { 0.0 } else { n as f64 / total as f64 };
        Metrics {
            total_executions: total,
            active_executions: self.active.load(Ordering::Relaxed),
            successful_executions: successful,
            failed_executions: failed,
            timeout_executions: timeout,
            dead_executions: dead,
            cancelled_executions: self.cancelled.load(Ordering::Relaxed),
            success_rate: rate(successful),
            failure_rate: rate(failed + timeout + dead),
        }
    }
}
