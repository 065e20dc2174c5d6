//! Errors.

use std::time::Duration;

use crate::id::ExecutionId;
use crate::phase::Phase;
use crate::state::ExecutionState;

/// Why a tracker operation was refused. A refused operation changes nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TrackerError {
    /// No execution has this id (or it was already cleaned up).
    #[error("execution {execution_id} not found")]
    NotFound {
        /// The unknown id.
        execution_id: ExecutionId,
    },
    /// The execution has finished; terminal states are final.
    #[error("execution {execution_id} is already {state} (terminal states are final)")]
    Terminal {
        /// The execution.
        execution_id: ExecutionId,
        /// Its terminal state.
        state: ExecutionState,
    },
    /// The operation needs a finished execution, and this one is still alive.
    #[error("execution {execution_id} is still {state}; only finished executions can be cleaned up")]
    StillAlive {
        /// The execution.
        execution_id: ExecutionId,
        /// Its alive state.
        state: ExecutionState,
    },
    /// The lifecycle does not allow this state change.
    #[error("execution {execution_id} cannot go from {from} to {to}; allowed from {from}: {}", list(.allowed))]
    InvalidLifecycle {
        /// The execution.
        execution_id: ExecutionId,
        /// Its current state.
        from: ExecutionState,
        /// The refused state.
        to: ExecutionState,
        /// The states it may go to.
        allowed: Vec<ExecutionState>,
    },
    /// The phase rules do not allow this transition (strict validation).
    #[error("execution {execution_id} cannot go from phase {from} to {to}; allowed from {from}: {}", list(.allowed))]
    InvalidTransition {
        /// The execution.
        execution_id: ExecutionId,
        /// Its current phase.
        from: Phase,
        /// The refused phase.
        to: Phase,
        /// The phases it may go to.
        allowed: &'static [Phase],
    },
    /// A circuit breaker refused the call.
    #[error("circuit breaker {breaker} is open; retry after {:.3} s", .retry_after.as_secs_f64())]
    CircuitOpen {
        /// The breaker's name.
        breaker: String,
        /// How long until a call may be let through.
        retry_after: Duration,
    },
    /// A protected call overran its time limit.
    #[error("operation {operation} timed out after {:.3} s", .after.as_secs_f64())]
    Timeout {
        /// The operation's name.
        operation: String,
        /// The limit.
        after: Duration,
    },
    /// An argument was empty or out of range.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// Which argument.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none (final)".to_owned();
    }
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// The error of a protected call: the tracker's refusal or timeout, or the call's own error.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    /// The tracker refused or timed out the call.
    #[error(transparent)]
    Tracker(#[from] TrackerError),
    /// The call ran and failed.
    #[error("operation failed: {0}")]
    Operation(E),
}

impl<E> CallError<E> {
    /// Whether an open breaker refused the call (it never ran).
    pub fn is_circuit_open(&self) -> bool {
        matches!(self, Self::Tracker(TrackerError::CircuitOpen { .. }))
    }

    /// Whether the call overran its time limit.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Tracker(TrackerError::Timeout { .. }))
    }
}
