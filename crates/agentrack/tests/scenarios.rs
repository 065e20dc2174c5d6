//! The 26 integration scenarios of the original tracker's suite (SPEC.md), one test each, in
//! the Rust API's terms.

#![allow(clippy::unwrap_used)]
#![allow(
    clippy::float_cmp,
    reason = "figures come from a manual clock and exact counts, so they compare exactly: an epsilon would hide a change"
)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentrack::{
    AgentStateUpdate, BreakerChange, BreakerState, CallError, Clock, Event, EventFilter, EventKind, ExecutionId,
    ExecutionState, NewExecution, Phase, StateUpdate, TimeoutConfig, TokioClock, Tracker, TrackerConfig, TrackerError,
    Validation,
};
use chrono::TimeZone;
use serde_json::json;

use common::{Note, Recorder, drain, fail_call, manual, meta, ms, names, new, obj, ok_call, secs};

const VALID_STATES: &str = "pending, starting, running, completing, completed, failed, timeout, dead, cancelled";

const TERMINAL: [ExecutionState; 5] = [
    ExecutionState::Completed,
    ExecutionState::Failed,
    ExecutionState::Timeout,
    ExecutionState::Dead,
    ExecutionState::Cancelled,
];

#[test]
fn execution_state_enum_usage_validation_critical_fix() {
    assert_eq!(ExecutionState::VALUES.join(", "), VALID_STATES);

    // The production bug: a JSON object where a state belongs. It is refused, naming the values.
    let error = serde_json::from_value::<ExecutionState>(json!({"state": "completed"})).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("invalid type: map"), "{message}");
    assert!(message.contains(VALID_STATES), "{message}");

    // An unknown string.
    let error = serde_json::from_value::<ExecutionState>(json!("finished")).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("\"finished\" is not a valid execution state; valid values: {VALID_STATES}")
    );
    let parse = "finished".parse::<ExecutionState>().unwrap_err();
    assert_eq!(parse.kind, "execution state");
    assert_eq!(parse.found, "\"finished\"");
    assert_eq!(parse.valid, ExecutionState::VALUES);

    // Any other type: a number, a list, null.
    for value in [json!(3), json!(["running"]), json!(null), json!(true)] {
        let message = serde_json::from_value::<ExecutionState>(value.clone())
            .unwrap_err()
            .to_string();
        assert!(message.starts_with("invalid type"), "{value}: {message}");
        assert!(message.contains(VALID_STATES), "{value}: {message}");
    }

    // Every value string round-trips.
    for state in ExecutionState::ALL {
        assert_eq!(serde_json::to_value(state).unwrap(), json!(state.as_str()));
        assert_eq!(
            serde_json::from_value::<ExecutionState>(json!(state.as_str())).unwrap(),
            *state
        );
        assert_eq!(state.as_str().parse::<ExecutionState>().unwrap(), *state);
    }

    // The typed API: a refused change leaves nothing half-changed, not even the error/result.
    let (tracker, clock) = manual(TrackerConfig::default());
    let id = tracker.create(new("agent", "thread", "user")).unwrap().id();
    tracker.start(id).unwrap();
    tracker.heartbeat(id).unwrap();
    clock.advance(secs(1));
    let before = tracker.get(id).unwrap();
    let refused = tracker
        .set_state(
            id,
            ExecutionState::Pending,
            StateUpdate {
                error: Some("should not be stored".into()),
                result: Some(json!("should not be stored")),
            },
        )
        .unwrap_err();
    assert_eq!(
        refused,
        TrackerError::InvalidLifecycle {
            execution_id: id,
            from: ExecutionState::Running,
            to: ExecutionState::Pending,
            allowed: vec![
                ExecutionState::Completing,
                ExecutionState::Completed,
                ExecutionState::Failed,
                ExecutionState::Timeout,
                ExecutionState::Dead,
                ExecutionState::Cancelled,
            ],
        }
    );
    assert_eq!(tracker.get(id).unwrap(), before);

    let change = tracker
        .set_state(
            id,
            ExecutionState::Completed,
            StateUpdate {
                error: None,
                result: Some(json!({"answer": 42})),
            },
        )
        .unwrap();
    let record = tracker.get(id).unwrap();
    assert_eq!(record.state, ExecutionState::Completed);
    assert_eq!(record.result, Some(json!({"answer": 42})));
    assert_eq!(record.error, None);
    assert_eq!(
        record.completed_at,
        Some(before.updated_at + chrono::TimeDelta::seconds(1))
    );
    assert_eq!(names(&change.events), ["execution_completed"]);
    assert_eq!(serde_json::to_value(&record).unwrap()["state"], json!("completed"));
}

#[test]
fn execution_state_transition_validation() {
    use ExecutionState::*;
    let terminal = [Completed, Failed, Timeout, Dead, Cancelled];
    let with_terminal = |alive: &[ExecutionState]| alive.iter().copied().chain(terminal).collect::<Vec<_>>();
    assert_eq!(Pending.allowed_next(), with_terminal(&[Starting, Running, Completing]));
    assert_eq!(Starting.allowed_next(), with_terminal(&[Running, Completing]));
    assert_eq!(Running.allowed_next(), with_terminal(&[Completing]));
    assert_eq!(Completing.allowed_next(), with_terminal(&[]));
    for state in terminal {
        assert!(state.is_terminal() && !state.is_alive());
        assert!(state.allowed_next().is_empty(), "{state}");
    }
    for state in [Pending, Starting, Running, Completing] {
        assert!(state.is_alive() && !state.is_terminal());
        assert!(!state.can_become(state), "{state} → {state}");
    }

    let tracker = Tracker::new();
    let id = tracker.create(new("agent", "thread", "user")).unwrap().id();
    assert_eq!(tracker.state(id).unwrap(), Pending);
    // A heartbeat on a pending execution counts but does not start it.
    tracker.heartbeat(id).unwrap();
    assert_eq!(tracker.state(id).unwrap(), Pending);
    assert_eq!(tracker.get(id).unwrap().heartbeat_count, 1);

    let change = tracker.start(id).unwrap();
    assert_eq!(tracker.state(id).unwrap(), Starting);
    assert!(matches!(
        change.events[0].kind,
        EventKind::StateChanged {
            from: Pending,
            to: Starting
        }
    ));
    assert_eq!(
        tracker.start(id).unwrap_err(),
        TrackerError::InvalidLifecycle {
            execution_id: id,
            from: Starting,
            to: Starting,
            allowed: Starting.allowed_next(),
        }
    );
    let change = tracker.heartbeat(id).unwrap();
    assert_eq!(names(&change.events), ["state_changed", "heartbeat"]);
    assert_eq!(tracker.state(id).unwrap(), Running);
    assert_eq!(tracker.get(id).unwrap().heartbeat_count, 2);

    tracker.set_state(id, Completing, StateUpdate::default()).unwrap();
    assert_eq!(tracker.state(id).unwrap(), Completing);
    assert!(matches!(
        tracker.set_state(id, Running, StateUpdate::default()),
        Err(TrackerError::InvalidLifecycle {
            from: Completing,
            to: Running,
            ..
        })
    ));
    tracker.complete(id, None).unwrap();
    assert_eq!(tracker.state(id).unwrap(), Completed);
    assert_eq!(
        tracker.start(id).unwrap_err(),
        TrackerError::Terminal {
            execution_id: id,
            state: Completed
        }
    );

    // Lenient lifecycle: any alive state may become any state, as in the original.
    let lenient = Tracker::with_config(TrackerConfig {
        lifecycle_validation: Validation::Lenient,
        ..TrackerConfig::default()
    });
    let id = lenient.create(new("agent", "thread", "user")).unwrap().id();
    lenient.set_state(id, Completing, StateUpdate::default()).unwrap();
    lenient.set_state(id, Pending, StateUpdate::default()).unwrap();
    assert_eq!(lenient.state(id).unwrap(), Pending);
    lenient.set_state(id, Failed, StateUpdate::default()).unwrap();
    assert!(matches!(
        lenient.set_state(id, Running, StateUpdate::default()),
        Err(TrackerError::Terminal { state: Failed, .. })
    ));
}

#[test]
fn terminal_state_handling_and_cleanup() {
    let (tracker, clock) = manual(TrackerConfig {
        history_cap: 3,
        ..TrackerConfig::default()
    });
    let alive = tracker.create(new("agent", "t-alive", "user")).unwrap().id();
    let mut ids = Vec::new();
    for (i, state) in TERMINAL.into_iter().enumerate() {
        let id = tracker.create(new("agent", &format!("t{i}"), "user")).unwrap().id();
        tracker.start(id).unwrap();
        clock.advance(secs(1));
        let error = (state != ExecutionState::Completed).then(|| format!("reason {i}"));
        let change = tracker
            .set_state(
                id,
                state,
                StateUpdate {
                    error: error.clone(),
                    result: None,
                },
            )
            .unwrap();
        let finished = change.events[0].kind.finished().expect("a terminal event");
        assert_eq!(finished.state, state);
        assert_eq!(finished.from, ExecutionState::Starting);
        assert_eq!(finished.error, error);
        let record = tracker.get(id).unwrap();
        assert!(record.is_terminal() && !record.is_alive());
        assert_eq!(record.completed_at, Some(clock.now()));
        assert_eq!(record.error, error);
        assert_eq!(tracker.active_count(), 1);
        ids.push(id);
    }
    let metrics = tracker.metrics();
    assert_eq!(
        (
            metrics.total_executions,
            metrics.active_executions,
            metrics.successful_executions,
            metrics.failed_executions,
            metrics.timeout_executions,
            metrics.dead_executions,
            metrics.cancelled_executions
        ),
        (6, 1, 1, 1, 1, 1, 1)
    );
    assert_eq!(
        tracker.active().iter().map(|r| r.execution_id).collect::<Vec<_>>(),
        [alive]
    );

    // An alive execution cannot be cleaned up.
    assert_eq!(
        tracker.cleanup(alive).unwrap_err(),
        TrackerError::StillAlive {
            execution_id: alive,
            state: ExecutionState::Pending
        }
    );
    assert!(tracker.get(alive).is_ok());

    for (i, id) in ids.iter().enumerate() {
        let record = tracker.cleanup(*id).unwrap();
        assert_eq!(record.state, TERMINAL[i]);
        assert_eq!(
            tracker.get(*id).unwrap_err(),
            TrackerError::NotFound { execution_id: *id }
        );
        assert!(tracker.by_thread(&format!("t{i}")).is_empty());
        assert_eq!(tracker.by_agent("agent").len(), 1 + ids.len() - i - 1);
        assert_eq!(
            tracker.cleanup(*id).unwrap_err(),
            TrackerError::NotFound { execution_id: *id }
        );
    }
    assert_eq!(tracker.len(), 1);
    assert_eq!(tracker.by_user("user").len(), 1);
    // The completed history keeps the latest `history_cap` (3).
    let history: Vec<ExecutionId> = tracker.completed_history().iter().map(|r| r.execution_id).collect();
    assert_eq!(history, ids[2..]);
    // Counters survive cleanup.
    assert_eq!(tracker.metrics(), metrics);
    assert!(
        tracker.check_consistency().is_empty(),
        "{:?}",
        tracker.check_consistency()
    );
}

