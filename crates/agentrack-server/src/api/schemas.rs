//! The component schemas of `/openapi.json`: every request and response body, and every event.
//!
//! They are written here rather than derived from the types (the core knows nothing of HTTP or
//! OpenAPI), so they are held to the types the other way round: every object lists all of its
//! properties and allows no others (`additionalProperties: false`), and
//! `tests/schemas.rs` and `tests/event_kinds.rs` validate every response body, every stream
//! message and one event of every kind against the document a real server publishes. A field
//! added to a record or an event without being added here fails them.

use agentrack::{BreakerState, ExecutionState, Phase};
use serde_json::{Map, Value, json};

use crate::auth::Role;
use crate::names::{MAX_NAME_CHARS, NameKind};

/// A reference to the component schema `name`.
pub fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// An object with exactly these properties, all of them always present.
pub fn exact(properties: Value) -> Value {
    let required: Vec<String> = properties
        .as_object()
        .map(|map| map.keys().cloned().collect())
        .unwrap_or_default();
    partial(&required, properties)
}

/// `schema` (an object schema) with further properties that are not always present.
pub fn also(mut schema: Value, optional: Value) -> Value {
    if let (Some(properties), Value::Object(optional)) = (schema["properties"].as_object_mut(), optional) {
        properties.extend(optional);
    }
    schema
}

/// The properties only a node of a cluster adds: the raw samples of its part of a cluster-wide
/// read, and which nodes a cluster-wide answer covers.
pub fn cluster_parts() -> Value {
    json!({
        "phase_samples_ms": {"type": "object", "propertyNames": reference("Phase"),
            "additionalProperties": {"type": "array", "items": integer()},
            "description": "Only in a node's part of a cluster-wide read (asked for by another node)."},
        "cluster": {"description": "In a cluster: the nodes this answer covers (a node that did not answer in time is named).",
            "allOf": [exact(json!({"nodes_answered": integer(), "nodes_missing": {"type": "array", "items": string()}}))]},
    })
}

/// An object with exactly these properties, of which those in `required` are always present.
fn partial<S: AsRef<str>>(required: &[S], properties: Value) -> Value {
    let required: Vec<&str> = required.iter().map(AsRef::as_ref).collect();
    let mut schema = json!({"type": "object", "required": required, "additionalProperties": false});
    schema["properties"] = properties;
    schema
}

