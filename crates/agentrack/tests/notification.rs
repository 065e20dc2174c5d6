//! `Notification`: the original's WebSocket-manager arguments, built from a record, serialized
//! with their method, and kept apart from the phase events' own payloads.

mod common;

use agentrack::{Clock, EventKind, Notification, Phase, TrackerConfig};
use common::{GOLDEN_PATH, drain, manual, meta, ms, new};
use serde_json::json;

#[test]
fn serialized_notifications_name_their_method_next_to_the_original_arguments() {
    let (tracker, clock) = manual(TrackerConfig::default());
    let id = tracker.create(new("agent", "thread-1", "user-1")).unwrap().id();
    let mut serialized = Vec::new();
    for phase in GOLDEN_PATH {
        clock.advance(ms(250));
        let metadata = meta(json!({"step": phase.as_str()}));
        tracker.transition(id, phase, metadata).unwrap();
        let record = tracker.get(id).unwrap();
        let Some(notification) = Notification::for_latest_transition(&record, clock.now()) else {
            continue;
        };
        let value = serde_json::to_value(&notification).unwrap();
        assert_eq!(value["method"], notification.method());
        let back: Notification = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(back, notification);
        serialized.push(value);
    }
    let run = |extra: serde_json::Value| {
        let mut call = json!({"run_id": "thread-1", "agent_name": "agent"});
        call.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        call
    };
    assert_eq!(
        serialized,
        [
            run(json!({"method": "notify_agent_started",
                "context": {"phase": "starting", "total_duration_ms": 750.0, "metadata": {"step": "starting"}}})),
            run(json!({"method": "notify_agent_thinking",
                "reasoning": "Agent is thinking... (step 4)", "step_number": 4})),
            run(json!({"method": "notify_agent_thinking",
                "reasoning": "Interacting with AI language model...", "step_number": 5})),
            run(json!({"method": "notify_tool_executing",
                "tool_name": "execution_tools", "parameters": {"step": "tool_execution"}})),
            run(json!({"method": "notify_agent_thinking",
                "reasoning": "Processing results...", "step_number": 7})),
            run(json!({"method": "notify_agent_thinking",
                "reasoning": "Finalizing response...", "step_number": 8})),
            run(json!({"method": "notify_agent_completed",
                "result": {"success": true, "total_duration_ms": 2250.0, "phase_count": 9, "warnings": 0,
                    "metadata": {}},
                "execution_time_ms": 2250})),
        ]
    );
}

#[test]
fn phases_the_original_did_not_notify_have_no_notification() {
    let (tracker, clock) = manual(TrackerConfig::default());
    let id = tracker.create(new("agent", "thread-1", "user-1")).unwrap().id();
    let record = tracker.get(id).unwrap();
    assert_eq!(Notification::for_latest_transition(&record, clock.now()), None);
    for phase in [Phase::WebsocketSetup, Phase::ContextValidation] {
        tracker.transition(id, phase, None).unwrap();
        let record = tracker.get(id).unwrap();
        assert_eq!(
            Notification::for_latest_transition(&record, clock.now()),
            None,
            "{phase}"
        );
    }
}

#[test]
fn phase_events_keep_agentracks_own_payloads() {
    let (tracker, _clock) = manual(TrackerConfig::default());
    let id = tracker.create(new("agent", "thread-1", "user-1")).unwrap().id();
    for phase in [Phase::WebsocketSetup, Phase::ContextValidation, Phase::Starting] {
        tracker.transition(id, phase, None).unwrap();
    }
    let mut stream = tracker.subscribe(agentrack::EventFilter::user("user-1"));
    tracker
        .transition(id, Phase::Thinking, meta(json!({"reasoning": "need a forecast"})))
        .unwrap();
    let events = drain(&mut stream);
    let thinking = events
        .iter()
        .find_map(|event| match &event.kind {
            EventKind::AgentThinking { reasoning, .. } => Some(reasoning.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(thinking, "need a forecast");
    let record = tracker.get(id).unwrap();
    match Notification::for_latest_transition(&record, record.updated_at).unwrap() {
        Notification::AgentThinking { reasoning, .. } => assert_eq!(reasoning, "Agent is thinking... (step 4)"),
        other => panic!("expected agent_thinking, got {other:?}"),
    }
}
