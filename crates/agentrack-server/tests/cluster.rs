//! Several nodes on one PostgreSQL store: any node answers for any execution, reads cover the
//! whole cluster, a node that dies or pauses loses its shards to the others (fenced out of
//! writing for them), a node that leaves hands its shards over, and an event stream resumes on
//! another node without a gap or a duplicate.
//!
//! Every node is a real process on a random loopback port; the lease TTL is 2 s, so each
//! failover takes seconds. The tests wait for conditions (polling), never for a fixed time.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use agentrack_server::store::shard_of;
use common::cluster::TestCluster;
use common::postgres::connect;
use common::{Frame, TestServer, within};
use futures_util::SinkExt;
use serde_json::{Value, json};

const SHARDS: u16 = 64;

fn shard(id: &str) -> u64 {
    u64::from(shard_of(id.parse().unwrap(), SHARDS))
}

/// Moves a started execution through the phases to `thinking`.
async fn to_thinking(node: &TestServer, token: &str, id: &str) {
    for phase in ["websocket_setup", "context_validation", "starting", "thinking"] {
        node.ok(&format!("/v1/executions/{id}/phase"), token, json!({"phase": phase}))
            .await;
    }
}

/// Asks until the answer is not a 503 (the shard is moving): what a client does on
/// `Retry-After`. Returns the final answer.
async fn through_moves(node: &TestServer, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let started = Instant::now();
    loop {
        let body = body.as_ref().map(Value::to_string);
        let (status, answer) = node.request(method, path, Some(token), body.as_deref()).await;
        if status != 503 || started.elapsed() > Duration::from_secs(20) {
            return (status, answer);
        }
        assert_eq!(answer["error"]["code"], "shard_unavailable", "{answer}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn any_node_answers_for_any_execution_and_reads_cover_the_cluster() {
    let cluster = TestCluster::start(3, &[]).await;
    let nodes = &cluster.nodes;
    let agent = nodes[0].token("agent", "acme", None).await;

    // A create lands on a shard its node owns; then the next node drives it (forwarded).
    let mut finished = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let id = node.create(&agent, "researcher", &format!("t{i}"), "alice").await;
        assert_eq!(
            cluster.owner_of(0, shard(&id)).await.as_deref(),
            Some(node.url.as_str()),
            "no hop for a create"
        );
        nodes[(i + 1) % 3].golden_path(&agent, &id).await;
        finished.push(id);
    }
    for (i, id) in finished.iter().enumerate() {
        let (status, record) = nodes[(i + 2) % 3].get(&format!("/v1/executions/{id}"), &agent).await;
        assert_eq!(status, 200, "{record}");
        assert_eq!(record["state"], "completed");
        assert_eq!(record["phase_history"].as_array().unwrap().len(), 9);
    }

    let alive = heartbeats_go_to_their_owners(&cluster, &agent).await;

    // A request already forwarded once is not sent on again.
    let here = shards_of(&cluster, 0, &cluster.node_id(0).await).await;
    let not_here = alive.iter().find(|id| !here.contains(&shard(id))).unwrap();
    let response = reqwest::Client::new()
        .get(format!("{}/v1/executions/{not_here}", nodes[0].url))
        .bearer_auth(&agent)
        .header("x-agentrack-forwarded-by", "node-elsewhere")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));

    named_breakers_are_one_per_name(&cluster, &agent).await;

    reads_cover_the_cluster(&cluster, &agent).await;

    // The cluster as an operator sees it.
    let status = cluster.status(2).await;
    assert_eq!(status["clustered"], true);
    assert_eq!(status["shard_count"], 64);
    let held: usize = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| node["shards"].as_array().unwrap().len())
        .sum();
    assert_eq!(held, 64);
    let output = std::process::Command::new(common::BIN)
        .args(["cluster", "status", "--url", &nodes[1].url, "--token", &cluster.admin])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("3 of 3 nodes alive, 64 shards"), "{text}");
    assert!(text.contains("every shard is served"), "{text}");
}

