//! The spawned monitor, on tokio's paused clock: the tracker reads time through a `TokioClock`, so
//! the same virtual time drives the monitor's ticks and the deadlines it checks. Nothing sleeps in
//! real time.
//!
//! Time moves with `advance_to`, a `sleep_until` on the paused clock: tokio only jumps the clock
//! forward when every task is idle, so each monitor tick on the way — sweep and callbacks — runs
//! to completion before the test looks. Checks sit half-way between ticks (which fall on whole
//! seconds after the monitor starts), so no check races a tick.

#![allow(clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentrack::{
    Event, EventFilter, EventKind, EventStream, ExecutionId, ExecutionRecord, ExecutionState, NewExecution,
    NotifyError, TokioClock, Tracker, TrackerConfig, TrackerError,
};
use tokio::time::Instant;

const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

fn config() -> TrackerConfig {
    TrackerConfig {
        heartbeat_timeout: HEARTBEAT_TIMEOUT,
        execution_timeout: Duration::from_secs(60),
        monitor_interval: Duration::from_secs(1),
        cleanup_age: Duration::from_secs(3_600),
        ..TrackerConfig::default()
    }
}

/// A tracker on tokio's (paused) clock; call inside the test's runtime.
fn tracker_with(config: TrackerConfig) -> Tracker {
    Tracker::with_clock(config, Arc::new(TokioClock::new()))
}

/// Lets virtual time run until `at` after `origin`, every monitor tick on the way included.
async fn advance_to(origin: Instant, at: f64) {
    tokio::time::sleep_until(origin + Duration::from_secs_f64(at)).await;
}

/// The events buffered so far.
async fn drain(stream: &mut EventStream) -> Vec<Arc<Event>> {
    let mut events = Vec::new();
    while let Ok(Some(event)) = tokio::task::unconstrained(tokio::time::timeout(Duration::ZERO, stream.recv())).await {
        events.push(event.expect("the subscriber never lags here"));
    }
    events
}

fn create(tracker: &Tracker, name: &str) -> ExecutionId {
    tracker
        .create(NewExecution::new(name, format!("thread-{name}"), "user-1"))
        .expect("create")
        .id()
}

/// Creates, starts and heartbeats once: a running execution.
fn running(tracker: &Tracker, name: &str) -> ExecutionId {
    let id = create(tracker, name);
    tracker.start(id).expect("start");
    tracker.heartbeat(id).expect("heartbeat");
    id
}

fn state(tracker: &Tracker, id: ExecutionId) -> ExecutionState {
    tracker.state(id).expect("record in memory")
}

type Seen = Arc<Mutex<Vec<ExecutionRecord>>>;

/// Registers an `on_dead` (or `on_timeout`) callback that records what it is given.
fn recorder() -> (
    Seen,
    impl Fn(ExecutionRecord) -> std::future::Ready<Result<(), NotifyError>> + Send + Sync,
) {
    let seen: Seen = Arc::default();
    let sink = Arc::clone(&seen);
    let callback = move |record: ExecutionRecord| {
        sink.lock().expect("recorder lock").push(record);
        std::future::ready(Ok(()))
    };
    (seen, callback)
}

