//! Assignments to an `ExecutionRecord`'s fields.
//!
//! Code written against the original assigns to a record's fields — back-dating timestamps to
//! simulate time, forcing states, setting breaker counters — and expects the tracker to act on
//! the new values. Each assignment is checked here (a wrong type is a `TypeError` naming the
//! expected one, a value out of range a `ValueError`) and converted into an [`Edit`] of the core
//! record, which the record view hands to [`agentrack::Tracker::edit`] (or, for a record built by
//! hand, applies to its own copy).

use std::time::Duration;

use agentrack::{ExecutionRecord, Phase, Transition};
use chrono::{DateTime, TimeDelta, Utc};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};
use serde_json::Value;

use crate::convert::{py_to_json, py_to_map};
use crate::types::{Types, extract_timeout_config, type_name};

/// A change to one field of a record.
pub(crate) type Edit = Box<dyn FnOnce(&mut ExecutionRecord) + Send>;

/// The fields of the original's `ExecutionRecord` dataclass, in its order (the order of the
/// constructor's positional arguments).
pub(crate) const FIELDS: [&str; 23] = [
    "execution_id",
    "agent_name",
    "thread_id",
    "user_id",
    "state",
    "started_at",
    "last_heartbeat",
    "updated_at",
    "completed_at",
    "error",
    "result",
    "heartbeat_count",
    "timeout_seconds",
    "metadata",
    "current_phase",
    "phase_history",
    "warning_count",
    "error_count",
    "timeout_config",
    "circuit_breaker_failures",
    "circuit_breaker_state",
    "last_failure_time",
    "next_attempt_time",
];

/// How many of [`FIELDS`] have no default (the constructor requires them).
pub(crate) const REQUIRED: usize = 7;

/// Timeout of a record built by hand without one, in seconds (the original dataclass's default).
pub(crate) const DEFAULT_TIMEOUT_SECONDS: u64 = 30;

static DATETIME: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static TIMEZONE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// `TypeError: {field} must be {expected}, not {type}`.
pub(crate) fn wrong_type(field: &str, expected: &str, value: &Bound<'_, PyAny>) -> PyErr {
    PyTypeError::new_err(format!("{field} must be {expected}, not {}", type_name(value)))
}

fn is_number(value: &Bound<'_, PyAny>) -> bool {
    !value.is_instance_of::<PyBool>() && (value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>())
}

fn text(field: &str, value: &Bound<'_, PyAny>) -> PyResult<String> {
    match value.cast::<PyString>() {
        Ok(text) => Ok(text.to_str()?.to_owned()),
        Err(_) => Err(wrong_type(field, "a str", value)),
    }
}

fn optional_text(field: &str, value: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
    if value.is_none() {
        return Ok(None);
    }
    match value.cast::<PyString>() {
        Ok(text) => Ok(Some(text.to_str()?.to_owned())),
        Err(_) => Err(wrong_type(field, "a str or None", value)),
    }
}

/// A `datetime` as UTC: an aware one converted, a naive one taken as UTC.
///
/// # Errors
///
/// `TypeError` naming `expected` for anything but a `datetime`.
pub(crate) fn datetime(field: &str, expected: &str, value: &Bound<'_, PyAny>) -> PyResult<DateTime<Utc>> {
    let py = value.py();
    let class = DATETIME.import(py, "datetime", "datetime")?;
    if !value.is_instance(class)? {
        return Err(wrong_type(field, expected, value));
    }
    let utc = TIMEZONE.import(py, "datetime", "timezone")?.getattr("utc")?;
    let in_utc = if value.getattr("tzinfo")?.is_none() || value.call_method0("utcoffset")?.is_none() {
        let kwargs = PyDict::new(py);
        kwargs.set_item("tzinfo", &utc)?;
        value.call_method("replace", (), Some(&kwargs))?
    } else {
        value.call_method1("astimezone", (&utc,))?
    };
    in_utc.extract::<DateTime<Utc>>()
}

