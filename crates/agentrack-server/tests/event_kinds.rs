//! Every kind of event the core knows is decided by each place that must say what it means —
//! the AG-UI view, the server's counters, the dashboard's model (and `agentrack watch`, in its
//! own unit test) — and described by the published document.
//!
//! `EventKind` is `#[non_exhaustive]`, so outside the core every `match` on it needs a wildcard
//! arm and the compiler no longer points at the places a new kind must be decided in. These
//! tests do, from one real event of every kind in [`EventKind::NAMES`] (which the core checks
//! against the type itself).

#![allow(clippy::expect_used)]

mod common;
mod openapi;
mod samples;

use std::collections::BTreeSet;

use agentrack::EventKind;
use agentrack_server::agui;
use agentrack_server::metrics;
use common::TestServer;
use openapi::Schemas;
use serde_json::json;

#[tokio::test]
async fn the_agui_view_and_the_counters_decide_every_kind() {
    for (kind, event) in samples::one_of_every_kind().await {
        assert!(
            agui::treatment(&event.kind).is_some(),
            "the AG-UI view (agui::treatment) has no decision for {kind}"
        );
        assert!(
            metrics::counted(&event.kind).is_some(),
            "the counters (metrics::counted) have no decision for {kind}"
        );
    }
}

/// The dashboard's table of kinds: `(kind, what apply does)` for each entry of `EVENT_KINDS`.
fn dashboard_kinds(model: &str) -> Vec<(String, String)> {
    let start = model
        .find("export const EVENT_KINDS = Object.freeze({")
        .expect("model.js declares EVENT_KINDS");
    let table = &model[start..];
    let table = &table[..table.find("});").expect("EVENT_KINDS ends")];
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let (kind, rest) = line.trim().split_once(':')?;
            let record = rest.split("record: \"").nth(1)?.split('"').next()?;
            Some((kind.trim().to_owned(), record.to_owned()))
        })
        .collect()
}

#[test]
fn the_dashboards_model_decides_every_kind() {
    let model = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/web/assets/model.js")).unwrap();
    let kinds = dashboard_kinds(&model);
    let listed: BTreeSet<&str> = kinds.iter().map(|(kind, _)| kind.as_str()).collect();
    let known: BTreeSet<&str> = EventKind::NAMES.iter().copied().collect();
    assert_eq!(
        listed, known,
        "web/assets/model.js's EVENT_KINDS must list exactly the server's kinds"
    );
    assert_eq!(kinds.len(), listed.len(), "a kind is listed twice");
    for (kind, record) in &kinds {
        assert!(
            model.contains(&format!("case \"{record}\":")),
            "apply() in model.js does not handle {kind}'s {record:?}"
        );
    }
}

#[tokio::test]
async fn every_event_matches_the_published_event_schema() {
    let server = TestServer::start().await;
    let schemas = Schemas::published(&server).await;
    let events = samples::scenario().await;
    let mut named_breaker = false;
    for event in &events {
        let value = serde_json::to_value(event).unwrap();
        schemas.assert_matches("Event", &value, &format!("a {} event", event.kind.name()));
        named_breaker |= event.execution.is_none();
    }
    assert!(
        named_breaker,
        "the scenario has a named breaker's event (without an execution)"
    );
    // The schema of each kind is exact: a field it does not describe is refused.
    for (kind, event) in samples::one_of_every_kind().await {
        let mut value = serde_json::to_value(&event).unwrap();
        value["added_later"] = json!(true);
        assert!(
            !schemas.errors("Event", &value).is_empty(),
            "the {kind} schema lets an undescribed field through"
        );
    }
}
