//! One execution's live state: its public record plus the monotonic times and breaker behind it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::breaker::BreakerCore;
use crate::config::TrackerConfig;
use crate::event::{EventScope, Owner};
use crate::record::ExecutionRecord;

#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) record: ExecutionRecord,
    pub(crate) owner: Arc<Owner>,
    /// When the execution timeout runs out. Kept as a due time rather than a start time so a
    /// record restored after a restart keeps its original deadline.
    pub(crate) execution_due: Duration,
    pub(crate) heartbeat_mono: Duration,
    pub(crate) completed_mono: Option<Duration>,
    /// The due time of this execution's one live deadline entry; other entries are stale.
    pub(crate) armed_at: Option<Duration>,
    /// Made by the first protected call or breaker change (see [`Calls`]).
    pub(crate) calls: Option<Box<Calls>>,
    pub(crate) cancel: Option<CancellationToken>,
}

/// One execution's protected calls: its breaker and the calls in flight.
///
/// Kept out of line and made on first use: most executions never make a protected call, and
/// until one does, its breaker is closed with no counts under the settings its record names —
/// nothing worth a hundred bytes in every slot.
#[derive(Debug)]
pub(crate) struct Calls {
    pub(crate) breaker: BreakerCore,
    pub(crate) in_flight: u32,
    /// When the latest of the calls in flight runs out of time.
    pub(crate) deadline: Duration,
}

impl Calls {
    pub(crate) fn new(breaker: BreakerCore) -> Self {
        Self {
            breaker,
            in_flight: 0,
            deadline: Duration::ZERO,
        }
    }
}

/// Why an alive execution's deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    TimedOut,
    Dead,
}

impl Slot {
    /// The slot of a just-created execution (`record`), its deadline computed from `mono`, now.
    pub(crate) fn created(record: ExecutionRecord, owner: Arc<Owner>, mono: Duration, config: &TrackerConfig) -> Self {
        let mut slot = Self {
            execution_due: mono + record.timeout,
            record,
            owner,
            heartbeat_mono: mono,
            completed_mono: None,
            armed_at: None,
            calls: None,
            cancel: None,
        };
        slot.armed_at = Some(slot.deadline(config));
        slot
    }

    pub(crate) fn execution_deadline(&self) -> Duration {
        self.execution_due
    }

    /// Changes the execution timeout, keeping it counted from the original start.
    pub(crate) fn set_timeout(&mut self, timeout: Duration) {
        self.execution_due = (self.execution_due + timeout).saturating_sub(self.record.timeout);
        self.record.timeout = timeout;
    }

    /// When the agent must next show a sign of life. A protected call in flight keeps the
    /// execution alive until the call's own timeout plus a grace: a slow LLM call is not a dead
    /// agent.
    pub(crate) fn liveness_deadline(&self, config: &TrackerConfig) -> Duration {
        let heartbeat = self.heartbeat_mono + self.record.heartbeat_timeout.unwrap_or(config.heartbeat_timeout);
        match &self.calls {
            Some(calls) if calls.in_flight > 0 => heartbeat.max(calls.deadline + config.call_grace),
            _ => heartbeat,
        }
    }

    pub(crate) fn deadline(&self, config: &TrackerConfig) -> Duration {
        self.execution_deadline().min(self.liveness_deadline(config))
    }

    /// Whether, at `mono`, the execution has overrun. Death is checked first, as the original
    /// did: an agent that stopped answering and also ran out of time is reported dead, the
    /// cause rather than the consequence.
    pub(crate) fn expiry(&self, config: &TrackerConfig, mono: Duration) -> Option<Expiry> {
        if self.record.is_terminal() {
            return None;
        }
        if mono > self.liveness_deadline(config) {
            Some(Expiry::Dead)
        } else if mono > self.execution_deadline() {
            Some(Expiry::TimedOut)
        } else {
            None
        }
    }

    /// The scope of this execution's next event; bumps its sequence number.
    pub(crate) fn next_scope(&mut self) -> EventScope {
        self.record.seq += 1;
        EventScope {
            execution_id: self.record.execution_id,
            seq: self.record.seq,
            owner: Arc::clone(&self.owner),
        }
    }
}
