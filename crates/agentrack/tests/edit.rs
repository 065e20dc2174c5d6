//! Direct edits (`Tracker::edit`): the tracker acts on overwritten fields as legacy code expects,
//! and a finished execution stays finished (exactly one terminal event).

#![allow(clippy::unwrap_used)]

mod common;

use agentrack::{
    BreakerState, EventFilter, ExecutionId, ExecutionState, ManualClock, NewExecution, Phase, StateUpdate, Tracker,
    TrackerConfig, TrackerError,
};
use chrono::TimeDelta;
use common::{drain, manual, names, secs};

fn config() -> TrackerConfig {
    TrackerConfig {
        heartbeat_timeout: secs(10),
        execution_timeout: secs(100),
        cleanup_age: secs(60),
        ..TrackerConfig::default()
    }
}

fn new() -> NewExecution {
    NewExecution::new("agent", "thread", "user")
}

#[test]
fn back_dated_heartbeat_makes_the_execution_dead() {
    let (tracker, _clock) = manual(config());
    let id = tracker.create(new()).unwrap().id();
    tracker.start(id).unwrap();
    assert!(tracker.detect_dead().is_empty());
    let now = tracker.clock().now();
    tracker
        .edit(id, |r| r.last_heartbeat = now - TimeDelta::seconds(15))
        .unwrap();
    assert_eq!(tracker.detect_dead().len(), 1);
    let sweep = tracker.sweep();
    assert_eq!(sweep.dead.len(), 1);
    assert_eq!(tracker.get(id).unwrap().state, ExecutionState::Dead);
}

#[test]
fn back_dated_start_times_the_execution_out() {
    let (tracker, _clock) = manual(config());
    let id = tracker.create(new().timeout(secs(2))).unwrap().id();
    let now = tracker.clock().now();
    tracker
        .edit(id, |r| r.started_at = now - TimeDelta::seconds(5))
        .unwrap();
    let sweep = tracker.sweep();
    assert_eq!(sweep.timed_out.len(), 1, "{sweep:?}");
    assert_eq!(tracker.get(id).unwrap().state, ExecutionState::Timeout);
}

#[test]
fn a_shorter_timeout_counts_from_the_original_start() {
    let (tracker, clock) = manual(config());
    let id = tracker.create(new()).unwrap().id();
    clock.advance(secs(3));
    tracker.heartbeat(id).unwrap();
    tracker.edit(id, |r| r.timeout = secs(2)).unwrap();
    assert_eq!(tracker.sweep().timed_out.len(), 1);
}

#[test]
fn back_dated_completion_lets_the_purge_drop_it_and_a_later_one_keeps_it() {
    let (tracker, clock) = manual(config());
    let old = tracker.create(new()).unwrap().id();
    let recent = tracker.create(new()).unwrap().id();
    tracker.complete(old, None).unwrap();
    tracker.complete(recent, None).unwrap();
    let now = tracker.clock().now();
    tracker
        .edit(old, |r| r.completed_at = Some(now - TimeDelta::seconds(120)))
        .unwrap();
    assert_eq!(tracker.purge_finished(secs(60)), 1);
    assert!(matches!(tracker.get(old), Err(TrackerError::NotFound { .. })));
    // Moving a completion later keeps the record past its original purge time.
    clock.advance(secs(30));
    let now = tracker.clock().now();
    tracker.edit(recent, |r| r.completed_at = Some(now)).unwrap();
    clock.advance(secs(40));
    assert_eq!(tracker.purge_finished(secs(60)), 0);
    assert!(tracker.get(recent).is_ok());
    clock.advance(secs(30));
    assert_eq!(tracker.purge_finished(secs(60)), 1);
}

#[test]
fn a_forced_terminal_state_finishes_it_with_its_one_terminal_event() {
    let (tracker, _clock) = manual(config());
    let mut events = tracker.subscribe(EventFilter::all());
    let id = tracker.create(new()).unwrap().id();
    let change = tracker.edit(id, |r| r.state = ExecutionState::Completed).unwrap();
    assert_eq!(names(&change.events), ["record_edited", "execution_completed"]);
    let record = tracker.get(id).unwrap();
    assert_eq!(record.state, ExecutionState::Completed);
    assert!(record.completed_at.is_some());
    assert_eq!(tracker.active_count(), 0);
    assert_eq!(tracker.metrics().successful_executions, 1);
    assert_eq!(
        names(&drain(&mut events)),
        ["execution_created", "record_edited", "execution_completed"]
    );
    assert!(tracker.heartbeat(id).is_err(), "terminal after the edit");
    assert!(tracker.check_consistency().is_empty());
}