#[test]
fn phase_transition_validation_from_consolidated_state_tracker() {
    use Phase::*;
    let rules: [(Phase, &[Phase]); 14] = [
        (Created, &[WebsocketSetup, Failed]),
        (WebsocketSetup, &[ContextValidation, Failed]),
        (ContextValidation, &[Starting, Failed]),
        (Starting, &[Thinking, Failed, Timeout]),
        (Thinking, &[ToolPreparation, LlmInteraction, Failed, Timeout]),
        (ToolPreparation, &[ToolExecution, LlmInteraction, Failed, Timeout]),
        (
            LlmInteraction,
            &[
                Thinking,
                ToolExecution,
                ResultProcessing,
                Failed,
                Timeout,
                CircuitBreakerOpen,
            ],
        ),
        (
            ToolExecution,
            &[Thinking, LlmInteraction, ResultProcessing, Failed, Timeout],
        ),
        (ResultProcessing, &[Completing, Thinking, Failed, Timeout]),
        (Completing, &[Completed, Failed, Timeout]),
        (Completed, &[]),
        (Timeout, &[]),
        (Failed, &[]),
        (CircuitBreakerOpen, &[]),
    ];
    assert_eq!(Phase::ALL.len(), 14);
    let mut allowed_pairs = 0;
    for (from, allowed) in rules {
        let expected: HashSet<Phase> = allowed.iter().copied().collect();
        let actual: HashSet<Phase> = from.allowed_next().iter().copied().collect();
        assert_eq!(actual, expected, "from {from}");
        for to in Phase::ALL {
            assert_eq!(from.can_transition_to(*to), expected.contains(to), "{from} → {to}");
            allowed_pairs += usize::from(from.can_transition_to(*to));
        }
    }
    assert_eq!(allowed_pairs, 35);

    let tracker = Tracker::new();
    let id = tracker.create(new("agent", "thread", "user")).unwrap().id();
    assert_eq!(
        tracker.transition(id, Thinking, None).unwrap_err(),
        TrackerError::InvalidTransition {
            execution_id: id,
            from: Created,
            to: Thinking,
            allowed: &[WebsocketSetup, Failed],
        }
    );
    for phase in [
        WebsocketSetup,
        ContextValidation,
        Starting,
        Thinking,
        ToolPreparation,
        LlmInteraction,
        CircuitBreakerOpen,
    ] {
        tracker.transition(id, phase, None).unwrap();
        assert_eq!(tracker.get(id).unwrap().current_phase, phase);
    }
    let error = tracker.transition(id, Thinking, None).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "execution {id} cannot go from phase circuit_breaker_open to thinking; allowed from circuit_breaker_open: none (final)"
        )
    );
    assert_eq!(tracker.phase_history(id).unwrap().len(), 7);
    assert!(tracker.phase_history(id).unwrap().iter().all(|t| t.valid));
}

#[tokio::test]
async fn websocket_event_emission_during_phase_transitions() {
    let (tracker, clock) = manual(TrackerConfig::default());
    let recorder = Recorder::default();
    let id = tracker.create(new("ws-agent", "thread-ws", "user-ws")).unwrap().id();
    let steps = notifying_steps();
    let mut expected_notes = Vec::new();
    for (phase, metadata, note) in steps {
        let transition = tracker.transition_notify(id, phase, metadata, &recorder).await.unwrap();
        assert_eq!(transition.to_phase, phase);
        assert_eq!(transition.websocket_event_sent, note.is_some(), "{phase}");
        expected_notes.extend(note);
        assert_eq!(recorder.notes(), expected_notes, "after {phase}");
    }
    let sent: Vec<bool> = tracker
        .phase_history(id)
        .unwrap()
        .iter()
        .map(|t| t.websocket_event_sent)
        .collect();
    assert_eq!(sent, [false, false, true, true, true, true, true, true]);

    // COMPLETED → agent_completed with the original's summary and the time since creation.
    let recorder = Recorder::default();
    let id = tracker.create(new("ws-agent", "thread-2", "user-ws")).unwrap().id();
    for phase in [
        Phase::WebsocketSetup,
        Phase::ContextValidation,
        Phase::Starting,
        Phase::Thinking,
        Phase::LlmInteraction,
        Phase::ResultProcessing,
        Phase::Completing,
    ] {
        tracker.transition(id, phase, None).unwrap();
    }
    clock.advance(ms(2500));
    tracker
        .transition_notify(id, Phase::Completed, meta(json!({"result": "done"})), &recorder)
        .await
        .unwrap();
    assert_eq!(
        recorder.notes(),
        [Note::Completed {
            run_id: "thread-2".into(),
            agent: "ws-agent".into(),
            result: json!({
                "success": true,
                "total_duration_ms": 2500.0,
                "phase_count": 8,
                "warnings": 0,
                "metadata": {},
            }),
            execution_time_ms: 2500,
        }]
    );

    // FAILED and TIMEOUT → agent_error with the original's fixed messages.
    let recorder = Recorder::default();
    let failed = tracker.create(new("ws-agent", "thread-3", "user-ws")).unwrap().id();
    tracker
        .transition_notify(failed, Phase::Failed, None, &recorder)
        .await
        .unwrap();
    let timed = tracker.create(new("ws-agent", "thread-4", "user-ws")).unwrap().id();
    for phase in [Phase::WebsocketSetup, Phase::ContextValidation, Phase::Starting] {
        tracker.transition(timed, phase, None).unwrap();
    }
    tracker
        .transition_notify(timed, Phase::Timeout, None, &recorder)
        .await
        .unwrap();
    assert_eq!(
        recorder.notes(),
        [
            Note::Error {
                run_id: "thread-3".into(),
                agent: "ws-agent".into(),
                error: "Agent execution failed".into(),
                context: json!({"phase": "failed", "total_duration_ms": 0.0, "metadata": {}}),
            },
            Note::Error {
                run_id: "thread-4".into(),
                agent: "ws-agent".into(),
                error: "Agent execution timed out".into(),
                context: json!({"phase": "timeout", "total_duration_ms": 0.0, "metadata": {}}),
            }
        ]
    );

    // A failing manager: the transition stands, marked not sent.
    let broken = Recorder::failing();
    let id = tracker.create(new("ws-agent", "thread-5", "user-ws")).unwrap().id();
    tracker.transition(id, Phase::WebsocketSetup, None).unwrap();
    tracker.transition(id, Phase::ContextValidation, None).unwrap();
    let transition = tracker
        .transition_notify(id, Phase::Starting, None, &broken)
        .await
        .unwrap();
    assert!(!transition.websocket_event_sent);
    assert_eq!(broken.notes().len(), 1);
    let record = tracker.get(id).unwrap();
    assert_eq!(record.current_phase, Phase::Starting);
    assert_eq!(record.phase_history.len(), 3);
    assert!(!record.phase_history[2].websocket_event_sent);
}

/// A phase, its metadata, and the notification entering it should send.
type Step = (Phase, Option<serde_json::Map<String, serde_json::Value>>, Option<Note>);

/// The phases `websocket_event_emission_during_phase_transitions` walks, each with what it
/// should notify.
fn notifying_steps() -> Vec<Step> {
    vec![
        (Phase::WebsocketSetup, None, None),
        (Phase::ContextValidation, None, None),
        (
            Phase::Starting,
            meta(json!({"request": "hi"})),
            Some(Note::Started {
                run_id: "thread-ws".into(),
                agent: "ws-agent".into(),
                context: json!({"phase": "starting", "total_duration_ms": 0.0, "metadata": {"request": "hi"}}),
            }),
        ),
        (
            Phase::Thinking,
            meta(json!({"reasoning": "plan"})),
            Some(Note::Thinking {
                run_id: "thread-ws".into(),
                agent: "ws-agent".into(),
                reasoning: "Agent is thinking... (step 4)".into(),
                step: 4,
            }),
        ),
        (
            Phase::ToolPreparation,
            None,
            Some(Note::Thinking {
                run_id: "thread-ws".into(),
                agent: "ws-agent".into(),
                reasoning: "Preparing tools for execution...".into(),
                step: 5,
            }),
        ),
        (
            Phase::ToolExecution,
            meta(json!({"tool_name": "search", "parameters": {"q": "rust"}})),
            Some(Note::Tool {
                run_id: "thread-ws".into(),
                agent: "ws-agent".into(),
                tool: "execution_tools".into(),
                parameters: json!({"tool_name": "search", "parameters": {"q": "rust"}}),
            }),
        ),
        (
            Phase::LlmInteraction,
            None,
            Some(Note::Thinking {
                run_id: "thread-ws".into(),
                agent: "ws-agent".into(),
                reasoning: "Interacting with AI language model...".into(),
                step: 7,
            }),
        ),
        (
            Phase::CircuitBreakerOpen,
            meta(json!({"error": "provider down"})),
            Some(Note::Error {
                run_id: "thread-ws".into(),
                agent: "ws-agent".into(),
                error: "Service temporarily unavailable".into(),
                context: json!({
                    "phase": "circuit_breaker_open",
                    "total_duration_ms": 0.0,
                    "metadata": {"error": "provider down"},
                }),
            }),
        ),
    ]
}

