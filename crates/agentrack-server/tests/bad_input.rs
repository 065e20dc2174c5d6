//! Bad input on every route gets the specified status and code, and changes nothing.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::{Backend, TestServer};
use serde_json::{Value, json};

const STATES: [&str; 9] = [
    "pending",
    "starting",
    "running",
    "completing",
    "completed",
    "failed",
    "timeout",
    "dead",
    "cancelled",
];

fn big_body() -> String {
    format!("{{\"metadata\": {{\"blob\": \"{}\"}}}}", "x".repeat(1024 * 1024 + 10))
}

/// Sends `body` to `path`, checks status and error code, and returns the body.
async fn expect(server: &TestServer, token: &str, path: &str, body: &str, status: u16, code: &str) -> Value {
    let (got, value) = server.request("POST", path, Some(token), Some(body)).await;
    assert_eq!(got, status, "POST {path} {}: {value}", body.get(..80).unwrap_or(body));
    assert_eq!(value["error"]["code"], code, "POST {path}: {value}");
    assert!(value["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    value
}

async fn creating_with_bad_input_is_refused_and_creates_nothing(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let agent = server.token("agent", "t1", None).await;
    let cases: Vec<(String, u16, &str)> = vec![
        ("{\"agent_name\": ".into(), 400, "malformed_json"),
        ("not json".into(), 400, "malformed_json"),
        ("[1, 2]".into(), 422, "invalid_body"),
        (
            json!({"thread_id": "t", "user_id": "u"}).to_string(),
            422,
            "missing_field",
        ),
        (
            json!({"agent_name": 7, "thread_id": "t", "user_id": "u"}).to_string(),
            422,
            "invalid_field",
        ),
        (
            json!({"agent_name": "", "thread_id": "t", "user_id": "u"}).to_string(),
            422,
            "invalid_field",
        ),
        (
            json!({"agent_name": "a", "thread_id": {"id": 1}, "user_id": "u"}).to_string(),
            422,
            "invalid_field",
        ),
        (
            json!({"agent_name": "a", "thread_id": "t", "user_id": "u", "timeout_seconds": "ten"}).to_string(),
            422,
            "invalid_field",
        ),
        (
            json!({"agent_name": "a", "thread_id": "t", "user_id": "u", "timeout_seconds": -1}).to_string(),
            422,
            "invalid_field",
        ),
        (
            json!({"agent_name": "a", "thread_id": "t", "user_id": "u", "metadata": "x"}).to_string(),
            422,
            "invalid_field",
        ),
        (
            json!({"agent_name": "a", "thread_id": "t", "user_id": "u", "colour": "red"}).to_string(),
            422,
            "unknown_field",
        ),
        (
            json!({"agent_name": "a", "thread_id": "t", "user_id": "u", "heartbeat_timeout_seconds": 0}).to_string(),
            422,
            "invalid_field",
        ),
        (
            json!({"agent_name": "a", "thread_id": "t", "user_id": "u", "timeout_config": {"failure_threshold": 0}})
                .to_string(),
            422,
            "invalid_field",
        ),
        (
            json!({"agent_name": "a", "thread_id": "t", "user_id": "u", "timeout_config": {"llm_api_timeout": "5"}})
                .to_string(),
            422,
            "invalid_field",
        ),
        (
            json!({"agent_name": "a", "thread_id": "t", "user_id": "u", "timeout_config": {"colour": 1}}).to_string(),
            422,
            "unknown_field",
        ),
        (big_body(), 413, "payload_too_large"),
    ];
    for (body, status, code) in &cases {
        let error = expect(&server, &agent, "/v1/executions", body, *status, code).await;
        if *code == "invalid_field" || *code == "missing_field" {
            assert!(error["error"]["field"].is_string(), "{error}");
        }
    }
    let (_, page) = server.get("/v1/executions", &agent).await;
    assert_eq!(page["executions"], json!([]), "nothing was created");
    let (_, metrics) = server.get("/v1/metrics", &agent).await;
    assert_eq!(metrics["total_executions"], 0);
}

/// Bodies of `POST {record}/state` that are refused, each with its error.
async fn refuses_bad_states(server: &TestServer, agent: &str, state: &str) {
    // The original's production bug: a dict where a state belongs.
    let error = expect(
        server,
        agent,
        state,
        &json!({"state": {"success": true, "completed": true}}).to_string(),
        422,
        "invalid_state",
    )
    .await;
    assert_eq!(error["error"]["valid_values"], json!(STATES));
    assert_eq!(error["error"]["field"], "state");
    assert!(error["error"]["message"].as_str().unwrap().contains("JSON object"));
    for body in [
        json!({"state": "finished"}),
        json!({"state": 3}),
        json!({"state": true}),
        json!({"state": ["completed"]}),
        json!({"state": null}),
        json!({}),
        json!({"state": "COMPLETED"}),
    ] {
        let error = expect(server, agent, state, &body.to_string(), 422, "invalid_state").await;
        assert_eq!(error["error"]["valid_values"], json!(STATES));
    }
    expect(server, agent, state, "{\"state\": ", 400, "malformed_json").await;
    expect(
        server,
        agent,
        state,
        &json!({"state": "failed", "error": 5}).to_string(),
        422,
        "invalid_field",
    )
    .await;
    expect(
        server,
        agent,
        state,
        &json!({"state": "failed", "reason": "x"}).to_string(),
        422,
        "unknown_field",
    )
    .await;
    expect(server, agent, state, &big_body(), 413, "payload_too_large").await;
    // starting → pending is not a lifecycle move.
    let error = expect(
        server,
        agent,
        state,
        &json!({"state": "pending"}).to_string(),
        409,
        "invalid_lifecycle",
    )
    .await;
    assert_eq!(error["error"]["from"], "starting");
}

/// Bodies of `POST {record}/phase` that are refused, each with its error.
async fn refuses_bad_phases(server: &TestServer, agent: &str, phase: &str) {
    for body in [
        json!({"phase": "flying"}),
        json!({"phase": {"name": "thinking"}}),
        json!({"phase": 4}),
        json!({"metadata": {}}),
    ] {
        let error = expect(server, agent, phase, &body.to_string(), 422, "invalid_phase").await;
        assert!(
            error["error"]["valid_values"]
                .as_array()
                .unwrap()
                .contains(&json!("websocket_setup"))
        );
    }
    expect(
        server,
        agent,
        phase,
        &json!({"phase": "thinking", "metadata": [1]}).to_string(),
        422,
        "invalid_field",
    )
    .await;
    expect(server, agent, phase, "{{", 400, "malformed_json").await;
    expect(server, agent, phase, &big_body(), 413, "payload_too_large").await;
    let error = expect(
        server,
        agent,
        phase,
        &json!({"phase": "completed"}).to_string(),
        409,
        "invalid_transition",
    )
    .await;
    assert_eq!(error["error"]["allowed"], json!(["websocket_setup", "failed"]));
}

/// Start, heartbeat and breaker-reset calls on a started execution that are refused.
async fn refuses_bad_lifecycle_moves(server: &TestServer, agent: &str, record: &str) {
    // Start again: only a pending execution starts.
    expect(
        server,
        agent,
        &format!("{record}/start"),
        "{}",
        409,
        "invalid_lifecycle",
    )
    .await;
    expect(server, agent, &format!("{record}/start"), "{", 400, "malformed_json").await;
    expect(
        server,
        agent,
        &format!("{record}/heartbeat"),
        "[",
        400,
        "malformed_json",
    )
    .await;
    expect(
        server,
        agent,
        &format!("{record}/heartbeat"),
        &json!({"beat": 1}).to_string(),
        422,
        "unknown_field",
    )
    .await;
    expect(
        server,
        agent,
        &format!("{record}/breaker/reset"),
        "nope",
        400,
        "malformed_json",
    )
    .await;
}

async fn bad_states_phases_and_lifecycle_moves_change_nothing(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let agent = server.token("agent", "t1", None).await;
    let id = server.create_started(&agent, "researcher", "thread", "alice").await;
    let record = format!("/v1/executions/{id}");
    let before = server.get(&record, &agent).await.1;
    let state = format!("{record}/state");
    let phase = format!("{record}/phase");

    refuses_bad_states(&server, &agent, &state).await;
    refuses_bad_phases(&server, &agent, &phase).await;
    refuses_bad_lifecycle_moves(&server, &agent, &record).await;

    assert_eq!(
        server.get(&record, &agent).await.1,
        before,
        "a rejected request changes nothing"
    );

    // A finished execution is final.
    server.ok(&state, &agent, json!({"state": "completed"})).await;
    let finished = server.get(&record, &agent).await.1;
    expect(
        &server,
        &agent,
        &state,
        &json!({"state": "failed"}).to_string(),
        409,
        "terminal",
    )
    .await;
    expect(&server, &agent, &format!("{record}/heartbeat"), "{}", 409, "terminal").await;
    expect(
        &server,
        &agent,
        &phase,
        &json!({"phase": "websocket_setup"}).to_string(),
        409,
        "terminal",
    )
    .await;
    assert_eq!(server.get(&record, &agent).await.1, finished);
}

async fn unknown_ids_are_404_on_every_execution_route(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let agent = server.token("agent", "t1", None).await;
    for id in ["exec_0123456789abcdef0123456789abcdef", "exec_nope", "12"] {
        for (method, suffix, body) in [
            ("GET", "", None),
            ("GET", "/breaker", None),
            ("POST", "/start", Some("{}")),
            ("POST", "/heartbeat", Some("{}")),
            ("POST", "/state", Some("{\"state\": \"failed\"}")),
            ("POST", "/phase", Some("{\"phase\": \"websocket_setup\"}")),
            ("POST", "/breaker/reset", Some("{}")),
        ] {
            let path = format!("/v1/executions/{id}{suffix}");
            let (status, value) = server.request(method, &path, Some(&agent), body).await;
            assert_eq!(
                (status, value["error"]["code"].as_str()),
                (404, Some("not_found")),
                "{method} {path}"
            );
        }
    }
}

/// Bodies of `POST /v1/tokens` that are refused, each with its error.
async fn refuses_bad_token_requests(server: &TestServer, admin: &str) {
    let error = expect(
        server,
        admin,
        "/v1/tokens",
        &json!({"role": "root", "tenant": "t"}).to_string(),
        422,
        "invalid_role",
    )
    .await;
    assert_eq!(
        error["error"]["valid_values"],
        json!(["admin", "agent", "viewer", "metrics"])
    );
    expect(
        server,
        admin,
        "/v1/tokens",
        &json!({"role": "viewer", "tenant": "t"}).to_string(),
        422,
        "invalid_field",
    )
    .await;
    expect(
        server,
        admin,
        "/v1/tokens",
        &json!({"role": "agent"}).to_string(),
        422,
        "missing_field",
    )
    .await;
    expect(server, admin, "/v1/tokens", "{", 400, "malformed_json").await;
    expect(server, admin, "/v1/tokens", &big_body(), 413, "payload_too_large").await;
}

async fn bad_queries_tokens_and_breaker_calls_are_refused(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let admin = server.admin.clone();
    for (query, status, code) in [
        ("?limit=abc", 400, "invalid_query"),
        ("?limit=0", 422, "invalid_field"),
        ("?limit=5000", 422, "invalid_field"),
        ("?state=finished", 422, "invalid_state"),
        ("?active=maybe", 400, "invalid_query"),
        ("?cursor=xyz", 400, "invalid_query"),
        ("?colour=red", 400, "invalid_query"),
    ] {
        let (got, value) = server.get(&format!("/v1/executions{query}"), &admin).await;
        assert_eq!((got, value["error"]["code"].as_str()), (status, Some(code)), "{query}");
    }
    assert_eq!(server.ws_refused("?since=yesterday", Some(&admin)).await, 400);
    assert_eq!(server.ws_refused("?protocol=sse", Some(&admin)).await, 422);

    refuses_bad_token_requests(&server, &admin).await;

    let agent = server.token("agent", "t1", None).await;
    let permit = server.ok("/v1/breakers/openai/acquire", &agent, json!({})).await;
    let permit = permit["permit"].as_str().unwrap().to_owned();
    let record = "/v1/breakers/openai/record";
    let error = expect(
        &server,
        &agent,
        record,
        &json!({"permit": permit, "outcome": "meh"}).to_string(),
        422,
        "invalid_outcome",
    )
    .await;
    assert_eq!(
        error["error"]["valid_values"],
        json!(["success", "failure", "timeout", "ignored"])
    );
    expect(
        &server,
        &agent,
        record,
        &json!({"outcome": "success"}).to_string(),
        422,
        "missing_field",
    )
    .await;
    expect(
        &server,
        &agent,
        record,
        &json!({"permit": "pmt_x", "outcome": "success"}).to_string(),
        404,
        "permit_not_found",
    )
    .await;
    expect(
        &server,
        &agent,
        "/v1/breakers/other/record",
        &json!({"permit": permit, "outcome": "success"}).to_string(),
        404,
        "permit_not_found",
    )
    .await;
    expect(&server, &agent, record, "}", 400, "malformed_json").await;
    expect(
        &server,
        &agent,
        "/v1/breakers/openai/acquire",
        "{",
        400,
        "malformed_json",
    )
    .await;
    // The permit survived every bad attempt and still settles once.
    server
        .ok(record, &agent, json!({"permit": permit, "outcome": "success"}))
        .await;
    expect(
        &server,
        &agent,
        record,
        &json!({"permit": permit, "outcome": "success"}).to_string(),
        404,
        "permit_not_found",
    )
    .await;
}

/// What schemathesis found where the server and its published schemas disagreed: lengths are
/// counted in characters as the schemas (and the messages) say, not in bytes, and a timeout
/// that rounds to no time is refused naming its field (it reached the core as a zero timeout,
/// refused naming a field `timeout` no body has).
async fn limits_count_characters_and_a_timeout_below_a_millisecond_is_refused(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let agent = server.token("agent", "t1", None).await;
    for timeout in [json!(5e-324), json!(0.0005), json!(0)] {
        let body = json!({"agent_name": "a", "thread_id": "t", "user_id": "u", "timeout_seconds": timeout});
        let error = expect(
            &server,
            &agent,
            "/v1/executions",
            &body.to_string(),
            422,
            "invalid_field",
        )
        .await;
        assert_eq!(error["error"]["field"], "timeout_seconds", "{error}");
    }
    let too_long = json!({"agent_name": "a".repeat(257), "thread_id": "t", "user_id": "u"});
    expect(
        &server,
        &agent,
        "/v1/executions",
        &too_long.to_string(),
        422,
        "invalid_field",
    )
    .await;
    let (_, page) = server.get("/v1/executions", &agent).await;
    assert_eq!(page["executions"], json!([]), "nothing was created");

    // 256 two-byte characters: 512 bytes, within the limit of 256 characters.
    let wide = "é".repeat(256);
    let created = server
        .ok(
            "/v1/executions",
            &agent,
            json!({"agent_name": wide, "thread_id": "t", "user_id": "u", "timeout_seconds": 0.001,
                "metadata": null, "tenant": null}),
        )
        .await;
    assert_eq!(
        created["agent_name"].as_str().map(|name| name.chars().count()),
        Some(256)
    );

    // Breaker names: 1 to 256 characters, whatever their size in bytes.
    let name = "é".repeat(256);
    server
        .ok(&format!("/v1/breakers/{name}/acquire"), &agent, json!({}))
        .await;
    let name = "é".repeat(257);
    expect(
        &server,
        &agent,
        &format!("/v1/breakers/{name}/acquire"),
        "{}",
        422,
        "invalid_field",
    )
    .await;
}

on_both_backends!(
    limits_count_characters_and_a_timeout_below_a_millisecond_is_refused,
    creating_with_bad_input_is_refused_and_creates_nothing,
    bad_states_phases_and_lifecycle_moves_change_nothing,
    unknown_ids_are_404_on_every_execution_route,
    bad_queries_tokens_and_breaker_calls_are_refused,
);