/// The properties of a `json!` object literal.
fn fields(properties: Value) -> Map<String, Value> {
    match properties {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// `schema`, or `null`.
fn nullable(schema: Value) -> Value {
    let alternatives = Value::Array(vec![schema, json!({"type": "null"})]);
    Value::Object(Map::from_iter([("anyOf".to_owned(), alternatives)]))
}

fn string() -> Value {
    json!({"type": "string"})
}

/// Matches a string holding a character `str::trim` keeps (Unicode `White_Space` spelled out:
/// a regex's `\\s` differs between engines), as the API refuses blank strings.
const NOT_BLANK: &str = "[^\\t-\\r \u{85}\u{a0}\u{1680}\u{2000}-\u{200a}\u{2028}\u{2029}\u{202f}\u{205f}\u{3000}]";

/// A string a request body takes as a name or a text: not blank, at most `max` characters.
fn text(max: usize) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": max, "pattern": NOT_BLANK})
}

/// A number of seconds a request body gives (a timeout, an expiry).
fn seconds() -> Value {
    json!({"type": "number", "minimum": super::body::MIN_SECONDS, "maximum": super::body::MAX_SECONDS})
}

/// A name a client gives (see [`crate::names`]): printable, not starting or ending with white
/// space, at most [`MAX_NAME_CHARS`] characters, and for tenants and breakers without `/`.
pub(super) fn name(kind: NameKind) -> Value {
    const WHITE: &str = "\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
    const HIDDEN: &str =
        "\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff";
    let slash = if kind == NameKind::Tenant || kind == NameKind::Breaker {
        "/"
    } else {
        ""
    };
    let pattern = format!("^[^{WHITE}{HIDDEN}{slash}]([^{HIDDEN}{slash}]*[^{WHITE}{HIDDEN}{slash}])?$");
    json!({"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS, "pattern": pattern,
        "description": format!("{}; anything else is refused with 422 invalid_field naming the field and the rule.", kind.rule())})
}

fn integer() -> Value {
    json!({"type": "integer", "minimum": 0})
}

/// A whole number from `least` to `u32::MAX` (counts and thresholds).
fn count(least: u32) -> Value {
    json!({"type": "integer", "minimum": least, "maximum": u32::MAX})
}

fn number() -> Value {
    json!({"type": "number"})
}

fn boolean() -> Value {
    json!({"type": "boolean"})
}

fn time() -> Value {
    json!({"type": "string", "format": "date-time"})
}

/// Free-form JSON objects (metadata).
fn object() -> Value {
    json!({"type": "object"})
}

/// Any JSON value (results, tool parameters).
fn any() -> Value {
    json!({})
}

/// `POST /v1/tokens`' body: a viewer's token needs a user, another's may not have one.
fn new_token() -> Value {
    let mut schema = partial(
        &["role", "tenant"],
        json!({"role": reference("Role"), "tenant": reference("TenantName"),
            "user_id": {"description": "Required for viewers, refused otherwise.", "anyOf": [reference("Name"), {"type": "null"}]},
            "label": nullable(text(super::body::MAX_NAME_CHARS)),
            "expires_in_seconds": {"description": "The token is refused after this many seconds (at most a year); never, without it.",
                "anyOf": [seconds(), {"type": "null"}]}}),
    );
    schema["if"] = json!({"properties": {"role": {"const": "viewer"}}});
    schema["then"] = json!({"required": ["user_id"], "properties": {"user_id": reference("Name")}});
    schema["else"] = json!({"properties": {"user_id": {"type": "null"}}});
    schema
}

/// Every component schema, by name.
pub fn components() -> Map<String, Value> {
    let mut schemas = Map::new();
    let mut add = |name: &str, schema: Value| {
        schemas.insert(name.to_owned(), schema);
    };
    execution_schemas(&mut add);
    service_schemas(&mut add);
    stream_schemas(&mut add);
    schemas
}

/// Executions, their changes and heartbeats.
fn execution_schemas(add: &mut impl FnMut(&str, Value)) {
    add("Error", error());
    add(
        "ExecutionState",
        json!({"type": "string", "enum": ExecutionState::VALUES}),
    );
    add("Phase", json!({"type": "string", "enum": Phase::VALUES}));
    add("BreakerState", json!({"type": "string", "enum": BreakerState::VALUES}));
    add("Role", json!({"type": "string", "enum": Role::VALUES}));
    add("Name", name(NameKind::User));
    add("TenantName", name(NameKind::Tenant));
    add(
        "NewExecution",
        partial(
            &["agent_name", "thread_id", "user_id"],
            json!({"agent_name": reference("Name"), "thread_id": reference("Name"), "user_id": reference("Name"),
                "timeout_seconds": nullable(seconds()),
                "metadata": nullable(object()),
                "tenant": {"description": "Admin tokens only.", "anyOf": [reference("TenantName"), {"type": "null"}]},
                "heartbeat_timeout_seconds": {"description": "This execution's heartbeat timeout (the server's when absent).",
                    "anyOf": [seconds(), {"type": "null"}]},
                "timeout_config": {"description": "This execution's timeouts and breaker thresholds; each field given replaces the server's default.",
                    "anyOf": [reference("TimeoutConfigChange"), {"type": "null"}]}}),
        ),
    );
    add(
        "TimeoutConfigChange",
        partial::<&str>(
            &[],
            json!({
                "agent_execution_timeout": nullable(seconds()),
                "llm_api_timeout": nullable(seconds()),
                "failure_threshold": nullable(count(1)),
                "recovery_timeout": nullable(seconds()),
                "success_threshold": nullable(count(1)),
                "max_retries": nullable(count(0)),
                "retry_base_delay": nullable(seconds()),
                "retry_max_delay": nullable(seconds()),
                "retry_exponential_base": nullable(json!({"type": "number", "minimum": 1}))}),
        ),
    );
    add(
        "StateChange",
        partial(
            &["state"],
            json!({"state": reference("ExecutionState"),
                "error": nullable(text(super::executions::MAX_ERROR_CHARS)), "result": any(),
                "metadata": {"description": "Merged into the execution's metadata before the state changes.",
                    "anyOf": [object(), {"type": "null"}]}}),
        ),
    );
    add(
        "AgentStateChange",
        partial::<&str>(
            &[],
            json!({"warning_count": nullable(count(0)), "error_count": nullable(count(0)),
                "metadata": {"description": "Keys to add or replace.", "anyOf": [object(), {"type": "null"}]}}),
        ),
    );
    add(
        "PhaseChange",
        partial(
            &["phase"],
            json!({"phase": reference("Phase"), "metadata": nullable(object())}),
        ),
    );
    add("Transition", transition());
    add("TimeoutConfig", timeout_config());
    add("ExecutionRecord", exact(Value::Object(execution_record())));
    let mut with_transition = execution_record();
    with_transition.insert("transition".into(), reference("Transition"));
    add("ExecutionWithTransition", exact(Value::Object(with_transition)));
    add(
        "ExecutionPage",
        exact(json!({
            "executions": {"type": "array", "items": reference("ExecutionRecord")},
            "next_cursor": nullable(string()),
        })),
    );
    add("HeartbeatAck", heartbeat_ack());
    let ids = json!({"type": "array", "minItems": 1, "maxItems": super::heartbeats::MAX_BATCH,
        "items": {"type": "string", "pattern": NOT_BLANK}});
    let beats = json!({"type": "array", "minItems": 1, "maxItems": super::heartbeats::MAX_BATCH,
        "description": "Ids each with how many heartbeats it stands for (a client sending each id once per flush).",
        "items": exact(json!({"execution_id": {"type": "string", "pattern": NOT_BLANK},
            "count": {"type": "integer", "minimum": 1, "maximum": super::heartbeats::MAX_COUNT}}))});
    let mut batch = partial::<&str>(&[], json!({"execution_ids": ids, "beats": beats}));
    batch["oneOf"] = json!([{"required": ["execution_ids"]}, {"required": ["beats"]}]);
    add("HeartbeatBatch", batch);
    add("HeartbeatBatchReport", exact(Value::Object(batch_report())));
}

/// Breakers, permits, tokens, metrics and health.
fn service_schemas(add: &mut impl FnMut(&str, Value)) {
    add("BreakerStatus", exact(Value::Object(breaker_status())));
    let mut named = breaker_status();
    named.insert(
        "tenant".into(),
        json!({"type": "string", "description": "The tenant the breaker belongs to."}),
    );
    add("NamedBreaker", exact(Value::Object(named)));
    add(
        "BreakerList",
        exact(json!({"breakers": {"type": "array", "items": reference("NamedBreaker")}})),
    );
    add(
        "PermitGrant",
        exact(
            json!({"permit": string(), "breaker": string(), "state": reference("BreakerState"),
            "expires_in_seconds": number()}),
        ),
    );
    add(
        "CallPermitGrant",
        exact(
            json!({"permit": string(), "breaker": string(), "state": reference("BreakerState"),
            "trial": {"type": "boolean", "description": "Whether the call is a half-open breaker's trial."},
            "timeout_seconds": {"type": "number", "description": "Run the call within this (the execution's llm_api_timeout)."},
            "expires_in_seconds": number()}),
        ),
    );
    add(
        "CallOutcome",
        partial(
            &["outcome"],
            json!({"outcome": {"type": "string", "enum": ["success", "failure", "timeout", "ignored"]},
                "permit": {"description": "The permit of the call; without one, the outcome is counted as if a call had just been admitted and finished.",
                    "anyOf": [text(super::body::MAX_NAME_CHARS), {"type": "null"}]}}),
        ),
    );
    add(
        "PermitOutcome",
        exact(json!({"permit": text(super::body::MAX_NAME_CHARS),
            "outcome": {"type": "string", "enum": ["success", "failure", "timeout", "ignored"]}})),
    );
    add("NewToken", new_token());
    add(
        "TokenCreated",
        exact(
            json!({"token": {"type": "string", "description": "Shown once; only its hash is stored."},
            "id": {"type": "string", "description": "Its public id (tok_…): what lists and revocations name it by."},
            "role": reference("Role"), "tenant": string(),
            "user_id": nullable(string()), "label": nullable(string()), "expires_at": nullable(time())}),
        ),
    );
    add(
        "TokenInfo",
        exact(json!({"id": string(), "role": reference("Role"), "tenant": string(),
            "user_id": nullable(string()), "label": nullable(string()), "created_at": time(),
            "expires_at": nullable(time()), "revoked_at": nullable(time()),
            "active": {"type": "boolean", "description": "Neither revoked nor expired: accepted now."}})),
    );
    add(
        "TokenList",
        exact(json!({"tokens": {"type": "array", "items": reference("TokenInfo")}})),
    );
    add(
        "EventTicket",
        exact(
            json!({"ticket": {"type": "string", "description": "For one GET /v1/events?ticket=, on any node."},
            "expires_at": time(), "expires_in_seconds": number()}),
        ),
    );
    add("Scope", scope());
    add(
        "PhaseStats",
        exact(
            json!({"count": integer(), "p50": integer(), "p90": integer(), "p99": integer(),
            "max": integer()}),
        ),
    );
    add("Metrics", metrics());
    add("Overview", super::overview::schema());
    add("ClusterStatus", super::cluster::schema());
    add("Health", exact(json!({"status": {"const": "ok"}})));
    add(
        "Readiness",
        exact(json!({
            "status": {"enum": ["ready", "unavailable"]},
            "store": {"enum": ["ok", "failing"]},
            "shutting_down": boolean(),
            "committed_seq": integer(),
            "cursor": {"type": "string", "description": "Where the event log stands: a `since=` for /v1/events."},
            "shards_served": integer(),
        })),
    );
    add("OpenApi", object());
}

/// Events and the messages of the event stream.
fn stream_schemas(add: &mut impl FnMut(&str, Value)) {
    for (kind, schema) in event_schemas() {
        add(&event_schema_name(kind), schema);
    }
    add("Event", event());
    for (name, schema) in stream_messages() {
        add(name, schema);
    }
    add(
        "StreamMessage",
        json!({"description": "A message of the event stream (protocol=agentrack).",
            "oneOf": [reference("Event"), reference("SnapshotMessage"),
                reference("HeartbeatAckMessage"), reference("StreamErrorMessage")]}),
    );
    add(
        "EventStream",
        json!({"description": "A WebSocket upgrade: JSON text messages, each a StreamMessage \
            (protocol=agentrack), or an AG-UI event (protocol=agui) carrying `rawEvent` with the \
            original `type` and `global_seq`. Clients may send \
            {\"type\": \"heartbeat\", \"execution_ids\": [...]} (admin and agent tokens)."}),
    );
}

fn error() -> Value {
    let details = json!({
        "code": {"type": "string", "description": "Stable and machine-readable, e.g. invalid_field."},
        "message": {"type": "string", "description": "What was wrong and what would be valid."},
        "field": string(),
        "parameter": string(),
        "valid_values": {"type": "array", "items": string()},
        "execution_id": string(),
        "state": string(),
        "from": string(),
        "to": string(),
        "allowed": {"type": "array", "items": string()},
        "breaker": string(),
        "retry_after_seconds": number(),
        "operation": string(),
        "limit_bytes": integer(),
        "quota": {"type": "string", "description": "The quota refused (429 quota_exceeded), e.g. executions_per_tenant.",
            "enum": crate::quotas::Quota::ALL.map(crate::quotas::Quota::name)},
        "key": {"type": "string", "description": "The config key of the quota, e.g. quotas.executions_per_tenant."},
        "limit": integer(),
        "current": integer(),
        "rule": {"type": "string", "description": "The rule a refused name breaks: what a valid one is."},
        "header": {"type": "string", "description": "The request header that was refused."},
        "idempotency": {"type": "string", "description": "What became of a request sent with an Idempotency-Key."},
        "size_bytes": integer(),
        "config_key": {"type": "string", "description": "The setting that holds the limit refused, e.g. records.max_metadata_bytes."},
    });
    exact(json!({"error": partial(&["code", "message"], details)}))
}

fn transition() -> Value {
    exact(json!({
        "from_phase": reference("Phase"),
        "to_phase": reference("Phase"),
        "timestamp": time(),
        "duration_ms": integer(),
        "metadata": object(),
        "websocket_event_sent": boolean(),
        "valid": boolean(),
    }))
}

fn timeout_config() -> Value {
    exact(json!({
        "agent_execution_timeout": number(),
        "llm_api_timeout": number(),
        "failure_threshold": integer(),
        "recovery_timeout": number(),
        "success_threshold": integer(),
        "max_retries": integer(),
        "retry_base_delay": number(),
        "retry_max_delay": number(),
        "retry_exponential_base": number(),
    }))
}

fn execution_record() -> Map<String, Value> {
    let properties = json!({
        "execution_id": string(),
        "tenant": string(),
        "agent_name": string(),
        "thread_id": string(),
        "user_id": string(),
        "state": reference("ExecutionState"),
        "current_phase": reference("Phase"),
        "started_at": time(),
        "last_heartbeat": time(),
        "updated_at": time(),
        "phase_entered_at": time(),
        "completed_at": nullable(time()),
        "error": nullable(string()),
        "result": any(),
        "heartbeat_count": integer(),
        "timeout_seconds": number(),
        "metadata": object(),
        "phase_history": {"type": "array", "items": reference("Transition"),
            "description": "The latest changes, at most records.max_phase_history (200 by default); older ones stay in the event log."},
        "phase_history_dropped": {"type": "integer", "minimum": 0,
            "description": "How many of the oldest changes the cap dropped from phase_history."},
        "warning_count": integer(),
        "error_count": integer(),
        "timeout_config": nullable(reference("TimeoutConfig")),
        "heartbeat_timeout_seconds": nullable(number()),
        "circuit_breaker_state": reference("BreakerState"),
        "circuit_breaker_failures": integer(),
        "last_failure_time": nullable(time()),
        "next_attempt_time": nullable(time()),
        "seq": integer(),
    });
    fields(properties)
}

fn heartbeat_ack() -> Value {
    exact(json!({
        "execution_id": string(),
        "state": reference("ExecutionState"),
        "current_phase": reference("Phase"),
        "heartbeat_count": integer(),
        "global_seq": integer(),
    }))
}

fn batch_report() -> Map<String, Value> {
    let properties = json!({
        "accepted": integer(),
        "rejected": integer(),
        "results": {"type": "array", "description": "Per id, in order: {\"ok\": HeartbeatAck} or an error body.",
            "items": {"oneOf": [exact(json!({"ok": reference("HeartbeatAck")})), reference("Error")]}},
    });
    fields(properties)
}

fn breaker_status() -> Map<String, Value> {
    let properties = json!({
        "name": string(),
        "state": reference("BreakerState"),
        "failure_count": integer(),
        "failure_threshold": integer(),
        "success_count": integer(),
        "last_failure_time": nullable(time()),
        "next_attempt_time": nullable(time()),
        "is_open": boolean(),
        "can_retry": boolean(),
        "recovery_timeout": number(),
    });
    fields(properties)
}

fn scope() -> Value {
    exact(json!({
        "role": reference("Role"),
        "tenant": {"type": ["string", "null"], "description": "None for an admin: every tenant."},
        "user_id": {"type": ["string", "null"], "description": "A viewer's user."},
    }))
}

/// Per-phase duration percentiles, by phase name.
pub fn phase_durations() -> Value {
    json!({"type": "object", "propertyNames": reference("Phase"), "additionalProperties": reference("PhaseStats")})
}

fn metrics() -> Value {
    let schema = exact(json!({
        "total_executions": integer(),
        "active_executions": integer(),
        "successful_executions": integer(),
        "failed_executions": integer(),
        "timeout_executions": integer(),
        "dead_executions": integer(),
        "cancelled_executions": integer(),
        "success_rate": number(),
        "failure_rate": number(),
        "phase_durations_ms": phase_durations(),
        "scope": reference("Scope"),
    }));
    let mut parts = cluster_parts();
    if let Some(parts) = parts.as_object_mut() {
        parts.remove("cluster");
    }
    also(schema, parts)
}

/// The fields of the execution an event concerns (absent from named breakers' events).
const EXECUTION_FIELDS: [&str; 6] = ["execution_id", "seq", "tenant", "user_id", "thread_id", "agent_name"];

/// Each kind of event's own fields and what it means, by `type`.
fn event_kinds() -> Vec<(&'static str, &'static str, Value)> {
    let phase = |extra: Value| {
        let mut fields = json!({"transition": reference("Transition")});
        if let (Value::Object(fields), Value::Object(extra)) = (&mut fields, extra) {
            fields.extend(extra);
        }
        fields
    };
    let finished = || {
        json!({"from": reference("ExecutionState"), "state": reference("ExecutionState"),
            "error": nullable(string()), "result": any(), "last_heartbeat": time(), "duration_ms": integer()})
    };
    let breaker = || {
        json!({"breaker": {"type": "string", "description": "execution:<id> for an execution's own breaker."},
            "state": reference("BreakerState"), "failures": integer(), "retry_after_seconds": nullable(number())})
    };
    vec![
        (
            "execution_created",
            "A record was created.",
            json!({"timeout_seconds": number(), "metadata": object()}),
        ),
        (
            "state_changed",
            "A non-terminal lifecycle change.",
            json!({"from": reference("ExecutionState"), "to": reference("ExecutionState")}),
        ),
        (
            "heartbeat",
            "A heartbeat arrived.",
            json!({"heartbeat_count": integer()}),
        ),
        (
            "agent_state_updated",
            "The metadata or the warning and error counters changed.",
            json!({"warning_count": integer(), "error_count": integer(), "metadata": object()}),
        ),
        (
            "phase_changed",
            "A phase change without a notification of its own.",
            phase(json!({})),
        ),
        ("agent_started", "The agent started.", phase(json!({"context": any()}))),
        (
            "agent_thinking",
            "The agent is working.",
            phase(json!({"reasoning": string(), "step_number": integer()})),
        ),
        (
            "tool_executing",
            "A tool is running.",
            phase(json!({"tool_name": string(), "parameters": any()})),
        ),
        (
            "agent_completed",
            "The agent finished its work.",
            phase(json!({"result": any(), "execution_time_ms": integer()})),
        ),
        (
            "agent_error",
            "The agent hit an error.",
            phase(json!({"error": string(), "error_context": any()})),
        ),
        ("execution_completed", "Terminal: finished successfully.", finished()),
        ("execution_failed", "Terminal: finished with an error.", finished()),
        ("execution_cancelled", "Terminal: cancelled.", finished()),
        ("timed_out", "Terminal: ran past its execution timeout.", finished()),
        ("dead", "Terminal: stopped heartbeating.", finished()),
        (
            "record_edited",
            "Fields of the record were overwritten directly.",
            json!({"fields": {"type": "array", "items": string()}}),
        ),
        ("breaker_opened", "A breaker opened.", breaker()),
        ("breaker_half_open", "A breaker let trial calls through.", breaker()),
        ("breaker_closed", "A breaker closed.", breaker()),
    ]
}

/// The names of the event kinds the document describes.
fn documented_event_kinds() -> Vec<&'static str> {
    event_kinds().into_iter().map(|(kind, _, _)| kind).collect()
}