/// One batch of heartbeats through one node, and one over a stream on another, for executions
/// of all three; returns those executions.
async fn heartbeats_go_to_their_owners(cluster: &TestCluster, agent: &str) -> Vec<String> {
    let nodes = &cluster.nodes;
    // One batch of heartbeats through one node, for executions of all three.
    let mut alive = Vec::new();
    for node in nodes {
        alive.push(node.create_started(agent, "worker", "t-alive", "bob").await);
    }
    let (status, report) = nodes[0]
        .post("/v1/heartbeats", agent, json!({"execution_ids": alive}))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["accepted"], 3, "{report}");
    for (result, id) in report["results"].as_array().unwrap().iter().zip(&alive) {
        assert_eq!(result["ok"]["execution_id"], id.as_str(), "results in the order given");
        assert_eq!(result["ok"]["heartbeat_count"], 1);
    }
    // The same over an agent's event stream on another node.
    let mut stream = nodes[1].ws("", Some(agent)).await;
    stream
        .socket
        .send(tokio_tungstenite::tungstenite::Message::text(
            json!({"type": "heartbeat", "execution_ids": alive}).to_string(),
        ))
        .await
        .unwrap();
    let ack = loop {
        match stream.next(Duration::from_secs(10)).await {
            Frame::Event(message) if message["type"] == "heartbeat_ack" => break message,
            Frame::Event(_) => {}
            other => panic!("no heartbeat_ack: {}", matches!(other, Frame::Timeout)),
        }
    };
    assert_eq!(ack["accepted"], 3, "{ack}");

    alive
}

/// Named breakers are one per name cluster-wide, whichever node is asked.
async fn named_breakers_are_one_per_name(cluster: &TestCluster, agent: &str) {
    let nodes = &cluster.nodes;
    // Named breakers are one per name cluster-wide, whichever node is asked.
    for node in nodes {
        let grant = node.ok("/v1/breakers/openai/acquire", agent, json!({})).await;
        let next = &nodes[(nodes.iter().position(|n| n.url == node.url).unwrap() + 1) % 3];
        next.ok(
            "/v1/breakers/openai/record",
            agent,
            json!({"permit": grant["permit"], "outcome": "failure"}),
        )
        .await;
    }
    for node in nodes {
        let (_, list) = node.get("/v1/breakers", agent).await;
        let breakers = list["breakers"].as_array().unwrap();
        assert_eq!(breakers.len(), 1, "{list}");
        assert_eq!(
            breakers[0]["state"], "open",
            "three failures, wherever recorded: {list}"
        );
    }
}

/// Lists, overview and metrics describe the whole cluster from any node.
async fn reads_cover_the_cluster(cluster: &TestCluster, agent: &str) {
    // Lists, overview and metrics describe the whole cluster from any node.
    for node in &cluster.nodes {
        let (_, page) = node.get("/v1/executions?limit=100", agent).await;
        assert_eq!(page["executions"].as_array().unwrap().len(), 6, "{page}");
        let (_, overview) = node.get("/v1/overview", agent).await;
        assert_eq!(overview["counts"]["total"], 6, "{overview}");
        assert_eq!(overview["counts"]["completed"], 3);
        assert_eq!(overview["alive_by_state"]["running"], 3);
        assert_eq!(overview["cluster"], json!({"nodes_answered": 3, "nodes_missing": []}));
        assert_eq!(
            overview["phase_durations_ms"]["thinking"]["count"], 3,
            "one per golden path, wherever it ran"
        );
        let (_, metrics) = node.get("/v1/metrics", agent).await;
        assert_eq!(metrics["total_executions"], 6, "{metrics}");
        assert_eq!(metrics["successful_executions"], 3);
        let (status, prometheus) = node.request("GET", "/metrics", Some(&node.admin), None).await;
        assert_eq!(status, 200);
        assert!(
            prometheus
                .as_str()
                .unwrap()
                .contains("agentrack_store_shards{node=\"node-"),
            "per-node figures carry the node: {prometheus}"
        );
    }
}

