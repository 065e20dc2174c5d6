//! One real event of every kind: an in-process tracker on a manual clock driven through each
//! kind's cause (some kinds, like `record_edited`, have no HTTP route that causes them).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::time::Duration;

use agentrack::{
    AgentStateUpdate, Event, EventFilter, EventKind, ExecutionId, ManualClock, NewExecution, Phase, Tracker,
    TrackerConfig,
};
use serde_json::{Map, Value, json};

fn metadata(value: Value) -> Option<Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

fn phases(tracker: &Tracker, id: ExecutionId, phases: &[(Phase, Value)]) {
    for (phase, meta) in phases {
        tracker.transition(id, *phase, metadata(meta.clone())).unwrap();
    }
}

fn fail() -> Ready<Result<(), &'static str>> {
    ready(Err("provider down"))
}

fn succeed() -> Ready<Result<(), &'static str>> {
    ready(Ok(()))
}

/// Every event the scenario caused, in order.
pub async fn scenario() -> Vec<Event> {
    let clock = Arc::new(ManualClock::new());
    let tracker = Tracker::with_clock(TrackerConfig::default(), clock.clone());
    let mut stream = tracker.subscribe(EventFilter::all());
    let owner = |agent: &str| NewExecution::new(agent, "thread-1", "alice").tenant("acme");

    // The golden path, with a tool, an agent-state update and a direct edit on the way.
    let golden = tracker.create(owner("researcher")).unwrap().id();
    tracker.start(golden).unwrap();
    tracker.heartbeat(golden).unwrap();
    tracker
        .update_agent_state(
            golden,
            AgentStateUpdate {
                warning_count: Some(1),
                error_count: None,
                metadata: metadata(json!({"step": "search"})),
            },
        )
        .unwrap();
    phases(
        &tracker,
        golden,
        &[
            (Phase::WebsocketSetup, json!({})),
            (Phase::ContextValidation, json!({})),
            (Phase::Starting, json!({"request": "weather"})),
            (Phase::Thinking, json!({"reasoning": "need a forecast"})),
            (Phase::ToolPreparation, json!({})),
            (
                Phase::ToolExecution,
                json!({"tool_name": "forecast", "parameters": {"city": "Paris"}}),
            ),
            (Phase::ResultProcessing, json!({})),
            (Phase::Completing, json!({})),
            (Phase::Completed, json!({"result": "sunny"})),
        ],
    );
    tracker
        .edit(golden, |record| {
            record.metadata.insert("edited".into(), json!(true));
        })
        .unwrap();
    // Its own breaker opens after failed calls, lets a trial through, and closes again.
    for _ in 0..3 {
        tracker.execute(golden, "llm", fail()).await.unwrap_err();
    }
    clock.advance(Duration::from_secs(30));
    for _ in 0..2 {
        tracker.execute(golden, "llm", succeed()).await.unwrap();
    }
    tracker.complete(golden, Some(json!({"answer": "sunny"}))).unwrap();

    // A named breaker, which belongs to no execution.
    let breaker = tracker.breaker("acme/openai");
    for _ in 0..3 {
        breaker.call(fail()).await.unwrap_err();
    }

    // An agent error, then a failure; a cancellation; a timeout; a death.
    let failing = tracker.create(owner("failing")).unwrap().id();
    tracker.start(failing).unwrap();
    phases(
        &tracker,
        failing,
        &[
            (Phase::WebsocketSetup, json!({})),
            (Phase::Failed, json!({"error": "no context"})),
        ],
    );
    tracker.fail(failing, "no context").unwrap();
    let cancelled = tracker.create(owner("cancelled")).unwrap().id();
    tracker.cancel(cancelled, "user left").unwrap();
    let mut slow = owner("slow");
    slow.timeout = Some(Duration::from_secs(1));
    let slow = tracker.create(slow).unwrap().id();
    tracker.start(slow).unwrap();
    let silent = tracker.create(owner("silent")).unwrap().id();
    tracker.start(silent).unwrap();
    // Past the one's execution timeout, within the other's heartbeat timeout; then past that.
    clock.advance(Duration::from_secs(2));
    tracker.sweep();
    clock.advance(tracker.config().heartbeat_timeout * 2);
    tracker.sweep();

    let mut events = Vec::new();
    while let Some(Ok(event)) = tokio::time::timeout(Duration::ZERO, stream.recv()).await.ok().flatten() {
        events.push((*event).clone());
    }
    events
}

/// The first event of each kind the scenario caused, by `type`; fails naming any kind of
/// [`EventKind::NAMES`] it did not cause.
pub async fn one_of_every_kind() -> BTreeMap<&'static str, Event> {
    let mut first = BTreeMap::new();
    for event in scenario().await {
        first.entry(event.kind.name()).or_insert(event);
    }
    let missing: Vec<&str> = EventKind::NAMES
        .iter()
        .copied()
        .filter(|kind| !first.contains_key(kind))
        .collect();
    assert!(
        missing.is_empty(),
        "the scenario in tests/samples causes no {missing:?} event: make it cause one, then decide \
         what each place that reads events does with it"
    );
    first
}
