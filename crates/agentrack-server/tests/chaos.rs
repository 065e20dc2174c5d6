//! Chaos: three nodes on PostgreSQL under load — agents driving golden paths and heartbeats
//! through all three, a subscriber on each — lose one node to SIGKILL, have another paused
//! (SIGSTOP) past its lease and woken, and see PostgreSQL crash and come back. Afterwards:
//!
//! - every change an agent had acknowledged is readable from every surviving node;
//! - the executions that kept heartbeating are alive, and no agent's execution died of the
//!   chaos; those abandoned on purpose died by their deadline, or — their node failed first —
//!   by the takeover plus the window agents get to reconnect;
//! - each execution has exactly one terminal event and no sequence number twice;
//! - every subscriber, resuming with its cursor wherever its node went away, saw every stored
//!   event once, in order;
//! - the paused node wrote nothing for the shards it lost: along each shard's log the fencing
//!   numbers never decrease.
//!
//! The schedule moves on conditions (the survivors serve every shard, the store is reported
//! failing, agents got further), never on fixed waits; the whole test takes well under two
//! minutes. It runs its own PostgreSQL, since it crashes it.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::pg_cluster::PgCluster;
use common::postgres::connect;
use common::{golden_phases, within};
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The heartbeat timeout of the nodes, in seconds (their lease TTL is 2 s). Four times the
/// lease: an agent here heartbeats before every step, but a step may wait out a takeover, and on
/// a machine starved by other work (CI beside builds) every wait stretches — the agents must
/// not die of the machine's slowness, only the abandoned executions of their silence.
const HEARTBEAT_TIMEOUT: u64 = 8;
const ARGS: [&str; 6] = [
    "--heartbeat-timeout",
    "8s",
    "--lease-ttl",
    "2s",
    "--monitor-interval",
    "100ms",
];

/// A client of the cluster: tries the nodes in turn from its own, on to the next when one does
/// not answer (dead or paused) or answers 503, as a client behind a load balancer would.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    urls: Arc<Vec<String>>,
    token: String,
    home: usize,
}

impl Client {
    fn new(urls: &Arc<Vec<String>>, token: &str, home: usize) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap(),
            urls: Arc::clone(urls),
            token: token.to_owned(),
            home,
        }
    }

    /// POST until a node accepts it; panics on a refusal other than 503 (which must never
    /// happen to a well-formed request here) or after a minute — except a 409 after an attempt
    /// that timed out, which may have been applied after all: then `Err` with the refusal.
    async fn post(&self, path: &str, body: &Value) -> Result<Value, Value> {
        let started = Instant::now();
        let mut in_doubt = false;
        for attempt in 0.. {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "POST {path} never accepted"
            );
            let url = &self.urls[(self.home + attempt) % self.urls.len()];
            let Ok(response) = self
                .http
                .post(format!("{url}{path}"))
                .bearer_auth(&self.token)
                .json(body)
                .send()
                .await
            else {
                in_doubt = true;
                continue;
            };
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            match status {
                200..=299 => return Ok(answer),
                503 => tokio::time::sleep(Duration::from_millis(50)).await,
                409 if in_doubt => return Err(answer),
                _ => panic!("POST {path} {body} → {status} {answer}"),
            }
        }
        unreachable!()
    }
}

/// What the agents had acknowledged.
#[derive(Default)]
struct Ledger {
    /// Executions driven through the golden path and acknowledged completed.
    completed: Mutex<Vec<String>>,
    /// Golden paths finished since the start.
    paths: AtomicUsize,
}

/// Waits until the agents have finished six golden paths more than they had: they go on.
async fn six_more_paths(ledger: &Ledger, what: &str) {
    let at_least = ledger.paths.load(Ordering::Relaxed) + 6;
    within(Duration::from_secs(30), what, || async {
        ledger.paths.load(Ordering::Relaxed) >= at_least
    })
    .await;
}

