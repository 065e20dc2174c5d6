//! Remote mode: `RemoteCore`, the same methods as `TrackerCore`, answered by an agentrack server.
//!
//! One HTTP connection pool and one small tokio runtime per process, shared by every remote
//! tracker and every thread. A call blocks its Python thread with the GIL released (the async
//! methods run it on a worker thread, see `_tracker.py`). Heartbeats never wait on the network:
//! they are counted in memory and sent in batches (`POST /v1/heartbeats`) at least every flush
//! interval, and before any other request of the same tracker, so that a read after a heartbeat
//! sees it. A request is retried across the node URLs with a growing pause until the retry bound
//! passes; then `AgentrackUnavailableError` is raised, never a `False` that would mean "unknown
//! execution".

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use agentrack::{
    AgentState, BreakerStatus, CancellationToken, ExecutionId, ExecutionRecord, ExecutionState, Metrics, Notification,
    TimeoutConfig, TimeoutStatus,
};
use chrono::Utc;
use futures_util::StreamExt;
use parking_lot::Mutex;
use pyo3::exceptions::{PyConnectionError, PyPermissionError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::convert::{json_to_py, py_to_json, py_to_map, secs_obj};
use crate::record::RecordView;
use crate::tracker::{
    agent_state_dict, breaker_dict, history_list, id_of, metrics_dict, some, state_arg, text, timeout_dict,
};
use crate::types::{duration_arg, extract_timeout_config, types};

pyo3::create_exception!(
    agentrack._core,
    AgentrackUnavailableError,
    PyConnectionError,
    "The agentrack server could not be reached (every node URL, retried until the retry bound)."
);

/// Most ids one heartbeat batch carries (the server's limit).
const MAX_BATCH: usize = 10_000;
/// Most heartbeats one id of a batch stands for (the server's limit).
const MAX_COUNT: u32 = 1_000_000;
/// Page size of list requests (the server's largest).
const PAGE: usize = 1000;
/// Terminal events kept for `_stream_events` at most.
const SEEN_CAP: usize = 10_000;

#[allow(
    clippy::expect_used,
    reason = "not input-derived: the runtime fails to build only if the OS refuses the process threads, and then nothing could run"
)]
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("agentrack-remote")
            .enable_all()
            .build()
            .expect("the remote mode's runtime")
    })
}

/// The process's one connection pool.
#[allow(
    clippy::expect_used,
    reason = "not input-derived: the builder fails only when TLS cannot initialise, and then no request could be made"
)]
fn http() -> &'static reqwest::Client {
    static HTTP: OnceLock<reqwest::Client> = OnceLock::new();
    HTTP.get_or_init(|| {
        reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(15))
            .pool_max_idle_per_host(64)
            .build()
            .expect("the remote mode's HTTP client")
    })
}

/// A server's answer: its status and JSON body (`null` when it had none).
struct Answer {
    status: u16,
    body: Value,
}

/// No node answered within the retry bound; why, for the exception.
struct Unavailable(String);

/// A remote tracker's connection to its server: the node URLs, the token, the settings it gives
/// the executions it creates, and the heartbeats not yet sent.
pub(crate) struct Client {
    urls: Vec<String>,
    current: AtomicUsize,
    auth: String,
    retry_for: Duration,
    heartbeat_timeout: Duration,
    execution_timeout: Duration,
    /// The constructor's `timeout_config`, sent with each creation when one was given.
    timeout_config: Option<TimeoutConfig>,
    /// Heartbeats counted but not sent: id → how many.
    pending: Mutex<HashMap<ExecutionId, u32>>,
    /// Held while heartbeats are sent, so that a request waiting for them sees them sent.
    flushing: tokio::sync::Mutex<()>,
    /// Executions known to be finished (a heartbeat for one is `False` without asking).
    finished: Mutex<HashSet<ExecutionId>>,
    /// The executions this tracker created: their deaths and timeouts are its callbacks'.
    created: Mutex<HashSet<ExecutionId>>,
    /// Deaths (`true`) and timeouts of created executions heard on the event stream, not yet
    /// handed to the monitor.
    expired: Mutex<Vec<(bool, ExecutionId)>>,
    /// Every death and timeout heard on the event stream, for `_stream_events`.
    seen: Mutex<VecDeque<Value>>,
    watching: AtomicBool,
    closed: CancellationToken,
}

impl Client {
    fn base(&self) -> (usize, &str) {
        let index = self.current.load(Ordering::Relaxed) % self.urls.len();
        (index, &self.urls[index])
    }

