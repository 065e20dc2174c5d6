//! Tokens against the real server: listing without secrets, revocation effective on the next
//! request (on every node of a cluster), expiry, the last admin token, single-use event-stream
//! tickets, and the cache of refused tokens that keeps a flood of unknown tokens off the store.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::cluster::TestCluster;
use common::{Backend, SECOND, TestServer, metric_value, within};
use serde_json::{Value, json};

/// Every token the server lists.
async fn listed(server: &TestServer) -> Vec<Value> {
    let (status, body) = server.get("/v1/tokens", &server.admin).await;
    assert_eq!(status, 200, "{body}");
    body["tokens"].as_array().unwrap().clone()
}

/// The listed token whose id is `id`.
async fn listed_one(server: &TestServer, id: &str) -> Value {
    listed(server)
        .await
        .into_iter()
        .find(|token| token["id"] == id)
        .unwrap_or_else(|| panic!("token {id} is not listed"))
}

/// Makes a token with `body`; returns (token, id).
async fn made(server: &TestServer, body: Value) -> (String, String) {
    let created = server.ok("/v1/tokens", &server.admin, body).await;
    (
        created["token"].as_str().unwrap().to_owned(),
        created["id"].as_str().unwrap().to_owned(),
    )
}

async fn revoke(server: &TestServer, id: &str, token: &str) -> (u16, Value) {
    server
        .request("DELETE", &format!("/v1/tokens/{id}"), Some(token), None)
        .await
}

fn counter(text: &str, name: &str) -> u64 {
    metric_value(text, name).unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

async fn tokens_are_listed_without_secrets_and_revoked_at_once(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let (agent, id) = made(&server, json!({"role": "agent", "tenant": "acme", "label": "worker-1"})).await;
    assert!(id.starts_with("tok_"), "{id}");
    // Used once, so that a cached grant is what the revocation has to beat.
    assert_eq!(server.get("/v1/executions", &agent).await.0, 200);

    let entry = listed_one(&server, &id).await;
    assert_eq!(entry["role"], "agent");
    assert_eq!(entry["tenant"], "acme");
    assert_eq!(entry["label"], "worker-1");
    assert_eq!(entry["revoked_at"], Value::Null);
    assert_eq!(entry["expires_at"], Value::Null);
    assert_eq!(entry["active"], true);
    // Nothing secret: neither a token nor its hash appears in the list.
    let text = serde_json::to_string(&listed(&server).await).unwrap();
    let hash = agentrack_server::auth::hash_token(&agent);
    assert!(!text.contains(&agent) && !text.contains(&hash) && !text.contains(&server.admin));

    // A ticket made before the revocation dies with its token.
    let ticket = server.ticket(&agent).await;
    let (status, revoked) = revoke(&server, &id, &server.admin).await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["id"], id.as_str());
    assert_eq!(revoked["active"], false);
    let revoked_at = revoked["revoked_at"].clone();
    assert!(revoked_at.is_string(), "{revoked}");
    // The very next request is refused.
    let (status, body) = server.get("/v1/executions", &agent).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["message"], "unknown or revoked token");
    assert_eq!(server.ws_refused(&format!("?ticket={ticket}"), None).await, 401);
    assert_eq!(listed_one(&server, &id).await["revoked_at"], revoked_at);
    // Revoking again changes nothing; an unknown id is a 404.
    let (status, again) = revoke(&server, &id, &server.admin).await;
    assert_eq!((status, &again["revoked_at"]), (200, &revoked_at));
    let (status, body) = revoke(&server, "tok_0000000000000000", &server.admin).await;
    assert_eq!(status, 404, "{body}");
    // Still revoked after a restart (it is the store that says so, not this process's memory).
    let mut server = server;
    server.terminate();
    server.restart();
    assert_eq!(server.get("/v1/executions", &agent).await.0, 401);
}

async fn the_last_valid_admin_token_cannot_be_revoked(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let first = listed(&server).await;
    assert_eq!(first.len(), 1, "{first:?}");
    let first_id = first[0]["id"].as_str().unwrap().to_owned();
    let (status, body) = revoke(&server, &first_id, &server.admin).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "last_admin_token");
    assert_eq!(server.get("/v1/tokens", &server.admin).await.0, 200);
    // An expired admin token does not count as another.
    let (_, expiring_id) = made(
        &server,
        json!({"role": "admin", "tenant": "ops", "expires_in_seconds": 0.2}),
    )
    .await;
    within(10 * SECOND, "the expiring admin token expires", || async {
        listed_one(&server, &expiring_id).await["active"] == false
    })
    .await;
    assert_eq!(revoke(&server, &first_id, &server.admin).await.0, 409);
    // With a second admin token, the first can go; then the second is the last.
    let (second, second_id) = made(&server, json!({"role": "admin", "tenant": "ops"})).await;
    assert_eq!(revoke(&server, &first_id, &second).await.0, 200);
    assert_eq!(server.get("/v1/tokens", &server.admin).await.0, 401);
    assert_eq!(revoke(&server, &second_id, &second).await.0, 409);
}

