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
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::breaker::{Breaker, BreakerConfig, BreakerCore};
use crate::bus::EventBus;
use crate::clock::{Clock, SystemClock};
use crate::config::{TimeoutConfig, TrackerConfig};
use crate::deadlines::{DeadlineQueue, Ordered};
use crate::error::TrackerError;
use crate::event::{Event, EventFilter, EventKind, EventStream, Finished, Owner};
use crate::id::{ExecutionId, IdHash};
use crate::index::Index;
use crate::metrics::{Counters, Metrics};
use crate::new_execution::NewExecution;
use crate::notifier::NotifyError;
use crate::owners::Owners;
use crate::phase::{Phase, Validation};
use crate::record::{ExecutionRecord, Transition, millis};
use crate::slot::{Calls, Slot};
use crate::state::ExecutionState;

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

/// Whether a call's caller wants the events of its change back, or only their effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// Build every event and return it in the [`Change`].
    Events,
    /// Build events only for a sink or subscribers; the [`Change`] may come back without them.
    IfObserved,
}

/// The id of an execution to create.
#[derive(Debug, Clone, Copy)]
pub(crate) enum NewId {
    /// A new one, made by [`ExecutionId::new`].
    Fresh,
    /// One the caller chose ([`Tracker::create_as`]).
    Chosen(ExecutionId),
}

/// Optional error and result for [`Tracker::set_state`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateUpdate {
    /// Why it failed.
    pub error: Option<String>,
    /// What it produced (any JSON value, falsy ones included).
    pub result: Option<Value>,
}

pub(crate) type Callback =
    Arc<dyn Fn(ExecutionRecord) -> Pin<Box<dyn Future<Output = Result<(), NotifyError>> + Send>> + Send + Sync>;

#[derive(Default)]
pub(crate) struct Callbacks {
    pub(crate) dead: Vec<Callback>,
    pub(crate) timeout: Vec<Callback>,
}

/// Where the tracker's monotonic timeline starts (a century, far beyond any back-dating).
pub(crate) const TIMELINE_ORIGIN: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

