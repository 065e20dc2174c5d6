//! An execution's own breaker, its timeout config and counted heartbeats, for agents in other
//! processes (the routes behind the Python drop-in's remote `execute_with_circuit_breaker`,
//! `_on_circuit_breaker_*`, `set_timeout` and batched `heartbeat`), against a real server.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, eventually};
use serde_json::{Value, json};

/// A started execution of `token` whose breaker opens after two failures and lets a trial
/// through `recovery` seconds later.
async fn execution(server: &TestServer, token: &str, recovery: f64) -> String {
    let body = server
        .ok(
            "/v1/executions",
            token,
            json!({"agent_name": "a", "thread_id": "t", "user_id": "u", "timeout_seconds": 300,
                "timeout_config": {"failure_threshold": 2, "success_threshold": 1, "recovery_timeout": recovery,
                    "llm_api_timeout": 7}}),
        )
        .await;
    let id = body["execution_id"].as_str().unwrap().to_owned();
    server.start_execution(token, &id).await;
    id
}

async fn acquire(server: &TestServer, token: &str, id: &str) -> (u16, Value) {
    server
        .post(&format!("/v1/executions/{id}/breaker/acquire"), token, json!({}))
        .await
}

async fn record(server: &TestServer, token: &str, id: &str, body: Value) -> (u16, Value) {
    server
        .post(&format!("/v1/executions/{id}/breaker/record"), token, body)
        .await
}