fn ids(seen: &Seen) -> Vec<ExecutionId> {
    seen.lock()
        .expect("recorder lock")
        .iter()
        .map(|r| r.execution_id)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn silent_execution_is_declared_dead_after_the_heartbeat_timeout_with_event_and_callback() {
    let tracker = tracker_with(config());
    let (dead_seen, on_dead) = recorder();
    tracker.on_dead(on_dead);
    let (timeout_seen, on_timeout) = recorder();
    tracker.on_timeout(on_timeout);
    let mut stream = tracker.subscribe(EventFilter::all());
    let origin = Instant::now();
    let monitor = tracker.spawn_monitor();

    let id = running(&tracker, "silent");
    let token = tracker.cancellation(id).expect("token");
    let created = tracker.get(id).expect("record");

    // The tick at 10 s sees a gap of exactly the timeout: not yet dead.
    advance_to(origin, 10.5).await;
    assert_eq!(state(&tracker, id), ExecutionState::Running);
    assert!(ids(&dead_seen).is_empty());
    assert!(!token.is_cancelled());

    // The tick at 11 s sees 11 s without a heartbeat.
    advance_to(origin, 11.5).await;
    let record = tracker.get(id).expect("record");
    assert_eq!(record.state, ExecutionState::Dead);
    let error = record.error.clone().expect("a reason");
    assert!(error.starts_with("No heartbeat for 11"), "{error}");
    assert_eq!(record.completed_at, Some(created.started_at + Duration::from_secs(11)));
    assert_eq!(record.heartbeat_count, 1);
    assert!(token.is_cancelled(), "declaring an execution dead cancels its work");

    // The callback got the finished record; the timeout callback got nothing.
    let seen = dead_seen.lock().expect("recorder lock").clone();
    assert_eq!(seen, vec![record.clone()]);
    assert!(ids(&timeout_seen).is_empty());

    // One terminal `dead` event, the execution's last.
    let events = drain(&mut stream).await;
    let names: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(
        names,
        [
            "execution_created",
            "state_changed",
            "state_changed",
            "heartbeat",
            "dead"
        ]
    );
    let EventKind::Dead(finished) = &events[4].kind else {
        panic!("expected a dead event");
    };
    assert_eq!(
        (finished.from, finished.state),
        (ExecutionState::Running, ExecutionState::Dead)
    );
    assert_eq!(finished.error.as_deref(), Some(error.as_str()));
    assert_eq!(finished.last_heartbeat, created.last_heartbeat);
    assert_eq!(finished.duration_ms, 11_000);
    assert_eq!(events[4].execution.as_ref().map(|s| s.seq), Some(record.seq));

    let metrics = tracker.metrics();
    assert_eq!((metrics.dead_executions, metrics.active_executions), (1, 0));
    assert_eq!(
        tracker.heartbeat(id),
        Err(TrackerError::Terminal {
            execution_id: id,
            state: ExecutionState::Dead
        })
    );

    // Nothing more happens to it, however long the monitor keeps running.
    advance_to(origin, 40.5).await;
    assert_eq!(tracker.get(id), Ok(record));
    assert_eq!(ids(&dead_seen), vec![id]);
    assert!(drain(&mut stream).await.is_empty());
    assert!(monitor.is_running());
    monitor.stop().await;
}

#[tokio::test(start_paused = true)]
async fn overrunning_execution_times_out_with_timed_out_event_and_callback() {
    let tracker = tracker_with(config());
    let (dead_seen, on_dead) = recorder();
    tracker.on_dead(on_dead);
    let (timeout_seen, on_timeout) = recorder();
    tracker.on_timeout(on_timeout);
    let mut events = tracker.subscribe(EventFilter::all());
    let origin = Instant::now();
    let monitor = tracker.spawn_monitor();

    let id = tracker
        .create(NewExecution::new("slow", "thread-1", "user-1").timeout(Duration::from_secs(5)))
        .expect("create")
        .id();
    tracker.start(id).expect("start");
    let token = tracker.cancellation(id).expect("token");
    // It heartbeats faithfully every second; it is the 5 s execution timeout that ends it.
    for second in 0..5 {
        advance_to(origin, f64::from(second) + 0.5).await;
        tracker.heartbeat(id).expect("alive until the timeout");
    }
    advance_to(origin, 5.5).await;
    assert_eq!(
        state(&tracker, id),
        ExecutionState::Running,
        "exactly at the timeout is not past it"
    );
    advance_to(origin, 6.5).await;

    let record = tracker.get(id).expect("record");
    assert_eq!(record.state, ExecutionState::Timeout);
    let error = record.error.clone().expect("a reason");
    assert!(error.starts_with("Execution exceeded 5"), "{error}");
    assert_eq!(record.heartbeat_count, 5);
    assert!(token.is_cancelled(), "a timeout cancels the execution's work");
    assert_eq!(
        tracker.heartbeat(id),
        Err(TrackerError::Terminal {
            execution_id: id,
            state: ExecutionState::Timeout
        })
    );
    assert_eq!(
        timeout_seen.lock().expect("recorder lock").clone(),
        vec![record.clone()]
    );
    assert!(ids(&dead_seen).is_empty(), "a timed-out execution is not also dead");

    let events = drain(&mut events).await;
    let last = events.last().expect("events");
    let EventKind::TimedOut(finished) = &last.kind else {
        panic!("expected timed_out, got {}", last.kind.name());
    };
    assert_eq!(last.kind.name(), "timed_out");
    assert_eq!(
        (finished.from, finished.state),
        (ExecutionState::Running, ExecutionState::Timeout)
    );
    assert_eq!(finished.duration_ms, 6_000);
    assert_eq!(events.iter().filter(|e| e.kind.finished().is_some()).count(), 1);
    assert_eq!(tracker.metrics().timeout_executions, 1);
    monitor.stop().await;
}

#[tokio::test(start_paused = true)]
async fn failing_and_panicking_callbacks_do_not_stop_the_monitor_or_the_other_callbacks() {
    let tracker = tracker_with(config());
    let failed_calls = Arc::new(AtomicUsize::new(0));
    let panicked_calls = Arc::new(AtomicUsize::new(0));
    let calls = Arc::clone(&failed_calls);
    tracker.on_dead(move |_record| {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Err::<(), NotifyError>("the pager is down".into()) }
    });
    let calls = Arc::clone(&panicked_calls);
    tracker.on_dead(move |record| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            assert!(!record.is_terminal(), "a dead-callback panicking on purpose");
            Ok(())
        }
    });
    let (dead_seen, on_dead) = recorder();
    tracker.on_dead(on_dead);
    let timeout_panics = Arc::new(AtomicUsize::new(0));
    let calls = Arc::clone(&timeout_panics);
    tracker.on_timeout(move |record| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            assert!(!record.is_terminal(), "a timeout-callback panicking on purpose");
            Ok(())
        }
    });
    let (timeout_seen, on_timeout) = recorder();
    tracker.on_timeout(on_timeout);
    let origin = Instant::now();
    let monitor = tracker.spawn_monitor();

    let first = running(&tracker, "first");
    advance_to(origin, 11.5).await;
    assert_eq!(state(&tracker, first), ExecutionState::Dead);
    assert_eq!(failed_calls.load(Ordering::SeqCst), 1);
    assert_eq!(panicked_calls.load(Ordering::SeqCst), 1);
    assert_eq!(ids(&dead_seen), vec![first], "callbacks after a failing one still run");
    assert!(monitor.is_running(), "a failing callback does not stop the monitor");

    // Later executions are still detected, and every callback runs again.
    let second = running(&tracker, "second");
    advance_to(origin, 21.6).await;
    assert_eq!(state(&tracker, second), ExecutionState::Running);
    advance_to(origin, 22.6).await;
    assert_eq!(state(&tracker, second), ExecutionState::Dead);
    assert_eq!(failed_calls.load(Ordering::SeqCst), 2);
    assert_eq!(panicked_calls.load(Ordering::SeqCst), 2);
    assert_eq!(ids(&dead_seen), vec![first, second]);

    // Timeouts too, past a panicking timeout callback.
    let third = tracker
        .create(NewExecution::new("third", "thread-3", "user-1").timeout(Duration::from_secs(3)))
        .expect("create")
        .id();
    advance_to(origin, 26.5).await;
    assert_eq!(state(&tracker, third), ExecutionState::Timeout);
    assert_eq!(timeout_panics.load(Ordering::SeqCst), 1);
    assert_eq!(ids(&timeout_seen), vec![third]);
    let fourth = running(&tracker, "fourth");
    advance_to(origin, 37.5).await;
    assert_eq!(state(&tracker, fourth), ExecutionState::Dead);
    assert_eq!(ids(&dead_seen), vec![first, second, fourth]);
    assert_eq!(
        (
            failed_calls.load(Ordering::SeqCst),
            panicked_calls.load(Ordering::SeqCst)
        ),
        (3, 3)
    );

    assert!(monitor.is_running());
    let metrics = tracker.metrics();
    assert_eq!((metrics.dead_executions, metrics.timeout_executions), (3, 1));
    monitor.stop().await;
}