/// One agent: golden paths, one after the other, a heartbeat before each step. A step refused
/// as already done after an attempt timed out (the node applied it late) counts as done.
async fn golden_agent(client: Client, index: usize, stop: Arc<AtomicBool>, ledger: Arc<Ledger>) {
    while !stop.load(Ordering::Relaxed) {
        let body =
            json!({"agent_name": "golden", "thread_id": format!("t{index}"), "user_id": "u", "timeout_seconds": 600});
        let created = client.post("/v1/executions", &body).await.unwrap();
        let id = created["execution_id"].as_str().unwrap().to_owned();
        let apply = |path: String, body: Value| {
            let client = client.clone();
            async move {
                if let Err(refusal) = client.post(&path, &body).await {
                    let error = &refusal["error"];
                    // Refused as a move to where it already is: the earlier attempt applied.
                    let repeated = ["invalid_transition", "invalid_lifecycle"]
                        .contains(&error["code"].as_str().unwrap_or(""))
                        && error["from"] == error["to"];
                    let done = repeated || (error["code"] == "terminal" && error["state"] == "completed");
                    assert!(done, "{path}: {refusal}");
                }
            }
        };
        apply(format!("/v1/executions/{id}/start"), json!({})).await;
        for (phase, metadata) in golden_phases() {
            client
                .post(&format!("/v1/executions/{id}/heartbeat"), &json!({}))
                .await
                .unwrap();
            apply(
                format!("/v1/executions/{id}/phase"),
                json!({"phase": phase, "metadata": metadata}),
            )
            .await;
        }
        let done = json!({"state": "completed", "result": {"n": index}});
        apply(format!("/v1/executions/{id}/state"), done).await;
        ledger.completed.lock().push(id);
        ledger.paths.fetch_add(1, Ordering::Relaxed);
    }
}

