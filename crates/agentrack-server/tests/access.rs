//! Every route refuses a token below its documented access level: the route table's `access` is
//! what is enforced, for every route it lists, against the real server.

mod common;

use agentrack_server::api::{Access, RouteDoc, route_docs};
use common::TestServer;
use serde_json::{Value, json};

/// The path of `doc` with its parameters filled in: `{id}` with a real execution, `{name}` with
/// a breaker name.
fn concrete(doc: &RouteDoc, id: &str) -> String {
    doc.path
        .replace("{id}", id)
        .replace("{name}", "openai")
        .replace("{token_id}", "tok_0123456789abcdef")
}

/// Calls `doc`'s route as `token` (none for `None`) with an empty JSON object as the body.
async fn call(server: &TestServer, doc: &RouteDoc, id: &str, token: Option<&str>) -> (u16, Value) {
    let body = (doc.method != "GET").then_some("{}");
    server.request(doc.method, &concrete(doc, id), token, body).await
}

fn assert_unauthorized(doc: &RouteDoc, (status, body): (u16, Value)) {
    assert_eq!(status, 401, "{} {} without a token: {body}", doc.method, doc.path);
    assert_eq!(body["error"]["code"], "unauthorized", "{} {}", doc.method, doc.path);
}

fn assert_forbidden(doc: &RouteDoc, role: &str, action: &str, (status, body): (u16, Value)) {
    assert_eq!(status, 403, "{} {} as {role}: {body}", doc.method, doc.path);
    assert_eq!(body["error"]["code"], "forbidden", "{} {}", doc.method, doc.path);
    assert_eq!(
        body["error"]["message"],
        format!("a {role} token may not {action}"),
        "{} {}",
        doc.method,
        doc.path
    );
}

#[tokio::test]
async fn every_route_refuses_a_token_below_its_level() {
    let server = TestServer::start().await;
    let agent = server.token("agent", "t1", None).await;
    let viewer = server.token("viewer", "t1", Some("alice")).await;
    let metrics = server.token("metrics", "ops", None).await;
    let id = server.create(&agent, "researcher", "thread", "alice").await;
    let before = server.get(&format!("/v1/executions/{id}"), &agent).await.1;

    let docs = route_docs();
    // Every `/v1` route needs a token (and there are such routes to check).
    assert!(docs.iter().any(|doc| doc.path.starts_with("/v1/")));
    for doc in docs.iter().filter(|doc| doc.path.starts_with("/v1/")) {
        assert!(
            !matches!(doc.access, Access::Public | Access::Metrics(_)),
            "{} {} is under /v1 but public",
            doc.method,
            doc.path
        );
    }
    for doc in &docs {
        match doc.access {
            Access::Public => {
                let (status, body) = call(&server, doc, &id, None).await;
                assert!(status < 400, "{} {} is public: {status} {body}", doc.method, doc.path);
            }
            Access::Read => {
                assert_unauthorized(doc, call(&server, doc, &id, None).await);
                assert_unauthorized(doc, call(&server, doc, &id, Some("agt_unknown")).await);
                assert_forbidden(
                    doc,
                    "metrics",
                    "read executions, events or metrics of a tenant",
                    call(&server, doc, &id, Some(&metrics)).await,
                );
            }
            Access::Write(action) => {
                assert_unauthorized(doc, call(&server, doc, &id, None).await);
                assert_forbidden(doc, "viewer", action, call(&server, doc, &id, Some(&viewer)).await);
                assert_forbidden(doc, "metrics", action, call(&server, doc, &id, Some(&metrics)).await);
            }
            Access::Admin(action) => {
                assert_unauthorized(doc, call(&server, doc, &id, None).await);
                assert_forbidden(doc, "agent", action, call(&server, doc, &id, Some(&agent)).await);
                assert_forbidden(doc, "viewer", action, call(&server, doc, &id, Some(&viewer)).await);
                assert_forbidden(doc, "metrics", action, call(&server, doc, &id, Some(&metrics)).await);
            }
            // A token by default: an admin or metrics one (below, a server that opens it).
            Access::Metrics(action) => {
                assert_unauthorized(doc, call(&server, doc, &id, None).await);
                assert_forbidden(doc, "agent", action, call(&server, doc, &id, Some(&agent)).await);
                assert_forbidden(doc, "viewer", action, call(&server, doc, &id, Some(&viewer)).await);
                for token in [&metrics, &server.admin] {
                    let (status, body) = call(&server, doc, &id, Some(token)).await;
                    assert_eq!(status, 200, "{} {}: {body}", doc.method, doc.path);
                }
            }
        }
    }
    // The event stream takes a ticket in the query, never a token.
    assert_eq!(server.ws_refused("?token=agt_unknown", None).await, 401);
    assert_eq!(server.ws_refused("", None).await, 401);
    // Nothing any refused call did changed the execution.
    assert_eq!(server.get(&format!("/v1/executions/{id}"), &agent).await.1, before);
}

#[tokio::test]
async fn server_metrics_are_public_when_the_server_says_so() {
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("agentrack.toml");
    std::fs::write(&file, "metrics_require_auth = false\n").unwrap();
    let server = TestServer::start_with(&["--config", file.to_str().unwrap()]).await;
    let agent = server.token("agent", "t1", None).await;

    let docs: Vec<RouteDoc> = route_docs()
        .into_iter()
        .filter(|doc| matches!(doc.access, Access::Metrics(_)))
        .collect();
    assert!(!docs.is_empty(), "/metrics is the route that can be opened");
    for doc in &docs {
        for token in [None, Some(agent.as_str()), Some("agt_unknown")] {
            let (status, body) = call(&server, doc, "", token).await;
            assert_eq!(status, 200, "{} {} with {token:?}: {body}", doc.method, doc.path);
        }
    }
    // The rest of the server is as usual.
    let (status, _) = server
        .post(
            "/v1/executions",
            &agent,
            json!({"agent_name": "a", "thread_id": "t", "user_id": "u"}),
        )
        .await;
    assert_eq!(status, 201);
}
