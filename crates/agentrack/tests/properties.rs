//! Properties: random sequences of operations over a small pool of executions, on a manual clock,
//! under strict and lenient validation, checked after every step against a reference model and
//! against the invariants that must always hold:
//!
//! - terminal states are final: a finished record's state, end time, error, result and heartbeats
//!   never change, and it receives exactly one terminal event;
//! - a rejected operation changes nothing (records, counters, history, event numbering);
//! - the active set is exactly the alive records, the counters add up, the indexes agree;
//! - every event reaches a subscriber, numbered without gaps, globally and per execution.

#![allow(clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use agentrack::{
    Event, EventFilter, EventStream, ExecutionId, ExecutionRecord, ExecutionState, ManualClock, Metrics, NewExecution,
    Phase, StateUpdate, Tracker, TrackerConfig, TrackerError, Validation,
};
use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};

use common::{GOLDEN_PATH, drain};

const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);
const EXECUTION_TIMEOUT: Duration = Duration::from_secs(30);
const CLEANUP_AGE: Duration = Duration::from_secs(15);
const MAX_FINISHED: usize = 4;
const USERS: [&str; 3] = ["alice", "bob", "carol"];

fn wall_origin() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
        .single()
        .expect("a valid date")
}

#[derive(Debug, Clone)]
enum Op {
    Create {
        timeout_secs: Option<u64>,
        user: usize,
    },
    Start(usize),
    Heartbeat(usize),
    SetState(usize, ExecutionState),
    /// Any phase, mostly one the rules forbid.
    Transition(usize, Phase),
    /// A phase the rules allow from the current one, so that executions get deep into the path.
    NextPhase(usize, usize),
    Complete(usize),
    Fail(usize),
    Cancel(usize),
    Cleanup(usize),
    /// A direct edit of the state (`Tracker::edit`), which bypasses the lifecycle rules but
    /// not finality.
    EditState(usize, ExecutionState),
    Advance(u64),
    Sweep,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (proptest::option::of(prop::sample::select(vec![5u64, 20, 60])), 0..USERS.len())
            .prop_map(|(timeout_secs, user)| Op::Create { timeout_secs, user }),
        2 => any::<usize>().prop_map(Op::Start),
        3 => any::<usize>().prop_map(Op::Heartbeat),
        2 => (any::<usize>(), prop::sample::select(ExecutionState::ALL)).prop_map(|(i, s)| Op::SetState(i, s)),
        1 => (any::<usize>(), prop::sample::select(Phase::ALL)).prop_map(|(i, p)| Op::Transition(i, p)),
        4 => (any::<usize>(), any::<usize>()).prop_map(|(i, p)| Op::NextPhase(i, p)),
        1 => any::<usize>().prop_map(Op::Complete),
        1 => any::<usize>().prop_map(Op::Fail),
        1 => any::<usize>().prop_map(Op::Cancel),
        2 => any::<usize>().prop_map(Op::Cleanup),
        2 => (any::<usize>(), prop::sample::select(ExecutionState::ALL)).prop_map(|(i, s)| Op::EditState(i, s)),
        // Whole seconds too, so that deadlines are often hit exactly (the boundary cases).
        2 => (0u64..12_000).prop_map(Op::Advance),
        2 => prop::sample::select(vec![1_000u64, 5_000, 10_000]).prop_map(Op::Advance),
        2 => Just(Op::Sweep),
    ]
}

/// Why the model expects an operation to be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    NotFound,
    Terminal,
    InvalidLifecycle,
    InvalidTransition,
    StillAlive,
    /// An edit of a finished execution's state.
    StateIsFinal,
}

fn refusal_of(error: &TrackerError) -> Refusal {
    match error {
        TrackerError::NotFound { .. } => Refusal::NotFound,
        TrackerError::Terminal { .. } => Refusal::Terminal,
        TrackerError::InvalidLifecycle { .. } => Refusal::InvalidLifecycle,
        TrackerError::InvalidTransition { .. } => Refusal::InvalidTransition,
        TrackerError::StillAlive { .. } => Refusal::StillAlive,
        TrackerError::InvalidInput { field: "state", .. } => Refusal::StateIsFinal,
        other => panic!("unexpected error: {other}"),
    }
}

/// The model's verdict on an operation.
type Prediction = Result<(), Refusal>;
/// The tracker's: the events an accepted operation returned, or why it refused.
type Answer = Result<Vec<Arc<Event>>, TrackerError>;

