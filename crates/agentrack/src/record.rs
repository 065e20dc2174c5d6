//! The execution record and its phase transitions.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::TimeoutConfig;
use crate::id::ExecutionId;
use crate::phase::Phase;
use crate::state::{BreakerState, ExecutionState};

/// One phase change of an execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// The phase left.
    pub from_phase: Phase,
    /// The phase entered.
    pub to_phase: Phase,
    /// When the change happened.
    pub timestamp: DateTime<Utc>,
    /// Time spent in `from_phase` (the original recorded it against the wrong phase).
    pub duration_ms: u64,
    /// What the caller attached.
    pub metadata: Map<String, Value>,
    /// Whether the notifier passed with the transition accepted its notification.
    pub websocket_event_sent: bool,
    /// Whether the rules allow this transition (false only under lenient validation).
    pub valid: bool,
}

/// A snapshot of one execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    /// Unique id.
    pub execution_id: ExecutionId,
    /// The tenant the execution belongs to.
    pub tenant: String,
    /// The agent running it.
    pub agent_name: String,
    /// The conversation thread (the original's `run_id` for notifications).
    pub thread_id: String,
    /// The user it runs for.
    pub user_id: String,
    /// Lifecycle state.
    pub state: ExecutionState,
    /// Fine-grained phase.
    pub current_phase: Phase,
    /// Creation time (the original's name).
    pub started_at: DateTime<Utc>,
    /// The latest sign of life.
    pub last_heartbeat: DateTime<Utc>,
    /// The latest change.
    pub updated_at: DateTime<Utc>,
    /// When the current phase was entered.
    pub phase_entered_at: DateTime<Utc>,
    /// When the execution reached a terminal state.
    pub completed_at: Option<DateTime<Utc>>,
    /// Why it failed, timed out or died.
    pub error: Option<String>,
    /// What it produced; falsy values (0, "", {}) are kept.
    pub result: Option<Value>,
    /// Heartbeats received.
    pub heartbeat_count: u64,
    /// How long the execution may run.
    #[serde(rename = "timeout_seconds", with = "crate::serde_secs")]
    pub timeout: Duration,
    /// Caller-supplied data.
    pub metadata: Map<String, Value>,
    /// The phase changes kept, oldest first: every one, unless the tracker caps the history
    /// ([`TrackerConfig::max_phase_history`](crate::TrackerConfig::max_phase_history)); then the
    /// latest that many.
    pub phase_history: Vec<Transition>,
    /// How many of the oldest phase changes were dropped from `phase_history` by the cap (0
    /// without one); `phase_history_dropped + phase_history.len()` counts every change.
    #[serde(default)]
    pub phase_history_dropped: u64,
    /// Warnings reported through agent-state updates.
    pub warning_count: u32,
    /// Errors reported through agent-state updates.
    pub error_count: u32,
    /// Per-execution timeout and breaker settings, if set.
    pub timeout_config: Option<Box<TimeoutConfig>>,
    /// The execution's own heartbeat timeout, if set (else the tracker's): a client whose agents
    /// beat at their own pace gives it when it creates them.
    #[serde(rename = "heartbeat_timeout_seconds", default, with = "crate::serde_secs::opt")]
    pub heartbeat_timeout: Option<Duration>,
    /// The per-execution breaker's state.
    pub circuit_breaker_state: BreakerState,
    /// Consecutive failures counted by the per-execution breaker.
    pub circuit_breaker_failures: u32,
    /// The per-execution breaker's latest failure.
    pub last_failure_time: Option<DateTime<Utc>>,
    /// When an open per-execution breaker will allow a trial call.
    pub next_attempt_time: Option<DateTime<Utc>>,
    /// The sequence number of this execution's latest event.
    pub seq: u64,
}

impl ExecutionRecord {
    /// Pending, starting, running or completing.
    pub fn is_alive(&self) -> bool {
        self.state.is_alive()
    }

    /// Completed, failed, timeout, dead or cancelled.
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }

    /// Completion minus start, or the running time so far while alive.
    pub fn duration(&self, now: DateTime<Utc>) -> Duration {
        let end = self.completed_at.unwrap_or(now);
        (end - self.started_at).to_std().unwrap_or_default()
    }

    /// Whether the execution has run past its timeout (a terminal one only if its state is
    /// `Timeout`).
    pub fn is_timed_out(&self, now: DateTime<Utc>) -> bool {
        if self.is_terminal() {
            return self.state == ExecutionState::Timeout;
        }
        (now - self.started_at).to_std().unwrap_or_default() > self.timeout
    }

    /// Whether the heartbeat gap exceeds `heartbeat_timeout` (a terminal one only if its state is
    /// `Dead`).
    pub fn is_dead(&self, heartbeat_timeout: Duration, now: DateTime<Utc>) -> bool {
        if self.is_terminal() {
            return self.state == ExecutionState::Dead;
        }
        (now - self.last_heartbeat).to_std().unwrap_or_default() > heartbeat_timeout
    }

    /// Every phase change this execution made, kept or dropped.
    pub fn phase_count(&self) -> u64 {
        self.phase_history_dropped + self.phase_history.len() as u64
    }

    /// Drops the oldest phase changes beyond `max`, counting them in `phase_history_dropped`.
    pub fn cap_phase_history(&mut self, max: Option<usize>) {
        let Some(max) = max else { return };
        let excess = self.phase_history.len().saturating_sub(max);
        if excess > 0 {
            self.phase_history.drain(..excess);
            self.phase_history_dropped += excess as u64;
        }
    }

    /// Milliseconds from creation to `now`.
    pub fn total_duration_ms(&self, now: DateTime<Utc>) -> u64 {
        millis(now - self.started_at)
    }

    /// Milliseconds spent in `phase`, summed over every visit, including the current one (of the
    /// visits still in `phase_history`, when it is capped).
    pub fn phase_duration_ms(&self, phase: Phase, now: DateTime<Utc>) -> u64 {
        let past: u64 = self
            .phase_history
            .iter()
            .filter(|t| t.from_phase == phase)
            .map(|t| t.duration_ms)
            .sum();
        let current = if self.current_phase == phase {
            self.current_phase_duration_ms(now)
        } else {
            0
        };
        past + current
    }

    /// Milliseconds since the current phase was entered (frozen at completion).
    pub fn current_phase_duration_ms(&self, now: DateTime<Utc>) -> u64 {
        millis(self.completed_at.unwrap_or(now) - self.phase_entered_at)
    }
}

pub(crate) fn millis(delta: chrono::TimeDelta) -> u64 {
    u64::try_from(delta.num_milliseconds()).unwrap_or(0)
}
