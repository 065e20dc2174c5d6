//! Every route's responses, and every message of the event stream, match the schemas of the
//! `/openapi.json` the same server publishes: the document is held to what the server sends.

#![allow(clippy::unwrap_used)]

mod common;
mod openapi;

use std::collections::BTreeSet;

use agentrack_server::api::{RouteDoc, route_docs};
use common::{SECOND, TestServer};
use futures_util::SinkExt;
use openapi::Schemas;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Whether `path` is an instance of the route template `template` (`{name}` matches a segment).
fn instance_of(template: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    let (template, path): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    template.len() == path.len()
        && template
            .iter()
            .zip(&path)
            .all(|(t, p)| (t.starts_with('{') && t.ends_with('}')) || t == p)
}

/// Calls routes and checks each response against the document as it goes.
struct Client<'a> {
    server: &'a TestServer,
    schemas: Schemas,
    docs: Vec<RouteDoc>,
    /// Operations answered with their documented success.
    succeeded: BTreeSet<&'static str>,
    /// Error codes seen (each body checked against `Error`).
    errors: BTreeSet<String>,
}

impl<'a> Client<'a> {
    async fn new(server: &'a TestServer) -> Self {
        Self {
            server,
            schemas: Schemas::published(server).await,
            docs: route_docs(),
            succeeded: BTreeSet::new(),
            errors: BTreeSet::new(),
        }
    }

    /// Calls `method path`, checks the answer against the route's documented success or error
    /// schema, and returns it.
    async fn call(&mut self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let doc = *self
            .docs
            .iter()
            .find(|doc| doc.method == method && instance_of(doc.path, path))
            .unwrap_or_else(|| panic!("no route documents {method} {path}"));
        let body = body.map(|body| body.to_string());
        let (status, value) = self.server.request(method, path, token, body.as_deref()).await;
        let what = format!("{method} {path} → {status}");
        if status == doc.success.0 {
            match doc.success.1 {
                Some(schema) => self.schemas.assert_matches(schema, &value, &what),
                None => assert!(value.is_string(), "{what} is documented as text: {value}"),
            }
            self.succeeded.insert(doc.operation_id);
        } else {
            assert!(
                doc.errors.contains(&status),
                "{what} is not among the statuses documented for it ({:?}): {value}",
                doc.errors
            );
            self.schemas.assert_matches("Error", &value, &what);
            self.errors.insert(value["error"]["code"].as_str().unwrap().to_owned());
        }
        (status, value)
    }

    async fn ok(&mut self, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
        let (status, value) = self.call(method, path, Some(token), body).await;
        assert!(status < 300, "{method} {path} → {status} {value}");
        value
    }
}

