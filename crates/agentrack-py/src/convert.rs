//! Conversions between Python objects and the core's JSON values, durations and times.
//!
//! The core stores caller data (metadata, results, error contexts) as JSON, so that the same
//! record can be persisted and streamed. Python values are converted on the way in: `None`,
//! booleans, numbers, strings, dicts and sequences as themselves; an `Enum` member as its value;
//! dates and times as ISO 8601 text; anything else as `str(obj)`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use pyo3::IntoPyObjectExt;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet, PyString, PyTuple, PyType};
use serde_json::{Map, Number, Value};

/// Nesting deeper than this is stored as text (it also stops self-referencing containers).
const MAX_DEPTH: usize = 64;

static ENUM: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static DATE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static TIME: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn is_instance(obj: &Bound<'_, PyAny>, cell: &'static PyOnceLock<Py<PyType>>, module: &str, name: &str) -> bool {
    let py = obj.py();
    cell.import(py, module, name)
        .and_then(|cls| obj.is_instance(cls))
        .unwrap_or(false)
}

/// A Python value as JSON.
///
/// # Errors
///
/// Only if Python fails while reading the value (e.g. a raising `__str__`).
pub(crate) fn py_to_json(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    to_json(obj, 0)
}

fn to_json(obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<Value> {
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Ok(text) = obj.cast::<PyString>() {
        return Ok(Value::String(text.to_str()?.to_owned()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::Number(i.into()));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::Number(u.into()));
        }
        return Ok(Value::String(obj.str()?.to_str()?.to_owned()));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let value = f.value();
        return Ok(Number::from_f64(value).map_or_else(|| Value::String(value.to_string()), Value::Number));
    }
    if depth >= MAX_DEPTH {
        return Ok(Value::String(obj.repr()?.to_str()?.to_owned()));
    }
    if let Ok(dict) = obj.cast::<PyDict>() {
        return Ok(Value::Object(dict_to_map(dict, depth + 1)?));
    }
    if obj.is_instance_of::<PyList>()
        || obj.is_instance_of::<PyTuple>()
        || obj.is_instance_of::<PySet>()
        || obj.is_instance_of::<PyFrozenSet>()
    {
        let items = obj
            .try_iter()?
            .map(|item| to_json(&item?, depth + 1))
            .collect::<PyResult<Vec<_>>>()?;
        return Ok(Value::Array(items));
    }
    if is_instance(obj, &ENUM, "enum", "Enum") {
        return to_json(&obj.getattr("value")?, depth + 1);
    }
    // datetime is a subclass of date.
    if is_instance(obj, &DATE, "datetime", "date") || is_instance(obj, &TIME, "datetime", "time") {
        return Ok(Value::String(
            obj.call_method0("isoformat")?.str()?.to_str()?.to_owned(),
        ));
    }
    Ok(Value::String(obj.str()?.to_str()?.to_owned()))
}

fn dict_to_map(dict: &Bound<'_, PyDict>, depth: usize) -> PyResult<Map<String, Value>> {
    let mut map = Map::with_capacity(dict.len());
    for (key, value) in dict.iter() {
        let key = match key.cast::<PyString>() {
            Ok(text) => text.to_str()?.to_owned(),
            Err(_) => match to_json(&key, depth)? {
                Value::String(text) => text,
                other => other.to_string(),
            },
        };
        map.insert(key, to_json(&value, depth)?);
    }
    Ok(map)
}

/// A Python mapping as a JSON object; `None` as an empty one.
///
/// # Errors
///
/// `TypeError` if `obj` is neither a dict nor `None`.
pub(crate) fn py_to_map(obj: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Map<String, Value>> {
    let Some(obj) = obj.filter(|obj| !obj.is_none()) else {
        return Ok(Map::new());
    };
    match obj.cast::<PyDict>() {
        Ok(dict) => dict_to_map(dict, 1),
        Err(_) => match py_to_json(obj)? {
            Value::Object(map) => Ok(map),
            _ => Err(PyTypeError::new_err(format!(
                "{what} must be a dict, got {}",
                crate::types::type_name(obj)
            ))),
        },
    }
}

/// A JSON value as a Python object.
///
/// # Errors
///
/// Only on allocation failure.
pub(crate) fn json_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    match value {
        Value::Null => Ok(py.None().into_bound(py)),
        Value::Bool(b) => b.into_bound_py_any(py),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_bound_py_any(py)
            } else if let Some(u) = n.as_u64() {
                u.into_bound_py_any(py)
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_bound_py_any(py)
            }
        }
        Value::String(s) => s.into_bound_py_any(py),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            Ok(list.into_any())
        }
        Value::Object(map) => Ok(json_map_to_py(py, map)?.into_any()),
    }
}

/// A JSON object as a Python dict.
///
/// # Errors
///
/// Only on allocation failure.
pub(crate) fn json_map_to_py<'py>(py: Python<'py>, map: &Map<String, Value>) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (key, value) in map {
        dict.set_item(key, json_to_py(py, value)?)?;
    }
    Ok(dict)
}

/// A duration in seconds: an `int` when whole (as the original's defaults were), else a `float`.
pub(crate) fn secs_obj(py: Python<'_>, duration: Duration) -> PyResult<Bound<'_, PyAny>> {
    if duration.subsec_nanos() == 0 {
        duration.as_secs().into_bound_py_any(py)
    } else {
        duration.as_secs_f64().into_bound_py_any(py)
    }
}

/// Milliseconds as the float the original reported.
#[allow(
    clippy::cast_precision_loss,
    reason = "Python floats: durations past 2^53 ms only lose their lowest digits"
)]
pub(crate) fn float_ms(ms: u64) -> f64 {
    ms as f64
}

/// A duration in seconds as a float.
pub(crate) fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// Milliseconds between two times, as a float with microsecond precision (never negative).
#[allow(
    clippy::cast_precision_loss,
    reason = "Python floats: durations past 2^53 µs only lose their lowest digits"
)]
pub(crate) fn millis_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    let delta = to - from;
    let micros = delta.num_microseconds().unwrap_or(i64::MAX);
    (micros.max(0) as f64) / 1000.0
}

/// A time as POSIX seconds (the original kept breaker times as `time.time()` floats; 0.0 = never).
#[allow(
    clippy::cast_precision_loss,
    reason = "Python floats: times past 2^53 µs only lose their lowest digits"
)]
pub(crate) fn epoch_secs(time: Option<DateTime<Utc>>) -> f64 {
    time.map_or(0.0, |t| t.timestamp_micros() as f64 / 1_000_000.0)
}
