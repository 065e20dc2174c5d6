//! `TrackerCore`: the base class of the Python `AgentExecutionTracker`.
//!
//! Every synchronous method of the original is implemented here, with the original's name,
//! arguments, defaults and return values (`False`/`None` for unknown ids rather than errors), so
//! a call from Python goes straight into the core. The tracker is configured for the original's
//! behaviour: lenient phase and lifecycle validation (invalid phase transitions happen and are
//! flagged; any state may be set on an alive execution).
//!
//! The core is thread-safe (a sharded map, a short lock per record), so the methods need no lock
//! of their own; the GIL is released around the operations that walk many records.

use std::sync::{Arc, OnceLock};

use agentrack::{
    AgentStateUpdate, Clock, ExecutionId, ExecutionState, NewExecution, Outcome, Phase, StateUpdate, SystemClock,
    Tracker, TrackerConfig, TrackerError, Validation,
};
use chrono::{DateTime, Utc};
use pyo3::IntoPyObjectExt;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use serde_json::{Map, Value};

use crate::calls::{Admission, TransitionStep, begin_call, begin_transition};
use crate::clock::PyManualClock;
use crate::convert::{epoch_secs, float_ms, json_map_to_py, millis_between, py_to_json, py_to_map, secs_obj};
use crate::record::RecordView;
use crate::types::{duration_arg, extract_timeout_config, repr, type_name, types};

/// The Rust core of `AgentExecutionTracker`; use `agentrack.AgentExecutionTracker`.
#[pyclass(subclass, frozen, module = "agentrack._core", name = "TrackerCore")]
pub(crate) struct TrackerCore {
    core: OnceLock<Tracker>,
}

/// The execution id in `obj`, if it is a well-formed id string. Anything else names no execution.
pub(crate) fn id_of(obj: &Bound<'_, PyAny>) -> Option<ExecutionId> {
    obj.cast::<PyString>().ok()?.to_str().ok()?.parse().ok()
}

/// `obj` as text: a `str` as itself, anything else as `str(obj)`.
pub(crate) fn text(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    match obj.cast::<PyString>() {
        Ok(s) => Ok(s.to_str()?.to_owned()),
        Err(_) => Ok(obj.str()?.to_str()?.to_owned()),
    }
}

pub(crate) fn some<'a, 'py>(obj: Option<&'a Bound<'py, PyAny>>) -> Option<&'a Bound<'py, PyAny>> {
    obj.filter(|obj| !obj.is_none())
}

pub(crate) fn isoformat(py: Python<'_>, time: DateTime<Utc>) -> PyResult<Bound<'_, PyAny>> {
    time.into_bound_py_any(py)?.call_method0("isoformat")
}

fn valid_states() -> String {
    let quoted: Vec<String> = ExecutionState::VALUES.iter().map(|v| format!("'{v}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// An invalid argument as a Python error; any other refusal is reported as `False`/`None`.
#[allow(
    clippy::needless_pass_by_value,
    reason = "a `map_err` adapter: it takes the error the way `map_err` hands it over"
)]
fn input_error(error: TrackerError) -> PyErr {
    PyValueError::new_err(error.to_string())
}

/// `state` as an `ExecutionState`, or the error `update_execution_state` raises for anything else.
pub(crate) fn state_arg(
    py: Python<'_>,
    execution_id: &Bound<'_, PyAny>,
    state: &Bound<'_, PyAny>,
) -> PyResult<ExecutionState> {
    let Some(new_state) = types(py)?.as_state(state) else {
        let shown = text(execution_id).unwrap_or_default();
        return Err(if state.is_instance_of::<PyDict>() {
            PyValueError::new_err(format!(
                "Dict object passed as ExecutionState: {}. A dict is not a state (this was the \
                 \"'dict' object has no attribute 'value'\" bug); pass an ExecutionState member, e.g. \
                 ExecutionState.COMPLETED. Valid ExecutionState values: {}. Agent execution ID: {shown}",
                repr(state),
                valid_states()
            ))
        } else {
            PyTypeError::new_err(format!(
                "Expected ExecutionState enum, got {}: {}. Valid ExecutionState values: {}. Agent execution ID: {shown}",
                type_name(state),
                repr(state),
                valid_states()
            ))
        });
    };
    Ok(new_state)
}

/// Whether the phase rules allow `current_phase → new_phase` (`None` → only `CREATED`).
pub(crate) fn valid_transition(
    py: Python<'_>,
    current_phase: Option<&Bound<'_, PyAny>>,
    new_phase: &Bound<'_, PyAny>,
) -> PyResult<bool> {
    let types = types(py)?;
    let Ok(to) = types.as_phase(new_phase) else {
        return Ok(false);
    };
    match some(current_phase) {
        None => Ok(to == Phase::Created),
        Some(from) => Ok(types.as_phase(from).is_ok_and(|from| from.can_transition_to(to))),
    }
}

/// The counters as `get_metrics` returns them.
pub(crate) fn metrics_dict<'py>(py: Python<'py>, m: &agentrack::Metrics) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("total_executions", m.total_executions)?;
    dict.set_item("active_executions", m.active_executions)?;
    dict.set_item("successful_executions", m.successful_executions)?;
    dict.set_item("failed_executions", m.failed_executions)?;
    dict.set_item("timeout_executions", m.timeout_executions)?;
    dict.set_item("dead_executions", m.dead_executions)?;
    dict.set_item("cancelled_executions", m.cancelled_executions)?;
    dict.set_item("success_rate", m.success_rate)?;
    dict.set_item("failure_rate", m.failure_rate)?;
    Ok(dict)
}

