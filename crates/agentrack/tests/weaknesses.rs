//! The original tracker's known weaknesses (SPEC.md, "Known weaknesses to do better on"), one
//! test per behaviour that agentrack does better.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::time::Duration;

use agentrack::{
    BreakerConfig, BreakerState, CallError, Clock, EventFilter, EventKind, EventStream, ExecutionId, ExecutionState,
    ManualClock, Outcome, Phase, RetryPolicy, StateUpdate, Sweep, TimeoutConfig, TokioClock, Tracker, TrackerConfig,
    TrackerError, Validation,
};
use serde_json::json;
use tokio::sync::oneshot;

use common::{drain, fail_call, manual, meta, ms, names, new, of, ok_call, record, secs, tripped_execution};

fn ids(records: &[agentrack::ExecutionRecord]) -> Vec<ExecutionId> {
    records.iter().map(|r| r.execution_id).collect()
}

// ---------------------------------------------------------------------------------------------
// Id collisions that overwrite records

#[test]
fn ids_never_collide_over_300k_creates() {
    // The original: 300,000 creates gave 9 duplicate ids, each silently overwriting a record.
    let mut seen = HashSet::with_capacity(300_000);
    let mut previous: Option<ExecutionId> = None;
    for i in 0..300_000u32 {
        let id = ExecutionId::new();
        assert!(seen.insert(id), "duplicate id {id} at {i}");
        if let Some(previous) = previous {
            assert!(previous < id, "ids must be time-ordered");
        }
        previous = Some(id);
    }
    assert_eq!(seen.len(), 300_000);

    // Through the tracker, from several threads at once: no record is ever overwritten.
    let tracker = Tracker::new();
    let created: Vec<ExecutionId> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let tracker = &tracker;
                scope.spawn(move || {
                    (0..5_000)
                        .map(|_| tracker.create(new("agent", &format!("t{t}"), "user")).unwrap().id())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(created.iter().collect::<HashSet<_>>().len(), 20_000);
    assert!(created.iter().all(|id| !seen.contains(id)));
    assert_eq!(tracker.len(), 20_000);
    assert_eq!(tracker.metrics().total_executions, 20_000);
    for t in 0..4 {
        assert_eq!(tracker.by_thread(&format!("t{t}")).len(), 5_000);
    }
}

// ---------------------------------------------------------------------------------------------
// Unknown ids in update_execution_state create phantom records

#[test]
fn no_phantom_record_for_unknown_id() {
    let tracker = Tracker::new();
    let mut events = tracker.subscribe(EventFilter::all());
    let unknown = ExecutionId::new();
    for state in ExecutionState::ALL {
        assert_eq!(
            tracker.set_state(unknown, *state, StateUpdate::default()).unwrap_err(),
            TrackerError::NotFound { execution_id: unknown },
            "{state}"
        );
    }
    assert!(tracker.is_empty());
    assert_eq!(tracker.len(), 0);
    assert!(tracker.all().is_empty());
    assert!(tracker.by_agent("unknown").is_empty());
    assert!(tracker.by_thread("unknown").is_empty());
    assert!(tracker.by_user("unknown").is_empty());
    assert_eq!(tracker.metrics().total_executions, 0);
    assert_eq!(tracker.metrics().successful_executions, 0);
    assert_eq!(tracker.last_seq(), 0);
    assert!(drain(&mut events).is_empty());
    assert_eq!(
        tracker.get(unknown).unwrap_err(),
        TrackerError::NotFound { execution_id: unknown }
    );
}

// ---------------------------------------------------------------------------------------------
// A falsy result (0, "", {}) is dropped

#[test]
fn falsy_result_is_kept() {
    let tracker = Tracker::new();
    let mut events = tracker.subscribe(EventFilter::all());
    for value in [json!(0), json!(0.0), json!(""), json!({}), json!([]), json!(false)] {
        let id = tracker.create(new("agent", "thread", "user")).unwrap().id();
        tracker.complete(id, Some(value.clone())).unwrap();
        let record = tracker.get(id).unwrap();
        assert_eq!(record.result, Some(value.clone()));
        assert_eq!(serde_json::to_value(&record).unwrap()["result"], value);
        let terminal = of(&drain(&mut events), id).pop().unwrap();
        assert_eq!(terminal.kind.finished().unwrap().result, Some(value.clone()));
    }
    // Through set_state too, with a falsy error alongside.
    let id = tracker.create(new("agent", "thread", "user")).unwrap().id();
    tracker
        .set_state(
            id,
            ExecutionState::Failed,
            StateUpdate {
                error: Some(String::new()),
                result: Some(json!(0)),
            },
        )
        .unwrap();
    let record = tracker.get(id).unwrap();
    assert_eq!(record.result, Some(json!(0)));
    assert_eq!(record.error, Some(String::new()));
}

// ---------------------------------------------------------------------------------------------
// Phase durations are attributed to the wrong phase

#[test]
fn phase_duration_is_attributed_to_the_phase_occupied() {
    let (tracker, clock) = manual(TrackerConfig::default());
    let id = tracker.create(new("agent", "thread", "user")).unwrap().id();
    // created 1 s, websocket_setup 2 s, context_validation 3 s, starting 4 s, thinking 5 s,
    // llm_interaction 6 s, thinking again 7 s (current).
    let steps = [
        (1, Phase::WebsocketSetup),
        (2, Phase::ContextValidation),
        (3, Phase::Starting),
        (4, Phase::Thinking),
        (5, Phase::LlmInteraction),
        (6, Phase::Thinking),
    ];
    for (wait, phase) in steps {
        clock.advance(secs(wait));
        tracker.transition(id, phase, None).unwrap();
    }
    clock.advance(secs(7));
    let now = clock.now();
    let record = tracker.get(id).unwrap();
    // Each transition carries the time spent in the phase it leaves.
    let left: Vec<(Phase, u64)> = record
        .phase_history
        .iter()
        .map(|t| (t.from_phase, t.duration_ms))
        .collect();
    assert_eq!(
        left,
        [
            (Phase::Created, 1000),
            (Phase::WebsocketSetup, 2000),
            (Phase::ContextValidation, 3000),
            (Phase::Starting, 4000),
            (Phase::Thinking, 5000),
            (Phase::LlmInteraction, 6000),
        ]
    );
    assert_eq!(record.phase_duration_ms(Phase::Created, now), 1000);
    assert_eq!(record.phase_duration_ms(Phase::WebsocketSetup, now), 2000);
    assert_eq!(record.phase_duration_ms(Phase::ContextValidation, now), 3000);
    assert_eq!(record.phase_duration_ms(Phase::Starting, now), 4000);
    assert_eq!(record.phase_duration_ms(Phase::LlmInteraction, now), 6000);
    // Two visits to thinking: 5 s past plus 7 s current.
    assert_eq!(record.phase_duration_ms(Phase::Thinking, now), 12_000);
    assert_eq!(record.phase_duration_ms(Phase::ToolExecution, now), 0);
    assert_eq!(record.current_phase_duration_ms(now), 7000);
    assert_eq!(tracker.agent_state(id).unwrap().current_phase_duration_ms, 7000);
    // Every second is attributed exactly once.
    let total: u64 = Phase::ALL.iter().map(|p| record.phase_duration_ms(*p, now)).sum();
    assert_eq!(total, record.total_duration_ms(now));
    assert_eq!(total, 28_000);
}

// ---------------------------------------------------------------------------------------------
// Invalid phase transitions are silently allowed

#[test]
fn strict_validation_refuses_illegal_phase_transition() {
    let tracker = Tracker::new();
    assert_eq!(tracker.config().phase_validation, Validation::Strict);
    let mut events = tracker.subscribe(EventFilter::all());
    let id = tracker.create(new("agent", "thread", "user")).unwrap().id();
    drain(&mut events);
    let before = tracker.get(id).unwrap();
    let error = tracker
        .transition(id, Phase::Completed, meta(json!({"result": "skipped everything"})))
        .unwrap_err();
    assert_eq!(
        error,
        TrackerError::InvalidTransition {
            execution_id: id,
            from: Phase::Created,
            to: Phase::Completed,
            allowed: &[Phase::WebsocketSetup, Phase::Failed],
        }
    );
    assert_eq!(
        error.to_string(),
        format!(
            "execution {id} cannot go from phase created to completed; allowed from created: websocket_setup, failed"
        )
    );
    // Nothing changed and nothing was announced.
    assert_eq!(tracker.get(id).unwrap(), before);
    assert!(drain(&mut events).is_empty());
    // Skipping a phase is refused too; the legal path is accepted.
    tracker.transition(id, Phase::WebsocketSetup, None).unwrap();
    assert!(matches!(
        tracker.transition(id, Phase::Starting, None),
        Err(TrackerError::InvalidTransition {
            from: Phase::WebsocketSetup,
            to: Phase::Starting,
            ..
        })
    ));
    assert_eq!(tracker.get(id).unwrap().current_phase, Phase::WebsocketSetup);
    assert_eq!(tracker.phase_history(id).unwrap().len(), 1);
}

#[test]
fn lenient_validation_flags_illegal_phase_transition() {
    let tracker = Tracker::with_config(TrackerConfig {
        phase_validation: Validation::Lenient,
        ..TrackerConfig::default()
    });
    let mut events = tracker.subscribe(EventFilter::all());
    let id = tracker.create(new("agent", "thread", "user")).unwrap().id();
    // The original's tests skip phases: allowed, but flagged.
    let change = tracker.transition(id, Phase::Thinking, None).unwrap();
    let transition = change.transition().unwrap();
    assert_eq!(
        (transition.from_phase, transition.to_phase),
        (Phase::Created, Phase::Thinking)
    );
    assert!(!transition.valid);
    tracker.transition(id, Phase::LlmInteraction, None).unwrap();
    let history = tracker.phase_history(id).unwrap();
    assert_eq!(history.iter().map(|t| t.valid).collect::<Vec<_>>(), [false, true]);
    assert_eq!(tracker.get(id).unwrap().current_phase, Phase::LlmInteraction);
    let flags: Vec<bool> = drain(&mut events)
        .iter()
        .filter_map(|e| e.kind.transition().map(|t| t.valid))
        .collect();
    assert_eq!(flags, [false, true]);
}

#[test]
fn lenient_transition_on_finished_execution_is_flagged_invalid() {
    // Documented on `Tracker::transition`: "under lenient validation it happens and is flagged
    // `valid: false`" — for a rule-breaking transition *or one on a finished execution*.
    let tracker = Tracker::with_config(TrackerConfig {
        phase_validation: Validation::Lenient,
        ..TrackerConfig::default()
    });
    let id = tracker.create(new("agent", "thread", "user")).unwrap().id();
    tracker.complete(id, None).unwrap();
    // created → websocket_setup is within the phase rules, but the execution has finished.
    let change = tracker.transition(id, Phase::WebsocketSetup, None).unwrap();
    assert!(
        !change.transition().unwrap().valid,
        "a transition on a finished execution must be flagged valid = false"
    );
    assert_eq!(tracker.state(id).unwrap(), ExecutionState::Completed);
}

// ---------------------------------------------------------------------------------------------
// Circuit breaker: half-open behaviour

#[tokio::test]
async fn half_open_failure_reopens_at_once() {
    let (tracker, clock) = manual(TrackerConfig::default());
    let id = tripped_execution(&tracker).await;
    assert_eq!(tracker.breaker_status(id).unwrap().state, BreakerState::Open);
    clock.advance(secs(30));
    // The trial call fails: open again at once (the original needed 3 more failures).
    assert!(matches!(
        tracker.execute(id, "llm", fail_call()).await,
        Err(CallError::Operation("503"))
    ));
    let status = tracker.breaker_status(id).unwrap();
    assert_eq!(status.state, BreakerState::Open);
    assert_eq!(status.next_attempt_time, Some(clock.now() + secs(30)));
    let ran = AtomicUsize::new(0);
    let refused = tracker
        .execute(id, "llm", async {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<u32, &str>(1)
        })
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        CallError::Tracker(TrackerError::CircuitOpen { retry_after, .. }) if retry_after == secs(30)
    ));
    assert_eq!(ran.load(Ordering::SeqCst), 0);

    // The same for a named breaker.
    let breaker = tracker.breaker("openai:gpt-4o");
    record(&breaker, Outcome::Failure, 3);
    assert_eq!(breaker.status().state, BreakerState::Open);
    clock.advance(secs(30));
    let trial = breaker.acquire().unwrap();
    assert_eq!(breaker.status().state, BreakerState::HalfOpen);
    trial.record(Outcome::Timeout);
    assert_eq!(breaker.status().state, BreakerState::Open);
    assert!(breaker.acquire().is_err());
}

