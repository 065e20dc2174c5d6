//! Typed events: the single record of every change.
//!
//! Each event carries a global sequence number (one order for the whole tracker) and, when it
//! belongs to an execution, that execution's own sequence number. Events are broadcast in global
//! order; a subscriber that falls behind is told how many it missed instead of growing memory.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_core::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::id::ExecutionId;
use crate::record::Transition;
use crate::state::{BreakerState, ExecutionState};

/// One change, as subscribers and stores see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the tracker-wide order, starting at 1.
    pub global_seq: u64,
    /// The execution this event is about; `None` for named breakers.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub execution: Option<EventScope>,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Which execution an event concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventScope {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Position in this execution's own order, starting at 1.
    pub seq: u64,
    /// Who owns it; shared by all of its events.
    #[serde(flatten)]
    pub owner: Arc<Owner>,
}

/// Who an execution belongs to: the keys that isolation and filtering use.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// Its tenant.
    pub tenant: String,
    /// Its user.
    pub user_id: String,
    /// Its thread.
    pub thread_id: String,
    /// Its agent.
    pub agent_name: String,
}

/// What happened; serialised with a `type` field in snake case.
///
/// Non-exhaustive: new kinds of event may be added without a breaking release, so a `match` on
/// it outside this crate needs a wildcard arm. Code that must decide what each kind means (a
/// mapping to another vocabulary, a counter) should still list every kind it knows explicitly
/// and check itself against [`EventKind::NAMES`] in a test, since the compiler no longer can.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A record was created.
    ExecutionCreated {
        /// Its execution timeout in seconds.
        timeout_seconds: f64,
        /// Caller-supplied data.
        metadata: Map<String, Value>,
    },
    /// A non-terminal lifecycle change (pending → starting → running → completing).
    StateChanged {
        /// Previous state.
        from: ExecutionState,
        /// New state.
        to: ExecutionState,
    },
    /// A heartbeat arrived.
    Heartbeat {
        /// Heartbeats so far.
        heartbeat_count: u64,
    },
    /// The execution's metadata or warning/error counters changed.
    AgentStateUpdated {
        /// Warnings so far.
        warning_count: u32,
        /// Errors so far.
        error_count: u32,
        /// The merged metadata.
        metadata: Map<String, Value>,
    },
    /// A phase change that the original did not notify (`created`, `websocket_setup`,
    /// `context_validation`).
    PhaseChanged {
        /// The transition.
        transition: Transition,
    },
    /// The agent started (phase `starting`).
    AgentStarted {
        /// The transition.
        transition: Transition,
        /// The transition's metadata.
        context: Value,
    },
    /// The agent is working (thinking, tool preparation, LLM interaction, result processing,
    /// completing).
    AgentThinking {
        /// The transition.
        transition: Transition,
        /// `metadata.reasoning`, or a description of the phase.
        reasoning: String,
        /// The number of transitions so far.
        step_number: u32,
    },
    /// A tool is running (phase `tool_execution`).
    ToolExecuting {
        /// The transition.
        transition: Transition,
        /// `metadata.tool_name`, or "unknown".
        tool_name: String,
        /// `metadata.parameters`, or `{}`.
        parameters: Value,
    },
    /// The agent finished its work (phase `completed`).
    AgentCompleted {
        /// The transition.
        transition: Transition,
        /// `metadata.result`, or null.
        result: Value,
        /// Milliseconds since the execution was created.
        execution_time_ms: u64,
    },
    /// The agent hit an error (phases `failed`, `timeout`, `circuit_breaker_open`).
    AgentError {
        /// The transition.
        transition: Transition,
        /// `metadata.error`, or a description of the phase.
        error: String,
        /// The transition's metadata.
        error_context: Value,
    },
    /// Terminal: finished successfully.
    ExecutionCompleted(Finished),
    /// Terminal: finished with an error.
    ExecutionFailed(Finished),
    /// Terminal: cancelled.
    ExecutionCancelled(Finished),
    /// Terminal: ran past its execution timeout.
    TimedOut(Finished),
    /// Terminal: stopped heartbeating.
    Dead(Finished),
    /// Fields of the record were overwritten directly ([`crate::Tracker::edit`]), bypassing the
    /// lifecycle and phase rules.
    RecordEdited {
        /// The names of the fields that changed, as in the record.
        fields: Vec<String>,
    },
    /// A breaker opened.
    BreakerOpened(BreakerChange),
    /// A breaker let trial calls through.
    BreakerHalfOpen(BreakerChange),
    /// A breaker closed.
    BreakerClosed(BreakerChange),
}