/// The model of one execution.
#[derive(Debug, Clone)]
struct Model {
    state: ExecutionState,
    phase: Phase,
    heartbeats: u64,
    transitions: usize,
    created: Duration,
    last_heartbeat: Duration,
    timeout: Duration,
    /// Events emitted so far.
    seq: u64,
    completed: Option<Duration>,
    /// The error, or for the monitor's, the start of it.
    error: Option<String>,
    result: Option<Value>,
    present: bool,
    user: usize,
}

impl Model {
    fn deadline(&self) -> Duration {
        (self.created + self.timeout).min(self.last_heartbeat + HEARTBEAT_TIMEOUT)
    }

    fn expiry(&self, now: Duration) -> Option<ExecutionState> {
        if !self.state.is_alive() {
            None
        } else if now > self.last_heartbeat + HEARTBEAT_TIMEOUT {
            Some(ExecutionState::Dead)
        } else if now > self.created + self.timeout {
            Some(ExecutionState::Timeout)
        } else {
            None
        }
    }
}

/// What a finished record must keep forever.
#[derive(Debug, Clone, PartialEq)]
struct Frozen {
    state: ExecutionState,
    completed_at: Option<DateTime<Utc>>,
    error: Option<String>,
    result: Option<Value>,
    heartbeat_count: u64,
    last_heartbeat: DateTime<Utc>,
    started_at: DateTime<Utc>,
}

impl Frozen {
    fn of(record: &ExecutionRecord) -> Self {
        Self {
            state: record.state,
            completed_at: record.completed_at,
            error: record.error.clone(),
            result: record.result.clone(),
            heartbeat_count: record.heartbeat_count,
            last_heartbeat: record.last_heartbeat,
            started_at: record.started_at,
        }
    }
}

struct Harness {
    phase_validation: Validation,
    lifecycle_validation: Validation,
    clock: ManualClock,
    tracker: Tracker,
    events: EventStream,
    now: Duration,
    /// Every id ever created, in creation order; operations pick from these.
    ids: Vec<ExecutionId>,
    models: HashMap<ExecutionId, Model>,
    metrics: Metrics,
    cleaned_up: usize,
    /// From the event stream: the last global seq, each execution's last seq, which have ended.
    last_global: u64,
    last_seq: HashMap<ExecutionId, u64>,
    terminal_event_seen: HashSet<ExecutionId>,
    frozen: HashMap<ExecutionId, Frozen>,
    step: u64,
    /// How many executions the latest sweep ended.
    swept: usize,
}

impl Harness {
    fn new(phase_validation: Validation, lifecycle_validation: Validation) -> Self {
        let clock = ManualClock::starting_at(wall_origin());
        let tracker = Tracker::with_clock(
            TrackerConfig {
                heartbeat_timeout: HEARTBEAT_TIMEOUT,
                execution_timeout: EXECUTION_TIMEOUT,
                cleanup_age: CLEANUP_AGE,
                max_finished: MAX_FINISHED,
                history_cap: 100,
                phase_validation,
                lifecycle_validation,
                event_buffer: 1024,
                ..TrackerConfig::default()
            },
            Arc::new(clock.clone()),
        );
        let events = tracker.subscribe(EventFilter::all());
        Self {
            phase_validation,
            lifecycle_validation,
            clock,
            tracker,
            events,
            now: Duration::ZERO,
            ids: Vec::new(),
            models: HashMap::new(),
            metrics: Metrics {
                total_executions: 0,
                active_executions: 0,
                successful_executions: 0,
                failed_executions: 0,
                timeout_executions: 0,
                dead_executions: 0,
                cancelled_executions: 0,
                success_rate: 0.0,
                failure_rate: 0.0,
            },
            cleaned_up: 0,
            last_global: 0,
            last_seq: HashMap::new(),
            terminal_event_seen: HashSet::new(),
            frozen: HashMap::new(),
            step: 0,
            swept: 0,
        }
    }

    fn wall(mono: Duration) -> DateTime<Utc> {
        wall_origin() + mono
    }

    /// The id an operation targets: one ever created (alive, finished or gone), or an unknown one.
    fn target(&self, index: usize) -> ExecutionId {
        if self.ids.is_empty() {
            ExecutionId::new()
        } else {
            self.ids[index % self.ids.len()]
        }
    }

    /// The model's verdict on touching `id` at all: gone records are not found.
    fn present(&self, id: ExecutionId) -> Result<&Model, Refusal> {
        self.models.get(&id).filter(|m| m.present).ok_or(Refusal::NotFound)
    }