    /// Moves on to the next node after `index` failed (unless another thread already did).
    fn fail_over(&self, index: usize) {
        let _ = self.current.compare_exchange(
            index,
            (index + 1) % self.urls.len(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Sends one request, retrying on another node (and after a growing pause once every node
    /// was tried) while no node answers or the answer is "try again" (429, 502-504).
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Answer, Unavailable> {
        let deadline = Instant::now() + self.retry_for;
        // A retried change must not apply twice: servers that support the key answer a repeat
        // with the first answer.
        let key = (method == Method::POST).then(|| ExecutionId::new().to_string());
        let mut pause = Duration::from_millis(20);
        let mut attempts = 0usize;
        loop {
            let (index, base) = self.base();
            let mut request = http()
                .request(method.clone(), format!("{base}{path}"))
                .header(reqwest::header::AUTHORIZATION, &self.auth);
            if !query.is_empty() {
                request = request.query(query);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Some(key) = &key {
                request = request.header("Idempotency-Key", key);
            }
            let why = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    match response.bytes().await {
                        Ok(bytes) => {
                            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                            // An open breaker's 503 is an answer, not an outage.
                            if !matches!(status, 429 | 502..=504) || body["error"]["code"] == "circuit_open" {
                                return Ok(Answer { status, body });
                            }
                            format!("{base} answered {status}: {}", message(&body))
                        }
                        Err(error) => format!("{base} did not finish its answer: {error}"),
                    }
                }
                Err(error) => format!("cannot reach {base}: {error}"),
            };
            self.fail_over(index);
            attempts += 1;
            if attempts % self.urls.len() == 0 {
                if Instant::now() + pause > deadline {
                    return Err(Unavailable(format!(
                        "the agentrack server is unavailable ({why}; gave up after {:.1} s and {attempts} attempts on {})",
                        self.retry_for.as_secs_f64(),
                        self.urls.join(", ")
                    )));
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        }
    }

    /// Sends the heartbeats counted so far: each id once, with how many times it was beaten.
    /// Ids the server refuses as unknown or finished are remembered as finished; beats no node
    /// took (or beyond one batch's count limit) are counted again for the next flush.
    async fn flush(&self) {
        let _sending = self.flushing.lock().await;
        let beats: Vec<(ExecutionId, u32)> = std::mem::take(&mut *self.pending.lock()).into_iter().collect();
        if beats.is_empty() {
            return;
        }
        let later = |beats: &[(ExecutionId, u32)]| {
            let mut pending = self.pending.lock();
            for &(id, count) in beats.iter().filter(|(_, count)| *count > 0) {
                *pending.entry(id).or_default() += count;
            }
        };
        let over: Vec<(ExecutionId, u32)> = beats.iter().map(|&(id, n)| (id, n.saturating_sub(MAX_COUNT))).collect();
        later(&over);
        for chunk in beats.chunks(MAX_BATCH) {
            let beats: Vec<Value> = chunk
                .iter()
                .map(|(id, count)| json!({ "execution_id": id.to_string(), "count": (*count).min(MAX_COUNT) }))
                .collect();
            let body = json!({ "beats": beats });
            if let Ok(answer) = self.send(Method::POST, "/v1/heartbeats", &[], Some(&body)).await {
                let results = answer.body["results"].as_array().cloned().unwrap_or_default();
                let mut finished = self.finished.lock();
                for ((id, _), result) in chunk.iter().zip(results) {
                    if matches!(result["error"]["code"].as_str(), Some("terminal" | "not_found")) {
                        finished.insert(*id);
                    }
                }
            } else {
                let unsent: Vec<(ExecutionId, u32)> = chunk.iter().map(|&(id, n)| (id, n.min(MAX_COUNT))).collect();
                later(&unsent);
            }
        }
    }

    /// Sends the pending heartbeats, then the request: the blocking call behind every method,
    /// with the GIL released.
    fn call(
        &self,
        py: Python<'_>,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> PyResult<Answer> {
        py.detach(|| {
            runtime().block_on(async {
                if self.pending.lock().is_empty() {
                    // A flush in flight carries heartbeats given before this call.
                    drop(self.flushing.lock().await);
                } else {
                    self.flush().await;
                }
                self.send(method, path, query, body).await
            })
        })
        .map_err(|Unavailable(why)| AgentrackUnavailableError::new_err(why))
    }

    /// The execution, or `None` when the server does not know it (or the caller may not see it).
    pub(crate) fn fetch(&self, id: ExecutionId) -> PyResult<Option<ExecutionRecord>> {
        Python::attach(|py| {
            let answer = self.call(py, Method::GET, &format!("/v1/executions/{id}"), &[], None)?;
            answer_body(answer)?.map(record_of).transpose()
        })
    }

    /// Every execution matching `filter` the token may see, oldest first.
    fn list(&self, py: Python<'_>, filter: &[(&str, String)]) -> PyResult<Vec<ExecutionRecord>> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query: Vec<(&str, String)> = filter.to_vec();
            query.push(("limit", PAGE.to_string()));
            if let Some(cursor) = cursor.take() {
                query.push(("cursor", cursor));
            }
            let answer = self.call(py, Method::GET, "/v1/executions", &query, None)?;
            let Some(mut page) = answer_body(answer)? else {
                break;
            };
            for record in page["executions"]
                .as_array_mut()
                .map(std::mem::take)
                .unwrap_or_default()
            {
                all.push(record_of(record)?);
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        // The server lists newest first; the original, oldest first.
        all.reverse();
        Ok(all)
    }

    /// Sends a state change; whether the server made it.
    fn set_state(&self, py: Python<'_>, id: ExecutionId, body: &Value) -> PyResult<bool> {
        let answer = self.call(py, Method::POST, &format!("/v1/executions/{id}/state"), &[], Some(body))?;
        let changed = answer_body(answer)?.map(record_of).transpose()?;
        match changed {
            Some(record) => {
                if record.state.is_terminal() {
                    self.finished.lock().insert(id);
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn remember(&self, event: Value) {
        let kind = event["type"].as_str();
        if !matches!(kind, Some("dead" | "timed_out")) {
            return;
        }
        if let Some(id) = event["execution_id"]
            .as_str()
            .and_then(|id| id.parse::<ExecutionId>().ok())
        {
            self.finished.lock().insert(id);
            if self.created.lock().contains(&id) {
                self.expired.lock().push((kind == Some("dead"), id));
            }
        }
        let mut seen = self.seen.lock();
        if seen.len() == SEEN_CAP {
            seen.pop_front();
        }
        seen.push_back(event);
    }

    /// Reads the event stream until the tracker closes, reconnecting (to the next node, from the
    /// last event seen) when it drops.
    async fn watch(self: Arc<Self>) {
        let mut since: Option<String> = None;
        loop {
            let (index, base) = self.base();
            let mut url = format!("{}/v1/events", base.replacen("http", "ws", 1));
            if let Some(since) = &since {
                url = format!("{url}?since={since}");
            }
            let connected = match tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url) {
                Ok(mut request) => {
                    if let Ok(value) = self.auth.parse() {
                        request.headers_mut().insert(reqwest::header::AUTHORIZATION, value);
                    }
                    tokio::select! {
                        () = self.closed.cancelled() => return,
                        connected = tokio_tungstenite::connect_async(request) => connected.ok(),
                    }
                }
                Err(_) => None,
            };
            if let Some((mut stream, _)) = connected {
                loop {
                    let message = tokio::select! {
                        () = self.closed.cancelled() => return,
                        message = stream.next() => message,
                    };
                    match message {
                        Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => {
                            if let Ok(event) = serde_json::from_str::<Value>(&text) {
                                if let Some(cursor) = event["cursor"].as_str() {
                                    since = Some(cursor.to_owned());
                                }
                                self.remember(event);
                            }
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    }
                }
            }
            self.fail_over(index);
            tokio::select! {
                () = self.closed.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }
}

fn message(body: &Value) -> String {
    let code = body["error"]["code"].as_str().unwrap_or("error");
    let text = body["error"]["message"].as_str().unwrap_or("no details");
    format!("{code}: {text}")
}

/// The body of a success; `None` for 404 (unknown, or not the caller's) and 409 (finished, or a
/// lifecycle move the server refuses);
/// other refusals as the Python error they mean.
fn answer_body(answer: Answer) -> PyResult<Option<Value>> {
    let why = || {
        format!(
            "the agentrack server refused the request ({} {})",
            answer.status,
            message(&answer.body)
        )
    };
    match answer.status {
        200..=299 => Ok(Some(answer.body)),
        // The server keeps the phase rules strictly (the in-process core, leniently): a refused
        // transition is an error, not the `False` of an unknown execution.
        409 if answer.body["error"]["code"] == "invalid_transition" => Err(PyValueError::new_err(why())),
        404 | 409 => Ok(None),
        400 | 413 | 422 => Err(PyValueError::new_err(why())),
        401 | 403 => Err(PyPermissionError::new_err(why())),
        _ => Err(PyRuntimeError::new_err(why())),
    }
}

fn record_of(value: Value) -> PyResult<ExecutionRecord> {
    serde_json::from_value(value).map_err(|error| {
        PyRuntimeError::new_err(format!(
            "the agentrack server sent a record this client cannot read: {error}"
        ))
    })
}

/// The seconds to wait, when `answer` is an open breaker's refusal.
fn open_for(answer: &Answer) -> Option<f64> {
    (answer.status == 503 && answer.body["error"]["code"] == "circuit_open")
        .then(|| answer.body["error"]["retry_after_seconds"].as_f64().unwrap_or(0.0))
}

/// A call admitted by an execution's breaker on the server: run it within `timeout` seconds,
/// then report `finish(True)` on success or `finish(False)` on failure or timeout.
#[pyclass(frozen, module = "agentrack._core")]
pub(crate) struct RemoteCall {
    client: Arc<Client>,
    /// The breaker's `record` route.
    path: String,
    /// The permit, until its outcome is reported.
    permit: Mutex<Option<String>>,
    timeout: f64,
    trial: bool,
}

impl RemoteCall {
    fn outcome(&self, outcome: &str) -> Option<Value> {
        let permit = self.permit.lock().take()?;
        Some(json!({ "permit": permit, "outcome": outcome }))
    }
}

#[pymethods]
impl RemoteCall {
    /// The call's time limit in seconds (the execution's `llm_api_timeout`).
    #[getter]
    fn timeout(&self) -> f64 {
        self.timeout
    }

    /// Whether the call is a half-open breaker's trial.
    #[getter]
    fn trial(&self) -> bool {
        self.trial
    }

    /// Reports the call's outcome to the breaker (once acknowledged): success closes it or
    /// keeps it closed, failure counts toward opening it. A permit that expired meanwhile
    /// counts nothing.
    fn finish(&self, py: Python<'_>, success: bool) -> PyResult<()> {
        let Some(body) = self.outcome(if success { "success" } else { "failure" }) else {
            return Ok(());
        };
        answer_body(self.client.call(py, Method::POST, &self.path, &[], Some(&body))?)?;
        Ok(())
    }

    /// Gives the admission back without an outcome (the caller was cancelled), without waiting:
    /// not counted, as in the original — except a half-open trial, which counts as a failure so
    /// that the breaker is not left waiting for a verdict that never comes.
    fn abandon(&self) {
        let Some(body) = self.outcome(if self.trial { "failure" } else { "ignored" }) else {
            return;
        };
        let client = Arc::clone(&self.client);
        let path = self.path.clone();
        runtime().spawn(async move {
            let _ = client.send(Method::POST, &path, &[], Some(&body)).await;
        });
    }
}

/// The node URLs of `AGENTRACK_URL`-style text: comma-separated, without trailing slashes.
fn parse_urls(urls: &str) -> PyResult<Vec<String>> {
    let urls: Vec<String> = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| url.trim_end_matches('/').to_owned())
        .collect();
    if urls.is_empty() {
        return Err(PyValueError::new_err(
            "url: give at least one node URL, e.g. http://127.0.0.1:8080",
        ));
    }
    if let Some(bad) = urls
        .iter()
        .find(|url| !(url.starts_with("http://") || url.starts_with("https://")))
    {
        return Err(PyValueError::new_err(format!(
            "url: {bad:?} is not an http:// or https:// URL (several nodes are separated by commas)"
        )));
    }
    Ok(urls)
}

/// The remote half of `AgentExecutionTracker` in remote mode; use `agentrack.AgentExecutionTracker(url=..., token=...)`.
#[pyclass(frozen, module = "agentrack._core", name = "RemoteCore")]
pub(crate) struct RemoteCore {
    client: Arc<Client>,
}

impl Drop for RemoteCore {
    fn drop(&mut self) {
        self.client.closed.cancel();
    }
}

impl RemoteCore {
    fn records(&self, py: Python<'_>, records: Vec<ExecutionRecord>) -> PyResult<Py<PyList>> {
        let views = records
            .into_iter()
            .map(|record| Py::new(py, RecordView::remote(Arc::clone(&self.client), record)))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(PyList::new(py, views)?.unbind())
    }

    fn fetch(&self, py: Python<'_>, execution_id: &Bound<'_, PyAny>) -> PyResult<Option<ExecutionRecord>> {
        match id_of(execution_id) {
            Some(id) => py.detach(|| self.client.fetch(id)),
            None => Ok(None),
        }
    }

    fn create(
        &self,
        py: Python<'_>,
        mut body: Map<String, Value>,
        timeout_config: Option<TimeoutConfig>,
    ) -> PyResult<ExecutionId> {
        let client = &self.client;
        body.insert(
            "heartbeat_timeout_seconds".into(),
            json!(client.heartbeat_timeout.as_secs_f64()),
        );
        if let Some(config) = timeout_config.or(client.timeout_config) {
            let value = serde_json::to_value(config).map_err(|e| PyValueError::new_err(e.to_string()))?;
            body.insert("timeout_config".into(), value);
        }
        let answer = client.call(py, Method::POST, "/v1/executions", &[], Some(&Value::Object(body)))?;
        let record = answer_body(answer)?
            .map(record_of)
            .transpose()?
            .ok_or_else(|| PyRuntimeError::new_err("the agentrack server did not create the execution"))?;
        client.created.lock().insert(record.execution_id);
        Ok(record.execution_id)
    }
}

#[pymethods]
impl RemoteCore {
    /// A remote tracker on the server at `urls` (comma-separated node URLs), with `token` (an
    /// agent token); the executions it creates get its heartbeat timeout, execution timeout and
    /// (when given) timeout config.
    #[new]
    #[pyo3(signature = (urls, token, heartbeat_timeout = 10.0, execution_timeout = 15.0, timeout_config = None, flush_interval = 0.5, retry_timeout = 5.0))]
    fn new(
        urls: &str,
        token: &str,
        heartbeat_timeout: f64,
        execution_timeout: f64,
        timeout_config: Option<&Bound<'_, PyAny>>,
        flush_interval: f64,
        retry_timeout: f64,
    ) -> PyResult<Self> {
        let urls = parse_urls(urls)?;
        if token.trim().is_empty() {
            return Err(PyValueError::new_err(
                "token: remote mode needs an agent token (pass token=... or set AGENTRACK_TOKEN)",
            ));
        }
        let heartbeat_timeout = duration_arg("heartbeat_timeout", heartbeat_timeout)?;
        let execution_timeout = duration_arg("execution_timeout", execution_timeout)?;
        if heartbeat_timeout.is_zero() || execution_timeout.is_zero() {
            return Err(PyValueError::new_err(
                "heartbeat_timeout and execution_timeout must be greater than 0 in remote mode",
            ));
        }
        let flush_interval = duration_arg("flush_interval", flush_interval)?.max(Duration::from_millis(1));
        let client = Arc::new(Client {
            urls,
            current: AtomicUsize::new(0),
            auth: format!("Bearer {}", token.trim()),
            retry_for: duration_arg("retry_timeout", retry_timeout)?,
            heartbeat_timeout,
            execution_timeout,
            timeout_config: some(timeout_config).map(extract_timeout_config).transpose()?,
            pending: Mutex::new(HashMap::new()),
            flushing: tokio::sync::Mutex::new(()),
            finished: Mutex::new(HashSet::new()),
            created: Mutex::new(HashSet::new()),
            expired: Mutex::new(Vec::new()),
            seen: Mutex::new(VecDeque::new()),
            watching: AtomicBool::new(false),
            closed: CancellationToken::new(),
        });
        let flusher = Arc::clone(&client);
        runtime().spawn(async move {
            loop {
                tokio::select! {
                    () = flusher.closed.cancelled() => break,
                    () = tokio::time::sleep(flush_interval) => {}
                }
                flusher.flush().await;
            }
            // The last heartbeats given before the tracker went away.
            flusher.flush().await;
        });
        Ok(Self { client })
    }

    /// The node URLs, in failover order.
    #[getter]
    fn urls(&self) -> Vec<String> {
        self.client.urls.clone()
    }

    /// Creates an execution in state `PENDING` and phase `CREATED`; returns its id.
    #[pyo3(signature = (agent_name, thread_id, user_id, timeout_seconds = None, metadata = None))]
    fn create_execution(
        &self,
        py: Python<'_>,
        agent_name: &Bound<'_, PyAny>,
        thread_id: &Bound<'_, PyAny>,
        user_id: &Bound<'_, PyAny>,
        timeout_seconds: Option<f64>,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let timeout = match timeout_seconds.filter(|s| *s != 0.0) {
            Some(seconds) => duration_arg("timeout_seconds", seconds)?,
            None => self.client.execution_timeout,
        };
        let mut body = Map::new();
        body.insert("agent_name".into(), Value::String(text(agent_name)?));
        body.insert("thread_id".into(), Value::String(text(thread_id)?));
        body.insert("user_id".into(), Value::String(text(user_id)?));
        body.insert("timeout_seconds".into(), json!(timeout.as_secs_f64()));
        body.insert("metadata".into(), Value::Object(py_to_map(metadata, "metadata")?));
        Ok(self.create(py, body, None)?.to_string())
    }

    /// A fresh execution id (no record is created).
    #[pyo3(signature = (agent_name = None, context = None))]
    #[allow(clippy::unused_self, reason = "a Python method: Python calls it on the instance")]
    fn create_execution_id(&self, agent_name: Option<&Bound<'_, PyAny>>, context: Option<&Bound<'_, PyAny>>) -> String {
        let _ = (agent_name, context);
        ExecutionId::new().to_string()
    }

    /// The execution timeout given to executions created without one, in seconds.
    fn get_default_timeout<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        secs_obj(py, self.client.execution_timeout)
    }

    /// `PENDING → STARTING`; `False` for an unknown execution or any other state.
    fn start_execution(&self, py: Python<'_>, execution_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Some(id) = id_of(execution_id) else {
            return Ok(false);
        };
        let answer = self
            .client
            .call(py, Method::POST, &format!("/v1/executions/{id}/start"), &[], None)?;
        Ok(answer_body(answer)?.is_some())
    }

    /// Counts a heartbeat, sent with the next batch; `False` for a malformed id or an execution
    /// known to be finished. Never waits on the network.
    fn heartbeat(&self, execution_id: &Bound<'_, PyAny>) -> bool {
        let Some(id) = id_of(execution_id) else {
            return false;
        };
        if self.client.finished.lock().contains(&id) {
            return false;
        }
        *self.client.pending.lock().entry(id).or_default() += 1;
        true
    }

    /// Sets the state (an `ExecutionState` member), with an optional error and result.
    #[pyo3(signature = (execution_id, state, error = None, result = None))]
    fn update_execution_state(
        &self,
        py: Python<'_>,
        execution_id: &Bound<'_, PyAny>,
        state: &Bound<'_, PyAny>,
        error: Option<&Bound<'_, PyAny>>,
        result: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let new_state = state_arg(py, execution_id, state)?;
        let Some(id) = id_of(execution_id) else {
            return Ok(false);
        };
        let mut body = Map::new();
        body.insert("state".into(), Value::String(new_state.as_str().to_owned()));
        if let Some(error) = some(error) {
            body.insert("error".into(), Value::String(text(error)?));
        }
        if let Some(result) = some(result) {
            body.insert("result".into(), py_to_json(result)?);
        }
        self.client.set_state(py, id, &Value::Object(body))
    }

    /// Completes an execution; `execution_time_ms` goes into its metadata.
    #[pyo3(signature = (execution_id, result = None, execution_time_ms = None))]
    fn complete_execution(
        &self,
        py: Python<'_>,
        execution_id: &Bound<'_, PyAny>,
        result: Option<&Bound<'_, PyAny>>,
        execution_time_ms: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let Some(id) = id_of(execution_id) else {
            return Ok(false);
        };
        let mut body = Map::new();
        body.insert("state".into(), json!(ExecutionState::Completed.as_str()));
        if let Some(result) = some(result) {
            body.insert("result".into(), py_to_json(result)?);
        }
        if let Some(ms) = some(execution_time_ms) {
            body.insert("metadata".into(), json!({ "execution_time_ms": py_to_json(ms)? }));
        }
        self.client.set_state(py, id, &Value::Object(body))
    }

    /// Fails an execution with `error`; `error_context` goes into its metadata.
    #[pyo3(signature = (execution_id, error, error_context = None))]
    fn fail_execution(
        &self,
        py: Python<'_>,
        execution_id: &Bound<'_, PyAny>,
        error: &Bound<'_, PyAny>,
        error_context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let Some(id) = id_of(execution_id) else {
            return Ok(false);
        };
        let mut body = Map::new();
        body.insert("state".into(), json!(ExecutionState::Failed.as_str()));
        body.insert("error".into(), Value::String(text(error)?));
        if let Some(context) = some(error_context) {
            body.insert("metadata".into(), json!({ "error_context": py_to_json(context)? }));
        }
        self.client.set_state(py, id, &Value::Object(body))
    }

    /// Cancels an execution (state `CANCELLED`).
    #[pyo3(signature = (execution_id, reason = "cancelled"))]
    fn cancel_execution(&self, py: Python<'_>, execution_id: &Bound<'_, PyAny>, reason: &str) -> PyResult<bool> {
        let Some(id) = id_of(execution_id) else {
            return Ok(false);
        };
        let body = json!({ "state": ExecutionState::Cancelled.as_str(), "error": reason });
        self.client.set_state(py, id, &body)
    }

    /// The execution's state, or `None` for an unknown execution.
    fn get_execution_state<'py>(
        &self,
        py: Python<'py>,
        execution_id: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        match self.fetch(py, execution_id)? {
            Some(record) => Ok(Some(types(py)?.state(py, record.state))),
            None => Ok(None),
        }
    }

    /// The execution's record (a view that reads the server's), or `None`.
    fn get_execution(&self, py: Python<'_>, execution_id: &Bound<'_, PyAny>) -> PyResult<Option<Py<RecordView>>> {
        match self.fetch(py, execution_id)? {
            Some(record) => Ok(Some(Py::new(py, RecordView::remote(Arc::clone(&self.client), record))?)),
            None => Ok(None),
        }
    }

    /// Every alive execution the token may see, oldest first.
    fn get_active_executions(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        let records = self.client.list(py, &[("active", "true".to_owned())])?;
        self.records(py, records)
    }

    /// The executions of one agent, oldest first.
    fn get_executions_by_agent(&self, py: Python<'_>, agent_name: &Bound<'_, PyAny>) -> PyResult<Py<PyList>> {
        let records = self.client.list(py, &[("agent_name", text(agent_name)?)])?;
        self.records(py, records)
    }

    /// The executions of one thread, oldest first.
    fn get_executions_by_thread(&self, py: Python<'_>, thread_id: &Bound<'_, PyAny>) -> PyResult<Py<PyList>> {
        let records = self.client.list(py, &[("thread_id", text(thread_id)?)])?;
        self.records(py, records)
    }

    /// The executions of one user, oldest first.
    fn get_executions_by_user(&self, py: Python<'_>, user_id: &Bound<'_, PyAny>) -> PyResult<Py<PyList>> {
        let records = self.client.list(py, &[("user_id", text(user_id)?)])?;
        self.records(py, records)
    }

    /// Alive executions whose heartbeat gap or timeout has passed (the server marks them).
    fn detect_dead_executions(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        let now = Utc::now();
        let records = self
            .client
            .list(py, &[("active", "true".to_owned())])?
            .into_iter()
            .filter(|r| {
                r.is_dead(r.heartbeat_timeout.unwrap_or(self.client.heartbeat_timeout), now) || r.is_timed_out(now)
            })
            .collect();
        self.records(py, records)
    }

    /// The counters of the executions the token may see.
    fn get_metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let answer = self.client.call(py, Method::GET, "/v1/metrics", &[], None)?;
        let body = answer_body(answer)?.unwrap_or_default();
        let metrics: Metrics = serde_json::from_value(body).map_err(|e| {
            PyRuntimeError::new_err(format!(
                "the agentrack server sent metrics this client cannot read: {e}"
            ))
        })?;
        metrics_dict(py, &metrics)
    }

    /// `True` for a finished execution (the server purges it after its retention), `False` for
    /// an unknown or alive one.
    fn cleanup_state(&self, py: Python<'_>, execution_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.fetch(py, execution_id)?.is_some_and(|r| r.is_terminal()))
    }

    /// Whether the phase rules allow `current_phase → new_phase` (`None` → only `CREATED`).
    #[allow(clippy::unused_self, reason = "a Python method: Python calls it on the instance")]
    fn validate_state_transition(
        &self,
        py: Python<'_>,
        current_phase: Option<&Bound<'_, PyAny>>,
        new_phase: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        crate::tracker::valid_transition(py, current_phase, new_phase)
    }

    /// The execution's phase transitions as dicts; `[]` for an unknown execution.
    fn get_state_history<'py>(&self, py: Python<'py>, execution_id: &Bound<'_, PyAny>) -> PyResult<Bound<'py, PyList>> {
        let history = self
            .fetch(py, execution_id)?
            .map(|r| r.phase_history)
            .unwrap_or_default();
        history_list(py, &history)
    }

    /// The execution's agent-state view as a dict, or `None`.
    fn get_agent_state<'py>(
        &self,
        py: Python<'py>,
        execution_id: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let now = Utc::now();
        self.fetch(py, execution_id)?
            .map(|record| agent_state_dict(py, &AgentState::of(&record, now), now))
            .transpose()
    }

    /// Updates `warning_count` and `error_count` and merges `metadata` from `state_updates`;
    /// `False` for an unknown or finished execution.
    fn set_agent_state(
        &self,
        py: Python<'_>,
        execution_id: &Bound<'_, PyAny>,
        state_updates: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let Some(id) = id_of(execution_id) else {
            return Ok(false);
        };
        let updates = state_updates.cast::<PyDict>().map_err(|_| {
            pyo3::exceptions::PyTypeError::new_err(format!(
                "state_updates must be a dict, got {}",
                crate::types::type_name(state_updates)
            ))
        })?;
        let mut body = Map::new();
        for key in ["warning_count", "error_count"] {
            if let Some(value) = updates.get_item(key)?.filter(|v| !v.is_none()) {
                body.insert(key.into(), json!(value.extract::<u32>()?));
            }
        }
        if let Some(value) = updates.get_item("metadata")?.filter(|v| !v.is_none()) {
            body.insert("metadata".into(), Value::Object(py_to_map(Some(&value), "metadata")?));
        }
        let path = format!("/v1/executions/{id}/agent-state");
        let answer = self
            .client
            .call(py, Method::POST, &path, &[], Some(&Value::Object(body)))?;
        Ok(answer_body(answer)?.is_some())
    }

    /// The execution's timeout position as a dict, or `None`.
    fn check_timeout<'py>(
        &self,
        py: Python<'py>,
        execution_id: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let now = Utc::now();
        self.fetch(py, execution_id)?
            .map(|record| timeout_dict(py, &TimeoutStatus::of(&record, now)))
            .transpose()
    }

    /// Closes the execution's circuit breaker with its counters zeroed; `False` for an unknown
    /// execution.
    fn register_circuit_breaker(&self, py: Python<'_>, execution_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.reset_circuit_breaker(py, execution_id)
    }

    /// Closes the execution's circuit breaker with its counters zeroed; `False` for an unknown
    /// execution.
    fn reset_circuit_breaker(&self, py: Python<'_>, execution_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Some(id) = id_of(execution_id) else {
            return Ok(false);
        };
        let path = format!("/v1/executions/{id}/breaker/reset");
        Ok(answer_body(self.client.call(py, Method::POST, &path, &[], None)?)?.is_some())
    }

    /// The execution's circuit breaker as a dict, or `None`.
    fn circuit_breaker_status<'py>(
        &self,
        py: Python<'py>,
        execution_id: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(id) = id_of(execution_id) else {
            return Ok(None);
        };
        let answer = self
            .client
            .call(py, Method::GET, &format!("/v1/executions/{id}/breaker"), &[], None)?;
        let Some(body) = answer_body(answer)? else {
            return Ok(None);
        };
        let status: BreakerStatus = serde_json::from_value(body).map_err(|e| {
            PyRuntimeError::new_err(format!(
                "the agentrack server sent a breaker this client cannot read: {e}"
            ))
        })?;
        breaker_dict(py, &text(execution_id)?, &status).map(Some)
    }

    /// Gives the execution its own `TimeoutConfig` (its timeout becomes
    /// `agent_execution_timeout`); `False` for an unknown or finished execution.
    fn set_timeout(
        &self,
        py: Python<'_>,
        execution_id: &Bound<'_, PyAny>,
        timeout_config: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let config = extract_timeout_config(timeout_config)?;
        let Some(id) = id_of(execution_id) else {
            return Ok(false);
        };
        let body = serde_json::to_value(config).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let path = format!("/v1/executions/{id}/timeout-config");
        Ok(answer_body(self.client.call(py, Method::POST, &path, &[], Some(&body))?)?.is_some())
    }

    /// Asks the execution's breaker (on the server) to admit one call.
    ///
    /// Returns `("admitted", call, 0.0)`, `("open", None, seconds_to_wait)`, `("not_found", None,
    /// 0.0)` or `("terminal", None, 0.0)`, as the in-process core does.
    fn _begin_call<'py>(
        &self,
        py: Python<'py>,
        execution_id: &Bound<'_, PyAny>,
        operation_name: &str,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let _ = operation_name;
        let none = || py.None().into_bound(py);
        let Some(id) = id_of(execution_id) else {
            return ("not_found", none(), 0.0).into_pyobject(py);
        };
        let path = format!("/v1/executions/{id}/breaker/acquire");
        let answer = self.client.call(py, Method::POST, &path, &[], None)?;
        if let Some(wait) = open_for(&answer) {
            return ("open", none(), wait).into_pyobject(py);
        }
        let status = answer.status;
        let Some(grant) = answer_body(answer)? else {
            let why = if status == 409 { "terminal" } else { "not_found" };
            return (why, none(), 0.0).into_pyobject(py);
        };
        let call = RemoteCall {
            client: Arc::clone(&self.client),
            path: format!("/v1/executions/{id}/breaker/record"),
            permit: Mutex::new(grant["permit"].as_str().map(str::to_owned)),
            timeout: grant["timeout_seconds"].as_f64().unwrap_or(0.0),
            trial: grant["trial"].as_bool().unwrap_or(false),
        };
        ("admitted", Bound::new(py, call)?.into_any(), 0.0).into_pyobject(py)
    }

    /// Counts one protected call's outcome in the execution's breaker, as if a call had just
    /// been admitted and finished (the original's `_on_circuit_breaker_success` /
    /// `_on_circuit_breaker_failure`). Returns `"recorded"`, or why nothing was counted:
    /// `"open"`, `"terminal"` or `"not_found"`.
    fn _record_breaker_outcome(
        &self,
        py: Python<'_>,
        execution_id: &Bound<'_, PyAny>,
        success: bool,
    ) -> PyResult<&'static str> {
        let Some(id) = id_of(execution_id) else {
            return Ok("not_found");
        };
        let path = format!("/v1/executions/{id}/breaker/record");
        let body = json!({ "outcome": if success { "success" } else { "failure" } });
        let answer = self.client.call(py, Method::POST, &path, &[], Some(&body))?;
        if open_for(&answer).is_some() {
            return Ok("open");
        }
        let status = answer.status;
        Ok(match answer_body(answer)? {
            Some(_) => "recorded",
            None if status == 409 => "terminal",
            None => "not_found",
        })
    }

    /// Records a phase transition on the server. Returns `None` for an unknown execution, else
    /// `(valid, method, kwargs)`: whether the rules allow it, and the original's notification
    /// for it (`None`, `None` for a phase the original did not notify).
    #[pyo3(signature = (execution_id, phase, metadata = None))]
    fn _transition<'py>(
        &self,
        py: Python<'py>,
        execution_id: &Bound<'_, PyAny>,
        phase: &Bound<'_, PyAny>,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let Some(id) = id_of(execution_id) else {
            return Ok(None);
        };
        let phase = types(py)?.as_phase(phase)?;
        let body = json!({ "phase": phase.as_str(), "metadata": py_to_map(metadata, "metadata")? });
        let answer = self.client.call(
            py,
            Method::POST,
            &format!("/v1/executions/{id}/phase"),
            &[],
            Some(&body),
        )?;
        let Some(mut body) = answer_body(answer)? else {
            return Ok(None);
        };
        let valid = body["transition"]["valid"].as_bool().unwrap_or(true);
        if let Value::Object(map) = &mut body {
            map.remove("transition");
        }
        let record = record_of(body)?;
        let none = || py.None().into_bound(py);
        let Some(notification) = Notification::for_latest_transition(&record, Utc::now()) else {
            return Ok(Some((valid, none(), none()).into_pyobject(py)?));
        };
        let (method, kwargs) = crate::calls::notification_call(py, &notification)?;
        Ok(Some((valid, method, kwargs).into_pyobject(py)?))
    }

    /// Creates an execution with its own timeout config, in `initial_state`.
    #[pyo3(signature = (agent_name, thread_id, user_id, metadata, timeout_config, initial_state = None))]
    #[allow(clippy::too_many_arguments)]
    fn _create_with_context(
        &self,
        py: Python<'_>,
        agent_name: &Bound<'_, PyAny>,
        thread_id: &Bound<'_, PyAny>,
        user_id: &Bound<'_, PyAny>,
        metadata: Option<&Bound<'_, PyAny>>,
        timeout_config: Option<&Bound<'_, PyAny>>,
        initial_state: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let config = some(timeout_config).map(extract_timeout_config).transpose()?;
        let mut body = Map::new();
        body.insert("agent_name".into(), Value::String(text(agent_name)?));
        body.insert("thread_id".into(), Value::String(text(thread_id)?));
        body.insert("user_id".into(), Value::String(text(user_id)?));
        body.insert("metadata".into(), Value::Object(py_to_map(metadata, "metadata")?));
        if let Some(config) = config {
            body.insert(
                "timeout_seconds".into(),
                json!(config.agent_execution_timeout.as_secs_f64()),
            );
        }
        let id = self.create(py, body, config)?;
        let initial = match some(initial_state) {
            Some(state) => types(py)?.as_state(state),
            None => None,
        };
        if let Some(state) = initial.filter(|state| *state != ExecutionState::Pending) {
            self.client.set_state(py, id, &json!({ "state": state.as_str() }))?;
        }
        Ok(id.to_string())
    }

    /// The deaths and timeouts of this tracker's executions heard on the event stream since the
    /// last call: `(dead, timed_out, 0)` (the server purges, not this process).
    fn _sweep<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let expired = std::mem::take(&mut *self.client.expired.lock());
        let mut dead = Vec::new();
        let mut timed_out = Vec::new();
        for (is_dead, id) in expired {
            if let Some(record) = py.detach(|| self.client.fetch(id))? {
                if is_dead {
                    dead.push(record);
                } else {
                    timed_out.push(record);
                }
            }
        }
        (self.records(py, dead)?, self.records(py, timed_out)?, 0usize).into_pyobject(py)
    }

    /// Opens the event stream that delivers this tracker's deaths and timeouts (once).
    fn _watch(&self) {
        if !self.client.watching.swap(true, Ordering::AcqRel) {
            runtime().spawn(Arc::clone(&self.client).watch());
        }
    }

    /// Every death and timeout the event stream delivered since the last call, as event dicts.
    fn _stream_events<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let seen = std::mem::take(&mut *self.client.seen.lock());
        seen.iter().map(|event| json_to_py(py, event)).collect()
    }

    /// Sends the heartbeats counted so far now.
    fn _flush(&self, py: Python<'_>) {
        let client = &self.client;
        py.detach(|| runtime().block_on(client.flush()));
    }

    /// Stops the background flusher and the event stream (after a last flush).
    fn close(&self) {
        self.client.closed.cancel();
    }

    /// The number of executions the token may see.
    fn _record_count(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.client.list(py, &[])?.len())
    }

    /// The ids of every execution the token may see, oldest first.
    fn _execution_ids(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        Ok(self
            .client
            .list(py, &[])?
            .iter()
            .map(|r| r.execution_id.to_string())
            .collect())
    }

    /// The number of alive executions the token may see.
    fn _active_count(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.client.list(py, &[("active", "true".to_owned())])?.len())
    }

    /// The tracker's heartbeat timeout in seconds, as configured.
    #[getter]
    fn _heartbeat_timeout_seconds(&self) -> f64 {
        self.client.heartbeat_timeout.as_secs_f64()
    }

    /// The current time (the wall clock: the server's monitor runs on its own).
    #[allow(clippy::unused_self, reason = "a Python method: Python calls it on the instance")]
    fn _now(&self) -> chrono::DateTime<Utc> {
        Utc::now()
    }

    /// `value` converted the way metadata and results are stored (for tests).
    #[staticmethod]
    fn _json_roundtrip<'py>(py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &py_to_json(value)?)
    }

    /// A plain GET of `path` on the current node, returning its status: the baseline of the
    /// benchmark (one request through the same client, without a tracker method around it).
    fn _bare_get(&self, py: Python<'_>, path: &str) -> PyResult<u16> {
        let client = &self.client;
        let (_, base) = client.base();
        let url = format!("{base}{path}");
        py.detach(|| runtime().block_on(async { http().get(url).send().await.map(|r| r.status().as_u16()) }))
            .map_err(|e| AgentrackUnavailableError::new_err(e.to_string()))
    }
}