/// Starts a monitor, proves it detects, then ends it with `end` and proves it detects no more.
async fn detection_ends_after<F, Fut>(end: F)
where
    F: FnOnce(agentrack::MonitorHandle) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let tracker = tracker_with(config());
    let (dead_seen, on_dead) = recorder();
    tracker.on_dead(on_dead);
    let origin = Instant::now();
    let monitor = tracker.spawn_monitor();
    assert!(monitor.is_running());

    let before = running(&tracker, "before");
    advance_to(origin, 11.5).await;
    assert_eq!(state(&tracker, before), ExecutionState::Dead, "the monitor was working");

    end(monitor).await;
    let after = running(&tracker, "after");
    advance_to(origin, 120.5).await;
    assert_eq!(
        state(&tracker, after),
        ExecutionState::Running,
        "nothing marks it any more"
    );
    let overdue: Vec<ExecutionId> = tracker.detect_dead().iter().map(|r| r.execution_id).collect();
    assert_eq!(overdue, vec![after], "it is overdue, only unmarked");
    assert_eq!(ids(&dead_seen), vec![before]);
    assert_eq!(tracker.metrics().dead_executions, 1);
}

#[tokio::test(start_paused = true)]
async fn stopping_the_monitor_ends_detection() {
    detection_ends_after(agentrack::MonitorHandle::stop).await;
}

