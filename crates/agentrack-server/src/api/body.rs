//! Request bodies: read with a size limit, parsed as JSON, then validated field by field.
//!
//! Bodies are deliberately not deserialised straight into typed structs: a serde error says
//! "invalid type: map, expected a string at line 1 column 10", while a caller deserves "field
//! state: a JSON object is not a valid execution state; valid values: pending, starting, ...".
//! So a body is first parsed as a JSON object, and each field is then taken with a helper that
//! knows its name and what would be valid.

use agentrack::{ExecutionState, ParseEnumError, Phase};
use axum::body::Body;
use axum::extract::{FromRequest, Request};
use http_body_util::BodyExt;
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::json_size::json_size;
use crate::names::{self, NameKind};

/// The largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The deepest nesting accepted in a free-form value (metadata, a result): a value stored
/// inside an execution's record sits a few levels deeper, and must stay well within what the
/// JSON decoder reads back (128 levels).
pub const MAX_DEPTH: usize = 32;

/// The shortest duration a body may give, in seconds: one that rounds to no time at all would
/// reach the core as an invalid zero.
pub const MIN_SECONDS: f64 = 0.001;

/// The longest duration a body may give, in seconds: a year.
pub const MAX_SECONDS: f64 = 366.0 * 24.0 * 3600.0;

/// The longest name or identifier accepted in a body, in characters (as JSON Schema's
/// `maxLength` counts them, so that the published schema says exactly what is accepted).
pub const MAX_NAME_CHARS: usize = 1024;
/// `value` as a `u32` when it is a whole number in range, written as an integer or with a zero
/// fraction (`5.0`: JSON Schema's `integer` accepts both, so the API does too).
pub fn whole_u32(value: &Value) -> Option<u32> {
    if let Some(n) = value.as_u64() {
        return u32::try_from(n).ok();
    }
    let n = value.as_f64().filter(|n| n.fract() == 0.0)?;
    // Whole and finite, so printed without a fraction: parsed back without a lossy cast.
    format!("{n:.0}").parse().ok()
}

/// `value` of field `name`, unless its JSON is larger than `limit` bytes (the setting `key`):
/// 413 `field_too_large` naming the field, its size, the limit and the key.
///
/// # Errors
///
/// As above.
pub fn within<T: serde::Serialize>(
    name: &str,
    value: Option<T>,
    limit: usize,
    key: &str,
) -> Result<Option<T>, ApiError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let size = json_size(&value);
    if size > limit {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "field_too_large",
            format!("field {name} is {size} bytes of JSON; the limit is {limit} bytes ({key})"),
        )
        .with("field", name)
        .with("size_bytes", size)
        .with("limit_bytes", limit)
        .with("config_key", key));
    }
    Ok(Some(value))
}

/// How deeply `value` nests: 0 for a scalar, 1 for an object or array of scalars, and so on.
/// Iterative, so that no input can exhaust the stack.
pub fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(value, 0usize)];
    while let Some((value, level)) = pending.pop() {
        match value {
            Value::Array(items) => {
                deepest = deepest.max(level + 1);
                pending.extend(items.iter().map(|child| (child, level + 1)));
            }
            Value::Object(map) => {
                deepest = deepest.max(level + 1);
                pending.extend(map.values().map(|child| (child, level + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// `value` of field `name`, unless it nests deeper than [`MAX_DEPTH`].
fn shallow<'a>(name: &str, value: &'a Value) -> Result<&'a Value, ApiError> {
    let found = depth(value);
    if found > MAX_DEPTH {
        return Err(ApiError::invalid_field(
            name,
            format!("field {name} is nested {found} levels deep; the limit is {MAX_DEPTH} levels"),
        )
        .with("limit", MAX_DEPTH));
    }
    Ok(value)
}

/// A request body that is a JSON object (an empty body counts as `{}`).
#[derive(Debug, Clone, Default)]
pub struct JsonBody(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        Self::parse(&read_limited(request.into_body()).await?)
    }
}

impl JsonBody {
    /// A body read whole (at most [`MAX_BODY_BYTES`]), parsed.
    ///
    /// # Errors
    ///
    /// 400 `malformed_json`, or 422 `invalid_body` for JSON that is not an object.
    pub fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(Map::new()));
        }
        let value: Value = serde_json::from_slice(bytes).map_err(ApiError::malformed_json)?;
        match value {
            Value::Object(map) => Ok(Self(map)),
            other => Err(ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                format!("the request body must be a JSON object, not {}", describe(&other)),
            )),
        }
    }
}

