//! `ExecutionRecord`: a live view of one execution.
//!
//! The original handed out its own mutable record objects, so a caller holding one saw every later
//! change. The view keeps that: each attribute read fetches the record's current value from the
//! tracker. Once the record is gone from the tracker (cleaned up or purged), the view answers with
//! the last value it saw.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use agentrack::{BreakerState, ExecutionId, ExecutionRecord, ExecutionState, Tracker};
use chrono::{DateTime, TimeDelta, Utc};
use parking_lot::Mutex;
use pyo3::IntoPyObjectExt;
use pyo3::basic::CompareOp;
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::convert::{epoch_secs, json_map_to_py, json_to_py, millis_between, secs_obj};
use crate::types::{duration_arg, types};

/// The record of one agent execution, as the original's `ExecutionRecord`: attributes
/// (`state`, `current_phase`, `heartbeat_count`, `result`, `error`, `completed_at`, `metadata`,
/// ...), the properties `is_alive`, `is_terminal` and `duration`, and the duration and liveness
/// methods. Reading an attribute shows the current value. Times are timezone-aware UTC.
#[pyclass(frozen, module = "agentrack", name = "ExecutionRecord")]
pub(crate) struct RecordView {
    tracker: Tracker,
    id: ExecutionId,
    last: Mutex<Arc<ExecutionRecord>>,
    gone: AtomicBool,
}

impl RecordView {
    /// A view of `record`, kept current through `tracker`.
    pub(crate) fn new(tracker: Tracker, record: ExecutionRecord) -> Self {
        Self {
            tracker,
            id: record.execution_id,
            last: Mutex::new(Arc::new(record)),
            gone: AtomicBool::new(false),
        }
    }

    /// Views of several records, as a Python list.
    pub(crate) fn list(py: Python<'_>, tracker: &Tracker, records: Vec<ExecutionRecord>) -> PyResult<Py<PyList>> {
        let views = records
            .into_iter()
            .map(|record| Py::new(py, Self::new(tracker.clone(), record)))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(PyList::new(py, views)?.unbind())
    }

    /// The record as it is now; once gone from the tracker, as `cleanup_state` left it (if it is
    /// still in the completed history) or as last seen. A record that left the tracker never
    /// changes again, so the tracker is asked only until then.
    fn current(&self) -> Arc<ExecutionRecord> {
        if self.gone.load(Ordering::Acquire) {
            return self.last();
        }
        let found = match self.tracker.get(self.id) {
            Ok(record) => Some(record),
            Err(_) => {
                self.gone.store(true, Ordering::Release);
                self.tracker
                    .completed_history()
                    .into_iter()
                    .rev()
                    .find(|record| record.execution_id == self.id)
            }
        };
        match found {
            Some(record) => {
                let record = Arc::new(record);
                *self.last.lock() = Arc::clone(&record);
                record
            }
            None => self.last(),
        }
    }

    fn last(&self) -> Arc<ExecutionRecord> {
        Arc::clone(&self.last.lock())
    }

    fn now(&self) -> DateTime<Utc> {
        self.tracker.clock().now()
    }

    fn current_state(&self) -> ExecutionState {
        if self.gone.load(Ordering::Acquire) {
            return self.last().state;
        }
        self.tracker.state(self.id).unwrap_or_else(|_| self.current().state)
    }
}

/// `text` as a Python string literal in single quotes.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn timedelta(delta: TimeDelta) -> TimeDelta {
    delta.max(TimeDelta::zero())
}

#[pymethods]
impl RecordView {
    /// The execution's unique id (`exec_` + 32 hex digits).
    #[getter]
    fn execution_id(&self) -> String {
        self.id.to_string()
    }

    /// The agent running it.
    #[getter]
    fn agent_name(&self) -> String {
        self.last().agent_name.clone()
    }

    /// The conversation thread (the `run_id` of its notifications).
    #[getter]
    fn thread_id(&self) -> String {
        self.last().thread_id.clone()
    }

    /// The user it runs for.
    #[getter]
    fn user_id(&self) -> String {
        self.last().user_id.clone()
    }