pub(crate) struct Inner {
    pub(crate) config: TrackerConfig,
    /// The breaker settings of executions without their own, shared rather than copied.
    pub(crate) default_breaker: Arc<BreakerConfig>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) records: DashMap<ExecutionId, Arc<Mutex<Slot>>, IdHash>,
    pub(crate) by_agent: Index,
    pub(crate) by_thread: Index,
    pub(crate) by_user: Index,
    pub(crate) owners: Owners,
    pub(crate) deadlines: DeadlineQueue,
    /// Finished records by completion time, for purging by age or over the cap.
    pub(crate) finished: DeadlineQueue<Ordered>,
    pub(crate) finished_count: AtomicUsize,
    pub(crate) history: Mutex<VecDeque<ExecutionRecord>>,
    pub(crate) breakers: DashMap<String, Breaker>,
    pub(crate) counters: Counters,
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
                default_breaker: Arc::new(BreakerConfig::from(&config.timeout_config)),
                config,
                clock,
                records: DashMap::default(),
                by_agent: Index::default(),
                by_thread: Index::default(),
                by_user: Index::default(),
                owners: Owners::default(),
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

    /// Now on the tracker's monotonic timeline: the clock's monotonic time shifted by
    /// [`TIMELINE_ORIGIN`], so that times before the clock started — a back-dated edit, a
    /// restored record — stay representable.
    pub(crate) fn mono(&self) -> Duration {
        self.inner.clock.monotonic() + TIMELINE_ORIGIN
    }

    pub(crate) fn emit(&self, slot: &mut Slot, now: DateTime<Utc>, kind: EventKind) -> Arc<Event> {
        let scope = slot.next_scope();
        self.inner.bus.emit(Some(scope), now, kind)
    }

    /// Emits the event `kind` builds, or with [`Want::IfObserved`] and nobody to receive it
    /// (no sink, no subscriber) only numbers it: the sequence numbers move on exactly as if it
    /// had been built, so a later subscriber or store sees the same numbering.
    pub(crate) fn emit_when(
        &self,
        slot: &mut Slot,
        now: DateTime<Utc>,
        want: Want,
        kind: impl FnOnce(&Slot) -> EventKind,
    ) -> Option<Arc<Event>> {
        if want == Want::IfObserved && !self.inner.bus.observed() && self.inner.bus.skip() {
            slot.record.seq += 1;
            return None;
        }
        let kind = kind(slot);
        Some(self.emit(slot, now, kind))
    }

    /// Creates an execution in state `Pending` (or `initial_state`) and phase `Created`.
    ///
    /// # Errors
    ///
    /// [`TrackerError::InvalidInput`] for an empty agent name, a zero timeout or a terminal
    /// initial state.
    pub fn create(&self, new: NewExecution) -> Result<Change, TrackerError> {
        self.create_with(NewId::Fresh, new, Want::Events)
    }

    /// Like [`Tracker::create`], under an id the caller chose — a store that spreads executions
    /// over shards picks ids by where they land. Ids must never repeat (for a store: across all
    /// the trackers that share it); one this tracker holds is refused.
    ///
    /// # Errors
    ///
    /// As [`Tracker::create`], and [`TrackerError::InvalidInput`] for an id already held.
    ///
    /// # Examples
    ///
    /// ```
    /// use agentrack::{ExecutionId, NewExecution, Tracker};
    ///
    /// let tracker = Tracker::new();
    /// let id = ExecutionId::new();
    /// assert_eq!(tracker.create_as(id, NewExecution::new("a", "t", "u"))?.id(), id);
    /// assert!(tracker.create_as(id, NewExecution::new("a", "t", "u")).is_err());
    /// # Ok::<(), agentrack::TrackerError>(())
    /// ```
    pub fn create_as(&self, id: ExecutionId, new: NewExecution) -> Result<Change, TrackerError> {
        self.create_with(NewId::Chosen(id), new, Want::Events)
    }

    pub(crate) fn create_with(&self, id: NewId, new: NewExecution, want: Want) -> Result<Change, TrackerError> {
        let id = match id {
            // A fresh v7 id cannot be held already: no lookup on the common path.
            NewId::Fresh => ExecutionId::new(),
            NewId::Chosen(id) if self.inner.records.contains_key(&id) => {
                return Err(TrackerError::InvalidInput {
                    field: "execution_id",
                    reason: format!("{id} already exists"),
                });
            }
            NewId::Chosen(id) => id,
        };
        let (state, timeout) = new.checked(self.inner.config.execution_timeout)?;
        let now = self.inner.clock.now();
        let mono = self.mono();
        let (record, owner) = new.into_record(id, state, timeout, now, &self.inner.owners);
        let slot = Slot::created(record, owner, mono, &self.inner.config);
        let events = self.publish(slot, now, want).into_iter().collect();
        Ok(Change {
            execution_id: id,
            events,
        })
    }

    /// The breaker settings of an execution with timeout config `custom`: its own, or the
    /// tracker's shared defaults.
    pub(crate) fn breaker_config(&self, custom: Option<&TimeoutConfig>) -> Arc<BreakerConfig> {
        match custom {
            Some(custom) => Arc::new(BreakerConfig::from(custom)),
            None => Arc::clone(&self.inner.default_breaker),
        }
    }

    /// The slot's protected calls, made with a closed breaker under the settings its record
    /// names if it has none yet.
    pub(crate) fn calls<'s>(&self, slot: &'s mut Slot) -> &'s mut Calls {
        let Slot { calls, record, .. } = slot;
        calls.get_or_insert_with(|| {
            Box::new(Calls::new(BreakerCore::new(
                self.breaker_config(record.timeout_config.as_deref()),
            )))
        })
    }

    /// The slot's breaker status (a closed breaker's, if no call made one yet).
    pub(crate) fn breaker_status_of(&self, slot: &Slot, mono: Duration) -> crate::breaker::BreakerStatus {
        let name = slot.record.execution_id.breaker_name();
        match &slot.calls {
            Some(calls) => calls.breaker.status(name, mono),
            None => BreakerCore::new(self.breaker_config(slot.record.timeout_config.as_deref())).status(name, mono),
        }
    }

    /// Makes a new execution's slot visible — indexes, counters, deadline — and
    /// emits its creation event.
    fn publish(&self, slot: Slot, now: DateTime<Utc>, want: Want) -> Option<Arc<Event>> {
        let id = slot.record.execution_id;
        let owner = Arc::clone(&slot.owner);
        let due = slot.armed_at;
        let slot = Arc::new(Mutex::new(slot));
        // Indexes first, then the record: a reader may briefly see an id it cannot resolve
        // (and skips it), never a record missing from an index.
        self.inner.by_agent.insert(&owner.agent_name, id);
        self.inner.by_thread.insert(&owner.thread_id, id);
        self.inner.by_user.insert(&owner.user_id, id);
        self.inner.counters.created();
        // Hold the record's lock while publishing it, so its creation event is its first.
        let mut guard = slot.lock();
        self.inner.records.insert(id, Arc::clone(&slot));
        if let Some(due) = due {
            self.inner.deadlines.arm(id, due);
        }
        self.emit_when(&mut guard, now, want, |slot| EventKind::ExecutionCreated {
            timeout_seconds: slot.record.timeout.as_secs_f64(),
            metadata: slot.record.metadata.clone(),
        })
    }

    /// Moves a `Pending` execution to `Starting`.
    ///
    /// # Errors
    ///
    /// `NotFound`, `Terminal`, or `InvalidLifecycle` from any state but `Pending`.
    pub fn start(&self, id: ExecutionId) -> Result<Change, TrackerError> {
        self.start_with(id, Want::Events)
    }

    pub(crate) fn start_with(&self, id: ExecutionId, want: Want) -> Result<Change, TrackerError> {
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
        let mono = self.mono();
        slot.record.state = ExecutionState::Starting;
        touch(&mut slot, now, mono);
        let event = self.emit_when(&mut slot, now, want, |_| EventKind::StateChanged {
            from,
            to: ExecutionState::Starting,
        });
        Ok(Change {
            execution_id: id,
            events: event.into_iter().collect(),
        })
    }

    /// Records a sign of life; a `Starting` execution becomes `Running`. O(1), no global lock.
    ///
    /// # Errors
    ///
    /// `NotFound` or `Terminal`.
    pub fn heartbeat(&self, id: ExecutionId) -> Result<Change, TrackerError> {
        self.heartbeat_with(id, Want::Events, 1)
    }

    /// Records `count` heartbeats that arrived together (a client's batch): one sign of life,
    /// counted `count` times, with one `Heartbeat` event carrying the new count.
    ///
    /// # Errors
    ///
    /// `NotFound` or `Terminal`.
    ///
    /// # Examples
    ///
    /// ```
    /// use agentrack::{NewExecution, Tracker};
    ///
    /// let tracker = Tracker::new();
    /// let id = tracker.create(NewExecution::new("researcher", "thread-1", "user-1"))?.id();
    /// tracker.start(id)?;
    /// tracker.heartbeats(id, 40)?;
    /// assert_eq!(tracker.get(id)?.heartbeat_count, 40);
    /// # Ok::<(), agentrack::TrackerError>(())
    /// ```
    pub fn heartbeats(&self, id: ExecutionId, count: u32) -> Result<Change, TrackerError> {
        self.heartbeat_with(id, Want::Events, count)
    }

    pub(crate) fn heartbeat_with(&self, id: ExecutionId, want: Want, count: u32) -> Result<Change, TrackerError> {
        let slot = self.slot(id)?;
        let mut slot = slot.lock();
        let from = ensure_alive(&slot)?;
        let now = self.inner.clock.now();
        let mono = self.mono();
        touch(&mut slot, now, mono);
        slot.record.heartbeat_count += u64::from(count);
        let mut events = Vec::new();
        if from == ExecutionState::Starting {
            slot.record.state = ExecutionState::Running;
            events.extend(self.emit_when(&mut slot, now, want, |_| EventKind::StateChanged {
                from,
                to: ExecutionState::Running,
            }));
        }
        events.extend(self.emit_when(&mut slot, now, want, |slot| EventKind::Heartbeat {
            heartbeat_count: slot.record.heartbeat_count,
        }));
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
        self.set_state_with(id, state, update, Want::Events)
    }

    pub(crate) fn set_state_with(
        &self,
        id: ExecutionId,
        state: ExecutionState,
        update: StateUpdate,
        want: Want,
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
            let mono = self.mono();
            touch(&mut slot, now, mono);
            if let Some(error) = update.error {
                slot.record.error = Some(error);
            }
            if let Some(result) = update.result {
                slot.record.result = Some(result);
            }
            let event = if state.is_terminal() {
                self.finish(&mut slot, state, now, mono, want)
            } else {
                slot.record.state = state;
                self.emit_when(&mut slot, now, want, |_| EventKind::StateChanged { from, to: state })
            };
            Change {
                execution_id: id,
                events: event.into_iter().collect(),
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
        want: Want,
    ) -> Option<Arc<Event>> {
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
        self.inner.counters.finished(state);
        self.inner.finished_count.fetch_add(1, Ordering::Relaxed);
        self.inner.finished.arm(id, mono);
        self.emit_when(slot, now, want, |slot| {
            let finished = Finished {
                from,
                state,
                error: slot.record.error.clone(),
                result: slot.record.result.clone(),
                last_heartbeat: slot.record.last_heartbeat,
                duration_ms: millis(now - slot.record.started_at),
            };
            match state {
                ExecutionState::Completed => EventKind::ExecutionCompleted(finished),
                ExecutionState::Timeout => EventKind::TimedOut(finished),
                ExecutionState::Dead => EventKind::Dead(finished),
                ExecutionState::Cancelled => EventKind::ExecutionCancelled(finished),
                _ => EventKind::ExecutionFailed(finished),
            }
        })
    }

    /// A snapshot of one execution.
    ///
    /// # Errors
    ///
    /// `NotFound`.
    pub fn get(&self, id: ExecutionId) -> Result<ExecutionRecord, TrackerError> {
        Ok(self.slot(id)?.lock().record.clone())
    }

    /// Whom one execution belongs to (tenant, user, thread, agent), without copying its record:
    /// for access checks on hot paths such as heartbeats.
    ///
    /// # Errors
    ///
    /// `NotFound`.
    pub fn owner(&self, id: ExecutionId) -> Result<Arc<Owner>, TrackerError> {
        Ok(Arc::clone(&self.slot(id)?.lock().owner))
    }

    /// One execution's state and phase, without copying its record.
    ///
    /// # Errors
    ///
    /// `NotFound`.
    pub fn state_and_phase(&self, id: ExecutionId) -> Result<(ExecutionState, Phase), TrackerError> {
        let slot = self.slot(id)?;
        let slot = slot.lock();
        Ok((slot.record.state, slot.record.current_phase))
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
        let mut alive: Vec<ExecutionRecord> = self
            .handles()
            .iter()
            .filter_map(|slot| {
                let slot = slot.lock();
                slot.record.is_alive().then(|| slot.record.clone())
            })
            .collect();
        alive.sort_unstable_by_key(|record| record.execution_id);
        alive
    }

    /// Every record's handle, taken first so that no map shard stays locked while the records
    /// are read. Listing the alive ones this way needs no set of alive ids kept on every create
    /// and finish: a scan reads each record once, where the set cost an insert and a removal per
    /// execution and a hash lookup per listed record.
    fn handles(&self) -> Vec<Arc<Mutex<Slot>>> {
        self.inner
            .records
            .iter()
            .map(|entry| Arc::clone(entry.value()))
            .collect()
    }

    /// How many executions are alive.
    pub fn active_count(&self) -> usize {
        self.inner.counters.alive()
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

    /// Calls `f` with every record in memory, in no particular order, without copying them: for
    /// summaries over many records. Each call holds that record's lock, so `f` must not call
    /// back into the tracker; records created or removed meanwhile may or may not be seen.
    ///
    /// ```
    /// use agentrack::{NewExecution, Tracker};
    ///
    /// let tracker = Tracker::new();
    /// for user in ["alice", "bob", "alice"] {
    ///     tracker.create(NewExecution::new("researcher", "thread", user))?;
    /// }
    /// let mut alices = 0;
    /// tracker.visit(|record| alices += usize::from(record.user_id == "alice"));
    /// assert_eq!(alices, 2);
    /// # Ok::<(), agentrack::TrackerError>(())
    /// ```
    pub fn visit(&self, mut f: impl FnMut(&ExecutionRecord)) {
        // Handles first, so no map shard stays locked while `f` runs.
        for slot in self.handles() {
            f(&slot.lock().record);
        }
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
        let mono = self.mono();
        let mut expired: Vec<ExecutionRecord> = self
            .handles()
            .iter()
            .filter_map(|slot| {
                let slot = slot.lock();
                slot.expiry(&self.inner.config, mono).map(|_| slot.record.clone())
            })
            .collect();
        expired.sort_unstable_by_key(|record| record.execution_id);
        expired
    }

    /// The counters.
    pub fn metrics(&self) -> Metrics {
        self.inner.counters.snapshot()
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

    /// Whether the named breaker `name` exists (without creating it).
    pub fn has_breaker(&self, name: &str) -> bool {
        self.inner.breakers.contains_key(name)
    }

    /// Drops the named breaker `name` if it is closed and nobody holds it (no permit, no handle
    /// from [`Tracker::breaker`]): its next use starts a fresh, closed breaker. Returns whether
    /// it was dropped. A server bounding its callers' breakers evicts idle ones with this.
    pub fn remove_unused_breaker(&self, name: &str) -> bool {
        self.inner
            .breakers
            .remove_if(name, |_, breaker| breaker.is_unused())
            .is_some()
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
}

pub(crate) fn ensure_alive(slot: &Slot) -> Result<ExecutionState, TrackerError> {
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