/// An oversized body is still read (and discarded) up to this size, so that the client gets
/// to read the 413 instead of a reset connection; beyond it the connection is closed.
const DRAIN_LIMIT: usize = 16 * MAX_BODY_BYTES;

pub(crate) async fn read_limited(mut body: Body) -> Result<bytes::Bytes, ApiError> {
    let mut buffer = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| match crate::http::deadline::timed_out(&error) {
            Some(limit) => ApiError::body_timeout(limit),
            None => ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "unreadable_body",
                format!("the request body could not be read: {error}"),
            ),
        })?;
        let Ok(data) = frame.into_data() else { continue };
        total = total.saturating_add(data.len());
        if total > DRAIN_LIMIT {
            return Err(ApiError::too_large(MAX_BODY_BYTES).header(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            ));
        }
        if total <= MAX_BODY_BYTES {
            buffer.extend_from_slice(&data);
        }
    }
    if total > MAX_BODY_BYTES {
        return Err(ApiError::too_large(MAX_BODY_BYTES));
    }
    Ok(bytes::Bytes::from(buffer))
}

/// A short description of a JSON value's kind, for error messages.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a JSON array".into(),
        Value::Object(_) => "a JSON object".into(),
    }
}

/// `text`, the value of `field`, checked as a `kind` of name.
///
/// # Errors
///
/// 422 `invalid_field` naming the field, what is wrong, and the rule (also as `rule`).
pub fn check_name(field: &str, kind: NameKind, text: &str) -> Result<(), ApiError> {
    names::check(kind, text).map_err(|error| {
        ApiError::invalid_field(field, format!("field {field} is not a valid name: {error}")).with("rule", error.rule)
    })
}

/// Field-by-field access to a body, with errors that name the field.
#[derive(Debug)]
pub struct Fields {
    map: Map<String, Value>,
}