fn count(field: &str, value: &Bound<'_, PyAny>, max: u64) -> PyResult<u64> {
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return Err(wrong_type(field, "an int", value));
    }
    match value.extract::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(PyValueError::new_err(format!(
            "{field} must be between 0 and {max}, got {}",
            crate::types::repr(value)
        ))),
    }
}

fn count_u32(field: &str, value: &Bound<'_, PyAny>) -> PyResult<u32> {
    let n = count(field, value, u64::from(u32::MAX))?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

fn timeout_seconds(value: &Bound<'_, PyAny>) -> PyResult<Duration> {
    if !is_number(value) {
        return Err(wrong_type(
            "timeout_seconds",
            "a number of seconds (int or float)",
            value,
        ));
    }
    let seconds: f64 = value.extract()?;
    match Duration::try_from_secs_f64(seconds) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        _ => Err(PyValueError::new_err(format!(
            "timeout_seconds must be a finite number of seconds > 0, got {seconds}"
        ))),
    }
}

/// A breaker time: POSIX seconds as the original kept them (`0` or `None` = none), or a
/// `datetime`.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    reason = "POSIX seconds as a float: the microseconds are range-checked before the conversion"
)]
fn epoch(field: &str, value: &Bound<'_, PyAny>) -> PyResult<Option<DateTime<Utc>>> {
    const EXPECTED: &str = "POSIX seconds (a float, as time.time() gives), a datetime or None";
    if value.is_none() {
        return Ok(None);
    }
    if is_number(value) {
        let seconds: f64 = value.extract()?;
        if seconds == 0.0 {
            return Ok(None);
        }
        let micros = (seconds * 1_000_000.0).round();
        return (micros.is_finite() && micros.abs() < i64::MAX as f64)
            .then(|| DateTime::from_timestamp_micros(micros as i64))
            .flatten()
            .map(Some)
            .ok_or_else(|| PyValueError::new_err(format!("{field} is out of range: {seconds}")));
    }
    datetime(field, EXPECTED, value)
        .map(Some)
        .map_err(|_| wrong_type(field, EXPECTED, value))
}

fn phase_history(types: &Types, value: &Bound<'_, PyAny>) -> PyResult<Vec<Transition>> {
    const EXPECTED: &str = "a list of PhaseTransition";
    if !(value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>()) {
        return Err(wrong_type("phase_history", EXPECTED, value));
    }
    value
        .try_iter()?
        .map(|item| {
            let item = item?;
            if !types.is_phase_transition(&item) {
                return Err(PyTypeError::new_err(format!(
                    "phase_history must be {EXPECTED}, but an item is {}",
                    type_name(&item)
                )));
            }
            transition(types, &item)
        })
        .collect()
}

/// A `PhaseTransition` as the core's transition (a missing `from_phase` counts as `CREATED`).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a finite, non-negative float rounded to whole milliseconds; past u64::MAX it saturates"
)]
fn transition(types: &Types, item: &Bound<'_, PyAny>) -> PyResult<Transition> {
    let from = item.getattr("from_phase")?;
    let from_phase = if from.is_none() {
        Phase::Created
    } else {
        types.as_phase(&from)?
    };
    let duration = item.getattr("duration_ms")?;
    let duration_ms = if duration.is_none() {
        0
    } else {
        let ms: f64 = duration.extract()?;
        if ms.is_finite() { ms.max(0.0).round() as u64 } else { 0 }
    };
    let metadata = item.getattr("metadata")?;
    Ok(Transition {
        from_phase,
        to_phase: types.as_phase(&item.getattr("to_phase")?)?,
        timestamp: datetime("PhaseTransition.timestamp", "a datetime", &item.getattr("timestamp")?)?,
        duration_ms,
        metadata: py_to_map(Some(&metadata), "PhaseTransition.metadata")?,
        websocket_event_sent: item.getattr("websocket_event_sent")?.is_truthy()?,
        valid: match item.getattr_opt("valid")? {
            Some(valid) => valid.is_truthy()?,
            None => true,
        },
    })
}