#[test]
fn state_history_tracking_and_retrieval() {
    let start = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let clock = agentrack::ManualClock::starting_at(start);
    let tracker = Tracker::with_clock(TrackerConfig::default(), Arc::new(clock.clone()));
    let id = tracker.create(new("agent", "thread", "user")).unwrap().id();
    assert!(tracker.phase_history(id).unwrap().is_empty());

    let steps = [
        (100, Phase::WebsocketSetup),
        (200, Phase::ContextValidation),
        (300, Phase::Starting),
        (400, Phase::Thinking),
    ];
    for (i, (wait, phase)) in steps.iter().enumerate() {
        clock.advance(ms(*wait));
        tracker.transition(id, *phase, meta(json!({"step": i + 1}))).unwrap();
    }
    let history = tracker.phase_history(id).unwrap();
    assert_eq!(history, tracker.get(id).unwrap().phase_history);
    let pairs: Vec<(Phase, Phase)> = history.iter().map(|t| (t.from_phase, t.to_phase)).collect();
    assert_eq!(
        pairs,
        [
            (Phase::Created, Phase::WebsocketSetup),
            (Phase::WebsocketSetup, Phase::ContextValidation),
            (Phase::ContextValidation, Phase::Starting),
            (Phase::Starting, Phase::Thinking),
        ]
    );
    let offsets: Vec<i64> = history
        .iter()
        .map(|t| (t.timestamp - start).num_milliseconds())
        .collect();
    assert_eq!(offsets, [100, 300, 600, 1000]);
    let durations: Vec<u64> = history.iter().map(|t| t.duration_ms).collect();
    assert_eq!(durations, [100, 200, 300, 400]);
    for (i, transition) in history.iter().enumerate() {
        assert_eq!(transition.metadata, obj(json!({"step": i + 1})));
        assert!(transition.valid);
        assert!(!transition.websocket_event_sent);
    }
    // As the original's dicts: phases as value strings, ISO timestamps.
    assert_eq!(
        serde_json::to_value(&history[0]).unwrap(),
        json!({
            "from_phase": "created",
            "to_phase": "websocket_setup",
            "timestamp": "2026-01-01T00:00:00.100Z",
            "duration_ms": 100,
            "metadata": {"step": 1},
            "websocket_event_sent": false,
            "valid": true,
        })
    );

    // The history outlives completion, and goes with the record at cleanup.
    tracker.complete(id, None).unwrap();
    assert_eq!(tracker.phase_history(id).unwrap().len(), 4);
    let record = tracker.cleanup(id).unwrap();
    assert_eq!(record.phase_history, history);
    assert_eq!(
        tracker.phase_history(id).unwrap_err(),
        TrackerError::NotFound { execution_id: id }
    );
}

#[test]
fn agent_state_management_and_updates() {
    let (tracker, clock) = manual(TrackerConfig::default());
    let id = tracker
        .create(new("analyst", "thread-7", "user-7").metadata(obj(json!({"model": "gpt", "lang": "en"}))))
        .unwrap()
        .id();
    clock.advance(secs(1));
    tracker.transition(id, Phase::WebsocketSetup, None).unwrap();
    clock.advance(secs(2));

    let state = tracker.agent_state(id).unwrap();
    assert_eq!(state.execution_id, id);
    assert_eq!(state.agent_name, "analyst");
    assert_eq!(state.user_id, "user-7");
    assert_eq!(state.thread_id, "thread-7");
    assert_eq!(state.state, ExecutionState::Pending);
    assert_eq!(state.current_phase, Phase::WebsocketSetup);
    assert_eq!(state.total_duration_ms, 3000);
    assert_eq!(state.current_phase_duration_ms, 2000);
    assert_eq!(state.phase_count, 1);
    assert_eq!((state.warning_count, state.error_count), (0, 0));
    assert_eq!(state.metadata, obj(json!({"model": "gpt", "lang": "en"})));
    assert_eq!(state.last_heartbeat, state.started_at + chrono::TimeDelta::seconds(1));

    let change = tracker
        .update_agent_state(
            id,
            AgentStateUpdate {
                warning_count: Some(2),
                error_count: Some(1),
                metadata: Some(obj(json!({"lang": "fr", "step": 3}))),
            },
        )
        .unwrap();
    let merged = obj(json!({"model": "gpt", "lang": "fr", "step": 3}));
    assert_eq!(
        change.events[0].kind,
        EventKind::AgentStateUpdated {
            warning_count: 2,
            error_count: 1,
            metadata: merged.clone(),
        }
    );
    tracker
        .update_agent_state(
            id,
            AgentStateUpdate {
                error_count: Some(5),
                ..AgentStateUpdate::default()
            },
        )
        .unwrap();
    let state = tracker.agent_state(id).unwrap();
    assert_eq!((state.warning_count, state.error_count), (2, 5));
    assert_eq!(state.metadata, merged);
    let record = tracker.get(id).unwrap();
    assert_eq!((record.warning_count, record.error_count), (2, 5));

    // After completion the current phase's duration is frozen; updates are refused.
    tracker.complete(id, None).unwrap();
    clock.advance(secs(5));
    assert_eq!(tracker.agent_state(id).unwrap().current_phase_duration_ms, 2000);
    assert_eq!(tracker.agent_state(id).unwrap().state, ExecutionState::Completed);
    assert_eq!(
        tracker.update_agent_state(id, AgentStateUpdate::default()).unwrap_err(),
        TrackerError::Terminal {
            execution_id: id,
            state: ExecutionState::Completed
        }
    );
    let unknown = ExecutionId::new();
    assert_eq!(
        tracker.agent_state(unknown).unwrap_err(),
        TrackerError::NotFound { execution_id: unknown }
    );
}

#[test]
fn timeout_configuration_and_validation() {
    let defaults = TimeoutConfig::default();
    assert_eq!(defaults.agent_execution_timeout, secs(25));
    assert_eq!(defaults.llm_api_timeout, secs(15));
    assert_eq!(defaults.failure_threshold, 3);
    assert_eq!(defaults.recovery_timeout, secs(30));
    assert_eq!(defaults.success_threshold, 2);
    assert_eq!(defaults.max_retries, 2);
    assert_eq!(defaults.retry_base_delay, secs(1));
    assert_eq!(defaults.retry_max_delay, secs(5));
    assert_eq!(defaults.retry_exponential_base, 2.0);
    let config = TrackerConfig::default();
    assert_eq!(config.heartbeat_timeout, secs(10));
    assert_eq!(config.execution_timeout, secs(15));
    assert_eq!(config.cleanup_age, secs(60));
    assert_eq!(config.phase_validation, Validation::Strict);

    // From JSON (fractional seconds), missing fields defaulted.
    let parsed: TimeoutConfig = serde_json::from_value(json!({"llm_api_timeout": 7.5, "max_retries": 4})).unwrap();
    assert_eq!(parsed.llm_api_timeout, ms(7500));
    assert_eq!(parsed.max_retries, 4);
    assert_eq!(parsed.recovery_timeout, secs(30));
    assert_eq!(
        serde_json::to_value(defaults).unwrap()["agent_execution_timeout"],
        json!(25.0)
    );

    let (tracker, clock) = manual(TrackerConfig::default());
    assert_eq!(tracker.default_timeout(), secs(15));
    let default = tracker.create(new("a", "t", "u")).unwrap().id();
    let explicit = tracker.create(new("a", "t", "u").timeout(secs(60))).unwrap().id();
    let from_config = tracker
        .create(new("a", "t", "u").timeout_config(TimeoutConfig {
            agent_execution_timeout: secs(40),
            ..TimeoutConfig::default()
        }))
        .unwrap()
        .id();
    assert_eq!(tracker.get(default).unwrap().timeout, secs(15));
    assert_eq!(tracker.get(explicit).unwrap().timeout, secs(60));
    assert_eq!(tracker.get(from_config).unwrap().timeout, secs(40));
    assert_eq!(
        tracker.create(new("a", "t", "u").timeout(Duration::ZERO)).unwrap_err(),
        TrackerError::InvalidInput {
            field: "timeout",
            reason: "must be greater than zero".into()
        }
    );
    assert!(matches!(
        tracker.create(new("  ", "t", "u")),
        Err(TrackerError::InvalidInput {
            field: "agent_name",
            ..
        })
    ));

    clock.advance(secs(3));
    let status = tracker.timeout_status(default).unwrap();
    assert_eq!(status.execution_id, default);
    assert_eq!(status.elapsed_seconds, 3.0);
    assert_eq!(status.timeout_seconds, 15.0);
    assert!(!status.is_timed_out);
    assert_eq!(status.time_until_timeout, 12.0);
    assert_eq!(status.circuit_breaker_state, BreakerState::Closed);
    assert_eq!(status.circuit_breaker_failures, 0);

    // A per-execution config replaces the timeout and the breaker settings.
    let custom = TimeoutConfig {
        agent_execution_timeout: secs(5),
        failure_threshold: 1,
        ..TimeoutConfig::default()
    };
    tracker.set_timeout_config(default, custom).unwrap();
    let record = tracker.get(default).unwrap();
    assert_eq!(record.timeout, secs(5));
    assert_eq!(record.timeout_config.as_deref(), Some(&custom));
    assert_eq!(tracker.breaker_status(default).unwrap().failure_threshold, 1);
    assert!(matches!(
        tracker.set_timeout_config(
            default,
            TimeoutConfig {
                agent_execution_timeout: Duration::ZERO,
                ..custom
            }
        ),
        Err(TrackerError::InvalidInput {
            field: "agent_execution_timeout",
            ..
        })
    ));

    clock.advance(secs(3));
    let status = tracker.timeout_status(default).unwrap();
    assert_eq!(status.elapsed_seconds, 6.0);
    assert!(status.is_timed_out);
    assert_eq!(status.time_until_timeout, 0.0);
    let sweep = tracker.sweep();
    assert_eq!(sweep.timed_out.len(), 1);
    assert_eq!(sweep.timed_out[0].execution_id, default);
    assert_eq!(
        sweep.timed_out[0].error.as_deref(),
        Some("Execution exceeded 5 s timeout")
    );
    assert_eq!(tracker.state(explicit).unwrap(), ExecutionState::Pending);
}

#[tokio::test]
async fn circuit_breaker_functionality_and_states() {
    for (state, value) in [
        (BreakerState::Closed, "closed"),
        (BreakerState::Open, "open"),
        (BreakerState::HalfOpen, "half_open"),
    ] {
        assert_eq!(state.as_str(), value);
        assert_eq!(value.parse::<BreakerState>().unwrap(), state);
    }
    assert_eq!(
        "half-open".parse::<BreakerState>().unwrap_err().to_string(),
        "\"half-open\" is not a valid circuit breaker state; valid values: closed, open, half_open"
    );

    let (tracker, clock) = manual(TrackerConfig::default());
    let id = tracker.create(new("agent", "thread", "user")).unwrap().id();
    let status = tracker.breaker_status(id).unwrap();
    assert_eq!(status.name, format!("execution:{id}"));
    assert_eq!(status.state, BreakerState::Closed);
    assert_eq!(status.failure_count, 0);
    assert_eq!(status.failure_threshold, 3);
    assert_eq!(status.success_count, 0);
    assert_eq!(status.last_failure_time, None);
    assert_eq!(status.next_attempt_time, None);
    assert!(!status.is_open);
    assert!(status.can_retry);
    assert_eq!(status.recovery_timeout, 30.0);

    assert!(matches!(
        tracker.execute(id, "llm", fail_call()).await,
        Err(CallError::Operation("503"))
    ));
    let status = tracker.breaker_status(id).unwrap();
    assert_eq!(status.failure_count, 1);
    assert_eq!(status.state, BreakerState::Closed);
    assert_eq!(status.last_failure_time, Some(clock.now()));
    let record = tracker.get(id).unwrap();
    assert_eq!(record.circuit_breaker_failures, 1);
    assert_eq!(record.last_failure_time, Some(clock.now()));

    tracker.execute(id, "llm", fail_call()).await.unwrap_err();
    assert_eq!(tracker.breaker_status(id).unwrap().failure_count, 2);
    // A success while closed zeroes the count.
    assert_eq!(tracker.execute(id, "llm", ok_call(7)).await.unwrap(), 7);
    assert_eq!(tracker.breaker_status(id).unwrap().failure_count, 0);
    assert_eq!(tracker.get(id).unwrap().circuit_breaker_failures, 0);

    for _ in 0..3 {
        tracker.execute(id, "llm", fail_call()).await.unwrap_err();
    }
    let status = tracker.breaker_status(id).unwrap();
    assert_eq!(status.state, BreakerState::Open);
    assert_eq!(status.failure_count, 3);
    assert!(status.is_open);
    assert!(!status.can_retry);
    assert_eq!(status.next_attempt_time, Some(clock.now() + secs(30)));
    assert_eq!(tracker.get(id).unwrap().circuit_breaker_state, BreakerState::Open);
    let timeout_status = tracker.timeout_status(id).unwrap();
    assert_eq!(timeout_status.circuit_breaker_state, BreakerState::Open);
    assert_eq!(timeout_status.circuit_breaker_failures, 3);

    tracker.reset_breaker(id).unwrap();
    let status = tracker.breaker_status(id).unwrap();
    assert_eq!(
        (
            status.state,
            status.failure_count,
            status.next_attempt_time,
            status.last_failure_time
        ),
        (BreakerState::Closed, 0, None, None)
    );
    let record = tracker.get(id).unwrap();
    assert_eq!(record.circuit_breaker_state, BreakerState::Closed);
    assert_eq!(record.circuit_breaker_failures, 0);
    assert_eq!(record.next_attempt_time, None);
    assert_eq!(tracker.execute(id, "llm", ok_call(8)).await.unwrap(), 8);
}