    fn alive(&self, id: ExecutionId) -> Result<&Model, Refusal> {
        let model = self.present(id)?;
        if model.state.is_terminal() {
            return Err(Refusal::Terminal);
        }
        Ok(model)
    }

    fn model(&mut self, id: ExecutionId) -> &mut Model {
        self.models.get_mut(&id).expect("modelled execution")
    }

    fn count_finished(&mut self, state: ExecutionState) {
        self.metrics.active_executions -= 1;
        match state {
            ExecutionState::Completed => self.metrics.successful_executions += 1,
            ExecutionState::Failed => self.metrics.failed_executions += 1,
            ExecutionState::Timeout => self.metrics.timeout_executions += 1,
            ExecutionState::Dead => self.metrics.dead_executions += 1,
            ExecutionState::Cancelled => self.metrics.cancelled_executions += 1,
            alive => panic!("{alive} is not terminal"),
        }
    }

    /// The model's side of a lifecycle move that the model has accepted.
    fn model_set_state(
        &mut self,
        id: ExecutionId,
        state: ExecutionState,
        error: Option<String>,
        result: Option<Value>,
    ) {
        let now = self.now;
        let model = self.model(id);
        model.last_heartbeat = now;
        model.seq += 1;
        if error.is_some() {
            model.error = error;
        }
        if result.is_some() {
            model.result = result;
        }
        model.state = state;
        if state.is_terminal() {
            model.completed = Some(now);
            self.count_finished(state);
            self.enforce_cap();
        }
    }

    /// While more than `MAX_FINISHED` finished records are in memory, the earliest finished goes.
    fn enforce_cap(&mut self) {
        loop {
            let finished: BTreeSet<(Duration, ExecutionId)> = self
                .models
                .iter()
                .filter(|(_, m)| m.present && m.state.is_terminal())
                .map(|(id, m)| (m.completed.expect("finished"), *id))
                .collect();
            if finished.len() <= MAX_FINISHED {
                return;
            }
            let (_, oldest) = *finished.first().expect("non-empty");
            self.model(oldest).present = false;
        }
    }

    /// Checks what an accepted call returned and what the subscriber got: the same events.
    fn accepted(events: &[Arc<Event>], drained: &[Arc<Event>], id: ExecutionId) {
        assert_eq!(events.len(), drained.len(), "events returned vs. events broadcast");
        for (returned, broadcast) in events.iter().zip(drained) {
            assert_eq!(returned, broadcast);
            assert_eq!(returned.execution.as_ref().map(|s| s.execution_id), Some(id));
        }
    }

    /// The model's prediction for `op`, then the tracker's answer.
    fn apply(&mut self, op: &Op, before_all: &[ExecutionRecord]) -> (Prediction, Answer) {
        let strict_lifecycle = self.lifecycle_validation == Validation::Strict;
        match op {
            Op::Create { timeout_secs, user } => self.create(*timeout_secs, *user),
            Op::Start(index) => {
                let id = self.target(*index);
                let expected = self.alive(id).and_then(|m| {
                    if m.state == ExecutionState::Pending {
                        Ok(())
                    } else {
                        Err(Refusal::InvalidLifecycle)
                    }
                });
                if expected.is_ok() {
                    self.model_set_state(id, ExecutionState::Starting, None, None);
                }
                (expected, self.tracker.start(id).map(|c| c.events))
            }
            Op::Heartbeat(index) => {
                let id = self.target(*index);
                let expected = self.alive(id).map(|_| ());
                if expected.is_ok() {
                    let now = self.now;
                    let model = self.model(id);
                    model.heartbeats += 1;
                    model.last_heartbeat = now;
                    model.seq += 1;
                    if model.state == ExecutionState::Starting {
                        model.state = ExecutionState::Running;
                        model.seq += 1;
                    }
                }
                (expected, self.tracker.heartbeat(id).map(|c| c.events))
            }
            Op::SetState(index, state) => {
                let id = self.target(*index);
                let expected = self.alive(id).and_then(|m| {
                    if strict_lifecycle && !m.state.can_become(*state) {
                        Err(Refusal::InvalidLifecycle)
                    } else {
                        Ok(())
                    }
                });
                if expected.is_ok() {
                    self.model_set_state(id, *state, None, None);
                }
                (
                    expected,
                    self.tracker
                        .set_state(id, *state, StateUpdate::default())
                        .map(|c| c.events),
                )
            }
            Op::Complete(index) | Op::Fail(index) | Op::Cancel(index) => self.finish(op, *index),
            Op::Transition(index, _) | Op::NextPhase(index, _) => self.transition(op, *index),
            Op::Cleanup(index) => {
                let id = self.target(*index);
                let expected = self.present(id).and_then(|m| {
                    if m.state.is_alive() {
                        Err(Refusal::StillAlive)
                    } else {
                        Ok(())
                    }
                });
                let actual = self.tracker.cleanup(id);
                if let Ok(record) = &actual {
                    let before = before_all.iter().find(|r| r.execution_id == id);
                    assert_eq!(Some(record), before, "cleanup returns the record as it was");
                    let history = self.tracker.completed_history();
                    assert_eq!(history.last(), Some(record), "cleanup keeps the record in the history");
                    self.model(id).present = false;
                    self.cleaned_up += 1;
                }
                (expected, actual.map(|_| Vec::new()))
            }
            Op::EditState(index, state) => self.edit_state(*index, *state),
            Op::Advance(ms) => {
                let by = Duration::from_millis(*ms);
                self.clock.advance(by);
                self.now += by;
                (Ok(()), Ok(Vec::new()))
            }
            Op::Sweep => self.sweep(),
        }
    }

