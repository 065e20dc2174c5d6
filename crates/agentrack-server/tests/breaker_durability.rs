//! Durable before acknowledged, for breaker writes too: `POST /v1/breakers/{name}/record` answers
//! only once the state change it caused is in the store, so the change survives a SIGKILL right
//! after the answer.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{SECOND, TestServer};
use serde_json::{Value, json};

fn metric(text: &Value, name: &str) -> u64 {
    common::metric_value(text.as_str().unwrap(), name).unwrap_or_else(|| panic!("no {name} in /metrics"))
}

async fn committed_seq(server: &TestServer) -> u64 {
    let (_, metrics) = server.request("GET", "/metrics", Some(&server.admin), None).await;
    metric(&metrics, "agentrack_store_committed_seq")
}

async fn breaker_state(server: &TestServer, token: &str, name: &str) -> String {
    let (status, body) = server.get("/v1/breakers", token).await;
    assert_eq!(status, 200, "{body}");
    body["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .map(|b| b["state"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn acquire(server: &TestServer, token: &str, name: &str) -> String {
    let body = server
        .ok(&format!("/v1/breakers/{name}/acquire"), token, json!({}))
        .await;
    body["permit"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_breaker_record_answers_after_its_change_is_durable() {
    let mut server = TestServer::start().await;
    let agent = server.token("agent", "t1", None).await;
    let name = "openai:gpt-4o";
    let record = format!("/v1/breakers/{name}/record");

    // Two failures (the threshold is 3) change no state: nothing to persist.
    for _ in 0..2 {
        let permit = acquire(&server, &agent, name).await;
        let body = server
            .ok(&record, &agent, json!({"permit": permit, "outcome": "failure"}))
            .await;
        assert_eq!(body["state"], "closed");
    }
    let permit = acquire(&server, &agent, name).await;

    // Hold SQLite's write lock from outside, so that the server's store cannot commit.
    let db = rusqlite::Connection::open(server.data().join("agentrack.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let committed_before = committed_seq(&server).await;

    // The third failure opens the breaker; its answer must wait for the store.
    let pending = tokio::spawn({
        let (url, agent, record) = (server.url.clone(), agent.clone(), record.clone());
        async move {
            let response = reqwest::Client::new()
                .post(format!("{url}{record}"))
                .bearer_auth(agent)
                .json(&json!({"permit": permit, "outcome": "failure"}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    });
    // The change has happened in memory (the breaker is open) ...
    let started = Instant::now();
    while breaker_state(&server, &agent, name).await != "open" {
        assert!(started.elapsed() < 10 * SECOND, "the breaker never opened");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ... but not in the store, and the caller has not been told. A server that answered
    // without waiting would have answered long before these further requests are served.
    for _ in 0..20 {
        assert_eq!(breaker_state(&server, &agent, name).await, "open");
    }
    assert_eq!(
        committed_seq(&server).await,
        committed_before,
        "the lock held the store"
    );
    assert!(
        !pending.is_finished(),
        "answered before the breaker_opened event was durable"
    );

    // Once the store can commit, the answer comes, and what it acknowledged survives SIGKILL.
    db.execute_batch("ROLLBACK").unwrap();
    let (status, body) = pending.await.unwrap();
    assert_eq!((status, body["state"].as_str()), (200, Some("open")), "{body}");
    assert!(committed_seq(&server).await > committed_before);
    server.kill();
    drop(db);
    server.restart();
    let mut replay = server.ws("?since=0", Some(&server.admin)).await;
    let events = replay
        .until(5 * SECOND, |event| event["type"] == "breaker_opened")
        .await;
    let opened = events.last().unwrap();
    assert_eq!(opened["breaker"], format!("t1/{name}"));
    assert_eq!(opened["failures"], 3);
}