#[tokio::test]
async fn half_open_limits_concurrent_trials() {
    let (tracker, clock) = manual(TrackerConfig::default());
    let config = BreakerConfig {
        failure_threshold: 2,
        recovery_timeout: secs(10),
        success_threshold: 2,
        half_open_max_calls: 1,
        call_timeout: secs(5),
    };
    let breaker = tracker.breaker_with("anthropic:claude", config);
    record(&breaker, Outcome::Failure, 2);
    assert_eq!(
        breaker.acquire().unwrap_err(),
        TrackerError::CircuitOpen {
            breaker: "anthropic:claude".into(),
            retry_after: secs(10)
        }
    );
    clock.advance(secs(10));
    let first = breaker.acquire().unwrap();
    assert_eq!(breaker.status().state, BreakerState::HalfOpen);
    // Only one trial at a time; the honest wait is the trial's call timeout.
    assert_eq!(
        breaker.acquire().unwrap_err(),
        TrackerError::CircuitOpen {
            breaker: "anthropic:claude".into(),
            retry_after: secs(5)
        }
    );
    assert!(!breaker.status().can_retry);
    // An abandoned trial gives its slot back without counting.
    drop(first);
    assert!(breaker.status().can_retry);
    let second = breaker.acquire().unwrap();
    assert!(breaker.acquire().is_err());
    second.record(Outcome::Success);
    let status = breaker.status();
    assert_eq!((status.state, status.success_count), (BreakerState::HalfOpen, 1));
    breaker.acquire().unwrap().record(Outcome::Success);
    assert_eq!(breaker.status().state, BreakerState::Closed);
    // Closed: no limit on concurrent calls.
    let permits: Vec<_> = (0..10).map(|_| breaker.acquire().unwrap()).collect();
    drop(permits);

    // With three trials allowed, the fourth is refused.
    let wide = tracker.breaker_with(
        "wide",
        BreakerConfig {
            half_open_max_calls: 3,
            ..config
        },
    );
    record(&wide, Outcome::Failure, 2);
    clock.advance(secs(10));
    let trials: Vec<_> = (0..3).map(|_| wide.acquire().unwrap()).collect();
    assert!(wide.acquire().unwrap_err().to_string().contains("is open"));
    drop(trials);

    // Per-execution breaker: a second protected call during the trial is refused.
    let id = tripped_execution(&tracker).await;
    clock.advance(secs(30));
    let (release, released) = oneshot::channel::<()>();
    let (entered, is_in) = oneshot::channel::<()>();
    let trial = tracker.execute(id, "llm", async move {
        entered.send(()).unwrap();
        released.await.unwrap();
        Ok::<u32, &str>(1)
    });
    let contender = async {
        is_in.await.unwrap();
        let refused = tracker.execute(id, "llm", ok_call(2)).await.unwrap_err();
        assert!(matches!(
            refused,
            CallError::Tracker(TrackerError::CircuitOpen { retry_after, .. }) if retry_after == secs(15)
        ));
        release.send(()).unwrap();
    };
    let (result, ()) = tokio::join!(trial, contender);
    assert_eq!(result.unwrap(), 1);
    let status = tracker.breaker_status(id).unwrap();
    assert_eq!((status.state, status.success_count), (BreakerState::HalfOpen, 1));
}