    /// `Op::Create`.
    fn create(&mut self, timeout_secs: Option<u64>, user: usize) -> (Prediction, Answer) {
        let mut new = NewExecution::new("agent", format!("thread-{}", self.step % 4), USERS[user]);
        if let Some(secs) = timeout_secs {
            new = new.timeout(Duration::from_secs(secs));
        }
        let change = self.tracker.create(new).expect("create");
        let id = change.id();
        self.ids.push(id);
        self.models.insert(
            id,
            Model {
                state: ExecutionState::Pending,
                phase: Phase::Created,
                heartbeats: 0,
                transitions: 0,
                created: self.now,
                last_heartbeat: self.now,
                timeout: timeout_secs.map_or(EXECUTION_TIMEOUT, Duration::from_secs),
                seq: 1,
                completed: None,
                error: None,
                result: None,
                present: true,
                user,
            },
        );
        self.metrics.total_executions += 1;
        self.metrics.active_executions += 1;
        (Ok(()), Ok(change.events))
    }

    /// `Op::Transition` and `Op::NextPhase` (the phase it picks among the allowed ones).
    fn transition(&mut self, op: &Op, index: usize) -> (Prediction, Answer) {
        let strict_phases = self.phase_validation == Validation::Strict;
        let id = self.target(index);
        let phase = match op {
            Op::Transition(_, phase) => *phase,
            Op::NextPhase(_, pick) => {
                let current = self.present(id).map_or(Phase::Created, |m| m.phase);
                let allowed = current.allowed_next();
                if allowed.is_empty() {
                    Phase::ALL[pick % Phase::ALL.len()]
                } else {
                    allowed[pick % allowed.len()]
                }
            }
            _ => unreachable!(),
        };
        let expected = self.present(id).and_then(|m| {
            if strict_phases && m.state.is_terminal() {
                Err(Refusal::Terminal)
            } else if strict_phases && !m.phase.can_transition_to(phase) {
                Err(Refusal::InvalidTransition)
            } else {
                Ok(())
            }
        });
        // The rules allow it, and the execution is still alive (`Tracker::transition` documents
        // that one on a finished execution is flagged invalid).
        let valid = self
            .present(id)
            .map(|m| m.phase.can_transition_to(phase) && m.state.is_alive());
        if expected.is_ok() {
            let now = self.now;
            let model = self.model(id);
            model.phase = phase;
            model.transitions += 1;
            model.seq += 1;
            if model.state.is_alive() {
                model.last_heartbeat = now;
            }
        }
        let actual = self.tracker.transition(id, phase, None).map(|c| c.events);
        if let (Ok(events), Ok(valid)) = (&actual, valid) {
            let transition = events[0].kind.transition().expect("a phase event");
            assert_eq!((transition.to_phase, transition.valid), (phase, valid));
            let stored = self.tracker.get(id).ok().and_then(|r| r.phase_history.last().cloned());
            assert_eq!(
                stored.as_ref(),
                Some(transition),
                "the stored transition is the event's"
            );
        }
        (expected, actual)
    }

