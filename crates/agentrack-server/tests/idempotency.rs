//! A failing store refuses at once and a retried request runs once (issue 15, item 11), on the
//! real binary. The outage tests stop their own PostgreSQL (`scripts/pg-cluster`): while it is
//! down, writes are refused at once with 503 and `Retry-After` and leave nothing behind; the
//! writer's queue is bounded; after it is back, a retry with the same `Idempotency-Key` makes
//! exactly one execution, and the same key with another body is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod openapi;

use common::pg_cluster::PgCluster;
use common::{Backend, TestServer, eventually};
use serde_json::{Value, json};

/// POSTs `body` with `key` as its Idempotency-Key; the status, the body and whether the answer
/// was a replay.
async fn keyed(server: &TestServer, path: &str, token: &str, key: &str, body: &Value) -> (u16, Value, bool) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", server.url))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    (status, response.json().await.unwrap_or(Value::Null), replayed)
}

/// The executions of thread `thread` the admin sees in the store.
async fn in_thread(server: &TestServer, thread: &str) -> Vec<Value> {
    let (status, page) = server
        .get(&format!("/v1/executions?thread_id={thread}&limit=1000"), &server.admin)
        .await;
    assert_eq!(status, 200, "{page}");
    page["executions"].as_array().unwrap().clone()
}

async fn a_retried_request_runs_once_and_gets_the_first_answer(backend: Backend) {
    let mut server = TestServer::start_on(backend, &[]).await;
    let agent = server.token("agent", "acme", None).await;
    let create = json!({"agent_name": "a", "thread_id": "once", "user_id": "u"});

    let (status, first, replayed) = keyed(&server, "/v1/executions", &agent, "create-1", &create).await;
    assert_eq!(status, 201, "{first}");
    assert!(!replayed);
    let (status, again, replayed) = keyed(&server, "/v1/executions", &agent, "create-1", &create).await;
    assert_eq!((status, replayed), (201, true), "{again}");
    assert_eq!(again, first, "the first answer, as it was");
    let schemas = openapi::Schemas::published(&server).await;
    schemas.assert_matches("ExecutionRecord", &again, "a replayed create");
    let (_, document) = server.request("GET", "/openapi.json", None, None).await;
    let create_doc = &document["paths"]["/v1/executions"]["post"];
    assert!(
        create_doc["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "Idempotency-Key"),
        "{create_doc}"
    );
    assert!(create_doc["responses"]["201"]["headers"]["Idempotent-Replayed"].is_object());
    for status in ["400", "409", "422"] {
        assert!(create_doc["responses"][status].is_object(), "{status} documented");
    }
    assert_eq!(in_thread(&server, "once").await.len(), 1, "one execution");

    // A state change: applied once, however often it is retried.
    let id = first["execution_id"].as_str().unwrap().to_owned();
    server.start_execution(&agent, &id).await;
    let phase = json!({"phase": "websocket_setup"});
    let path = format!("/v1/executions/{id}/phase");
    let (status, moved, _) = keyed(&server, &path, &agent, "phase-1", &phase).await;
    assert_eq!(status, 200, "{moved}");
    for _ in 0..3 {
        let (status, answer, replayed) = keyed(&server, &path, &agent, "phase-1", &phase).await;
        assert_eq!((status, replayed), (200, true));
        assert_eq!(answer, moved);
    }
    let (_, record) = server.get(&format!("/v1/executions/{id}"), &agent).await;
    assert_eq!(record["phase_history"].as_array().unwrap().len(), 1, "{record}");

    // A refusal is an answer too: kept, and replayed.
    let wrong = json!({"phase": "flying"});
    let (status, refused, _) = keyed(&server, &path, &agent, "phase-bad", &wrong).await;
    assert_eq!(status, 422, "{refused}");
    let (status, again, replayed) = keyed(&server, &path, &agent, "phase-bad", &wrong).await;
    assert_eq!((status, replayed), (422, true));
    assert_eq!(again, refused);

    // The key lives in the store: it outlives the process.
    server.kill();
    server.restart();
    let (status, after, replayed) = keyed(&server, "/v1/executions", &agent, "create-1", &create).await;
    assert_eq!((status, replayed), (201, true), "{after}");
    assert_eq!(after, first);
    assert_eq!(in_thread(&server, "once").await.len(), 1, "still one execution");
}

async fn a_key_sent_again_with_another_body_is_refused(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let agent = server.token("agent", "acme", None).await;
    let create = json!({"agent_name": "a", "thread_id": "reuse", "user_id": "u"});
    let (status, _, _) = keyed(&server, "/v1/executions", &agent, "k", &create).await;
    assert_eq!(status, 201);
    let other = json!({"agent_name": "b", "thread_id": "reuse", "user_id": "u"});
    let (status, refused, _) = keyed(&server, "/v1/executions", &agent, "k", &other).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "idempotency_key_reused");
    openapi::Schemas::published(&server)
        .await
        .assert_matches("Error", &refused, "the refusal of a reused key");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another request needs another key")
    );
    assert_eq!(in_thread(&server, "reuse").await.len(), 1, "nothing more was created");

    // Keys are the caller's: another token's same key is another request.
    let other_agent = server.token("agent", "acme", None).await;
    let (status, _, replayed) = keyed(&server, "/v1/executions", &other_agent, "k", &create).await;
    assert_eq!((status, replayed), (201, false));
    assert_eq!(in_thread(&server, "reuse").await.len(), 2);

    // Malformed keys.
    for key in ["", &"k".repeat(256), "naïve"] {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/executions", server.url))
            .bearer_auth(&agent)
            .header("Idempotency-Key", key.as_bytes())
            .json(&create)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{key:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_idempotency_key", "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("valid: 1 to 255"));
    }
    assert_eq!(in_thread(&server, "reuse").await.len(), 2);
}