impl EventKind {
    /// Every kind's `type` string, in declaration order.
    pub const NAMES: &'static [&'static str] = &[
        "execution_created",
        "state_changed",
        "heartbeat",
        "agent_state_updated",
        "phase_changed",
        "agent_started",
        "agent_thinking",
        "tool_executing",
        "agent_completed",
        "agent_error",
        "execution_completed",
        "execution_failed",
        "execution_cancelled",
        "timed_out",
        "dead",
        "record_edited",
        "breaker_opened",
        "breaker_half_open",
        "breaker_closed",
    ];

    /// The `type` string, e.g. `agent_thinking`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ExecutionCreated { .. } => "execution_created",
            Self::StateChanged { .. } => "state_changed",
            Self::Heartbeat { .. } => "heartbeat",
            Self::AgentStateUpdated { .. } => "agent_state_updated",
            Self::PhaseChanged { .. } => "phase_changed",
            Self::AgentStarted { .. } => "agent_started",
            Self::AgentThinking { .. } => "agent_thinking",
            Self::ToolExecuting { .. } => "tool_executing",
            Self::AgentCompleted { .. } => "agent_completed",
            Self::AgentError { .. } => "agent_error",
            Self::ExecutionCompleted(_) => "execution_completed",
            Self::ExecutionFailed(_) => "execution_failed",
            Self::ExecutionCancelled(_) => "execution_cancelled",
            Self::TimedOut(_) => "timed_out",
            Self::Dead(_) => "dead",
            Self::RecordEdited { .. } => "record_edited",
            Self::BreakerOpened(_) => "breaker_opened",
            Self::BreakerHalfOpen(_) => "breaker_half_open",
            Self::BreakerClosed(_) => "breaker_closed",
        }
    }

    /// The finishing details, if this is an execution's (single) terminal event.
    pub fn finished(&self) -> Option<&Finished> {
        match self {
            Self::ExecutionCompleted(f)
            | Self::ExecutionFailed(f)
            | Self::ExecutionCancelled(f)
            | Self::TimedOut(f)
            | Self::Dead(f) => Some(f),
            _ => None,
        }
    }

    /// The phase transition, if this is a phase event.
    pub fn transition(&self) -> Option<&Transition> {
        match self {
            Self::PhaseChanged { transition }
            | Self::AgentStarted { transition, .. }
            | Self::AgentThinking { transition, .. }
            | Self::ToolExecuting { transition, .. }
            | Self::AgentCompleted { transition, .. }
            | Self::AgentError { transition, .. } => Some(transition),
            _ => None,
        }
    }
}

/// How an execution ended: carried by its one terminal event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    /// The state before.
    pub from: ExecutionState,
    /// The terminal state.
    pub state: ExecutionState,
    /// Why it ended, for anything but success.
    pub error: Option<String>,
    /// What it produced.
    pub result: Option<Value>,
    /// The latest sign of life before the end.
    pub last_heartbeat: DateTime<Utc>,
    /// Milliseconds from creation to the end.
    pub duration_ms: u64,
}

/// A breaker's state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerChange {
    /// The breaker's name (`execution:<id>` for a per-execution breaker).
    pub breaker: String,
    /// The new state.
    pub state: BreakerState,
    /// Consecutive failures counted.
    pub failures: u32,
    /// For an opened breaker: seconds until a trial call is allowed.
    pub retry_after_seconds: Option<f64>,
}

