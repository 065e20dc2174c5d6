//! The dashboard's server side against the real binary: the page and its assets (content types,
//! CSP, revalidation), `/v1/overview` and its scoping, and the event stream's single-use
//! `?ticket=` that browsers use.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::{Backend, SECOND, TestServer};
use serde_json::json;

async fn raw(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!("{}{path}", server.url));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn the_page_and_its_assets_are_served_from_the_binary_with_a_strict_policy(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let page = raw(&server, "/", &[]).await;
    assert_eq!(page.status(), 200);
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    let csp = header(&page, "content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    assert_eq!(header(&page, "referrer-policy"), "no-referrer");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/assets/app.js">"#));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external resources"
    );

    for (path, content_type) in [
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/views/overview.js", "text/javascript; charset=utf-8"),
        ("/assets/style.css", "text/css; charset=utf-8"),
        ("/assets/icon.svg", "image/svg+xml"),
    ] {
        let asset = raw(&server, path, &[]).await;
        assert_eq!(asset.status(), 200, "{path}");
        assert_eq!(header(&asset, "content-type"), content_type, "{path}");
        assert_eq!(header(&asset, "cache-control"), "no-cache", "{path}");
        assert!(!header(&asset, "content-security-policy").is_empty(), "{path}");
    }
    let missing = raw(&server, "/assets/nope.js", &[]).await;
    assert_eq!(missing.status(), 404);
    // The API's own answers are untouched by the dashboard's routes.
    let (status, body) = server.request("GET", "/v1/nope", None, None).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "route_not_found");
    let (status, _) = server.request("POST", "/", None, Some("{}")).await;
    assert_eq!(status, 405);
}

async fn an_unchanged_asset_is_revalidated_with_its_etag(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let first = raw(&server, "/assets/app.js", &[]).await;
    let etag = header(&first, "etag");
    assert!(etag.starts_with('"') && etag.len() > 10, "{etag:?}");
    let again = raw(&server, "/assets/app.js", &[("if-none-match", &etag)]).await;
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.unwrap().is_empty());
    let other = raw(&server, "/assets/app.js", &[("if-none-match", "\"stale\"")]).await;
    assert_eq!(other.status(), 200);
}

