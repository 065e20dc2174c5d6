//! The monitor runs inside the server: silent executions die, slow ones time out, and
//! subscribers hear about it (short timeouts, no long sleeps).

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::{Backend, SECOND, TestServer};
use serde_json::json;

async fn a_silent_execution_is_marked_dead_and_its_subscribers_get_the_event(backend: Backend) {
    let server = TestServer::start_on(backend, &["--heartbeat-timeout", "500ms", "--monitor-interval", "50ms"]).await;
    let agent = server.token("agent", "t1", None).await;
    let id = server.create(&agent, "researcher", "thread", "alice").await;
    let mut stream = server.ws(&format!("?execution_id={id}"), Some(&agent)).await;
    server.start_execution(&agent, &id).await;
    server.heartbeat(&agent, &id).await;
    let silent_since = Instant::now();

    let events = stream.until(5 * SECOND, |e| e["type"] == "dead").await;
    let dead = events.last().unwrap();
    assert!(
        silent_since.elapsed() >= Duration::from_millis(450),
        "not before the timeout"
    );
    assert_eq!(dead["state"], "dead");
    assert_eq!(dead["from"], "running");
    assert!(dead["error"].as_str().unwrap().starts_with("No heartbeat"));
    assert!(dead["last_heartbeat"].is_string());

    let (_, record) = server.get(&format!("/v1/executions/{id}"), &agent).await;
    assert_eq!(record["state"], "dead");
    // Exactly one terminal event, stored: a replay shows it once.
    let mut replay = server.ws(&format!("?since=0&execution_id={id}"), Some(&agent)).await;
    let replayed = replay.until(5 * SECOND, |e| e["type"] == "dead").await;
    assert_eq!(replayed.iter().filter(|e| e["type"] == "dead").count(), 1);
    assert!(replay.drain(Duration::from_millis(200)).await.is_empty());
}

async fn heartbeats_keep_an_execution_alive(backend: Backend) {
    let server = TestServer::start_on(backend, &["--heartbeat-timeout", "400ms", "--monitor-interval", "50ms"]).await;
    let agent = server.token("agent", "t1", None).await;
    let id = server.create_started(&agent, "researcher", "thread", "alice").await;
    for _ in 0..8 {
        server.heartbeat(&agent, &id).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, record) = server.get(&format!("/v1/executions/{id}"), &agent).await;
    assert_eq!(record["state"], "running");
    assert_eq!(record["heartbeat_count"], 8);
}

async fn an_execution_past_its_timeout_is_timed_out_and_subscribers_get_the_event(backend: Backend) {
    let server = TestServer::start_on(backend, &["--heartbeat-timeout", "30s", "--monitor-interval", "50ms"]).await;
    let agent = server.token("agent", "t1", None).await;
    let mut stream = server.ws("?thread_id=slow", Some(&agent)).await;
    let created = server
        .ok(
            "/v1/executions",
            &agent,
            json!({"agent_name": "slowpoke", "thread_id": "slow", "user_id": "alice", "timeout_seconds": 0.3}),
        )
        .await;
    let id = created["execution_id"].as_str().unwrap().to_owned();
    server.start_execution(&agent, &id).await;

    let events = stream.until(5 * SECOND, |e| e["type"] == "timed_out").await;
    let timed_out = events.last().unwrap();
    assert_eq!(timed_out["execution_id"], id.as_str());
    assert_eq!(timed_out["state"], "timeout");
    assert!(timed_out["error"].as_str().unwrap().contains("timeout"));
    let (_, record) = server.get(&format!("/v1/executions/{id}"), &agent).await;
    assert_eq!(record["state"], "timeout");
    let (_, metrics) = server.get("/v1/metrics", &agent).await;
    assert_eq!(metrics["timeout_executions"], 1);
}

/// An execution created with its own heartbeat timeout dies by it, not by the server's, and
/// carries its own breaker settings; one created without them keeps the server's.
async fn an_execution_created_with_its_own_heartbeat_timeout_and_breaker_settings_keeps_them(backend: Backend) {
    let server = TestServer::start_on(backend, &["--heartbeat-timeout", "30s", "--monitor-interval", "50ms"]).await;
    let agent = server.token("agent", "t1", None).await;
    let mut stream = server.ws("?thread_id=own", Some(&agent)).await;
    let created = server
        .ok(
            "/v1/executions",
            &agent,
            json!({"agent_name": "quick", "thread_id": "own", "user_id": "alice", "heartbeat_timeout_seconds": 0.3,
                "timeout_config": {"failure_threshold": 7, "llm_api_timeout": 2.5}}),
        )
        .await;
    assert_eq!(created["heartbeat_timeout_seconds"], 0.3);
    assert_eq!(created["timeout_config"]["failure_threshold"], 7);
    assert_eq!(created["timeout_config"]["llm_api_timeout"], 2.5);
    assert_eq!(
        created["timeout_config"]["success_threshold"], 2,
        "the rest is the server's"
    );
    let id = created["execution_id"].as_str().unwrap().to_owned();
    let plain = server.create_started(&agent, "plain", "own", "alice").await;
    server.start_execution(&agent, &id).await;
    let (_, breaker) = server.get(&format!("/v1/executions/{id}/breaker"), &agent).await;
    assert_eq!(breaker["failure_threshold"], 7);
    // The original's set_agent_state, and a completion's metadata merged with the state change.
    let path = format!("/v1/executions/{plain}/agent-state");
    let updated = server
        .ok(&path, &agent, json!({"warning_count": 2, "metadata": {"step": "one"}}))
        .await;
    assert_eq!(
        (updated["warning_count"].clone(), updated["metadata"]["step"].clone()),
        (json!(2), json!("one"))
    );
    let (status, refused) = server.post(&path, &agent, json!({"error_count": -1})).await;
    assert_eq!((status, refused["error"]["field"].clone()), (422, json!("error_count")));

    let events = stream.until(5 * SECOND, |e| e["type"] == "dead").await;
    assert_eq!(events.last().unwrap()["execution_id"], id.as_str());
    let (_, record) = server.get(&format!("/v1/executions/{plain}"), &agent).await;
    assert_eq!(
        record["state"], "starting",
        "the server's 30 s still apply to the other"
    );
    assert_eq!(record["heartbeat_timeout_seconds"], serde_json::Value::Null);
    assert_eq!(record["error_count"], 0, "the refused update changed nothing");
    let done = server
        .ok(
            &format!("/v1/executions/{plain}/state"),
            &agent,
            json!({"state": "completed", "metadata": {"execution_time_ms": 12}}),
        )
        .await;
    assert_eq!(done["metadata"], json!({"step": "one", "execution_time_ms": 12}));
}

on_both_backends!(
    an_execution_created_with_its_own_heartbeat_timeout_and_breaker_settings_keeps_them,
    a_silent_execution_is_marked_dead_and_its_subscribers_get_the_event,
    heartbeats_keep_an_execution_alive,
    an_execution_past_its_timeout_is_timed_out_and_subscribers_get_the_event,
);
