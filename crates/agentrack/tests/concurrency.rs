//! Concurrency: many OS threads driving executions through the tracker at once must leave it
//! exactly consistent — no lost update, no index entry left behind, no phantom record, every
//! counter exact, per-execution event numbering gap-free.

#![allow(clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agentrack::{
    Event, EventFilter, EventKind, ExecutionId, ExecutionRecord, ExecutionState, ManualClock, Metrics, NewExecution,
    Phase, StateUpdate, Tracker, TrackerConfig, TrackerError,
};

use common::{GOLDEN_PATH, drain};

const THREADS: usize = 8;
const PER_THREAD: usize = 10_000;
const USERS: usize = 50;
const THREAD_IDS: usize = 997;
const AGENTS: [&str; 4] = ["researcher", "coder", "writer", "planner"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Complete,
    Fail,
    Cancel,
}

/// What the writer threads do with execution number `k` (0..80,000); a pure function of `k`, so
/// the final checks can recompute it.
#[derive(Debug, Clone)]
struct Plan {
    user: String,
    thread: String,
    agent: &'static str,
    heartbeats: u64,
    phases: Vec<Phase>,
    through_completing_state: bool,
    ending: Ending,
    cleaned_up: bool,
}

impl Plan {
    fn of(k: usize) -> Self {
        let ending = match k % 10 {
            7 | 8 => Ending::Fail,
            9 => Ending::Cancel,
            _ => Ending::Complete,
        };
        let phases = match ending {
            Ending::Complete => GOLDEN_PATH.to_vec(),
            // Any prefix of the golden path short of `completed` may move to `failed`.
            Ending::Fail => {
                let mut phases = GOLDEN_PATH[..k % 8].to_vec();
                phases.push(Phase::Failed);
                phases
            }
            Ending::Cancel => GOLDEN_PATH[..k % 9].to_vec(),
        };
        Self {
            user: format!("user-{}", k % USERS),
            thread: format!("thread-{}", k % THREAD_IDS),
            agent: AGENTS[k % AGENTS.len()],
            heartbeats: 1 + (k % 2) as u64,
            phases,
            through_completing_state: ending == Ending::Complete && k % 3 == 0,
            ending,
            // About a quarter, uncorrelated with the keys, plus every execution of the last user.
            cleaned_up: (k / 7) % 4 == 0 || k % USERS == USERS - 1,
        }
    }

    fn final_state(&self) -> ExecutionState {
        match self.ending {
            Ending::Complete => ExecutionState::Completed,
            Ending::Fail => ExecutionState::Failed,
            Ending::Cancel => ExecutionState::Cancelled,
        }
    }

    /// created + started + starting→running + heartbeats + transitions (+ completing) + terminal.
    fn expected_seq(&self) -> u64 {
        3 + self.heartbeats + self.phases.len() as u64 + u64::from(self.through_completing_state) + 1
    }

    /// Runs the whole lifecycle; every call must succeed.
    fn run(&self, tracker: &Tracker, k: usize) -> ExecutionId {
        let new =
            NewExecution::new(self.agent, self.thread.as_str(), self.user.as_str()).timeout(Duration::from_secs(600));
        let id = tracker.create(new).expect("create").id();
        tracker.start(id).expect("start");
        tracker.heartbeat(id).expect("first heartbeat");
        let mut heartbeats_left = self.heartbeats - 1;
        for phase in &self.phases {
            tracker.transition(id, *phase, None).expect("golden-path transition");
            if heartbeats_left > 0 {
                tracker.heartbeat(id).expect("heartbeat");
                heartbeats_left -= 1;
            }
        }
        for _ in 0..heartbeats_left {
            tracker.heartbeat(id).expect("heartbeat");
        }
        if self.through_completing_state {
            tracker
                .set_state(id, ExecutionState::Completing, StateUpdate::default())
                .expect("running → completing");
        }
        match self.ending {
            Ending::Complete => tracker.complete(id, Some(serde_json::json!(k))),
            Ending::Fail => tracker.fail(id, format!("failure {k}")),
            Ending::Cancel => tracker.cancel(id, format!("cancelled {k}")),
        }
        .expect("terminal state");
        if self.cleaned_up {
            let removed = tracker.cleanup(id).expect("cleanup of a finished execution");
            assert_eq!(removed.execution_id, id);
        }
        id
    }

