//! `/openapi.json`: the OpenAPI 3.1 document, built from the route table the router is built
//! from (see [`crate::api`]), so it lists every route.

use std::collections::BTreeMap;

use axum::Json;
use axum::routing::get;
use serde_json::{Map, Value, json};

use agentrack::ExecutionState;

use super::{Access, Route, RouteDoc, route_docs};

/// The routes of this resource.
pub fn routes() -> Vec<Route> {
    vec![Route {
        doc: RouteDoc {
            method: "GET",
            path: "/openapi.json",
            operation_id: "openapi",
            summary: "This API's OpenAPI document.",
            durable: false,
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
        408 => "The request body did not arrive within http.body_read_timeout",
        409 => {
            "Illegal lifecycle change or finished execution, or the first request with this Idempotency-Key still running"
        }
        413 => "Body over 1 MiB, or a field over its limit (`field_too_large`)",
        422 => "A field of the wrong kind or value, or an Idempotency-Key sent before with another request",
        429 => {
            "Past one of the caller's quotas (quota_exceeded, naming the quota, its limit and the current count; with Retry-After); nothing changed"
        }
        503 => {
            "Store unavailable or behind past max_store_queue (nothing changed), circuit open, or the server busy past http.max_requests (with Retry-After)"
        }
        _ => "Response",
    }
}

/// What a path or query parameter accepts, exactly as its route checks it: a value outside the
/// schema is refused (4xx), a value inside it is never refused for its form. Parameters of the
/// same name mean the same on every route.
fn parameter_schema(name: &str) -> Value {
    let states = ExecutionState::VALUES.join("|");
    match name {
        "limit" => json!({"type": "integer", "minimum": 1, "maximum": super::executions::MAX_LIMIT}),
        // Comma-separated, empty items ignored.
        "state" => json!({"type": "string", "pattern": format!("^({states})?(,({states})?)*$")}),
        "active" => json!({"type": "string", "enum": ["true", "false", "1", "0"]}),
        "snapshot" => json!({"type": "string", "enum": ["true", "false", "1", "0", ""]}),
        "protocol" => json!({"type": "string", "enum": ["agentrack", "agui", ""]}),
        // An execution id (the last of the previous page).
        "cursor" => json!({"type": "string", "pattern": "^exec_[0-9a-fA-F]{32}$"}),
        // A breaker's name, under the names' rule.
        "name" => super::schemas::name(crate::names::NameKind::Breaker),
        _ => json!({"type": "string"}),
    }
}

fn operation(doc: &RouteDoc) -> Value {
    let mut parameters: Vec<Value> = Vec::new();
    let mut rest = doc.path;
    while let Some(start) = rest.find('{') {
        let Some(end) = rest[start..].find('}') else { break };
        let name = &rest[start + 1..start + end];
        parameters.push(json!({"name": name, "in": "path", "required": true, "schema": parameter_schema(name)}));
        rest = &rest[start + end + 1..];
    }
    for (name, description) in doc.query {
        parameters.push(json!({"name": name, "in": "query", "required": false,
            "description": description, "schema": parameter_schema(name)}));
    }
    let keyed = super::idempotency::applies(doc.durable, doc.operation_id);
    if keyed {
        parameters.push(json!({"name": "Idempotency-Key", "in": "header", "required": false,
            "description": "1 to 255 visible ASCII characters. A retry with the same key (same token, method, path and body) gets the first answer, with Idempotent-Replayed: true, instead of running again; kept in the store for idempotency_retention (24 h). Same key, another body: 422 idempotency_key_reused; the first still running: 409 idempotency_key_in_progress with Retry-After.",
            "schema": {"type": "string", "minLength": 1, "maxLength": super::idempotency::MAX_KEY_BYTES, "pattern": "^[!-~]+$"}}));
    }
    let mut responses = Map::new();
    let (status, schema) = doc.success;
    let content = match schema {
        Some(name) => json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}),
        None => json!({"text/plain": {"schema": {"type": "string"}}}),
    };
    let mut success = json!({"description": status_text(status), "content": content});
    if keyed {
        success["headers"] = json!({"Idempotent-Replayed": {
            "description": "true when this is the kept answer of an earlier request with the same Idempotency-Key",
            "schema": {"type": "string", "enum": ["true"]}}});
    }
    responses.insert(status.to_string(), success);
    // Any route can be refused past http.max_requests, and one that takes a body when the body
    // is too slow (see crate::http): the listener's refusals, not the routes'.
    let mut errors = doc.errors.to_vec();
    if doc.request.is_some() {
        errors.push(408);
    }
    if keyed {
        errors.extend([400, 409, 422]);
    }
    errors.push(503);
    errors.sort_unstable();
    errors.dedup();
    for status in &errors {
        let mut response = json!({"description": status_text(*status),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
        if *status == 429 {
            response["headers"] = json!({"Retry-After": {"description": "Seconds to wait before retrying.",
                "schema": {"type": "integer", "minimum": 1}}});
        }
        responses.insert(status.to_string(), response);
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
        // A token by default; none on a server that sets metrics_require_auth = false.
        Access::Metrics(_) => op["security"] = json!([{"bearer": []}, {}]),
        Access::Read | Access::Write(_) | Access::Admin(_) => {}
    }
    if let Some(request) = doc.request {
        op["requestBody"] = json!({"required": true, "content": {"application/json":
            {"schema": {"$ref": format!("#/components/schemas/{request}")}}}});
    }
    op
}

/// From a created execution to every route of one execution, for clients (and API fuzzers)
/// that follow OpenAPI links.
fn execution_links(docs: &[RouteDoc]) -> Value {
    let links: Map<String, Value> = docs
        .iter()
        .filter(|doc| doc.path.starts_with("/v1/executions/{id}"))
        .map(|doc| {
            let link = json!({"operationId": doc.operation_id,
                "parameters": {"id": "$response.body#/execution_id"}});
            (doc.operation_id.to_owned(), link)
        })
        .collect();
    Value::Object(links)
}

/// The whole document.
pub fn spec() -> Value {
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    let docs = route_docs();
    let schemas = super::schemas::components();
    for doc in &docs {
        let mut operation = operation(doc);
        // An empty body reads as `{}`: a body whose every field is optional may be left out
        // (unless one of several must be given: `oneOf`).
        if let Some(request) = doc.request
            && schemas[request]["required"].as_array().is_none_or(Vec::is_empty)
            && schemas[request].get("oneOf").is_none()
        {
            operation["requestBody"]["required"] = json!(false);
        }
        if doc.operation_id == "createExecution" {
            operation["responses"]["201"]["links"] = execution_links(&docs);
        }
        paths
            .entry(doc.path)
            .or_default()
            .insert(doc.method.to_lowercase(), operation);
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
            "schemas": schemas,
        },
    })
}

#[cfg(test)]
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
            let header = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header");
            assert_eq!(
                header,
                crate::api::idempotency::applies(doc.durable, doc.operation_id),
                "{}: Idempotency-Key documented exactly where it is taken",
                doc.operation_id
            );
        }
    }
}
