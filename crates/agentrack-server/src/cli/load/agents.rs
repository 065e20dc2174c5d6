//! Simulated agents: the HTTP side of the load.
//!
//! All agents share one `reqwest::Client`, as the agents of one process using an SDK would: its
//! keep-alive pool gives each concurrently busy agent its own connection. A call is timed from
//! the moment it is sent until its whole body has been read, because that is what an agent
//! waits for.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::stats::{Live, Route, Stats};

/// The golden path's phases after `created`, with the metadata a real agent would attach.
const PHASES: [(&str, &str); 9] = [
    ("websocket_setup", "{}"),
    ("context_validation", r#"{"user_context": "ok"}"#),
    ("starting", r#"{"request": "weather in Paris"}"#),
    ("thinking", r#"{"reasoning": "need a forecast"}"#),
    ("llm_interaction", r#"{"model": "gpt"}"#),
    (
        "tool_execution",
        r#"{"tool_name": "get_forecast", "parameters": {"city": "Paris"}}"#,
    ),
    ("result_processing", "{}"),
    ("completing", "{}"),
    ("completed", r#"{"result": "sunny"}"#),
];

/// After a failed call an agent waits this long before its next try, so that a server that is
/// down is not hammered in a tight loop of connection errors.
pub(super) const ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// A call that did not succeed; the kind is already counted.
#[derive(Debug)]
pub(super) struct Failed;

/// What every agent shares: the client, the target and the counters.
pub(super) struct Agents {
    client: reqwest::Client,
    base: String,
    /// Whether this node forwards the heartbeats sent to it: they are counted apart.
    forwarding: bool,
    authorization: HeaderValue,
    users: usize,
    next_user: AtomicU64,
    heartbeat: Duration,
    heartbeats_per_phase: u32,
    /// `--executions`: how many executions may still be started (None: no limit).
    /// Shared by every node's agents of one run.
    remaining: Option<Arc<AtomicU64>>,
    pub(super) live: Arc<Live>,
}

/// The agents of every node: agent i's home is node i mod N, where it opens its executions
/// (a create lands on a shard the receiving node owns).
pub(super) struct Fleet {
    homes: Vec<Arc<Agents>>,
    /// The same nodes, their heartbeats counted as forwarded.
    forwarding: Vec<Arc<Agents>>,
}

impl Fleet {
    /// Agents for each of `nodes` (at least one), as [`Agents::new`].
    pub(super) fn new(
        client: &reqwest::Client,
        nodes: &[String],
        token: &str,
        behaviour: Behaviour,
        live: &Arc<Live>,
    ) -> anyhow::Result<Self> {
        let mut fleet = Self {
            homes: Vec::new(),
            forwarding: Vec::new(),
        };
        // One --executions budget for the whole run, whichever node the agents talk to.
        let remaining = behaviour.executions.map(|count| Arc::new(AtomicU64::new(count)));
        for node in nodes {
            for forwarding in [false, true] {
                let mut agents = Agents::new(client.clone(), node, token, behaviour, Arc::clone(live))?;
                agents.forwarding = forwarding;
                agents.remaining.clone_from(&remaining);
                if forwarding {
                    fleet.forwarding.push(Arc::new(agents));
                } else {
                    fleet.homes.push(Arc::new(agents));
                }
            }
        }
        anyhow::ensure!(!fleet.homes.is_empty(), "no server to load");
        Ok(fleet)
    }

    /// Agent `index`'s home node.
    pub(super) fn home(&self, index: usize) -> Arc<Agents> {
        Arc::clone(&self.homes[index % self.homes.len()])
    }

    /// Where agent `index` of the heartbeat scenario sends its heartbeats: with several nodes,
    /// every odd agent goes through the node after its home, which forwards them to the owner —
    /// so forwarded and local heartbeats are measured side by side, in the same run.
    pub(super) fn beating(&self, index: usize) -> Arc<Agents> {
        let nodes = self.homes.len();
        if nodes > 1 && index % 2 == 1 {
            Arc::clone(&self.forwarding[(index + 1) % nodes])
        } else {
            self.home(index)
        }
    }
}

/// How agents behave.
#[derive(Clone, Copy)]
pub(super) struct Behaviour {
    /// Users the executions are spread over (`load-user-0` ...).
    pub(super) users: usize,
    /// Interval between heartbeats (zero: back to back).
    pub(super) heartbeat: Duration,
    /// Heartbeats sent before each phase transition.
    pub(super) heartbeats_per_phase: u32,
    /// Total executions to start, if limited.
    pub(super) executions: Option<u64>,
}

/// What an agent of the heartbeat or batch scenario sends heartbeats for.
pub(super) enum Beat {
    /// One execution, through `POST /v1/executions/{id}/heartbeat`.
    One(String),
    /// Many executions, all in one `POST /v1/heartbeats`; the body is serialized once, so the
    /// generator's cost per call does not grow with the window.
    Many(Bytes),
}

impl Beat {
    /// A batch of heartbeats for `ids`.
    pub(super) fn many(ids: &[String]) -> Self {
        Self::Many(Bytes::from(json!({ "execution_ids": ids }).to_string()))
    }
}

/// The counts of a batch's answer (`POST /v1/heartbeats`, or a WebSocket `heartbeat_ack`);
/// `results` is only read when something was rejected, to keep the generator's CPU for the load.
#[derive(Deserialize)]
struct BatchCounts {
    accepted: u64,
    rejected: u64,
}

/// The per-id outcomes of a batch's answer.
#[derive(Deserialize)]
struct BatchResults {
    results: Vec<Value>,
}

/// Counts a batch's answer into `stats`: accepted ids as heartbeats, rejected ones as errors
/// `rejected_<code>`. Fails when the answer is not a batch report or nothing was accepted, so that
/// the agent backs off instead of hammering executions the server refuses.
pub(super) fn tally_batch(stats: &mut Stats, live: &Live, answer: &[u8]) -> Result<(), Failed> {
    let Ok(counts) = serde_json::from_slice::<BatchCounts>(answer) else {
        stats.error(None, "bad_response");
        Live::bump(&live.errors);
        return Err(Failed);
    };
    stats.heartbeats += counts.accepted;
    if counts.rejected > 0 {
        let results = serde_json::from_slice::<BatchResults>(answer).map_or_else(|_| Vec::new(), |r| r.results);
        let mut named = 0;
        for code in results.iter().filter_map(|result| result["error"]["code"].as_str()) {
            stats.error(None, format!("rejected_{code}"));
            named += 1;
        }
        for _ in named..counts.rejected {
            stats.error(None, "rejected_unknown");
        }
        live.errors.fetch_add(counts.rejected, Ordering::Relaxed);
    }
    if counts.accepted == 0 { Err(Failed) } else { Ok(()) }
}

/// The name of agent `index`.
pub(super) fn agent_name(index: usize) -> String {
    format!("load-agent-{index}")
}

/// The thread of agent `name`'s executions.
fn thread_id(name: &str) -> String {
    format!("{name}-thread")
}

/// The user id of user `index`, shared with the subscribers.
pub(super) fn user_id(index: usize) -> String {
    format!("load-user-{index}")
}

impl Agents {
    /// Agents that call `base` with `token` (an agent token: executions go to its tenant).
    pub(super) fn new(
        client: reqwest::Client,
        base: &str,
        token: &str,
        behaviour: Behaviour,
        live: Arc<Live>,
    ) -> anyhow::Result<Self> {
        let authorization = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| anyhow::anyhow!("the token contains characters not allowed in an HTTP header"))?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
            forwarding: false,
            authorization,
            users: behaviour.users.max(1),
            next_user: AtomicU64::new(0),
            heartbeat: behaviour.heartbeat,
            heartbeats_per_phase: behaviour.heartbeats_per_phase,
            remaining: behaviour.executions.map(|count| Arc::new(AtomicU64::new(count))),
            live,
        })
    }

    /// One timed call. Only a 2xx answer whose body was read counts as a success.
    async fn call(
        &self,
        stats: &mut Stats,
        route: Route,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Bytes, Failed> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header(AUTHORIZATION, self.authorization.clone());
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let started = Instant::now();
        let outcome = match request.send().await {
            Ok(response) => {
                let http_status = response.status();
                match response.bytes().await {
                    Ok(bytes) if http_status.is_success() => Ok(bytes),
                    Ok(_) => Err(format!("http_{}", http_status.as_u16())),
                    Err(error) => Err(error_kind(&error).to_owned()),
                }
            }
            Err(error) => Err(error_kind(&error).to_owned()),
        };
        match outcome {
            Ok(bytes) => {
                stats.success(route, started.elapsed());
                Live::bump(&self.live.requests);
                Ok(bytes)
            }
            Err(kind) => {
                stats.error(Some(route), kind);
                Live::bump(&self.live.errors);
                Err(Failed)
            }
        }
    }

    /// Creates and starts one execution for the next user; returns its id.
    pub(super) async fn open(
        &self,
        stats: &mut Stats,
        name: &str,
        open: &mut Option<String>,
    ) -> Result<String, Failed> {
        let user = self.next_user.fetch_add(1, Ordering::Relaxed) % self.users as u64;
        let body = json!({
            "agent_name": name,
            "thread_id": thread_id(name),
            "user_id": user_id(usize::try_from(user).unwrap_or(0)),
            // Far beyond any run: the load must not be disturbed by timeouts it did not ask for.
            "timeout_seconds": 86_400,
        });
        let created = self
            .call(
                stats,
                Route::Create,
                Method::POST,
                "/v1/executions",
                Some(Bytes::from(body.to_string())),
            )
            .await?;
        let id = serde_json::from_slice::<Value>(&created)
            .ok()
            .and_then(|record| record["execution_id"].as_str().map(str::to_owned));
        let Some(id) = id else {
            stats.error(Some(Route::Create), "bad_response");
            Live::bump(&self.live.errors);
            return Err(Failed);
        };
        *open = Some(id.clone());
        self.call(
            stats,
            Route::Start,
            Method::POST,
            &format!("/v1/executions/{id}/start"),
            Some(Bytes::from_static(b"{}")),
        )
        .await?;
        Ok(id)
    }

    /// One heartbeat for `id`.
    pub(super) async fn heartbeat(&self, stats: &mut Stats, id: &str) -> Result<(), Failed> {
        let route = if self.forwarding {
            Route::HeartbeatForwarded
        } else {
            Route::Heartbeat
        };
        self.call(
            stats,
            route,
            Method::POST,
            &format!("/v1/executions/{id}/heartbeat"),
            Some(Bytes::from_static(b"{}")),
        )
        .await?;
        stats.heartbeats += 1;
        Ok(())
    }

    /// One round of heartbeats for what `beat` names.
    async fn beat(&self, stats: &mut Stats, beat: &Beat) -> Result<(), Failed> {
        match beat {
            Beat::One(id) => self.heartbeat(stats, id).await,
            Beat::Many(body) => {
                let answer = self
                    .call(stats, Route::Batch, Method::POST, "/v1/heartbeats", Some(body.clone()))
                    .await?;
                tally_batch(stats, &self.live, &answer)
            }
        }
    }

    /// The agents' heartbeat pace: `None` for back to back.
    pub(super) fn ticker(&self) -> Option<Interval> {
        (!self.heartbeat.is_zero()).then(|| {
            let mut ticker = tokio::time::interval(self.heartbeat);
            // A slow call delays the next heartbeat rather than causing a burst to catch up,
            // as an agent with a timer would behave.
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            ticker
        })
    }

    /// Moves `id` to a final state; not timed (it is cleanup, outside the measured window).
    pub(super) async fn finish(&self, id: &str, state: &str) {
        let body = json!({"state": state, "result": "load generator done"}).to_string();
        let _ = self
            .client
            .post(format!("{}/v1/executions/{id}/state", self.base))
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
    }

    /// Claims the right to start one more execution under `--executions`.
    fn claim(&self) -> bool {
        match &self.remaining {
            None => true,
            Some(remaining) => remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1))
                .is_ok(),
        }
    }

    /// The whole golden path for one execution: create, start, the nine phases with heartbeats
    /// in between, complete.
    async fn golden_path(
        &self,
        stats: &mut Stats,
        name: &str,
        ticker: &mut Option<Interval>,
        open: &mut Option<String>,
    ) -> Result<(), Failed> {
        let id = self.open(stats, name, open).await?;
        for (phase, metadata) in PHASES {
            for _ in 0..self.heartbeats_per_phase {
                if let Some(ticker) = ticker.as_mut() {
                    ticker.tick().await;
                }
                self.heartbeat(stats, &id).await?;
            }
            let body = format!(r#"{{"phase": "{phase}", "metadata": {metadata}}}"#);
            self.call(
                stats,
                Route::Phase,
                Method::POST,
                &format!("/v1/executions/{id}/phase"),
                Some(Bytes::from(body)),
            )
            .await?;
        }
        self.call(
            stats,
            Route::State,
            Method::POST,
            &format!("/v1/executions/{id}/state"),
            Some(Bytes::from_static(
                br#"{"state": "completed", "result": {"answer": "sunny"}}"#,
            )),
        )
        .await?;
        *open = None;
        stats.executions += 1;
        Live::bump(&self.live.executions);
        Ok(())
    }

    /// Agent `index` of the golden scenario: executions one after the other until `stop` (or
    /// until `--executions` are used up). An execution cut short by `stop` is cancelled.
    pub(super) async fn run_golden(self: Arc<Self>, index: usize, stop: CancellationToken) -> Stats {
        let mut stats = Stats::default();
        let name = agent_name(index);
        let mut ticker = self.ticker();
        while !stop.is_cancelled() && self.claim() {
            let mut open = None;
            let outcome = tokio::select! {
                biased;
                () = stop.cancelled() => None,
                outcome = self.golden_path(&mut stats, &name, &mut ticker, &mut open) => Some(outcome),
            };
            if let Some(id) = open {
                // Cut short or failed half-way: do not leave it for the monitor to declare dead.
                self.finish(&id, "cancelled").await;
            }
            if let Some(Err(Failed)) = outcome {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(ERROR_BACKOFF) => {}
                }
            }
        }
        stats
    }

    /// An agent of the heartbeat or batch scenario: heartbeats for `beat`, back to back (or
    /// every `--heartbeat`), until `stop`.
    pub(super) async fn run_heartbeats(self: Arc<Self>, beat: Beat, stop: CancellationToken) -> Stats {
        let mut stats = Stats::default();
        let mut ticker = self.ticker();
        loop {
            let outcome = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                outcome = async {
                    if let Some(ticker) = ticker.as_mut() {
                        ticker.tick().await;
                    }
                    self.beat(&mut stats, &beat).await
                } => outcome,
            };
            if outcome.is_err() {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(ERROR_BACKOFF) => {}
                }
            }
        }
        stats
    }

    /// Worker `index` of the baseline: `GET /healthz` back to back until `stop`, with the same
    /// client and the same headers as the agents.
    pub(super) async fn run_baseline(self: Arc<Self>, stop: CancellationToken) -> Stats {
        let mut stats = Stats::default();
        loop {
            let outcome = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                outcome = self.call(&mut stats, Route::Health, Method::GET, "/healthz", None) => outcome,
            };
            if outcome.is_err() {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(ERROR_BACKOFF) => {}
                }
            }
        }
        stats
    }
}

