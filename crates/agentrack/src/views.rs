//! Derived views of an execution: agent state, timeout status, full context.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;

use crate::breaker::{BreakerConfig, BreakerStatus};
use crate::config::TimeoutConfig;
use crate::error::TrackerError;
use crate::event::EventKind;
use crate::id::ExecutionId;
use crate::phase::Phase;
use crate::record::ExecutionRecord;
use crate::slot::Slot;
use crate::state::{BreakerState, ExecutionState};
use crate::tracker::{Change, Tracker, Want, ensure_alive};

/// The agent-state view of an execution (the original's `get_agent_state`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Its agent.
    pub agent_name: String,
    /// Its user.
    pub user_id: String,
    /// Its thread.
    pub thread_id: String,
    /// Lifecycle state.
    pub state: ExecutionState,
    /// Current phase.
    pub current_phase: Phase,
    /// Creation time.
    pub started_at: DateTime<Utc>,
    /// Latest sign of life.
    pub last_heartbeat: DateTime<Utc>,
    /// Milliseconds since creation.
    pub total_duration_ms: u64,
    /// Milliseconds in the current phase.
    pub current_phase_duration_ms: u64,
    /// Transitions so far.
    pub phase_count: usize,
    /// Warnings reported.
    pub warning_count: u32,
    /// Errors reported.
    pub error_count: u32,
    /// Caller data.
    pub metadata: Map<String, Value>,
}

/// Changes for [`Tracker::update_agent_state`]; `None` leaves a field as it is, metadata is merged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentStateUpdate {
    /// New warning count.
    pub warning_count: Option<u32>,
    /// New error count.
    pub error_count: Option<u32>,
    /// Keys to add or replace.
    pub metadata: Option<Map<String, Value>>,
}

/// An execution's timeout position (the original's `check_timeout`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeoutStatus {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Seconds since creation (until completion).
    pub elapsed_seconds: f64,
    /// Its timeout.
    pub timeout_seconds: f64,
    /// Whether it overran.
    pub is_timed_out: bool,
    /// Its breaker's state.
    pub circuit_breaker_state: BreakerState,
    /// Its breaker's failure count.
    pub circuit_breaker_failures: u32,
    /// Seconds left, never negative.
    pub time_until_timeout: f64,
}

/// Everything about one execution (the original's `get_execution_with_full_context`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionContext {
    /// The record, phase history included.
    pub record: ExecutionRecord,
    /// The agent-state view.
    pub state_info: AgentState,
    /// Timeout position.
    pub timeout_status: TimeoutStatus,
    /// Per-execution breaker.
    pub circuit_breaker_status: BreakerStatus,
}

impl Tracker {
    /// The agent-state view of one execution.
    ///
    /// # Errors
    ///
    /// `NotFound`.
    pub fn agent_state(&self, id: ExecutionId) -> Result<AgentState, TrackerError> {
        let now = self.inner.clock.now();
        let record = self.get(id)?;
        Ok(agent_state_of(&record, now))
    }

    /// Updates warning/error counters and merges metadata.
    ///
    /// # Errors
    ///
    /// `NotFound` or `Terminal`.
    pub fn update_agent_state(&self, id: ExecutionId, update: AgentStateUpdate) -> Result<Change, TrackerError> {
        self.update_agent_state_with(id, update, Want::Events)
    }

    pub(crate) fn update_agent_state_with(
        &self,
        id: ExecutionId,
        update: AgentStateUpdate,
        want: Want,
    ) -> Result<Change, TrackerError> {
        let slot = self.slot(id)?;
        let mut slot = slot.lock();
        ensure_alive(&slot)?;
        let now = self.inner.clock.now();
        let record = &mut slot.record;
        if let Some(count) = update.warning_count {
            record.warning_count = count;
        }
        if let Some(count) = update.error_count {
            record.error_count = count;
        }
        if let Some(metadata) = update.metadata {
            record.metadata.extend(metadata);
        }
        record.updated_at = now;
        let event = self.emit_when(&mut slot, now, want, |slot| EventKind::AgentStateUpdated {
            warning_count: slot.record.warning_count,
            error_count: slot.record.error_count,
            metadata: slot.record.metadata.clone(),
        });
        Ok(Change {
            execution_id: id,
            events: event.into_iter().collect(),
        })
    }

