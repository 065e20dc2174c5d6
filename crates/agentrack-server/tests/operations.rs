//! Operating the server: graceful shutdown, heartbeat batching, retention, configuration,
//! pagination, breakers, metrics and the OpenAPI document.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::{Backend, Frame, SECOND, TestServer, eventually};
use serde_json::{Value, json};

async fn sigterm_closes_sockets_flushes_heartbeats_and_exits_cleanly(backend: Backend) {
    // Heartbeats would wait 30 s to be written: only the shutdown flush can save them.
    let mut server = TestServer::start_on(backend, &["--heartbeat-flush", "30s"]).await;
    let agent = server.token("agent", "t1", None).await;
    let id = server.create_started(&agent, "researcher", "thread", "alice").await;
    for _ in 0..3 {
        server.heartbeat(&agent, &id).await;
    }
    let mut socket = server.ws("", Some(&agent)).await;

    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
    // (Heartbeats published just before the subscription may still arrive first.)
    let (code, reason) = loop {
        match socket.next(5 * SECOND).await {
            Frame::Event(event) => assert_eq!(event["type"], "heartbeat", "{event}"),
            Frame::Closed(Some(frame)) => break frame,
            Frame::Closed(None) => panic!("dropped without a close frame"),
            Frame::Timeout => panic!("no close frame"),
        }
    };
    assert_eq!(code, 1001);
    assert!(reason.contains("shutting down"), "{reason}");

    server.restart();
    let (_, record) = server.get(&format!("/v1/executions/{id}"), &agent).await;
    assert_eq!(record["heartbeat_count"], 3);
    assert_eq!(record["state"], "running");
}

/// Whether the store holds heartbeat number `count` of execution `id` (in `thread`): the
/// thread's events are replayed from the store (those at or below the snapshot's sequence
/// number; later ones are live), up to a marker execution created in the thread once the stream
/// is open.
/// Whether a replay from the store holds heartbeat `count` of `id`. Call it only once that
/// heartbeat was published: a stream opened after it can then have it only from the store.
async fn stored_heartbeat(server: &TestServer, agent: &str, thread: &str, id: &str, count: u64) -> bool {
    let mut stream = server.ws(&format!("?since=0&thread_id={thread}"), Some(agent)).await;
    let marker = server.create(agent, "marker", thread, "alice").await;
    let events = stream.until(5 * SECOND, |e| e["execution_id"] == marker.as_str()).await;
    stream.close().await;
    events
        .iter()
        .any(|e| e["execution_id"] == id && e["type"] == "heartbeat" && e["heartbeat_count"] == count)
}

async fn heartbeats_reach_the_store_on_the_flush_interval_without_a_shutdown(backend: Backend) {
    let mut server = TestServer::start_on(backend, &["--heartbeat-flush", "100ms"]).await;
    let agent = server.token("agent", "t1", None).await;
    let id = server.create_started(&agent, "researcher", "thread", "alice").await;
    let mut watching = server.ws("?thread_id=thread", Some(&agent)).await;
    for _ in 0..4 {
        server.heartbeat(&agent, &id).await;
    }
    watching
        .until(5 * SECOND, |e| e["type"] == "heartbeat" && e["heartbeat_count"] == 4)
        .await;
    // Nothing else touches the execution: only the flush interval can write its heartbeats.
    eventually("the fourth heartbeat is in the store", || {
        stored_heartbeat(&server, &agent, "thread", &id, 4)
    })
    .await;
    server.kill();
    server.restart();
    let (_, record) = server.get(&format!("/v1/executions/{id}"), &agent).await;
    assert_eq!(record["heartbeat_count"], 4);
}