#[tokio::test(start_paused = true)]
async fn dropping_the_monitor_handle_ends_detection() {
    detection_ends_after(|monitor| async move { drop(monitor) }).await;
}

#[tokio::test(start_paused = true)]
async fn finished_records_are_purged_once_older_than_the_cleanup_age() {
    let tracker = tracker_with(TrackerConfig {
        cleanup_age: Duration::from_secs(30),
        // Nothing here dies or times out: only purging is at work.
        heartbeat_timeout: Duration::from_secs(3_600),
        execution_timeout: Duration::from_secs(3_600),
        ..config()
    });
    let origin = Instant::now();
    let monitor = tracker.spawn_monitor();
    let early = create(&tracker, "early");
    let cleaned = create(&tracker, "cleaned");
    let alive = create(&tracker, "alive");
    let late = create(&tracker, "late");

    advance_to(origin, 0.5).await;
    tracker.complete(early, None).expect("complete");
    tracker.fail(cleaned, "broke").expect("fail");
    let cleaned_record = tracker.cleanup(cleaned).expect("cleanup");
    advance_to(origin, 10.5).await;
    tracker.cancel(late, "stopped").expect("cancel");

    // The tick at 30 s purges what finished at or before 0 s: `early` (0.5 s) stays.
    advance_to(origin, 30.2).await;
    assert_eq!(state(&tracker, early), ExecutionState::Completed);
    advance_to(origin, 31.2).await;
    assert_eq!(tracker.get(early), Err(TrackerError::NotFound { execution_id: early }));
    assert_eq!(state(&tracker, late), ExecutionState::Cancelled);
    advance_to(origin, 40.2).await;
    assert_eq!(state(&tracker, late), ExecutionState::Cancelled);
    advance_to(origin, 41.2).await;
    assert_eq!(tracker.get(late), Err(TrackerError::NotFound { execution_id: late }));

    // Alive executions are never purged, however old.
    advance_to(origin, 200.5).await;
    assert_eq!(state(&tracker, alive), ExecutionState::Pending);
    let remaining: Vec<ExecutionId> = tracker.all().iter().map(|r| r.execution_id).collect();
    assert_eq!(remaining, vec![alive]);
    assert_eq!(
        tracker
            .by_user("user-1")
            .iter()
            .map(|r| r.execution_id)
            .collect::<Vec<_>>(),
        vec![alive]
    );
    // Purging is not cleanup: only the cleaned-up record is in the history.
    assert_eq!(tracker.completed_history(), vec![cleaned_record]);
    // Counters outlive the records they count.
    let metrics = tracker.metrics();
    assert_eq!(
        (
            metrics.total_executions,
            metrics.active_executions,
            metrics.successful_executions,
            metrics.failed_executions,
            metrics.cancelled_executions
        ),
        (4, 1, 1, 1, 1)
    );
    assert_eq!(tracker.check_consistency(), Vec::<String>::new());
    monitor.stop().await;
}