impl BreakerChange {
    pub(crate) fn new(breaker: String, state: BreakerState, failures: u32, retry_after: Option<Duration>) -> Self {
        Self {
            breaker,
            state,
            failures,
            retry_after_seconds: retry_after.map(|d| d.as_secs_f64()),
        }
    }

    pub(crate) fn into_kind(self) -> EventKind {
        match self.state {
            BreakerState::Open => EventKind::BreakerOpened(self),
            BreakerState::HalfOpen => EventKind::BreakerHalfOpen(self),
            BreakerState::Closed => EventKind::BreakerClosed(self),
        }
    }
}

/// Which events a subscriber wants; every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this tenant's executions (events without an execution never match).
    pub tenant: Option<String>,
    /// Only this user's executions.
    pub user_id: Option<String>,
    /// Only this thread's executions.
    pub thread_id: Option<String>,
    /// Only this execution.
    pub execution_id: Option<ExecutionId>,
}

impl EventFilter {
    /// Everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only this user's executions.
    pub fn user(user_id: impl Into<String>) -> Self {
        Self {
            user_id: Some(user_id.into()),
            ..Self::default()
        }
    }

    /// Only this thread's executions.
    pub fn thread(thread_id: impl Into<String>) -> Self {
        Self {
            thread_id: Some(thread_id.into()),
            ..Self::default()
        }
    }

    /// Whether `event` passes.
    pub fn matches(&self, event: &Event) -> bool {
        let unscoped =
            self.tenant.is_none() && self.user_id.is_none() && self.thread_id.is_none() && self.execution_id.is_none();
        let Some(scope) = &event.execution else {
            return unscoped;
        };
        let owner = &scope.owner;
        self.tenant.as_ref().is_none_or(|t| *t == owner.tenant)
            && self.user_id.as_ref().is_none_or(|u| *u == owner.user_id)
            && self.thread_id.as_ref().is_none_or(|t| *t == owner.thread_id)
            && self.execution_id.is_none_or(|id| id == scope.execution_id)
    }
}

/// A subscriber fell behind and `missed` events were dropped for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("subscriber lagged behind and missed {missed} events")]
pub struct Lagged {
    /// How many events were dropped.
    pub missed: u64,
}

/// A live stream of events, filtered; see [`Tracker::subscribe`](crate::Tracker::subscribe).
///
/// Yields `Err(Lagged)` when the subscriber fell behind the buffer, then continues with the
/// oldest event still buffered. Ends when the tracker is dropped.
pub struct EventStream {
    inner: BroadcastStream<Arc<Event>>,
    filter: EventFilter,
    /// The bus's count of live streams, which this one is part of until dropped.
    subscribers: Arc<AtomicUsize>,
}

impl EventStream {
    pub(crate) fn new(rx: broadcast::Receiver<Arc<Event>>, filter: EventFilter, subscribers: Arc<AtomicUsize>) -> Self {
        Self {
            inner: BroadcastStream::new(rx),
            filter,
            subscribers,
        }
    }

    /// The next matching event, `Err(Lagged)` if events were dropped, or `None` at the end.
    pub async fn recv(&mut self) -> Option<Result<Arc<Event>, Lagged>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for EventStream {
    type Item = Result<Arc<Event>, Lagged>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(event))) => {
                    if self.filter.matches(&event) {
                        return Poll::Ready(Some(Ok(event)));
                    }
                }
                Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(missed)))) => {
                    return Poll::Ready(Some(Err(Lagged { missed })));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        // Nothing reads from a stream being dropped, so its events need not be built any more.
        self.subscribers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_every_kind_the_type_knows() {
        // Meeting an unknown `type`, serde's derived deserializer lists every variant it knows:
        // a list of kinds that cannot miss one.
        let error = serde_json::from_value::<EventKind>(serde_json::json!({"type": "?"}))
            .unwrap_err()
            .to_string();
        let known: Vec<&str> = error.split('`').skip(3).step_by(2).collect();
        assert_eq!(EventKind::NAMES, known.as_slice(), "from {error:?}");
    }
}