/// Finishes a new execution the way `how` names; returns its id.
fn finished(tracker: &Tracker, clock: &ManualClock, how: ExecutionState) -> ExecutionId {
    let id = tracker.create(new()).unwrap().id();
    tracker.start(id).unwrap();
    match how {
        ExecutionState::Completed => drop(tracker.complete(id, Some(serde_json::json!("done"))).unwrap()),
        ExecutionState::Failed => drop(tracker.fail(id, "boom").unwrap()),
        ExecutionState::Cancelled => drop(tracker.cancel(id, "stop").unwrap()),
        ExecutionState::Dead => {
            clock.advance(secs(11));
            assert_eq!(tracker.sweep().dead.len(), 1);
        }
        ExecutionState::Timeout => {
            tracker.edit(id, |r| r.started_at -= TimeDelta::seconds(200)).unwrap();
            assert_eq!(tracker.sweep().timed_out.len(), 1);
        }
        alive => panic!("{alive} is not a way to finish"),
    }
    assert_eq!(tracker.get(id).unwrap().state, how);
    id
}

#[test]
fn a_finished_execution_gets_no_second_terminal_event_through_the_public_api() {
    let terminal = ExecutionState::ALL.iter().copied().filter(|s| s.is_terminal());
    for how in terminal {
        let (tracker, clock) = manual(config());
        let mut events = tracker.subscribe(EventFilter::all());
        let id = finished(&tracker, &clock, how);
        let ended = tracker.get(id).unwrap();
        let metrics = tracker.metrics();
        drain(&mut events);

        // No edit changes a finished execution's state: not back to alive, not to another end.
        for state in ExecutionState::ALL.iter().copied().filter(|s| *s != how) {
            let err = tracker.edit(id, |r| r.state = state).unwrap_err();
            assert!(
                matches!(err, TrackerError::InvalidInput { field: "state", .. }),
                "{how} → {state}: {err}"
            );
            assert!(err.to_string().contains("final"), "{err}");
            // Not even together with other fields: a rejected edit changes nothing.
            assert!(
                tracker
                    .edit(id, |r| {
                        r.heartbeat_count = 99;
                        r.state = state;
                    })
                    .is_err()
            );
            assert_eq!(tracker.get(id).unwrap(), ended, "{how} → {state} changed the record");
        }
        // Nor does any lifecycle call, nor the monitor.
        assert!(matches!(tracker.start(id), Err(TrackerError::Terminal { .. })));
        assert!(matches!(tracker.heartbeat(id), Err(TrackerError::Terminal { .. })));
        for state in ExecutionState::ALL.iter().copied() {
            assert!(
                matches!(
                    tracker.set_state(id, state, StateUpdate::default()),
                    Err(TrackerError::Terminal { .. })
                ),
                "set_state({state}) after {how}"
            );
        }
        assert!(tracker.complete(id, None).is_err());
        assert!(tracker.fail(id, "again").is_err());
        assert!(tracker.cancel(id, "again").is_err());
        clock.advance(secs(30));
        let sweep = tracker.sweep();
        assert!(sweep.dead.is_empty() && sweep.timed_out.is_empty());
        assert!(drain(&mut events).is_empty(), "a refused call emitted something");

        // Its other fields stay editable, and such an edit is not an ending.
        let change = tracker.edit(id, |r| r.error = Some("noted later".into())).unwrap();
        assert_eq!(names(&change.events), ["record_edited"]);
        assert_eq!(tracker.get(id).unwrap().state, how);
        assert_eq!(tracker.metrics(), metrics, "counters after {how}");
        assert_eq!(tracker.active_count(), 0);
        assert!(tracker.check_consistency().is_empty());
    }
}