/// The shards node `node` holds, as node `asking` sees it.
async fn shards_of(cluster: &TestCluster, asking: usize, node: &str) -> Vec<u64> {
    let status = cluster.status(asking).await;
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == node)
        .map(|n| {
            n["shards"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_u64)
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_nodes_executions_are_taken_over_and_none_dies_of_it() {
    // Heartbeats every 500 ms against a 3 s timeout: the failover (about one 2 s TTL) must not
    // cost any of them its life; the one abandoned on purpose dies by its deadline plus a TTL.
    let cluster = TestCluster::start(3, &["--heartbeat-timeout", "3s", "--monitor-interval", "100ms"]).await;
    let nodes = &cluster.nodes;
    let agent = nodes[0].token("agent", "acme", None).await;
    let victim = cluster.node_id(2).await;
    let mut kept = Vec::new();
    for i in 0..4 {
        let id = nodes[2].create_started(&agent, "worker", &format!("t{i}"), "u").await;
        to_thinking(&nodes[2], &agent, &id).await;
        kept.push(id);
    }
    let abandoned = nodes[2].create_started(&agent, "quitter", "t-q", "u").await;
    let mut stream = nodes[0].ws(&format!("?execution_id={abandoned}"), Some(&agent)).await;

    let mut cluster = cluster;
    cluster.nodes[2].kill();
    let killed = Instant::now();
    let nodes = &cluster.nodes;
    // The agents keep heartbeating through node 0, retrying while the shards move.
    let mut first_success = None;
    while killed.elapsed() < Duration::from_secs(6) {
        let (status, report) = nodes[0]
            .post("/v1/heartbeats", &agent, json!({"execution_ids": kept}))
            .await;
        assert_eq!(status, 200, "{report}");
        if report["accepted"] == kept.len() && first_success.is_none() {
            first_success = Some(killed.elapsed());
        }
        for result in report["results"].as_array().unwrap() {
            if let Some(error) = result.get("error") {
                assert_eq!(error["code"], "shard_unavailable", "only 503s while moving: {report}");
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let failover = first_success.expect("the executions were served again");
    eprintln!("failover: first heartbeat accepted {failover:?} after SIGKILL");
    for id in &kept {
        let (_, record) = nodes[1].get(&format!("/v1/executions/{id}"), &agent).await;
        assert_eq!(record["state"], "running", "kept heartbeating, so alive: {record}");
        assert_eq!(record["current_phase"], "thinking", "acknowledged before the kill");
    }
    // The abandoned one: dead within its deadline (3 s after its last heartbeat) plus one TTL.
    let mut seen = Vec::new();
    let dead = loop {
        match stream.next(Duration::from_secs(10)).await {
            Frame::Event(event) if event["type"] == "dead" => break event,
            Frame::Event(event) => seen.push(event),
            _ => {
                let (_, record) = nodes[0].get(&format!("/v1/executions/{abandoned}"), &agent).await;
                panic!("the abandoned execution was never declared dead: {record}; events: {seen:?}");
            }
        }
    };
    assert_eq!(dead["execution_id"], abandoned.as_str());
    let at = |field: &str| {
        dead[field]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    };
    let silence = (at("timestamp") - at("last_heartbeat")).to_std().unwrap();
    eprintln!("abandoned: declared dead {silence:?} after its last heartbeat (timeout 3 s, lease TTL 2 s)");
    // Its deadline, plus one lease TTL and one membership round (a quarter TTL) to notice.
    assert!(silence <= Duration::from_millis(3000 + 2000 + 500), "{silence:?}");
    let (_, record) = nodes[0].get(&format!("/v1/executions/{abandoned}"), &agent).await;
    assert_eq!(record["state"], "dead");
    let moves = cluster.status(0).await["recent_moves"].clone();
    assert!(
        moves
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["from_node"] == victim.as_str() && m["reason"] == "expired"),
        "{moves}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_node_loses_its_shards_and_writes_nothing_for_them() {
    // Deferred rows wait 30 s: the paused node surely holds writes for its shards when it
    // wakes, and must not get them in.
    let cluster = TestCluster::start(2, &["--heartbeat-flush", "30s", "--heartbeat-timeout", "60s"]).await;
    let agent = cluster.nodes[0].token("agent", "acme", None).await;
    let paused = cluster.node_id(1).await;
    let id = cluster.nodes[1].create_started(&agent, "worker", "t", "u").await;
    for _ in 0..3 {
        cluster.nodes[1].heartbeat(&agent, &id).await;
    }
    cluster.nodes[1].signal("STOP");
    // The other node takes every shard once the lease runs out.
    within(Duration::from_secs(20), "node 0 serves every shard", || async {
        shards_of(&cluster, 0, &cluster.node_id(0).await).await.len() == 64
    })
    .await;
    // Its owner now moves the execution on.
    cluster.nodes[0].heartbeat(&agent, &id).await;
    to_thinking(&cluster.nodes[0], &agent, &id).await;
    cluster.nodes[1].signal("CONT");
    within(Duration::from_secs(20), "the woken node serves no shard", || async {
        shards_of(&cluster, 0, &paused).await.is_empty() && cluster.status(1).await["nodes"].is_array()
    })
    .await;
    // Asked about the execution, the woken node never answers from what it held: 503 until it
    // learns it lost the shard, then it forwards to the new owner.
    let (status, record) = through_moves(&cluster.nodes[1], "GET", &format!("/v1/executions/{id}"), &agent, None).await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["current_phase"], "thinking");
    cluster.balanced().await;
    // Nothing the paused node held was written over the new owner's: the row and the log are
    // the new owner's alone (each sequence number of the execution once).
    let db = database(&cluster).await;
    let seqs: Vec<i64> = db
        .query("SELECT seq FROM events WHERE execution_id = $1 ORDER BY seq", &[&id])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let unique: BTreeSet<i64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), seqs.len(), "a sequence number twice: {seqs:?}");
    // The row follows its log (rows may lag the acknowledged events, never lead them): the new
    // owner's write of it arrives.
    let wanted = record["seq"].as_u64().unwrap() - 1;
    within(Duration::from_secs(20), "the stored row is the new owner's", || async {
        let stored: String = db
            .query_one("SELECT record FROM executions WHERE execution_id = $1", &[&id])
            .await
            .unwrap()
            .get(0);
        let stored: Value = serde_json::from_str(&stored).unwrap();
        stored["seq"].as_u64().unwrap() >= wanted
    })
    .await;
    assert!(
        cluster.nodes[1].log().contains("lost the lease") || cluster.nodes[1].log().contains("fenced"),
        "the woken node noticed: {}",
        cluster.nodes[1].log()
    );
}

async fn database(cluster: &TestCluster) -> tokio_postgres::Client {
    connect(&cluster.store).await
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_joining_and_leaving_hand_shards_over_without_a_wait() {
    let mut cluster = TestCluster::start(2, &[]).await;
    let agent = cluster.nodes[0].token("agent", "acme", None).await;
    let mut ids = Vec::new();
    for node in &cluster.nodes {
        for i in 0..3 {
            ids.push(node.create_started(&agent, "worker", &format!("t{i}"), "u").await);
        }
    }
    // A third node joins: it takes its share from the others by hand-over.
    let joined = Instant::now();
    cluster.join(&[]);
    cluster.balanced().await;
    eprintln!("join: balanced {:?} after the third node started", joined.elapsed());
    let moves = cluster.status(2).await["recent_moves"].clone();
    let reasons: BTreeSet<&str> = moves
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["reason"].as_str())
        .collect();
    assert!(reasons.contains("released"), "{moves}");
    for id in &ids {
        let path = format!("/v1/executions/{id}/heartbeat");
        let (status, _) = through_moves(&cluster.nodes[2], "POST", &path, &agent, Some(json!({}))).await;
        assert_eq!(status, 200);
    }
    // The first node leaves on SIGTERM: its shards are handed over before it exits, so the
    // others serve them at once rather than after a lease TTL.
    let leaving = cluster.node_id(0).await;
    let status = cluster.nodes[0].terminate();
    assert!(status.success());
    let left = Instant::now();
    let handed_over = within(
        Duration::from_secs(10),
        "the others serve the leaver's shards",
        || async {
            let status = cluster.status(1).await;
            status["unowned_shards"].as_array().unwrap().is_empty()
                && !status["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|n| n["node_id"] == leaving.as_str())
        },
    )
    .await;
    assert!(
        handed_over < Duration::from_secs(2),
        "handed over, not expired: {handed_over:?} (the lease TTL is 2 s)"
    );
    eprintln!(
        "leave: shards served by the others {:?} after SIGTERM returned",
        left.elapsed()
    );
    for id in &ids {
        let (status, record) = cluster.nodes[1].get(&format!("/v1/executions/{id}"), &agent).await;
        assert_eq!(status, 200, "{record}");
        assert_eq!(record["state"], "running");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_resumes_on_another_node_without_gap_or_duplicate() {
    let cluster = TestCluster::start(2, &[]).await;
    let nodes = &cluster.nodes;
    let agent = nodes[0].token("agent", "acme", None).await;
    // Executions on both nodes' shards, the stream on node 0.
    let ids = [
        nodes[0].create_started(&agent, "a", "t", "u").await,
        nodes[1].create_started(&agent, "b", "t", "u").await,
    ];
    let mut stream = nodes[0].ws("?since=0", Some(&agent)).await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let before = stream
        .until(Duration::from_secs(10), |event| {
            *seen
                .entry(event["execution_id"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
            ids.iter().all(|id| seen.get(id.as_str()) == Some(&2))
        })
        .await;
    let cursor = before.last().unwrap()["cursor"].as_str().unwrap().to_owned();
    stream.close().await;
    // Changes on both while nobody listens, then resume on node 1 from the cursor.
    for id in &ids {
        nodes[1].finish_golden_path(&agent, id).await;
    }
    let mut resumed = nodes[1].ws(&format!("?since={cursor}"), Some(&agent)).await;
    let mut done = BTreeSet::new();
    let after = resumed
        .until(Duration::from_secs(10), |event| {
            if event["type"] == "execution_completed" {
                done.insert(event["execution_id"].as_str().unwrap_or_default().to_owned());
            }
            done.len() == 2
        })
        .await;
    for id in &ids {
        let events: Vec<&Value> = before
            .iter()
            .chain(&after)
            .filter(|event| event["execution_id"] == id.as_str())
            .collect();
        let seqs: Vec<u64> = events.iter().filter_map(|event| event["seq"].as_u64()).collect();
        assert!(
            seqs.windows(2).all(|pair| pair[0] < pair[1]),
            "{id}: in order, none twice: {seqs:?}"
        );
        // Stored heartbeats are coalesced (the latest is kept); every other event is there once.
        let kinds: Vec<Value> = events
            .iter()
            .filter(|event| event["type"] != "heartbeat")
            .map(|event| event["type"].clone())
            .collect();
        assert_eq!(kinds, json!(common::GOLDEN_EVENTS).as_array().unwrap().clone(), "{id}");
    }
}

/// `agentrack load --url A,B` spreads its agents over the nodes and counts the heartbeats sent
/// through a node that forwards them apart from those sent to the owner: both succeed.
#[tokio::test(flavor = "multi_thread")]
async fn the_load_tool_measures_forwarded_and_local_heartbeats_apart() {
    let cluster = TestCluster::start(2, &[]).await;
    cluster.balanced().await;
    let urls = format!("{},{}", cluster.nodes[0].url, cluster.nodes[1].url);
    let output = tokio::process::Command::new(common::BIN)
        .args([
            "load",
            "--url",
            &urls,
            "--token",
            &cluster.admin,
            "--scenario",
            "heartbeat",
        ])
        .args(["--agents", "4", "--subscribers", "2", "--duration", "1s", "--json"])
        .env_remove("AGENTRACK_URL")
        .env_remove("AGENTRACK_TOKEN")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["total_errors"], 0, "{:#}", report["errors"]);
    for route in [
        "POST /v1/executions/{id}/heartbeat",
        "POST /v1/executions/{id}/heartbeat (forwarded)",
    ] {
        let measured = report["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == route)
            .unwrap_or_else(|| panic!("no {route} in {report:#}"));
        assert!(measured["count"].as_u64().unwrap() > 0, "{measured:#}");
    }
}

/// Nodes started at the same moment on an empty store make one admin token between them: one
/// node writes it to its data directory, the other none, and it works on both.
#[tokio::test(flavor = "multi_thread")]
async fn nodes_starting_together_make_one_admin_token() {
    let (store, _database) = common::postgres::fresh_database().await;
    let starting: Vec<_> = (0..2)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || TestServer::on_store(&store, &["--lease-ttl", "2s"], Some("none yet")))
        })
        .collect();
    let nodes: Vec<TestServer> = starting.into_iter().map(|node| node.join().unwrap()).collect();
    let files: Vec<String> = nodes
        .iter()
        .filter_map(|node| std::fs::read_to_string(node.data().join("admin.token")).ok())
        .map(|token| token.trim().to_owned())
        .collect();
    assert_eq!(files.len(), 1, "one node holds the admin token");
    for node in &nodes {
        assert!(!node.data().join("admin.token.new").exists(), "no pending token left");
        let (status, _) = node.get("/v1/cluster", &files[0]).await;
        assert_eq!(status, 200, "the admin token works on {}", node.url);
    }
    let db = connect(&store).await;
    let admins: i64 = db
        .query_one("SELECT COUNT(*) FROM tokens WHERE role = 'admin'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(admins, 1);
}
