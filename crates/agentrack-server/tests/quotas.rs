//! Quotas, performed as attacks against the real binary: a tenant creating executions past its
//! quota, one tenant spreading executions over ever more users, too many named breakers,
//! permits held past the limit, too many event streams on one token, a huge snapshot, and an
//! overview polled in a loop. Each refusal is 429 `quota_exceeded` with `Retry-After` naming the
//! quota, its limit and the current count (and matches the published `Error` schema); other
//! tenants go on unaffected; nothing stored is lost.
//!
//! Limits are configured small; the tests wait for outcomes, never for a fixed time, and the
//! overview cache is shown by its counters, not by timing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod openapi;

use common::{TestServer, eventually, metric_value};
use openapi::Schemas;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A server with `config` as its TOML file.
async fn start(config: &str) -> (TestServer, tempfile::TempDir) {
    TestServer::start_with_config(config).await
}

/// A POST's status, `Retry-After` header and body.
async fn post(server: &TestServer, path: &str, token: &str, body: Value) -> (u16, Option<u64>, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", server.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().parse().unwrap());
    (status, retry_after, response.json().await.unwrap())
}

fn new_execution(user: &str) -> Value {
    json!({"agent_name": "a", "thread_id": "t", "user_id": user})
}

/// Checks a refusal: 429, `Retry-After`, the quota by name and key, its limit and the count,
/// and the published `Error` schema.
fn assert_refused(schemas: &Schemas, refusal: &(u16, Option<u64>, Value), quota: &str, limit: u64, current: u64) {
    let (status, retry_after, body) = refusal;
    assert_eq!(*status, 429, "{body}");
    assert!(
        retry_after.is_some_and(|seconds| seconds >= 1),
        "Retry-After: {retry_after:?}"
    );
    let error = &body["error"];
    assert_eq!(error["code"], "quota_exceeded", "{body}");
    assert_eq!(error["quota"], quota);
    assert_eq!(error["key"], format!("quotas.{quota}"));
    assert_eq!(error["limit"], limit);
    assert_eq!(error["current"], current);
    assert_eq!(error["retry_after_seconds"].as_u64(), *retry_after);
    schemas.assert_matches("Error", body, "a quota refusal");
}