#[tokio::test]
async fn circuit_breaker_failure_and_recovery_cycle() {
    let (tracker, clock) = manual(TrackerConfig::default());
    let id = tracker
        .create(new("agent", "thread", "user").timeout(secs(600)))
        .unwrap()
        .id();
    let name = format!("execution:{id}");
    let mut events = tracker.subscribe(EventFilter {
        execution_id: Some(id),
        ..EventFilter::default()
    });

    for cycle in 0..2 {
        for _ in 0..3 {
            tracker.execute(id, "llm", fail_call()).await.unwrap_err();
        }
        let opened_at = clock.now();
        let status = tracker.breaker_status(id).unwrap();
        assert_eq!(status.state, BreakerState::Open, "cycle {cycle}");
        assert_eq!(status.next_attempt_time, Some(opened_at + secs(30)));

        clock.advance(secs(29));
        let refused = tracker.execute(id, "llm", ok_call(1)).await.unwrap_err();
        assert!(matches!(
            refused,
            CallError::Tracker(TrackerError::CircuitOpen { retry_after, .. }) if retry_after == secs(1)
        ));

        clock.advance(secs(1));
        assert_eq!(tracker.execute(id, "llm", ok_call(2)).await.unwrap(), 2);
        let status = tracker.breaker_status(id).unwrap();
        assert_eq!(status.state, BreakerState::HalfOpen);
        assert_eq!(status.success_count, 1);
        assert_eq!(tracker.get(id).unwrap().circuit_breaker_state, BreakerState::HalfOpen);

        assert_eq!(tracker.execute(id, "llm", ok_call(3)).await.unwrap(), 3);
        let status = tracker.breaker_status(id).unwrap();
        assert_eq!(status.state, BreakerState::Closed);
        assert_eq!(status.failure_count, 0);
        assert_eq!(status.next_attempt_time, None);

        let kinds: Vec<EventKind> = drain(&mut events)
            .iter()
            .map(|e| e.kind.clone())
            .filter(|k| k.name().starts_with("breaker_"))
            .collect();
        assert_eq!(
            kinds,
            [
                EventKind::BreakerOpened(BreakerChange {
                    breaker: name.clone(),
                    state: BreakerState::Open,
                    failures: 3,
                    retry_after_seconds: Some(30.0),
                }),
                EventKind::BreakerHalfOpen(BreakerChange {
                    breaker: name.clone(),
                    state: BreakerState::HalfOpen,
                    failures: 3,
                    retry_after_seconds: None,
                }),
                EventKind::BreakerClosed(BreakerChange {
                    breaker: name.clone(),
                    state: BreakerState::Closed,
                    failures: 0,
                    retry_after_seconds: None,
                }),
            ],
            "cycle {cycle}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn execute_with_circuit_breaker_protection() {
    let tracker = Tracker::with_clock(TrackerConfig::default(), Arc::new(TokioClock::new()));
    let id = tracker
        .create(new("agent", "thread", "user").timeout(secs(600)))
        .unwrap()
        .id();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = |result: Result<u32, std::io::Error>| {
        let runs = Arc::clone(&runs);
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            result
        }
    };

    // Success: the value comes back; the breaker stays closed.
    assert_eq!(tracker.execute(id, "chat", counted(Ok(42))).await.unwrap(), 42);
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // The call's own error comes back unchanged and counts as a failure.
    let error = tracker
        .execute(
            id,
            "chat",
            counted(Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset"))),
        )
        .await
        .unwrap_err();
    match error {
        CallError::Operation(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset),
        other @ CallError::Tracker(_) => panic!("expected the call's error, got {other:?}"),
    }
    assert_eq!(tracker.breaker_status(id).unwrap().failure_count, 1);

    // A call that overruns llm_api_timeout (15 s) is cut off at 15 s and counts as a failure.
    let started = tokio::time::Instant::now();
    let slow = tracker
        .execute(id, "slow-chat", async {
            tokio::time::sleep(secs(20)).await;
            Ok::<u32, std::io::Error>(1)
        })
        .await
        .unwrap_err();
    assert_eq!(started.elapsed(), secs(15));
    assert!(slow.is_timeout());
    assert!(matches!(
        &slow,
        CallError::Tracker(TrackerError::Timeout { operation, after }) if operation == "slow-chat" && *after == secs(15)
    ));
    assert_eq!(tracker.breaker_status(id).unwrap().failure_count, 2);
    assert_eq!(tracker.get(id).unwrap().circuit_breaker_failures, 2);

    // The third failure opens the breaker: the next call does not run.
    tracker
        .execute(id, "chat", counted(Err(std::io::Error::other("500"))))
        .await
        .unwrap_err();
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    let refused = tracker.execute(id, "chat", counted(Ok(1))).await.unwrap_err();
    assert!(refused.is_circuit_open());
    assert_eq!(runs.load(Ordering::SeqCst), 3);

    // Unknown and finished executions: refused without running the call.
    let unknown = ExecutionId::new();
    assert!(matches!(
        tracker.execute(unknown, "chat", counted(Ok(1))).await,
        Err(CallError::Tracker(TrackerError::NotFound { execution_id })) if execution_id == unknown
    ));
    let done = tracker.create(new("agent", "thread", "user")).unwrap().id();
    tracker.complete(done, None).unwrap();
    assert!(matches!(
        tracker.execute(done, "chat", counted(Ok(1))).await,
        Err(CallError::Tracker(TrackerError::Terminal {
            state: ExecutionState::Completed,
            ..
        }))
    ));
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

#[test]
fn heartbeat_monitoring_and_death_detection() {
    let (tracker, clock) = manual(TrackerConfig {
        heartbeat_timeout: secs(10),
        execution_timeout: secs(100),
        ..TrackerConfig::default()
    });
    let id = tracker.create(new("agent", "thread", "user")).unwrap().id();
    tracker.start(id).unwrap();
    let change = tracker.heartbeat(id).unwrap();
    assert_eq!(names(&change.events), ["state_changed", "heartbeat"]);
    let record = tracker.get(id).unwrap();
    assert_eq!(record.state, ExecutionState::Running);
    assert_eq!(record.heartbeat_count, 1);
    assert_eq!(record.last_heartbeat, clock.now());

    clock.advance(secs(9));
    assert!(tracker.detect_dead().is_empty());
    assert!(!tracker.get(id).unwrap().is_dead(secs(10), clock.now()));
    tracker.heartbeat(id).unwrap();
    clock.advance(secs(9)); // t = 18: 18 s since creation, 9 s since the heartbeat
    let sweep = tracker.sweep();
    assert!(sweep.dead.is_empty());
    assert_eq!(sweep.rearmed, 1);
    tracker.heartbeat(id).unwrap();
    assert_eq!(tracker.get(id).unwrap().heartbeat_count, 3);

    let other = tracker.create(new("agent", "thread-2", "user")).unwrap().id();
    clock.advance(secs(7));
    tracker.heartbeat(other).unwrap();
    clock.advance(secs(4)); // t = 29: 11 s without a heartbeat

    let detected = tracker.detect_dead();
    assert_eq!(detected.iter().map(|r| r.execution_id).collect::<Vec<_>>(), [id]);
    assert_eq!(detected[0].state, ExecutionState::Running, "detection only reports");
    assert!(tracker.get(id).unwrap().is_dead(secs(10), clock.now()));
    assert_eq!(tracker.state(id).unwrap(), ExecutionState::Running);

    let sweep = tracker.sweep();
    assert_eq!(sweep.dead.len(), 1);
    assert!(sweep.timed_out.is_empty());
    let dead = &sweep.dead[0];
    assert_eq!(dead.execution_id, id);
    assert_eq!(dead.state, ExecutionState::Dead);
    assert_eq!(dead.error.as_deref(), Some("No heartbeat for 11.0 s"));
    assert_eq!(tracker.state(id).unwrap(), ExecutionState::Dead);
    assert_eq!(tracker.state(other).unwrap(), ExecutionState::Pending);
    assert_eq!(
        tracker.heartbeat(id).unwrap_err(),
        TrackerError::Terminal {
            execution_id: id,
            state: ExecutionState::Dead
        }
    );
    assert!(tracker.detect_dead().is_empty());
    assert_eq!(tracker.metrics().dead_executions, 1);
    assert_eq!(tracker.metrics().active_executions, 1);
    let unknown = ExecutionId::new();
    assert_eq!(
        tracker.heartbeat(unknown).unwrap_err(),
        TrackerError::NotFound { execution_id: unknown }
    );
}

#[tokio::test(start_paused = true)]
async fn background_monitoring_task_functionality() {
    type Seen = Vec<(ExecutionId, ExecutionState, Option<String>)>;
    let tracker = Tracker::with_clock(
        TrackerConfig {
            heartbeat_timeout: secs(10),
            execution_timeout: secs(1000),
            cleanup_age: secs(60),
            monitor_interval: secs(1),
            ..TrackerConfig::default()
        },
        Arc::new(TokioClock::new()),
    );
    let seen: Arc<Mutex<Seen>> = Arc::default();
    // A failing callback is logged and does not stop the next one.
    tracker.on_dead(|_record| async { Err::<(), agentrack::NotifyError>("callback failure".into()) });
    let sink = Arc::clone(&seen);
    tracker.on_dead(move |record| {
        let sink = Arc::clone(&sink);
        async move {
            sink.lock()
                .unwrap()
                .push((record.execution_id, record.state, record.error.clone()));
            Ok(())
        }
    });

    let handle = tracker.spawn_monitor();
    assert!(handle.is_running());
    let silent = tracker.create(new("agent", "thread-1", "user")).unwrap().id();
    tracker.start(silent).unwrap();
    let alive = tracker.create(new("agent", "thread-2", "user")).unwrap().id();

    for _ in 0..12 {
        tokio::time::sleep(secs(1)).await;
        tracker.heartbeat(alive).unwrap();
    }
    assert_eq!(tracker.state(silent).unwrap(), ExecutionState::Dead);
    assert_eq!(tracker.state(alive).unwrap(), ExecutionState::Pending);
    assert_eq!(
        *seen.lock().unwrap(),
        [(silent, ExecutionState::Dead, Some("No heartbeat for 11.0 s".to_owned()))]
    );

    // The monitor purges finished records older than cleanup_age (60 s).
    for _ in 0..62 {
        tokio::time::sleep(secs(1)).await;
        tracker.heartbeat(alive).unwrap();
    }
    assert_eq!(
        tracker.get(silent).unwrap_err(),
        TrackerError::NotFound { execution_id: silent }
    );
    assert_eq!(tracker.metrics().dead_executions, 1);
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert!(handle.is_running());

    // Stopped: nothing is marked any more.
    handle.stop().await;
    tokio::time::sleep(secs(30)).await;
    assert_eq!(tracker.state(alive).unwrap(), ExecutionState::Pending);
    assert_eq!(tracker.detect_dead().len(), 1);
}

#[tokio::test]
async fn execution_timeout_detection_and_handling() {
    let (tracker, clock) = manual(TrackerConfig {
        heartbeat_timeout: secs(10),
        ..TrackerConfig::default()
    });
    let seen: Arc<Mutex<Vec<(ExecutionId, ExecutionState)>>> = Arc::default();
    let sink = Arc::clone(&seen);
    tracker.on_timeout(move |record| {
        let sink = Arc::clone(&sink);
        async move {
            sink.lock().unwrap().push((record.execution_id, record.state));
            Ok(())
        }
    });
    let mut events = tracker.subscribe(EventFilter::all());
    let id = tracker
        .create(new("agent", "thread", "user").timeout(secs(5)))
        .unwrap()
        .id();
    let token = tracker.cancellation(id).unwrap();
    tracker.start(id).unwrap();
    tracker.heartbeat(id).unwrap();
    for _ in 0..2 {
        clock.advance(secs(2));
        tracker.heartbeat(id).unwrap();
    }
    // t = 4: heartbeating, within its 5 s.
    let status = tracker.timeout_status(id).unwrap();
    assert!(!status.is_timed_out);
    assert_eq!(status.time_until_timeout, 1.0);
    assert_eq!(tracker.monitor_tick().await, agentrack::Sweep::default());

    clock.advance(secs(2)); // t = 6
    let record = tracker.get(id).unwrap();
    assert!(record.is_timed_out(clock.now()));
    assert!(!record.is_dead(secs(10), clock.now()));
    assert!(tracker.timeout_status(id).unwrap().is_timed_out);
    assert_eq!(tracker.timeout_status(id).unwrap().time_until_timeout, 0.0);
    assert_eq!(
        tracker.detect_dead().iter().map(|r| r.execution_id).collect::<Vec<_>>(),
        [id]
    );

    let sweep = tracker.monitor_tick().await;
    assert!(sweep.dead.is_empty());
    assert_eq!(sweep.timed_out.len(), 1);
    let record = tracker.get(id).unwrap();
    assert_eq!(record.state, ExecutionState::Timeout);
    assert_eq!(record.error.as_deref(), Some("Execution exceeded 5 s timeout"));
    assert_eq!(record.completed_at, Some(clock.now()));
    assert!(record.is_timed_out(clock.now()));
    assert!(!record.is_dead(secs(10), clock.now()));
    assert_eq!(*seen.lock().unwrap(), [(id, ExecutionState::Timeout)]);
    assert!(token.is_cancelled());
    assert_eq!(tracker.metrics().timeout_executions, 1);

    let last = drain(&mut events).last().cloned().unwrap();
    match &last.kind {
        EventKind::TimedOut(finished) => {
            assert_eq!(finished.from, ExecutionState::Running);
            assert_eq!(finished.state, ExecutionState::Timeout);
            assert_eq!(finished.error.as_deref(), Some("Execution exceeded 5 s timeout"));
            assert_eq!(finished.duration_ms, 6000);
            assert_eq!(finished.last_heartbeat, clock.now() - secs(2));
        }
        other => panic!("expected timed_out, got {other:?}"),
    }
    assert!(matches!(
        tracker.heartbeat(id),
        Err(TrackerError::Terminal {
            state: ExecutionState::Timeout,
            ..
        })
    ));
    // A second tick changes nothing.
    clock.advance(secs(10));
    let again = tracker.monitor_tick().await;
    assert!(again.timed_out.is_empty() && again.dead.is_empty());
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn multi_user_execution_isolation_and_safety() {
    let tracker = Tracker::new();
    let mut alice_events = tracker.subscribe(EventFilter::user("alice"));
    let mut bob_events = tracker.subscribe(EventFilter::user("bob"));
    let mut acme_events = tracker.subscribe(EventFilter {
        tenant: Some("acme".into()),
        ..EventFilter::default()
    });
    let mut nobody = tracker.subscribe(EventFilter {
        tenant: Some("globex".into()),
        user_id: Some("alice".into()),
        ..EventFilter::default()
    });

    let alice: Vec<ExecutionId> = ["alice-t1", "alice-t1", "alice-t2"]
        .iter()
        .map(|thread| {
            tracker
                .create(new("agent", thread, "alice").tenant("acme"))
                .unwrap()
                .id()
        })
        .collect();
    let bob: Vec<ExecutionId> = (0..2)
        .map(|_| {
            tracker
                .create(new("agent", "bob-t1", "bob").tenant("globex"))
                .unwrap()
                .id()
        })
        .collect();

    tracker.fail(bob[0], "bob's tool crashed").unwrap();
    tracker.complete(alice[0], Some(json!("done"))).unwrap();
    for id in [alice[1], alice[2], bob[1]] {
        tracker.heartbeat(id).unwrap();
    }

    let alice_records = tracker.by_user("alice");
    assert_eq!(alice_records.iter().map(|r| r.execution_id).collect::<Vec<_>>(), alice);
    assert!(alice_records.iter().all(|r| r.user_id == "alice" && r.tenant == "acme"));
    assert_eq!(
        alice_records.iter().map(|r| r.state).collect::<Vec<_>>(),
        [
            ExecutionState::Completed,
            ExecutionState::Pending,
            ExecutionState::Pending
        ]
    );
    assert_eq!(
        tracker
            .by_user("bob")
            .iter()
            .map(|r| r.execution_id)
            .collect::<Vec<_>>(),
        bob
    );
    assert_eq!(tracker.by_thread("alice-t1").len(), 2);
    assert_eq!(tracker.by_thread("bob-t1").len(), 2);
    assert!(tracker.by_user("carol").is_empty());

    let alice_seen = drain(&mut alice_events);
    assert_eq!(
        names(&alice_seen),
        [
            "execution_created",
            "execution_created",
            "execution_created",
            "execution_completed",
            "heartbeat",
            "heartbeat"
        ]
    );
    assert!(
        alice_seen
            .iter()
            .all(|e| e.execution.as_ref().unwrap().owner.user_id == "alice")
    );
    let bob_seen = drain(&mut bob_events);
    assert_eq!(
        names(&bob_seen),
        [
            "execution_created",
            "execution_created",
            "execution_failed",
            "heartbeat"
        ]
    );
    assert!(
        bob_seen
            .iter()
            .all(|e| e.execution.as_ref().unwrap().owner.user_id == "bob")
    );
    let acme_seqs: Vec<u64> = drain(&mut acme_events).iter().map(|e| e.global_seq).collect();
    assert_eq!(acme_seqs, alice_seen.iter().map(|e| e.global_seq).collect::<Vec<_>>());
    assert!(drain(&mut nobody).is_empty());

    // Many users at once: each one's reads hold exactly its own executions.
    many_users_at_once_read_only_their_own();
}

/// Many users at once: each one's reads hold exactly its own executions.
fn many_users_at_once_read_only_their_own() {
    let tracker = Tracker::new();
    std::thread::scope(|scope| {
        for user in 0..8 {
            let tracker = tracker.clone();
            scope.spawn(move || {
                for n in 0..50 {
                    let id = tracker
                        .create(new("agent", &format!("u{user}-t{}", n % 5), &format!("u{user}")))
                        .unwrap()
                        .id();
                    if n % 2 == 0 {
                        tracker.complete(id, None).unwrap();
                    }
                }
            });
        }
    });
    for user in 0..8 {
        let records = tracker.by_user(&format!("u{user}"));
        assert_eq!(records.len(), 50);
        assert!(records.iter().all(|r| r.user_id == format!("u{user}")));
        assert_eq!(records.iter().filter(|r| r.is_terminal()).count(), 25);
        assert_eq!(tracker.by_thread(&format!("u{user}-t0")).len(), 10);
    }
    assert!(
        tracker.check_consistency().is_empty(),
        "{:?}",
        tracker.check_consistency()
    );
}

#[test]
fn concurrent_execution_state_updates_safety() {
    let tracker = Tracker::with_config(TrackerConfig {
        event_buffer: 16_384,
        ..TrackerConfig::default()
    });
    let mut events = tracker.subscribe(EventFilter::all());
    let id = tracker.create(new("agent", "thread", "user")).unwrap().id();
    tracker.start(id).unwrap();
    std::thread::scope(|scope| {
        for _ in 0..8 {
            let tracker = tracker.clone();
            scope.spawn(move || {
                for _ in 0..500 {
                    tracker.heartbeat(id).unwrap();
                }
            });
        }
    });
    let record = tracker.get(id).unwrap();
    assert_eq!(record.heartbeat_count, 4000);
    assert_eq!(record.state, ExecutionState::Running);
    // created + starting + running + 4000 heartbeats, numbered without gaps in global order.
    assert_eq!(record.seq, 4003);
    let seen = drain(&mut events);
    assert_eq!(seen.len(), 4003);
    for (i, event) in seen.iter().enumerate() {
        assert_eq!(event.execution.as_ref().unwrap().seq, i as u64 + 1);
        assert_eq!(event.global_seq, i as u64 + 1);
    }
    let counts: Vec<u64> = seen
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Heartbeat { heartbeat_count } => Some(heartbeat_count),
            _ => None,
        })
        .collect();
    assert_eq!(counts, (1..=4000).collect::<Vec<u64>>());

    // Racing terminal updates: exactly one wins, the others see its state.
    let contenders = [
        ExecutionState::Completed,
        ExecutionState::Failed,
        ExecutionState::Cancelled,
        ExecutionState::Timeout,
        ExecutionState::Dead,
        ExecutionState::Completed,
        ExecutionState::Failed,
        ExecutionState::Cancelled,
    ];
    let results: Vec<(ExecutionState, Result<agentrack::Change, TrackerError>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = contenders
            .iter()
            .map(|state| {
                let tracker = tracker.clone();
                let state = *state;
                scope.spawn(move || (state, tracker.set_state(id, state, StateUpdate::default())))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<ExecutionState> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(state, _)| *state)
        .collect();
    assert_eq!(winners.len(), 1);
    let winner = winners[0];
    assert_eq!(tracker.state(id).unwrap(), winner);
    for (_, result) in &results {
        if let Err(error) = result {
            assert_eq!(
                *error,
                TrackerError::Terminal {
                    execution_id: id,
                    state: winner
                }
            );
        }
    }
    let terminal_events = drain(&mut events)
        .iter()
        .filter(|e| e.kind.finished().is_some())
        .count();
    assert_eq!(terminal_events, 1);
    let metrics = tracker.metrics();
    assert_eq!(metrics.active_executions, 0);
    assert_eq!(
        metrics.successful_executions
            + metrics.failed_executions
            + metrics.timeout_executions
            + metrics.dead_executions
            + metrics.cancelled_executions,
        1
    );

    // Racing phase transitions under strict validation: one applies, the rest are refused.
    racing_transitions_apply_once(&tracker);
}

/// Racing phase transitions under strict validation: one applies, the rest are refused.
fn racing_transitions_apply_once(tracker: &Tracker) {
    let id = tracker.create(new("agent", "thread", "user")).unwrap().id();
    let ok = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let tracker = tracker.clone();
                scope.spawn(move || tracker.transition(id, Phase::WebsocketSetup, None))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|r| match r {
                Ok(_) => true,
                Err(error) => {
                    assert!(matches!(
                        error,
                        TrackerError::InvalidTransition {
                            from: Phase::WebsocketSetup,
                            to: Phase::WebsocketSetup,
                            ..
                        }
                    ));
                    false
                }
            })
            .count()
    });
    assert_eq!(ok, 1);
    assert_eq!(tracker.phase_history(id).unwrap().len(), 1);
}

#[test]
fn unified_id_manager_integration_for_execution_ids() {
    let id = ExecutionId::new();
    let text = id.to_string();
    assert_eq!(text.len(), 37);
    assert!(text.starts_with("exec_"));
    assert!(
        text[5..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_eq!(text.parse::<ExecutionId>().unwrap(), id);
    assert_eq!(format!("{id:?}"), text);
    assert_eq!(id.as_uuid().get_version_num(), 7);
    // Time-ordered: the embedded timestamp is now.
    let (seconds, _) = id.as_uuid().get_timestamp().unwrap().to_unix();
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap();
    assert!(now.abs_diff(seconds) <= 5, "{seconds} vs {now}");
    // JSON: a plain string.
    assert_eq!(serde_json::to_value(id).unwrap(), json!(text));
    assert_eq!(serde_json::from_value::<ExecutionId>(json!(text)).unwrap(), id);
    assert!(serde_json::from_value::<ExecutionId>(json!("exec_1")).is_err());

    for bad in [
        "",
        "exec_",
        "run_0190b4b5a5e47e7c8a4f2d3e1c0b9a88",
        "exec_0190b4b5a5e47e7c8a4f2d3e1c0b9a8",
        "exec_zz90b4b5a5e47e7c8a4f2d3e1c0b9a88",
        "exec_execution_1_deadbeef",
    ] {
        let error = bad.parse::<ExecutionId>().unwrap_err();
        assert_eq!(error.value, bad);
        assert_eq!(
            error.to_string(),
            format!("invalid execution id {bad:?}: expected \"exec_\" followed by 32 hex digits")
        );
    }

    // Unique and increasing in creation order, through the tracker too.
    let ids: Vec<ExecutionId> = (0..20_000).map(|_| ExecutionId::new()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 20_000);
    let tracker = Tracker::new();
    let created: Vec<ExecutionId> = (0..1000)
        .map(|i| {
            tracker
                .create(new("agent", &format!("t{}", i % 3), "user"))
                .unwrap()
                .id()
        })
        .collect();
    assert!(created.windows(2).all(|w| w[0] < w[1]));
    assert!(created[0] > ids[ids.len() - 1]);
    assert_eq!(tracker.len(), 1000);
    assert_eq!(
        tracker.all().iter().map(|r| r.execution_id).collect::<Vec<_>>(),
        created
    );
    assert_eq!(
        tracker
            .by_thread("t1")
            .iter()
            .map(|r| r.execution_id)
            .collect::<Vec<_>>(),
        created.iter().skip(1).step_by(3).copied().collect::<Vec<_>>()
    );
}

#[test]
fn full_consolidated_execution_context_creation() {
    let (tracker, clock) = manual(TrackerConfig::default());
    let config = TimeoutConfig {
        agent_execution_timeout: secs(40),
        llm_api_timeout: secs(10),
        failure_threshold: 5,
        recovery_timeout: secs(20),
        success_threshold: 1,
        max_retries: 4,
        ..TimeoutConfig::default()
    };
    let new_execution = NewExecution {
        initial_state: Some(ExecutionState::Running),
        ..new("planner", "thread-ctx", "user-ctx")
            .tenant("acme")
            .metadata(obj(json!({"source": "chat", "priority": 2})))
            .timeout_config(config)
    };
    let change = tracker.create(new_execution.clone()).unwrap();
    let id = change.id();
    assert_eq!(
        change.events[0].kind,
        EventKind::ExecutionCreated {
            timeout_seconds: 40.0,
            metadata: obj(json!({"source": "chat", "priority": 2})),
        }
    );
    clock.advance(secs(4));
    tracker.transition(id, Phase::WebsocketSetup, None).unwrap();

    let context = tracker.context(id).unwrap();
    let record = &context.record;
    assert_eq!(record.execution_id, id);
    assert_eq!(record.tenant, "acme");
    assert_eq!(
        (
            record.agent_name.as_str(),
            record.thread_id.as_str(),
            record.user_id.as_str()
        ),
        ("planner", "thread-ctx", "user-ctx")
    );
    assert_eq!(record.state, ExecutionState::Running);
    assert_eq!(record.timeout, secs(40));
    assert_eq!(record.timeout_config.as_deref(), Some(&config));
    assert_eq!(record.phase_history.len(), 1);
    assert_eq!(context.state_info.state, ExecutionState::Running);
    assert_eq!(context.state_info.current_phase, Phase::WebsocketSetup);
    assert_eq!(context.state_info.total_duration_ms, 4000);
    assert_eq!(context.state_info.phase_count, 1);
    assert_eq!(context.timeout_status.timeout_seconds, 40.0);
    assert_eq!(context.timeout_status.elapsed_seconds, 4.0);
    assert_eq!(context.timeout_status.time_until_timeout, 36.0);
    let breaker = &context.circuit_breaker_status;
    assert_eq!(breaker.name, format!("execution:{id}"));
    assert_eq!(breaker.state, BreakerState::Closed);
    assert_eq!(breaker.failure_threshold, 5);
    assert_eq!(breaker.recovery_timeout, 20.0);
    assert!(breaker.can_retry);

    let json = serde_json::to_value(&context).unwrap();
    assert_eq!(json["record"]["state"], json!("running"));
    assert_eq!(json["record"]["timeout_seconds"], json!(40.0));
    assert_eq!(json["state_info"]["current_phase"], json!("websocket_setup"));
    assert_eq!(json["circuit_breaker_status"]["state"], json!("closed"));
    assert_eq!(json["record"]["phase_history"][0]["to_phase"], json!("websocket_setup"));

    // The per-execution LLM timeout and threshold apply: five failures to open.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        for _ in 0..4 {
            tracker.execute(id, "llm", fail_call()).await.unwrap_err();
        }
        assert_eq!(tracker.breaker_status(id).unwrap().state, BreakerState::Closed);
        tracker.execute(id, "llm", fail_call()).await.unwrap_err();
        assert_eq!(tracker.breaker_status(id).unwrap().state, BreakerState::Open);
    });

    // A terminal initial state is refused.
    assert!(matches!(
        tracker.create(NewExecution {
            initial_state: Some(ExecutionState::Completed),
            ..new_execution
        }),
        Err(TrackerError::InvalidInput {
            field: "initial_state",
            ..
        })
    ));
    assert_eq!(tracker.len(), 1);
}