#[tokio::test(start_paused = true)]
async fn max_finished_cap_drops_the_oldest_finished_first() {
    let tracker = tracker_with(TrackerConfig {
        max_finished: 3,
        ..config()
    });
    let origin = Instant::now();
    let monitor = tracker.spawn_monitor();
    let e: Vec<ExecutionId> = (0..5).map(|n| create(&tracker, &format!("e{n}"))).collect();
    let kept = |tracker: &Tracker| -> Vec<ExecutionId> {
        let mut ids: Vec<ExecutionId> = tracker
            .all()
            .iter()
            .filter(|r| r.is_terminal())
            .map(|r| r.execution_id)
            .collect();
        ids.sort_by_key(|id| tracker.get(*id).ok().and_then(|r| r.completed_at));
        ids
    };

    // Finished in an order unlike creation order, one per second.
    advance_to(origin, 1.5).await;
    tracker.complete(e[2], None).expect("complete");
    advance_to(origin, 2.5).await;
    tracker.fail(e[0], "broke").expect("fail");
    advance_to(origin, 3.5).await;
    tracker.cancel(e[4], "stopped").expect("cancel");
    assert_eq!(kept(&tracker), vec![e[2], e[0], e[4]]);
    advance_to(origin, 4.5).await;
    tracker.complete(e[1], None).expect("complete");
    assert_eq!(
        kept(&tracker),
        vec![e[0], e[4], e[1]],
        "the earliest finished went first"
    );
    advance_to(origin, 5.5).await;
    tracker.complete(e[3], None).expect("complete");
    assert_eq!(kept(&tracker), vec![e[4], e[1], e[3]]);

    // Executions the monitor ends count too: two die at the 16 s tick, two more of the oldest go.
    let f: Vec<ExecutionId> = (0..2).map(|n| running(&tracker, &format!("f{n}"))).collect();
    advance_to(origin, 16.5).await;
    let mut expected = vec![e[3], f[0], f[1]];
    let mut kept_now = kept(&tracker);
    assert_eq!(kept_now.remove(0), expected.remove(0));
    kept_now.sort();
    expected.sort();
    assert_eq!(kept_now, expected);
    assert_eq!(tracker.len(), 3);
    let metrics = tracker.metrics();
    assert_eq!(
        (
            metrics.total_executions,
            metrics.dead_executions,
            metrics.active_executions
        ),
        (7, 2, 0)
    );
    assert_eq!(tracker.check_consistency(), Vec::<String>::new());
    monitor.stop().await;
}