async fn retention_purges_finished_executions_from_the_store(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agentrack.toml");
    std::fs::write(&config, "retention = \"300ms\"\npurge_interval = \"100ms\"\n").unwrap();
    let mut server = TestServer::start_on(backend, &["--config", config.to_str().unwrap()]).await;
    let agent = server.token("agent", "t1", None).await;
    let done = server.create(&agent, "researcher", "thread", "alice").await;
    let alive = server.create(&agent, "researcher", "thread", "alice").await;
    server
        .ok(
            &format!("/v1/executions/{done}/state"),
            &agent,
            json!({"state": "completed"}),
        )
        .await;

    eventually("the finished execution is purged, the alive one kept", || async {
        let (_, page) = server.get("/v1/executions", &agent).await;
        let ids: Vec<&str> = page["executions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["execution_id"].as_str().unwrap())
            .collect();
        ids == [alive.as_str()]
    })
    .await;
    server.kill();
    server.restart();
    assert_eq!(server.get(&format!("/v1/executions/{done}"), &agent).await.0, 404);
    assert_eq!(server.get(&format!("/v1/executions/{alive}"), &agent).await.0, 200);
}

async fn lists_are_newest_first_a_page_at_a_time_and_filtered(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let agent = server.token("agent", "t1", None).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let agent_name = if i % 2 == 0 { "even" } else { "odd" };
        ids.push(
            server
                .create(&agent, agent_name, &format!("thread-{}", i % 2), "alice")
                .await,
        );
    }
    server
        .ok(
            &format!("/v1/executions/{}/state", ids[4]),
            &agent,
            json!({"state": "failed"}),
        )
        .await;
    let page_ids = |page: &Value| -> Vec<String> {
        page["executions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["execution_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("?limit=2&cursor={c}"),
            None => "?limit=2".into(),
        };
        let (status, page) = server.get(&format!("/v1/executions{query}"), &agent).await;
        assert_eq!(status, 200);
        seen.extend(page_ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    let (_, odd) = server.get("/v1/executions?agent_name=odd", &agent).await;
    assert_eq!(page_ids(&odd), [ids[3].clone(), ids[1].clone()]);
    let (_, thread) = server
        .get("/v1/executions?thread_id=thread-0&active=true", &agent)
        .await;
    assert_eq!(page_ids(&thread), [ids[2].clone(), ids[0].clone()]);
    let (_, failed) = server.get("/v1/executions?state=failed,cancelled", &agent).await;
    assert_eq!(page_ids(&failed), [ids[4].clone()]);
    let (_, finished) = server.get("/v1/executions?active=false", &agent).await;
    assert_eq!(page_ids(&finished), [ids[4].clone()]);
}

async fn named_breakers_open_with_retry_after_and_execution_breakers_reset(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let agent = server.token("agent", "t1", None).await;
    let other = server.token("agent", "t2", None).await;
    let path = "/v1/breakers/openai:gpt-4o";
    // Three failures (the default threshold) open the breaker.
    for _ in 0..3 {
        let grant = server.ok(&format!("{path}/acquire"), &agent, json!({})).await;
        assert_eq!(grant["state"], "closed");
        let status = server
            .ok(
                &format!("{path}/record"),
                &agent,
                json!({"permit": grant["permit"], "outcome": "failure"}),
            )
            .await;
        assert_eq!(status["name"], "openai:gpt-4o");
    }
    let response = reqwest::Client::new()
        .post(format!("{}{path}/acquire", server.url))
        .bearer_auth(&agent)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "circuit_open");

    // Another tenant's breaker of the same name is its own.
    let grant = server.ok(&format!("{path}/acquire"), &other, json!({})).await;
    assert_eq!(grant["state"], "closed");
    let (_, list) = server.get("/v1/breakers", &agent).await;
    let breakers = list["breakers"].as_array().unwrap();
    assert_eq!(breakers.len(), 1);
    assert_eq!(breakers[0]["state"], "open");
    assert_eq!(breakers[0]["tenant"], "t1");
    let viewer = server.token("viewer", "t1", Some("alice")).await;
    assert_eq!(server.get("/v1/breakers", &viewer).await.0, 403);

    // The per-execution breaker.
    let id = server.create(&agent, "researcher", "thread", "alice").await;
    let (status, breaker) = server.get(&format!("/v1/executions/{id}/breaker"), &agent).await;
    assert_eq!(status, 200);
    assert_eq!(breaker["state"], "closed");
    let reset = server
        .ok(&format!("/v1/executions/{id}/breaker/reset"), &agent, json!({}))
        .await;
    assert_eq!(reset["failure_count"], 0);
}

async fn metrics_health_and_the_openapi_document(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let agent = server.token("agent", "t1", None).await;
    let id = server.create(&agent, "researcher", "thread", "alice").await;
    server.golden_path(&agent, &id).await;

    let (_, metrics) = server.get("/v1/metrics", &agent).await;
    assert_eq!(metrics["total_executions"], 1);
    assert_eq!(metrics["successful_executions"], 1);
    assert_eq!(metrics["success_rate"], 1.0);
    let phases = metrics["phase_durations_ms"].as_object().unwrap();
    assert!(phases.contains_key("thinking") && phases.contains_key("tool_execution"));
    assert!(phases["thinking"]["p99"].is_u64());

    let (status, text) = server.request("GET", "/metrics", Some(&server.admin), None).await;
    assert_eq!(status, 200);
    let text = text.as_str().unwrap();
    assert_eq!(
        common::metric_value(text, "agentrack_executions_total"),
        Some(1),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|line| line.starts_with("agentrack_executions_finished_total{")
                && line.contains("state=\"completed\"")
                && line.ends_with("} 1")),
        "{text}"
    );
    assert!(text.contains("# TYPE agentrack_phase_duration_milliseconds summary"));

    let (_, ready) = server.request("GET", "/readyz", None, None).await;
    assert_eq!(ready["status"], "ready");

    let (_, spec) = server.request("GET", "/openapi.json", None, None).await;
    assert_eq!(spec["openapi"], "3.1.0");
    let paths = spec["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/executions", "post"),
        ("/v1/executions", "get"),
        ("/v1/executions/{id}", "get"),
        ("/v1/executions/{id}/start", "post"),
        ("/v1/executions/{id}/heartbeat", "post"),
        ("/v1/executions/{id}/state", "post"),
        ("/v1/executions/{id}/phase", "post"),
        ("/v1/executions/{id}/agent-state", "post"),
        ("/v1/executions/{id}/breaker", "get"),
        ("/v1/executions/{id}/breaker/reset", "post"),
        ("/v1/executions/{id}/breaker/acquire", "post"),
        ("/v1/executions/{id}/breaker/record", "post"),
        ("/v1/executions/{id}/timeout-config", "post"),
        ("/v1/breakers", "get"),
        ("/v1/breakers/{name}/acquire", "post"),
        ("/v1/breakers/{name}/record", "post"),
        ("/v1/tokens", "post"),
        ("/v1/tokens", "get"),
        ("/v1/tokens/{token_id}", "delete"),
        ("/v1/events", "get"),
        ("/v1/events/ticket", "post"),
        ("/v1/heartbeats", "post"),
        ("/v1/metrics", "get"),
        ("/v1/overview", "get"),
        ("/v1/cluster", "get"),
        ("/metrics", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/openapi.json", "get"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path} is documented");
    }
    let documented: usize = paths.values().map(|ops| ops.as_object().unwrap().len()).sum();
    assert_eq!(documented, 29, "no undocumented extras, none missing");
    // An unknown route is a JSON 404 too.
    let (status, body) = server.request("GET", "/v2/nothing", None, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("route_not_found")));
    let (status, body) = server.request("DELETE", "/v1/executions", Some(&agent), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
}

