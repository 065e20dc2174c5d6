//! Validation against the component schemas of the `/openapi.json` a real server publishes.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use serde_json::{Value, json};

use crate::common::TestServer;

/// The published component schemas.
pub struct Schemas {
    components: Value,
}

impl Schemas {
    /// The schemas of the document `server` serves.
    pub async fn published(server: &TestServer) -> Self {
        let (status, document) = server.request("GET", "/openapi.json", None, None).await;
        assert_eq!(status, 200, "{document}");
        Self {
            components: document["components"].clone(),
        }
    }

    /// Whether the schema `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.components["schemas"].get(name).is_some()
    }

    /// The reasons `instance` does not match the schema `name` (none when it does).
    pub fn errors(&self, name: &str, instance: &Value) -> Vec<String> {
        assert!(self.has(name), "no schema {name} in the document");
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": format!("#/components/schemas/{name}"),
            "components": self.components,
        });
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap_or_else(|error| panic!("the schema {name} does not compile: {error}"));
        validator
            .iter_errors(instance)
            .map(|error| format!("{}: {error}", error.instance_path()))
            .collect()
    }

    /// Fails unless `instance` matches the schema `name`; `what` says where it came from.
    pub fn assert_matches(&self, name: &str, instance: &Value, what: &str) {
        let errors = self.errors(name, instance);
        assert!(
            errors.is_empty(),
            "{what} does not match the published schema {name}:\n  {}\n{instance:#}",
            errors.join("\n  ")
        );
    }
}
