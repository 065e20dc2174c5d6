//! Crash safety: everything acknowledged survives SIGKILL, and dead detection resumes after
//! the grace window.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Backend, SECOND, TestServer};
use futures_util::StreamExt;
use serde_json::{Value, json};

/// What the test was told, per execution, by the last acknowledged response.
#[derive(Debug, Clone, PartialEq)]
struct Acked {
    state: String,
    phase: String,
    phases: Vec<String>,
    result: Value,
    error: Value,
}

fn acked(record: &Value) -> Acked {
    Acked {
        state: record["state"].as_str().unwrap().to_owned(),
        phase: record["current_phase"].as_str().unwrap().to_owned(),
        phases: record["phase_history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["to_phase"].as_str().unwrap().to_owned())
            .collect(),
        result: record["result"].clone(),
        error: record["error"].clone(),
    }
}

/// Creates one execution and drives it; `finish` picks its terminal state (or none).
async fn drive(server: &TestServer, token: &str, i: usize, finish: Option<&str>) -> (String, Acked) {
    let id = server
        .create(
            token,
            "crasher",
            &format!("thread-{}", i % 17),
            &format!("user-{}", i % 5),
        )
        .await;
    let path = |suffix: &str| format!("/v1/executions/{id}/{suffix}");
    server.ok(&path("start"), token, json!({})).await;
    if finish.is_none() {
        server.ok(&path("heartbeat"), token, json!({})).await;
    }
    let mut last = server
        .ok(
            &path("phase"),
            token,
            json!({"phase": "websocket_setup", "metadata": {"i": i}}),
        )
        .await;
    if let Some(state) = finish {
        let body = match state {
            "completed" => json!({"state": "completed", "result": {"i": i}}),
            other => json!({"state": other, "error": format!("stopped {i}")}),
        };
        last = server.ok(&path("state"), token, body).await;
    }
    (id, acked(&last))
}

/// The heartbeat timeout, so the grace a restart gives: long enough that reading back 1,000
/// executions fits inside it on a loaded 2-core machine (2 s did not, at load 10–16).
const GRACE: Duration = Duration::from_secs(8);

async fn a_thousand_acknowledged_executions_survive_sigkill_and_dead_detection_resumes(backend: Backend) {
    let mut server = TestServer::start_on(backend, &["--heartbeat-timeout", "8s", "--monitor-interval", "100ms"]).await;
    let agent = server.token("agent", "t1", None).await;

    // 900 executions driven to the end, 100 left running; 48 requests in flight at a time.
    let finished: Vec<(String, Acked)> = futures_util::stream::iter(0..900)
        .map(|i| {
            let state = ["completed", "failed", "cancelled"][i % 3];
            let (server, agent) = (&server, &agent);
            async move { drive(server, agent, i, Some(state)).await }
        })
        .buffer_unordered(48)
        .collect()
        .await;
    // Every running execution's last heartbeat is after this moment.
    let running_from = Instant::now();
    let running: Vec<(String, Acked)> = futures_util::stream::iter(900..1000)
        .map(|i| {
            let (server, agent) = (&server, &agent);
            async move { drive(server, agent, i, None).await }
        })
        .buffer_unordered(48)
        .collect()
        .await;
    let (_, metrics_before) = server.request("GET", "/metrics", Some(&server.admin), None).await;
    let committed_before = metric(&metrics_before, "agentrack_store_committed_seq");
    server.kill();

    server.restart();
    let restarted = Instant::now();
    let (status, page) = server.get("/v1/executions?limit=1000", &agent).await;
    assert_eq!(status, 200);
    let stored: HashMap<String, Acked> = page["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["execution_id"].as_str().unwrap().to_owned(), acked(r)))
        .collect();
    assert_eq!(stored.len(), 1000, "every acknowledged execution is back");
    for (id, expected) in finished.iter().chain(&running) {
        assert_eq!(stored.get(id), Some(expected), "execution {id}");
    }
    let (_, metrics) = server.get("/v1/metrics", &agent).await;
    assert_eq!(metrics["total_executions"], 1000);
    assert_eq!(metrics["active_executions"], 100);
    for counter in ["successful_executions", "failed_executions", "cancelled_executions"] {
        assert_eq!(metrics[counter], 300, "{counter}");
    }
    assert!(restarted.elapsed() < GRACE, "checked within the grace window");

    // The running ones get at least one heartbeat window of grace, then the monitor declares
    // them dead, and subscribers hear it.
    let mut stream = server.ws("", Some(&agent)).await;
    let mut deaths = 0;
    let events = stream
        .until(GRACE + 20 * SECOND, |e| {
            deaths += usize::from(e["type"] == "dead");
            deaths == running.len()
        })
        .await;
    // A restart on SQLite gives a whole window from the restart; a takeover on PostgreSQL one
    // from the last heartbeat (plus the unwritten heartbeats' lag): neither before this bound.
    assert!(
        running_from.elapsed() >= GRACE.saturating_sub(Duration::from_millis(200)),
        "not before the grace window"
    );
    let dead: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "dead")
        .map(|e| e["execution_id"].as_str().unwrap())
        .collect();
    for (id, _) in &running {
        assert!(dead.contains(&id.as_str()), "{id} was declared dead");
        let (_, record) = server.get(&format!("/v1/executions/{id}"), &agent).await;
        assert_eq!(record["state"], "dead", "{id}");
        assert_eq!(record["phase_history"].as_array().unwrap().len(), 1);
    }
    let (_, alive) = server.get("/v1/executions?active=true", &agent).await;
    assert_eq!(alive["executions"], json!([]));

    // Sequence numbers continue after the crash: nothing a client saw is reused.
    let id = server.create(&agent, "after", "thread", "alice").await;
    let created = stream.until(5 * SECOND, |e| e["execution_id"] == id.as_str()).await;
    assert!(created.last().unwrap()["global_seq"].as_u64().unwrap() > committed_before);
}

fn metric(text: &Value, name: &str) -> u64 {
    common::metric_value(text.as_str().unwrap(), name).unwrap()
}

/// Phase transitions are durable at once but their rows wait for the flush: after a SIGKILL with
/// every row behind, the store replays the transitions onto them.
async fn transitions_whose_rows_waited_are_replayed_after_sigkill(backend: Backend) {
    let mut server = TestServer::start_on(backend, &["--heartbeat-flush", "60s"]).await;
    let agent = server.token("agent", "acme", None).await;
    let mut expected = Vec::new();
    for i in 0..3 {
        let id = server.create_started(&agent, "replayer", &format!("t{i}"), "u").await;
        let mut last = Value::Null;
        for (phase, metadata) in common::golden_phases().into_iter().take(4 + i) {
            last = server
                .ok(
                    &format!("/v1/executions/{id}/phase"),
                    &agent,
                    json!({"phase": phase, "metadata": metadata}),
                )
                .await;
        }
        expected.push((id, acked(&last), last["phase_entered_at"].clone()));
    }
    server.kill();
    server.restart();
    for (id, acked_before, entered) in expected {
        let (status, record) = server.get(&format!("/v1/executions/{id}"), &server.admin).await;
        assert_eq!(status, 200, "{record}");
        assert_eq!(acked(&record), acked_before, "execution {id} after the restart");
        assert_eq!(record["phase_entered_at"], entered);
        assert_eq!(
            record["phase_history"].as_array().unwrap().len(),
            acked_before.phases.len()
        );
    }
}

on_both_backends!(
    transitions_whose_rows_waited_are_replayed_after_sigkill,
    a_thousand_acknowledged_executions_survive_sigkill_and_dead_detection_resumes,
);