/// The Python drop-in's path: its callers assign `record.state = RUNNING` to a finished
/// record, as they did to the original's plain objects, and complete it again.
#[cfg(feature = "legacy")]
#[test]
fn the_legacy_edit_revives_a_finished_execution_and_only_it_does() {
    let (tracker, _clock) = manual(config());
    let mut events = tracker.subscribe(EventFilter::all());
    let id = tracker.create(new()).unwrap().id();
    tracker.complete(id, None).unwrap();
    assert!(tracker.edit(id, |r| r.state = ExecutionState::Running).is_err());
    tracker.legacy_edit(id, |r| r.state = ExecutionState::Running).unwrap();
    assert_eq!(tracker.active_count(), 1);
    tracker.heartbeat(id).unwrap();
    tracker.complete(id, None).unwrap();
    let ends = drain(&mut events)
        .iter()
        .filter(|e| e.kind.finished().is_some())
        .count();
    assert_eq!(ends, 2, "the legacy path is the one that can end an execution twice");
    // A terminal state over a terminal one relabels it; no new terminal event.
    let change = tracker.legacy_edit(id, |r| r.state = ExecutionState::Failed).unwrap();
    assert_eq!(names(&change.events), ["record_edited"]);
    // The revival took its completion back, so it is counted once, now as failed.
    let metrics = tracker.metrics();
    assert_eq!((metrics.successful_executions, metrics.failed_executions), (0, 1));
    assert!(
        tracker.check_consistency().is_empty(),
        "{:?}",
        tracker.check_consistency()
    );
}

#[test]
fn owner_fields_reindex_and_phase_and_counters_are_plain_writes() {
    let (tracker, _clock) = manual(config());
    let id = tracker.create(new()).unwrap().id();
    tracker
        .edit(id, |r| {
            r.agent_name = "other".into();
            r.current_phase = Phase::Thinking;
            r.heartbeat_count = 7;
            r.metadata.insert("k".into(), serde_json::json!(1));
        })
        .unwrap();
    assert!(tracker.by_agent("agent").is_empty());
    assert_eq!(tracker.by_agent("other").len(), 1);
    let record = tracker.get(id).unwrap();
    assert_eq!((record.current_phase, record.heartbeat_count), (Phase::Thinking, 7));
    // The next transition is checked from the edited phase.
    tracker.transition(id, Phase::LlmInteraction, None).unwrap();
    assert!(tracker.check_consistency().is_empty());
}

#[test]
fn a_forced_open_breaker_refuses_calls_until_its_next_attempt_time() {
    let (tracker, clock) = manual(config());
    let id = tracker.create(new()).unwrap().id();
    let now = tracker.clock().now();
    tracker
        .edit(id, |r| {
            r.circuit_breaker_state = BreakerState::Open;
            r.circuit_breaker_failures = 5;
            r.next_attempt_time = Some(now + TimeDelta::seconds(30));
        })
        .unwrap();
    assert!(matches!(tracker.begin_call(id), Err(TrackerError::CircuitOpen { .. })));
    assert_eq!(tracker.breaker_status(id).unwrap().failure_count, 5);
    clock.advance(secs(31));
    tracker.heartbeat(id).unwrap();
    assert!(tracker.begin_call(id).is_ok(), "half-open trial after the wait");
}

#[test]
fn identity_edits_are_refused_and_change_nothing() {
    let (tracker, _clock) = manual(config());
    let id = tracker.create(new()).unwrap().id();
    let before = tracker.get(id).unwrap();
    let other = tracker.create(new()).unwrap().id();
    let err = tracker
        .edit(id, |r| {
            r.heartbeat_count = 99;
            r.execution_id = other;
        })
        .unwrap_err();
    assert!(err.to_string().contains("execution_id"), "{err}");
    assert!(tracker.edit(id, |r| r.timeout = secs(0)).is_err());
    assert!(tracker.edit(id, |r| r.seq += 1).is_err());
    assert_eq!(tracker.get(id).unwrap(), before);
    assert!(
        tracker.edit(id, |_| ()).unwrap().events.is_empty(),
        "no change, no event"
    );
}

#[test]
fn a_new_timeout_config_sets_the_breaker_thresholds() {
    let (tracker, _clock) = manual(config());
    let id = tracker.create(new()).unwrap().id();
    let custom = agentrack::TimeoutConfig {
        failure_threshold: 1,
        ..agentrack::TimeoutConfig::default()
    };
    tracker.edit(id, |r| r.timeout_config = Some(Box::new(custom))).unwrap();
    tracker.begin_call(id).unwrap().record(agentrack::Outcome::Failure);
    assert_eq!(tracker.get(id).unwrap().circuit_breaker_state, BreakerState::Open);
}