    /// `Op::Sweep`.
    fn sweep(&mut self) -> (Prediction, Answer) {
        let now = self.now;
        let mut expiring: Vec<(ExecutionId, ExecutionState)> = self
            .models
            .iter()
            .filter(|(_, m)| m.present)
            .filter_map(|(id, m)| m.expiry(now).map(|state| (*id, state)))
            .collect();
        expiring.sort();
        let sweep = self.tracker.sweep();
        let mut dead: Vec<ExecutionId> = sweep.dead.iter().map(|r| r.execution_id).collect();
        let mut timed_out: Vec<ExecutionId> = sweep.timed_out.iter().map(|r| r.execution_id).collect();
        dead.sort();
        timed_out.sort();
        let expect = |state| {
            expiring
                .iter()
                .filter(|(_, s)| *s == state)
                .map(|(id, _)| *id)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            dead,
            expect(ExecutionState::Dead),
            "executions declared dead at {now:?}"
        );
        assert_eq!(
            timed_out,
            expect(ExecutionState::Timeout),
            "executions timed out at {now:?}"
        );
        for record in sweep.dead.iter().chain(&sweep.timed_out) {
            assert_eq!(record.completed_at, Some(Self::wall(now)));
        }
        for (id, state) in &expiring {
            let prefix = match state {
                ExecutionState::Dead => "No heartbeat for",
                _ => "Execution exceeded",
            };
            let model = self.model(*id);
            model.state = *state;
            model.completed = Some(now);
            model.error = Some(prefix.to_owned());
            model.seq += 1;
            self.count_finished(*state);
        }
        // Then finished records older than the cleanup age go, then the cap applies.
        let mut purged = 0;
        if let Some(cutoff) = now.checked_sub(CLEANUP_AGE) {
            for model in self.models.values_mut() {
                if model.present && model.completed.is_some_and(|at| at <= cutoff) {
                    model.present = false;
                    purged += 1;
                }
            }
        }
        assert_eq!(sweep.purged, purged, "records purged at {now:?}");
        self.swept = expiring.len();
        self.enforce_cap();
        (Ok(()), Ok(Vec::new()))
    }

    /// `Op::Complete`, `Op::Fail` and `Op::Cancel`.
    fn finish(&mut self, op: &Op, index: usize) -> (Prediction, Answer) {
        let id = self.target(index);
        let expected = self.alive(id).map(|_| ());
        let step = self.step;
        let (state, error, result) = match op {
            Op::Complete(_) => (ExecutionState::Completed, None, Some(json!({ "step": step }))),
            Op::Fail(_) => (ExecutionState::Failed, Some(format!("failed at step {step}")), None),
            _ => (
                ExecutionState::Cancelled,
                Some(format!("cancelled at step {step}")),
                None,
            ),
        };
        if expected.is_ok() {
            self.model_set_state(id, state, error.clone(), result.clone());
        }
        let actual = match op {
            Op::Complete(_) => self.tracker.complete(id, result),
            Op::Fail(_) => self.tracker.fail(id, error.unwrap_or_default()),
            _ => self.tracker.cancel(id, error.unwrap_or_default()),
        };
        (expected, actual.map(|c| c.events))
    }

    /// `Op::EditState`.
    fn edit_state(&mut self, index: usize, state: ExecutionState) -> (Prediction, Answer) {
        let id = self.target(index);
        let expected = self.present(id).and_then(|m| {
            if m.state.is_terminal() && m.state != state {
                Err(Refusal::StateIsFinal)
            } else {
                Ok(())
            }
        });
        let changes = self.present(id).is_ok_and(|m| m.state != state);
        if expected.is_ok() && changes {
            let now = self.now;
            let model = self.model(id);
            // `record_edited`, then for an end its one terminal event.
            model.seq += 1;
            model.state = state;
            if state.is_terminal() {
                model.seq += 1;
                model.completed = Some(now);
                self.count_finished(state);
                self.enforce_cap();
            }
        }
        let actual = self.tracker.edit(id, |r| r.state = state).map(|c| c.events);
        (expected, actual)
    }