async fn an_expired_token_is_refused(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let (agent, id) = made(
        &server,
        json!({"role": "agent", "tenant": "acme", "expires_in_seconds": 0.5}),
    )
    .await;
    let entry = listed_one(&server, &id).await;
    assert!(entry["expires_at"].is_string(), "{entry}");
    assert_eq!(server.get("/v1/executions", &agent).await.0, 200);
    within(10 * SECOND, "the token expires", || async {
        let (status, body) = server.get("/v1/executions", &agent).await;
        status == 401 && body["error"]["message"] == "the token has expired"
    })
    .await;
    assert_eq!(listed_one(&server, &id).await["active"], false);
    // Bad expiries are refused by name, and make no token.
    for bad in [json!(0), json!(-5), json!("soon"), json!(1e12)] {
        let (status, body) = server
            .post(
                "/v1/tokens",
                &server.admin,
                json!({"role": "agent", "tenant": "acme", "expires_in_seconds": bad}),
            )
            .await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(body["error"]["field"], "expires_in_seconds", "{body}");
    }
    assert_eq!(listed(&server).await.len(), 2);
}

async fn a_flood_of_unknown_tokens_costs_one_store_query_per_distinct_token(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let before = server.prometheus().await;
    let unknown: Vec<String> = (0..5).map(|n| format!("agt_{n:064x}")).collect();
    for round in 0..40 {
        for token in &unknown {
            let (status, body) = server.get("/v1/executions", token).await;
            assert_eq!(status, 401, "round {round}: {body}");
        }
    }
    // Not a token's shape at all: refused without a query.
    for _ in 0..50 {
        assert_eq!(server.get("/v1/executions", "agt_short").await.0, 401);
    }
    let after = server.prometheus().await;
    let delta = |name: &str| counter(&after, name) - counter(&before, name);
    assert_eq!(delta("agentrack_token_store_lookups_total"), 5, "{after}");
    assert_eq!(delta("agentrack_token_refused_cached_total"), 195);
    assert_eq!(delta("agentrack_token_refused_malformed_total"), 50);
    assert_eq!(counter(&after, "agentrack_token_refused_cache_entries"), 5);
    // A token made now still works at once (its creation forgets any refusal of it).
    let agent = server.token("agent", "acme", None).await;
    assert_eq!(server.get("/v1/executions", &agent).await.0, 200);
}

async fn the_refused_cache_is_bounded_in_size_and_time(backend: Backend) {
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("agentrack.toml");
    std::fs::write(&file, "[tokens]\nrefused_cache_size = 3\nrefused_cache_ttl = \"1s\"\n").unwrap();
    let server = TestServer::start_on(backend, &["--config", file.to_str().unwrap()]).await;
    for n in 0..10 {
        assert_eq!(server.get("/v1/executions", &format!("agt_{n:064x}")).await.0, 401);
    }
    let text = server.prometheus().await;
    assert_eq!(counter(&text, "agentrack_token_refused_cache_entries"), 3, "{text}");
    // A refusal is remembered for the TTL only: past it (a hard bound, not a race), the same
    // token is looked up again.
    let lookups = || async { counter(&server.prometheus().await, "agentrack_token_store_lookups_total") };
    let unknown = format!("agt_{:064x}", 99);
    assert_eq!(server.get("/v1/executions", &unknown).await.0, 401);
    let first = lookups().await;
    assert_eq!(server.get("/v1/executions", &unknown).await.0, 401);
    assert_eq!(lookups().await, first, "remembered");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(server.get("/v1/executions", &unknown).await.0, 401);
    assert_eq!(lookups().await, first + 1, "forgotten after the TTL");
}