#[tokio::test]
async fn golden_path_chat_functionality_support() {
    let (tracker, clock) = manual(TrackerConfig::default());
    let browser = Recorder::default();
    let mut stream = tracker.subscribe(EventFilter::user("user-1"));
    // Someone else's run must not reach user-1's browser.
    let other = tracker.create(new("supervisor", "thread-99", "user-2")).unwrap().id();

    let id = tracker
        .create(new("supervisor", "thread-42", "user-1").timeout(secs(60)))
        .unwrap()
        .id();
    tracker.start(id).unwrap();
    tracker.heartbeat(id).unwrap();

    let path = [
        (Phase::WebsocketSetup, json!({"connection_id": "ws-1"})),
        (Phase::ContextValidation, json!({"validated": true})),
        (
            Phase::Starting,
            json!({"user_request": "What is the weather in Paris?"}),
        ),
        (Phase::Thinking, json!({"reasoning": "I need the forecast"})),
        (Phase::LlmInteraction, json!({"model": "gpt-4o"})),
        (
            Phase::ToolExecution,
            json!({"tool_name": "get_forecast", "parameters": {"city": "Paris"}}),
        ),
        (
            Phase::ResultProcessing,
            json!({"reasoning": "summarising the forecast"}),
        ),
        (Phase::Completing, json!({"reasoning": "writing the answer"})),
        (Phase::Completed, json!({"result": "Sunny, 24°C"})),
    ];
    for (phase, metadata) in &path {
        clock.advance(ms(100));
        tracker
            .transition_notify(id, *phase, meta(metadata.clone()), &browser)
            .await
            .unwrap();
        if *phase == Phase::LlmInteraction {
            let reply = tracker
                .execute(id, "chat.completions", async {
                    Ok::<_, std::io::Error>("call get_forecast")
                })
                .await
                .unwrap();
            assert_eq!(reply, "call get_forecast");
        }
    }
    tracker.complete(id, Some(json!("Sunny, 24°C"))).unwrap();

    // The execution.
    let record = tracker.get(id).unwrap();
    assert_eq!(record.state, ExecutionState::Completed);
    assert_eq!(record.current_phase, Phase::Completed);
    assert_eq!(record.result, Some(json!("Sunny, 24°C")));
    assert_eq!(record.phase_history.len(), 9);
    for (transition, (phase, metadata)) in record.phase_history.iter().zip(&path) {
        assert_eq!(transition.to_phase, *phase);
        assert_eq!(Some(transition.metadata.clone()), meta(metadata.clone()));
        assert!(transition.valid);
        assert_eq!(transition.duration_ms, 100);
    }
    let sent: Vec<bool> = record.phase_history.iter().map(|t| t.websocket_event_sent).collect();
    assert_eq!(sent, [false, false, true, true, true, true, true, true, true]);

    // (a) The browser, through the Notifier, in order with the right arguments.
    check_browser_notes(&browser.notes());

    // (b) The user's event stream: every change, in order, numbered without gaps.
    check_user_stream(&drain(&mut stream), id, other);
    let metrics = tracker.metrics();
    assert_eq!((metrics.successful_executions, metrics.active_executions), (1, 1));
}