    fn run(&mut self, op: &Op) {
        self.step += 1;
        let before_all = self.tracker.all();
        let before_metrics = self.tracker.metrics();
        let before_last_seq = self.tracker.last_seq();
        let before_history = self.tracker.completed_history();

        // The model's prediction, then the tracker's answer.
        let (expected, actual): (Prediction, Answer) = self.apply(op, &before_all);

        let swept = self.swept;
        let drained = drain(&mut self.events);
        self.check_events(&drained);
        match (&expected, actual) {
            (Ok(()), Ok(events)) => {
                if matches!(op, Op::Sweep) {
                    // One terminal event per execution the sweep ended, nothing else.
                    let ended = drained.iter().filter(|e| e.kind.finished().is_some()).count();
                    assert_eq!(ended, drained.len(), "a sweep emits only terminal events");
                    assert_eq!(ended, swept, "terminal events of a sweep");
                } else {
                    let id = events
                        .first()
                        .and_then(|e| e.execution.as_ref())
                        .map(|s| s.execution_id);
                    if let Some(id) = id {
                        Self::accepted(&events, &drained, id);
                    } else {
                        assert!(drained.is_empty(), "{op:?} emitted {drained:?}");
                    }
                }
            }
            (Err(refusal), Err(error)) => {
                assert_eq!(*refusal, refusal_of(&error), "{op:?} refused with {error}");
                // A refused operation changes nothing at all.
                assert!(drained.is_empty(), "a refused {op:?} emitted {drained:?}");
                assert_eq!(self.tracker.all(), before_all, "a refused {op:?} changed a record");
                assert_eq!(
                    self.tracker.metrics(),
                    before_metrics,
                    "a refused {op:?} changed the counters"
                );
                assert_eq!(self.tracker.last_seq(), before_last_seq);
                assert_eq!(self.tracker.completed_history(), before_history);
            }
            (expected, actual) => panic!("{op:?}: model expected {expected:?}, tracker answered {actual:?}"),
        }
        self.check_invariants();
    }

    fn check_events(&mut self, drained: &[Arc<Event>]) {
        for event in drained {
            assert_eq!(event.global_seq, self.last_global + 1, "global seq has a gap");
            self.last_global = event.global_seq;
            let scope = event.execution.as_ref().expect("every event here is an execution's");
            let last = self.last_seq.entry(scope.execution_id).or_default();
            assert_eq!(
                scope.seq,
                *last + 1,
                "per-execution seq of {} has a gap",
                scope.execution_id
            );
            *last = scope.seq;
            if event.kind.finished().is_some() {
                assert!(
                    self.terminal_event_seen.insert(scope.execution_id),
                    "a second terminal event for {}",
                    scope.execution_id
                );
            } else if self.terminal_event_seen.contains(&scope.execution_id) {
                // Only lenient phase validation lets anything happen to a finished execution.
                assert_eq!(
                    self.phase_validation,
                    Validation::Lenient,
                    "{} after the end",
                    event.kind.name()
                );
                assert!(event.kind.transition().is_some(), "{} after the end", event.kind.name());
            }
        }
        assert_eq!(self.tracker.last_seq(), self.last_global);
    }

    /// The tracker's counters: as the model counted, adding up, `alive` of them active.
    fn check_counters(&self, alive: u64) {
        let metrics = self.tracker.metrics();
        let Metrics {
            total_executions,
            active_executions,
            successful_executions,
            failed_executions,
            timeout_executions,
            dead_executions,
            cancelled_executions,
            ..
        } = metrics;
        assert_eq!(
            (
                total_executions,
                active_executions,
                successful_executions,
                failed_executions,
                timeout_executions,
                dead_executions,
                cancelled_executions
            ),
            (
                self.metrics.total_executions,
                self.metrics.active_executions,
                self.metrics.successful_executions,
                self.metrics.failed_executions,
                self.metrics.timeout_executions,
                self.metrics.dead_executions,
                self.metrics.cancelled_executions
            ),
            "metrics"
        );
        assert_eq!(
            total_executions,
            active_executions
                + successful_executions
                + failed_executions
                + timeout_executions
                + dead_executions
                + cancelled_executions
        );
        assert_eq!(active_executions, alive);
        assert_eq!(total_executions, self.ids.len() as u64);
    }

