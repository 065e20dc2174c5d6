//! The golden path over real HTTP, watched over a real WebSocket.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::time::Duration;

use common::{Backend, GOLDEN_EVENTS, SECOND, TestServer, types};
use serde_json::Value;

fn is_terminal(event: &Value) -> bool {
    event["type"] == "execution_completed"
}

async fn golden_path_arrives_in_order_with_the_original_event_names(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let agent = server.token("agent", "acme", None).await;
    let mut socket = server.ws("?thread_id=thread-1", Some(&agent)).await;

    let id = server.create(&agent, "researcher", "thread-1", "alice").await;
    server.golden_path(&agent, &id).await;

    let events = socket.until(5 * SECOND, is_terminal).await;
    let names: Vec<String> = types(&events).into_iter().filter(|t| t != "heartbeat").collect();
    assert_eq!(names, GOLDEN_EVENTS);
    // The original's browser-facing notifications, in order.
    let notified: Vec<&String> = names
        .iter()
        .filter(|n| ["agent_started", "agent_thinking", "tool_executing", "agent_completed"].contains(&n.as_str()))
        .collect();
    assert_eq!(notified.first().map(|s| s.as_str()), Some("agent_started"));
    assert_eq!(notified.last().map(|s| s.as_str()), Some("agent_completed"));
    // One global order, no gaps within the execution's own sequence.
    let global: Vec<u64> = events.iter().map(|e| e["global_seq"].as_u64().unwrap()).collect();
    assert!(global.windows(2).all(|w| w[0] < w[1]), "{global:?}");
    let own: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(own, (1..=own.len() as u64).collect::<Vec<_>>());
    assert!(events.iter().all(|e| e["execution_id"] == id.as_str()));
    let tool = events.iter().find(|e| e["type"] == "tool_executing").unwrap();
    assert_eq!(tool["tool_name"], "get_forecast");

    let (status, record) = server.get(&format!("/v1/executions/{id}"), &agent).await;
    assert_eq!(status, 200);
    assert_eq!(record["state"], "completed");
    assert_eq!(record["phase_history"].as_array().unwrap().len(), 9);
    assert_eq!(record["result"]["answer"], "sunny");
}

async fn golden_path_in_the_agui_vocabulary(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let agent = server.token("agent", "acme", None).await;
    let mut socket = server.ws("?protocol=agui", Some(&agent)).await;

    let id = server.create(&agent, "researcher", "thread-9", "alice").await;
    server.golden_path(&agent, &id).await;

    let events = socket.until(5 * SECOND, |e| e["type"] == "RUN_FINISHED").await;
    let steps: Vec<String> = events
        .iter()
        .map(|e| match e["type"].as_str().unwrap() {
            "STEP_STARTED" | "STEP_FINISHED" => {
                format!("{} {}", e["type"].as_str().unwrap(), e["stepName"].as_str().unwrap())
            }
            other => other.to_owned(),
        })
        .collect();
    assert_eq!(
        steps,
        [
            "RUN_STARTED",
            "STEP_STARTED websocket_setup",
            "STEP_FINISHED websocket_setup",
            "STEP_STARTED context_validation",
            "STEP_FINISHED context_validation",
            "STEP_STARTED starting",
            "STEP_FINISHED starting",
            "STEP_STARTED thinking",
            "STEP_FINISHED thinking",
            "STEP_STARTED llm_interaction",
            "STEP_FINISHED llm_interaction",
            "TOOL_CALL_START",
            "TOOL_CALL_END",
            "STEP_STARTED result_processing",
            "STEP_FINISHED result_processing",
            "STEP_STARTED completing",
            "STEP_FINISHED completing",
            "RUN_FINISHED",
        ]
    );
    assert_eq!(events[0]["threadId"], "thread-9");
    assert_eq!(events[0]["runId"], id.as_str());
    let start = events.iter().find(|e| e["type"] == "TOOL_CALL_START").unwrap();
    let end = events.iter().find(|e| e["type"] == "TOOL_CALL_END").unwrap();
    assert_eq!(start["toolCallName"], "get_forecast");
    assert_eq!(start["toolCallId"], end["toolCallId"]);
    assert_eq!(events.last().unwrap()["result"]["answer"], "sunny");
    // Nothing follows the end of a run.
    assert!(socket.drain(Duration::from_millis(200)).await.is_empty());
}