    /// Checks a record (live or from the completed history) against the plan.
    fn check(&self, record: &ExecutionRecord, k: usize) {
        let id = record.execution_id;
        assert_eq!(record.state, self.final_state(), "state of execution {k} ({id})");
        assert_eq!(record.user_id, self.user, "user of {id}");
        assert_eq!(record.thread_id, self.thread, "thread of {id}");
        assert_eq!(record.agent_name, self.agent, "agent of {id}");
        assert_eq!(
            record.heartbeat_count, self.heartbeats,
            "heartbeats of {id}: a lost update"
        );
        let phases: Vec<Phase> = record.phase_history.iter().map(|t| t.to_phase).collect();
        assert_eq!(phases, self.phases, "phase history of {id}");
        assert!(
            record.phase_history.iter().all(|t| t.valid),
            "golden-path transitions are valid"
        );
        assert_eq!(record.current_phase, *self.phases.last().unwrap_or(&Phase::Created));
        assert_eq!(record.seq, self.expected_seq(), "per-execution event count of {id}");
        assert!(record.completed_at.is_some(), "{id} is finished");
        match self.ending {
            Ending::Complete => {
                assert_eq!(record.result, Some(serde_json::json!(k)));
                assert_eq!(record.error, None);
            }
            Ending::Fail => assert_eq!(record.error.as_deref(), Some(format!("failure {k}").as_str())),
            Ending::Cancel => assert_eq!(record.error.as_deref(), Some(format!("cancelled {k}").as_str())),
        }
    }
}

/// Counters only ever grow (except `active`), and each writer has at most one execution alive at
/// a time, so at most `THREADS` are ever alive.
fn check_metrics_progress(previous: &Metrics, now: &Metrics) {
    assert!(
        now.total_executions >= previous.total_executions,
        "total went backwards"
    );
    assert!(now.successful_executions >= previous.successful_executions);
    assert!(now.failed_executions >= previous.failed_executions);
    assert!(now.cancelled_executions >= previous.cancelled_executions);
    assert!(
        now.active_executions <= THREADS as u64,
        "{} alive executions",
        now.active_executions
    );
    assert_eq!(now.timeout_executions, 0);
    assert_eq!(now.dead_executions, 0);
}

/// Sets the flag when dropped, unwinding included: background loops that wait for it must end
/// even when a worker thread panics, or a failure would hang the test instead of failing it.
struct RaiseOnDrop<'a>(&'a AtomicBool);

impl Drop for RaiseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Readers run flat out would take most of the two cores CI has from the writers; a short pause
/// keeps them interleaving with the writers (thousands of reads per run) at a fraction of the cost.
fn pause_reader() {
    std::thread::sleep(Duration::from_micros(200));
}

