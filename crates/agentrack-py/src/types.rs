//! The Python classes the extension hands out: the three enumerations, `TimeoutConfig`,
//! `PhaseTransition` and the write-through metadata dict of a tracked record.
//!
//! They are defined in Python (`agentrack/_types.py`) so that they are exactly what the original
//! defined — `enum.Enum` subclasses and dataclasses — and registered here once, at import. Enum
//! members are kept in the core's declaration order, so a Rust value maps to its Python member by
//! index and a Python member to its Rust value by identity.

use std::time::Duration;

use agentrack::{BreakerState, ExecutionState, Phase, TimeoutConfig, Transition};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString};

use crate::convert::{float_ms, json_map_to_py, secs};

/// The registered Python classes and enum members.
pub(crate) struct Types {
    states: Vec<Py<PyAny>>,
    phases: Vec<Py<PyAny>>,
    breaker_states: Vec<Py<PyAny>>,
    timeout_config: Py<PyAny>,
    phase_transition: Py<PyAny>,
    live_metadata: Py<PyAny>,
}

static TYPES: PyOnceLock<Types> = PyOnceLock::new();

/// The registered classes.
///
/// # Errors
///
/// `RuntimeError` if `agentrack._core` is used without importing `agentrack`.
pub(crate) fn types(py: Python<'_>) -> PyResult<&'static Types> {
    TYPES.get(py).ok_or_else(|| {
        PyRuntimeError::new_err("agentrack._core is used through the agentrack package; import agentrack")
    })
}

fn members(cls: &Bound<'_, PyAny>, values: &[&str]) -> PyResult<Vec<Py<PyAny>>> {
    values.iter().map(|value| Ok(cls.call1((*value,))?.unbind())).collect()
}

/// Registers the Python classes (called once by `agentrack._types`).
#[pyfunction]
#[pyo3(name = "_register_types")]
pub(crate) fn register_types(
    py: Python<'_>,
    execution_state: &Bound<'_, PyAny>,
    phase: &Bound<'_, PyAny>,
    breaker_state: &Bound<'_, PyAny>,
    timeout_config: &Bound<'_, PyAny>,
    phase_transition: &Bound<'_, PyAny>,
    live_metadata: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let types = Types {
        states: members(execution_state, ExecutionState::VALUES)?,
        phases: members(phase, Phase::VALUES)?,
        breaker_states: members(breaker_state, BreakerState::VALUES)?,
        timeout_config: timeout_config.clone().unbind(),
        phase_transition: phase_transition.clone().unbind(),
        live_metadata: live_metadata.clone().unbind(),
    };
    // A second import (e.g. importlib.reload) keeps the first registration.
    let _ = TYPES.set(py, types);
    Ok(())
}

impl Types {
    /// The Python member of an execution state.
    pub(crate) fn state<'py>(&self, py: Python<'py>, state: ExecutionState) -> Bound<'py, PyAny> {
        self.states[state as usize].bind(py).clone()
    }

    /// The Python member of a phase.
    pub(crate) fn phase<'py>(&self, py: Python<'py>, phase: Phase) -> Bound<'py, PyAny> {
        self.phases[phase as usize].bind(py).clone()
    }

    /// The Python member of a breaker state.
    pub(crate) fn breaker_state<'py>(&self, py: Python<'py>, state: BreakerState) -> Bound<'py, PyAny> {
        self.breaker_states[state as usize].bind(py).clone()
    }

    /// The breaker state `obj` is, if it is a `CircuitBreakerState` member.
    pub(crate) fn as_breaker_state(&self, obj: &Bound<'_, PyAny>) -> Option<BreakerState> {
        self.breaker_states
            .iter()
            .position(|member| obj.is(member))
            .map(|i| BreakerState::ALL[i])
    }

    /// Whether `obj` is a `TimeoutConfig`.
    pub(crate) fn is_timeout_config(&self, obj: &Bound<'_, PyAny>) -> bool {
        obj.is_instance(self.timeout_config.bind(obj.py())).unwrap_or(false)
    }

    /// Whether `obj` is a `PhaseTransition`.
    pub(crate) fn is_phase_transition(&self, obj: &Bound<'_, PyAny>) -> bool {
        obj.is_instance(self.phase_transition.bind(obj.py())).unwrap_or(false)
    }

    /// The execution state `obj` is, if it is an `ExecutionState` member.
    pub(crate) fn as_state(&self, obj: &Bound<'_, PyAny>) -> Option<ExecutionState> {
        self.states
            .iter()
            .position(|member| obj.is(member))
            .map(|i| ExecutionState::ALL[i])
    }

    /// The phase `obj` names: an `AgentExecutionPhase` member or its value string.
    ///
    /// # Errors
    ///
    /// `TypeError` for anything else, naming the valid values.
    pub(crate) fn as_phase(&self, obj: &Bound<'_, PyAny>) -> PyResult<Phase> {
        if let Some(i) = self.phases.iter().position(|member| obj.is(member)) {
            return Ok(Phase::ALL[i]);
        }
        if let Ok(text) = obj.cast::<PyString>() {
            if let Ok(phase) = text.to_str()?.parse::<Phase>() {
                return Ok(phase);
            }
        }
        Err(PyTypeError::new_err(format!(
            "expected an AgentExecutionPhase, got {}: {}; valid AgentExecutionPhase values: {}",
            type_name(obj),
            repr(obj),
            Phase::VALUES.join(", ")
        )))
    }

    /// A Python `TimeoutConfig` with these settings.
    pub(crate) fn timeout_config<'py>(&self, py: Python<'py>, config: &TimeoutConfig) -> PyResult<Bound<'py, PyAny>> {
        let kwargs = PyDict::new(py);
        kwargs.set_item("agent_execution_timeout", secs(config.agent_execution_timeout))?;
        kwargs.set_item("llm_api_timeout", secs(config.llm_api_timeout))?;
        kwargs.set_item("failure_threshold", config.failure_threshold)?;
        kwargs.set_item("recovery_timeout", secs(config.recovery_timeout))?;
        kwargs.set_item("success_threshold", config.success_threshold)?;
        kwargs.set_item("max_retries", config.max_retries)?;
        kwargs.set_item("retry_base_delay", secs(config.retry_base_delay))?;
        kwargs.set_item("retry_max_delay", secs(config.retry_max_delay))?;
        kwargs.set_item("retry_exponential_base", config.retry_exponential_base)?;
        self.timeout_config.bind(py).call((), Some(&kwargs))
    }

    /// A tracked record's metadata as a dict that writes changes back to the record (the
    /// registered `_LiveMetadata`), so that `record.metadata["key"] = value` changes the
    /// execution as it did in the original.
    pub(crate) fn live_metadata<'py>(
        &self,
        record: &Bound<'py, PyAny>,
        metadata: Bound<'py, PyDict>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.live_metadata.bind(record.py()).call1((record, metadata))
    }

    /// A Python `PhaseTransition` for this transition.
    pub(crate) fn transition<'py>(&self, py: Python<'py>, transition: &Transition) -> PyResult<Bound<'py, PyAny>> {
        let kwargs = PyDict::new(py);
        kwargs.set_item("from_phase", self.phase(py, transition.from_phase))?;
        kwargs.set_item("to_phase", self.phase(py, transition.to_phase))?;
        kwargs.set_item("timestamp", transition.timestamp)?;
        kwargs.set_item("duration_ms", float_ms(transition.duration_ms))?;
        kwargs.set_item("metadata", json_map_to_py(py, &transition.metadata)?)?;
        kwargs.set_item("websocket_event_sent", transition.websocket_event_sent)?;
        kwargs.set_item("valid", transition.valid)?;
        self.phase_transition.bind(py).call((), Some(&kwargs))
    }
}