#[tokio::test(start_paused = true)]
async fn heartbeating_execution_is_never_declared_dead() {
    let tracker = tracker_with(TrackerConfig {
        execution_timeout: Duration::from_secs(3_600),
        ..config()
    });
    let (dead_seen, on_dead) = recorder();
    tracker.on_dead(on_dead);
    let origin = Instant::now();
    let monitor = tracker.spawn_monitor();
    let steady = running(&tracker, "steady");
    let silent = running(&tracker, "silent");

    // A heartbeat every 9.5 s — always within the 10 s timeout — for ten minutes.
    let mut at = 0.0;
    let mut beats = 1;
    while at < 600.0 {
        at += 9.5;
        advance_to(origin, at).await;
        assert_eq!(state(&tracker, steady), ExecutionState::Running, "at {at} s");
        tracker.heartbeat(steady).expect("still alive");
        beats += 1;
    }
    assert_eq!(
        state(&tracker, silent),
        ExecutionState::Dead,
        "the monitor was running all along"
    );
    assert_eq!(ids(&dead_seen), vec![silent]);
    assert_eq!(tracker.get(steady).map(|r| r.heartbeat_count), Ok(beats));
    assert!(tracker.detect_dead().is_empty());
    monitor.stop().await;
}

#[tokio::test(start_paused = true)]
async fn execution_waiting_on_a_slow_protected_call_is_not_declared_dead() {
    // Heartbeat timeout 10 s, LLM call timeout 15 s (the default), grace 5 s.
    let tracker = tracker_with(config());
    let origin = Instant::now();
    let monitor = tracker.spawn_monitor();
    let id = running(&tracker, "caller");
    advance_to(origin, 0.5).await;

    // The call takes 14 s without a heartbeat; the monitor ticks at 11, 12, 13 and 14 s.
    let reply: Result<u32, agentrack::CallError<std::io::Error>> = tracker
        .execute(id, "chat.completions", async {
            tokio::time::sleep(Duration::from_secs(14)).await;
            Ok(42)
        })
        .await;
    assert_eq!(reply.expect("the call succeeds"), 42);
    assert_eq!(
        state(&tracker, id),
        ExecutionState::Running,
        "waiting on a call is not death"
    );

    // Its end counts as a sign of life: dead only 10 s after it.
    advance_to(origin, 24.2).await;
    assert_eq!(state(&tracker, id), ExecutionState::Running);
    advance_to(origin, 25.2).await;
    assert_eq!(state(&tracker, id), ExecutionState::Dead);
    monitor.stop().await;
}

/// A callback may panic while building its future, before any `.await`: that must not stop the
/// monitor or the callbacks registered after it either.
#[tokio::test(start_paused = true)]
async fn callback_panicking_before_returning_its_future_does_not_stop_the_monitor() {
    let tracker = tracker_with(config());
    let panics = Arc::new(AtomicUsize::new(0));
    let calls = Arc::clone(&panics);
    tracker.on_dead(move |record: ExecutionRecord| {
        calls.fetch_add(1, Ordering::SeqCst);
        assert!(
            !record.is_terminal(),
            "a dead-callback panicking synchronously on purpose"
        );
        std::future::ready(Ok(()))
    });
    let (dead_seen, on_dead) = recorder();
    tracker.on_dead(on_dead);
    let origin = Instant::now();
    let monitor = tracker.spawn_monitor();

    let first = running(&tracker, "first");
    advance_to(origin, 11.5).await;
    assert_eq!(state(&tracker, first), ExecutionState::Dead);
    assert_eq!(panics.load(Ordering::SeqCst), 1);
    assert_eq!(
        ids(&dead_seen),
        vec![first],
        "the callback after the panicking one still runs"
    );
    assert!(monitor.is_running(), "the monitor survives the panic");

    let second = running(&tracker, "second");
    advance_to(origin, 22.6).await;
    assert_eq!(
        state(&tracker, second),
        ExecutionState::Dead,
        "later executions are still detected"
    );
    assert_eq!(panics.load(Ordering::SeqCst), 2);
    assert_eq!(ids(&dead_seen), vec![first, second]);
    monitor.stop().await;
}