/// Checks `value` for `field` and converts it into an edit of the record.
///
/// `execution_id` is not handled here: a tracked record's id cannot change, and a record built
/// by hand keeps its id as Python text.
///
/// # Errors
///
/// `TypeError` for a value of the wrong type (naming the expected one), `ValueError` for one out
/// of range, `AttributeError` for a name that is not a writable field.
pub(crate) fn parse(types: &Types, field: &str, value: &Bound<'_, PyAny>) -> PyResult<Edit> {
    Ok(match field {
        "agent_name" => {
            let v = text(field, value)?;
            Box::new(move |r| r.agent_name = v)
        }
        "thread_id" => {
            let v = text(field, value)?;
            Box::new(move |r| r.thread_id = v)
        }
        "user_id" => {
            let v = text(field, value)?;
            Box::new(move |r| r.user_id = v)
        }
        "state" => {
            let state = state(types, value)?;
            Box::new(move |r| r.state = state)
        }
        "started_at" => {
            let v = datetime(field, "a datetime", value)?;
            Box::new(move |r| r.started_at = v)
        }
        "last_heartbeat" => {
            let v = datetime(field, "a datetime", value)?;
            Box::new(move |r| r.last_heartbeat = v)
        }
        "updated_at" => {
            let v = datetime(field, "a datetime", value)?;
            Box::new(move |r| r.updated_at = v)
        }
        "completed_at" => {
            let v = optional_datetime(field, value)?;
            Box::new(move |r| r.completed_at = v)
        }
        "error" => {
            let v = optional_text(field, value)?;
            Box::new(move |r| r.error = v)
        }
        "result" => {
            let v = optional_json(value)?;
            Box::new(move |r| r.result = v)
        }
        "heartbeat_count" => {
            let v = count(field, value, u64::MAX)?;
            Box::new(move |r| r.heartbeat_count = v)
        }
        "timeout_seconds" => {
            let v = timeout_seconds(value)?;
            Box::new(move |r| r.timeout = v)
        }
        "metadata" => {
            let v = metadata(value)?;
            Box::new(move |r| r.metadata = v)
        }
        "current_phase" => {
            let v = types
                .as_phase(value)
                .map_err(|_| wrong_type(field, "an AgentExecutionPhase", value))?;
            Box::new(move |r| r.current_phase = v)
        }
        "phase_history" => {
            let v = phase_history(types, value)?;
            Box::new(move |r| r.phase_history = v)
        }
        "warning_count" => {
            let v = count_u32(field, value)?;
            Box::new(move |r| r.warning_count = v)
        }
        "error_count" => {
            let v = count_u32(field, value)?;
            Box::new(move |r| r.error_count = v)
        }
        "timeout_config" => {
            let v = timeout_config(types, value)?;
            Box::new(move |r| r.timeout_config = v.map(Box::new))
        }
        "circuit_breaker_failures" => {
            let v = count_u32(field, value)?;
            Box::new(move |r| r.circuit_breaker_failures = v)
        }
        "circuit_breaker_state" => {
            let v = types
                .as_breaker_state(value)
                .ok_or_else(|| wrong_type(field, "a CircuitBreakerState", value))?;
            Box::new(move |r| r.circuit_breaker_state = v)
        }
        "last_failure_time" => {
            let v = epoch(field, value)?;
            Box::new(move |r| r.last_failure_time = v)
        }
        "next_attempt_time" => {
            let v = epoch(field, value)?;
            Box::new(move |r| r.next_attempt_time = v)
        }
        other => {
            return Err(pyo3::exceptions::PyAttributeError::new_err(format!(
                "'ExecutionRecord' object attribute '{other}' is read-only"
            )));
        }
    })
}

