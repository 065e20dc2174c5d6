//! `Tracker::lean`: the same calls without their `Change`, events built only for listeners.
//! Subscribers and sinks must see exactly what the full calls would have shown them, and the
//! numbering must not depend on whether anyone listened.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};

use agentrack::{Event, EventFilter, ExecutionState, Phase, StateUpdate, Tracker, TrackerConfig};
use common::{GOLDEN_PATH, drain, manual, meta, names, new};
use serde_json::json;

/// One golden path through `lean`, with an agent-state update and a result.
fn golden_path_lean(tracker: &Tracker) -> agentrack::ExecutionId {
    let lean = tracker.lean();
    let id = lean.create(new("researcher", "thread-1", "user-1")).unwrap();
    lean.start(id).unwrap();
    lean.heartbeat(id).unwrap();
    for phase in GOLDEN_PATH {
        assert!(
            lean.transition(id, phase, meta(json!({"step": phase.as_str()})))
                .unwrap()
        );
    }
    lean.update_agent_state(
        id,
        agentrack::AgentStateUpdate {
            warning_count: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    lean.complete(id, Some(json!({"answer": 42}))).unwrap();
    id
}

/// The same golden path through the full calls.
fn golden_path_full(tracker: &Tracker) -> agentrack::ExecutionId {
    let id = tracker.create(new("researcher", "thread-1", "user-1")).unwrap().id();
    tracker.start(id).unwrap();
    tracker.heartbeat(id).unwrap();
    for phase in GOLDEN_PATH {
        tracker
            .transition(id, phase, meta(json!({"step": phase.as_str()})))
            .unwrap();
    }
    tracker
        .update_agent_state(
            id,
            agentrack::AgentStateUpdate {
                warning_count: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
    tracker.complete(id, Some(json!({"answer": 42}))).unwrap();
    id
}

/// An event without what differs between two runs (ids, times).
fn shape(event: &Event) -> serde_json::Value {
    let mut value = serde_json::to_value(event).unwrap();
    let object = value.as_object_mut().unwrap();
    for key in ["execution_id", "timestamp"] {
        object.remove(key);
    }
    if let Some(transition) = object.get_mut("transition").and_then(|t| t.as_object_mut()) {
        transition.remove("timestamp");
        transition.remove("duration_ms");
    }
    for key in ["last_heartbeat", "duration_ms", "execution_time_ms"] {
        object.remove(key);
    }
    value
}

#[tokio::test]
async fn a_subscriber_sees_the_same_events_from_lean_calls_as_from_full_ones() {
    let (full, _) = manual(TrackerConfig::default());
    let mut full_events = full.subscribe(EventFilter::all());
    golden_path_full(&full);
    let (lean, _) = manual(TrackerConfig::default());
    let mut lean_events = lean.subscribe(EventFilter::all());
    golden_path_lean(&lean);

    let (full_events, lean_events) = (drain(&mut full_events), drain(&mut lean_events));
    assert_eq!(names(&lean_events), names(&full_events));
    let shapes = |events: &[Arc<Event>]| events.iter().map(|e| shape(e)).collect::<Vec<_>>();
    assert_eq!(shapes(&lean_events), shapes(&full_events));
    assert_eq!(names(&lean_events).last(), Some(&"execution_completed"));
}

#[test]
fn numbering_moves_on_when_nobody_listens() {
    let (full, _) = manual(TrackerConfig::default());
    let full_id = golden_path_full(&full);
    let (lean, _) = manual(TrackerConfig::default());
    let lean_id = golden_path_lean(&lean);

    assert_eq!(lean.last_seq(), full.last_seq());
    let (lean_record, full_record) = (lean.get(lean_id).unwrap(), full.get(full_id).unwrap());
    assert_eq!(lean_record.seq, full_record.seq);
    assert_eq!(lean_record.state, ExecutionState::Completed);
    assert_eq!(lean_record.phase_history.len(), GOLDEN_PATH.len());
    assert_eq!(lean_record.result, Some(json!({"answer": 42})));
    assert!(lean.check_consistency().is_empty(), "{:?}", lean.check_consistency());
}

#[tokio::test]
async fn a_late_subscriber_gets_every_event_numbered_after_it_subscribed() {
    let (tracker, _) = manual(TrackerConfig::default());
    let lean = tracker.lean();
    let id = lean.create(new("researcher", "thread-1", "user-1")).unwrap();
    lean.start(id).unwrap();
    let before = tracker.last_seq();

    let mut events = tracker.subscribe(EventFilter::all());
    lean.heartbeat(id).unwrap();
    lean.transition(id, Phase::WebsocketSetup, None).unwrap();
    lean.set_state(id, ExecutionState::Failed, StateUpdate::default())
        .unwrap();

    let events = drain(&mut events);
    assert_eq!(
        names(&events),
        ["state_changed", "heartbeat", "phase_changed", "execution_failed"]
    );
    let seqs: Vec<u64> = events.iter().map(|e| e.global_seq).collect();
    assert_eq!(seqs, (before + 1..=before + 4).collect::<Vec<_>>());
    let own: Vec<u64> = events.iter().map(|e| e.execution.as_ref().unwrap().seq).collect();
    assert_eq!(own, [3, 4, 5, 6]);
}

#[test]
fn a_sink_receives_every_event_of_lean_calls() {
    let (tracker, _) = manual(TrackerConfig::default());
    let seen: Arc<Mutex<Vec<Arc<Event>>>> = Arc::default();
    let sink = Arc::clone(&seen);
    assert!(tracker.set_sink(move |event: &Arc<Event>| sink.lock().unwrap().push(Arc::clone(event))));
    golden_path_lean(&tracker);

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len() as u64, tracker.last_seq());
    let seqs: Vec<u64> = seen.iter().map(|e| e.global_seq).collect();
    assert_eq!(seqs, (1..=tracker.last_seq()).collect::<Vec<_>>());
    assert_eq!(names(&seen).first(), Some(&"execution_created"));
    assert_eq!(names(&seen).last(), Some(&"execution_completed"));
}

#[test]
fn lean_calls_refuse_what_the_full_calls_refuse() {
    let (tracker, _) = manual(TrackerConfig::default());
    let lean = tracker.lean();
    let id = lean.create(new("researcher", "thread-1", "user-1")).unwrap();
    lean.complete(id, None).unwrap();
    assert!(matches!(
        lean.heartbeat(id),
        Err(agentrack::TrackerError::Terminal { .. })
    ));
    assert!(matches!(
        lean.create(new(" ", "thread-1", "user-1")),
        Err(agentrack::TrackerError::InvalidInput {
            field: "agent_name",
            ..
        })
    ));
    let before = tracker.last_seq();
    assert!(lean.start(id).is_err());
    assert_eq!(tracker.last_seq(), before, "a refused call numbers no event");
}
