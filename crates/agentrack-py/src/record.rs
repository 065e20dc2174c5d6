//! `ExecutionRecord`: a live view of one execution, or a record built by hand.
//!
//! The original handed out its own mutable record objects, so a caller holding one saw every later
//! change, and a caller assigning to one changed what the tracker did next. The view keeps both:
//!
//! - Each attribute read fetches the record's current value from the tracker. Once the record is
//!   gone from the tracker (purged by the monitor, or moved to the completed history by
//!   `cleanup_state`), the view answers with the last value it saw.
//! - Each assignment to one of the original's fields is checked (`TypeError` naming the expected
//!   type) and goes through [`Tracker::edit`], so the tracker acts on it: a back-dated
//!   `last_heartbeat` makes the execution dead to the next monitor pass, a terminal `state`
//!   finishes it, and so on. `state` goes through `Tracker::legacy_edit` (the core's `legacy`
//!   feature) instead, because an alive state assigned to a finished record revives it, as in
//!   the original, and the core's own edit keeps finished executions final. Assigning to a
//!   record that is gone raises `LookupError`: there is no execution left for the value to act
//!   on.
//!
//! `ExecutionRecord(...)` called directly, with the original dataclass's arguments, builds a
//! record attached to no tracker, which behaves like the dataclass: it stores what it is given
//! (checked as assignments are) and its properties compute from those values and the wall clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use agentrack::{BreakerState, ExecutionId, ExecutionRecord, ExecutionState, Tracker, TrackerError};
use chrono::{DateTime, TimeDelta, Utc};
use parking_lot::Mutex;
use pyo3::IntoPyObjectExt;
use pyo3::basic::CompareOp;
use pyo3::exceptions::{PyAttributeError, PyLookupError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use crate::convert::{epoch_secs, float_ms, json_map_to_py, json_to_py, millis_between, secs_obj};
use crate::fields::{self, DEFAULT_TIMEOUT_SECONDS, FIELDS, REQUIRED, non_negative, wrong_type};
use crate::types::{Types, duration_arg, repr, types};

/// The record of one agent execution, as the original's `ExecutionRecord`: attributes
/// (`state`, `current_phase`, `heartbeat_count`, `result`, `error`, `completed_at`, `metadata`,
/// ...), the properties `is_alive`, `is_terminal` and `duration`, and the duration and liveness
/// methods. Reading an attribute shows the current value; assigning one changes the execution
/// in the tracker. Times are timezone-aware UTC.
#[pyclass(frozen, module = "agentrack", name = "ExecutionRecord")]
pub(crate) struct RecordView {
    backing: Backing,
}

enum Backing {
    /// A record in a tracker.
    Live(Live),
    /// A record built by hand: the field values as given.
    Detached(Py<PyDict>),
}

struct Live {
    source: Source,
    id: ExecutionId,
    last: Mutex<Arc<ExecutionRecord>>,
    gone: AtomicBool,
}

/// Where a tracked record's current values come from.
enum Source {
    /// The in-process tracker.
    Local(Tracker),
    /// The server (remote mode): each read fetches the record; assignments are refused.
    Remote(Arc<crate::remote::Client>),
}

impl Live {
    /// The record as it is now; once gone from the tracker, as `cleanup_state` left it (if it is
    /// still in the completed history) or as last seen. A record that left the tracker never
    /// changes again, so the tracker is asked only until then.
    fn current(&self) -> Arc<ExecutionRecord> {
        if self.gone.load(Ordering::Acquire) {
            return self.last();
        }
        let tracker = match &self.source {
            Source::Local(tracker) => tracker,
            Source::Remote(client) => {
                return match client.fetch(self.id) {
                    Ok(Some(record)) => {
                        let record = Arc::new(record);
                        *self.last.lock() = Arc::clone(&record);
                        record
                    }
                    // Purged on the server: the last values seen, as a local record once purged.
                    Ok(None) => {
                        self.gone.store(true, Ordering::Release);
                        self.last()
                    }
                    // A read of an attribute cannot say "unavailable" in the original's API: the
                    // last values seen.
                    Err(_) => self.last(),
                };
            }
        };
        let found = if let Ok(record) = tracker.get(self.id) {
            Some(record)
        } else {
            self.gone.store(true, Ordering::Release);
            tracker
                .completed_history()
                .into_iter()
                .rev()
                .find(|record| record.execution_id == self.id)
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

    fn state(&self) -> ExecutionState {
        if self.gone.load(Ordering::Acquire) {
            return self.last().state;
        }
        match &self.source {
            Source::Local(tracker) => tracker.state(self.id).unwrap_or_else(|_| self.current().state),
            Source::Remote(_) => self.current().state,
        }
    }

    /// Assigns `value` to `field` of the execution in the tracker.
    fn write(&self, types: &Types, field: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let tracker = match &self.source {
            Source::Local(tracker) => tracker,
            Source::Remote(_) => {
                return Err(PyAttributeError::new_err(format!(
                    "record.{field} cannot be assigned in remote mode: the record is the server's \
                     (execution {}); change it through the tracker's methods",
                    self.id
                )));
            }
        };
        let outcome = match field {
            "execution_id" => {
                let Ok(text) = value.cast::<PyString>() else {
                    return Err(wrong_type(field, "a str", value));
                };
                if text.to_str()? == self.id.to_string() {
                    return Ok(());
                }
                return Err(PyValueError::new_err(format!(
                    "execution_id of a tracked record cannot be changed (it is {}); create a new \
                     execution instead",
                    self.id
                )));
            }
            "timeout_config" => {
                let config = fields::timeout_config(types, value)?;
                Self::set_timeout_config(tracker, self.id, config)
            }
            // The original's records were plain objects: assigning an alive state to a finished
            // one revived it, and callers rely on that. The core's finality-keeping edit refuses
            // it, so this one assignment goes through the legacy edit, which may revive.
            "state" => {
                let edit = fields::parse(types, field, value)?;
                tracker.legacy_edit(self.id, edit).map(drop)
            }
            _ => {
                let edit = fields::parse(types, field, value)?;
                tracker.edit(self.id, edit).map(drop)
            }
        };
        outcome.map_err(|error| self.edit_error(field, error))?;
        // Refresh the last values seen, so that a handle whose record is purged next still
        // shows what was written.
        let _ = self.current();
        Ok(())
    }

    /// Sets the record's timeout config and, as the original's next protected call would read
    /// it, the breaker's thresholds and call timeout; the execution timeout (`timeout_seconds`)
    /// stays as it was, as an assignment in the original left it.
    fn set_timeout_config(
        tracker: &Tracker,
        id: ExecutionId,
        config: Option<agentrack::TimeoutConfig>,
    ) -> Result<(), TrackerError> {
        if let Some(config) = config {
            let before = tracker.get(id)?.timeout;
            // Refused for a finished execution (no breaker to configure) or a zero
            // agent_execution_timeout (not used here): the plain edit below still stores it.
            if tracker.set_timeout_config(id, config).is_ok() {
                return tracker.edit(id, move |r| r.timeout = before).map(drop);
            }
        }
        tracker
            .edit(id, move |r| r.timeout_config = config.map(Box::new))
            .map(drop)
    }

    fn edit_error(&self, field: &str, error: TrackerError) -> PyErr {
        match error {
            TrackerError::NotFound { .. } => {
                // Keep the last values (from the completed history, if it is there) for reads.
                let _ = self.current();
                PyLookupError::new_err(format!(
                    "execution {} is no longer tracked (it finished and was purged or cleaned up): \
                     assigning record.{field} cannot take effect; reading the record gives its last \
                     known values",
                    self.id
                ))
            }
            other => PyValueError::new_err(format!("cannot set {field}: {other}")),
        }
    }
}

impl RecordView {
    /// A view of `record`, kept current through `tracker`.
    pub(crate) fn new(tracker: Tracker, record: ExecutionRecord) -> Self {
        Self::tracked(Source::Local(tracker), record)
    }

    /// A view of `record`, a server's, kept current by reading it from the server.
    pub(crate) fn remote(client: Arc<crate::remote::Client>, record: ExecutionRecord) -> Self {
        Self::tracked(Source::Remote(client), record)
    }

    fn tracked(source: Source, record: ExecutionRecord) -> Self {
        Self {
            backing: Backing::Live(Live {
                source,
                id: record.execution_id,
                last: Mutex::new(Arc::new(record)),
                gone: AtomicBool::new(false),
            }),
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

    /// The record's values now: the tracker's, or those of a record built by hand.
    fn snapshot(&self, py: Python<'_>) -> PyResult<Arc<ExecutionRecord>> {
        match &self.backing {
            Backing::Live(live) => Ok(live.current()),
            Backing::Detached(fields) => Ok(Arc::new(fields::detached_record(types(py)?, fields.bind(py))?)),
        }
    }

    /// The current time: the tracker's clock, or the wall clock for a record built by hand.
    fn now(&self) -> DateTime<Utc> {
        match &self.backing {
            Backing::Live(Live {
                source: Source::Local(tracker),
                ..
            }) => tracker.clock().now(),
            Backing::Live(_) | Backing::Detached(_) => Utc::now(),
        }
    }

    fn state_now(&self, py: Python<'_>) -> PyResult<ExecutionState> {
        match &self.backing {
            Backing::Live(live) => Ok(live.state()),
            Backing::Detached(_) => Ok(self.snapshot(py)?.state),
        }
    }

    /// Field `name`: as given for a record built by hand, else `live` applied to the current
    /// record.
    fn field<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        live: impl FnOnce(&ExecutionRecord) -> PyResult<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match &self.backing {
            Backing::Live(record) => live(&record.current()),
            Backing::Detached(fields) => fields
                .bind(py)
                .get_item(name)?
                .ok_or_else(|| PyAttributeError::new_err(name.to_owned())),
        }
    }
}

/// `text` as a Python string literal in single quotes.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The value a field of a record built by hand has when the constructor is not given one (the
/// original dataclass's defaults).
fn default_value<'py>(py: Python<'py>, types: &Types, field: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
    let value = match field {
        "updated_at" => Utc::now().into_bound_py_any(py)?,
        "completed_at" | "error" | "result" | "timeout_config" => py.None().into_bound(py),
        "heartbeat_count" | "warning_count" | "error_count" | "circuit_breaker_failures" => {
            0u32.into_bound_py_any(py)?
        }
        "timeout_seconds" => DEFAULT_TIMEOUT_SECONDS.into_bound_py_any(py)?,
        "metadata" => PyDict::new(py).into_any(),
        "current_phase" => types.phase(py, agentrack::Phase::Created),
        "phase_history" => PyList::empty(py).into_any(),
        "circuit_breaker_state" => types.breaker_state(py, BreakerState::Closed),
        "last_failure_time" | "next_attempt_time" => 0.0f64.into_bound_py_any(py)?,
        _ => return Ok(None),
    };
    Ok(Some(value))
}

/// Checks a value given to a record built by hand (its id may be any text).
fn check_detached(types: &Types, field: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
    if field == "execution_id" {
        return match value.cast::<PyString>() {
            Ok(_) => Ok(()),
            Err(_) => Err(wrong_type(field, "a str", value)),
        };
    }
    fields::parse(types, field, value).map(drop)
}

#[pymethods]
impl RecordView {
    /// A record attached to no tracker, built from the original dataclass's arguments:
    /// `execution_id, agent_name, thread_id, user_id, state, started_at, last_heartbeat` are
    /// required, the rest default as in the original (`timeout_seconds=30`, `metadata={}`,
    /// `current_phase=CREATED`, `circuit_breaker_state=CLOSED`, counters 0, breaker times 0.0,
    /// others `None`; `updated_at` now). Values are checked as assignments are.
    #[new]
    #[pyo3(signature = (*args, **kwargs))]
    fn construct(py: Python<'_>, args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let types = types(py)?;
        if args.len() > FIELDS.len() {
            return Err(PyTypeError::new_err(format!(
                "ExecutionRecord() takes at most {} positional arguments ({} given)",
                FIELDS.len(),
                args.len()
            )));
        }
        let given = PyDict::new(py);
        for (field, value) in FIELDS.iter().zip(args.iter()) {
            given.set_item(field, value)?;
        }
        if let Some(kwargs) = kwargs {
            for (key, value) in kwargs.iter() {
                let name: String = key.extract()?;
                if !FIELDS.contains(&name.as_str()) {
                    return Err(PyTypeError::new_err(format!(
                        "ExecutionRecord() got an unexpected keyword argument '{name}'"
                    )));
                }
                if given.contains(&name)? {
                    return Err(PyTypeError::new_err(format!(
                        "ExecutionRecord() got multiple values for argument '{name}'"
                    )));
                }
                given.set_item(&name, value)?;
            }
        }
        let missing: Vec<String> = FIELDS[..REQUIRED]
            .iter()
            .filter(|field| !given.contains(**field).unwrap_or(false))
            .map(|field| format!("'{field}'"))
            .collect();
        if !missing.is_empty() {
            return Err(PyTypeError::new_err(format!(
                "ExecutionRecord() missing {} required argument(s): {}",
                missing.len(),
                missing.join(", ")
            )));
        }
        let fields = PyDict::new(py);
        for field in FIELDS {
            let value = match given.get_item(field)? {
                Some(value) => value,
                None => match default_value(py, types, field)? {
                    Some(value) => value,
                    None => continue,
                },
            };
            check_detached(types, field, &value)?;
            fields.set_item(field, value)?;
        }
        Ok(Self {
            backing: Backing::Detached(fields.unbind()),
        })
    }

    /// Assigns one of the original's fields: for a tracked record the execution changes in the
    /// tracker (`LookupError` once the record is gone); for a record built by hand the value is
    /// stored. A value of the wrong type is a `TypeError` naming the expected one.
    fn __setattr__(&self, py: Python<'_>, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        if !FIELDS.contains(&name) {
            let class = value.py().get_type::<RecordView>();
            return Err(if class.hasattr(name)? {
                PyAttributeError::new_err(format!(
                    "'ExecutionRecord' attribute '{name}' is read-only (it is computed from the record)"
                ))
            } else {
                PyAttributeError::new_err(format!("'ExecutionRecord' object has no attribute '{name}'"))
            });
        }
        let types = types(py)?;
        match &self.backing {
            Backing::Live(live) => live.write(types, name, value),
            Backing::Detached(fields) => {
                check_detached(types, name, value)?;
                fields.bind(py).set_item(name, value)
            }
        }
    }

    #[allow(clippy::unused_self, reason = "a Python method: Python calls it on the instance")]
    fn __delattr__(&self, name: &str) -> PyResult<()> {
        Err(PyAttributeError::new_err(format!(
            "cannot delete attribute '{name}' of 'ExecutionRecord'"
        )))
    }

    /// The execution's unique id (`exec_` + 32 hex digits for a tracked record).
    #[getter]
    fn execution_id<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match &self.backing {
            Backing::Live(live) => live.id.to_string().into_bound_py_any(py),
            Backing::Detached(_) => self.field(py, "execution_id", |_| Ok(py.None().into_bound(py))),
        }
    }

    /// The agent running it.
    #[getter]
    fn agent_name<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.field(py, "agent_name", |r| r.agent_name.as_str().into_bound_py_any(py))
    }

    /// The conversation thread (the `run_id` of its notifications).
    #[getter]
    fn thread_id<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.field(py, "thread_id", |r| r.thread_id.as_str().into_bound_py_any(py))
    }

    /// The user it runs for.
    #[getter]
    fn user_id<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.field(py, "user_id", |r| r.user_id.as_str().into_bound_py_any(py))
    }

    /// The tenant it belongs to (`"default"` unless set).
    #[getter]
    fn tenant(&self) -> String {
        match &self.backing {
            Backing::Live(live) => live.last().tenant.clone(),
            Backing::Detached(_) => agentrack::DEFAULT_TENANT.to_owned(),
        }
    }

    /// Its lifecycle state (an `ExecutionState`).
    #[getter]
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match &self.backing {
            Backing::Live(live) => Ok(types(py)?.state(py, live.state())),
            Backing::Detached(_) => self.field(py, "state", |_| Ok(py.None().into_bound(py))),
        }
    }

    /// Its creation time.
    #[getter]
    fn started_at<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.field(py, "started_at", |r| r.started_at.into_bound_py_any(py))
    }

    /// Its latest sign of life.
    #[getter]
    fn last_heartbeat<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.field(py, "last_heartbeat", |r| r.last_heartbeat.into_bound_py_any(py))
    }

    /// Its latest change.
    #[getter]
    fn updated_at<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.field(py, "updated_at", |r| r.updated_at.into_bound_py_any(py))
    }

    /// When it reached a terminal state, or `None`.
    #[getter]
    fn completed_at<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.field(py, "completed_at", |r| r.completed_at.into_bound_py_any(py))
    }

    /// Why it failed, timed out or died, or `None`.
    #[getter]
    fn error<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.field(py, "error", |r| r.error.as_deref().into_bound_py_any(py))
    }

    /// What it produced, or `None` (falsy results such as `0` or `""` are kept).
    #[getter]
    fn result<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.field(py, "result", |r| match &r.result {
            Some(value) => json_to_py(py, value),
            None => Ok(py.None().into_bound(py)),
        })
    }

    /// Heartbeats received.
    #[getter]
    fn heartbeat_count<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.field(py, "heartbeat_count", |r| r.heartbeat_count.into_bound_py_any(py))
    }

    /// How long it may run, in seconds.
    #[getter]
    fn timeout_seconds<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.field(py, "timeout_seconds", |r| secs_obj(py, r.timeout))
    }

    /// Caller-supplied data. For a tracked record, a dict whose changes (`record.metadata[key] =
    /// value`, `update`, `pop`, ...) are written back to the execution; changes inside nested
    /// values are not (assign the field again for those).
    #[getter]
    fn metadata<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        slf.get().field(py, "metadata", |r| {
            types(py)?.live_metadata(slf.as_any(), json_map_to_py(py, &r.metadata)?)
        })
    }

    /// Its phase (an `AgentExecutionPhase`).
    #[getter]
    fn current_phase<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.field(py, "current_phase", |r| Ok(types(py)?.phase(py, r.current_phase)))
    }

    /// Every phase change, oldest first (`PhaseTransition`s).
    #[getter]
    fn phase_history<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.field(py, "phase_history", |r| {
            let types = types(py)?;
            let items = r
                .phase_history
                .iter()
                .map(|t| types.transition(py, t))
                .collect::<PyResult<Vec<_>>>()?;
            Ok(PyList::new(py, items)?.into_any())
        })
    }

    /// Warnings reported through `set_agent_state`.
    #[getter]
    fn warning_count<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.field(py, "warning_count", |r| r.warning_count.into_bound_py_any(py))
    }

    /// Errors reported through `set_agent_state`.
    #[getter]
    fn error_count<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.field(py, "error_count", |r| r.error_count.into_bound_py_any(py))
    }

    /// Its own `TimeoutConfig`, or `None`.
    #[getter]
    fn timeout_config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.field(py, "timeout_config", |r| match r.timeout_config.as_deref() {
            Some(config) => types(py)?.timeout_config(py, config),
            None => Ok(py.None().into_bound(py)),
        })
    }

    /// Consecutive failures counted by its circuit breaker.
    #[getter]
    fn circuit_breaker_failures<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.field(py, "circuit_breaker_failures", |r| {
            r.circuit_breaker_failures.into_bound_py_any(py)
        })
    }

    /// Its circuit breaker's state (a `CircuitBreakerState`).
    #[getter]
    fn circuit_breaker_state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.field(py, "circuit_breaker_state", |r| {
            Ok(types(py)?.breaker_state(py, r.circuit_breaker_state))
        })
    }

    /// Its breaker's latest failure as POSIX seconds (0.0 if none), as in the original.
    #[getter]
    fn last_failure_time<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.field(py, "last_failure_time", |r| {
            epoch_secs(r.last_failure_time).into_bound_py_any(py)
        })
    }

    /// When its open breaker allows a trial call, as POSIX seconds (0.0 if not open).
    #[getter]
    fn next_attempt_time<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.field(py, "next_attempt_time", |r| {
            epoch_secs(r.next_attempt_time).into_bound_py_any(py)
        })
    }

    /// Whether it is pending, starting, running or completing.
    #[getter]
    fn is_alive(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.state_now(py)?.is_alive())
    }

    /// Whether it is completed, failed, timed out, dead or cancelled.
    #[getter]
    fn is_terminal(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.state_now(py)?.is_terminal())
    }

    /// Completion minus start, or the running time so far while alive (a `timedelta`).
    #[getter]
    fn duration(&self, py: Python<'_>) -> PyResult<TimeDelta> {
        let record = self.snapshot(py)?;
        Ok(non_negative(
            record.completed_at.unwrap_or_else(|| self.now()) - record.started_at,
        ))
    }

    /// Time since the latest heartbeat (a `timedelta`).
    #[getter]
    fn time_since_heartbeat(&self, py: Python<'_>) -> PyResult<TimeDelta> {
        Ok(non_negative(self.now() - self.snapshot(py)?.last_heartbeat))
    }

    /// Whether it ran past its timeout (a terminal record: only if its state is `TIMEOUT`).
    fn is_timed_out(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.snapshot(py)?.is_timed_out(self.now()))
    }

    /// Whether no heartbeat came for more than `heartbeat_timeout` seconds (a terminal record:
    /// only if its state is `DEAD`).
    #[pyo3(signature = (heartbeat_timeout = 10.0))]
    fn is_dead(&self, py: Python<'_>, heartbeat_timeout: f64) -> PyResult<bool> {
        let timeout = duration_arg("heartbeat_timeout", heartbeat_timeout.max(0.0))?;
        Ok(self.snapshot(py)?.is_dead(timeout, self.now()))
    }

    /// Milliseconds since it was created.
    fn get_total_duration_ms(&self, py: Python<'_>) -> PyResult<f64> {
        Ok(millis_between(self.snapshot(py)?.started_at, self.now()))
    }

    /// Milliseconds spent in `phase` over every visit, the current one included. (The original
    /// attributed each stretch to the phase entered next; this counts the phase occupied.)
    fn get_phase_duration_ms(&self, py: Python<'_>, phase: &Bound<'_, PyAny>) -> PyResult<f64> {
        let phase = types(py)?.as_phase(phase)?;
        let record = self.snapshot(py)?;
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
        Ok(float_ms(past) + current)
    }

    /// Milliseconds since the current phase was entered.
    fn get_current_phase_duration_ms(&self, py: Python<'_>) -> PyResult<f64> {
        let record = self.snapshot(py)?;
        Ok(millis_between(
            record.phase_entered_at,
            record.completed_at.unwrap_or_else(|| self.now()),
        ))
    }

    /// Whether its breaker is open and still refusing calls.
    fn is_circuit_breaker_open(&self, py: Python<'_>) -> PyResult<bool> {
        let record = self.snapshot(py)?;
        Ok(record.circuit_breaker_state == BreakerState::Open
            && record.next_attempt_time.is_some_and(|next| self.now() < next))
    }

    /// Whether a retry is sensible: at most `max_retries` failures so far and the breaker not open.
    #[pyo3(signature = (max_retries = 2))]
    fn should_retry(&self, py: Python<'_>, max_retries: u32) -> PyResult<bool> {
        let record = self.snapshot(py)?;
        Ok(record.circuit_breaker_failures <= max_retries && record.circuit_breaker_state != BreakerState::Open)
    }

    /// Seconds the execution may still run before it times out (0 when past).
    fn time_until_timeout(&self, py: Python<'_>) -> PyResult<f64> {
        let record = self.snapshot(py)?;
        let elapsed = record.duration(self.now());
        Ok(record.timeout.saturating_sub(elapsed).as_secs_f64())
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        match &self.backing {
            Backing::Live(live) => {
                let record = live.current();
                Ok(format!(
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
                ))
            }
            Backing::Detached(fields) => {
                let fields = fields.bind(py);
                let parts = FIELDS
                    .iter()
                    .map(|field| {
                        let value = fields.get_item(field)?.map_or_else(|| "None".to_owned(), |v| repr(&v));
                        Ok(format!("{field}={value}"))
                    })
                    .collect::<PyResult<Vec<_>>>()?;
                Ok(format!("ExecutionRecord({})", parts.join(", ")))
            }
        }
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let Ok(other) = other.cast::<RecordView>() else {
            return Ok(py.NotImplemented());
        };
        let equal = match (&self.backing, &other.get().backing) {
            (Backing::Live(a), Backing::Live(b)) => a.id == b.id,
            (Backing::Detached(a), Backing::Detached(b)) => a.bind(py).eq(b.bind(py))?,
            _ => false,
        };
        match op {
            CompareOp::Eq => equal.into_py_any(py),
            CompareOp::Ne => (!equal).into_py_any(py),
            _ => Ok(py.NotImplemented()),
        }
    }

    #[allow(
        clippy::cast_possible_truncation,
        reason = "folds the 128-bit id into a 64-bit hash: dropping the high bits is the point"
    )]
    fn __hash__(&self) -> PyResult<u64> {
        match &self.backing {
            Backing::Live(live) => {
                let bits = live.id.as_uuid().as_u128();
                Ok((bits as u64) ^ ((bits >> 64) as u64))
            }
            // As a dataclass with eq and without frozen: mutable, so not hashable.
            Backing::Detached(_) => Err(PyTypeError::new_err(
                "unhashable type: 'ExecutionRecord' (built by hand)",
            )),
        }
    }
}