/// An `ExecutionState` for the `state` field; a dict (the original's production bug) is named as such.
fn state(types: &Types, value: &Bound<'_, PyAny>) -> PyResult<agentrack::ExecutionState> {
    types.as_state(value).ok_or_else(|| {
        if value.is_instance_of::<PyDict>() {
            PyTypeError::new_err(format!(
                "state must be an ExecutionState, not dict: a dict is not a state (this was the \
                 original's \"'dict' object has no attribute 'value'\" bug); assign a member such \
                 as ExecutionState.COMPLETED. Valid ExecutionState values: {}",
                agentrack::ExecutionState::VALUES.join(", ")
            ))
        } else {
            wrong_type("state", "an ExecutionState", value)
        }
    })
}

/// A dict for the `metadata` field.
fn metadata(value: &Bound<'_, PyAny>) -> PyResult<serde_json::Map<String, Value>> {
    let Ok(dict) = value.cast::<PyDict>() else {
        return Err(wrong_type("metadata", "a dict", value));
    };
    py_to_map(Some(dict.as_any()), "metadata")
}

/// A datetime or `None`.
fn optional_datetime(field: &str, value: &Bound<'_, PyAny>) -> PyResult<Option<DateTime<Utc>>> {
    if value.is_none() {
        Ok(None)
    } else {
        datetime(field, "a datetime or None", value).map(Some)
    }
}

/// Any JSON-able value, or `None`.
fn optional_json(value: &Bound<'_, PyAny>) -> PyResult<Option<Value>> {
    if value.is_none() {
        Ok(None)
    } else {
        py_to_json(value).map(Some)
    }
}

/// A `TimeoutConfig` or `None` for the `timeout_config` field.
///
/// # Errors
///
/// `TypeError` for anything else, `ValueError` for a negative duration in it.
pub(crate) fn timeout_config(types: &Types, value: &Bound<'_, PyAny>) -> PyResult<Option<agentrack::TimeoutConfig>> {
    if value.is_none() {
        return Ok(None);
    }
    if !types.is_timeout_config(value) {
        return Err(wrong_type("timeout_config", "a TimeoutConfig or None", value));
    }
    extract_timeout_config(value).map(Some)
}

/// A record built by hand as the core's record, for its computed properties (`duration`,
/// `is_timed_out()`, ...). Its id is not a tracker id and is left out.
///
/// # Errors
///
/// As [`parse`], if a field was changed in place into something of the wrong type (e.g. an item
/// appended to `phase_history`).
pub(crate) fn detached_record(types: &Types, fields: &Bound<'_, PyDict>) -> PyResult<ExecutionRecord> {
    let now = Utc::now();
    let mut record = blank_record(now);
    for field in &FIELDS[1..] {
        if let Some(value) = fields.get_item(field)? {
            parse(types, field, &value)?(&mut record);
        }
    }
    record.phase_entered_at = record
        .phase_history
        .last()
        .map_or(record.started_at, |transition| transition.timestamp);
    Ok(record)
}

fn blank_record(now: DateTime<Utc>) -> ExecutionRecord {
    ExecutionRecord {
        execution_id: agentrack::ExecutionId::new(),
        tenant: agentrack::DEFAULT_TENANT.to_owned(),
        agent_name: String::new(),
        thread_id: String::new(),
        user_id: String::new(),
        state: agentrack::ExecutionState::Pending,
        current_phase: Phase::Created,
        started_at: now,
        last_heartbeat: now,
        updated_at: now,
        phase_entered_at: now,
        completed_at: None,
        error: None,
        result: None::<Value>,
        heartbeat_count: 0,
        timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECONDS),
        metadata: serde_json::Map::new(),
        phase_history: Vec::new(),
        phase_history_dropped: 0,
        warning_count: 0,
        error_count: 0,
        timeout_config: None,
        heartbeat_timeout: None,
        circuit_breaker_state: agentrack::BreakerState::Closed,
        circuit_breaker_failures: 0,
        last_failure_time: None,
        next_attempt_time: None,
        seq: 0,
    }
}

/// Never negative (a time before another reads as zero).
pub(crate) fn non_negative(delta: TimeDelta) -> TimeDelta {
    delta.max(TimeDelta::zero())
}