/// The report's name for a failed call.
fn error_kind(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_body() || error.is_decode() {
        "body"
    } else {
        "request"
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn a_batch_answer_counts_accepted_ids_as_heartbeats_and_rejected_ones_by_code() {
        let live = Live::default();
        let mut stats = Stats::default();
        let answer = br#"{"accepted": 2, "rejected": 2, "results": [
            {"ok": {"execution_id": "exec_1"}}, {"error": {"code": "not_found", "message": "no"}},
            {"ok": {"execution_id": "exec_2"}}, {"error": {"code": "conflict", "message": "done"}}]}"#;
        assert!(tally_batch(&mut stats, &live, answer).is_ok());
        assert_eq!(stats.heartbeats, 2);
        assert_eq!(stats.errors["rejected_not_found"], 1);
        assert_eq!(stats.errors["rejected_conflict"], 1);
        assert_eq!(Live::read(&live.errors), 2);
    }

    #[test]
    fn a_batch_answer_with_nothing_accepted_or_no_counts_fails() {
        let live = Live::default();
        let mut stats = Stats::default();
        assert!(tally_batch(&mut stats, &live, br#"{"accepted": 0, "rejected": 1, "results": []}"#).is_err());
        assert_eq!(stats.errors["rejected_unknown"], 1);
        assert!(tally_batch(&mut stats, &live, b"<html>").is_err());
        assert_eq!(stats.errors["bad_response"], 1);
        assert_eq!(stats.heartbeats, 0);
    }
}
