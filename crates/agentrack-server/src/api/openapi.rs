//! `/openapi.json`: the OpenAPI 3.1 document, built from the route table the router is built
//! from (see [`crate::api`]), so it lists every route.

use std::collections::BTreeMap;

use agentrack::{ExecutionState, Phase};
use axum::Json;
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::{Access, Route, RouteDoc, route_docs};
use crate::auth::Role;

/// The routes of this resource.
pub fn routes() -> Vec<Route> {
    vec![Route {
        doc: RouteDoc {
            method: "GET",
            path: "/openapi.json",
            operation_id: "openapi",
            summary: "This API's OpenAPI document.",
            access: Access::Public,
            request: None,
            success: (200, Some("OpenApi")),
            errors: &[],
            query: &[],
        },
        handler: get(document),
    }]
}

async fn document() -> Json<Value> {
    Json(spec())
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Malformed JSON or query",
        401 => "Missing or unknown token",
        403 => "The token's role may not do this",
        404 => "Unknown id, or outside the caller's tenant/user",
        409 => "Illegal lifecycle change or finished execution",
        413 => "Body over 1 MiB",
        422 => "A field of the wrong kind or value",
        503 => "Store unavailable, or circuit open (with Retry-After)",
        _ => "Response",
    }
}

fn operation(doc: &RouteDoc) -> Value {
    let mut parameters: Vec<Value> = Vec::new();
    let mut rest = doc.path;
    while let Some(start) = rest.find('{') {
        let Some(end) = rest[start..].find('}') else { break };
        let name = &rest[start + 1..start + end];
        parameters.push(json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}));
        rest = &rest[start + end + 1..];
    }
    for (name, description) in doc.query {
        parameters.push(json!({"name": name, "in": "query", "required": false,
            "description": description, "schema": {"type": "string"}}));
    }
    let mut responses = Map::new();
    let (status, schema) = doc.success;
    let content = match schema {
        Some(name) => json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}),
        None => json!({"text/plain": {"schema": {"type": "string"}}}),
    };
    responses.insert(
        status.to_string(),
        json!({"description": status_text(status), "content": content}),
    );
    for status in doc.errors {
        responses.insert(
            status.to_string(),
            json!({"description": status_text(*status),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
        );
    }
    let mut op = json!({
        "operationId": doc.operation_id,
        "summary": doc.summary,
        "parameters": parameters,
        "responses": responses,
        "x-access": doc.access.describe(),
    });
    match doc.access {
        Access::Public => op["security"] = json!([]),
        // Without a token unless the server requires one.
        Access::AdminIfConfigured(_) => op["security"] = json!([{}, {"bearer": []}]),
        Access::Read | Access::Write(_) | Access::Admin(_) => {}
    }
    if let Some(request) = doc.request {
        op["requestBody"] = json!({"required": true, "content": {"application/json":
            {"schema": {"$ref": format!("#/components/schemas/{request}")}}}});
    }
    op
}

/// The whole document.
pub fn spec() -> Value {
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for doc in route_docs() {
        paths
            .entry(doc.path)
            .or_default()
            .insert(doc.method.to_lowercase(), operation(&doc));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "agentrack",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Tracks LLM agent executions: lifecycle, phases, heartbeats, dead-agent detection, timeouts and circuit breakers.",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        },
    })
}

