//! The tracker: executions, their lifecycle, phases and queries.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::breaker::{Breaker, BreakerConfig, BreakerCore};
use crate::bus::EventBus;
use crate::clock::{Clock, SystemClock};
use crate::config::{TimeoutConfig, TrackerConfig};
use crate::deadlines::DeadlineQueue;
use crate::error::TrackerError;
use crate::event::{Event, EventFilter, EventKind, EventStream, Finished, Owner};
use crate::id::ExecutionId;
use crate::index::Index;
use crate::metrics::{Counters, Metrics};
use crate::notifier::{Notifier, NotifyError};
use crate::phase::{Phase, Validation};
use crate::record::{ExecutionRecord, Transition, millis};
use crate::slot::Slot;
use crate::state::{BreakerState, ExecutionState};

/// The tenant of executions created without one.
pub const DEFAULT_TENANT: &str = "default";

/// What to create: see [`Tracker::create`].
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
    #[serde(default, with = "opt_secs")]
    pub timeout: Option<Duration>,
    /// Caller data.
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// Per-execution timeouts and breaker settings.
    pub timeout_config: Option<TimeoutConfig>,
    /// The state to start in (an alive one); `Pending` when `None`.
    pub initial_state: Option<ExecutionState>,
}

mod opt_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => serializer.serialize_some(&d.as_secs_f64()),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(deserializer)?
            .map(|secs| Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom))
            .transpose()
    }
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
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the metadata.
    pub fn metadata(mut self, metadata: Map<String, Value>) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the tenant.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Sets per-execution timeouts and breaker settings.
    pub fn timeout_config(mut self, config: TimeoutConfig) -> Self {
        self.timeout_config = Some(config);
        self
    }
}

/// What a mutating call changed: the execution and the events that describe the change, in
/// order, already broadcast. A store persists exactly these.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The execution changed.
    pub execution_id: ExecutionId,
    /// The events emitted.
    pub events: Vec<Arc<Event>>,
}

impl Change {
    /// The execution changed.
    pub fn id(&self) -> ExecutionId {
        self.execution_id
    }

    /// The phase transition, if the change was one.
    pub fn transition(&self) -> Option<&Transition> {
        self.events.iter().find_map(|event| event.kind.transition())
    }
}

/// Optional error and result for [`Tracker::set_state`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateUpdate {
    /// Why it failed.
    pub error: Option<String>,
    /// What it produced (any JSON value, falsy ones included).
    pub result: Option<Value>,
}

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
    pub circuit_breaker_status: crate::breaker::BreakerStatus,
}

pub(crate) type Callback =
    Arc<dyn Fn(ExecutionRecord) -> Pin<Box<dyn Future<Output = Result<(), NotifyError>> + Send>> + Send + Sync>;

#[derive(Default)]
pub(crate) struct Callbacks {
    pub(crate) dead: Vec<Callback>,
    pub(crate) timeout: Vec<Callback>,
}

pub(crate) struct Inner {
    pub(crate) config: TrackerConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) records: DashMap<ExecutionId, Arc<Mutex<Slot>>>,
    by_agent: Index,
    by_thread: Index,
    by_user: Index,
    active: DashMap<ExecutionId, ()>,
    pub(crate) deadlines: DeadlineQueue,
    /// Finished records by completion time, for purging by age or over the cap.
    pub(crate) finished: DeadlineQueue,
    finished_count: AtomicUsize,
    history: Mutex<VecDeque<ExecutionRecord>>,
    breakers: DashMap<String, Breaker>,
    counters: Counters,
    pub(crate) bus: Arc<EventBus>,
    pub(crate) callbacks: RwLock<Callbacks>,
}

/// Tracks agent executions: lifecycle, phases, heartbeats, deadlines, breakers and events.
///
/// Cheap to clone (a handle to shared state) and safe to use from many threads at once: each
/// record has its own short lock, counters are atomics, and no operation takes a global lock
/// except the event bus's few-instruction numbering.
///
/// # Examples
///
/// ```
/// use agentrack::{NewExecution, Phase, ExecutionState, Tracker};
///
/// let tracker = Tracker::new();
/// let id = tracker.create(NewExecution::new("researcher", "thread-1", "user-1"))?.id();
/// tracker.start(id)?;
/// tracker.heartbeat(id)?;
/// tracker.transition(id, Phase::WebsocketSetup, None)?;
/// tracker.complete(id, Some(serde_json::json!({"answer": 42})))?;
/// assert_eq!(tracker.get(id)?.state, ExecutionState::Completed);
/// # Ok::<(), agentrack::TrackerError>(())
/// ```
#[derive(Clone)]
pub struct Tracker {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("records", &self.inner.records.len())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Default for Tracker {
    fn default() -> Self {
        Self::new()
    }
}

impl Tracker {
    /// A tracker with default settings and the system clock.
    pub fn new() -> Self {
        Self::with_config(TrackerConfig::default())
    }