/// What `golden_path_chat_functionality_support`'s browser was told, through the Notifier: in
/// order, with the right arguments.
fn check_browser_notes(notes: &[Note]) {
    let thinking = |reasoning: &str, step| Note::Thinking {
        run_id: "thread-42".into(),
        agent: "supervisor".into(),
        reasoning: reasoning.into(),
        step,
    };
    assert_eq!(
        notes,
        [
            Note::Started {
                run_id: "thread-42".into(),
                agent: "supervisor".into(),
                context: json!({
                    "phase": "starting",
                    "total_duration_ms": 300.0,
                    "metadata": {"user_request": "What is the weather in Paris?"},
                }),
            },
            thinking("Agent is thinking... (step 4)", 4),
            thinking("Interacting with AI language model...", 5),
            Note::Tool {
                run_id: "thread-42".into(),
                agent: "supervisor".into(),
                tool: "execution_tools".into(),
                parameters: json!({"tool_name": "get_forecast", "parameters": {"city": "Paris"}}),
            },
            thinking("Processing results...", 7),
            thinking("Finalizing response...", 8),
            Note::Completed {
                run_id: "thread-42".into(),
                agent: "supervisor".into(),
                result: json!({
                    "success": true,
                    "total_duration_ms": 900.0,
                    "phase_count": 9,
                    "warnings": 0,
                    "metadata": {},
                }),
                execution_time_ms: 900,
            },
        ]
    );
    let mut kinds: Vec<&str> = notes.iter().map(Note::name).collect();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "agent_started",
            "agent_thinking",
            "tool_executing",
            "agent_thinking",
            "agent_completed"
        ]
    );
}