    /// Gives one execution its own timeouts and breaker settings; its execution timeout becomes
    /// `config.agent_execution_timeout`.
    ///
    /// Returns the change: a `RecordEdited` event naming `timeout_config` and `timeout`, so that
    /// a store writes the new settings.
    ///
    /// # Errors
    ///
    /// `NotFound`, `Terminal`, or `InvalidInput` for a zero execution timeout.
    pub fn set_timeout_config(&self, id: ExecutionId, config: TimeoutConfig) -> Result<Change, TrackerError> {
        if config.agent_execution_timeout.is_zero() {
            return Err(TrackerError::InvalidInput {
                field: "agent_execution_timeout",
                reason: "must be greater than zero".into(),
            });
        }
        let slot = self.slot(id)?;
        let mut slot = slot.lock();
        ensure_alive(&slot)?;
        slot.record.timeout_config = Some(Box::new(config));
        slot.set_timeout(config.agent_execution_timeout);
        if let Some(calls) = slot.calls.as_deref_mut() {
            calls.breaker.config = Arc::new(BreakerConfig::from(&config));
        }
        self.rearm(&mut slot);
        let now = self.inner.clock.now();
        slot.record.updated_at = now;
        let event = self.emit(
            &mut slot,
            now,
            EventKind::RecordEdited {
                fields: vec!["timeout_config".to_owned(), "timeout".to_owned()],
            },
        );
        Ok(Change {
            execution_id: id,
            events: vec![event],
        })
    }

    /// Re-arms a slot's deadline after its timeout changed (the old entry becomes stale).
    pub(crate) fn rearm(&self, slot: &mut Slot) {
        let due = slot.deadline(&self.inner.config);
        slot.armed_at = Some(due);
        self.inner.deadlines.arm(slot.record.execution_id, due);
    }

    /// One execution's timeout position.
    ///
    /// # Errors
    ///
    /// `NotFound`.
    pub fn timeout_status(&self, id: ExecutionId) -> Result<TimeoutStatus, TrackerError> {
        let now = self.inner.clock.now();
        let record = self.get(id)?;
        Ok(timeout_status_of(&record, now))
    }

    /// Everything about one execution.
    ///
    /// # Errors
    ///
    /// `NotFound`.
    pub fn context(&self, id: ExecutionId) -> Result<ExecutionContext, TrackerError> {
        let now = self.inner.clock.now();
        let mono = self.mono();
        let slot = self.slot(id)?;
        let slot = slot.lock();
        let record = slot.record.clone();
        Ok(ExecutionContext {
            state_info: agent_state_of(&record, now),
            timeout_status: timeout_status_of(&record, now),
            circuit_breaker_status: self.breaker_status_of(&slot, mono),
            record,
        })
    }
}

impl AgentState {
    /// `record`'s agent-state view at `now` (for a record read elsewhere, e.g. from a server).
    pub fn of(record: &ExecutionRecord, now: DateTime<Utc>) -> Self {
        agent_state_of(record, now)
    }
}

impl TimeoutStatus {
    /// `record`'s timeout position at `now` (for a record read elsewhere, e.g. from a server).
    pub fn of(record: &ExecutionRecord, now: DateTime<Utc>) -> Self {
        timeout_status_of(record, now)
    }
}

fn agent_state_of(record: &ExecutionRecord, now: DateTime<Utc>) -> AgentState {
    AgentState {
        execution_id: record.execution_id,
        agent_name: record.agent_name.clone(),
        user_id: record.user_id.clone(),
        thread_id: record.thread_id.clone(),
        state: record.state,
        current_phase: record.current_phase,
        started_at: record.started_at,
        last_heartbeat: record.last_heartbeat,
        total_duration_ms: record.total_duration_ms(now),
        current_phase_duration_ms: record.current_phase_duration_ms(now),
        phase_count: usize::try_from(record.phase_count()).unwrap_or(usize::MAX),
        warning_count: record.warning_count,
        error_count: record.error_count,
        metadata: record.metadata.clone(),
    }
}

fn timeout_status_of(record: &ExecutionRecord, now: DateTime<Utc>) -> TimeoutStatus {
    let elapsed = record.duration(now).as_secs_f64();
    let timeout = record.timeout.as_secs_f64();
    TimeoutStatus {
        execution_id: record.execution_id,
        elapsed_seconds: elapsed,
        timeout_seconds: timeout,
        is_timed_out: record.is_timed_out(now),
        circuit_breaker_state: record.circuit_breaker_state,
        circuit_breaker_failures: record.circuit_breaker_failures,
        time_until_timeout: (timeout - elapsed).max(0.0),
    }
}