    fn check_invariants(&mut self) {
        let records = self.tracker.all();
        let by_id: HashMap<ExecutionId, &ExecutionRecord> = records.iter().map(|r| (r.execution_id, r)).collect();

        // Records agree with the model.
        let present: Vec<ExecutionId> = self.ids.iter().copied().filter(|id| self.models[id].present).collect();
        assert_eq!(records.len(), present.len(), "records in memory");
        for id in &self.ids {
            let model = &self.models[id];
            let Some(record) = by_id.get(id) else {
                assert!(!model.present, "{id} vanished");
                assert_eq!(self.tracker.get(*id), Err(TrackerError::NotFound { execution_id: *id }));
                continue;
            };
            assert!(model.present, "{id} should be gone");
            assert_eq!(record.state, model.state, "state of {id}");
            assert_eq!(record.current_phase, model.phase, "phase of {id}");
            assert_eq!(record.heartbeat_count, model.heartbeats, "heartbeats of {id}");
            assert_eq!(record.phase_history.len(), model.transitions, "transitions of {id}");
            assert_eq!(record.seq, model.seq, "seq of {id}");
            assert_eq!(record.seq, self.last_seq[id], "the subscriber saw every event of {id}");
            assert_eq!(record.timeout, model.timeout);
            assert_eq!(record.user_id, USERS[model.user]);
            assert_eq!(record.started_at, Self::wall(model.created));
            assert_eq!(
                record.last_heartbeat,
                Self::wall(model.last_heartbeat),
                "last heartbeat of {id}"
            );
            assert_eq!(record.completed_at, model.completed.map(Self::wall), "end of {id}");
            assert_eq!(record.result, model.result, "result of {id}");
            match (&record.error, &model.error) {
                (Some(actual), Some(expected)) => assert!(actual.starts_with(expected.as_str()), "{actual}"),
                (actual, expected) => assert_eq!(actual, expected, "error of {id}"),
            }
            assert_eq!(record.is_terminal(), self.terminal_event_seen.contains(id));

            // Terminal is final.
            if record.is_terminal() {
                let frozen = Frozen::of(record);
                let first = self.frozen.entry(*id).or_insert_with(|| frozen.clone());
                assert_eq!(*first, frozen, "finished {id} changed");
            }
        }

        // The active set is exactly the alive records, oldest first.
        let alive: Vec<ExecutionId> = records
            .iter()
            .filter(|r| r.is_alive())
            .map(|r| r.execution_id)
            .collect();
        let active: Vec<ExecutionId> = self.tracker.active().iter().map(|r| r.execution_id).collect();
        assert_eq!(active, alive, "active set vs. alive records");
        assert_eq!(self.tracker.active_count(), alive.len());

        // The monitor's report: exactly those whose deadline has passed.
        let overdue: Vec<ExecutionId> = alive
            .iter()
            .copied()
            .filter(|id| self.models[id].deadline() < self.now)
            .collect();
        let reported: Vec<ExecutionId> = self.tracker.detect_dead().iter().map(|r| r.execution_id).collect();
        assert_eq!(reported, overdue, "detect_dead at {:?}", self.now);

        // Counters survive cleanup and purging, and add up.
        self.check_counters(alive.len() as u64);
        assert_eq!(self.tracker.check_consistency(), Vec::<String>::new());
        assert_eq!(self.tracker.completed_history().len(), self.cleaned_up);
        let finished_in_memory = records.iter().filter(|r| r.is_terminal()).count();
        assert!(
            finished_in_memory <= MAX_FINISHED,
            "{finished_in_memory} finished records kept"
        );

        // The user index lists exactly each user's records.
        for (user, name) in USERS.iter().enumerate() {
            let listed: Vec<ExecutionId> = self.tracker.by_user(name).iter().map(|r| r.execution_id).collect();
            let expected: Vec<ExecutionId> = present
                .iter()
                .copied()
                .filter(|id| self.models[id].user == user)
                .collect();
            assert_eq!(listed, expected, "by_user({name})");
        }
    }
}

fn run_all(phase_validation: Validation, lifecycle_validation: Validation, ops: &[Op]) {
    let mut harness = Harness::new(phase_validation, lifecycle_validation);
    for op in ops {
        harness.run(op);
    }
}