async fn the_overview_needs_a_token_and_is_in_the_openapi_document(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let (status, body) = server.request("GET", "/v1/overview", None, None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (_, spec) = server.request("GET", "/openapi.json", None, None).await;
    assert_eq!(spec["paths"]["/v1/overview"]["get"]["operationId"], "getOverview");
    assert!(spec["components"]["schemas"]["Overview"]["properties"]["incidents"].is_object());
    // The dashboard is not part of the API.
    assert!(spec["paths"]["/"].is_null());
}

/// One completed (golden path), one failed and one running execution of acme; one of another
/// tenant. Returns (agent token, ids).
async fn seed(server: &TestServer) -> (String, [String; 3]) {
    let agent = server.token("agent", "acme", None).await;
    let other = server.token("agent", "globex", None).await;
    let done = server.create(&agent, "researcher", "thread-1", "alice").await;
    server.golden_path(&agent, &done).await;
    let failed = server.create_started(&agent, "researcher", "thread-2", "alice").await;
    server
        .ok(
            &format!("/v1/executions/{failed}/state"),
            &agent,
            json!({"state": "failed", "error": "boom"}),
        )
        .await;
    let running = server.create_started(&agent, "planner", "thread-3", "bob").await;
    server.heartbeat(&agent, &running).await;
    server.create(&other, "researcher", "thread-9", "alice").await;
    (agent, [done, failed, running])
}

async fn the_overview_counts_the_callers_tenant_by_state_with_rates_and_phase_percentiles(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let (agent, _) = seed(&server).await;
    let (status, overview) = server.get("/v1/overview", &agent).await;
    assert_eq!(status, 200, "{overview}");
    assert_eq!(overview["scope"]["role"], "agent");
    assert_eq!(overview["scope"]["tenant"], "acme");
    let counts = &overview["counts"];
    assert_eq!(counts["total"], 3, "globex's execution is not counted: {counts}");
    assert_eq!(counts["active"], 1);
    assert_eq!(counts["completed"], 1);
    assert_eq!(counts["failed"], 1);
    assert_eq!(
        overview["alive_by_state"],
        json!({"pending": 0, "starting": 0, "running": 1, "completing": 0})
    );
    assert_eq!(overview["success_rate"], 0.5);
    assert_eq!(overview["failure_rate"], 0.5);
    let phases = overview["phase_durations_ms"].as_object().unwrap();
    for phase in ["created", "websocket_setup", "thinking", "tool_execution", "completing"] {
        assert_eq!(phases[phase]["count"], 1, "{phase}: {phases:?}");
    }
    assert_eq!(overview["incidents"]["dead"].as_array().unwrap().len(), 60);
    assert_eq!(overview["incidents"]["bucket_seconds"], 60);
    assert!(overview["stuck"].as_array().unwrap().is_empty());
    let cursor = overview["event_cursor"].as_str().unwrap();
    assert!(
        !cursor.is_empty() && cursor != "0",
        "the read's position in the log: {cursor}"
    );
    assert!(overview["heartbeat_timeout_seconds"].as_f64().unwrap() > 0.0);
}

async fn a_viewer_sees_only_its_own_users_numbers_and_no_breakers(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let (agent, _) = seed(&server).await;
    // A named breaker of acme, opened.
    for _ in 0..3 {
        let grant = server.ok("/v1/breakers/openai:gpt-4o/acquire", &agent, json!({})).await;
        server
            .ok(
                "/v1/breakers/openai:gpt-4o/record",
                &agent,
                json!({"permit": grant["permit"], "outcome": "failure"}),
            )
            .await;
    }
    let (_, as_agent) = server.get("/v1/overview", &agent).await;
    let breakers = as_agent["breakers"].as_array().unwrap();
    assert_eq!(breakers.len(), 1, "{breakers:?}");
    assert_eq!(breakers[0]["name"], "openai:gpt-4o");
    assert_eq!(breakers[0]["state"], "open");

    let carol = server.token("viewer", "acme", Some("carol")).await;
    let (status, overview) = server.get("/v1/overview", &carol).await;
    assert_eq!(status, 200);
    assert_eq!(overview["scope"]["user_id"], "carol");
    assert_eq!(overview["counts"]["total"], 0, "{overview}");
    assert_eq!(overview["alive_by_state"]["running"], 0);
    assert!(overview["phase_durations_ms"].as_object().unwrap().is_empty());
    assert!(overview["breakers"].as_array().unwrap().is_empty());
    assert!(overview["execution_breakers"].as_array().unwrap().is_empty());

    let bob = server.token("viewer", "acme", Some("bob")).await;
    let (_, overview) = server.get("/v1/overview", &bob).await;
    assert_eq!(overview["counts"]["total"], 1);
    assert_eq!(overview["alive_by_state"]["running"], 1);
    assert!(overview["breakers"].as_array().unwrap().is_empty());

    // An admin sees every tenant.
    let (_, overview) = server.get("/v1/overview", &server.admin).await;
    assert_eq!(overview["counts"]["total"], 4);
    assert!(overview["scope"]["tenant"].is_null());
}

async fn dead_and_timed_out_executions_land_in_the_current_minute(backend: Backend) {
    let server = TestServer::start_on(backend, &["--heartbeat-timeout", "400ms", "--monitor-interval", "50ms"]).await;
    let agent = server.token("agent", "acme", None).await;
    let mut stream = server.ws("", Some(&agent)).await;
    // One that stops heartbeating (dead), one that runs past a 0.2 s timeout (timed out).
    let silent = server.create(&agent, "researcher", "thread-1", "alice").await;
    let slow = server
        .ok(
            "/v1/executions",
            &agent,
            json!({"agent_name": "researcher", "thread_id": "thread-2", "user_id": "alice", "timeout_seconds": 0.2}),
        )
        .await;
    let slow = slow["execution_id"].as_str().unwrap().to_owned();
    for id in [&silent, &slow] {
        server.start_execution(&agent, id).await;
    }
    let mut finished = 0;
    stream
        .until(5 * SECOND, |event| {
            if ["dead", "timed_out"].contains(&event["type"].as_str().unwrap_or("")) {
                finished += 1;
            }
            finished == 2
        })
        .await;

    let (_, overview) = server.get("/v1/overview", &agent).await;
    let series = |name: &str| -> Vec<u64> {
        overview["incidents"][name]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap())
            .collect()
    };
    let (dead, timeout) = (series("dead"), series("timeout"));
    assert_eq!(dead.len(), 60);
    let total: u64 = dead.iter().chain(&timeout).sum();
    assert_eq!(total, 2, "{overview}");
    // Both within the last two minutes: the window ends with the current minute.
    let recent: u64 = dead[58..].iter().chain(&timeout[58..]).sum();
    assert_eq!(recent, 2, "{overview}");
    let counted = overview["counts"]["dead"].as_u64().unwrap() + overview["counts"]["timeout"].as_u64().unwrap();
    assert_eq!(counted, 2);
    assert_eq!(overview["failure_rate"], 1.0);
}