fn schemas() -> Value {
    let string = json!({"type": "string"});
    let nullable_string = json!({"type": ["string", "null"]});
    let time = json!({"type": "string", "format": "date-time"});
    let object = json!({"type": "object"});
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": string, "message": string,
                "field": string, "valid_values": {"type": "array", "items": string}},
            "additionalProperties": true}}},
        "ExecutionState": {"type": "string", "enum": ExecutionState::VALUES},
        "Phase": {"type": "string", "enum": Phase::VALUES},
        "Role": {"type": "string", "enum": Role::VALUES},
        "NewExecution": {"type": "object", "required": ["agent_name", "thread_id", "user_id"],
            "additionalProperties": false,
            "properties": {"agent_name": string, "thread_id": string, "user_id": string,
                "timeout_seconds": {"type": "number", "exclusiveMinimum": 0},
                "metadata": object, "tenant": {"type": "string", "description": "Admin tokens only."}}},
        "StateChange": {"type": "object", "required": ["state"], "additionalProperties": false,
            "properties": {"state": {"$ref": "#/components/schemas/ExecutionState"},
                "error": nullable_string, "result": {}}},
        "PhaseChange": {"type": "object", "required": ["phase"], "additionalProperties": false,
            "properties": {"phase": {"$ref": "#/components/schemas/Phase"}, "metadata": object}},
        "Transition": {"type": "object", "properties": {
            "from_phase": {"$ref": "#/components/schemas/Phase"}, "to_phase": {"$ref": "#/components/schemas/Phase"},
            "timestamp": time, "duration_ms": {"type": "integer"}, "metadata": object,
            "websocket_event_sent": {"type": "boolean"}, "valid": {"type": "boolean"}}},
        "ExecutionRecord": {"type": "object", "properties": {
            "execution_id": string, "tenant": string, "agent_name": string, "thread_id": string,
            "user_id": string, "state": {"$ref": "#/components/schemas/ExecutionState"},
            "current_phase": {"$ref": "#/components/schemas/Phase"},
            "started_at": time, "last_heartbeat": time, "updated_at": time, "completed_at": time,
            "error": nullable_string, "result": {}, "heartbeat_count": {"type": "integer"},
            "timeout_seconds": {"type": "number"}, "metadata": object,
            "phase_history": {"type": "array", "items": {"$ref": "#/components/schemas/Transition"}},
            "warning_count": {"type": "integer"}, "error_count": {"type": "integer"},
            "circuit_breaker_state": string, "circuit_breaker_failures": {"type": "integer"},
            "seq": {"type": "integer"}}},
        "ExecutionWithTransition": {"allOf": [{"$ref": "#/components/schemas/ExecutionRecord"},
            {"type": "object", "properties": {"transition": {"$ref": "#/components/schemas/Transition"}}}]},
        "HeartbeatAck": {"type": "object", "properties": {"execution_id": string,
            "state": {"$ref": "#/components/schemas/ExecutionState"},
            "current_phase": {"$ref": "#/components/schemas/Phase"},
            "heartbeat_count": {"type": "integer"}, "global_seq": {"type": "integer"}}},
        "HeartbeatBatch": {"type": "object", "required": ["execution_ids"], "properties": {
            "execution_ids": {"type": "array", "minItems": 1, "maxItems": super::heartbeats::MAX_BATCH,
                "items": string}}},
        "HeartbeatBatchReport": {"type": "object", "properties": {
            "accepted": {"type": "integer"}, "rejected": {"type": "integer"},
            "results": {"type": "array", "description": "Per id, in order: {\"ok\": HeartbeatAck} or an error body.",
                "items": object}}},
        "ExecutionPage": {"type": "object", "properties": {
            "executions": {"type": "array", "items": {"$ref": "#/components/schemas/ExecutionRecord"}},
            "next_cursor": nullable_string}},
        "BreakerStatus": {"type": "object", "properties": {
            "name": string, "state": {"type": "string", "enum": ["closed", "open", "half_open"]},
            "failure_count": {"type": "integer"}, "failure_threshold": {"type": "integer"},
            "success_count": {"type": "integer"}, "is_open": {"type": "boolean"},
            "can_retry": {"type": "boolean"}, "recovery_timeout": {"type": "number"}}},
        "BreakerList": {"type": "object", "properties": {
            "breakers": {"type": "array", "items": {"$ref": "#/components/schemas/BreakerStatus"}}}},
        "PermitGrant": {"type": "object", "properties": {"permit": string, "breaker": string,
            "state": string, "expires_in_seconds": {"type": "number"}}},
        "PermitOutcome": {"type": "object", "required": ["permit", "outcome"], "additionalProperties": false,
            "properties": {"permit": string,
                "outcome": {"type": "string", "enum": ["success", "failure", "timeout", "ignored"]}}},
        "NewToken": {"type": "object", "required": ["role", "tenant"], "additionalProperties": false,
            "properties": {"role": {"$ref": "#/components/schemas/Role"}, "tenant": string,
                "user_id": {"type": "string", "description": "Required for viewers, refused otherwise."},
                "label": string}},
        "TokenCreated": {"type": "object", "properties": {"token": string,
            "role": {"$ref": "#/components/schemas/Role"}, "tenant": string, "user_id": nullable_string,
            "label": nullable_string}},
        "Metrics": {"type": "object", "properties": {
            "total_executions": {"type": "integer"}, "active_executions": {"type": "integer"},
            "successful_executions": {"type": "integer"}, "failed_executions": {"type": "integer"},
            "timeout_executions": {"type": "integer"}, "dead_executions": {"type": "integer"},
            "cancelled_executions": {"type": "integer"}, "success_rate": {"type": "number"},
            "failure_rate": {"type": "number"},
            "phase_durations_ms": {"type": "object", "additionalProperties": {"type": "object",
                "properties": {"count": {"type": "integer"}, "p50": {"type": "integer"},
                    "p90": {"type": "integer"}, "p99": {"type": "integer"}, "max": {"type": "integer"}}}}}},
        "Overview": super::overview::schema(),
        "Health": {"type": "object", "properties": {"status": string}},
        "EventStream": {"type": "string", "description": "A WebSocket upgrade: JSON text messages, one event each."},
        "OpenApi": object,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_document_with_its_schemas() {
        let spec = spec();
        let schemas = spec["components"]["schemas"].as_object().unwrap();
        for doc in route_docs() {
            let op = &spec["paths"][doc.path][doc.method.to_lowercase()];
            assert_eq!(op["operationId"], doc.operation_id, "{} {}", doc.method, doc.path);
            for name in doc.request.into_iter().chain(doc.success.1) {
                assert!(schemas.contains_key(name), "missing schema {name}");
            }
        }
    }
}