async fn breaker(server: &TestServer, token: &str, id: &str) -> Value {
    let (status, body) = server.get(&format!("/v1/executions/{id}/breaker"), token).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn permits_open_the_breaker_which_refuses_until_a_trial_closes_it() {
    let server = TestServer::start().await;
    let agent = server.token("agent", "t1", None).await;
    let id = execution(&server, &agent, 0.3).await;

    for n in 1..=2 {
        let (status, grant) = acquire(&server, &agent, &id).await;
        assert_eq!(status, 200, "{grant}");
        assert_eq!(grant["breaker"], format!("execution:{id}"));
        assert_eq!(grant["trial"], false);
        assert_eq!(grant["timeout_seconds"], 7.0, "the execution's llm_api_timeout");
        let (status, body) = record(
            &server,
            &agent,
            &id,
            json!({"permit": grant["permit"], "outcome": "failure"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["failure_count"], n);
        // A permit is settled once.
        let (status, again) = record(
            &server,
            &agent,
            &id,
            json!({"permit": grant["permit"], "outcome": "success"}),
        )
        .await;
        assert_eq!(status, 404, "{again}");
        assert_eq!(again["error"]["code"], "permit_not_found");
    }
    assert_eq!(breaker(&server, &agent, &id).await["state"], "open");
    let (_, record_now) = server.get(&format!("/v1/executions/{id}"), &agent).await;
    assert_eq!(record_now["circuit_breaker_state"], "open");

    // Open: refused, with how long to wait.
    let (status, refused) = acquire(&server, &agent, &id).await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["error"]["code"], "circuit_open");
    assert!(refused["error"]["retry_after_seconds"].as_f64().unwrap() > 0.0);

    // After the recovery timeout a trial goes through; its success closes the breaker.
    let trial = std::sync::Mutex::new(Value::Null);
    eventually("the breaker admits a trial", || async {
        let (status, grant) = acquire(&server, &agent, &id).await;
        *trial.lock().unwrap() = grant;
        status == 200
    })
    .await;
    let trial = trial.into_inner().unwrap();
    assert_eq!(trial["trial"], true, "{trial}");
    assert_eq!(trial["state"], "half_open");
    let (status, body) = record(
        &server,
        &agent,
        &id,
        json!({"permit": trial["permit"], "outcome": "success"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "closed");
    assert_eq!(body["failure_count"], 0);
}

#[tokio::test]
async fn outcomes_without_a_permit_are_counted_as_the_original_counted_them() {
    let server = TestServer::start().await;
    let agent = server.token("agent", "t1", None).await;
    let id = execution(&server, &agent, 600.0).await;

    for _ in 0..2 {
        let (status, body) = record(&server, &agent, &id, json!({"outcome": "failure"})).await;
        assert_eq!(status, 200, "{body}");
    }
    let opened = breaker(&server, &agent, &id).await;
    assert_eq!(opened["state"], "open");
    assert_eq!(opened["failure_count"], 2);

    // A failure while open is counted and keeps it open; a success while open is refused and
    // counts nothing.
    let (status, body) = record(&server, &agent, &id, json!({"outcome": "failure"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["failure_count"], 3);
    let (status, body) = record(&server, &agent, &id, json!({"outcome": "success"})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "circuit_open");
    assert_eq!(breaker(&server, &agent, &id).await["failure_count"], 3);

    // It lasts: killed right after the answers (each waited until durable), the server reads
    // the breaker back from its store.
    let mut server = server;
    server.kill();
    server.restart();
    let after = breaker(&server, &agent, &id).await;
    assert_eq!(after["state"], "open", "{after}");
    assert_eq!(after["failure_count"], 3);
}

#[tokio::test]
async fn bad_breaker_requests_are_refused_and_change_nothing() {
    let server = TestServer::start().await;
    let agent = server.token("agent", "t1", None).await;
    let other = server.token("agent", "t2", None).await;
    let id = execution(&server, &agent, 600.0).await;

    let (status, body) = record(&server, &agent, &id, json!({"outcome": "maybe"})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_outcome");
    let (status, body) = record(&server, &agent, &id, json!({"outcome": {"state": "failure"}})).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = record(&server, &agent, &id, json!({"outcome": "failure", "count": 3})).await;
    assert!(matches!(status, 400 | 422), "{status} {body}");
    let (status, body) = record(
        &server,
        &agent,
        &id,
        json!({"permit": "pmt_nope", "outcome": "failure"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "permit_not_found");

    // Another tenant neither sees it nor uses its permits.
    let (status, _) = acquire(&server, &other, &id).await;
    assert_eq!(status, 404);
    let (_, grant) = acquire(&server, &agent, &id).await;
    let (status, _) = record(
        &server,
        &other,
        &id,
        json!({"permit": grant["permit"], "outcome": "failure"}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = acquire(&server, &agent, "not-an-id").await;
    assert_eq!(status, 404);
    assert_eq!(
        breaker(&server, &agent, &id).await["failure_count"],
        0,
        "nothing was counted"
    );

    // A finished execution admits no calls.
    server
        .ok(
            &format!("/v1/executions/{id}/state"),
            &agent,
            json!({"state": "completed"}),
        )
        .await;
    let (status, body) = acquire(&server, &agent, &id).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "terminal");
    let (status, body) = record(&server, &agent, &id, json!({"outcome": "failure"})).await;
    assert_eq!(status, 409, "{body}");
    // The permit held since before still settles (its slot comes back).
    let (status, body) = record(
        &server,
        &agent,
        &id,
        json!({"permit": grant["permit"], "outcome": "ignored"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_timeout_config_change_applies_lasts_and_is_validated() {
    let mut server = TestServer::start().await;
    let agent = server.token("agent", "t1", None).await;
    let id = execution(&server, &agent, 600.0).await;
    let path = format!("/v1/executions/{id}/timeout-config");

    let changed = server
        .ok(
            &path,
            &agent,
            json!({"agent_execution_timeout": 42, "failure_threshold": 9}),
        )
        .await;
    assert_eq!(changed["timeout_config"]["agent_execution_timeout"], 42.0, "{changed}");
    assert_eq!(changed["timeout_config"]["failure_threshold"], 9);
    // Fields not given keep the execution's values (its llm_api_timeout of 7, not the default).
    assert_eq!(changed["timeout_config"]["llm_api_timeout"], 7.0);
    assert_eq!(changed["timeout_seconds"], 42.0, "{changed}");
    assert_eq!(breaker(&server, &agent, &id).await["failure_threshold"], 9);

    for (body, field) in [
        (json!({"agent_execution_timeout": 0}), "agent_execution_timeout"),
        (json!({"failure_threshold": {"n": 1}}), "failure_threshold"),
        (json!({"retry_exponential_base": 0.5}), "retry_exponential_base"),
    ] {
        let (status, refused) = server.post(&path, &agent, body.clone()).await;
        assert_eq!(status, 422, "{body} → {refused}");
        assert!(
            refused["error"]["message"].as_str().unwrap().contains(field),
            "{refused}"
        );
    }
    let (status, refused) = server.post(&path, &agent, json!({"agent_execution_timeot": 5})).await;
    assert!(matches!(status, 400 | 422), "{refused}");

    server.kill();
    server.restart();
    let (_, after) = server.get(&format!("/v1/executions/{id}"), &agent).await;
    assert_eq!(after["timeout_config"]["agent_execution_timeout"], 42.0, "{after}");
    assert_eq!(after["timeout_config"]["failure_threshold"], 9);

    let other = server.token("agent", "t2", None).await;
    let (status, _) = server.post(&path, &other, json!({"failure_threshold": 1})).await;
    assert_eq!(status, 404);
    server
        .ok(
            &format!("/v1/executions/{id}/state"),
            &agent,
            json!({"state": "failed", "error": "x"}),
        )
        .await;
    let (status, body) = server.post(&path, &agent, json!({"failure_threshold": 1})).await;
    assert_eq!(status, 409, "{body}");
}

#[tokio::test]
async fn a_batch_may_count_each_id_several_times() {
    let server = TestServer::start().await;
    let agent = server.token("agent", "t1", None).await;
    let a = server.create_started(&agent, "a", "t", "u").await;
    let b = server.create_started(&agent, "a", "t", "u").await;

    let beats = json!([{"execution_id": a, "count": 40}, {"execution_id": b, "count": 2}]);
    let report = server.ok("/v1/heartbeats", &agent, json!({ "beats": beats })).await;
    assert_eq!(report["accepted"], 2, "{report}");
    assert_eq!(report["results"][0]["ok"]["heartbeat_count"], 40);
    assert_eq!(report["results"][1]["ok"]["heartbeat_count"], 2);

    for (body, why) in [
        (json!({"beats": [{"execution_id": a, "count": 0}]}), "at least 1"),
        (
            json!({"beats": [{"execution_id": a, "count": 1_000_001}]}),
            "at most a million",
        ),
        (json!({"beats": [{"execution_id": a, "count": "2"}]}), "a number"),
        (json!({"beats": [{"execution_id": a}]}), "a count"),
        (
            json!({"beats": [{"execution_id": a, "count": 1, "extra": 1}]}),
            "no other key",
        ),
        (json!({"beats": [{"execution_id": " ", "count": 1}]}), "a non-blank id"),
        (json!({"beats": []}), "at least one"),
        (json!({"beats": {"a": 1}}), "an array"),
        (
            json!({"execution_ids": [a], "beats": [{"execution_id": a, "count": 1}]}),
            "not both",
        ),
    ] {
        let (status, refused) = server.post("/v1/heartbeats", &agent, body).await;
        assert_eq!(status, 422, "{why}: {refused}");
        assert_eq!(refused["error"]["field"], "beats", "{why}: {refused}");
    }
    let (_, record) = server.get(&format!("/v1/executions/{a}"), &agent).await;
    assert_eq!(record["heartbeat_count"], 40, "refused batches counted nothing");
}