impl Fields {
    /// Checks that `body` has no field outside `allowed`.
    ///
    /// # Errors
    ///
    /// 422 `unknown_field` listing the allowed fields.
    pub fn new(body: JsonBody, allowed: &'static [&'static str]) -> Result<Self, ApiError> {
        if let Some(unknown) = body.0.keys().find(|key| !allowed.contains(&key.as_str())) {
            return Err(ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_field",
                format!("unknown field {unknown:?}; valid fields: {}", allowed.join(", ")),
            )
            .with("field", unknown.as_str())
            .with("valid_values", allowed.to_vec()));
        }
        Ok(Self { map: body.0 })
    }

    /// A present, non-null value.
    pub(super) fn present(&self, name: &str) -> Option<&Value> {
        self.map.get(name).filter(|value| !value.is_null())
    }

    /// A required array of 1 to `max` non-empty strings.
    ///
    /// # Errors
    ///
    /// 422 `missing_field` or `invalid_field` naming what is wrong.
    pub fn string_list(&self, name: &str, max: usize) -> Result<Vec<String>, ApiError> {
        let value = self.present(name).ok_or_else(|| ApiError::missing_field(name))?;
        let Some(items) = value.as_array() else {
            return Err(ApiError::invalid_field(
                name,
                format!("{name} must be an array of strings, not {}", describe(value)),
            ));
        };
        if items.is_empty() || items.len() > max {
            return Err(ApiError::invalid_field(
                name,
                format!("{name} must hold 1 to {max} items, not {}", items.len()),
            ));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match item.as_str() {
                Some(text) if !text.trim().is_empty() => Ok(text.to_owned()),
                _ => Err(ApiError::invalid_field(
                    name,
                    format!("{name}[{i}] must be a non-empty string, not {}", describe(item)),
                )),
            })
            .collect()
    }

    /// A required non-empty string.
    ///
    /// # Errors
    ///
    /// 422 `missing_field` or `invalid_field`.
    pub fn string(&self, name: &str) -> Result<String, ApiError> {
        self.optional_string(name)?.ok_or_else(|| ApiError::missing_field(name))
    }

    /// An optional non-empty string of at most [`MAX_NAME_CHARS`] characters (names and
    /// identifiers).
    ///
    /// # Errors
    ///
    /// 422 `invalid_field` for another kind of value, an empty string or a longer one.
    pub fn optional_string(&self, name: &str) -> Result<Option<String>, ApiError> {
        self.optional_text(name, MAX_NAME_CHARS)
    }

    /// A name (tenant, user, thread, agent) under the rule of its kind ([`crate::names`]).
    ///
    /// # Errors
    ///
    /// 422 `missing_field` when absent, `invalid_field` naming the field, what is wrong and the
    /// rule when it breaks the rule.
    pub fn name(&self, name: &str, kind: NameKind) -> Result<String, ApiError> {
        self.optional_name(name, kind)?
            .ok_or_else(|| ApiError::missing_field(name))
    }

    /// An optional name; see [`Fields::name`].
    ///
    /// # Errors
    ///
    /// 422 `invalid_field` as for [`Fields::name`].
    pub fn optional_name(&self, name: &str, kind: NameKind) -> Result<Option<String>, ApiError> {
        match self.present(name) {
            None => Ok(None),
            Some(Value::String(text)) => {
                check_name(name, kind, text)?;
                Ok(Some(text.clone()))
            }
            Some(other) => Err(ApiError::invalid_field(
                name,
                format!("field {name} must be a string, not {}", describe(other)),
            )),
        }
    }

    /// An optional non-empty string of at most `max` characters.
    ///
    /// # Errors
    ///
    /// 422 `invalid_field` for another kind of value, an empty string or a longer one.
    pub fn optional_text(&self, name: &str, max: usize) -> Result<Option<String>, ApiError> {
        match self.present(name) {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => {
                Err(ApiError::invalid_field(name, format!("field {name} must not be empty")))
            }
            Some(Value::String(s)) if s.chars().count() > max => Err(ApiError::invalid_field(
                name,
                format!("field {name} is longer than {max} characters"),
            )),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(ApiError::invalid_field(
                name,
                format!("field {name} must be a string, not {}", describe(other)),
            )),
        }
    }

    /// An optional JSON object, nested at most [`MAX_DEPTH`] levels.
    ///
    /// # Errors
    ///
    /// 422 `invalid_field` for another kind of value or a deeper one.
    pub fn optional_object(&self, name: &str) -> Result<Option<Map<String, Value>>, ApiError> {
        let Some(value) = self.present(name) else {
            return Ok(None);
        };
        let Value::Object(map) = value else {
            return Err(ApiError::invalid_field(
                name,
                format!("field {name} must be a JSON object, not {}", describe(value)),
            ));
        };
        shallow(name, value)?;
        Ok(Some(map.clone()))
    }

    /// An optional number of seconds from [`MIN_SECONDS`] to [`MAX_SECONDS`].
    ///
    /// # Errors
    ///
    /// 422 `invalid_field` for another kind of value or one out of range.
    pub fn optional_seconds(&self, name: &str) -> Result<Option<std::time::Duration>, ApiError> {
        match self.present(name) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                let secs = n.as_f64().unwrap_or(f64::NAN);
                if !(MIN_SECONDS..=MAX_SECONDS).contains(&secs) {
                    return Err(ApiError::invalid_field(
                        name,
                        format!(
                            "field {name} must be a number of seconds from {MIN_SECONDS} to {MAX_SECONDS} (a year), not {n}"
                        ),
                    ));
                }
                std::time::Duration::try_from_secs_f64(secs)
                    .map(Some)
                    .map_err(|e| ApiError::invalid_field(name, format!("field {name}: {e}")))
            }
            Some(other) => Err(ApiError::invalid_field(
                name,
                format!("field {name} must be a number of seconds, not {}", describe(other)),
            )),
        }
    }

    /// Any JSON value nested at most [`MAX_DEPTH`] levels (null counts as absent).
    ///
    /// # Errors
    ///
    /// 422 `invalid_field` for a deeper value.
    pub fn value(&self, name: &str) -> Result<Option<Value>, ApiError> {
        self.present(name)
            .map(|value| shallow(name, value).cloned())
            .transpose()
    }

    /// An optional whole number from `least` to `u32::MAX` (a count or a threshold), written
    /// as an integer or with a zero fraction.
    ///
    /// # Errors
    ///
    /// 422 `invalid_field` naming the field and the range.
    pub fn optional_count(&self, name: &str, least: u32) -> Result<Option<u32>, ApiError> {
        self.value(name)?
            .map(|value| {
                whole_u32(&value).filter(|n| *n >= least).ok_or_else(|| {
                    ApiError::invalid_field(
                        name,
                        format!(
                            "{name} must be a whole number from {least} to {}, not {value}",
                            u32::MAX
                        ),
                    )
                })
            })
            .transpose()
    }

    /// A required enumeration value given as its name.
    ///
    /// # Errors
    ///
    /// 422 with `code` and `valid_values` for a missing value, another kind of value or an
    /// unknown name.
    pub fn enumeration<T>(&self, name: &str, code: &'static str, kind: &'static str) -> Result<T, ApiError>
    where
        T: std::str::FromStr<Err = ParseEnumError> + EnumValues,
    {
        let error = |found: String| {
            ApiError::invalid_enum(
                code,
                name,
                &ParseEnumError {
                    kind,
                    found,
                    valid: T::VALUES,
                },
            )
        };
        match self.map.get(name) {
            None => Err(error("nothing (the field is missing)".into())),
            Some(Value::String(s)) => s.parse::<T>().map_err(|e| ApiError::invalid_enum(code, name, &e)),
            Some(other) => Err(error(describe(other))),
        }
    }
}

