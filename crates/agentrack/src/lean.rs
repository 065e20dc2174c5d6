//! The tracker's operations for callers that only need their effect, not the events back.
//!
//! Every mutating [`Tracker`] call returns the [`Change`](crate::Change) it made, with the
//! events that describe it, so a store can persist exactly those. Building an event costs more
//! than the change itself on the hottest paths (an allocation, and a clone of the metadata,
//! transition or result it carries): a heartbeat spends most of its time on it. An in-process
//! caller that ignores the `Change` — the Python drop-in, or an application that never
//! subscribes — pays for nothing it reads. [`Lean`] runs the same operations, with the same
//! rules, errors and effects, but builds events only when a sink or a subscriber will receive
//! them. Their sequence numbers advance either way, so a subscriber or store that arrives later
//! sees the same numbering; and with a sink set (as the server always has) every event is built.

use serde_json::{Map, Value};

use crate::error::TrackerError;
use crate::id::ExecutionId;
use crate::new_execution::NewExecution;
use crate::phase::Phase;
use crate::state::ExecutionState;
use crate::tracker::{NewId, StateUpdate, Tracker, Want};
use crate::views::AgentStateUpdate;

/// The tracker's mutating calls without their [`Change`](crate::Change): see
/// [`Tracker::lean`].
///
/// # Examples
///
/// ```
/// use agentrack::{EventFilter, NewExecution, Phase, Tracker};
///
/// let tracker = Tracker::new();
/// let lean = tracker.lean();
/// let id = lean.create(NewExecution::new("researcher", "thread-1", "user-1"))?;
/// lean.start(id)?;
/// lean.heartbeat(id)?;
/// assert!(lean.transition(id, Phase::WebsocketSetup, None)?); // allowed by the rules
/// lean.complete(id, Some(serde_json::json!("done")))?;
/// // Nobody listened, so no event was built; the numbering moved on all the same.
/// assert_eq!(tracker.last_seq(), 6);
/// assert_eq!(tracker.get(id)?.seq, 6);
/// # Ok::<(), agentrack::TrackerError>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Lean<'a> {
    tracker: &'a Tracker,
}

impl Tracker {
    /// The mutating calls for a caller that does not read their [`Change`](crate::Change):
    /// the same rules, errors and effects, with events built only for a sink or subscribers.
    pub fn lean(&self) -> Lean<'_> {
        Lean { tracker: self }
    }
}

impl Lean<'_> {
    /// As [`Tracker::create`]; returns the new execution's id.
    ///
    /// # Errors
    ///
    /// As [`Tracker::create`].
    pub fn create(&self, new: NewExecution) -> Result<ExecutionId, TrackerError> {
        Ok(self
            .tracker
            .create_with(NewId::Fresh, new, Want::IfObserved)?
            .execution_id)
    }

    /// As [`Tracker::start`].
    ///
    /// # Errors
    ///
    /// As [`Tracker::start`].
    pub fn start(&self, id: ExecutionId) -> Result<(), TrackerError> {
        self.tracker.start_with(id, Want::IfObserved).map(drop)
    }

    /// As [`Tracker::heartbeat`].
    ///
    /// # Errors
    ///
    /// As [`Tracker::heartbeat`].
    pub fn heartbeat(&self, id: ExecutionId) -> Result<(), TrackerError> {
        self.tracker.heartbeat_with(id, Want::IfObserved, 1).map(drop)
    }

    /// As [`Tracker::set_state`].
    ///
    /// # Errors
    ///
    /// As [`Tracker::set_state`].
    pub fn set_state(&self, id: ExecutionId, state: ExecutionState, update: StateUpdate) -> Result<(), TrackerError> {
        self.tracker
            .set_state_with(id, state, update, Want::IfObserved)
            .map(drop)
    }

    /// As [`Tracker::complete`].
    ///
    /// # Errors
    ///
    /// As [`Tracker::complete`].
    pub fn complete(&self, id: ExecutionId, result: Option<Value>) -> Result<(), TrackerError> {
        self.set_state(id, ExecutionState::Completed, StateUpdate { error: None, result })
    }

    /// As [`Tracker::fail`].
    ///
    /// # Errors
    ///
    /// As [`Tracker::fail`].
    pub fn fail(&self, id: ExecutionId, error: impl Into<String>) -> Result<(), TrackerError> {
        let update = StateUpdate {
            error: Some(error.into()),
            result: None,
        };
        self.set_state(id, ExecutionState::Failed, update)
    }

    /// As [`Tracker::cancel`].
    ///
    /// # Errors
    ///
    /// As [`Tracker::cancel`].
    pub fn cancel(&self, id: ExecutionId, reason: impl Into<String>) -> Result<(), TrackerError> {
        let update = StateUpdate {
            error: Some(reason.into()),
            result: None,
        };
        self.set_state(id, ExecutionState::Cancelled, update)
    }

    /// As [`Tracker::transition`]; returns whether the phase rules allow the transition
    /// (`false` only under lenient validation, where it happens all the same).
    ///
    /// # Errors
    ///
    /// As [`Tracker::transition`].
    pub fn transition(
        &self,
        id: ExecutionId,
        phase: Phase,
        metadata: Option<Map<String, Value>>,
    ) -> Result<bool, TrackerError> {
        Ok(self
            .tracker
            .transition_recorded(id, phase, metadata, Want::IfObserved, false)?
            .valid)
    }

    /// As [`Tracker::update_agent_state`].
    ///
    /// # Errors
    ///
    /// As [`Tracker::update_agent_state`].
    pub fn update_agent_state(&self, id: ExecutionId, update: AgentStateUpdate) -> Result<(), TrackerError> {
        self.tracker
            .update_agent_state_with(id, update, Want::IfObserved)
            .map(drop)
    }
}