#[test]
fn eight_threads_times_ten_thousand_full_lifecycles_stay_consistent() {
    let started = Instant::now();
    let tracker = Tracker::with_config(TrackerConfig {
        history_cap: THREADS * PER_THREAD,
        ..TrackerConfig::default()
    });
    let done = AtomicBool::new(false);
    let reads = AtomicU64::new(0);

    let results: Vec<Vec<(usize, ExecutionId)>> = std::thread::scope(|scope| {
        // Reader 1: metrics and the active set while writers run.
        scope.spawn(|| watch_metrics_and_active(&tracker, &done, &reads));
        // Reader 2: the indexes while writers run.
        scope.spawn(|| watch_indexes(&tracker, &done, &reads));
        let _done_on_exit = RaiseOnDrop(&done);
        let writers: Vec<_> = (0..THREADS)
            .map(|t| {
                let tracker = &tracker;
                scope.spawn(move || {
                    (t * PER_THREAD..(t + 1) * PER_THREAD)
                        .map(|k| (k, Plan::of(k).run(tracker, k)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let results = writers
            .into_iter()
            .map(|writer| writer.join().expect("writer thread panicked"))
            .collect();
        done.store(true, Ordering::Release);
        results
    });
    let elapsed_writers = started.elapsed();
    let reads = reads.load(Ordering::Relaxed);
    assert!(reads > 0, "the readers never ran");

    let plans: Vec<(usize, ExecutionId, Plan)> = results
        .into_iter()
        .flatten()
        .map(|(k, id)| (k, id, Plan::of(k)))
        .collect();
    assert_eq!(plans.len(), THREADS * PER_THREAD);
    let unique: HashSet<ExecutionId> = plans.iter().map(|(_, id, _)| *id).collect();
    assert_eq!(unique.len(), THREADS * PER_THREAD, "execution ids collided");

    check_final_metrics(&tracker, &plans);

    assert_eq!(tracker.active_count(), 0);
    assert!(tracker.active().is_empty());

    let cleaned: HashSet<ExecutionId> = plans
        .iter()
        .filter(|(_, _, p)| p.cleaned_up)
        .map(|(_, id, _)| *id)
        .collect();
    assert!(
        (20_000..22_000).contains(&cleaned.len()),
        "{} cleaned up",
        cleaned.len()
    );
    let remaining = 80_000 - cleaned.len();
    assert_eq!(tracker.len(), remaining);

    let mut users: HashMap<&str, usize> = HashMap::new();
    let mut threads: HashMap<&str, usize> = HashMap::new();
    let mut agents: HashMap<&str, usize> = HashMap::new();
    for (_, _, plan) in plans.iter().filter(|(_, _, p)| !p.cleaned_up) {
        *users.entry(&plan.user).or_default() += 1;
        *threads.entry(&plan.thread).or_default() += 1;
        *agents.entry(plan.agent).or_default() += 1;
    }
    assert_eq!(users.len(), USERS - 1, "every record of the last user was cleaned up");
    assert_eq!(agents.values().sum::<usize>(), remaining);

    // The checks below copy every record several times over; they share the cores.
    let by_id: HashMap<ExecutionId, (usize, &Plan)> = plans.iter().map(|(k, id, p)| (*id, (*k, p))).collect();
    let user_names: Vec<&str> = users.keys().copied().collect();
    std::thread::scope(|scope| {
        scope.spawn(|| assert_eq!(tracker.check_consistency(), Vec::<String>::new()));

        // Each user's listing holds exactly that user's remaining records, every one as its thread
        // left it (no lost update); together they are all the remaining records.
        let listed: Vec<_> = user_names
            .chunks(user_names.len() / 2 + 1)
            .map(|chunk| {
                let (tracker, by_id, users) = (&tracker, &by_id, &users);
                scope.spawn(move || check_user_listings(tracker, chunk, users, by_id))
            })
            .collect();

        // Cleaned-up records are gone, and the completed history holds exactly them, intact.
        scope.spawn(|| check_cleaned_up(&tracker, &cleaned, &by_id));

        // The thread and agent indexes list exactly the remaining records under each key.
        scope.spawn(|| check_thread_and_agent_indexes(&tracker, &threads, &agents));

        let seen: HashSet<ExecutionId> = listed
            .into_iter()
            .flat_map(|handle| handle.join().expect("user listing checks"))
            .collect();
        assert_eq!(seen.len(), remaining, "every remaining record is listed under its user");
    });

    eprintln!(
        "80,000 lifecycles on {THREADS} threads: {elapsed_writers:?} ({reads} concurrent reads), {:?} with checks",
        started.elapsed()
    );
}

#[test]
fn eight_threads_heartbeating_one_execution_lose_no_update_and_number_events_without_gaps() {
    const BEATS: u64 = 10_000;
    let tracker = Tracker::with_config(TrackerConfig {
        event_buffer: 1 << 17,
        ..TrackerConfig::default()
    });
    let mut events = tracker.subscribe(EventFilter::all());
    let id = tracker
        .create(NewExecution::new("researcher", "thread-1", "user-1").timeout(Duration::from_secs(600)))
        .expect("create")
        .id();
    tracker.start(id).expect("start");

    let per_thread: Vec<Vec<(u64, u64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    (0..BEATS)
                        .map(|_| {
                            let change = tracker.heartbeat(id).expect("heartbeat");
                            let event = change.events.last().expect("a heartbeat event");
                            let EventKind::Heartbeat { heartbeat_count } = event.kind else {
                                panic!("last event of a heartbeat is {}", event.kind.name());
                            };
                            let seq = event.execution.as_ref().expect("scoped").seq;
                            (heartbeat_count, seq)
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("heartbeat thread"))
            .collect()
    });

    let total = THREADS as u64 * BEATS;
    let record = tracker.get(id).expect("record");
    assert_eq!(record.heartbeat_count, total, "lost heartbeats");
    assert_eq!(record.state, ExecutionState::Running);
    // created, pending→starting, starting→running, then one event per heartbeat.
    assert_eq!(record.seq, total + 3);

    // What each caller was told: its own counts and seqs increase, and together they are every
    // count exactly once.
    let mut counts = Vec::with_capacity(usize::try_from(total).unwrap());
    for seen in &per_thread {
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
        assert!(seen.iter().all(|(count, seq)| *seq == count + 3));
        counts.extend(seen.iter().map(|(count, _)| *count));
    }
    counts.sort_unstable();
    assert!(
        counts.iter().copied().eq(1..=total),
        "each heartbeat count is handed out exactly once"
    );

    // What a subscriber saw: every event of the execution, seq 1.. without a gap, in global order.
    let events = drain(&mut events);
    assert_eq!(events.len() as u64, total + 3);
    for (position, event) in events.iter().enumerate() {
        let position = position as u64 + 1;
        let scope = event.execution.as_ref().expect("execution event");
        assert_eq!(scope.execution_id, id);
        assert_eq!(scope.seq, position, "per-execution seq has a gap or is out of order");
        assert_eq!(event.global_seq, position, "global seq has a gap or is out of order");
        if position > 3 {
            assert_eq!(
                event.kind,
                EventKind::Heartbeat {
                    heartbeat_count: position - 3
                }
            );
        }
    }
    assert_eq!(events[0].kind.name(), "execution_created");
    assert_eq!(
        events[1].kind,
        EventKind::StateChanged {
            from: ExecutionState::Pending,
            to: ExecutionState::Starting
        }
    );
    assert_eq!(
        events[2].kind,
        EventKind::StateChanged {
            from: ExecutionState::Starting,
            to: ExecutionState::Running
        }
    );
    assert_eq!(tracker.last_seq(), total + 3);
}

/// Eight threads race to finish (complete, fail or cancel) and clean up the same executions while
/// a ninth moves a manual clock and sweeps, declaring some dead. Each execution must end exactly
/// once, with one terminal event, be cleaned up exactly once, and be counted exactly once.
#[test]
fn racing_finishers_sweeper_and_cleanups_end_each_execution_exactly_once() {
    const EXECUTIONS: usize = 2_000;
    let clock = ManualClock::new();
    let tracker = Tracker::with_clock(
        TrackerConfig {
            heartbeat_timeout: Duration::from_secs(10),
            execution_timeout: Duration::from_secs(3_600),
            // Never purged while the test runs, however far the sweeper moves the clock.
            cleanup_age: Duration::from_secs(u64::from(u32::MAX)),
            history_cap: EXECUTIONS,
            event_buffer: 1 << 15,
            ..TrackerConfig::default()
        },
        Arc::new(clock.clone()),
    );
    let mut events = tracker.subscribe(EventFilter::all());
    let ids: Vec<ExecutionId> = (0..EXECUTIONS)
        .map(|k| {
            let id = tracker
                .create(NewExecution::new(
                    "racer",
                    format!("thread-{}", k % 10),
                    format!("user-{}", k % 7),
                ))
                .expect("create")
                .id();
            tracker.start(id).expect("start");
            id
        })
        .collect();

    let done = AtomicBool::new(false);
    let (finished_by_threads, dead_by_sweeps, cleaned_by_threads) = std::thread::scope(|scope| {
        let sweeper = scope.spawn(|| sweep_until_done(&tracker, &clock, &done));
        let _done_on_exit = RaiseOnDrop(&done);
        let racers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (tracker, ids) = (&tracker, &ids);
                scope.spawn(move || race(tracker, ids, t))
            })
            .collect();
        let mut finished = Vec::new();
        let mut cleaned = Vec::new();
        for racer in racers {
            let (f, c) = racer.join().expect("racer thread");
            finished.extend(f);
            cleaned.extend(c);
        }
        done.store(true, Ordering::Release);
        (finished, sweeper.join().expect("sweeper thread"), cleaned)
    });

    // Each execution ended exactly once: by one racer or by one sweep.
    let mut enders: HashMap<ExecutionId, usize> = HashMap::new();
    for (id, _) in &finished_by_threads {
        *enders.entry(*id).or_default() += 1;
    }
    for id in &dead_by_sweeps {
        *enders.entry(*id).or_default() += 1;
    }
    assert_eq!(enders.len(), EXECUTIONS);
    assert!(enders.values().all(|n| *n == 1), "an execution was ended twice");

    // ... and was cleaned up exactly once.
    let cleaned: HashSet<ExecutionId> = cleaned_by_threads.iter().copied().collect();
    assert_eq!(
        cleaned_by_threads.len(),
        EXECUTIONS,
        "a record was cleaned up twice or never"
    );
    assert_eq!(cleaned.len(), EXECUTIONS);
    assert!(tracker.is_empty());
    assert_eq!(tracker.completed_history().len(), EXECUTIONS);
    assert_eq!(tracker.check_consistency(), Vec::<String>::new());

    let by_kind = |kind: usize| finished_by_threads.iter().filter(|(_, k)| *k == kind).count() as u64;
    let metrics = tracker.metrics();
    assert_eq!(metrics.total_executions, EXECUTIONS as u64);
    assert_eq!(metrics.active_executions, 0);
    assert_eq!(metrics.successful_executions, by_kind(0));
    assert_eq!(metrics.failed_executions, by_kind(1));
    assert_eq!(metrics.cancelled_executions, by_kind(2));
    assert_eq!(metrics.dead_executions, dead_by_sweeps.len() as u64);
    assert_eq!(metrics.timeout_executions, 0);

    // One terminal event per execution, the last of its events, matching the stored record.
    check_terminal_events(&tracker, drain(&mut events), EXECUTIONS);
}

/// Reader 1: metrics and the active set while the writers run, until `done`.
fn watch_metrics_and_active(tracker: &Tracker, done: &AtomicBool, reads: &AtomicU64) {
    let mut previous = tracker.metrics();
    while !done.load(Ordering::Acquire) {
        let metrics = tracker.metrics();
        check_metrics_progress(&previous, &metrics);
        previous = metrics;
        let active = tracker.active();
        assert!(active.len() <= THREADS, "{} alive executions listed", active.len());
        for record in &active {
            if let Ok(again) = tracker.get(record.execution_id) {
                assert_eq!(again.execution_id, record.execution_id);
                assert!(
                    again.heartbeat_count >= record.heartbeat_count,
                    "heartbeats went backwards"
                );
                assert!(again.seq >= record.seq, "seq went backwards");
            }
        }
        reads.fetch_add(1, Ordering::Relaxed);
        pause_reader();
    }
}

/// Reader 2: the indexes while the writers run, until `done`.
fn watch_indexes(tracker: &Tracker, done: &AtomicBool, reads: &AtomicU64) {
    let mut round = 0usize;
    while !done.load(Ordering::Acquire) {
        let thread = format!("thread-{}", round % THREAD_IDS);
        for record in tracker.by_thread(&thread) {
            assert_eq!(record.thread_id, thread, "by_thread returned another thread's record");
            match tracker.get(record.execution_id) {
                Ok(again) => assert_eq!(again.thread_id, thread),
                Err(error) => assert!(matches!(error, TrackerError::NotFound { .. }), "{error}"),
            }
        }
        // Whole-user and whole-agent listings copy thousands of records: only now and then.
        if round % 64 == 0 {
            let user = format!("user-{}", round % USERS);
            assert!(tracker.by_user(&user).iter().all(|r| r.user_id == user));
        }
        if round % 512 == 0 {
            let agent = AGENTS[round / 512 % AGENTS.len()];
            assert!(tracker.by_agent(agent).iter().all(|r| r.agent_name == agent));
        }
        round += 1;
        reads.fetch_add(1, Ordering::Relaxed);
        pause_reader();
    }
}

/// The metrics once every plan ran: the counts each ending should leave.
fn check_final_metrics(tracker: &Tracker, plans: &[(usize, ExecutionId, Plan)]) {
    let count = |ending: Ending| plans.iter().filter(|(_, _, p)| p.ending == ending).count() as u64;
    let (completed, failed, cancelled) = (count(Ending::Complete), count(Ending::Fail), count(Ending::Cancel));
    assert_eq!((completed, failed, cancelled), (56_000, 16_000, 8_000));
    let metrics = tracker.metrics();
    assert_eq!(metrics.total_executions, 80_000);
    assert_eq!(metrics.active_executions, 0);
    assert_eq!(metrics.successful_executions, completed);
    assert_eq!(metrics.failed_executions, failed);
    assert_eq!(metrics.cancelled_executions, cancelled);
    assert_eq!(metrics.timeout_executions, 0);
    assert_eq!(metrics.dead_executions, 0);
    assert!(
        (metrics.success_rate - 0.7).abs() < 1e-9,
        "success rate {}",
        metrics.success_rate
    );
}

/// Cleaned-up records are gone, and the completed history holds exactly them, intact.
fn check_cleaned_up(tracker: &Tracker, cleaned: &HashSet<ExecutionId>, by_id: &HashMap<ExecutionId, (usize, &Plan)>) {
    for id in cleaned {
        assert_eq!(tracker.get(*id), Err(TrackerError::NotFound { execution_id: *id }));
    }
    assert!(tracker.by_user(&format!("user-{}", USERS - 1)).is_empty());
    let history = tracker.completed_history();
    assert_eq!(history.len(), cleaned.len());
    for record in &history {
        let (k, plan) = by_id[&record.execution_id];
        assert!(plan.cleaned_up, "{} was never cleaned up", record.execution_id);
        plan.check(record, k);
    }
    let history_ids: HashSet<ExecutionId> = history.iter().map(|r| r.execution_id).collect();
    assert_eq!(&history_ids, cleaned);
}

/// The thread and agent indexes list exactly the remaining records under each key.
fn check_thread_and_agent_indexes(tracker: &Tracker, threads: &HashMap<&str, usize>, agents: &HashMap<&str, usize>) {
    for (thread, expected) in threads {
        let listed = tracker.by_thread(thread);
        assert_eq!(listed.len(), *expected, "by_thread({thread})");
        assert!(listed.iter().all(|r| r.thread_id == *thread));
    }
    for agent in AGENTS {
        let listed = tracker.by_agent(agent);
        assert_eq!(listed.len(), agents[agent], "by_agent({agent})");
        assert!(listed.iter().all(|r| r.agent_name == agent));
    }
}

/// Moves the clock and sweeps until `done`; the executions the sweeps found dead.
fn sweep_until_done(tracker: &Tracker, clock: &ManualClock, done: &AtomicBool) -> Vec<ExecutionId> {
    let mut dead = Vec::new();
    while !done.load(Ordering::Acquire) {
        clock.advance(Duration::from_millis(700));
        let sweep = tracker.sweep();
        assert!(sweep.timed_out.is_empty());
        assert_eq!(sweep.purged, 0);
        dead.extend(sweep.dead.into_iter().map(|r| r.execution_id));
        std::thread::yield_now();
    }
    dead
}

/// Racer `t`: finishes (by `t % 3`: completes, fails, cancels) then cleans up every execution,
/// from its own starting point; what it finished (with how) and what it cleaned up.
fn race(tracker: &Tracker, ids: &[ExecutionId], t: usize) -> (Vec<(ExecutionId, usize)>, Vec<ExecutionId>) {
    let executions = ids.len();
    let mut finished = Vec::new();
    let mut cleaned = Vec::new();
    // Each thread walks the executions from a different starting point.
    for i in 0..executions {
        let id = ids[(i + t * executions / THREADS) % executions];
        let outcome = match t % 3 {
            0 => tracker.complete(id, None),
            1 => tracker.fail(id, "racer failed"),
            _ => tracker.cancel(id, "racer cancelled"),
        };
        match outcome {
            Ok(change) => {
                assert_eq!(change.events.len(), 1);
                assert!(change.events[0].kind.finished().is_some());
                finished.push((id, t % 3));
            }
            Err(TrackerError::Terminal { .. } | TrackerError::NotFound { .. }) => {}
            Err(other) => panic!("unexpected error finishing {id}: {other}"),
        }
        match tracker.cleanup(id) {
            Ok(record) => {
                assert!(record.is_terminal());
                cleaned.push(id);
            }
            Err(TrackerError::NotFound { .. }) => {}
            Err(other) => panic!("cleanup after a finish attempt: {other}"),
        }
    }
    (finished, cleaned)
}

/// One terminal event per execution, the last of its events, matching the stored record.
fn check_terminal_events(tracker: &Tracker, events: Vec<Arc<Event>>, executions: usize) {
    let history: HashMap<ExecutionId, ExecutionRecord> = tracker
        .completed_history()
        .into_iter()
        .map(|r| (r.execution_id, r))
        .collect();
    let mut per_execution: HashMap<ExecutionId, Vec<Arc<Event>>> = HashMap::new();
    assert!(events.windows(2).all(|w| w[0].global_seq + 1 == w[1].global_seq));
    for event in events {
        let scope = event.execution.as_ref().expect("execution event");
        per_execution.entry(scope.execution_id).or_default().push(event);
    }
    assert_eq!(per_execution.len(), executions);
    for (id, events) in &per_execution {
        let seqs: Vec<u64> = events
            .iter()
            .map(|e| e.execution.as_ref().map_or(0, |s| s.seq))
            .collect();
        assert!(
            seqs.iter().copied().eq(1..=events.len() as u64),
            "seqs of {id}: {seqs:?}"
        );
        let terminal: Vec<_> = events.iter().filter_map(|e| e.kind.finished()).collect();
        assert_eq!(terminal.len(), 1, "{id} has {} terminal events", terminal.len());
        assert!(
            events.last().and_then(|e| e.kind.finished()).is_some(),
            "terminal event is last"
        );
        let record = &history[id];
        assert_eq!(terminal[0].state, record.state);
        assert_eq!(record.seq, events.len() as u64);
    }
}

/// The listings of the users in `chunk`: exactly each user's remaining records, every one as its
/// thread left it; the ids listed.
fn check_user_listings(
    tracker: &Tracker,
    chunk: &[&str],
    users: &HashMap<&str, usize>,
    by_id: &HashMap<ExecutionId, (usize, &Plan)>,
) -> Vec<ExecutionId> {
    let mut seen = Vec::new();
    for user in chunk {
        let listed = tracker.by_user(user);
        assert_eq!(listed.len(), users[user], "by_user({user})");
        for record in &listed {
            assert_eq!(record.user_id, *user);
            let (k, plan) = by_id[&record.execution_id];
            assert!(!plan.cleaned_up, "{} was cleaned up", record.execution_id);
            plan.check(record, k);
            seen.push(record.execution_id);
        }
    }
    seen
}
