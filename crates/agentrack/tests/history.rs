//! The optional cap on each record's phase history: the latest changes are kept, the older ones
//! are counted, and nothing else about a transition changes.

#![allow(clippy::unwrap_used)]

mod common;

use agentrack::{EventKind, NewExecution, Phase, Tracker, TrackerConfig};
use common::{Recorder, manual, meta, ms};
use serde_json::json;

/// `n` transitions looping between `thinking` and `llm_interaction`, after the way there.
fn looping(tracker: &Tracker, n: usize) -> (agentrack::ExecutionId, Vec<agentrack::Event>) {
    let id = tracker.create(NewExecution::new("a", "t", "u")).unwrap().id();
    tracker.start(id).unwrap();
    let mut events = Vec::new();
    for phase in [Phase::WebsocketSetup, Phase::ContextValidation, Phase::Starting] {
        let change = tracker.transition(id, phase, None).unwrap();
        events.extend(change.events.iter().map(|e| (**e).clone()));
    }
    for step in 0..n {
        let phase = if step % 2 == 0 {
            Phase::Thinking
        } else {
            Phase::LlmInteraction
        };
        let change = tracker.transition(id, phase, meta(json!({"step": step}))).unwrap();
        events.extend(change.events.iter().map(|e| (**e).clone()));
    }
    (id, events)
}

#[test]
fn without_a_cap_every_change_is_kept() {
    let tracker = Tracker::new();
    let (id, _) = looping(&tracker, 500);
    let record = tracker.get(id).unwrap();
    assert_eq!(record.phase_history.len(), 503);
    assert_eq!(record.phase_history_dropped, 0);
}

#[test]
fn a_capped_history_keeps_the_latest_changes_and_counts_the_rest() {
    let tracker = Tracker::with_config(TrackerConfig {
        max_phase_history: Some(10),
        ..TrackerConfig::default()
    });
    let (id, events) = looping(&tracker, 100);
    let record = tracker.get(id).unwrap();
    assert_eq!(record.phase_history.len(), 10);
    assert_eq!(record.phase_history_dropped, 93);
    assert_eq!(record.phase_count(), 103);
    // The latest ten, in order.
    let steps: Vec<_> = record
        .phase_history
        .iter()
        .map(|t| t.metadata["step"].clone())
        .collect();
    assert_eq!(steps, (90..100).map(|step| json!(step)).collect::<Vec<_>>());
    // Every change still had its event, numbered from the first change.
    assert_eq!(events.len(), 103);
    let last_thinking = events
        .iter()
        .rev()
        .find_map(|e| match &e.kind {
            EventKind::AgentThinking { step_number, .. } => Some(*step_number),
            _ => None,
        })
        .unwrap();
    assert_eq!(last_thinking, 103, "the last change (llm_interaction) is the 103rd");
}

#[test]
fn a_restored_record_is_held_to_the_restoring_trackers_cap() {
    let unbounded = Tracker::new();
    let (id, _) = looping(&unbounded, 20);
    let record = unbounded.get(id).unwrap();
    let capped = Tracker::with_config(TrackerConfig {
        max_phase_history: Some(5),
        ..TrackerConfig::default()
    });
    capped.restore(record.clone()).unwrap();
    let restored = capped.get(id).unwrap();
    assert_eq!(restored.phase_history, record.phase_history[18..]);
    assert_eq!(restored.phase_history_dropped, 18);
}

#[tokio::test]
async fn a_notified_transition_is_marked_sent_even_after_the_cap_moved_it() {
    let (tracker, clock) = manual(TrackerConfig {
        max_phase_history: Some(2),
        ..TrackerConfig::default()
    });
    let (id, _) = looping(&tracker, 4);
    clock.advance(ms(10));
    let sent = tracker
        .transition_notify(id, Phase::Thinking, None, &Recorder::default())
        .await
        .unwrap();
    assert!(sent.websocket_event_sent);
    let record = tracker.get(id).unwrap();
    assert_eq!(record.phase_history.len(), 2);
    assert!(record.phase_history[1].websocket_event_sent, "the change just notified");
    assert!(!record.phase_history[0].websocket_event_sent);
}