async fn prometheus(server: &TestServer) -> String {
    reqwest::Client::new()
        .get(format!("{}/metrics", server.url))
        .bearer_auth(&server.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The refusals counted for `quota` in `/metrics`.
async fn refusals(server: &TestServer, quota: &str) -> u64 {
    let text = prometheus(server).await;
    let line = format!("agentrack_quota_refusals_total{{quota=\"{quota}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("no {line} in /metrics"))
        .parse()
        .unwrap()
}

async fn executions_of(server: &TestServer, token: &str) -> Vec<String> {
    let (status, page) = server.get("/v1/executions?limit=100", token).await;
    assert_eq!(status, 200, "{page}");
    page["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["execution_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_tenant_past_its_alive_executions_gets_429_and_another_tenant_is_unaffected() {
    let (mut server, _dir) = start("[quotas]\nexecutions_per_tenant = 3\n").await;
    let schemas = Schemas::published(&server).await;
    let acme = server.token("agent", "acme", None).await;
    let globex = server.token("agent", "globex", None).await;
    let mut created = Vec::new();
    for _ in 0..3 {
        created.push(server.create(&acme, "a", "t", "alice").await);
    }
    let refused = post(&server, "/v1/executions", &acme, new_execution("alice")).await;
    assert_refused(&schemas, &refused, "executions_per_tenant", 3, 3);
    // An admin creating in acme meets acme's quota too.
    let mut as_admin = new_execution("alice");
    as_admin["tenant"] = json!("acme");
    let refused = post(&server, "/v1/executions", &server.admin, as_admin).await;
    assert_refused(&schemas, &refused, "executions_per_tenant", 3, 3);
    // globex is not acme.
    for _ in 0..3 {
        server.create(&globex, "a", "t", "bob").await;
    }
    assert_eq!(
        executions_of(&server, &acme).await.len(),
        3,
        "the refused ones were never stored"
    );

    // The quota counts alive executions: one finishing makes room.
    server
        .ok(
            &format!("/v1/executions/{}/state", created[0]),
            &acme,
            json!({"state": "cancelled"}),
        )
        .await;
    created.push(server.create(&acme, "a", "t", "alice").await);
    assert_eq!(refusals(&server, "executions_per_tenant").await, 2);

    // After a restart the count comes back from the store: still three alive, still refused.
    server.kill();
    server.restart();
    let refused = post(&server, "/v1/executions", &acme, new_execution("alice")).await;
    assert_refused(&schemas, &refused, "executions_per_tenant", 3, 3);
    let mut stored = executions_of(&server, &acme).await;
    stored.sort();
    created.sort();
    assert_eq!(stored, created, "nothing stored is lost");
}

#[tokio::test]
async fn a_tenant_spreading_executions_over_new_users_is_refused_past_its_users() {
    let (server, _dir) = start("[quotas]\nusers_per_tenant = 2\n").await;
    let schemas = Schemas::published(&server).await;
    let acme = server.token("agent", "acme", None).await;
    let globex = server.token("agent", "globex", None).await;
    let first = server.create(&acme, "a", "t", "u1").await;
    server.create(&acme, "a", "t", "u2").await;
    let refused = post(&server, "/v1/executions", &acme, new_execution("u3")).await;
    assert_refused(&schemas, &refused, "users_per_tenant", 2, 2);
    // Known users go on, finished or not, and other tenants have their own.
    server
        .ok(
            &format!("/v1/executions/{first}/state"),
            &acme,
            json!({"state": "cancelled"}),
        )
        .await;
    server.create(&acme, "a", "t", "u1").await;
    server.create(&globex, "a", "t", "u3").await;
    assert_eq!(executions_of(&server, &acme).await.len(), 3);
    assert_eq!(refusals(&server, "users_per_tenant").await, 1);
}

async fn acquire(server: &TestServer, token: &str, name: &str) -> (u16, Option<u64>, Value) {
    post(server, &format!("/v1/breakers/{name}/acquire"), token, json!({})).await
}

async fn granted(server: &TestServer, token: &str, name: &str) -> String {
    let (status, _, body) = acquire(server, token, name).await;
    assert_eq!(status, 200, "{body}");
    body["permit"].as_str().unwrap().to_owned()
}

async fn record(server: &TestServer, token: &str, name: &str, permit: &str, outcome: &str) -> Value {
    server
        .ok(
            &format!("/v1/breakers/{name}/record"),
            token,
            json!({"permit": permit, "outcome": outcome}),
        )
        .await
}

async fn breakers_of(server: &TestServer, token: &str) -> Vec<(String, String)> {
    let (_, list) = server.get("/v1/breakers", token).await;
    let mut breakers: Vec<(String, String)> = list["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_owned(),
                b["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    breakers.sort();
    breakers
}

#[tokio::test]
async fn named_breakers_are_bounded_per_tenant_and_only_idle_closed_unheld_ones_are_evicted() {
    let (server, _dir) = start("[quotas]\nbreakers_per_tenant = 3\nbreaker_idle = \"300ms\"\n").await;
    let schemas = Schemas::published(&server).await;
    let acme = server.token("agent", "acme", None).await;
    let globex = server.token("agent", "globex", None).await;
    // "open": three failures open it. "held": a permit is held on it. "done": closed, unheld.
    for _ in 0..3 {
        let permit = granted(&server, &acme, "open").await;
        record(&server, &acme, "open", &permit, "failure").await;
    }
    let held = granted(&server, &acme, "held").await;
    let permit = granted(&server, &acme, "done").await;
    record(&server, &acme, "done", &permit, "success").await;

    let refused = acquire(&server, &acme, "fourth").await;
    assert_refused(&schemas, &refused, "breakers_per_tenant", 3, 3);
    granted(&server, &globex, "fourth").await;

    // "done" was used last, yet it is the one evicted once idle: the open one and the one with
    // a permit held stay, however long unused.
    eventually("the idle closed breaker is evicted", || async {
        metric_value(&prometheus(&server).await, "agentrack_breakers_evicted_total") == Some(1)
    })
    .await;
    assert_eq!(
        breakers_of(&server, &acme).await,
        [("held".into(), "closed".into()), ("open".into(), "open".into())]
    );
    granted(&server, &acme, "fourth").await;
    let refused = acquire(&server, &acme, "fifth").await;
    assert_refused(&schemas, &refused, "breakers_per_tenant", 3, 3);
    // The held permit is still good, and the open breaker still refuses calls.
    assert_eq!(
        record(&server, &acme, "held", &held, "success").await["state"],
        "closed"
    );
    let (status, _, body) = acquire(&server, &acme, "open").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("circuit_open")),
        "{body}"
    );
    assert!(refusals(&server, "breakers_per_tenant").await >= 2);
}

#[tokio::test]
async fn permits_held_past_the_limit_are_refused_until_one_is_recorded() {
    let (server, _dir) = start("[quotas]\npermits_per_tenant = 2\n").await;
    let schemas = Schemas::published(&server).await;
    let acme = server.token("agent", "acme", None).await;
    let globex = server.token("agent", "globex", None).await;
    let first = granted(&server, &acme, "openai").await;
    granted(&server, &acme, "anthropic").await;
    let refused = acquire(&server, &acme, "openai").await;
    assert_refused(&schemas, &refused, "permits_per_tenant", 2, 2);
    granted(&server, &globex, "openai").await;
    // The refusal took nothing: recording the first permit makes room for exactly one more.
    record(&server, &acme, "openai", &first, "success").await;
    granted(&server, &acme, "openai").await;
    let refused = acquire(&server, &acme, "openai").await;
    assert_refused(&schemas, &refused, "permits_per_tenant", 2, 2);
    assert_eq!(refusals(&server, "permits_per_tenant").await, 2);
}

/// A WebSocket handshake's refusal: status, `Retry-After` and body. `token` is a bearer token,
/// or `?ticket=…`.
async fn ws_refusal(server: &TestServer, token: &str) -> (u16, Option<u64>, Value) {
    let (query, bearer) = match token.strip_prefix('?') {
        Some(_) => (token, None),
        None => ("", Some(token)),
    };
    let url = format!("{}/v1/events{query}", server.url.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    if let Some(token) = bearer {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|value| value.to_str().unwrap().parse().unwrap());
            let body = serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            (response.status().as_u16(), retry_after, body)
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("the handshake was accepted"),
    }
}

#[tokio::test]
async fn too_many_event_streams_on_one_token_are_refused_at_the_handshake() {
    let (server, _dir) = start("[quotas]\nsubscribers_per_token = 2\n").await;
    let schemas = Schemas::published(&server).await;
    let agent = server.token("agent", "acme", None).await;
    let other = server.token("agent", "acme", None).await;
    let first = server.ws("", Some(&agent)).await;
    let mut second = server.ws("", Some(&agent)).await;
    let refused = ws_refusal(&server, &agent).await;
    assert_refused(&schemas, &refused, "subscribers_per_token", 2, 2);
    // A ticket made for the token counts against the token.
    let ticket = server.ok("/v1/events/ticket", &agent, json!({})).await;
    let refused = ws_refusal(&server, &format!("?ticket={}", ticket["ticket"].as_str().unwrap())).await;
    assert_refused(&schemas, &refused, "subscribers_per_token", 2, 2);
    // Another token of the same tenant has its own streams, and they get the events.
    let mut third = server.ws("", Some(&other)).await;
    let id = server.create(&agent, "a", "t", "u").await;
    for stream in [&mut second, &mut third] {
        let created = stream
            .until(5 * common::SECOND, |e| e["type"] == "execution_created")
            .await;
        assert_eq!(created.last().unwrap()["execution_id"], id.as_str());
    }
    // A stream that closes gives its place back.
    first.close().await;
    eventually("the closed stream's place is free", || async {
        let url = format!("{}/v1/events", server.url.replacen("http://", "ws://", 1));
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {agent}").parse().unwrap());
        tokio_tungstenite::connect_async(request).await.is_ok()
    })
    .await;
    assert!(refusals(&server, "subscribers_per_token").await >= 1);
}

#[tokio::test]
async fn a_huge_snapshot_is_bounded_and_the_rest_is_paged_from_the_list() {
    let (server, _dir) = start("[quotas]\nsnapshot_executions = 3\n").await;
    let schemas = Schemas::published(&server).await;
    let agent = server.token("agent", "acme", None).await;
    let mut created = Vec::new();
    for _ in 0..7 {
        created.push(server.create(&agent, "a", "t", "u").await);
    }
    let finished = created.remove(0);
    server
        .ok(
            &format!("/v1/executions/{finished}/state"),
            &agent,
            json!({"state": "cancelled"}),
        )
        .await;
    let mut stream = server.ws("?snapshot=true", Some(&agent)).await;
    let snapshot = stream
        .until(5 * common::SECOND, |e| e["type"] == "snapshot")
        .await
        .pop()
        .unwrap();
    schemas.assert_matches("SnapshotMessage", &snapshot, "a truncated snapshot");
    let shown: Vec<String> = snapshot["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["execution_id"].as_str().unwrap().to_owned())
        .collect();
    // Newest first: ids sort by creation.
    let newest: Vec<String> = created.iter().rev().take(3).cloned().collect();
    assert_eq!(shown, newest);
    assert_eq!(snapshot["truncated"], true);
    assert_eq!(snapshot["next_cursor"], newest[2].as_str());
    let page = &snapshot["next_page"];
    assert_eq!(page["path"], "/v1/executions");
    let query: Vec<String> = page["query"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, value)| format!("{name}={}", value.as_str().unwrap()))
        .collect();
    let (status, rest) = server.get(&format!("/v1/executions?{}", query.join("&")), &agent).await;
    assert_eq!(status, 200, "{rest}");
    let rest: Vec<String> = rest["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["execution_id"].as_str().unwrap().to_owned())
        .collect();
    let older: Vec<String> = created.iter().rev().skip(3).cloned().collect();
    assert_eq!(
        rest, older,
        "the alive ones the snapshot left out, and not the finished one"
    );

    // A snapshot that fits says so.
    let few = server.create(&agent, "a", "t2", "u").await;
    let mut small = server.ws("?snapshot=true&thread_id=t2", Some(&agent)).await;
    let snapshot = small
        .until(5 * common::SECOND, |e| e["type"] == "snapshot")
        .await
        .pop()
        .unwrap();
    assert_eq!(snapshot["executions"].as_array().unwrap().len(), 1);
    assert_eq!(snapshot["executions"][0]["execution_id"], few.as_str());
    assert_eq!(snapshot["truncated"], false);
    assert!(snapshot["next_cursor"].is_null() && snapshot["next_page"].is_null());
}

#[tokio::test]
async fn a_hammered_overview_is_walked_once_per_scope_and_window() {
    let (server, _dir) = start("[quotas]\noverview_cache = \"1h\"\n").await;
    let acme = server.token("agent", "acme", None).await;
    let globex = server.token("agent", "globex", None).await;
    server.create(&acme, "a", "t", "u").await;
    let counter = |text: &str, name: &str| metric_value(text, name).unwrap();
    let before = prometheus(&server).await;
    let (walks, hits) = (
        counter(&before, "agentrack_overview_walks_total"),
        counter(&before, "agentrack_overview_cache_hits_total"),
    );
    for _ in 0..50 {
        let (status, overview) = server.get("/v1/overview", &acme).await;
        assert_eq!(status, 200);
        assert_eq!(overview["counts"]["total"], 1);
    }
    let after = prometheus(&server).await;
    assert_eq!(counter(&after, "agentrack_overview_walks_total"), walks + 1);
    assert_eq!(counter(&after, "agentrack_overview_cache_hits_total"), hits + 49);

    // Each scope is walked for itself: globex never sees acme's numbers.
    let (_, overview) = server.get("/v1/overview", &globex).await;
    assert_eq!(overview["counts"]["total"], 0);
    assert_eq!(overview["scope"]["tenant"], "globex");
    let last = prometheus(&server).await;
    assert_eq!(counter(&last, "agentrack_overview_walks_total"), walks + 2);
}

#[tokio::test]
async fn an_overview_since_an_event_reflects_it_even_within_the_cache_window() {
    let (server, _dir) = start("[quotas]\noverview_cache = \"1h\"\n").await;
    let acme = server.token("agent", "acme", None).await;
    server.create(&acme, "a", "t", "u").await;
    let (_, first) = server.get("/v1/overview", &acme).await;
    assert_eq!(first["counts"]["total"], 1);

    let mut stream = server.ws("", Some(&acme)).await;
    let second = server.create(&acme, "a", "t", "u").await;
    let created = stream
        .until(5 * common::SECOND, |e| {
            e["type"] == "execution_created" && e["execution_id"] == second.as_str()
        })
        .await
        .pop()
        .unwrap();
    let cursor = created["cursor"].as_str().unwrap().to_owned();

    // Without `since` the window's walk is reused, from before the event; since it, not.
    let (_, cached) = server.get("/v1/overview", &acme).await;
    assert_eq!(cached["counts"]["total"], 1, "the cached walk");
    let counter = |text: &str, name: &str| metric_value(text, name).unwrap();
    let walks = counter(&prometheus(&server).await, "agentrack_overview_walks_total");
    let (status, fresh) = server.get(&format!("/v1/overview?since={cursor}"), &acme).await;
    assert_eq!(status, 200, "{fresh}");
    assert_eq!(fresh["counts"]["total"], 2);
    // That walk covers the cursor: reused for it, and for the plain read.
    for path in [format!("/v1/overview?since={cursor}"), "/v1/overview".to_owned()] {
        let (_, again) = server.get(&path, &acme).await;
        assert_eq!(again["counts"]["total"], 2, "{path}");
    }
    let metrics = prometheus(&server).await;
    assert_eq!(counter(&metrics, "agentrack_overview_walks_total"), walks + 1);

    for (query, parameter, says) in [
        ("since=soon", "since", "not a cursor"),
        ("colour=red", "colour", "valid: since"),
    ] {
        let (status, refused) = server.get(&format!("/v1/overview?{query}"), &acme).await;
        assert_eq!(status, 400, "{query}: {refused}");
        assert_eq!(refused["error"]["code"], "invalid_query");
        assert_eq!(refused["error"]["parameter"], parameter);
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{query}: {message}");
    }
}

#[tokio::test]
async fn the_document_lists_the_quota_refusals_with_retry_after() {
    let server = TestServer::start().await;
    let (_, document) = server.request("GET", "/openapi.json", None, None).await;
    for (path, method) in [
        ("/v1/executions", "post"),
        ("/v1/breakers/{name}/acquire", "post"),
        ("/v1/events", "get"),
    ] {
        let refused = &document["paths"][path][method]["responses"]["429"];
        assert_eq!(
            refused["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Error",
            "{path}: {refused}"
        );
        assert!(refused["headers"]["Retry-After"].is_object(), "{path}: {refused}");
    }
}