/// Phase transitions as `get_state_history` returns them (phases as value strings, ISO times).
pub(crate) fn history_list<'py>(py: Python<'py>, history: &[agentrack::Transition]) -> PyResult<Bound<'py, PyList>> {
    let items = history
        .iter()
        .map(|t| {
            let dict = PyDict::new(py);
            dict.set_item("from_phase", t.from_phase.as_str())?;
            dict.set_item("to_phase", t.to_phase.as_str())?;
            dict.set_item("timestamp", isoformat(py, t.timestamp)?)?;
            dict.set_item("duration_ms", float_ms(t.duration_ms))?;
            dict.set_item("metadata", json_map_to_py(py, &t.metadata)?)?;
            dict.set_item("websocket_event_sent", t.websocket_event_sent)?;
            dict.set_item("valid", t.valid)?;
            Ok(dict)
        })
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}

/// The agent-state view as `get_agent_state` returns it, its total duration counted to `now`.
pub(crate) fn agent_state_dict<'py>(
    py: Python<'py>,
    state: &agentrack::AgentState,
    now: DateTime<Utc>,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("execution_id", state.execution_id.to_string())?;
    dict.set_item("agent_name", &state.agent_name)?;
    dict.set_item("user_id", &state.user_id)?;
    dict.set_item("thread_id", &state.thread_id)?;
    dict.set_item("state", state.state.as_str())?;
    dict.set_item("current_phase", state.current_phase.as_str())?;
    dict.set_item("started_at", isoformat(py, state.started_at)?)?;
    dict.set_item("last_heartbeat", isoformat(py, state.last_heartbeat)?)?;
    dict.set_item("total_duration_ms", millis_between(state.started_at, now))?;
    dict.set_item("current_phase_duration_ms", float_ms(state.current_phase_duration_ms))?;
    dict.set_item("phase_count", state.phase_count)?;
    dict.set_item("warning_count", state.warning_count)?;
    dict.set_item("error_count", state.error_count)?;
    dict.set_item("metadata", json_map_to_py(py, &state.metadata)?)?;
    Ok(dict)
}

/// The timeout position as `check_timeout` returns it.
pub(crate) fn timeout_dict<'py>(py: Python<'py>, status: &agentrack::TimeoutStatus) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("execution_id", status.execution_id.to_string())?;
    dict.set_item("elapsed_seconds", status.elapsed_seconds)?;
    dict.set_item("timeout_seconds", status.timeout_seconds)?;
    dict.set_item("is_timed_out", status.is_timed_out)?;
    dict.set_item("circuit_breaker_state", status.circuit_breaker_state.as_str())?;
    dict.set_item("circuit_breaker_failures", status.circuit_breaker_failures)?;
    dict.set_item("time_until_timeout", status.time_until_timeout)?;
    Ok(dict)
}