/// `agent_thinking` → `AgentThinkingEvent`.
fn event_schema_name(kind: &str) -> String {
    let mut name: String = kind
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    name.push_str("Event");
    name
}

/// One schema per kind of event: the common fields, then its own.
fn event_schemas() -> Vec<(&'static str, Value)> {
    event_kinds()
        .into_iter()
        .map(|(kind, description, fields)| {
            let mut properties = json!({
                "type": {"const": kind},
                "global_seq": {"type": "integer", "minimum": 1,
                    "description": "Position in its shard's order (the server-wide order on a store with one shard)."},
                "cursor": {"type": "string",
                    "description": "On the event stream: where the subscriber stands after this event; `since=` it resumes there, on any node."},
                "timestamp": time(),
                "execution_id": string(),
                "seq": {"type": "integer", "minimum": 1, "description": "Position in the execution's own order."},
                "tenant": string(),
                "user_id": string(),
                "thread_id": string(),
                "agent_name": string(),
            });
            let mut required: Vec<String> = ["type", "global_seq", "timestamp"].map(String::from).to_vec();
            if let (Value::Object(properties), Value::Object(fields)) = (&mut properties, fields) {
                required.extend(fields.keys().cloned());
                properties.extend(fields);
            }
            let breaker = kind.starts_with("breaker_");
            if !breaker {
                required.extend(EXECUTION_FIELDS.map(String::from));
            }
            let mut schema = partial(&required, properties);
            schema["description"] = Value::from(description);
            if breaker {
                // A named breaker's events concern no execution; an execution's own carry all of
                // its fields.
                schema["description"] = Value::from(format!(
                    "{description} Named breakers' events carry no execution fields."
                ));
                schema["dependentRequired"] = json!({"execution_id": EXECUTION_FIELDS});
            }
            (kind, schema)
        })
        .collect()
}