/// (phase validation, lifecycle validation) with at least one of them lenient.
fn some_leniency() -> impl Strategy<Value = (Validation, Validation)> {
    prop_oneof![
        Just((Validation::Lenient, Validation::Lenient)),
        Just((Validation::Lenient, Validation::Strict)),
        Just((Validation::Strict, Validation::Lenient)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_every_invariant_under_strict_validation(ops in prop::collection::vec(op(), 1..80)) {
        run_all(Validation::Strict, Validation::Strict, &ops);
    }

    #[test]
    fn random_operations_keep_every_invariant_under_lenient_validation(
        (phase_validation, lifecycle_validation) in some_leniency(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        run_all(phase_validation, lifecycle_validation, &ops);
    }
}

/// A fixed sequence through every kind of step, so that the harness itself is known to reach
/// deep states (a model that silently predicted nothing would pass the random runs).
#[test]
fn the_harness_reaches_every_terminal_state_purges_and_caps() {
    let mut harness = Harness::new(Validation::Strict, Validation::Strict);
    let run = |harness: &mut Harness, op: Op| harness.run(&op);
    for n in 0..6 {
        let timeout_secs = (n == 3).then_some(20);
        run(
            &mut harness,
            Op::Create {
                timeout_secs,
                user: n % 2,
            },
        );
    }
    run(&mut harness, Op::Start(0));
    run(&mut harness, Op::Heartbeat(0));
    for phase in GOLDEN_PATH {
        run(&mut harness, Op::Transition(0, phase));
    }
    // Refused, and the harness checks that they changed nothing.
    run(&mut harness, Op::Transition(0, Phase::Thinking));
    run(&mut harness, Op::Start(0));
    run(&mut harness, Op::SetState(0, ExecutionState::Pending));
    run(&mut harness, Op::Cleanup(3));
    run(&mut harness, Op::SetState(0, ExecutionState::Completing));
    run(&mut harness, Op::Complete(0));
    run(&mut harness, Op::Heartbeat(0));
    run(&mut harness, Op::Fail(0));
    run(&mut harness, Op::Fail(1));
    run(&mut harness, Op::Cancel(2));
    let record = harness.tracker.get(harness.ids[0]).expect("first execution");
    assert_eq!(
        (record.state, record.current_phase),
        (ExecutionState::Completed, Phase::Completed)
    );
    assert_eq!((record.phase_history.len(), record.heartbeat_count), (9, 1));

    // Execution 3 heartbeats; 4 and 5 fall silent and are dead after 10 s. That makes five
    // finished records for a cap of four: the earliest finished (0, first of three at 0 s) goes.
    run(&mut harness, Op::Advance(9_000));
    run(&mut harness, Op::Heartbeat(3));
    run(&mut harness, Op::Advance(1_500));
    run(&mut harness, Op::Sweep);
    assert_eq!(harness.tracker.metrics().dead_executions, 2);
    assert_eq!(harness.tracker.len(), 5);
    assert!(harness.tracker.get(harness.ids[0]).is_err(), "evicted over the cap");
    run(&mut harness, Op::Cleanup(2));
    assert_eq!(harness.tracker.completed_history().len(), 1);

    // Execution 3 keeps heartbeating, but its 20 s execution timeout passes; the sweep at 22.5 s
    // also purges what finished more than 15 s before (execution 1, at 0 s).
    run(&mut harness, Op::Advance(6_000));
    run(&mut harness, Op::Heartbeat(3));
    run(&mut harness, Op::Advance(6_000));
    run(&mut harness, Op::Heartbeat(3));
    run(&mut harness, Op::Sweep);
    assert_eq!(harness.tracker.metrics().timeout_executions, 1);
    let left: Vec<ExecutionId> = harness.tracker.all().iter().map(|r| r.execution_id).collect();
    assert_eq!(left, harness.ids[3..].to_vec());

    run(&mut harness, Op::Advance(20_000));
    run(&mut harness, Op::Sweep);
    assert!(
        harness.tracker.is_empty(),
        "all finished records purged after the cleanup age"
    );
    let m = harness.tracker.metrics();
    assert_eq!(
        (
            m.total_executions,
            m.successful_executions,
            m.failed_executions,
            m.cancelled_executions
        ),
        (6, 1, 1, 1)
    );
    assert_eq!(
        (m.dead_executions, m.timeout_executions, m.active_executions),
        (2, 1, 0)
    );
}

/// Under lenient validation a transition on a finished execution still happens (as in the
/// original), but it must be flagged `valid: false`, as `Tracker::transition` documents, and the
/// execution stays finished.
#[test]
fn lenient_transition_on_a_finished_execution_is_recorded_as_invalid() {
    let tracker = Tracker::with_clock(
        TrackerConfig {
            phase_validation: Validation::Lenient,
            lifecycle_validation: Validation::Lenient,
            ..TrackerConfig::default()
        },
        Arc::new(ManualClock::new()),
    );
    let id = tracker
        .create(NewExecution::new("agent", "thread", "user"))
        .expect("create")
        .id();
    tracker
        .transition(id, Phase::WebsocketSetup, None)
        .expect("allowed transition");
    tracker.complete(id, None).expect("complete");
    let finished = tracker.get(id).expect("record");

    let change = tracker
        .transition(id, Phase::ContextValidation, None)
        .expect("lenient validation lets it happen");
    let transition = change.transition().expect("a phase event");
    assert!(
        !transition.valid,
        "a transition on a finished execution is flagged invalid"
    );

    let after = tracker.get(id).expect("record");
    assert_eq!(after.state, ExecutionState::Completed);
    assert_eq!(after.completed_at, finished.completed_at);
    assert_eq!(after.phase_history.last().map(|t| t.valid), Some(false));
}