async fn reconnecting_with_since_loses_no_event(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let agent = server.token("agent", "acme", None).await;

    // Watch the first half, remember the last sequence number, disconnect.
    let mut first = server.ws("", Some(&agent)).await;
    let id = server.create_started(&agent, "researcher", "thread-1", "alice").await;
    let seen = first.until(5 * SECOND, |e| e["type"] == "state_changed").await;
    let last = seen.last().unwrap()["cursor"].as_str().unwrap().to_owned();
    first.close().await;

    // Everything else happens while nobody is listening.
    let other = server.create(&agent, "writer", "thread-2", "bob").await;
    server.finish_golden_path(&agent, &id).await;
    server
        .ok(
            &format!("/v1/executions/{other}/state"),
            &agent,
            serde_json::json!({"state": "failed", "error": "boom"}),
        )
        .await;

    // Reconnect from the last sequence seen: the rest arrives, once each, in order, then live.
    let mut second = server.ws(&format!("?since={last}"), Some(&agent)).await;
    // Replayed shard by shard: both endings, in whichever order the shards come.
    let mut endings = 0;
    let replayed = second
        .until(5 * SECOND, |e| {
            if ["execution_failed", "execution_completed"].contains(&e["type"].as_str().unwrap_or("")) {
                endings += 1;
            }
            endings == 2
        })
        .await;
    let live_id = server.create(&agent, "late", "thread-3", "carol").await;
    let live = second.until(5 * SECOND, |e| e["type"] == "execution_created").await;
    assert_eq!(live[0]["execution_id"], live_id.as_str());

    // Each execution's events in its order, none twice, none already seen.
    let key = |e: &Value| {
        (
            e["execution_id"].as_str().unwrap().to_owned(),
            e["seq"].as_u64().unwrap(),
        )
    };
    let seen_keys: Vec<_> = seen.iter().map(key).collect();
    let resumed: Vec<_> = replayed.iter().chain(&live).map(key).collect();
    assert!(
        resumed.iter().all(|k| !seen_keys.contains(k)),
        "nothing seen before comes again"
    );
    for (execution, seq) in &resumed {
        let earlier = resumed
            .iter()
            .take_while(|k| k != &&(execution.clone(), *seq))
            .filter(|(other, _)| other == execution);
        assert!(
            earlier.clone().all(|(_, s)| s < seq),
            "{execution}'s events in order: {resumed:?}"
        );
    }
    let names = types(&replayed);
    for expected in [
        "phase_changed",
        "execution_created",
        "agent_started",
        "tool_executing",
        "agent_completed",
        "execution_completed",
        "execution_failed",
    ] {
        assert!(names.iter().any(|n| n == expected), "missing {expected} in {names:?}");
    }
    // Every non-heartbeat event not seen before is there: compare with a full replay.
    let mut full = server.ws("?since=0", Some(&agent)).await;
    let everything = full.drain(SECOND).await;
    let mut expected: Vec<_> = everything
        .iter()
        .filter(|e| e["type"] != "heartbeat")
        .map(key)
        .filter(|k| !seen_keys.contains(k))
        .collect();
    let mut got: Vec<_> = replayed
        .iter()
        .chain(&live)
        .filter(|e| e["type"] != "heartbeat")
        .map(key)
        .collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
}

on_both_backends!(
    golden_path_arrives_in_order_with_the_original_event_names,
    golden_path_in_the_agui_vocabulary,
    reconnecting_with_since_loses_no_event,
);