async fn browsers_open_the_event_stream_with_a_single_use_ticket(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let agent = server.token("agent", "acme", None).await;
    let viewer = server.token("viewer", "acme", Some("bob")).await;
    let agents_ticket = server.ticket(&agent).await;
    let bobs_ticket = server.ticket(&viewer).await;
    let mut stream = server.ws(&format!("?since=0&ticket={agents_ticket}"), None).await;
    let mut bobs = server.ws(&format!("?since=0&ticket={bobs_ticket}"), None).await;
    let id = server.create(&agent, "researcher", "thread-1", "alice").await;
    let theirs = server.create(&agent, "researcher", "thread-2", "bob").await;
    let events = stream
        .until(5 * SECOND, |event| event["execution_id"] == theirs.as_str())
        .await;
    assert_eq!(events[0]["execution_id"], id.as_str());
    // The ticket carries its token's scope: the viewer's stream has bob's execution and nothing
    // of alice's.
    let seen = bobs
        .until(5 * SECOND, |event| event["execution_id"] == theirs.as_str())
        .await;
    assert!(seen.iter().all(|event| event["user_id"] == "bob"), "{seen:?}");
    // A ticket opens one connection: used again, even while its stream is open, it is refused.
    assert_eq!(server.ws_refused(&format!("?ticket={bobs_ticket}"), None).await, 401);
    assert_eq!(
        server
            .ws_refused(&format!("?since=0&ticket={agents_ticket}"), None)
            .await,
        401
    );
    // Tokens in URLs are refused, known or not, with a message saying what to do instead.
    assert_eq!(server.ws_refused(&format!("?token={agent}"), None).await, 401);
    assert_eq!(server.ws_refused("?token=agt_unknown", None).await, 401);
    let (status, body) = server
        .request("GET", &format!("/v1/events?token={agent}"), None, None)
        .await;
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("POST /v1/events/ticket"),
        "{body}"
    );
    assert_eq!(
        server
            .ws_refused(&format!("?ticket=tkt_{}", "0".repeat(64)), None)
            .await,
        401
    );
    assert_eq!(server.ws_refused("", None).await, 401);
    // A metrics token may not get a ticket (it reads nothing but /metrics).
    let metrics = server.token("metrics", "ops", None).await;
    assert_eq!(
        server
            .request("POST", "/v1/events/ticket", Some(&metrics), None)
            .await
            .0,
        403
    );
}

on_both_backends!(
    the_page_and_its_assets_are_served_from_the_binary_with_a_strict_policy,
    an_unchanged_asset_is_revalidated_with_its_etag,
    the_overview_needs_a_token_and_is_in_the_openapi_document,
    the_overview_counts_the_callers_tenant_by_state_with_rates_and_phase_percentiles,
    a_viewer_sees_only_its_own_users_numbers_and_no_breakers,
    dead_and_timed_out_executions_land_in_the_current_minute,
    browsers_open_the_event_stream_with_a_single_use_ticket,
);
