//! What to create: the arguments of [`Tracker::create`](crate::Tracker::create).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::TimeoutConfig;
use crate::error::TrackerError;
use crate::event::Owner;
use crate::id::ExecutionId;
use crate::owners::Owners;
use crate::phase::Phase;
use crate::record::ExecutionRecord;
use crate::state::{BreakerState, ExecutionState};

/// The tenant of executions created without one.
pub const DEFAULT_TENANT: &str = "default";

/// What to create: see [`Tracker::create`](crate::Tracker::create).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewExecution {
    /// The agent that will run it.
    pub agent_name: String,
    /// The conversation thread.
    pub thread_id: String,
    /// The user it runs for.
    pub user_id: String,
    /// The owning tenant ([`DEFAULT_TENANT`] when `None`).
    pub tenant: Option<String>,
    /// The execution timeout; defaults to the timeout config's, then the tracker's.
    #[serde(default, with = "crate::serde_secs::opt")]
    pub timeout: Option<Duration>,
    /// Caller data.
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// Per-execution timeouts and breaker settings.
    pub timeout_config: Option<TimeoutConfig>,
    /// The state to start in (an alive one); `Pending` when `None`.
    pub initial_state: Option<ExecutionState>,
    /// The execution's own heartbeat timeout; the tracker's when `None`.
    #[serde(default, with = "crate::serde_secs::opt")]
    pub heartbeat_timeout: Option<Duration>,
}

impl NewExecution {
    /// An execution of `agent_name` for `user_id` in `thread_id`, with defaults for the rest.
    pub fn new(agent_name: impl Into<String>, thread_id: impl Into<String>, user_id: impl Into<String>) -> Self {
        Self {
            agent_name: agent_name.into(),
            thread_id: thread_id.into(),
            user_id: user_id.into(),
            ..Self::default()
        }
    }

    /// Sets the execution timeout.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the metadata.
    #[must_use]
    pub fn metadata(mut self, metadata: Map<String, Value>) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the tenant.
    #[must_use]
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Sets the execution's own heartbeat timeout (the tracker's otherwise).
    #[must_use]
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.heartbeat_timeout = Some(timeout);
        self
    }

    /// Sets per-execution timeouts and breaker settings.
    #[must_use]
    pub fn timeout_config(mut self, config: TimeoutConfig) -> Self {
        self.timeout_config = Some(config);
        self
    }

    /// The initial state and the execution timeout (the tracker's `default_timeout` unless
    /// given), after checking what was asked for.
    pub(crate) fn checked(&self, default_timeout: Duration) -> Result<(ExecutionState, Duration), TrackerError> {
        if self.agent_name.trim().is_empty() {
            return Err(TrackerError::InvalidInput {
                field: "agent_name",
                reason: "must not be empty".into(),
            });
        }
        let timeout = self
            .timeout
            .or(self.timeout_config.as_ref().map(|c| c.agent_execution_timeout))
            .unwrap_or(default_timeout);
        if timeout.is_zero() {
            return Err(TrackerError::InvalidInput {
                field: "timeout",
                reason: "must be greater than zero".into(),
            });
        }
        if self.heartbeat_timeout.is_some_and(|t| t.is_zero()) {
            return Err(TrackerError::InvalidInput {
                field: "heartbeat_timeout",
                reason: "must be greater than zero".into(),
            });
        }
        let state = self.initial_state.unwrap_or(ExecutionState::Pending);
        if state.is_terminal() {
            return Err(TrackerError::InvalidInput {
                field: "initial_state",
                reason: format!("{state} is terminal; valid initial states: pending, starting, running, completing"),
            });
        }
        Ok((state, timeout))
    }

    /// The record of the new execution `id`, created `now` in `state` (from
    /// [`NewExecution::checked`]), and whom it belongs to (interned in `owners`).
    pub(crate) fn into_record(
        self,
        id: ExecutionId,
        state: ExecutionState,
        timeout: Duration,
        now: DateTime<Utc>,
        owners: &Owners,
    ) -> (ExecutionRecord, Arc<Owner>) {
        let owner = owners.acquire(Owner {
            tenant: self.tenant.unwrap_or_else(|| DEFAULT_TENANT.to_owned()),
            user_id: self.user_id,
            thread_id: self.thread_id,
            agent_name: self.agent_name,
        });
        let record = ExecutionRecord {
            execution_id: id,
            tenant: owner.tenant.clone(),
            agent_name: owner.agent_name.clone(),
            thread_id: owner.thread_id.clone(),
            user_id: owner.user_id.clone(),
            state,
            current_phase: Phase::Created,
            started_at: now,
            last_heartbeat: now,
            updated_at: now,
            phase_entered_at: now,
            completed_at: None,
            error: None,
            result: None,
            heartbeat_count: 0,
            timeout,
            metadata: self.metadata,
            phase_history: Vec::new(),
            phase_history_dropped: 0,
            warning_count: 0,
            error_count: 0,
            timeout_config: self.timeout_config.map(Box::new),
            heartbeat_timeout: self.heartbeat_timeout,
            circuit_breaker_state: BreakerState::Closed,
            circuit_breaker_failures: 0,
            last_failure_time: None,
            next_attempt_time: None,
            seq: 0,
        };
        (record, owner)
    }
}