fn event() -> Value {
    let kinds = documented_event_kinds();
    let mapping: Map<String, Value> = kinds
        .iter()
        .map(|kind| {
            (
                (*kind).to_owned(),
                Value::from(format!("#/components/schemas/{}", event_schema_name(kind))),
            )
        })
        .collect();
    json!({
        "description": "One change, as the event stream and the store carry it; `type` says which kind.",
        "oneOf": kinds.iter().map(|kind| reference(&event_schema_name(kind))).collect::<Vec<_>>(),
        "discriminator": {"propertyName": "type", "mapping": mapping},
    })
}

/// The stream's messages other than events.
fn stream_messages() -> Vec<(&'static str, Value)> {
    let mut ack = batch_report();
    ack.insert("type".into(), json!({"const": "heartbeat_ack"}));
    vec![
        (
            "SnapshotMessage",
            exact(json!({
                "type": {"const": "snapshot"},
                "global_seq": {"type": "integer", "minimum": 0,
                    "description": "On a store with one shard: the events after this one follow."},
                "cursor": {"type": "string", "description": "The events after this position follow."},
                "executions": {"type": "array", "items": reference("ExecutionRecord"),
                    "description": "Newest first, at most quotas.snapshot_executions."},
                "truncated": {"type": "boolean", "description": "Whether more executions match than the snapshot carries."},
                "next_cursor": {"type": ["string", "null"],
                    "description": "When truncated: the last execution carried; GET /v1/executions with cursor=this lists the rest."},
                "next_page": {"description": "When truncated: the request listing the rest.",
                    "oneOf": [{"type": "null"}, exact(json!({"path": {"const": "/v1/executions"},
                        "query": {"type": "object", "additionalProperties": {"type": "string"}}}))]},
            })),
        ),
        ("HeartbeatAckMessage", exact(Value::Object(ack))),
        (
            "StreamErrorMessage",
            exact(json!({"type": {"const": "error"}, "error": error()["properties"]["error"].clone()})),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use agentrack::EventKind;

    use super::*;

    #[test]
    fn every_kind_of_event_is_described() {
        assert_eq!(documented_event_kinds(), EventKind::NAMES);
        assert_eq!(event_schema_name("breaker_half_open"), "BreakerHalfOpenEvent");
    }
}