#[tokio::test]
async fn serve_reads_the_environment_logs_json_and_shows_the_admin_token_once() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let run = |log: &str| {
        let log = std::fs::File::create(dir.path().join(log)).unwrap();
        let mut child = Command::new(common::BIN)
            .args(["serve", "--log-format", "json"])
            .env("AGENTRACK_DATA", dir.path())
            .env("AGENTRACK_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("listening on http://127.0.0.1:"), "{line}");
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(child.wait().unwrap().success());
    };
    run("first.log");
    run("second.log");
    let first = std::fs::read_to_string(dir.path().join("first.log")).unwrap();
    let second = std::fs::read_to_string(dir.path().join("second.log")).unwrap();
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    assert!(first.contains(token.trim()), "the first start shows the admin token");
    assert!(!second.contains(token.trim()), "later starts do not");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("admin.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let logs: Vec<serde_json::Value> = second
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert!(logs.iter().any(|l| l["fields"]["message"] == "agentrack ready"));
}

async fn finished_executions_that_left_memory_are_still_served_from_the_store(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agentrack.toml");
    std::fs::write(&config, "[tracker]\ncleanup_age = 0.1\nmonitor_interval = 0.05\n").unwrap();
    let mut server = TestServer::start_on(backend, &["--config", config.to_str().unwrap()]).await;
    let agent = server.token("agent", "t1", None).await;
    let id = server.create(&agent, "researcher", "thread", "alice").await;
    server.golden_path(&agent, &id).await;
    let record = format!("/v1/executions/{id}");
    let finished = server.get(&record, &agent).await.1;

    // Wait until the tracker has let go of it (its Prometheus gauge says so).
    eventually("the execution left memory", || async {
        let (_, text) = server.request("GET", "/metrics", Some(&server.admin), None).await;
        common::metric_value(text.as_str().unwrap(), "agentrack_executions_in_memory") == Some(0)
    })
    .await;
    assert_eq!(server.get(&record, &agent).await.1, finished);
    let (status, body) = server
        .post(&format!("{record}/state"), &agent, json!({"state": "failed"}))
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("terminal")));
    assert_eq!(server.get(&format!("{record}/breaker"), &agent).await.0, 200);
    let other = server.token("agent", "t2", None).await;
    assert_eq!(server.get(&record, &other).await.0, 404);
    let mut replay = server.ws(&format!("?since=0&execution_id={id}"), Some(&agent)).await;
    replay.until(5 * SECOND, |e| e["type"] == "execution_completed").await;

    server.kill();
    server.restart();
    assert_eq!(server.get(&record, &agent).await.1, finished);
    let (_, metrics) = server.get("/v1/metrics", &agent).await;
    assert_eq!(metrics["successful_executions"], 1);
}

on_both_backends!(
    sigterm_closes_sockets_flushes_heartbeats_and_exits_cleanly,
    heartbeats_reach_the_store_on_the_flush_interval_without_a_shutdown,
    retention_purges_finished_executions_from_the_store,
    lists_are_newest_first_a_page_at_a_time_and_filtered,
    named_breakers_open_with_retry_after_and_execution_breakers_reset,
    metrics_health_and_the_openapi_document,
    finished_executions_that_left_memory_are_still_served_from_the_store,
);
