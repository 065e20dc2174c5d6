//! `/openapi.json`: the OpenAPI 3.1 document, built from the route table the router is built
//! from (see [`crate::api`]), so it lists every route.

use std::collections::BTreeMap;

use axum::Json;
use axum::routing::get;
use serde_json::{Map, Value, json};

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
        409 => "Illegal lifecycle change or finished execution",
        413 => "Body over 1 MiB, or a field over its limit (`field_too_large`)",
        422 => "A field of the wrong kind or value",
        503 => "Store unavailable, circuit open, or the server busy past http.max_requests (with Retry-After)",
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
    // Any route can be refused past http.max_requests, and one that takes a body when the body
    // is too slow (see crate::http): the listener's refusals, not the routes'.
    let mut errors = doc.errors.to_vec();
    if doc.request.is_some() {
        errors.push(408);
    }
    errors.push(503);
    errors.sort_unstable();
    errors.dedup();
    for status in &errors {
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
            "schemas": super::schemas::components(),
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
        }
    }
}
