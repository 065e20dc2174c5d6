//! Tenants and users never see each other's executions: outside the scope is 404, not 403.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::time::Duration;

use common::{Backend, SECOND, TestServer};
use serde_json::{Value, json};

fn ids(page: &Value) -> Vec<String> {
    page["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["execution_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn a_viewer_sees_only_its_own_users_executions_and_events(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let agent = server.token("agent", "t1", None).await;
    let other_tenant = server.token("agent", "t2", None).await;
    let alice = server.token("viewer", "t1", Some("alice")).await;

    let mut alice_stream = server.ws("", Some(&alice)).await;
    let a = server.create(&agent, "researcher", "thread-a", "alice").await;
    let b = server.create(&agent, "researcher", "thread-b", "bob").await;
    let c = server.create(&other_tenant, "researcher", "thread-c", "alice").await;

    // Reads.
    assert_eq!(server.get(&format!("/v1/executions/{a}"), &alice).await.0, 200);
    let (status, body) = server.get(&format!("/v1/executions/{b}"), &alice).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    assert_eq!(server.get(&format!("/v1/executions/{c}"), &alice).await.0, 404);
    assert_eq!(server.get(&format!("/v1/executions/{b}/breaker"), &alice).await.0, 404);
    let (_, page) = server.get("/v1/executions", &alice).await;
    assert_eq!(ids(&page), vec![a.clone()]);
    let (_, page) = server.get("/v1/executions?user_id=bob", &alice).await;
    assert!(ids(&page).is_empty());
    let (_, metrics) = server.get("/v1/metrics", &alice).await;
    assert_eq!(metrics["total_executions"], 1);

    // Events: changes to bob's and the other tenant's executions never reach alice's stream.
    server.golden_path(&agent, &b).await;
    server.golden_path(&other_tenant, &c).await;
    server.golden_path(&agent, &a).await;
    let events = alice_stream
        .until(5 * SECOND, |e| e["type"] == "execution_completed")
        .await;
    assert!(events.iter().all(|e| e["execution_id"] == a.as_str()), "{events:#?}");
    assert!(alice_stream.drain(Duration::from_millis(200)).await.is_empty());
    // The same through a replay, and through a ticket (browsers cannot set headers).
    let ticket = server.ticket(&alice).await;
    let mut replay = server.ws(&format!("?since=0&ticket={ticket}"), None).await;
    let replayed = replay.until(5 * SECOND, |e| e["type"] == "execution_completed").await;
    assert!(replayed.iter().all(|e| e["execution_id"] == a.as_str()));
    // A subscription to someone else's execution looks like one to a missing execution.
    assert_eq!(
        server.ws_refused(&format!("?execution_id={b}"), Some(&alice)).await,
        404
    );

    // Viewers read; they do not write.
    let (status, body) = server
        .post(&format!("/v1/executions/{a}/heartbeat"), &alice, json!({}))
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")));
    assert_eq!(
        server
            .post(
                "/v1/executions",
                &alice,
                json!({"agent_name": "x", "thread_id": "t", "user_id": "alice"})
            )
            .await
            .0,
        403
    );
}

async fn an_agent_of_one_tenant_cannot_read_or_change_anothers(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let t1 = server.token("agent", "t1", None).await;
    let t2 = server.token("agent", "t2", None).await;
    let theirs = server.create(&t2, "researcher", "thread", "alice").await;
    let ours = server.create(&t1, "researcher", "thread", "alice").await;
    let before = server.get(&format!("/v1/executions/{theirs}"), &t2).await.1;

    for (path, body) in [
        ("start", json!({})),
        ("heartbeat", json!({})),
        ("state", json!({"state": "failed"})),
        ("phase", json!({"phase": "websocket_setup"})),
        ("breaker/reset", json!({})),
    ] {
        let (status, error) = server.post(&format!("/v1/executions/{theirs}/{path}"), &t1, body).await;
        assert_eq!(status, 404, "{path}: {error}");
    }
    assert_eq!(server.get(&format!("/v1/executions/{theirs}"), &t1).await.0, 404);
    let (_, page) = server.get("/v1/executions", &t1).await;
    assert_eq!(ids(&page), [ours]);
    // Creating in another tenant is refused outright.
    let (status, _) = server
        .post(
            "/v1/executions",
            &t1,
            json!({"agent_name": "x", "thread_id": "t", "user_id": "u", "tenant": "t2"}),
        )
        .await;
    assert_eq!(status, 403);
    // Only admins make tokens.
    assert_eq!(
        server
            .post("/v1/tokens", &t1, json!({"role": "admin", "tenant": "t1"}))
            .await
            .0,
        403
    );
    // Nothing changed for the owner.
    assert_eq!(server.get(&format!("/v1/executions/{theirs}"), &t2).await.1, before);
    // The admin sees both tenants.
    let (_, page) = server.get("/v1/executions", &server.admin).await;
    assert_eq!(ids(&page).len(), 2);
}

async fn requests_without_a_valid_token_are_401(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let agent = server.token("agent", "t1", None).await;
    let id = server.create(&agent, "researcher", "thread", "alice").await;
    for (method, path) in [
        ("GET", "/v1/executions".to_owned()),
        ("POST", "/v1/executions".to_owned()),
        ("GET", format!("/v1/executions/{id}")),
        ("POST", format!("/v1/executions/{id}/start")),
        ("GET", "/v1/metrics".to_owned()),
        ("GET", "/v1/breakers".to_owned()),
        ("POST", "/v1/tokens".to_owned()),
    ] {
        let (status, body) = server.request(method, &path, None, Some("{}")).await;
        assert_eq!(status, 401, "{method} {path}");
        assert_eq!(body["error"]["code"], "unauthorized");
        assert_eq!(
            server.request(method, &path, Some("agt_unknown"), Some("{}")).await.0,
            401
        );
    }
    assert_eq!(server.ws_refused("", None).await, 401);
    assert_eq!(server.ws_refused("?token=nope", None).await, 401);
    assert_eq!(server.ws_refused("?ticket=nope", None).await, 401);
    // The public endpoints stay public.
    assert_eq!(server.request("GET", "/healthz", None, None).await.0, 200);
    assert_eq!(server.request("GET", "/readyz", None, None).await.0, 200);
    // /metrics needs an admin or metrics token (see access.rs).
    assert_eq!(server.request("GET", "/metrics", None, None).await.0, 401);
    assert_eq!(server.request("GET", "/openapi.json", None, None).await.0, 200);
    // And the execution was not touched.
    assert_eq!(
        server.get(&format!("/v1/executions/{id}"), &agent).await.1["state"],
        "pending"
    );
}

on_both_backends!(
    a_viewer_sees_only_its_own_users_executions_and_events,
    an_agent_of_one_tenant_cannot_read_or_change_anothers,
    requests_without_a_valid_token_are_401,
);