    /// The tenant it belongs to (`"default"` unless set).
    #[getter]
    fn tenant(&self) -> String {
        self.last().tenant.clone()
    }

    /// Its lifecycle state (an `ExecutionState`).
    #[getter]
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(types(py)?.state(py, self.current_state()))
    }

    /// Its creation time.
    #[getter]
    fn started_at(&self) -> DateTime<Utc> {
        self.last().started_at
    }

    /// Its latest sign of life.
    #[getter]
    fn last_heartbeat(&self) -> DateTime<Utc> {
        self.current().last_heartbeat
    }

    /// Its latest change.
    #[getter]
    fn updated_at(&self) -> DateTime<Utc> {
        self.current().updated_at
    }

    /// When it reached a terminal state, or `None`.
    #[getter]
    fn completed_at(&self) -> Option<DateTime<Utc>> {
        self.current().completed_at
    }

    /// Why it failed, timed out or died, or `None`.
    #[getter]
    fn error(&self) -> Option<String> {
        self.current().error.clone()
    }

    /// What it produced, or `None` (falsy results such as `0` or `""` are kept).
    #[getter]
    fn result<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match &self.current().result {
            Some(value) => json_to_py(py, value),
            None => Ok(py.None().into_bound(py)),
        }
    }

    /// Heartbeats received.
    #[getter]
    fn heartbeat_count(&self) -> u64 {
        self.current().heartbeat_count
    }

    /// How long it may run, in seconds.
    #[getter]
    fn timeout_seconds<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        secs_obj(py, self.current().timeout)
    }

    /// Caller-supplied data (a copy: change it with `set_agent_state`).
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(json_map_to_py(py, &self.current().metadata)?.into_any())
    }

    /// Its phase (an `AgentExecutionPhase`).
    #[getter]
    fn current_phase<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(types(py)?.phase(py, self.current().current_phase))
    }

    /// Every phase change, oldest first (`PhaseTransition`s).
    #[getter]
    fn phase_history<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let types = types(py)?;
        let record = self.current();
        let items = record
            .phase_history
            .iter()
            .map(|t| types.transition(py, t))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    /// Warnings reported through `set_agent_state`.
    #[getter]
    fn warning_count(&self) -> u32 {
        self.current().warning_count
    }

    /// Errors reported through `set_agent_state`.
    #[getter]
    fn error_count(&self) -> u32 {
        self.current().error_count
    }

    /// Its own `TimeoutConfig`, or `None`.
    #[getter]
    fn timeout_config<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        match self.current().timeout_config {
            Some(config) => Ok(Some(types(py)?.timeout_config(py, &config)?)),
            None => Ok(None),
        }
    }

    /// Consecutive failures counted by its circuit breaker.
    #[getter]
    fn circuit_breaker_failures(&self) -> u32 {
        self.current().circuit_breaker_failures
    }

    /// Its circuit breaker's state (a `CircuitBreakerState`).
    #[getter]
    fn circuit_breaker_state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(types(py)?.breaker_state(py, self.current().circuit_breaker_state))
    }

    /// Its breaker's latest failure as POSIX seconds (0.0 if none), as in the original.
    #[getter]
    fn last_failure_time(&self) -> f64 {
        epoch_secs(self.current().last_failure_time)
    }

    /// When its open breaker allows a trial call, as POSIX seconds (0.0 if not open).
    #[getter]
    fn next_attempt_time(&self) -> f64 {
        epoch_secs(self.current().next_attempt_time)
    }

    /// Whether it is pending, starting, running or completing.
    #[getter]
    fn is_alive(&self) -> bool {
        self.current_state().is_alive()
    }

    /// Whether it is completed, failed, timed out, dead or cancelled.
    #[getter]
    fn is_terminal(&self) -> bool {
        self.current_state().is_terminal()
    }

    /// Completion minus start, or the running time so far while alive (a `timedelta`).
    #[getter]
    fn duration(&self) -> TimeDelta {
        let record = self.current();
        timedelta(record.completed_at.unwrap_or_else(|| self.now()) - record.started_at)
    }

    /// Time since the latest heartbeat (a `timedelta`).
    #[getter]
    fn time_since_heartbeat(&self) -> TimeDelta {
        timedelta(self.now() - self.current().last_heartbeat)
    }

    /// Whether it ran past its timeout (a terminal record: only if its state is `TIMEOUT`).
    fn is_timed_out(&self) -> bool {
        self.current().is_timed_out(self.now())
    }

    /// Whether no heartbeat came for more than `heartbeat_timeout` seconds (a terminal record:
    /// only if its state is `DEAD`).
    #[pyo3(signature = (heartbeat_timeout = 10.0))]
    fn is_dead(&self, heartbeat_timeout: f64) -> PyResult<bool> {
        let timeout = duration_arg("heartbeat_timeout", heartbeat_timeout.max(0.0))?;
        Ok(self.current().is_dead(timeout, self.now()))
    }

    /// Milliseconds since it was created.
    fn get_total_duration_ms(&self) -> f64 {
        millis_between(self.current().started_at, self.now())
    }

    /// Milliseconds spent in `phase` over every visit, the current one included. (The original
    /// attributed each stretch to the phase entered next; this counts the phase occupied.)
    fn get_phase_duration_ms(&self, py: Python<'_>, phase: &Bound<'_, PyAny>) -> PyResult<f64> {
        let phase = types(py)?.as_phase(phase)?;
        let record = self.current();
        let past: u64 = record
            .phase_history
            .iter()
            .filter(|t| t.from_phase == phase)
            .map(|t| t.duration_ms)
            .sum();
        let current = if record.current_phase == phase {
            millis_between(
                record.phase_entered_at,
                record.completed_at.unwrap_or_else(|| self.now()),
            )
        } else {
            0.0
        };
        Ok(past as f64 + current)
    }

    /// Milliseconds since the current phase was entered.
    fn get_current_phase_duration_ms(&self) -> f64 {
        let record = self.current();
        millis_between(
            record.phase_entered_at,
            record.completed_at.unwrap_or_else(|| self.now()),
        )
    }

    /// Whether its breaker is open and still refusing calls.
    fn is_circuit_breaker_open(&self) -> bool {
        let record = self.current();
        record.circuit_breaker_state == BreakerState::Open
            && record.next_attempt_time.is_some_and(|next| self.now() < next)
    }

    /// Whether a retry is sensible: at most `max_retries` failures so far and the breaker not open.
    #[pyo3(signature = (max_retries = 2))]
    fn should_retry(&self, max_retries: u32) -> bool {
        let record = self.current();
        record.circuit_breaker_failures <= max_retries && record.circuit_breaker_state != BreakerState::Open
    }

    /// Seconds the execution may still run before it times out (0 when past).
    fn time_until_timeout(&self) -> f64 {
        let record = self.current();
        let elapsed = record.duration(self.now());
        record.timeout.saturating_sub(elapsed).as_secs_f64()
    }

    fn __repr__(&self) -> String {
        let record = self.current();
        format!(
            "ExecutionRecord(execution_id='{}', agent_name={}, thread_id={}, user_id={}, \
             state=<ExecutionState.{}: '{}'>, current_phase=<AgentExecutionPhase.{}: '{}'>, heartbeat_count={})",
            record.execution_id,
            quoted(&record.agent_name),
            quoted(&record.thread_id),
            quoted(&record.user_id),
            record.state.as_str().to_uppercase(),
            record.state.as_str(),
            record.current_phase.as_str().to_uppercase(),
            record.current_phase.as_str(),
            record.heartbeat_count,
        )
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let Ok(other) = other.cast::<RecordView>() else {
            return Ok(py.NotImplemented());
        };
        let same = other.get().id == self.id;
        match op {
            CompareOp::Eq => same.into_py_any(py),
            CompareOp::Ne => (!same).into_py_any(py),
            _ => Ok(py.NotImplemented()),
        }
    }

    fn __hash__(&self) -> u64 {
        let bits = self.id.as_uuid().as_u128();
        (bits as u64) ^ ((bits >> 64) as u64)
    }
}
