//! The database going away under load: PostgreSQL is stopped abruptly (`pg_ctl stop -m
//! immediate`) while agents write, then started again. The server must refuse writes it cannot
//! store (503 with `Retry-After`, nothing changed), keep answering what it can from memory, come
//! back by itself, and lose nothing it acknowledged.
//!
//! The test runs its own throwaway cluster (`scripts/pg-cluster`), since it stops it.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::pg_cluster::PgCluster;
use common::{TestServer, eventually, golden_phases};
use parking_lot::Mutex;
use serde_json::{Value, json};

/// What the agents saw.
#[derive(Default)]
struct Seen {
    /// Acknowledged executions and how many phases each was acknowledged through.
    acked: Mutex<Vec<(String, usize)>>,
    /// 503 answers, and how many of them said nothing was changed.
    unavailable: AtomicU64,
    refused_unchanged: AtomicU64,
    /// 503 answers without `Retry-After` or without the `store_unavailable` code (must be 0).
    malformed: AtomicU64,
}

/// POSTs until the server answers with something other than 503; returns whether it succeeded.
async fn post_until_stored(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
    seen: &Seen,
) -> Option<Value> {
    loop {
        let response = client.post(url).bearer_auth(token).json(body).send().await.ok()?;
        let status = response.status().as_u16();
        if status != 503 {
            let body: Value = response.json().await.ok()?;
            return (200..300).contains(&status).then_some(body);
        }
        seen.unavailable.fetch_add(1, Ordering::Relaxed);
        let retry_after = response.headers().get("retry-after").is_some();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !retry_after || body["error"]["code"] != "store_unavailable" {
            seen.malformed.fetch_add(1, Ordering::Relaxed);
        }
        if body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nothing was changed"))
        {
            seen.refused_unchanged.fetch_add(1, Ordering::Relaxed);
        }
        // A client's back-off before it retries, not a wait for the test.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One agent: executions through the golden path, each change retried until acknowledged.
async fn agent(base: String, token: String, index: usize, stop: Arc<AtomicBool>, seen: Arc<Seen>) {
    let client = reqwest::Client::new();
    let phases = golden_phases();
    while !stop.load(Ordering::Relaxed) {
        let body = json!({"agent_name": "a", "thread_id": format!("t{index}"), "user_id": "u", "timeout_seconds": 600});
        let Some(created) = post_until_stored(&client, &format!("{base}/v1/executions"), &token, &body, &seen).await
        else {
            continue;
        };
        let id = created["execution_id"].as_str().unwrap().to_owned();
        let slot = {
            let mut acked = seen.acked.lock();
            acked.push((id.clone(), 0));
            acked.len() - 1
        };
        for (step, (phase, metadata)) in phases.iter().enumerate() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let url = format!("{base}/v1/executions/{id}/phase");
            let body = json!({"phase": phase, "metadata": metadata});
            if post_until_stored(&client, &url, &token, &body, &seen).await.is_none() {
                break;
            }
            seen.acked.lock()[slot].1 = step + 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_crash_loses_nothing_acknowledged_and_the_server_recovers_by_itself() {
    let cluster = PgCluster::start();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "ack_timeout = \"3s\"\n").unwrap();
    let mut server =
        TestServer::start_with(&["--store", &cluster.url, "--config", config.path().to_str().unwrap()]).await;
    let token = server.token("agent", "acme", None).await;
    let pid = server.pid();

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let agents: Vec<_> = (0..4)
        .map(|index| {
            tokio::spawn(agent(
                server.url.clone(),
                token.clone(),
                index,
                Arc::clone(&stop),
                Arc::clone(&seen),
            ))
        })
        .collect();
    eventually("the agents have acknowledged writes", || async {
        seen.acked.lock().len() >= 8
    })
    .await;

    cluster.crash();
    eventually("/readyz reports the store failing", || async {
        server.request("GET", "/readyz", None, None).await.0 == 503
    })
    .await;
    eventually("writes are refused at once, unchanged", || async {
        seen.refused_unchanged.load(Ordering::Relaxed) > 0
    })
    .await;
    // Reads that memory can answer still are.
    let (id, _) = seen.acked.lock()[0].clone();
    let (status, record) = server.get(&format!("/v1/executions/{id}"), &token).await;
    assert_eq!(status, 200, "{record}");
    let before_outage_ends = seen.acked.lock().len();

    cluster.restart();
    eventually("/readyz is ready again, without a server restart", || async {
        server.request("GET", "/readyz", None, None).await.0 == 200
    })
    .await;
    eventually("agents are acknowledged again", || async {
        seen.acked.lock().len() > before_outage_ends + 4
    })
    .await;
    assert_eq!(server.pid(), pid, "the same server process");
    stop.store(true, Ordering::Relaxed);
    for agent in agents {
        agent.await.unwrap();
    }
    assert_eq!(
        seen.malformed.load(Ordering::Relaxed),
        0,
        "every 503 has Retry-After and its code"
    );
    assert!(seen.unavailable.load(Ordering::Relaxed) > 0);

    // Only what is stored survives a SIGKILL: every acknowledged change must be there.
    server.kill();
    server.restart();
    let acked = seen.acked.lock().clone();
    for (id, steps) in &acked {
        let (status, record) = server.get(&format!("/v1/executions/{id}"), &server.admin).await;
        assert_eq!(status, 200, "acknowledged execution {id} is lost: {record}");
        let stored = record["phase_history"].as_array().map_or(0, Vec::len);
        assert!(
            stored >= *steps,
            "execution {id}: {steps} phase changes acknowledged, {stored} stored"
        );
    }
    eprintln!(
        "outage: {} executions acknowledged, {} answers 503 ({} refused before changing anything)",
        acked.len(),
        seen.unavailable.load(Ordering::Relaxed),
        seen.refused_unchanged.load(Ordering::Relaxed)
    );
}
