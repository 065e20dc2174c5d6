//! Memory per alive execution, counted by a counting allocator, next to a baseline built in the
//! same run.
//!
//! Run with `cargo bench -p agentrack --bench memory`. For 100,000 and 1,000,000 alive
//! executions without metadata (8 agents, 1,024 threads, 100 users), it prints the heap bytes
//! the tracker holds per execution, and the same for the baseline: a `HashMap<ExecutionId, _>`
//! of a bare record (agent, thread and user strings, state, two timestamps, a heartbeat count),
//! about the least any tracker must keep. Heap bytes are what the allocator handed out and has
//! not taken back: they include each collection's spare capacity, not the allocator's own
//! overhead. A second table does the same for finished executions that carry what real ones
//! do: metadata given at creation (`{"request": ...}`) and a result (`{"answer": ...}`). Under
//! `cargo test --benches` it runs at 1% size.

#![allow(clippy::unwrap_used)]

use std::alloc::System;
use std::collections::HashMap;
use std::hint::black_box;

use agentrack::{ExecutionId, ExecutionState, NewExecution, Tracker, TrackerConfig};
use chrono::{DateTime, Utc};
use serde_json::json;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const AGENTS: [&str; 8] = [
    "researcher",
    "planner",
    "coder",
    "reviewer",
    "writer",
    "critic",
    "router",
    "summarizer",
];

/// The least a tracker must keep per execution.
#[allow(dead_code)]
struct BareRecord {
    agent_name: String,
    thread_id: String,
    user_id: String,
    state: ExecutionState,
    started_at: DateTime<Utc>,
    last_heartbeat: DateTime<Utc>,
    heartbeat_count: u64,
}

/// Heap bytes held after `build` minus before, per item.
#[allow(
    clippy::cast_precision_loss,
    reason = "bytes per item is a float figure: counts past 2^53 only lose their lowest digits"
)]
fn per_item<T>(n: usize, build: impl FnOnce(usize) -> T) -> (f64, T) {
    let region = Region::new(GLOBAL);
    let value = black_box(build(n));
    let change = region.change();
    let held = change.bytes_allocated as f64 - change.bytes_deallocated as f64 + change.bytes_reallocated as f64;
    (held / n as f64, value)
}

fn owner(i: usize) -> (String, String, String) {
    (
        AGENTS[i % AGENTS.len()].to_owned(),
        format!("thread-{}", i % 1024),
        format!("user-{}", i % 100),
    )
}

fn tracker_with(n: usize) -> Tracker {
    let tracker = Tracker::with_config(TrackerConfig::default());
    for i in 0..n {
        let (agent, thread, user) = owner(i);
        let id = tracker.create(NewExecution::new(agent, thread, user)).unwrap().id();
        tracker.start(id).unwrap();
        tracker.heartbeat(id).unwrap();
    }
    tracker
}

/// `n` finished executions, each with one metadata entry and a one-entry result object.
fn finished_with(n: usize) -> Tracker {
    let tracker = Tracker::with_config(TrackerConfig {
        max_finished: usize::MAX,
        ..TrackerConfig::default()
    });
    for i in 0..n {
        let (agent, thread, user) = owner(i);
        let metadata = json!({"request": format!("question {i}")});
        let new = NewExecution::new(agent, thread, user).metadata(metadata.as_object().unwrap().clone());
        let id = tracker.create(new).unwrap().id();
        tracker.start(id).unwrap();
        tracker.heartbeat(id).unwrap();
        tracker
            .complete(id, Some(json!({"answer": format!("answer {i}")})))
            .unwrap();
    }
    tracker
}

fn baseline_with(n: usize) -> HashMap<ExecutionId, BareRecord> {
    let now = Utc::now();
    (0..n)
        .map(|i| {
            let (agent_name, thread_id, user_id) = owner(i);
            let record = BareRecord {
                agent_name,
                thread_id,
                user_id,
                state: ExecutionState::Running,
                started_at: now,
                last_heartbeat: now,
                heartbeat_count: 1,
            };
            (ExecutionId::new(), record)
        })
        .collect()
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    println!("| alive executions | tracker bytes/execution | baseline bytes/execution | ratio |");
    println!("|---:|---:|---:|---:|");
    for n in [100_000, 1_000_000] {
        let n = if full { n } else { n / 100 };
        let (baseline, map) = per_item(n, baseline_with);
        drop(map);
        let (tracker, built) = per_item(n, tracker_with);
        assert_eq!(built.active_count(), n);
        drop(built);
        println!("| {n} | {tracker:.0} | {baseline:.0} | {:.2}× |", tracker / baseline);
    }
    println!();
    println!("| finished executions with metadata and a result | tracker bytes/execution |");
    println!("|---:|---:|");
    for n in [100_000, 1_000_000] {
        let n = if full { n } else { n / 100 };
        let (tracker, built) = per_item(n, finished_with);
        assert_eq!(built.len(), n);
        drop(built);
        println!("| {n} | {tracker:.0} |");
    }
}