    /// A tracker with these settings and the system clock.
    pub fn with_config(config: TrackerConfig) -> Self {
        Self::with_clock(config, Arc::new(SystemClock::new()))
    }

    /// A tracker with these settings and clock (a [`ManualClock`](crate::ManualClock) in tests).
    pub fn with_clock(config: TrackerConfig, clock: Arc<dyn Clock>) -> Self {
        let bus = Arc::new(EventBus::new(config.event_buffer));
        Self {
            inner: Arc::new(Inner {
                config,
                clock,
                records: DashMap::new(),
                by_agent: Index::default(),
                by_thread: Index::default(),
                by_user: Index::default(),
                active: DashMap::new(),
                deadlines: DeadlineQueue::new(),
                finished: DeadlineQueue::new(),
                finished_count: AtomicUsize::new(0),
                history: Mutex::new(VecDeque::new()),
                breakers: DashMap::new(),
                counters: Counters::default(),
                bus,
                callbacks: RwLock::new(Callbacks::default()),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &TrackerConfig {
        &self.inner.config
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The execution timeout given to records created without one.
    pub fn default_timeout(&self) -> Duration {
        self.inner.config.execution_timeout
    }

    pub(crate) fn slot(&self, id: ExecutionId) -> Result<Arc<Mutex<Slot>>, TrackerError> {
        self.inner
            .records
            .get(&id)
            .map(|slot| Arc::clone(slot.value()))
            .ok_or(TrackerError::NotFound { execution_id: id })
    }

    fn emit(&self, slot: &mut Slot, now: DateTime<Utc>, kind: EventKind) -> Arc<Event> {
        let scope = slot.next_scope();
        self.inner.bus.emit(Some(scope), now, kind)
    }

    /// Creates an execution in state `Pending` (or `initial_state`) and phase `Created`.
    ///
    /// # Errors
    ///
    /// [`TrackerError::InvalidInput`] for an empty agent name, a zero timeout or a terminal
    /// initial state.
    pub fn create(&self, new: NewExecution) -> Result<Change, TrackerError> {
        let config = &self.inner.config;
        if new.agent_name.trim().is_empty() {
            return Err(TrackerError::InvalidInput {
                field: "agent_name",
                reason: "must not be empty".into(),
            });
        }
        let timeout = new
            .timeout
            .or(new.timeout_config.map(|c| c.agent_execution_timeout))
            .unwrap_or(config.execution_timeout);
        if timeout.is_zero() {
            return Err(TrackerError::InvalidInput {
                field: "timeout",
                reason: "must be greater than zero".into(),
            });
        }
        let state = new.initial_state.unwrap_or(ExecutionState::Pending);
        if state.is_terminal() {
            return Err(TrackerError::InvalidInput {
                field: "initial_state",
                reason: format!("{state} is terminal; valid initial states: pending, starting, running, completing"),
            });
        }
        let id = ExecutionId::new();
        let now = self.inner.clock.now();
        let mono = self.inner.clock.monotonic();
        let owner = Arc::new(Owner {
            tenant: new.tenant.unwrap_or_else(|| DEFAULT_TENANT.to_owned()),
            user_id: new.user_id,
            thread_id: new.thread_id,
            agent_name: new.agent_name,
        });
        let breaker_config = BreakerConfig::from(new.timeout_config.as_ref().unwrap_or(&config.timeout_config));
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
            metadata: new.metadata,
            phase_history: Vec::new(),
            warning_count: 0,
            error_count: 0,
            timeout_config: new.timeout_config,
            circuit_breaker_state: BreakerState::Closed,
            circuit_breaker_failures: 0,
            last_failure_time: None,
            next_attempt_time: None,
            seq: 0,
        };
        let mut slot = Slot {
            record,
            owner: Arc::clone(&owner),
            created_mono: mono,
            heartbeat_mono: mono,
            completed_mono: None,
            armed_at: None,
            calls_in_flight: 0,
            call_deadline: Duration::ZERO,
            breaker: BreakerCore::new(breaker_config),
            cancel: None,
        };
        let due = slot.deadline(config);
        slot.armed_at = Some(due);
        let slot = Arc::new(Mutex::new(slot));
        // Indexes first, then the record: a reader may briefly see an id it cannot resolve
        // (and skips it), never a record missing from an index.
        self.inner.by_agent.insert(&owner.agent_name, id);
        self.inner.by_thread.insert(&owner.thread_id, id);
        self.inner.by_user.insert(&owner.user_id, id);
        self.inner.active.insert(id, ());
        self.inner.counters.created();
        // Hold the record's lock while publishing it, so its creation event is its first.
        let mut guard = slot.lock();
        self.inner.records.insert(id, Arc::clone(&slot));
        self.inner.deadlines.arm(id, due);
        let kind = EventKind::ExecutionCreated {
            timeout_seconds: timeout.as_secs_f64(),
            metadata: guard.record.metadata.clone(),
        };
        let event = self.emit(&mut guard, now, kind);
        Ok(Change {
            execution_id: id,
            events: vec![event],
        })
    }

    /// Moves a `Pending` execution to `Starting`.
    ///
    /// # Errors
    ///
    /// `NotFound`, `Terminal`, or `InvalidLifecycle` from any state but `Pending`.
    pub fn start(&self, id: ExecutionId) -> Result<Change, TrackerError> {
        let slot = self.slot(id)?;
        let mut slot = slot.lock();
        let from = ensure_alive(&slot)?;
        if from != ExecutionState::Pending {
            return Err(TrackerError::InvalidLifecycle {
                execution_id: id,
                from,
                to: ExecutionState::Starting,
                allowed: from.allowed_next(),
            });
        }
        let now = self.inner.clock.now();
        let mono = self.inner.clock.monotonic();
        slot.record.state = ExecutionState::Starting;
        touch(&mut slot, now, mono);
        let event = self.emit(
            &mut slot,
            now,
            EventKind::StateChanged {
                from,
                to: ExecutionState::Starting,
            },
        );
        Ok(Change {
            execution_id: id,
            events: vec![event],
        })
    }

    /// Records a sign of life; a `Starting` execution becomes `Running`. O(1), no global lock.
    ///
    /// # Errors
    ///
    /// `NotFound` or `Terminal`.
    pub fn heartbeat(&self, id: ExecutionId) -> Result<Change, TrackerError> {
        let slot = self.slot(id)?;
        let mut slot = slot.lock();
        let from = ensure_alive(&slot)?;
        let now = self.inner.clock.now();
        let mono = self.inner.clock.monotonic();
        touch(&mut slot, now, mono);
        slot.record.heartbeat_count += 1;
        let mut events = Vec::with_capacity(2);
        if from == ExecutionState::Starting {
            slot.record.state = ExecutionState::Running;
            events.push(self.emit(
                &mut slot,
                now,
                EventKind::StateChanged {
                    from,
                    to: ExecutionState::Running,
                },
            ));
        }
        let heartbeat_count = slot.record.heartbeat_count;
        events.push(self.emit(&mut slot, now, EventKind::Heartbeat { heartbeat_count }));
        Ok(Change {
            execution_id: id,
            events,
        })
    }

    /// Sets the lifecycle state, with an optional error and result.
    ///
    /// Under strict lifecycle validation (the default) a state may only move forward
    /// (pending → starting → running → completing) or to a terminal state; under lenient
    /// validation any alive state may become any state, as in the original.
    ///
    /// # Errors
    ///
    /// `NotFound`, `Terminal` (terminal states are final), or `InvalidLifecycle`.
    pub fn set_state(
        &self,
        id: ExecutionId,
        state: ExecutionState,
        update: StateUpdate,
    ) -> Result<Change, TrackerError> {
        let change = {
            let slot = self.slot(id)?;
            let mut slot = slot.lock();
            let from = ensure_alive(&slot)?;
            if self.inner.config.lifecycle_validation == Validation::Strict && !from.can_become(state) {
                return Err(TrackerError::InvalidLifecycle {
                    execution_id: id,
                    from,
                    to: state,
                    allowed: from.allowed_next(),
                });
            }
            let now = self.inner.clock.now();
            let mono = self.inner.clock.monotonic();
            touch(&mut slot, now, mono);
            if let Some(error) = update.error {
                slot.record.error = Some(error);
            }
            if let Some(result) = update.result {
                slot.record.result = Some(result);
            }
            let event = if state.is_terminal() {
                self.finish(&mut slot, state, now, mono)
            } else {
                slot.record.state = state;
                self.emit(&mut slot, now, EventKind::StateChanged { from, to: state })
            };
            Change {
                execution_id: id,
                events: vec![event],
            }
        };
        self.enforce_finished_cap();
        Ok(change)
    }

    /// Completes an execution with an optional result.
    ///
    /// # Errors
    ///
    /// As [`Tracker::set_state`].
    pub fn complete(&self, id: ExecutionId, result: Option<Value>) -> Result<Change, TrackerError> {
        self.set_state(id, ExecutionState::Completed, StateUpdate { error: None, result })
    }

    /// Fails an execution with an error message.
    ///
    /// # Errors
    ///
    /// As [`Tracker::set_state`].
    pub fn fail(&self, id: ExecutionId, error: impl Into<String>) -> Result<Change, TrackerError> {
        self.set_state(
            id,
            ExecutionState::Failed,
            StateUpdate {
                error: Some(error.into()),
                result: None,
            },
        )
    }

    /// Cancels an execution; whoever runs it learns through [`Tracker::cancellation`].
    ///
    /// # Errors
    ///
    /// As [`Tracker::set_state`].
    pub fn cancel(&self, id: ExecutionId, reason: impl Into<String>) -> Result<Change, TrackerError> {
        self.set_state(
            id,
            ExecutionState::Cancelled,
            StateUpdate {
                error: Some(reason.into()),
                result: None,
            },
        )
    }

    /// Makes `slot` terminal and emits its one terminal event. The caller holds its lock.
    pub(crate) fn finish(
        &self,
        slot: &mut Slot,
        state: ExecutionState,
        now: DateTime<Utc>,
        mono: Duration,
    ) -> Arc<Event> {
        let from = slot.record.state;
        let id = slot.record.execution_id;
        slot.record.state = state;
        slot.record.completed_at = Some(now);
        slot.record.updated_at = now;
        slot.completed_mono = Some(mono);
        slot.armed_at = None;
        if let Some(token) = &slot.cancel {
            token.cancel();
        }
        self.inner.active.remove(&id);
        self.inner.counters.finished(state);
        self.inner.finished_count.fetch_add(1, Ordering::Relaxed);
        self.inner.finished.arm(id, mono);
        let finished = Finished {
            from,
            state,
            error: slot.record.error.clone(),
            result: slot.record.result.clone(),
            last_heartbeat: slot.record.last_heartbeat,
            duration_ms: millis(now - slot.record.started_at),
        };
        let kind = match state {
            ExecutionState::Completed => EventKind::ExecutionCompleted(finished),
            ExecutionState::Timeout => EventKind::TimedOut(finished),
            ExecutionState::Dead => EventKind::Dead(finished),
            ExecutionState::Cancelled => EventKind::ExecutionCancelled(finished),
            _ => EventKind::ExecutionFailed(finished),
        };
        self.emit(slot, now, kind)
    }

    /// Changes the phase, records the transition (with the time spent in the phase left) and
    /// emits the matching event (`agent_started`, `agent_thinking`, `tool_executing`,
    /// `agent_completed`, `agent_error`, or `phase_changed`). Counts as a sign of life.
    ///
    /// Under strict phase validation (the default) a transition the rules forbid, or one on a
    /// finished execution, is refused; under lenient validation it happens and is flagged
    /// `valid: false`.
    ///
    /// # Errors
    ///
    /// `NotFound`, `Terminal` or `InvalidTransition` (strict only).
    pub fn transition(
        &self,
        id: ExecutionId,
        phase: Phase,
        metadata: Option<Map<String, Value>>,
    ) -> Result<Change, TrackerError> {
        let recorded = self.transition_recorded(id, phase, metadata)?;
        Ok(Change {
            execution_id: id,
            events: vec![recorded.event],
        })
    }

    fn transition_recorded(
        &self,
        id: ExecutionId,
        phase: Phase,
        metadata: Option<Map<String, Value>>,
    ) -> Result<Recorded, TrackerError> {
        let slot = self.slot(id)?;
        let mut slot = slot.lock();
        let strict = self.inner.config.phase_validation == Validation::Strict;
        if strict {
            ensure_alive(&slot)?;
        }
        let from = slot.record.current_phase;
        let valid = from.can_transition_to(phase);
        if strict && !valid {
            return Err(TrackerError::InvalidTransition {
                execution_id: id,
                from,
                to: phase,
                allowed: from.allowed_next(),
            });
        }
        if !valid {
            tracing::warn!(execution_id = %id, %from, to = %phase, "phase transition outside the rules (lenient validation)");
        }
        let now = self.inner.clock.now();
        let mono = self.inner.clock.monotonic();
        let transition = Transition {
            from_phase: from,
            to_phase: phase,
            timestamp: now,
            duration_ms: millis(now - slot.record.phase_entered_at),
            metadata: metadata.unwrap_or_default(),
            websocket_event_sent: false,
            valid,
        };
        slot.record.phase_history.push(transition.clone());
        slot.record.current_phase = phase;
        slot.record.phase_entered_at = now;
        if slot.record.is_alive() {
            touch(&mut slot, now, mono);
        }
        let step_number = u32::try_from(slot.record.phase_history.len()).unwrap_or(u32::MAX);
        let execution_time_ms = millis(now - slot.record.started_at);
        let kind = phase_event(transition, step_number, execution_time_ms);
        let event = self.emit(&mut slot, now, kind);
        Ok(Recorded {
            event,
            history_position: slot.record.phase_history.len() - 1,
        })
    }

    /// Like [`Tracker::transition`], then hands the notification to `notifier`, as the original
    /// did with its WebSocket manager. A failing notifier is logged; the transition stands with
    /// `websocket_event_sent = false`. Returns the transition as stored.
    ///
    /// # Errors
    ///
    /// As [`Tracker::transition`].
    pub async fn transition_notify<N: Notifier>(
        &self,
        id: ExecutionId,
        phase: Phase,
        metadata: Option<Map<String, Value>>,
        notifier: &N,
    ) -> Result<Transition, TrackerError> {
        let change = self.transition_recorded(id, phase, metadata)?;
        let event = &change.event;
        let Some(mut transition) = event.kind.transition().cloned() else {
            return Err(TrackerError::NotFound { execution_id: id });
        };
        let owner = event.execution.as_ref().map(|scope| Arc::clone(&scope.owner));
        let (run_id, agent) = owner
            .as_deref()
            .map(|o| (o.thread_id.as_str(), o.agent_name.as_str()))
            .unwrap_or_default();
        let sent = match &event.kind {
            EventKind::AgentStarted { context, .. } => Some(notifier.agent_started(run_id, agent, context).await),
            EventKind::AgentThinking {
                reasoning, step_number, ..
            } => Some(notifier.agent_thinking(run_id, agent, reasoning, *step_number).await),
            EventKind::ToolExecuting {
                tool_name, parameters, ..
            } => Some(notifier.tool_executing(run_id, agent, tool_name, parameters).await),
            EventKind::AgentCompleted {
                result,
                execution_time_ms,
                ..
            } => Some(
                notifier
                    .agent_completed(run_id, agent, result, *execution_time_ms)
                    .await,
            ),
            EventKind::AgentError {
                error, error_context, ..
            } => Some(notifier.agent_error(run_id, agent, error, error_context).await),
            _ => None,
        };
        match sent {
            Some(Ok(())) => {
                transition.websocket_event_sent = true;
                // History only grows while the record lives, so the position is stable.
                let position = change.history_position;
                if let Ok(slot) = self.slot(id) {
                    if let Some(stored) = slot.lock().record.phase_history.get_mut(position) {
                        stored.websocket_event_sent = true;
                    }
                }
            }
            Some(Err(error)) => {
                tracing::warn!(execution_id = %id, %phase, %error, "notifier failed; transition kept with websocket_event_sent = false");
            }
            None => {}
        }
        Ok(transition)
    }

    /// A snapshot of one execution.
    ///
    /// # Errors
    ///
    /// `NotFound`.
    pub fn get(&self, id: ExecutionId) -> Result<ExecutionRecord, TrackerError> {
        Ok(self.slot(id)?.lock().record.clone())
    }

    /// One execution's state.
    ///
    /// # Errors
    ///
    /// `NotFound`.
    pub fn state(&self, id: ExecutionId) -> Result<ExecutionState, TrackerError> {
        Ok(self.slot(id)?.lock().record.state)
    }

    /// One execution's phase transitions, oldest first.
    ///
    /// # Errors
    ///
    /// `NotFound`.
    pub fn phase_history(&self, id: ExecutionId) -> Result<Vec<Transition>, TrackerError> {
        Ok(self.slot(id)?.lock().record.phase_history.clone())
    }

    fn snapshots(&self, ids: Vec<ExecutionId>) -> Vec<ExecutionRecord> {
        ids.into_iter().filter_map(|id| self.get(id).ok()).collect()
    }

    /// Alive executions, oldest first.
    pub fn active(&self) -> Vec<ExecutionRecord> {
        let mut ids: Vec<ExecutionId> = self.inner.active.iter().map(|entry| *entry.key()).collect();
        ids.sort_unstable();
        self.snapshots(ids)
    }

    /// How many executions are alive.
    pub fn active_count(&self) -> usize {
        self.inner.active.len()
    }

    /// How many records (alive and finished) are in memory.
    pub fn len(&self) -> usize {
        self.inner.records.len()
    }

    /// Whether no record is in memory.
    pub fn is_empty(&self) -> bool {
        self.inner.records.is_empty()
    }

    /// Every record in memory, oldest first.
    pub fn all(&self) -> Vec<ExecutionRecord> {
        let mut ids: Vec<ExecutionId> = self.inner.records.iter().map(|entry| *entry.key()).collect();
        ids.sort_unstable();
        self.snapshots(ids)
    }

    /// The executions of one agent, oldest first.
    pub fn by_agent(&self, agent_name: &str) -> Vec<ExecutionRecord> {
        self.snapshots(self.inner.by_agent.get(agent_name))
    }

    /// The executions of one thread, oldest first.
    pub fn by_thread(&self, thread_id: &str) -> Vec<ExecutionRecord> {
        self.snapshots(self.inner.by_thread.get(thread_id))
    }

    /// The executions of one user, oldest first.
    pub fn by_user(&self, user_id: &str) -> Vec<ExecutionRecord> {
        self.snapshots(self.inner.by_user.get(user_id))
    }

    /// Alive executions whose heartbeat gap or execution timeout has passed and that the monitor
    /// has not yet marked. Reports only; changes nothing.
    pub fn detect_dead(&self) -> Vec<ExecutionRecord> {
        let mono = self.inner.clock.monotonic();
        let mut ids: Vec<ExecutionId> = self.inner.active.iter().map(|entry| *entry.key()).collect();
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|id| {
                let slot = self.slot(id).ok()?;
                let slot = slot.lock();
                slot.expiry(&self.inner.config, mono).map(|_| slot.record.clone())
            })
            .collect()
    }

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
        let kind = EventKind::AgentStateUpdated {
            warning_count: record.warning_count,
            error_count: record.error_count,
            metadata: record.metadata.clone(),
        };
        let event = self.emit(&mut slot, now, kind);
        Ok(Change {
            execution_id: id,
            events: vec![event],
        })
    }

    /// Gives one execution its own timeouts and breaker settings; its execution timeout becomes
    /// `config.agent_execution_timeout`.
    ///
    /// # Errors
    ///
    /// `NotFound`, `Terminal`, or `InvalidInput` for a zero execution timeout.
    pub fn set_timeout_config(&self, id: ExecutionId, config: TimeoutConfig) -> Result<(), TrackerError> {
        if config.agent_execution_timeout.is_zero() {
            return Err(TrackerError::InvalidInput {
                field: "agent_execution_timeout",
                reason: "must be greater than zero".into(),
            });
        }
        let slot = self.slot(id)?;
        let mut slot = slot.lock();
        ensure_alive(&slot)?;
        slot.record.timeout_config = Some(config);
        slot.record.timeout = config.agent_execution_timeout;
        slot.breaker.config = BreakerConfig::from(&config);
        self.rearm(&mut slot);
        Ok(())
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
        let mono = self.inner.clock.monotonic();
        let slot = self.slot(id)?;
        let slot = slot.lock();
        let record = slot.record.clone();
        Ok(ExecutionContext {
            state_info: agent_state_of(&record, now),
            timeout_status: timeout_status_of(&record, now),
            circuit_breaker_status: slot.breaker.status(breaker_name(id), mono),
            record,
        })
    }

    /// The counters.
    pub fn metrics(&self) -> Metrics {
        self.inner.counters.snapshot()
    }

    /// Removes a finished execution from memory and every index, keeping it in the completed
    /// history (capped at `history_cap`). Returns the record.
    ///
    /// # Errors
    ///
    /// `NotFound`, or `StillAlive`.
    pub fn cleanup(&self, id: ExecutionId) -> Result<ExecutionRecord, TrackerError> {
        let state = self.state(id)?;
        if state.is_alive() {
            return Err(TrackerError::StillAlive { execution_id: id, state });
        }
        let record = self
            .remove_finished(id)
            .ok_or(TrackerError::NotFound { execution_id: id })?;
        let mut history = self.inner.history.lock();
        history.push_back(record.clone());
        while history.len() > self.inner.config.history_cap {
            history.pop_front();
        }
        Ok(record)
    }

    /// Records removed by [`Tracker::cleanup`], oldest first.
    pub fn completed_history(&self) -> Vec<ExecutionRecord> {
        self.inner.history.lock().iter().cloned().collect()
    }

    /// Drops finished records that completed more than `age` ago. Returns how many.
    pub fn purge_finished(&self, age: Duration) -> usize {
        let Some(cutoff) = self.inner.clock.monotonic().checked_sub(age) else {
            return 0;
        };
        self.inner
            .finished
            .pop_due(cutoff)
            .into_iter()
            .filter(|(_, id)| self.remove_finished(*id).is_some())
            .count()
    }

    /// Removes a terminal record from the map and the indexes.
    pub(crate) fn remove_finished(&self, id: ExecutionId) -> Option<ExecutionRecord> {
        let (_, slot) = self
            .inner
            .records
            .remove_if(&id, |_, slot| slot.lock().record.is_terminal())?;
        let record = slot.lock().record.clone();
        self.inner.by_agent.remove(&record.agent_name, id);
        self.inner.by_thread.remove(&record.thread_id, id);
        self.inner.by_user.remove(&record.user_id, id);
        self.inner.finished_count.fetch_sub(1, Ordering::Relaxed);
        Some(record)
    }

    fn enforce_finished_cap(&self) {
        while self.inner.finished_count.load(Ordering::Relaxed) > self.inner.config.max_finished {
            match self.inner.finished.pop_earliest() {
                Some((_, id)) => {
                    self.remove_finished(id);
                }
                None => break,
            }
        }
    }

    pub(crate) fn enforce_cap_after_sweep(&self) {
        self.enforce_finished_cap();
    }

    /// A token that is cancelled when the execution ends for any reason (completed, failed,
    /// timed out, declared dead, cancelled): whoever runs the execution can stop its work.
    ///
    /// # Errors
    ///
    /// `NotFound`.
    pub fn cancellation(&self, id: ExecutionId) -> Result<CancellationToken, TrackerError> {
        let slot = self.slot(id)?;
        let mut slot = slot.lock();
        let token = slot.cancel.get_or_insert_with(CancellationToken::new).clone();
        if slot.record.is_terminal() {
            token.cancel();
        }
        Ok(token)
    }

    /// A live stream of the events that pass `filter`.
    pub fn subscribe(&self, filter: EventFilter) -> EventStream {
        self.inner.bus.subscribe(filter)
    }

    /// Installs the sink that receives every event synchronously, in global order, before any
    /// subscriber — the hook for a store that must persist every change, including those the
    /// monitor makes. It runs under the bus's ordering lock, so it must be quick (e.g. a send
    /// on an unbounded channel). Returns false if a sink was already installed.
    pub fn set_sink(&self, sink: impl Fn(&Arc<Event>) + Send + Sync + 'static) -> bool {
        self.inner.bus.set_sink(Box::new(sink))
    }

    /// Continues global event numbering after `last_global_seq` (e.g. the last one a store
    /// holds), so numbers stay unique across restarts.
    pub fn resume_sequence(&self, last_global_seq: u64) {
        self.inner.bus.resume_after(last_global_seq);
    }

    /// Brings back a record from a store after a restart, without emitting events. An alive
    /// record gets one full heartbeat window of grace from now before it can be declared dead;
    /// its execution timeout still counts from its original start.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if a record with the same id is already tracked.
    pub fn restore(&self, record: ExecutionRecord) -> Result<(), TrackerError> {
        let id = record.execution_id;
        if self.inner.records.contains_key(&id) {
            return Err(TrackerError::InvalidInput {
                field: "execution_id",
                reason: format!("{id} is already tracked"),
            });
        }
        let now = self.inner.clock.now();
        let mono = self.inner.clock.monotonic();
        let ago = |then: DateTime<Utc>| mono.saturating_sub((now - then).to_std().unwrap_or_default());
        let config = &self.inner.config;
        let breaker = BreakerCore::restored(
            BreakerConfig::from(record.timeout_config.as_ref().unwrap_or(&config.timeout_config)),
            record.circuit_breaker_state,
            record.circuit_breaker_failures,
            record.last_failure_time,
            record.next_attempt_time,
            mono,
            now,
        );
        let owner = Arc::new(Owner {
            tenant: record.tenant.clone(),
            user_id: record.user_id.clone(),
            thread_id: record.thread_id.clone(),
            agent_name: record.agent_name.clone(),
        });
        let state = record.state;
        let mut slot = Slot {
            created_mono: ago(record.started_at),
            heartbeat_mono: mono,
            completed_mono: record.completed_at.map(ago),
            armed_at: None,
            calls_in_flight: 0,
            call_deadline: Duration::ZERO,
            breaker,
            cancel: None,
            owner: Arc::clone(&owner),
            record,
        };
        self.inner.by_agent.insert(&owner.agent_name, id);
        self.inner.by_thread.insert(&owner.thread_id, id);
        self.inner.by_user.insert(&owner.user_id, id);
        if state.is_alive() {
            self.inner.active.insert(id, ());
            self.inner.counters.created();
            self.rearm(&mut slot);
        } else {
            self.inner.counters.restored(state);
            self.inner.finished_count.fetch_add(1, Ordering::Relaxed);
            self.inner.finished.arm(id, slot.completed_mono.unwrap_or(mono));
        }
        self.inner.records.insert(id, Arc::new(Mutex::new(slot)));
        self.enforce_finished_cap();
        Ok(())
    }

    /// The global sequence number of the latest event (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.inner.bus.last_seq()
    }

    /// The breaker named `name` (e.g. `"openai:gpt-4o"`), created with the tracker's default
    /// timeout config on first use. Every caller of the same name shares it.
    pub fn breaker(&self, name: &str) -> Breaker {
        self.breaker_with(name, BreakerConfig::from(&self.inner.config.timeout_config))
    }

    /// The breaker named `name`, created with `config` if it does not exist yet.
    pub fn breaker_with(&self, name: &str, config: BreakerConfig) -> Breaker {
        if let Some(breaker) = self.inner.breakers.get(name) {
            return breaker.clone();
        }
        self.inner
            .breakers
            .entry(name.to_owned())
            .or_insert_with(|| {
                Breaker::new(
                    name.to_owned(),
                    config,
                    Arc::clone(&self.inner.clock),
                    Arc::clone(&self.inner.bus),
                )
            })
            .clone()
    }

    /// Every named breaker's status, by name.
    pub fn breakers(&self) -> Vec<crate::breaker::BreakerStatus> {
        let mut all: Vec<_> = self.inner.breakers.iter().map(|entry| entry.value().status()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Registers an async callback run by the monitor for each execution it declares dead.
    pub fn on_dead<F, Fut>(&self, callback: F)
    where
        F: Fn(ExecutionRecord) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), NotifyError>> + Send + 'static,
    {
        self.inner
            .callbacks
            .write()
            .dead
            .push(Arc::new(move |record| Box::pin(callback(record))));
    }

    /// Registers an async callback run by the monitor for each execution it times out.
    pub fn on_timeout<F, Fut>(&self, callback: F)
    where
        F: Fn(ExecutionRecord) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), NotifyError>> + Send + 'static,
    {
        self.inner
            .callbacks
            .write()
            .timeout
            .push(Arc::new(move |record| Box::pin(callback(record))));
    }

    /// Checks the indexes, active set and counters against the records; returns what is wrong.
    /// For tests and debugging: it walks everything.
    pub fn check_consistency(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let records = self.all();
        let by_id: std::collections::HashMap<ExecutionId, &ExecutionRecord> =
            records.iter().map(|r| (r.execution_id, r)).collect();
        for (name, index, key) in [
            (
                "agent",
                &self.inner.by_agent,
                (|r: &ExecutionRecord| r.agent_name.clone()) as fn(&ExecutionRecord) -> String,
            ),
            ("thread", &self.inner.by_thread, |r: &ExecutionRecord| {
                r.thread_id.clone()
            }),
            ("user", &self.inner.by_user, |r: &ExecutionRecord| r.user_id.clone()),
        ] {
            let entries = index.entries();
            if entries.len() != records.len() {
                problems.push(format!(
                    "{name} index has {} entries for {} records",
                    entries.len(),
                    records.len()
                ));
            }
            for (k, id) in entries {
                match by_id.get(&id) {
                    None => problems.push(format!("{name} index entry {k} → {id} has no record")),
                    Some(record) if key(record) != k => {
                        problems.push(format!("{name} index entry {k} → {id} has the wrong key"))
                    }
                    Some(_) => {}
                }
            }
        }
        let alive: Vec<ExecutionId> = records
            .iter()
            .filter(|r| r.is_alive())
            .map(|r| r.execution_id)
            .collect();
        if alive.len() != self.inner.active.len() || alive.iter().any(|id| !self.inner.active.contains_key(id)) {
            problems.push(format!(
                "active set has {} ids for {} alive records",
                self.inner.active.len(),
                alive.len()
            ));
        }
        let metrics = self.metrics();
        if metrics.active_executions != alive.len() as u64 {
            problems.push(format!(
                "active counter {} for {} alive records",
                metrics.active_executions,
                alive.len()
            ));
        }
        let finished = records.len() - alive.len();
        if self.inner.finished_count.load(Ordering::Relaxed) != finished {
            problems.push(format!(
                "finished counter {} for {finished} finished records",
                self.inner.finished_count.load(Ordering::Relaxed)
            ));
        }
        let sum = metrics.active_executions
            + metrics.successful_executions
            + metrics.failed_executions
            + metrics.timeout_executions
            + metrics.dead_executions
            + metrics.cancelled_executions;
        if sum != metrics.total_executions {
            problems.push(format!("metrics sum to {sum}, total is {}", metrics.total_executions));
        }
        problems
    }
}

/// A transition's event and its position in the phase history.
struct Recorded {
    event: Arc<Event>,
    history_position: usize,
}

pub(crate) fn breaker_name(id: ExecutionId) -> String {
    format!("execution:{id}")
}

fn ensure_alive(slot: &Slot) -> Result<ExecutionState, TrackerError> {
    let state = slot.record.state;
    if state.is_terminal() {
        return Err(TrackerError::Terminal {
            execution_id: slot.record.execution_id,
            state,
        });
    }
    Ok(state)
}

/// Records a sign of life without counting a heartbeat.
pub(crate) fn touch(slot: &mut Slot, now: DateTime<Utc>, mono: Duration) {
    slot.record.last_heartbeat = now;
    slot.record.updated_at = now;
    slot.heartbeat_mono = mono;
}

fn phase_event(transition: Transition, step_number: u32, execution_time_ms: u64) -> EventKind {
    let metadata = &transition.metadata;
    let text = |key: &str| metadata.get(key).and_then(Value::as_str).map(str::to_owned);
    let phase = transition.to_phase;
    match phase.notification_kind() {
        None => EventKind::PhaseChanged { transition },
        Some(kind) => match kind {
            crate::phase::NotificationKind::AgentStarted => EventKind::AgentStarted {
                context: Value::Object(metadata.clone()),
                transition,
            },
            crate::phase::NotificationKind::AgentThinking => EventKind::AgentThinking {
                reasoning: text("reasoning").unwrap_or_else(|| format!("Agent is in phase {phase}")),
                step_number,
                transition,
            },
            crate::phase::NotificationKind::ToolExecuting => EventKind::ToolExecuting {
                tool_name: text("tool_name").unwrap_or_else(|| "unknown".to_owned()),
                parameters: metadata
                    .get("parameters")
                    .cloned()
                    .unwrap_or_else(|| Value::Object(Map::new())),
                transition,
            },
            crate::phase::NotificationKind::AgentCompleted => EventKind::AgentCompleted {
                result: metadata.get("result").cloned().unwrap_or(Value::Null),
                execution_time_ms,
                transition,
            },
            crate::phase::NotificationKind::AgentError => EventKind::AgentError {
                error: text("error").unwrap_or_else(|| format!("Agent entered phase {phase}")),
                error_context: Value::Object(metadata.clone()),
                transition,
            },
        },
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
        phase_count: record.phase_history.len(),
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