async fn a_ticket_opens_one_stream_and_expires(backend: Backend) {
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("agentrack.toml");
    std::fs::write(&file, "[tokens]\nticket_ttl = \"500ms\"\n").unwrap();
    let server = TestServer::start_on(backend, &["--config", file.to_str().unwrap()]).await;
    let agent = server.token("agent", "acme", None).await;
    let (status, body) = server.request("POST", "/v1/events/ticket", Some(&agent), None).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["expires_in_seconds"], 0.5);
    let ticket = body["ticket"].as_str().unwrap().to_owned();
    assert!(ticket.starts_with("tkt_"), "{ticket}");
    // Refused for its other parameters, a request leaves its ticket for the corrected one.
    for (query, status, code) in [
        ("protocol=sse", 422, "invalid_field"),
        ("colour=red", 400, "invalid_query"),
        ("since=soon", 400, "invalid_query"),
        ("snapshot=maybe", 400, "invalid_query"),
    ] {
        let (got, body) = server
            .request("GET", &format!("/v1/events?ticket={ticket}&{query}"), None, None)
            .await;
        assert_eq!(got, status, "{query}: {body}");
        assert_eq!(body["error"]["code"], code, "{query}: {body}");
    }
    // Without a ticket that could be real, the request is unauthenticated whatever else it says.
    for query in ["ticket=&execution_id=", "ticket=tkt_x&protocol=sse", "protocol=sse"] {
        let (got, body) = server.request("GET", &format!("/v1/events?{query}"), None, None).await;
        assert_eq!(got, 401, "{query}: {body}");
    }
    let stream = server.ws(&format!("?ticket={ticket}"), None).await;
    stream.close().await;
    assert_eq!(server.ws_refused(&format!("?ticket={ticket}"), None).await, 401);
    // An unused ticket past its lifetime is refused (the wait is past a hard bound, not a race).
    let late = server.ticket(&agent).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, body) = server
        .request("GET", &format!("/v1/events?ticket={late}"), None, None)
        .await;
    assert_eq!(status, 401);
    assert!(body["error"]["message"].as_str().unwrap().contains("expired"), "{body}");
    // A ticket cannot be had without a bearer token, nor with a ticket.
    assert_eq!(server.request("POST", "/v1/events/ticket", None, None).await.0, 401);
}

on_both_backends!(
    tokens_are_listed_without_secrets_and_revoked_at_once,
    the_last_valid_admin_token_cannot_be_revoked,
    an_expired_token_is_refused,
    a_flood_of_unknown_tokens_costs_one_store_query_per_distinct_token,
    the_refused_cache_is_bounded_in_size_and_time,
    a_ticket_opens_one_stream_and_expires,
);

/// Two nodes on one PostgreSQL store: a revocation on one is refused on the other at the next
/// request, a ticket made on one opens a stream on the other (once), and a token made on one
/// works on the other at once, after that node refused a flood of unknown tokens.
#[tokio::test]
async fn tokens_and_tickets_hold_on_every_node_of_a_cluster() {
    let cluster = TestCluster::start(2, &[]).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let admin = cluster.admin.as_str();
    for _ in 0..3 {
        for n in 0..20 {
            assert_eq!(b.get("/v1/executions", &format!("agt_{n:064x}")).await.0, 401);
        }
    }
    let created = a
        .ok("/v1/tokens", admin, json!({"role": "agent", "tenant": "acme"}))
        .await;
    let (agent, id) = (created["token"].as_str().unwrap(), created["id"].as_str().unwrap());
    // Node b knows it at once, and caches it.
    assert_eq!(b.get("/v1/executions", agent).await.0, 200);
    assert_eq!(b.get("/v1/executions", agent).await.0, 200);

    let ticket = a.ticket(agent).await;
    let stream = b.ws(&format!("?ticket={ticket}"), None).await;
    stream.close().await;
    assert_eq!(a.ws_refused(&format!("?ticket={ticket}"), None).await, 401);
    assert_eq!(b.ws_refused(&format!("?ticket={ticket}"), None).await, 401);

    let (status, body) = a
        .request("DELETE", &format!("/v1/tokens/{id}"), Some(admin), None)
        .await;
    assert_eq!(status, 200, "{body}");
    // The next request on the other node is refused: no waiting for anything.
    let (status, body) = b.get("/v1/executions", agent).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(a.get("/v1/executions", agent).await.0, 401);
    let (_, text) = b.request("GET", "/metrics", Some(admin), None).await;
    // Of the flood, only each token's first request reached the store.
    assert_eq!(
        counter(text.as_str().unwrap(), "agentrack_token_refused_cached_total"),
        40
    );
}