/// The value strings of an enumeration.
pub trait EnumValues {
    /// Every accepted name.
    const VALUES: &'static [&'static str];
}

impl EnumValues for ExecutionState {
    const VALUES: &'static [&'static str] = ExecutionState::VALUES;
}

impl EnumValues for Phase {
    const VALUES: &'static [&'static str] = Phase::VALUES;
}

impl EnumValues for crate::auth::Role {
    const VALUES: &'static [&'static str] = crate::auth::Role::VALUES;
}

/// A breaker call's outcome as the API accepts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutcomeName(pub agentrack::Outcome);

impl EnumValues for OutcomeName {
    const VALUES: &'static [&'static str] = &["success", "failure", "timeout", "ignored"];
}

impl std::str::FromStr for OutcomeName {
    type Err = ParseEnumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use agentrack::Outcome;
        match s {
            "success" => Ok(Self(Outcome::Success)),
            "failure" => Ok(Self(Outcome::Failure)),
            "timeout" => Ok(Self(Outcome::Timeout)),
            "ignored" => Ok(Self(Outcome::Ignored)),
            _ => Err(ParseEnumError {
                kind: "outcome",
                found: format!("{s:?}"),
                valid: Self::VALUES,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_levels() {
        assert_eq!(depth(&serde_json::json!(1)), 0);
        assert_eq!(depth(&serde_json::json!({})), 1);
        assert_eq!(depth(&serde_json::json!({"a": [1, {"b": []}]})), 4);
        let mut deep = serde_json::json!(1);
        for _ in 0..1000 {
            deep = serde_json::json!([deep]);
        }
        assert_eq!(depth(&deep), 1000);
    }

    // schemathesis found it: JSON Schema's `integer` includes 5456.0, which a count refused.
    #[test]
    fn a_count_is_any_whole_number_in_range_however_it_is_written() {
        use serde_json::json;
        assert_eq!(whole_u32(&json!(5456)), Some(5456));
        assert_eq!(whole_u32(&json!(5456.0)), Some(5456));
        assert_eq!(whole_u32(&json!(4_294_967_295.0)), Some(u32::MAX));
        for refused in [
            json!(0.5),
            json!(-1),
            json!(-1.0),
            json!(4_294_967_296.0),
            json!(1e300),
            json!("5"),
        ] {
            assert_eq!(whole_u32(&refused), None, "{refused}");
        }
    }
}