/// Heartbeats for `ids` every 500 ms (an eighth of the timeout), as one batch through a node.
async fn heartbeater(client: Client, ids: Vec<String>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let mut pending = ids.clone();
        let started = Instant::now();
        // Each id until it is counted (ids on a moving shard are refused one by one).
        while !pending.is_empty() && started.elapsed() < Duration::from_secs(30) {
            let report = client
                .post("/v1/heartbeats", &json!({"execution_ids": pending}))
                .await
                .unwrap();
            let results = report["results"].as_array().unwrap().clone();
            pending = pending
                .into_iter()
                .zip(results)
                .filter(|(_, result)| {
                    let refused = result.get("error").cloned();
                    if let Some(error) = &refused {
                        assert_eq!(error["code"], "shard_unavailable", "{result}");
                    }
                    refused.is_some()
                })
                .map(|(id, _)| id)
                .collect();
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A subscriber: the event stream of one node, resumed with the last cursor on the next node
/// whenever its connection ends.
async fn subscriber(client: Client, stop: Arc<AtomicBool>, seen: Arc<Mutex<Vec<Value>>>, reconnects: Arc<AtomicUsize>) {
    let mut cursor = "0".to_owned();
    let mut attempt = 0;
    while !stop.load(Ordering::Relaxed) {
        let url = &client.urls[(client.home + attempt) % client.urls.len()];
        let ws = format!("{}/v1/events?since={cursor}", url.replacen("http://", "ws://", 1));
        let mut request = ws.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {}", client.token).parse().unwrap());
        let connected = tokio::time::timeout(Duration::from_secs(1), tokio_tungstenite::connect_async(request)).await;
        let Ok(Ok((mut socket, _))) = connected else {
            attempt += 1;
            continue;
        };
        loop {
            // A paused node sends nothing for a while; the stream stays open.
            let next = tokio::time::timeout(Duration::from_millis(200), socket.next()).await;
            match next {
                Err(_) if stop.load(Ordering::Relaxed) => return,
                Ok(Some(Ok(Message::Text(text)))) => {
                    let event: Value = serde_json::from_str(&text).unwrap();
                    if let Some(at) = event["cursor"].as_str() {
                        at.clone_into(&mut cursor);
                    }
                    if event["type"] != "snapshot" {
                        seen.lock().push(event);
                    }
                }
                Err(_) | Ok(Some(Ok(_))) => {}
                Ok(None | Some(Err(_))) => break,
            }
        }
        reconnects.fetch_add(1, Ordering::Relaxed);
        attempt += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[allow(clippy::too_many_lines, reason = "one schedule, read top to bottom")]
async fn three_nodes_survive_a_kill_a_pause_and_a_database_crash() {
    let began = Instant::now();
    let pg = PgCluster::start();
    let mut cluster = TestCluster::start_on(&pg.url, 3, &ARGS).await;
    let token = cluster.nodes[0].token("agent", "acme", None).await;
    let urls = Arc::new(cluster.nodes.iter().map(|node| node.url.clone()).collect::<Vec<_>>());
    let stop = Arc::new(AtomicBool::new(false));
    let stop_subscribers = Arc::new(AtomicBool::new(false));
    let ledger = Arc::new(Ledger::default());

    // Executions heartbeated all along, and executions abandoned on purpose: some on each node.
    let mut kept = Vec::new();
    let mut abandoned = Vec::new();
    for (index, node) in cluster.nodes.iter().enumerate() {
        for round in 0..3 {
            kept.push(
                node.create_started(&token, "kept", &format!("k{index}{round}"), "u")
                    .await,
            );
        }
        abandoned.push(
            node.create_started(&token, "abandoned", &format!("a{index}"), "u")
                .await,
        );
    }
    let subscribers: Vec<_> = (0..3)
        .map(|home| {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let reconnects = Arc::new(AtomicUsize::new(0));
            let task = tokio::spawn(subscriber(
                Client::new(&urls, &token, home),
                Arc::clone(&stop_subscribers),
                Arc::clone(&seen),
                Arc::clone(&reconnects),
            ));
            (task, seen, reconnects)
        })
        .collect();
    let mut load = vec![tokio::spawn(heartbeater(
        Client::new(&urls, &token, 0),
        kept.clone(),
        Arc::clone(&stop),
    ))];
    for index in 0..6 {
        load.push(tokio::spawn(golden_agent(
            Client::new(&urls, &token, index % 3),
            index,
            Arc::clone(&stop),
            Arc::clone(&ledger),
        )));
    }
    six_more_paths(&ledger, "the agents are under way").await;

    // 1. SIGKILL node 2. The survivors take its shards over within a lease TTL.
    let killed_id = cluster.node_id(2).await;
    cluster.nodes[2].kill();
    let killed = Instant::now();
    within(Duration::from_secs(20), "the survivors serve every shard", || async {
        let status = cluster.status(0).await;
        status["unowned_shards"].as_array().unwrap().is_empty()
            && !status["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|node| node["node_id"] == killed_id.as_str() && !node["shards"].as_array().unwrap().is_empty())
    })
    .await;
    let failover = killed.elapsed();
    six_more_paths(&ledger, "the agents go on after the kill").await;

    // 2. SIGSTOP node 1 until node 0 has taken every shard (its lease ran out), then SIGCONT.
    let paused_id = cluster.node_id(1).await;
    let leases_before = shard_leases(&cluster.store).await;
    cluster.nodes[1].signal("STOP");
    let paused = Instant::now();
    within(Duration::from_secs(20), "node 0 serves every shard", || async {
        let status = cluster.status(0).await;
        status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|node| node["node_id"] != paused_id.as_str())
            .map(|node| node["shards"].as_array().unwrap().len())
            .sum::<usize>()
            == 64
    })
    .await;
    cluster.nodes[1].signal("CONT");
    let pause = paused.elapsed();
    cluster.balanced().await;
    six_more_paths(&ledger, "the agents go on after the pause").await;

    // 3. PostgreSQL crashes and comes back; the nodes notice and recover by themselves.
    pg.crash();
    within(
        Duration::from_secs(20),
        "the nodes report the store failing",
        || async { cluster.nodes[0].request("GET", "/readyz", None, None).await.0 == 503 },
    )
    .await;
    pg.restart();
    within(Duration::from_secs(30), "both nodes are ready again", || async {
        cluster.nodes[0].request("GET", "/readyz", None, None).await.0 == 200
            && cluster.nodes[1].request("GET", "/readyz", None, None).await.0 == 200
    })
    .await;
    cluster.balanced().await;
    six_more_paths(&ledger, "the agents go on after the crash").await;

    // The load stops (each agent finishes its path).
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let survivors = [&cluster.nodes[0], &cluster.nodes[1]];
    let admin = cluster.admin.clone();

    // Every acknowledged change, from every surviving node.
    let completed = ledger.completed.lock().clone();
    for node in survivors {
        for id in &completed {
            let (status, record) = node.get(&format!("/v1/executions/{id}"), &admin).await;
            assert_eq!(status, 200, "{record}");
            assert_eq!(record["state"], "completed", "{id} on {}: {record}", node.url);
            assert_eq!(record["phase_history"].as_array().unwrap().len(), 9, "{id}");
        }
        for id in &kept {
            let (_, record) = node.get(&format!("/v1/executions/{id}"), &admin).await;
            assert_eq!(record["state"], "running", "kept heartbeating, so alive: {record}");
        }
    }
    // The abandoned ones died by the rule a takeover restores them with: at their deadline
    // (their last heartbeat plus the timeout; the store may lag a heartbeat flush behind), or,
    // when their shard was taken over since, no earlier than the takeover plus the window
    // agents get to reconnect (so that no agent still heartbeating dies of it). Half a second
    // covers the monitor's tick and a commit on this busy machine.
    // A shard taken again late in the run (after the database came back) gives its abandoned
    // executions a fresh reconnect window, so their deaths may still be ahead.
    within(Duration::from_secs(40), "the abandoned executions die", || async {
        for id in &abandoned {
            let (_, record) = survivors[0].get(&format!("/v1/executions/{id}"), &admin).await;
            if record["state"] != "dead" {
                return false;
            }
        }
        true
    })
    .await;
    let db = connect(&cluster.store).await;
    let mut dead_after = Vec::new();
    for id in &abandoned {
        let (_, record) = survivors[0].get(&format!("/v1/executions/{id}"), &admin).await;
        assert_eq!(record["state"], "dead", "{record}");
        let at = |field: &str| {
            record[field]
                .as_str()
                .unwrap()
                .parse::<chrono::DateTime<chrono::Utc>>()
                .unwrap()
        };
        let (dead_at, last_heartbeat) = (at("completed_at"), at("last_heartbeat"));
        let shard = i32::from(agentrack_server::store::shard_of(id.parse().unwrap(), 64));
        let taken_ms: Option<i64> = db
            .query_one(
                "SELECT MAX(at_ms) FROM shard_moves WHERE shard_id = $1 AND to_node IS NOT NULL AND at_ms <= $2",
                &[&shard, &dead_at.timestamp_millis()],
            )
            .await
            .unwrap()
            .get(0);
        let deadline = last_heartbeat + chrono::Duration::seconds(i64::try_from(HEARTBEAT_TIMEOUT).unwrap() + 1);
        let reconnect = chrono::Duration::from_std(agentrack_server::cluster::RECONNECT).unwrap();
        let due = taken_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map_or(deadline, |taken| deadline.max(taken + reconnect));
        assert!(
            dead_at <= due + chrono::Duration::milliseconds(500),
            "{id} declared dead at {dead_at}, due by {due} (taken over at {taken_ms:?}): {record}"
        );
        dead_after.push((dead_at - last_heartbeat).to_std().unwrap());
    }

    // The log: one terminal event per finished execution, no sequence number twice, and the
    // fencing numbers never go back along a shard's log (nobody wrote for a shard it lost).
    let twice: i64 = db
        .query_one(
            "SELECT COUNT(*) FROM (SELECT execution_id, seq FROM events WHERE execution_id IS NOT NULL
             GROUP BY 1, 2 HAVING COUNT(*) > 1) t",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(twice, 0, "a sequence number twice");
    let terminal: BTreeMap<String, i64> = db
        .query(
            "SELECT execution_id, COUNT(*) FROM events WHERE type IN
             ('execution_completed', 'execution_failed', 'execution_cancelled', 'timed_out', 'dead')
             GROUP BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    for id in completed.iter().chain(&abandoned) {
        if terminal.get(id) != Some(&1) {
            let log: Vec<String> = db
                .query(
                    "SELECT shard_id, global_seq, seq, type, range_id FROM events WHERE execution_id = $1
                     ORDER BY seq",
                    &[id],
                )
                .await
                .unwrap()
                .iter()
                .map(|row| {
                    let (shard, global, seq, kind, fence): (i32, i64, i64, String, i64) =
                        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
                    format!("{shard}/{global} seq {seq} {kind} fence {fence}")
                })
                .collect();
            let row: Option<String> = db
                .query_opt("SELECT record FROM executions WHERE execution_id = $1", &[id])
                .await
                .unwrap()
                .map(|row| row.get(0));
            panic!(
                "{id}: {:?} terminal events; its log: {log:#?}; its row: {row:?}",
                terminal.get(id)
            );
        }
    }
    for id in &kept {
        assert_eq!(terminal.get(id), None, "{id} is alive");
    }
    let backwards: i64 = db
        .query_one(
            "SELECT COUNT(*) FROM (SELECT range_id < MAX(range_id) OVER (PARTITION BY shard_id ORDER BY global_seq
                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS back FROM events) t WHERE back",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        backwards, 0,
        "an event written under a fencing number that had moved on"
    );
    // In particular, nothing under the paused node's leases after they were taken from it.
    for (shard, (owner, range_id)) in &leases_before {
        if owner != &paused_id {
            continue;
        }
        let late: i64 = db
            .query_one(
                "SELECT COUNT(*) FROM events WHERE shard_id = $1 AND range_id = $2
                 AND global_seq > (SELECT COALESCE(MIN(global_seq), 9223372036854775807) FROM events
                                   WHERE shard_id = $1 AND range_id > $2)",
                &[&i32::from(*shard), range_id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(late, 0, "shard {shard}: the paused node wrote after losing it");
    }

    // Subscribers: every stored event once, in order per execution, across their resumes.
    let stored: BTreeSet<(String, i64)> = db
        .query(
            "SELECT execution_id, seq FROM events WHERE execution_id IS NOT NULL AND type <> 'heartbeat'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let mut reconnected = Vec::new();
    for (index, (_, seen, reconnects)) in subscribers.iter().enumerate() {
        within(Duration::from_secs(20), "the subscriber caught up", || async {
            let seen = seen.lock();
            let got: BTreeSet<(String, i64)> = seen
                .iter()
                .filter(|event| event["type"] != "heartbeat")
                .filter_map(|event| Some((event["execution_id"].as_str()?.to_owned(), event["seq"].as_i64()?)))
                .collect();
            got == stored
        })
        .await;
        let seen = seen.lock();
        let mut last: BTreeMap<&str, &Value> = BTreeMap::new();
        for event in seen.iter() {
            let (Some(id), Some(seq)) = (event["execution_id"].as_str(), event["seq"].as_i64()) else {
                continue;
            };
            if let Some(previous) = last.insert(id, event) {
                assert!(
                    previous["seq"].as_i64() < Some(seq),
                    "subscriber {index}: {event} after {previous} (a duplicate or out of order)"
                );
            }
        }
        reconnected.push(reconnects.load(Ordering::Relaxed));
    }
    stop_subscribers.store(true, Ordering::Relaxed);
    for (task, _, _) in subscribers {
        task.await.unwrap();
    }
    eprintln!(
        "chaos: {} golden paths, {} kept alive, {} abandoned (dead {:?} after their last heartbeat); \
         SIGKILL → survivors serve every shard in {failover:?}; paused for {pause:?}; \
         subscriber reconnects {reconnected:?}; {} stored events; took {:?}",
        completed.len(),
        kept.len(),
        abandoned.len(),
        dead_after,
        stored.len(),
        began.elapsed()
    );
    assert!(reconnected[2] > 0, "the killed node's subscriber resumed elsewhere");
    drop(cluster);
}

/// Every shard's owner and fencing number, from the store.
async fn shard_leases(store: &str) -> BTreeMap<u16, (String, i64)> {
    connect(store)
        .await
        .query("SELECT shard_id, COALESCE(owner, ''), range_id FROM shards", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (u16::try_from(row.get::<_, i32>(0)).unwrap(), (row.get(1), row.get(2))))
        .collect()
}