#[tokio::test]
async fn cancelled_protected_call_frees_its_half_open_trial() {
    let (tracker, clock) = manual(TrackerConfig::default());
    let id = tripped_execution(&tracker).await;
    clock.advance(secs(30));
    {
        // The caller gives up on the trial call (its future is dropped mid-flight).
        let mut abandoned = pin!(tracker.execute(id, "llm", std::future::pending::<Result<u32, &str>>()));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(abandoned.as_mut().poll(&mut cx).is_pending());
        assert_eq!(tracker.breaker_status(id).unwrap().state, BreakerState::HalfOpen);
    }
    // The abandoned trial must not hold the only half-open slot forever.
    assert!(tracker.breaker_status(id).unwrap().can_retry);
    assert_eq!(tracker.execute(id, "llm", ok_call(5)).await.unwrap(), 5);
}

// ---------------------------------------------------------------------------------------------
// The per-execution breaker cannot protect a provider shared by many executions

#[tokio::test]
async fn named_breaker_protects_provider_across_executions() {
    let (tracker, _clock) = manual(TrackerConfig::default());
    let mut all = tracker.subscribe(EventFilter::all());
    let first = tracker.create(new("agent", "t1", "alice")).unwrap().id();
    let second = tracker.create(new("agent", "t2", "bob")).unwrap().id();
    let provider = tracker.breaker("openai:gpt-4o");
    for _ in 0..3 {
        let result = tracker.execute_via(first, &provider, fail_call()).await;
        assert!(matches!(result, Err(CallError::Operation("503"))));
    }
    // Another handle by the same name is the same breaker.
    let same = tracker.breaker("openai:gpt-4o");
    assert_eq!(same.name(), "openai:gpt-4o");
    assert_eq!(same.status().state, BreakerState::Open);
    assert_eq!(same.status().failure_count, 3);

    // The second execution is protected without ever having failed itself.
    let ran = AtomicUsize::new(0);
    let refused = tracker
        .execute_via(second, &same, async {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<u32, &str>(1)
        })
        .await
        .unwrap_err();
    assert!(refused.is_circuit_open());
    assert!(matches!(
        &refused,
        CallError::Tracker(TrackerError::CircuitOpen { breaker, retry_after }) if breaker == "openai:gpt-4o" && *retry_after == secs(30)
    ));
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    // Their own per-execution breakers were never involved.
    for id in [first, second] {
        let status = tracker.breaker_status(id).unwrap();
        assert_eq!((status.state, status.failure_count), (BreakerState::Closed, 0));
    }
    // Other providers are unaffected.
    let other = tracker.breaker("anthropic:claude");
    assert_eq!(tracker.execute_via(second, &other, ok_call(9)).await.unwrap(), 9);
    let statuses = tracker.breakers();
    assert_eq!(
        statuses.iter().map(|s| (s.name.as_str(), s.state)).collect::<Vec<_>>(),
        [
            ("anthropic:claude", BreakerState::Closed),
            ("openai:gpt-4o", BreakerState::Open)
        ]
    );
    // The opening is announced once, as a provider-wide event.
    let opened: Vec<_> = drain(&mut all)
        .into_iter()
        .filter(|e| matches!(e.kind, EventKind::BreakerOpened(_)))
        .collect();
    assert_eq!(opened.len(), 1);
    assert!(opened[0].execution.is_none());
    match &opened[0].kind {
        EventKind::BreakerOpened(change) => {
            assert_eq!(change.breaker, "openai:gpt-4o");
            assert_eq!(change.failures, 3);
            assert_eq!(change.retry_after_seconds, Some(30.0));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn caller_errors_do_not_trip_a_named_breaker() {
    let (tracker, _clock) = manual(TrackerConfig::default());
    let breaker = tracker.breaker("openai:gpt-4o");
    // Bad requests are the caller's fault: never counted.
    record(&breaker, Outcome::Ignored, 10);
    let status = breaker.status();
    assert_eq!((status.state, status.failure_count), (BreakerState::Closed, 0));
    // Slow calls (timeouts) count like failures.
    record(&breaker, Outcome::Timeout, 3);
    assert_eq!(breaker.status().state, BreakerState::Open);
}

// ---------------------------------------------------------------------------------------------
// Retries are configured but never performed

#[tokio::test(start_paused = true)]
async fn retries_use_backoff_and_stop_at_max_retries() {
    let tracker = Tracker::with_clock(TrackerConfig::default(), Arc::new(TokioClock::new()));
    let config = TimeoutConfig {
        agent_execution_timeout: secs(600),
        failure_threshold: 10,
        max_retries: 2,
        retry_base_delay: secs(1),
        retry_max_delay: secs(5),
        retry_exponential_base: 2.0,
        ..TimeoutConfig::default()
    };
    let policy = RetryPolicy::from(&config);
    let caps: Vec<Duration> = (0..5).map(|n| policy.delay_cap(n)).collect();
    assert_eq!(caps, [secs(1), secs(2), secs(4), secs(5), secs(5)]);

    // Always failing: 1 attempt + 2 retries, spaced by jittered exponential delays.
    let id = tracker
        .create(new("agent", "thread", "user").timeout_config(config))
        .unwrap()
        .id();
    let attempts = Mutex::new(Vec::new());
    let result = tracker
        .execute_with_retry(id, "llm", || {
            attempts.lock().unwrap().push(tokio::time::Instant::now());
            fail_call()
        })
        .await;
    assert!(matches!(result, Err(CallError::Operation("503"))));
    let attempts = attempts.into_inner().unwrap();
    assert_eq!(attempts.len(), 3);
    let first_gap = attempts[1] - attempts[0];
    let second_gap = attempts[2] - attempts[1];
    assert!(first_gap >= ms(500) && first_gap <= secs(1), "{first_gap:?}");
    assert!(second_gap >= secs(1) && second_gap <= secs(2), "{second_gap:?}");
    assert_eq!(tracker.breaker_status(id).unwrap().failure_count, 3);

    // A success ends the retries and its value comes back.
    let id = tracker
        .create(new("agent", "thread", "user").timeout_config(config))
        .unwrap()
        .id();
    let runs = AtomicUsize::new(0);
    let result = tracker
        .execute_with_retry(id, "llm", || {
            let n = runs.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err("503")
                } else {
                    Ok(u32::try_from(n).unwrap())
                }
            }
        })
        .await;
    assert_eq!(result.unwrap(), 2);
    assert_eq!(runs.load(Ordering::SeqCst), 3);

    // Timeouts are retried too; each attempt is cut at llm_api_timeout (15 s).
    let id = tracker
        .create(new("agent", "thread", "user").timeout_config(config))
        .unwrap()
        .id();
    let started = tokio::time::Instant::now();
    let result = tracker
        .execute_with_retry(id, "llm", || async {
            tokio::time::sleep(secs(60)).await;
            Ok::<u32, &str>(1)
        })
        .await;
    assert!(result.unwrap_err().is_timeout());
    let elapsed = started.elapsed();
    assert!(
        elapsed >= secs(45) + ms(1500) && elapsed <= secs(45) + secs(3),
        "{elapsed:?}"
    );

    // Jitter: delays for the same attempt differ, always within [cap/2, cap].
    let delays: HashSet<Duration> = (0..50).map(|_| policy.delay(1)).collect();
    assert!(delays.len() > 1);
    assert!(delays.iter().all(|d| *d >= secs(1) && *d <= secs(2)));
}

#[tokio::test(start_paused = true)]
async fn open_breaker_stops_retries() {
    let tracker = Tracker::with_clock(TrackerConfig::default(), Arc::new(TokioClock::new()));
    let config = TimeoutConfig {
        agent_execution_timeout: secs(600),
        failure_threshold: 2,
        max_retries: 5,
        ..TimeoutConfig::default()
    };
    let id = tracker
        .create(new("agent", "thread", "user").timeout_config(config))
        .unwrap()
        .id();
    let runs = AtomicUsize::new(0);
    let result = tracker
        .execute_with_retry(id, "llm", || async {
            runs.fetch_add(1, Ordering::SeqCst);
            Err::<u32, &str>("503")
        })
        .await;
    assert!(result.unwrap_err().is_circuit_open());
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    // A named breaker with its own retry policy.
    let breaker = tracker.breaker_with(
        "flaky",
        BreakerConfig {
            failure_threshold: 3,
            ..BreakerConfig::default()
        },
    );
    let policy = RetryPolicy {
        max_retries: 10,
        base_delay: ms(100),
        max_delay: ms(250),
        exponential_base: 2.0,
    };
    let runs = AtomicUsize::new(0);
    let result = breaker
        .call_with_retry(&policy, || async {
            runs.fetch_add(1, Ordering::SeqCst);
            Err::<u32, &str>("503")
        })
        .await;
    assert!(result.unwrap_err().is_circuit_open());
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

// ---------------------------------------------------------------------------------------------
// Slow LLM calls are declared dead (heartbeat timeout 10 s < LLM timeout 15 s)

#[tokio::test]
async fn slow_protected_call_is_not_declared_dead() {
    let (tracker, clock) = manual(TrackerConfig {
        heartbeat_timeout: secs(10),
        execution_timeout: secs(120),
        call_grace: secs(5),
        ..TrackerConfig::default()
    });
    assert_eq!(tracker.config().timeout_config.llm_api_timeout, secs(15));
    let busy = tracker.create(new("agent", "busy", "user")).unwrap().id();
    let idle = tracker.create(new("agent", "idle", "user")).unwrap().id();
    for id in [busy, idle] {
        tracker.start(id).unwrap();
        tracker.heartbeat(id).unwrap();
    }
    let (entered, is_in) = oneshot::channel::<()>();
    let (release, released) = oneshot::channel::<()>();
    let call = async move {
        entered.send(()).unwrap();
        released.await.unwrap();
        Ok::<_, std::io::Error>("slow answer")
    };
    let checks = async {
        is_in.await.unwrap();
        // 12 s into the call, past the heartbeat timeout.
        clock.advance(secs(12));
        assert_eq!(ids(&tracker.detect_dead()), [idle]);
        let sweep = tracker.sweep();
        assert_eq!(ids(&sweep.dead), [idle], "only the idle execution is dead");
        assert_eq!(sweep.rearmed, 1);
        assert_eq!(tracker.state(busy).unwrap(), ExecutionState::Running);
        // 19 s: still within the call timeout plus grace (20 s).
        clock.advance(secs(7));
        let sweep = tracker.sweep();
        assert!(sweep.dead.is_empty());
        assert!(tracker.detect_dead().is_empty());
        release.send(()).unwrap();
    };
    let (result, ()) = tokio::join!(tracker.execute(busy, "chat", call), checks);
    assert_eq!(result.unwrap(), "slow answer");
    // The call's end is a sign of life.
    assert_eq!(tracker.get(busy).unwrap().last_heartbeat, clock.now());
    clock.advance(secs(6)); // 25 s: 6 s after the call
    let sweep = tracker.sweep();
    assert!(sweep.dead.is_empty());
    assert_eq!(sweep.rearmed, 1);
    clock.advance(secs(5)); // 30 s: 11 s after the call, no heartbeat
    let sweep = tracker.sweep();
    assert_eq!(ids(&sweep.dead), [busy]);
    assert_eq!(sweep.dead[0].error.as_deref(), Some("No heartbeat for 11.0 s"));
}

#[tokio::test]
async fn hung_protected_call_is_dead_after_call_timeout_plus_grace() {
    let (tracker, clock) = manual(TrackerConfig {
        heartbeat_timeout: secs(10),
        execution_timeout: secs(120),
        call_grace: secs(5),
        ..TrackerConfig::default()
    });
    let id = tracker.create(new("agent", "thread", "user")).unwrap().id();
    tracker.start(id).unwrap();
    let (entered, is_in) = oneshot::channel::<()>();
    let (release, released) = oneshot::channel::<()>();
    let call = async move {
        entered.send(()).unwrap();
        released.await.unwrap();
        Ok::<u32, std::io::Error>(1)
    };
    let checks = async {
        is_in.await.unwrap();
        clock.advance(secs(20));
        assert!(tracker.sweep().dead.is_empty());
        clock.advance(secs(1)); // 21 s > 15 s call timeout + 5 s grace
        let sweep = tracker.sweep();
        assert_eq!(ids(&sweep.dead), [id]);
        assert_eq!(sweep.dead[0].error.as_deref(), Some("No heartbeat for 21.0 s"));
        release.send(()).unwrap();
    };
    let (_result, ()) = tokio::join!(tracker.execute(id, "chat", call), checks);
    assert_eq!(tracker.state(id).unwrap(), ExecutionState::Dead);
}

// ---------------------------------------------------------------------------------------------
// Every dead-detection pass scans all active records

#[test]
fn dead_detection_touches_only_due_executions() {
    let (tracker, clock) = manual(TrackerConfig {
        heartbeat_timeout: secs(10),
        execution_timeout: secs(15),
        ..TrackerConfig::default()
    });
    let stale: Vec<ExecutionId> = (0..3)
        .map(|_| tracker.create(new("agent", "stale", "user")).unwrap().id())
        .collect();
    clock.advance(secs(5));
    let fresh: Vec<ExecutionId> = (0..10_000)
        .map(|_| tracker.create(new("agent", "fresh", "user")).unwrap().id())
        .collect();
    // Nothing is due: a sweep does nothing at all.
    assert_eq!(tracker.sweep(), Sweep::default());

    // t = 11: only the three stale executions are due; the 10,000 fresh ones are not looked at.
    clock.advance(secs(6));
    for id in &fresh {
        tracker.heartbeat(*id).unwrap();
    }
    let sweep = tracker.sweep();
    assert_eq!(ids(&sweep.dead), stale);
    assert_eq!(sweep.rearmed, 0);
    assert!(sweep.timed_out.is_empty());
    assert_eq!(tracker.sweep(), Sweep::default());

    // t = 16: the fresh executions' first deadline (15 s) comes due; they heartbeat at 11, so
    // each is rechecked once and re-armed, none dead.
    clock.advance(secs(5));
    let sweep = tracker.sweep();
    assert!(sweep.dead.is_empty() && sweep.timed_out.is_empty());
    assert_eq!(sweep.rearmed, 10_000);
    assert_eq!(tracker.sweep(), Sweep::default());
    assert_eq!(tracker.active_count(), 10_000);
}

// ---------------------------------------------------------------------------------------------
// No per-user access control on reads

#[test]
fn event_filter_scopes_by_user() {
    let (tracker, clock) = manual(TrackerConfig::default());
    let mut alice = tracker.subscribe(EventFilter::user("alice"));
    let mut bob = tracker.subscribe(EventFilter::user("bob"));
    let mut everything = tracker.subscribe(EventFilter::all());
    let mut thread = tracker.subscribe(EventFilter::thread("shared-thread"));

    let a = tracker.create(new("agent", "shared-thread", "alice")).unwrap().id();
    let b = tracker.create(new("agent", "shared-thread", "bob")).unwrap().id();
    let mut only_a = tracker.subscribe(EventFilter {
        execution_id: Some(a),
        ..EventFilter::default()
    });
    tracker.heartbeat(a).unwrap();
    tracker.heartbeat(b).unwrap();
    tracker.complete(b, Some(json!("bob's secret answer"))).unwrap();
    // A provider-wide breaker event belongs to no user.
    let breaker = tracker.breaker("openai");
    record(&breaker, Outcome::Failure, 3);
    clock.advance(secs(1));

    let alice_seen = drain(&mut alice);
    assert_eq!(names(&alice_seen), ["execution_created", "heartbeat"]);
    assert!(
        alice_seen
            .iter()
            .all(|e| e.execution.as_ref().unwrap().execution_id == a)
    );
    let bob_seen = drain(&mut bob);
    assert_eq!(
        names(&bob_seen),
        ["execution_created", "heartbeat", "execution_completed"]
    );
    assert!(
        bob_seen
            .iter()
            .all(|e| e.execution.as_ref().unwrap().owner.user_id == "bob")
    );
    assert_eq!(names(&drain(&mut only_a)), ["heartbeat"]);
    assert_eq!(drain(&mut thread).len(), 5);
    let all = drain(&mut everything);
    assert_eq!(
        names(&all),
        [
            "execution_created",
            "execution_created",
            "heartbeat",
            "heartbeat",
            "execution_completed",
            "breaker_opened"
        ]
    );
    // The filter itself: unscoped events only reach unfiltered subscribers.
    let breaker_event = &all[5];
    assert!(EventFilter::all().matches(breaker_event));
    assert!(!EventFilter::user("alice").matches(breaker_event));
    assert!(!EventFilter::user("alice").matches(&all[1]));
    assert!(EventFilter::user("bob").matches(&all[1]));
    assert!(
        !EventFilter {
            tenant: Some("other-tenant".into()),
            user_id: Some("bob".into()),
            ..EventFilter::default()
        }
        .matches(&all[1])
    );
    assert!(
        EventFilter {
            tenant: Some(agentrack::DEFAULT_TENANT.into()),
            user_id: Some("bob".into()),
            ..EventFilter::default()
        }
        .matches(&all[1])
    );

    // Reads by user hold only that user's records.
    assert_eq!(ids(&tracker.by_user("alice")), [a]);
    assert_eq!(ids(&tracker.by_user("bob")), [b]);
    assert!(tracker.by_user("mallory").is_empty());
}

// ---------------------------------------------------------------------------------------------
// Terminal states, terminal events, cancellation

#[tokio::test]
async fn terminal_state_is_final() {
    let (tracker, clock) = manual(TrackerConfig {
        cleanup_age: secs(100_000),
        ..TrackerConfig::default()
    });
    for end in [
        ExecutionState::Completed,
        ExecutionState::Failed,
        ExecutionState::Timeout,
        ExecutionState::Dead,
        ExecutionState::Cancelled,
    ] {
        let id = tracker.create(new("agent", "thread", "user")).unwrap().id();
        tracker.start(id).unwrap();
        tracker.transition(id, Phase::WebsocketSetup, None).unwrap();
        tracker
            .set_state(
                id,
                end,
                StateUpdate {
                    error: Some("first reason".into()),
                    result: Some(json!("first result")),
                },
            )
            .unwrap();
        let before = tracker.get(id).unwrap();
        let seq = tracker.last_seq();
        let terminal = TrackerError::Terminal {
            execution_id: id,
            state: end,
        };
        for state in ExecutionState::ALL {
            let update = StateUpdate {
                error: Some("second reason".into()),
                result: Some(json!("second result")),
            };
            assert_eq!(
                tracker.set_state(id, *state, update).unwrap_err(),
                terminal,
                "{end} → {state}"
            );
        }
        assert_eq!(tracker.complete(id, None).unwrap_err(), terminal);
        assert_eq!(tracker.fail(id, "again").unwrap_err(), terminal);
        assert_eq!(tracker.cancel(id, "again").unwrap_err(), terminal);
        assert_eq!(tracker.start(id).unwrap_err(), terminal);
        assert_eq!(tracker.heartbeat(id).unwrap_err(), terminal);
        assert_eq!(
            tracker.transition(id, Phase::ContextValidation, None).unwrap_err(),
            terminal
        );
        assert_eq!(
            tracker
                .update_agent_state(id, agentrack::AgentStateUpdate::default())
                .unwrap_err(),
            terminal
        );
        assert_eq!(
            tracker.set_timeout_config(id, TimeoutConfig::default()).unwrap_err(),
            terminal
        );
        assert!(matches!(
            tracker.execute(id, "llm", ok_call(1)).await,
            Err(CallError::Tracker(ref e)) if *e == terminal
        ));
        // Time passing changes nothing either.
        clock.advance(secs(1000));
        let sweep = tracker.sweep();
        assert!(sweep.dead.is_empty() && sweep.timed_out.is_empty());
        assert_eq!(tracker.get(id).unwrap(), before);
        assert_eq!(tracker.last_seq(), seq, "no events after the end");
    }
    let metrics = tracker.metrics();
    assert_eq!(
        (
            metrics.successful_executions,
            metrics.failed_executions,
            metrics.timeout_executions,
            metrics.dead_executions,
            metrics.cancelled_executions,
            metrics.active_executions
        ),
        (1, 1, 1, 1, 1, 0)
    );
}

#[test]
fn exactly_one_terminal_event_per_execution() {
    let (tracker, clock) = manual(TrackerConfig {
        heartbeat_timeout: secs(10),
        event_buffer: 16_384,
        ..TrackerConfig::default()
    });
    let mut events = tracker.subscribe(EventFilter::all());
    let completed = tracker.create(new("agent", "t", "u")).unwrap().id();
    let failed = tracker.create(new("agent", "t", "u")).unwrap().id();
    let cancelled = tracker.create(new("agent", "t", "u")).unwrap().id();
    let timed_out = tracker.create(new("agent", "t", "u").timeout(secs(5))).unwrap().id();
    let dead = tracker.create(new("agent", "t", "u").timeout(secs(100))).unwrap().id();
    for id in [completed, failed, cancelled, timed_out, dead] {
        tracker.start(id).unwrap();
        tracker.heartbeat(id).unwrap();
    }
    let started = clock.now();
    clock.advance(secs(1));
    let ended_by_caller = clock.now();
    // Still alive when its timeout passes: death is checked first, so keep it heartbeating.
    tracker.heartbeat(timed_out).unwrap();
    tracker.complete(completed, Some(json!(1))).unwrap();
    tracker.fail(failed, "tool crashed").unwrap();
    tracker.cancel(cancelled, "user pressed stop").unwrap();
    clock.advance(secs(10));
    let sweep = tracker.sweep();
    assert_eq!(ids(&sweep.timed_out), [timed_out]);
    assert_eq!(ids(&sweep.dead), [dead]);
    // Everyone tries to end them again, and time keeps passing.
    for id in [completed, failed, cancelled, timed_out, dead] {
        assert!(tracker.complete(id, None).is_err());
        assert!(tracker.fail(id, "late").is_err());
        assert!(tracker.cancel(id, "late").is_err());
    }
    clock.advance(secs(100));
    tracker.sweep();

    let all = drain(&mut events);
    // A caller's update is itself a sign of life; the monitor reports the last real one.
    let expected = [
        (
            completed,
            "execution_completed",
            ExecutionState::Completed,
            None,
            ended_by_caller,
        ),
        (
            failed,
            "execution_failed",
            ExecutionState::Failed,
            Some("tool crashed"),
            ended_by_caller,
        ),
        (
            cancelled,
            "execution_cancelled",
            ExecutionState::Cancelled,
            Some("user pressed stop"),
            ended_by_caller,
        ),
        (
            timed_out,
            "timed_out",
            ExecutionState::Timeout,
            Some("Execution exceeded 5 s timeout"),
            ended_by_caller,
        ),
        (
            dead,
            "dead",
            ExecutionState::Dead,
            Some("No heartbeat for 11.0 s"),
            started,
        ),
    ];
    for (id, name, state, error, last_heartbeat) in expected {
        let mine = of(&all, id);
        let terminal: Vec<_> = mine.iter().filter(|e| e.kind.finished().is_some()).collect();
        assert_eq!(terminal.len(), 1, "{name}");
        let last = mine.last().unwrap();
        assert_eq!(last.kind.name(), name, "the terminal event is the last one");
        let finished = last.kind.finished().unwrap();
        assert_eq!(finished.state, state);
        assert_eq!(finished.from, ExecutionState::Running);
        assert_eq!(finished.error.as_deref(), error);
        assert_eq!(finished.last_heartbeat, last_heartbeat);
    }

    // Racing the monitor: each overdue execution ends exactly once, by whoever comes first.
    race_the_monitor(&tracker, &clock, &mut events);
    let metrics = tracker.metrics();
    assert_eq!(metrics.successful_executions + metrics.timeout_executions, 1 + 1 + 200);
}

/// Racing the monitor: each of 200 overdue executions ends exactly once, by whoever comes first.
fn race_the_monitor(tracker: &Tracker, clock: &ManualClock, events: &mut EventStream) {
    let overdue: Vec<ExecutionId> = (0..200)
        .map(|_| tracker.create(new("agent", "race", "u").timeout(secs(5))).unwrap().id())
        .collect();
    clock.advance(secs(6));
    std::thread::scope(|scope| {
        let finisher = scope.spawn(|| {
            overdue
                .iter()
                .rev()
                .filter(|id| tracker.complete(**id, None).is_ok())
                .count()
        });
        let sweeper = scope.spawn(|| tracker.sweep().timed_out.len());
        let won = finisher.join().unwrap() + sweeper.join().unwrap();
        assert_eq!(won, 200);
    });
    let all = drain(events);
    let mut terminal_events: HashMap<ExecutionId, usize> = HashMap::new();
    for event in all.iter().filter(|e| e.kind.finished().is_some()) {
        *terminal_events
            .entry(event.execution.as_ref().unwrap().execution_id)
            .or_default() += 1;
    }
    assert_eq!(terminal_events.len(), 200);
    assert!(terminal_events.values().all(|n| *n == 1));
}

#[tokio::test]
async fn cancellation_token_fires_on_timeout() {
    let (tracker, clock) = manual(TrackerConfig {
        heartbeat_timeout: secs(10),
        ..TrackerConfig::default()
    });
    let id = tracker
        .create(new("agent", "thread", "user").timeout(secs(5)))
        .unwrap()
        .id();
    let token = tracker.cancellation(id).unwrap();
    let worker = tokio::spawn({
        let token = token.clone();
        async move {
            token.cancelled().await;
            "stopped"
        }
    });
    clock.advance(secs(4));
    assert!(tracker.sweep().timed_out.is_empty());
    assert!(!token.is_cancelled());
    clock.advance(secs(2));
    assert_eq!(ids(&tracker.sweep().timed_out), [id]);
    assert!(token.is_cancelled());
    let outcome = tokio::time::timeout(secs(5), worker).await.unwrap().unwrap();
    assert_eq!(outcome, "stopped");
    // A token asked for after the end is already cancelled.
    assert!(tracker.cancellation(id).unwrap().is_cancelled());

    // Death and cancellation by a caller cancel too; a running execution's token does not.
    let dying = tracker
        .create(new("agent", "thread", "user").timeout(secs(100)))
        .unwrap()
        .id();
    let stopped = tracker
        .create(new("agent", "thread", "user").timeout(secs(100)))
        .unwrap()
        .id();
    let running = tracker
        .create(new("agent", "thread", "user").timeout(secs(100)))
        .unwrap()
        .id();
    let tokens: Vec<_> = [dying, stopped, running]
        .iter()
        .map(|id| tracker.cancellation(*id).unwrap())
        .collect();
    tracker.cancel(stopped, "user pressed stop").unwrap();
    assert!(tokens[1].is_cancelled());
    clock.advance(secs(8));
    tracker.heartbeat(running).unwrap();
    clock.advance(secs(3));
    assert_eq!(ids(&tracker.sweep().dead), [dying]);
    assert!(tokens[0].is_cancelled());
    assert!(!tokens[2].is_cancelled());
    assert_eq!(tracker.state(running).unwrap(), ExecutionState::Pending);
}

// ---------------------------------------------------------------------------------------------
// No locking (thread-unsafe)

#[test]
fn concurrent_creates_and_cleanups_keep_indexes_consistent() {
    let tracker = Tracker::new();
    let cleaned = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for n in 0..300 {
                    // Everyone hammers the same index keys.
                    let id = tracker
                        .create(new("shared-agent", "shared-thread", "shared-user"))
                        .unwrap()
                        .id();
                    tracker.heartbeat(id).unwrap();
                    if n % 3 != 0 {
                        tracker.complete(id, None).unwrap();
                        tracker.cleanup(id).unwrap();
                        cleaned.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    assert!(
        tracker.check_consistency().is_empty(),
        "{:?}",
        tracker.check_consistency()
    );
    assert_eq!(cleaned.load(Ordering::SeqCst), 1600);
    assert_eq!(tracker.by_thread("shared-thread").len(), 800);
    assert_eq!(tracker.by_agent("shared-agent").len(), 800);
    assert_eq!(tracker.by_user("shared-user").len(), 800);
    assert_eq!(tracker.active_count(), 800);
    let metrics = tracker.metrics();
    assert_eq!((metrics.total_executions, metrics.successful_executions), (2400, 1600));
}

// ---------------------------------------------------------------------------------------------
// Heartbeats and events are lost on restart (memory only)

#[test]
fn restored_execution_gets_a_heartbeat_window_and_sequences_resume() {
    let (before, clock) = manual(TrackerConfig::default());
    let id = before
        .create(new("agent", "thread", "user").timeout(secs(600)))
        .unwrap()
        .id();
    before.start(id).unwrap();
    before.heartbeat(id).unwrap();
    before.transition(id, Phase::WebsocketSetup, None).unwrap();
    let done = before.create(new("agent", "thread", "user")).unwrap().id();
    before.complete(done, Some(json!("kept"))).unwrap();
    let stored = [before.get(id).unwrap(), before.get(done).unwrap()];
    let last_seq = before.last_seq();

    // The process restarts 30 s later: longer than the heartbeat timeout.
    let later = agentrack::ManualClock::starting_at(clock.now() + secs(30));
    let after = Tracker::with_clock(TrackerConfig::default(), Arc::new(later.clone()));
    after.resume_sequence(last_seq);
    let mut events = after.subscribe(EventFilter::all());
    for record in &stored {
        after.restore(record.clone()).unwrap();
    }
    assert!(matches!(
        after.restore(stored[0].clone()),
        Err(TrackerError::InvalidInput {
            field: "execution_id",
            ..
        })
    ));
    assert_eq!(after.get(id).unwrap(), stored[0]);
    assert_eq!(after.get(done).unwrap().result, Some(json!("kept")));
    assert_eq!(ids(&after.active()), [id]);
    let metrics = after.metrics();
    assert_eq!(
        (
            metrics.total_executions,
            metrics.active_executions,
            metrics.successful_executions
        ),
        (2, 1, 1)
    );
    assert!(drain(&mut events).is_empty(), "restoring emits nothing");

    // One heartbeat window of grace from the restart, not from the last heartbeat.
    assert!(after.detect_dead().is_empty());
    later.advance(secs(9));
    assert!(after.sweep().dead.is_empty());
    later.advance(secs(2));
    assert_eq!(ids(&after.sweep().dead), [id]);

    // Numbering continues where the store left off, per execution and globally.
    let events = drain(&mut events);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].global_seq, last_seq + 1);
    assert_eq!(events[0].execution.as_ref().unwrap().seq, stored[0].seq + 1);
}

#[test]
fn restored_execution_keeps_its_original_timeout() {
    // Documented on `Tracker::restore`: "its execution timeout still counts from its original
    // start". An execution that started 100 s before the restart with a 15 s timeout is overdue.
    let (before, clock) = manual(TrackerConfig::default());
    let id = before
        .create(new("agent", "thread", "user").timeout(secs(15)))
        .unwrap()
        .id();
    before.start(id).unwrap();
    let stored = before.get(id).unwrap();

    let later = agentrack::ManualClock::starting_at(clock.now() + secs(100));
    let after = Tracker::with_clock(TrackerConfig::default(), Arc::new(later.clone()));
    after.restore(stored).unwrap();
    assert!(after.timeout_status(id).unwrap().is_timed_out);
    later.advance(secs(1));
    assert_eq!(
        ids(&after.detect_dead()),
        [id],
        "detection must agree with timeout_status"
    );
    let sweep = after.sweep();
    assert_eq!(
        ids(&sweep.timed_out),
        [id],
        "overdue since 85 s: it times out, it is not merely dead later"
    );
    assert_eq!(after.state(id).unwrap(), ExecutionState::Timeout);
}

#[test]
fn a_failover_restore_keeps_a_live_agent_and_dooms_a_gone_one_by_its_deadline() {
    // Heartbeat timeout 10 s. The failed tracker's store lags by up to 1 s (`stale`); agents
    // need up to 2 s to reach the next tracker (`reconnect`).
    let (before, clock) = manual(TrackerConfig::default());
    let start = |agent: &str| {
        let id = before
            .create(new(agent, "thread", "user").timeout(secs(600)))
            .unwrap()
            .id();
        before.start(id).unwrap();
        before.heartbeat(id).unwrap();
        id
    };
    let gone = start("gone"); // last heartbeat at 0 s, then silence
    clock.advance(secs(8));
    let live = start("live"); // heartbeated at 8 s, and will again once it finds the next node
    let stored = [before.get(gone).unwrap(), before.get(live).unwrap()];

    // The next tracker takes over at 9 s.
    let later = agentrack::ManualClock::starting_at(clock.now() + secs(1));
    let after = Tracker::with_clock(TrackerConfig::default(), Arc::new(later.clone()));
    for record in stored {
        after.restore_after_failover(record, secs(1), secs(2)).unwrap();
    }
    // `gone`: its deadline (10 s) plus the store's lag (1 s) is later than now + reconnect (11 s
    // either way): dead at 11 s, not a full window after the takeover (19 s).
    later.advance(Duration::from_millis(1900));
    assert!(after.detect_dead().is_empty(), "10.9 s: within the lag");
    later.advance(Duration::from_millis(200));
    assert_eq!(ids(&after.detect_dead()), [gone], "11.1 s");
    // `live` reconnects within its window and lives on.
    after.heartbeat(live).unwrap();
    later.advance(secs(9));
    assert!(after.detect_dead().iter().all(|record| record.execution_id != live));
    assert!(after.get(live).unwrap().is_alive());
}

#[test]
fn a_failover_restore_past_the_deadline_still_gives_the_agent_time_to_reconnect() {
    let (before, clock) = manual(TrackerConfig::default());
    let id = before
        .create(new("slow", "thread", "user").timeout(secs(600)))
        .unwrap()
        .id();
    before.start(id).unwrap();
    before.heartbeat(id).unwrap();
    let stored = before.get(id).unwrap();
    // Taken over at 15 s, past its 10 s deadline: the takeover itself took that long, so the
    // agent (maybe still heartbeating into 503s) gets `reconnect` from now.
    let later = agentrack::ManualClock::starting_at(clock.now() + secs(15));
    let after = Tracker::with_clock(TrackerConfig::default(), Arc::new(later.clone()));
    after.restore_after_failover(stored, secs(1), secs(2)).unwrap();
    later.advance(Duration::from_millis(1900));
    assert!(after.detect_dead().is_empty());
    later.advance(Duration::from_millis(200));
    assert_eq!(ids(&after.detect_dead()), [id]);
}