/// The event stream of `golden_path_chat_functionality_support`'s user: every change of `id`, in
/// order, numbered without gaps, and nothing of `other`.
fn check_user_stream(events: &[Arc<Event>], id: ExecutionId, other: ExecutionId) {
    assert_eq!(
        names(events),
        [
            "execution_created",
            "state_changed",
            "state_changed",
            "heartbeat",
            "phase_changed",
            "phase_changed",
            "agent_started",
            "agent_thinking",
            "agent_thinking",
            "tool_executing",
            "agent_thinking",
            "agent_thinking",
            "agent_completed",
            "execution_completed",
        ]
    );
    for (i, event) in events.iter().enumerate() {
        let scope = event.execution.as_ref().unwrap();
        assert_eq!(scope.execution_id, id);
        assert_ne!(scope.execution_id, other);
        assert_eq!(scope.owner.user_id, "user-1");
        assert_eq!(scope.owner.thread_id, "thread-42");
        assert_eq!(scope.seq, i as u64 + 1);
        // user-2's creation took global_seq 1.
        assert_eq!(event.global_seq, i as u64 + 2);
    }
    match &events[9].kind {
        EventKind::ToolExecuting {
            tool_name, parameters, ..
        } => {
            assert_eq!(tool_name, "get_forecast");
            assert_eq!(*parameters, json!({"city": "Paris"}));
        }
        other => panic!("expected tool_executing, got {other:?}"),
    }
    match &events[13].kind {
        EventKind::ExecutionCompleted(finished) => {
            assert_eq!(finished.from, ExecutionState::Running);
            assert_eq!(finished.result, Some(json!("Sunny, 24°C")));
            assert_eq!(finished.error, None);
            assert_eq!(finished.duration_ms, 900);
        }
        other => panic!("expected execution_completed, got {other:?}"),
    }
}

#[test]
fn metrics_collection_and_reporting() {
    let tracker = Tracker::new();
    let empty = tracker.metrics();
    assert_eq!(
        (
            empty.total_executions,
            empty.active_executions,
            empty.successful_executions,
            empty.failed_executions
        ),
        (0, 0, 0, 0)
    );
    assert_eq!((empty.success_rate, empty.failure_rate), (0.0, 0.0));

    let ids: Vec<ExecutionId> = (0..12)
        .map(|i| tracker.create(new("agent", &format!("t{i}"), "user")).unwrap().id())
        .collect();
    for id in &ids[0..5] {
        tracker.complete(*id, None).unwrap();
    }
    for id in &ids[5..7] {
        tracker.fail(*id, "tool error").unwrap();
    }
    tracker
        .set_state(ids[7], ExecutionState::Timeout, StateUpdate::default())
        .unwrap();
    tracker
        .set_state(ids[8], ExecutionState::Dead, StateUpdate::default())
        .unwrap();
    tracker.cancel(ids[9], "user pressed stop").unwrap();

    let metrics = tracker.metrics();
    assert_eq!(metrics.total_executions, 12);
    assert_eq!(metrics.active_executions, 2);
    assert_eq!(metrics.successful_executions, 5);
    assert_eq!(metrics.failed_executions, 2);
    assert_eq!(metrics.timeout_executions, 1);
    assert_eq!(metrics.dead_executions, 1);
    assert_eq!(metrics.cancelled_executions, 1);
    assert_eq!(metrics.success_rate, 5.0 / 12.0);
    assert_eq!(metrics.failure_rate, 4.0 / 12.0);
    assert_eq!(tracker.active_count(), 2);

    let json = serde_json::to_value(&metrics).unwrap();
    for key in [
        "total_executions",
        "active_executions",
        "successful_executions",
        "failed_executions",
        "timeout_executions",
        "dead_executions",
        "success_rate",
        "failure_rate",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    assert_eq!(json["total_executions"], json!(12));

    // Refused updates do not count; cleanup does not un-count.
    assert!(tracker.complete(ids[0], None).is_err());
    for id in &ids[0..10] {
        tracker.cleanup(*id).unwrap();
    }
    assert_eq!(tracker.metrics(), metrics);
    assert_eq!(tracker.len(), 2);
}

#[test]
fn execution_tracker_compatibility_alias() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Tracker>();

    let a = Tracker::new();
    let b = a.clone();
    let mut b_events = b.subscribe(EventFilter::all());
    let id = a.create(new("agent", "thread", "user")).unwrap().id();
    assert_eq!(b.get(id).unwrap(), a.get(id).unwrap());
    std::thread::spawn({
        let b = b.clone();
        move || b.heartbeat(id).unwrap()
    })
    .join()
    .unwrap();
    assert_eq!(a.get(id).unwrap().heartbeat_count, 1);
    b.complete(id, None).unwrap();
    assert_eq!(a.state(id).unwrap(), ExecutionState::Completed);
    assert_eq!(a.metrics(), b.metrics());
    assert_eq!(a.last_seq(), 3);
    assert_eq!(
        names(&drain(&mut b_events)),
        ["execution_created", "heartbeat", "execution_completed"]
    );
    drop(b);
    assert_eq!(a.len(), 1);

    // A separate tracker shares nothing.
    let c = Tracker::default();
    assert_eq!(c.get(id).unwrap_err(), TrackerError::NotFound { execution_id: id });
    assert_eq!(c.metrics().total_executions, 0);
    assert_eq!(*c.config(), TrackerConfig::default());
}

#[tokio::test]
async fn global_tracker_instance_functions() {
    let first = agentrack::global();
    let second = agentrack::global();
    assert!(std::ptr::eq(first, second));
    assert_eq!(*first.config(), TrackerConfig::default());
    let id = first.create(new("agent", "global-thread", "global-user")).unwrap().id();
    assert_eq!(second.get(id).unwrap().thread_id, "global-thread");

    assert!(agentrack::init_global());
    assert!(agentrack::global_monitor_running());
    assert!(!agentrack::init_global(), "initialising twice starts nothing");
    assert!(agentrack::global_monitor_running());
    agentrack::shutdown_global().await;
    assert!(!agentrack::global_monitor_running());
    agentrack::shutdown_global().await;
    assert!(agentrack::init_global());
    assert!(agentrack::global_monitor_running());
    agentrack::shutdown_global().await;
    assert!(!agentrack::global_monitor_running());
    first.complete(id, None).unwrap();
    assert_eq!(second.state(id).unwrap(), ExecutionState::Completed);
}