#[tokio::test]
async fn every_response_matches_its_documented_schema() {
    let server = TestServer::start().await;
    let mut client = Client::new(&server).await;
    let admin = server.admin.clone();

    let agent = client
        .ok(
            "POST",
            "/v1/tokens",
            &admin,
            Some(json!({"role": "agent", "tenant": "acme", "label": "ci"})),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let viewer = client
        .ok(
            "POST",
            "/v1/tokens",
            &admin,
            Some(json!({"role": "viewer", "tenant": "acme", "user_id": "alice"})),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let (golden, failing) = drive_executions(&mut client, &agent, &viewer).await;
    open_a_breaker(&mut client, &admin, &agent).await;

    // What the dashboard and monitoring read, for each role.
    for token in [&admin, &agent, &viewer] {
        client.ok("GET", "/v1/metrics", token, None).await;
        client.ok("GET", "/v1/overview", token, None).await;
    }
    client.ok("GET", "/v1/cluster", &admin, None).await;
    // Tokens: one expiring, listed, revoked; a ticket for the stream.
    let expiring = client
        .ok(
            "POST",
            "/v1/tokens",
            &admin,
            Some(json!({"role": "metrics", "tenant": "ops", "expires_in_seconds": 3600})),
        )
        .await;
    client.ok("GET", "/v1/tokens", &admin, None).await;
    let revoked = format!("/v1/tokens/{}", expiring["id"].as_str().unwrap());
    client.ok("DELETE", &revoked, &admin, None).await;
    client
        .call("DELETE", "/v1/tokens/tok_0000000000000000", Some(&admin), None)
        .await;
    client.ok("POST", "/v1/events/ticket", &viewer, None).await;
    let (status, metrics) = client.call("GET", "/metrics", Some(&admin), None).await;
    assert_eq!(status, 200);
    assert!(metrics.as_str().unwrap().contains("agentrack_executions_total 2"));
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        client.call("GET", path, None, None).await;
    }

    refused_calls_are_errors(&mut client, [&admin, &agent, &viewer], &golden, &failing).await;
    stream_messages_match(&server, &mut client, &agent).await;

    let undone: Vec<&str> = client
        .docs
        .iter()
        .map(|doc| doc.operation_id)
        .filter(|operation| !client.succeeded.contains(operation))
        .collect();
    assert!(
        undone.is_empty(),
        "no successful response of {undone:?} was checked: add a call to this test"
    );
}

/// A new execution's body.
fn new_execution(agent_name: &str) -> Value {
    json!({"agent_name": agent_name, "thread_id": "thread-1", "user_id": "alice",
        "timeout_seconds": 300, "metadata": {"source": "test"}})
}

/// The path of execution `id`'s route ending in `tail`.
fn exec(id: &str, tail: &str) -> String {
    format!("/v1/executions/{id}{tail}")
}

/// Two executions driven through every route that changes them; their ids (one completed, one
/// failed).
async fn drive_executions(client: &mut Client<'_>, agent: &str, viewer: &str) -> (String, String) {
    let golden = client
        .ok("POST", "/v1/executions", agent, Some(new_execution("researcher")))
        .await;
    let golden = golden["execution_id"].as_str().unwrap().to_owned();
    let failing = client
        .ok("POST", "/v1/executions", agent, Some(new_execution("failing")))
        .await;
    let failing = failing["execution_id"].as_str().unwrap().to_owned();
    client.ok("POST", &exec(&golden, "/start"), agent, None).await;
    client.ok("POST", &exec(&golden, "/heartbeat"), agent, None).await;
    client
        .ok(
            "POST",
            "/v1/heartbeats",
            agent,
            Some(json!({"execution_ids": [golden, failing, "not-an-id"]})),
        )
        .await;
    for (phase, metadata) in common::golden_phases() {
        client
            .ok(
                "POST",
                &exec(&golden, "/phase"),
                agent,
                Some(json!({"phase": phase, "metadata": metadata})),
            )
            .await;
    }
    client
        .ok(
            "POST",
            &exec(&golden, "/agent-state"),
            agent,
            Some(json!({"warning_count": 1, "error_count": 0, "metadata": {"note": "slow tool"}})),
        )
        .await;
    client.ok("GET", &exec(&golden, "/breaker"), agent, None).await;
    client.ok("POST", &exec(&golden, "/breaker/reset"), agent, None).await;
    let grant = client.ok("POST", &exec(&golden, "/breaker/acquire"), agent, None).await;
    client
        .ok(
            "POST",
            &exec(&golden, "/breaker/record"),
            agent,
            Some(json!({"permit": grant["permit"], "outcome": "success"})),
        )
        .await;
    client
        .ok(
            "POST",
            &exec(&golden, "/breaker/record"),
            agent,
            Some(json!({"outcome": "ignored"})),
        )
        .await;
    client
        .ok(
            "POST",
            &exec(&golden, "/timeout-config"),
            agent,
            Some(json!({"llm_api_timeout": 45, "max_retries": 2})),
        )
        .await;
    client
        .ok(
            "POST",
            "/v1/heartbeats",
            agent,
            Some(json!({"beats": [{"execution_id": golden, "count": 3}]})),
        )
        .await;
    client
        .ok(
            "POST",
            &exec(&golden, "/state"),
            agent,
            Some(json!({"state": "completed", "result": {"answer": "sunny"}})),
        )
        .await;
    client
        .ok(
            "POST",
            &exec(&failing, "/state"),
            agent,
            Some(json!({"state": "failed", "error": "no context"})),
        )
        .await;
    client.ok("GET", &exec(&golden, ""), viewer, None).await;
    client.ok("GET", "/v1/executions?limit=1", agent, None).await;
    client.ok("GET", "/v1/executions?active=false", viewer, None).await;
    (golden, failing)
}

/// A named breaker: permits until it opens.
async fn open_a_breaker(client: &mut Client<'_>, admin: &str, agent: &str) {
    for _ in 0..3 {
        let grant = client.ok("POST", "/v1/breakers/openai/acquire", agent, None).await;
        client
            .ok(
                "POST",
                "/v1/breakers/openai/record",
                agent,
                Some(json!({"permit": grant["permit"], "outcome": "failure"})),
            )
            .await;
    }
    let (status, _) = client
        .call("POST", "/v1/breakers/openai/acquire", Some(agent), None)
        .await;
    assert_eq!(status, 503, "the breaker is open");
    client.ok("GET", "/v1/breakers", agent, None).await;
    client.ok("GET", "/v1/breakers", admin, None).await;
}

/// Refused calls, each body checked against `Error`.
async fn refused_calls_are_errors(
    client: &mut Client<'_>,
    [admin, agent, viewer]: [&str; 3],
    golden: &str,
    failing: &str,
) {
    let refused: [(&str, String, Option<&str>, Option<Value>); 9] = [
        ("GET", "/v1/executions".into(), None, None),
        ("GET", "/v1/breakers".into(), Some(viewer), None),
        ("GET", "/v1/executions?colour=red".into(), Some(agent), None),
        (
            "GET",
            exec("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", ""),
            Some(agent),
            None,
        ),
        ("POST", exec(golden, "/start"), Some(agent), None),
        (
            "POST",
            exec(failing, "/phase"),
            Some(agent),
            Some(json!({"phase": "done"})),
        ),
        (
            "POST",
            "/v1/executions".into(),
            Some(agent),
            Some(json!({"agent_name": 1})),
        ),
        (
            "POST",
            "/v1/tokens".into(),
            Some(admin),
            Some(json!({"role": "viewer", "tenant": "acme"})),
        ),
        (
            "POST",
            exec(failing, "/phase"),
            Some(agent),
            Some(json!({"phase": "thinking", "metadata": {"blob": "x".repeat(100 * 1024)}})),
        ),
    ];
    for (method, path, token, body) in refused {
        let (status, body) = client.call(method, &path, token, body).await;
        assert!(status >= 400, "{method} {path} → {status} {body}");
    }
    for code in [
        "unauthorized",
        "forbidden",
        "invalid_query",
        "not_found",
        "terminal",
        "circuit_open",
        "field_too_large",
    ] {
        assert!(
            client.errors.contains(code),
            "no {code} error was seen: {:?}",
            client.errors
        );
    }
}

/// The event stream: a snapshot, the replayed events, a heartbeat's acknowledgement, an error.
async fn stream_messages_match(server: &TestServer, client: &mut Client<'_>, agent: &str) {
    let still_alive = client
        .ok("POST", "/v1/executions", agent, Some(new_execution("alive")))
        .await;
    let still_alive = still_alive["execution_id"].as_str().unwrap().to_owned();
    let mut stream = server.ws("?since=0&snapshot=true", Some(agent)).await;
    let mut messages = stream
        .until(5 * SECOND, |message| {
            message["type"] == "execution_created" && message["execution_id"] == still_alive.as_str()
        })
        .await;
    let heartbeat = json!({"type": "heartbeat", "execution_ids": [still_alive, "not-an-id"]});
    stream
        .socket
        .send(Message::Text(heartbeat.to_string().into()))
        .await
        .unwrap();
    messages.extend(
        stream
            .until(5 * SECOND, |message| message["type"] == "heartbeat_ack")
            .await,
    );
    stream
        .socket
        .send(Message::Text("{\"type\": \"hello\"}".into()))
        .await
        .unwrap();
    messages.extend(stream.until(5 * SECOND, |message| message["type"] == "error").await);
    let types: BTreeSet<&str> = messages.iter().filter_map(|m| m["type"].as_str()).collect();
    for expected in [
        "snapshot",
        "execution_created",
        "agent_thinking",
        "tool_executing",
        "execution_failed",
        "heartbeat_ack",
        "error",
    ] {
        assert!(
            types.contains(expected),
            "no {expected} message on the stream: {types:?}"
        );
    }
    for message in &messages {
        client
            .schemas
            .assert_matches("StreamMessage", message, "a stream message");
    }
    client.succeeded.insert("events");
}

#[tokio::test]
async fn the_document_refuses_fields_it_does_not_describe() {
    let server = TestServer::start().await;
    let schemas = Schemas::published(&server).await;
    let agent = server.token("agent", "acme", None).await;
    let id = server.create(&agent, "researcher", "thread-1", "alice").await;
    let (_, mut record) = server.get(&format!("/v1/executions/{id}"), &agent).await;
    schemas.assert_matches("ExecutionRecord", &record, "a record");
    // A field the document does not know, as a newer core might add, is caught.
    record["new_field"] = json!(1);
    assert!(!schemas.errors("ExecutionRecord", &record).is_empty());
    // And so is one it requires but the server left out.
    let mut record = record.as_object().unwrap().clone();
    record.remove("new_field");
    record.remove("phase_entered_at");
    assert!(!schemas.errors("ExecutionRecord", &Value::Object(record)).is_empty());
}