/// The breaker as `circuit_breaker_status` returns it. Times are POSIX seconds (0.0 = none), as
/// in the original.
pub(crate) fn breaker_dict<'py>(
    py: Python<'py>,
    execution_id: &str,
    status: &agentrack::BreakerStatus,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("execution_id", execution_id)?;
    dict.set_item("state", status.state.as_str())?;
    dict.set_item("failure_count", status.failure_count)?;
    dict.set_item("failure_threshold", status.failure_threshold)?;
    dict.set_item("success_count", status.success_count)?;
    dict.set_item("last_failure_time", epoch_secs(status.last_failure_time))?;
    dict.set_item("next_attempt_time", epoch_secs(status.next_attempt_time))?;
    // The original's is_open: open and still refusing calls.
    dict.set_item("is_open", status.is_open && !status.can_retry)?;
    dict.set_item("can_retry", status.can_retry)?;
    dict.set_item("recovery_timeout", status.recovery_timeout)?;
    Ok(dict)
}

impl TrackerCore {
    fn t(&self) -> PyResult<&Tracker> {
        self.core.get().ok_or_else(|| {
            PyRuntimeError::new_err("the tracker is not initialised: call AgentExecutionTracker.__init__")
        })
    }

    fn views(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&Tracker) -> Vec<agentrack::ExecutionRecord> + Send,
    ) -> PyResult<Py<PyList>> {
        let tracker = self.t()?;
        let records = py.detach(|| f(tracker));
        RecordView::list(py, tracker, records)
    }
}