#[tokio::test]
async fn invalid_execution_id_handling() {
    let tracker = Tracker::new();
    let real = tracker.create(new("agent", "thread", "user")).unwrap().id();
    let unknown = ExecutionId::new();
    let not_found = TrackerError::NotFound { execution_id: unknown };
    assert_eq!(not_found.to_string(), format!("execution {unknown} not found"));

    assert_eq!(
        tracker
            .set_state(unknown, ExecutionState::Completed, StateUpdate::default())
            .unwrap_err(),
        not_found
    );
    assert_eq!(tracker.complete(unknown, Some(json!(1))).unwrap_err(), not_found);
    assert_eq!(tracker.fail(unknown, "x").unwrap_err(), not_found);
    assert_eq!(tracker.cancel(unknown, "x").unwrap_err(), not_found);
    assert_eq!(tracker.start(unknown).unwrap_err(), not_found);
    assert_eq!(tracker.heartbeat(unknown).unwrap_err(), not_found);
    assert_eq!(
        tracker.transition(unknown, Phase::WebsocketSetup, None).unwrap_err(),
        not_found
    );
    assert_eq!(
        tracker
            .transition_notify(unknown, Phase::WebsocketSetup, None, &Recorder::default())
            .await
            .unwrap_err(),
        not_found
    );
    assert_eq!(tracker.get(unknown).unwrap_err(), not_found);
    assert_eq!(tracker.state(unknown).unwrap_err(), not_found);
    assert_eq!(tracker.phase_history(unknown).unwrap_err(), not_found);
    assert_eq!(tracker.agent_state(unknown).unwrap_err(), not_found);
    assert_eq!(
        tracker
            .update_agent_state(unknown, AgentStateUpdate::default())
            .unwrap_err(),
        not_found
    );
    assert_eq!(
        tracker
            .set_timeout_config(unknown, TimeoutConfig::default())
            .unwrap_err(),
        not_found
    );
    assert_eq!(tracker.timeout_status(unknown).unwrap_err(), not_found);
    assert_eq!(tracker.context(unknown).unwrap_err(), not_found);
    assert_eq!(tracker.breaker_status(unknown).unwrap_err(), not_found);
    assert_eq!(tracker.reset_breaker(unknown).unwrap_err(), not_found);
    assert_eq!(tracker.cleanup(unknown).unwrap_err(), not_found);
    assert_eq!(tracker.cancellation(unknown).unwrap_err(), not_found);
    let ran = AtomicUsize::new(0);
    let result = tracker
        .execute(unknown, "llm", async {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<u32, std::io::Error>(1)
        })
        .await;
    assert!(matches!(result, Err(CallError::Tracker(ref e)) if *e == not_found));
    assert_eq!(ran.load(Ordering::SeqCst), 0);

    // Nothing was created for it (the original made a phantom "unknown" record).
    assert_eq!(tracker.len(), 1);
    assert_eq!(tracker.all()[0].execution_id, real);
    assert_eq!(tracker.metrics().total_executions, 1);
    assert!(tracker.by_agent("unknown").is_empty());
    assert!(tracker.by_user("unknown").is_empty());
    assert_eq!(tracker.last_seq(), 1);

    // Malformed ids never reach the tracker.
    for bad in ["", "exec_", "unknown", "exec_execution_1_a1b2c3d4"] {
        assert!(bad.parse::<ExecutionId>().is_err(), "{bad}");
    }
}

#[tokio::test]
async fn circuit_breaker_open_error_handling() {
    let (tracker, clock) = manual(TrackerConfig::default());
    let recorder = Recorder::default();
    let id = tracker
        .create(new("agent", "thread-cb", "user").timeout(secs(600)))
        .unwrap()
        .id();
    for phase in [
        Phase::WebsocketSetup,
        Phase::ContextValidation,
        Phase::Starting,
        Phase::Thinking,
        Phase::LlmInteraction,
    ] {
        tracker.transition(id, phase, None).unwrap();
    }
    for _ in 0..3 {
        tracker.execute(id, "chat", fail_call()).await.unwrap_err();
    }
    let ran = AtomicUsize::new(0);
    let call = || async {
        ran.fetch_add(1, Ordering::SeqCst);
        Ok::<u32, &str>(1)
    };
    let error = tracker.execute(id, "chat", call()).await.unwrap_err();
    assert!(error.is_circuit_open());
    assert!(!error.is_timeout());
    match &error {
        CallError::Tracker(TrackerError::CircuitOpen { breaker, retry_after }) => {
            assert_eq!(*breaker, format!("execution:{id}"));
            assert_eq!(*retry_after, secs(30));
        }
        other => panic!("expected CircuitOpen, got {other:?}"),
    }
    assert_eq!(
        error.to_string(),
        format!("circuit breaker execution:{id} is open; retry after 30.000 s")
    );

    clock.advance(secs(10));
    match tracker.execute(id, "chat", call()).await.unwrap_err() {
        CallError::Tracker(TrackerError::CircuitOpen { retry_after, .. }) => assert_eq!(retry_after, secs(20)),
        other => panic!("expected CircuitOpen, got {other:?}"),
    }
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    // A refusal is not a failure: the count stays at the threshold, and the wait does not reset.
    let status = tracker.breaker_status(id).unwrap();
    assert_eq!(status.failure_count, 3);
    assert_eq!(status.state, BreakerState::Open);

    // The agent reports the refusal as a phase; the browser gets agent_error.
    let transition = tracker
        .transition_notify(
            id,
            Phase::CircuitBreakerOpen,
            meta(json!({"error": error.to_string()})),
            &recorder,
        )
        .await
        .unwrap();
    assert!(transition.websocket_event_sent);
    assert_eq!(
        recorder.notes(),
        [Note::Error {
            run_id: "thread-cb".into(),
            agent: "agent".into(),
            error: "Service temporarily unavailable".into(),
            context: json!({
                "phase": "circuit_breaker_open",
                "total_duration_ms": 10_000.0,
                "metadata": {"error": error.to_string()},
            }),
        }]
    );
    // The execution itself is still alive and can be failed by its owner.
    assert_eq!(tracker.state(id).unwrap(), ExecutionState::Pending);
    tracker.fail(id, error.to_string()).unwrap();
    assert_eq!(tracker.get(id).unwrap().error, Some(error.to_string()));
}

#[test]
fn concurrent_access_and_race_condition_safety() {
    let (tracker, _clock) = manual(TrackerConfig::default());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let cleaned = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let tracker = tracker.clone();
                let cleaned = &cleaned;
                scope.spawn(move || {
                    for n in 0..200 {
                        let id = tracker
                            .create(new(
                                &format!("agent-{}", n % 4),
                                &format!("w{w}-t{}", n % 10),
                                &format!("w{w}"),
                            ))
                            .unwrap()
                            .id();
                        tracker.start(id).unwrap();
                        tracker.heartbeat(id).unwrap();
                        for phase in [Phase::WebsocketSetup, Phase::ContextValidation, Phase::Starting] {
                            tracker.transition(id, phase, None).unwrap();
                        }
                        if n % 2 == 0 {
                            tracker.complete(id, Some(json!(n))).unwrap();
                        } else {
                            tracker.fail(id, "odd").unwrap();
                        }
                        if n % 4 == 0 {
                            tracker.cleanup(id).unwrap();
                            cleaned.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        // Readers and the monitor run alongside.
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let tracker = tracker.clone();
                let stop = &stop;
                scope.spawn(move || {
                    let mut passes = 0;
                    while !stop.load(Ordering::SeqCst) || passes == 0 {
                        for record in tracker.active() {
                            assert!(
                                record.is_alive(),
                                "active() returned {} in state {}",
                                record.execution_id,
                                record.state
                            );
                        }
                        for record in tracker.by_agent("agent-1") {
                            assert_eq!(record.agent_name, "agent-1");
                        }
                        let metrics = tracker.metrics();
                        assert!(metrics.successful_executions + metrics.failed_executions <= metrics.total_executions);
                        let sweep = tracker.sweep();
                        assert!(sweep.dead.is_empty() && sweep.timed_out.is_empty());
                        passes += 1;
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        for reader in readers {
            reader.join().unwrap();
        }
    });
    assert!(
        tracker.check_consistency().is_empty(),
        "{:?}",
        tracker.check_consistency()
    );
    let metrics = tracker.metrics();
    assert_eq!(metrics.total_executions, 1600);
    assert_eq!(metrics.active_executions, 0);
    assert_eq!(metrics.successful_executions, 800);
    assert_eq!(metrics.failed_executions, 800);
    assert_eq!(cleaned.load(Ordering::SeqCst), 400);
    assert_eq!(tracker.len(), 1200);
    assert_eq!(tracker.completed_history().len(), 100);
    for w in 0..8 {
        let records = tracker.by_user(&format!("w{w}"));
        assert_eq!(records.len(), 150);
        assert!(
            records
                .iter()
                .all(|r| r.phase_history.len() == 3 && r.heartbeat_count == 1)
        );
    }
}

#[test]
fn cleanup_of_completed_executions() {
    let (tracker, clock) = manual(TrackerConfig {
        cleanup_age: secs(60),
        execution_timeout: secs(1000),
        heartbeat_timeout: secs(1000),
        ..TrackerConfig::default()
    });
    let alive = tracker.create(new("agent", "alive", "user")).unwrap().id();
    let early: Vec<ExecutionId> = (0..3)
        .map(|_| {
            let id = tracker.create(new("agent", "early", "user")).unwrap().id();
            tracker.complete(id, None).unwrap();
            id
        })
        .collect();
    clock.advance(secs(30));
    let _late: Vec<ExecutionId> = (0..2)
        .map(|_| {
            let id = tracker.create(new("agent", "late", "user")).unwrap().id();
            tracker.fail(id, "x").unwrap();
            id
        })
        .collect();
    assert_eq!(tracker.sweep().purged, 0);
    clock.advance(secs(31)); // early: 61 s old; late: 31 s old
    let sweep = tracker.sweep();
    assert_eq!(sweep.purged, 3);
    for id in &early {
        assert_eq!(
            tracker.get(*id).unwrap_err(),
            TrackerError::NotFound { execution_id: *id }
        );
    }
    assert!(tracker.by_thread("early").is_empty());
    assert_eq!(tracker.by_thread("late").len(), 2);
    assert_eq!(tracker.len(), 3);
    clock.advance(secs(30));
    assert_eq!(tracker.sweep().purged, 2);
    assert_eq!(tracker.len(), 1);
    assert_eq!(
        tracker.state(alive).unwrap(),
        ExecutionState::Pending,
        "alive records are never purged"
    );
    let metrics = tracker.metrics();
    assert_eq!(
        (
            metrics.total_executions,
            metrics.successful_executions,
            metrics.failed_executions,
            metrics.active_executions
        ),
        (6, 3, 2, 1)
    );
    assert!(
        tracker.check_consistency().is_empty(),
        "{:?}",
        tracker.check_consistency()
    );

    // Manual cleanup moves a finished record to the completed history at once.
    let id = tracker.create(new("agent", "manual", "user")).unwrap().id();
    tracker.complete(id, Some(json!("ok"))).unwrap();
    let record = tracker.cleanup(id).unwrap();
    assert_eq!(record.result, Some(json!("ok")));
    assert_eq!(tracker.completed_history().last().unwrap().execution_id, id);
    assert!(tracker.by_thread("manual").is_empty());
    // Its stale purge entry is harmless later.
    clock.advance(secs(61));
    assert_eq!(tracker.sweep().purged, 0);

    // Bounded memory: at most max_finished finished records, oldest dropped first.
    let (tracker, clock) = manual(TrackerConfig {
        max_finished: 5,
        ..TrackerConfig::default()
    });
    let ids: Vec<ExecutionId> = (0..8)
        .map(|_| {
            let id = tracker.create(new("agent", "bounded", "user")).unwrap().id();
            clock.advance(ms(10));
            tracker.complete(id, None).unwrap();
            id
        })
        .collect();
    assert_eq!(tracker.len(), 5);
    assert_eq!(
        tracker.all().iter().map(|r| r.execution_id).collect::<Vec<_>>(),
        ids[3..]
    );
    assert_eq!(tracker.metrics().successful_executions, 8);
    assert!(
        tracker.check_consistency().is_empty(),
        "{:?}",
        tracker.check_consistency()
    );
}