/// Reads a `TimeoutConfig`-like object (the dataclass, or anything with its attributes; missing
/// attributes keep their defaults).
///
/// # Errors
///
/// `ValueError` for a negative or non-finite duration, `TypeError` for a wrong type.
pub(crate) fn extract_timeout_config(obj: &Bound<'_, PyAny>) -> PyResult<TimeoutConfig> {
    let mut config = TimeoutConfig::default();
    let duration = |name: &str, target: &mut Duration| -> PyResult<()> {
        if let Some(value) = attr(obj, name)? {
            *target = duration_arg(name, value.extract::<f64>()?)?;
        }
        Ok(())
    };
    duration("agent_execution_timeout", &mut config.agent_execution_timeout)?;
    duration("llm_api_timeout", &mut config.llm_api_timeout)?;
    duration("recovery_timeout", &mut config.recovery_timeout)?;
    duration("retry_base_delay", &mut config.retry_base_delay)?;
    duration("retry_max_delay", &mut config.retry_max_delay)?;
    if let Some(value) = attr(obj, "failure_threshold")? {
        config.failure_threshold = value.extract()?;
    }
    if let Some(value) = attr(obj, "success_threshold")? {
        config.success_threshold = value.extract()?;
    }
    if let Some(value) = attr(obj, "max_retries")? {
        config.max_retries = value.extract()?;
    }
    if let Some(value) = attr(obj, "retry_exponential_base")? {
        config.retry_exponential_base = value.extract()?;
    }
    Ok(config)
}

fn attr<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
    let value = if let Ok(dict) = obj.cast::<PyDict>() {
        dict.get_item(name)?
    } else {
        obj.getattr_opt(name)?
    };
    Ok(value.filter(|v| !v.is_none()))
}

/// Seconds given from Python as a `Duration`.
///
/// # Errors
///
/// `ValueError` for a negative, NaN or infinite number.
pub(crate) fn duration_arg(name: &str, seconds: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| PyValueError::new_err(format!("{name} must be a finite number of seconds >= 0, got {seconds}")))
}

/// `type(obj).__name__`.
pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| "object".to_owned(), |name| name.to_string())
}

/// `repr(obj)`.
pub(crate) fn repr(obj: &Bound<'_, PyAny>) -> String {
    obj.repr()
        .map_or_else(|_| "<unrepresentable>".to_owned(), |text| text.to_string())
}