#[pymethods]
impl TrackerCore {
    /// An unconfigured tracker; `__init__` configures it.
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        Self { core: OnceLock::new() }
    }

    /// Configures the tracker (called once, by `AgentExecutionTracker.__init__`).
    #[pyo3(signature = (
        heartbeat_timeout = 10.0,
        execution_timeout = 15.0,
        cleanup_interval = 60.0,
        timeout_config = None,
        clock = None,
        monitor_interval = 2.0,
        history_cap = 100,
        max_finished = 100_000,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn _init_core(
        &self,
        heartbeat_timeout: f64,
        execution_timeout: f64,
        cleanup_interval: f64,
        timeout_config: Option<&Bound<'_, PyAny>>,
        clock: Option<&Bound<'_, PyManualClock>>,
        monitor_interval: f64,
        history_cap: usize,
        max_finished: usize,
    ) -> PyResult<()> {
        let execution_timeout = duration_arg("execution_timeout", execution_timeout)?;
        if execution_timeout.is_zero() {
            return Err(PyValueError::new_err("execution_timeout must be greater than 0"));
        }
        let config = TrackerConfig {
            heartbeat_timeout: duration_arg("heartbeat_timeout", heartbeat_timeout)?,
            execution_timeout,
            cleanup_age: duration_arg("cleanup_interval", cleanup_interval)?,
            max_finished,
            history_cap,
            phase_validation: Validation::Lenient,
            lifecycle_validation: Validation::Lenient,
            monitor_interval: duration_arg("monitor_interval", monitor_interval)?,
            timeout_config: match some(timeout_config) {
                Some(obj) => extract_timeout_config(obj)?,
                None => agentrack::TimeoutConfig::default(),
            },
            ..TrackerConfig::default()
        };
        let clock: Arc<dyn Clock> = match clock {
            Some(clock) => Arc::new(clock.get().clock.clone()),
            None => Arc::new(SystemClock::new()),
        };
        self.core
            .set(Tracker::with_clock(config, clock))
            .map_err(|_| PyRuntimeError::new_err("the tracker is already initialised"))
    }

    // ---------------------------------------------------------------- lifecycle

    /// Creates an execution in state `PENDING` and phase `CREATED`; returns its id.
    #[pyo3(signature = (agent_name, thread_id, user_id, timeout_seconds = None, metadata = None))]
    fn create_execution(
        &self,
        agent_name: &Bound<'_, PyAny>,
        thread_id: &Bound<'_, PyAny>,
        user_id: &Bound<'_, PyAny>,
        timeout_seconds: Option<f64>,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let mut new = NewExecution::new(text(agent_name)?, text(thread_id)?, text(user_id)?)
            .metadata(py_to_map(metadata, "metadata")?);
        // As in the original, a missing or zero timeout means the tracker's default.
        if let Some(seconds) = timeout_seconds.filter(|s| *s != 0.0) {
            new = new.timeout(duration_arg("timeout_seconds", seconds)?);
        }
        let id = self.t()?.lean().create(new).map_err(input_error)?;
        Ok(id.to_string())
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
        secs_obj(py, self.t()?.default_timeout())
    }

    /// `PENDING → STARTING`; `False` for an unknown execution or any other state.
    fn start_execution(&self, execution_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        let tracker = self.t()?;
        Ok(id_of(execution_id).is_some_and(|id| tracker.lean().start(id).is_ok()))
    }

    /// Records a heartbeat (`STARTING → RUNNING`); `False` for an unknown or finished execution.
    fn heartbeat(&self, execution_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        let tracker = self.t()?;
        Ok(id_of(execution_id).is_some_and(|id| tracker.lean().heartbeat(id).is_ok()))
    }

    /// Sets the state (an `ExecutionState` member), with an optional error and result.
    ///
    /// `False` for an unknown execution (nothing is created) or a finished one.
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
        let update = StateUpdate {
            error: some(error).map(text).transpose()?,
            result: some(result).map(py_to_json).transpose()?,
        };
        Ok(self.t()?.lean().set_state(id, new_state, update).is_ok())
    }

    /// Completes an execution; `execution_time_ms` goes into its metadata. `False` for an unknown
    /// or finished execution.
    #[pyo3(signature = (execution_id, result = None, execution_time_ms = None))]
    fn complete_execution(
        &self,
        execution_id: &Bound<'_, PyAny>,
        result: Option<&Bound<'_, PyAny>>,
        execution_time_ms: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let tracker = self.t()?;
        let Some(id) = id_of(execution_id) else {
            return Ok(false);
        };
        if let Some(ms) = some(execution_time_ms) {
            let mut metadata = Map::new();
            metadata.insert("execution_time_ms".to_owned(), py_to_json(ms)?);
            let update = AgentStateUpdate {
                metadata: Some(metadata),
                ..AgentStateUpdate::default()
            };
            if tracker.lean().update_agent_state(id, update).is_err() {
                return Ok(false);
            }
        }
        let result = some(result).map(py_to_json).transpose()?;
        Ok(tracker.lean().complete(id, result).is_ok())
    }

    /// Fails an execution with `error`; `error_context` goes into its metadata. `False` for an
    /// unknown or finished execution.
    #[pyo3(signature = (execution_id, error, error_context = None))]
    fn fail_execution(
        &self,
        execution_id: &Bound<'_, PyAny>,
        error: &Bound<'_, PyAny>,
        error_context: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let tracker = self.t()?;
        let Some(id) = id_of(execution_id) else {
            return Ok(false);
        };
        if let Some(context) = some(error_context) {
            let mut metadata = Map::new();
            metadata.insert("error_context".to_owned(), py_to_json(context)?);
            let update = AgentStateUpdate {
                metadata: Some(metadata),
                ..AgentStateUpdate::default()
            };
            if tracker.lean().update_agent_state(id, update).is_err() {
                return Ok(false);
            }
        }
        Ok(tracker.lean().fail(id, text(error)?).is_ok())
    }

    /// Cancels an execution (state `CANCELLED`); `False` for an unknown or finished execution.
    #[pyo3(signature = (execution_id, reason = "cancelled"))]
    fn cancel_execution(&self, execution_id: &Bound<'_, PyAny>, reason: &str) -> PyResult<bool> {
        let tracker = self.t()?;
        Ok(id_of(execution_id).is_some_and(|id| tracker.lean().cancel(id, reason).is_ok()))
    }

    // ---------------------------------------------------------------- queries

    /// The execution's state, or `None` for an unknown execution.
    fn get_execution_state<'py>(
        &self,
        py: Python<'py>,
        execution_id: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let tracker = self.t()?;
        match id_of(execution_id).map(|id| tracker.state(id)) {
            Some(Ok(state)) => Ok(Some(types(py)?.state(py, state))),
            _ => Ok(None),
        }
    }

    /// The execution's record (a live view), or `None`.
    fn get_execution(&self, py: Python<'_>, execution_id: &Bound<'_, PyAny>) -> PyResult<Option<Py<RecordView>>> {
        let tracker = self.t()?;
        match id_of(execution_id).map(|id| tracker.get(id)) {
            Some(Ok(record)) => Ok(Some(Py::new(py, RecordView::new(tracker.clone(), record))?)),
            _ => Ok(None),
        }
    }

    /// Every alive execution, oldest first.
    fn get_active_executions(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        self.views(py, Tracker::active)
    }

    /// The executions of one agent, oldest first.
    fn get_executions_by_agent(&self, py: Python<'_>, agent_name: &Bound<'_, PyAny>) -> PyResult<Py<PyList>> {
        let name = text(agent_name)?;
        self.views(py, move |t| t.by_agent(&name))
    }

    /// The executions of one thread, oldest first.
    fn get_executions_by_thread(&self, py: Python<'_>, thread_id: &Bound<'_, PyAny>) -> PyResult<Py<PyList>> {
        let thread = text(thread_id)?;
        self.views(py, move |t| t.by_thread(&thread))
    }

    /// The executions of one user, oldest first.
    fn get_executions_by_user(&self, py: Python<'_>, user_id: &Bound<'_, PyAny>) -> PyResult<Py<PyList>> {
        let user = text(user_id)?;
        self.views(py, move |t| t.by_user(&user))
    }

    /// Alive executions whose heartbeat gap or timeout has passed (not yet marked). Reports only.
    fn detect_dead_executions(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        self.views(py, Tracker::detect_dead)
    }

    /// The counters: total, active, successful, failed, timeout, dead (and cancelled) executions,
    /// success and failure rates.
    fn get_metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        metrics_dict(py, &self.t()?.metrics())
    }

    /// Removes a finished execution from every index, keeping it in the completed history (capped
    /// at 100); `False` for an unknown or alive execution.
    fn cleanup_state(&self, execution_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        let tracker = self.t()?;
        Ok(id_of(execution_id).is_some_and(|id| tracker.cleanup(id).is_ok()))
    }

    // ---------------------------------------------------------------- phases

    /// Whether the phase rules allow `current_phase → new_phase` (`None` → only `CREATED`).
    #[allow(clippy::unused_self, reason = "a Python method: Python calls it on the instance")]
    fn validate_state_transition(
        &self,
        py: Python<'_>,
        current_phase: Option<&Bound<'_, PyAny>>,
        new_phase: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        valid_transition(py, current_phase, new_phase)
    }

    /// The execution's phase transitions as dicts (phases as value strings, ISO timestamps);
    /// `[]` for an unknown execution.
    fn get_state_history<'py>(&self, py: Python<'py>, execution_id: &Bound<'_, PyAny>) -> PyResult<Bound<'py, PyList>> {
        let tracker = self.t()?;
        let history = match id_of(execution_id).map(|id| tracker.phase_history(id)) {
            Some(Ok(history)) => history,
            _ => Vec::new(),
        };
        history_list(py, &history)
    }

    /// The execution's agent-state view as a dict, or `None`.
    fn get_agent_state<'py>(
        &self,
        py: Python<'py>,
        execution_id: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let tracker = self.t()?;
        let Some(Ok(state)) = id_of(execution_id).map(|id| tracker.agent_state(id)) else {
            return Ok(None);
        };
        agent_state_dict(py, &state, tracker.clock().now()).map(Some)
    }

    /// Updates `warning_count` and `error_count` and merges `metadata` from `state_updates`;
    /// `False` for an unknown or finished execution.
    fn set_agent_state(&self, execution_id: &Bound<'_, PyAny>, state_updates: &Bound<'_, PyAny>) -> PyResult<bool> {
        let tracker = self.t()?;
        let Some(id) = id_of(execution_id) else {
            return Ok(false);
        };
        let updates = state_updates.cast::<PyDict>().map_err(|_| {
            PyTypeError::new_err(format!(
                "state_updates must be a dict, got {}",
                type_name(state_updates)
            ))
        })?;
        let count = |key: &str| -> PyResult<Option<u32>> {
            match updates.get_item(key)? {
                Some(value) if !value.is_none() => Ok(Some(value.extract()?)),
                _ => Ok(None),
            }
        };
        let update = AgentStateUpdate {
            warning_count: count("warning_count")?,
            error_count: count("error_count")?,
            metadata: match updates.get_item("metadata")? {
                Some(value) if !value.is_none() => Some(py_to_map(Some(&value), "metadata")?),
                _ => None,
            },
        };
        Ok(tracker.lean().update_agent_state(id, update).is_ok())
    }

    /// Records a phase transition and, with `notify`, returns the notification still to send.
    ///
    /// Returns `None` for an unknown execution, `bool` (whether the rules allow the transition)
    /// when nothing is left to do, or a `PendingNotification`.
    #[pyo3(signature = (execution_id, phase, metadata = None, notify = false))]
    fn _transition(
        &self,
        py: Python<'_>,
        execution_id: &Bound<'_, PyAny>,
        phase: &Bound<'_, PyAny>,
        metadata: Option<&Bound<'_, PyAny>>,
        notify: bool,
    ) -> PyResult<Py<PyAny>> {
        let tracker = self.t()?;
        let Some(id) = id_of(execution_id) else {
            return Ok(py.None());
        };
        let phase = types(py)?.as_phase(phase)?;
        let metadata = py_to_map(metadata, "metadata")?;
        if !notify {
            return match tracker.lean().transition(id, phase, Some(metadata)) {
                Ok(valid) => valid.into_py_any(py),
                Err(_) => Ok(py.None()),
            };
        }
        match begin_transition(py, tracker, id, phase, metadata)? {
            Ok(TransitionStep::Done(valid)) => valid.into_py_any(py),
            Ok(TransitionStep::Notify(pending)) => Ok(Py::new(py, pending)?.into_any()),
            Err(_) => Ok(py.None()),
        }
    }

    // ---------------------------------------------------------------- timeouts and breakers

    /// Gives the execution its own `TimeoutConfig` (its timeout becomes
    /// `agent_execution_timeout`); `False` for an unknown or finished execution.
    fn set_timeout(&self, execution_id: &Bound<'_, PyAny>, timeout_config: &Bound<'_, PyAny>) -> PyResult<bool> {
        let tracker = self.t()?;
        let config = extract_timeout_config(timeout_config)?;
        let Some(id) = id_of(execution_id) else {
            return Ok(false);
        };
        match tracker.set_timeout_config(id, config) {
            Ok(_) => Ok(true),
            Err(error @ TrackerError::InvalidInput { .. }) => Err(input_error(error)),
            Err(_) => Ok(false),
        }
    }

    /// The execution's timeout position as a dict, or `None`.
    fn check_timeout<'py>(
        &self,
        py: Python<'py>,
        execution_id: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let tracker = self.t()?;
        let Some(Ok(status)) = id_of(execution_id).map(|id| tracker.timeout_status(id)) else {
            return Ok(None);
        };
        timeout_dict(py, &status).map(Some)
    }

    /// Closes the execution's circuit breaker with its counters zeroed; `False` for an unknown
    /// execution.
    fn register_circuit_breaker(&self, execution_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.reset_circuit_breaker(execution_id)
    }

    /// Closes the execution's circuit breaker with its counters zeroed; `False` for an unknown
    /// execution.
    fn reset_circuit_breaker(&self, execution_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        let tracker = self.t()?;
        Ok(id_of(execution_id).is_some_and(|id| tracker.reset_breaker(id).is_ok()))
    }

    /// The execution's circuit breaker as a dict, or `None`. Times are POSIX seconds (0.0 = none),
    /// as in the original.
    fn circuit_breaker_status<'py>(
        &self,
        py: Python<'py>,
        execution_id: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let tracker = self.t()?;
        let Some(Ok(status)) = id_of(execution_id).map(|id| tracker.breaker_status(id)) else {
            return Ok(None);
        };
        breaker_dict(py, &text(execution_id)?, &status).map(Some)
    }

    /// Asks the execution's breaker to admit one call.
    ///
    /// Returns `("admitted", call, 0.0)`, `("open", None, seconds_to_wait)`, `("not_found", None,
    /// 0.0)` or `("terminal", None, 0.0)`.
    fn _begin_call<'py>(
        &self,
        py: Python<'py>,
        execution_id: &Bound<'_, PyAny>,
        operation_name: &str,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let tracker = self.t()?;
        let none = || py.None().into_bound(py);
        let Some(id) = id_of(execution_id) else {
            return ("not_found", none(), 0.0).into_pyobject(py);
        };
        match begin_call(tracker, id, operation_name) {
            Admission::Admitted(call) => ("admitted", Bound::new(py, call)?.into_any(), 0.0).into_pyobject(py),
            Admission::Open(wait) => ("open", none(), wait).into_pyobject(py),
            Admission::Refused(TrackerError::Terminal { .. }) => ("terminal", none(), 0.0).into_pyobject(py),
            Admission::Refused(_) => ("not_found", none(), 0.0).into_pyobject(py),
        }
    }

    // ---------------------------------------------------------------- integration and monitor

    /// Creates an execution with its own timeout config (used by
    /// `create_execution_with_full_context`).
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
        let tracker = self.t()?;
        let mut new = NewExecution::new(text(agent_name)?, text(thread_id)?, text(user_id)?)
            .metadata(py_to_map(metadata, "metadata")?);
        new = new.timeout_config(match some(timeout_config) {
            Some(config) => extract_timeout_config(config)?,
            None => tracker.config().timeout_config,
        });
        let initial = match some(initial_state) {
            Some(state) => types(py)?.as_state(state),
            None => None,
        };
        new.initial_state = initial.filter(|state| state.is_alive());
        let id = tracker.lean().create(new).map_err(input_error)?;
        if let Some(state) = initial.filter(|state| state.is_terminal()) {
            let _ = tracker.lean().set_state(id, state, StateUpdate::default());
        }
        Ok(id.to_string())
    }

    /// One monitor pass: marks dead and timed-out executions and purges old finished ones.
    /// Returns `(dead, timed_out, purged_count)`.
    fn _sweep<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let tracker = self.t()?;
        let sweep = py.detach(|| tracker.sweep());
        let dead = RecordView::list(py, tracker, sweep.dead)?;
        let timed_out = RecordView::list(py, tracker, sweep.timed_out)?;
        (dead, timed_out, sweep.purged).into_pyobject(py)
    }

    /// One purge pass: drops finished executions that completed `cleanup_interval` or more ago
    /// (the original's `_cleanup_old_executions`). Returns how many.
    fn _purge_finished(&self, py: Python<'_>) -> PyResult<usize> {
        let tracker = self.t()?;
        let age = tracker.config().cleanup_age;
        Ok(py.detach(|| tracker.purge_finished(age)))
    }

    /// Records one protected call's outcome in the execution's circuit breaker, as if a call had
    /// just been admitted and finished (the original's `_on_circuit_breaker_success` /
    /// `_on_circuit_breaker_failure`). A failure reported while the breaker is open and refusing
    /// calls is counted as the original counted it: one more failure, and the breaker stays open
    /// for another `recovery_timeout` from now. Returns `"recorded"`, or why nothing was
    /// counted: `"open"` (a success while the breaker refuses calls), `"terminal"` or
    /// `"not_found"`.
    fn _record_breaker_outcome(&self, execution_id: &Bound<'_, PyAny>, success: bool) -> PyResult<&'static str> {
        let tracker = self.t()?;
        let Some(id) = id_of(execution_id) else {
            return Ok("not_found");
        };
        let outcome = if success { Outcome::Success } else { Outcome::Failure };
        Ok(match tracker.count_call_outcome(id, outcome) {
            Ok(_) => "recorded",
            Err(TrackerError::CircuitOpen { .. }) => "open",
            Err(TrackerError::Terminal { .. }) => "terminal",
            Err(_) => "not_found",
        })
    }

    /// The number of records in memory (alive and finished).
    fn _record_count(&self) -> PyResult<usize> {
        Ok(self.t()?.len())
    }

    /// Records removed by `cleanup_state`, oldest first.
    fn _completed_history(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        self.views(py, Tracker::completed_history)
    }

    /// The ids of every record in memory, oldest first.
    fn _execution_ids(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let tracker = self.t()?;
        Ok(py.detach(|| tracker.all().iter().map(|r| r.execution_id.to_string()).collect()))
    }

    /// The number of alive executions.
    fn _active_count(&self) -> PyResult<usize> {
        Ok(self.t()?.active_count())
    }

    /// Checks the indexes and counters against the records; returns what is wrong (for tests).
    fn _check_consistency(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let tracker = self.t()?;
        Ok(py.detach(|| tracker.check_consistency()))
    }

    /// The tracker's heartbeat timeout in seconds, as configured.
    #[getter]
    fn _heartbeat_timeout_seconds(&self) -> PyResult<f64> {
        Ok(self.t()?.config().heartbeat_timeout.as_secs_f64())
    }

    /// The tracker's current time (its clock's).
    fn _now(&self) -> PyResult<DateTime<Utc>> {
        Ok(self.t()?.clock().now())
    }

    /// `value` converted the way metadata and results are stored (for tests).
    #[staticmethod]
    fn _json_roundtrip<'py>(py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let json: Value = py_to_json(value)?;
        crate::convert::json_to_py(py, &json)
    }
}