on_both_backends!(
    a_retried_request_runs_once_and_gets_the_first_answer,
    a_key_sent_again_with_another_body_is_refused
);

/// A server on its own PostgreSQL cluster, with `config` as its TOML file.
async fn on_own_cluster(config: &str) -> (PgCluster, TestServer, tempfile::NamedTempFile) {
    let cluster = PgCluster::start();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), config).unwrap();
    let server = TestServer::start_with(&["--store", &cluster.url, "--config", file.path().to_str().unwrap()]).await;
    (cluster, server, file)
}

fn assert_refused_unchanged(status: u16, body: &Value, retry_after: bool) {
    assert_eq!(status, 503, "{body}");
    assert!(retry_after, "503 with Retry-After: {body}");
    assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing was changed"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_store_is_down_writes_are_refused_at_once_and_a_keyed_retry_after_runs_once() {
    // An hour's ack_timeout: a refusal that waited for the store would hang the test.
    let (cluster, server, _config) = on_own_cluster("ack_timeout = \"1h\"\n").await;
    let agent = server.token("agent", "acme", None).await;
    let running = server.create_started(&agent, "a", "before", "u").await;
    let client = reqwest::Client::new();

    cluster.crash();
    eventually("/readyz reports the store failing", || async {
        server.request("GET", "/readyz", None, None).await.0 == 503
    })
    .await;
    let create = json!({"agent_name": "a", "thread_id": "outage", "user_id": "u"});
    for attempt in 0..3 {
        let response = client
            .post(format!("{}/v1/executions", server.url))
            .bearer_auth(&agent)
            .header("Idempotency-Key", "outage-1")
            .json(&create)
            .send()
            .await
            .unwrap();
        let (status, retry_after) = (
            response.status().as_u16(),
            response.headers().contains_key("retry-after"),
        );
        let body: Value = response.json().await.unwrap();
        assert_refused_unchanged(status, &body, retry_after);
        // Nor a change of an execution in memory.
        let (status, body) = server
            .post(
                &format!("/v1/executions/{running}/phase"),
                &agent,
                json!({"phase": "thinking"}),
            )
            .await;
        assert_eq!(status, 503, "attempt {attempt}: {body}");
    }
    // Nothing was applied in memory either: the record served from memory is unchanged.
    let (status, record) = server.get(&format!("/v1/executions/{running}"), &agent).await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["current_phase"], "created", "{record}");
    assert_eq!(record["phase_history"], json!([]), "{record}");

    cluster.restart();
    eventually("/readyz is ready again", || async {
        server.request("GET", "/readyz", None, None).await.0 == 200
    })
    .await;
    let (status, first, replayed) = keyed(&server, "/v1/executions", &agent, "outage-1", &create).await;
    assert_eq!((status, replayed), (201, false), "{first}");
    let (status, again, replayed) = keyed(&server, "/v1/executions", &agent, "outage-1", &create).await;
    assert_eq!((status, replayed), (201, true), "{again}");
    assert_eq!(again["execution_id"], first["execution_id"]);
    assert_eq!(in_thread(&server, "outage").await.len(), 1, "exactly one execution");
    let other = json!({"agent_name": "other", "thread_id": "outage", "user_id": "u"});
    let (status, refused, _) = keyed(&server, "/v1/executions", &agent, "outage-1", &other).await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (422, &json!("idempotency_key_reused"))
    );
    assert_eq!(in_thread(&server, "outage").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writers_queue_is_bounded_while_the_store_stalls() {
    let (cluster, server, _config) = on_own_cluster("max_store_queue = 8\nack_timeout = \"1h\"\n").await;
    let agent = server.token("agent", "acme", None).await;
    let id = server.create_started(&agent, "a", "t", "u").await;
    // Running: a first heartbeat (starting → running) is a state change and waits for the store.
    server.heartbeat(&agent, &id).await;
    let client = reqwest::Client::new();

    // Heartbeats are taken while the store is down (they keep agents alive through an outage),
    // each a message for the stalled writer: until the queue holds `max_store_queue`.
    cluster.crash();
    let mut accepted = 0;
    let refusal = loop {
        let response = client
            .post(format!("{}/v1/executions/{id}/heartbeat", server.url))
            .bearer_auth(&agent)
            .send()
            .await
            .unwrap();
        if response.status().as_u16() == 503 {
            break response;
        }
        assert_eq!(response.status().as_u16(), 200);
        accepted += 1;
        assert!(accepted < 10_000, "the queue has no bound");
    };
    assert!(refusal.headers().contains_key("retry-after"));
    let body: Value = refusal.json().await.unwrap();
    assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    assert_eq!(body["error"]["limit"], 8, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("max_store_queue"),
        "{body}"
    );

    cluster.restart();
    eventually("heartbeats are taken again once the queue drains", || async {
        client
            .post(format!("{}/v1/executions/{id}/heartbeat", server.url))
            .bearer_auth(&agent)
            .send()
            .await
            .is_ok_and(|response| response.status().as_u16() == 200)
    })
    .await;
}
