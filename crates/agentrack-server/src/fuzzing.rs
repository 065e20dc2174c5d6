//! Entry points for the fuzz targets (`fuzz/`, cargo-fuzz on nightly) and for the test that
//! replays their committed corpus on stable (`tests/fuzz_corpus.rs`): the request-body parsers
//! and the stored-row decoders, exactly as the server calls them, each with the properties it
//! must keep for any input. Not an API: it exists for those two callers.
//!
//! Each function panics when a property does not hold, which is how a fuzzer reports a finding.
//! It is compiled always (it is small) so that the corpus replay runs in the plain
//! `cargo test --workspace`, which turns on no feature.

#![allow(clippy::missing_panics_doc, clippy::expect_used)]

use agentrack::{ExecutionRecord, Tracker};
use serde_json::Value;

use crate::api::body::{self, JsonBody, MAX_DEPTH, MAX_NAME_CHARS};
use crate::api::error::ApiError;
use crate::api::{breakers, executions, heartbeats, tokens};
use crate::serialized_event::SerializedEvent;
use crate::store::{replay, row, unreadable};

/// A request body of one route, selected by the input's first byte (`c`reate, `s`tate,
/// `p`hase, `h`eartbeats, `r`ecord, `t`oken, `e`mpty, or any other byte modulo 7); the rest is
/// the body as it arrives, parsed by the route's own parser.
///
/// Properties: no panic; a refusal is a 4xx naming a code, never a 5xx; an accepted value
/// keeps the limits (non-blank names of at most [`MAX_NAME_CHARS`] characters, free-form values
/// nested at most [`MAX_DEPTH`] levels), and an accepted metadata or result stored inside an
/// execution's record (phase history included) decodes back to the same record.
pub fn request_body(input: &[u8]) {
    let Some((&route, bytes)) = input.split_first() else {
        return;
    };
    let outcome = JsonBody::parse(bytes).and_then(|body| match route_of(route) {
        Route::Create => executions::new_execution(body, &agentrack::TimeoutConfig::default()).map(|(new, tenant)| {
            for name in [&new.agent_name, &new.thread_id, &new.user_id]
                .into_iter()
                .chain(&tenant)
            {
                assert_name(name);
            }
            assert!(
                new.timeout.is_none_or(|timeout| !timeout.is_zero()),
                "a zero timeout was accepted"
            );
            assert_shallow(&Value::Object(new.metadata.clone()));
            let tracker = Tracker::new();
            if let Ok(change) = tracker.create(new) {
                let id = change.execution_id;
                let _ = tracker.start(id);
                assert_stored(&tracker, id);
            }
        }),
        Route::State => executions::state_change(body).map(|(state, update, metadata)| {
            if let Some(result) = &update.result {
                assert_shallow(result);
            }
            if let Some(metadata) = &metadata {
                assert_shallow(&Value::Object(metadata.clone()));
            }
            let tracker = Tracker::new();
            let id = created(&tracker);
            let _ = tracker.set_state(id, state, update);
            assert_stored(&tracker, id);
        }),
        Route::Phase => executions::phase_change(body).map(|(phase, metadata)| {
            if let Some(metadata) = &metadata {
                assert_shallow(&Value::Object(metadata.clone()));
            }
            let tracker = Tracker::new();
            let id = created(&tracker);
            let _ = tracker.transition(id, phase, metadata);
            assert_stored(&tracker, id);
        }),
        Route::Heartbeats => heartbeats::parse_batch(body).map(|batch| {
            let ids = &batch.ids;
            assert!(
                !ids.is_empty() && ids.len() <= heartbeats::MAX_BATCH,
                "{} ids accepted",
                ids.len()
            );
            assert!(ids.iter().all(|id| !id.trim().is_empty()), "a blank id was accepted");
            assert_eq!(batch.counts.len(), ids.len(), "not one count per id");
            assert!(
                batch.counts.iter().all(|n| (1..=heartbeats::MAX_COUNT).contains(n)),
                "a count out of range was accepted"
            );
        }),
        Route::Record => breakers::permit_outcome(body).map(|(permit, _)| assert_name(&permit)),
        Route::Token => tokens::new_token(body).map(|grant| {
            assert_name(&grant.tenant);
            grant
                .user_id
                .iter()
                .chain(&grant.label)
                .for_each(|name| assert_name(name));
        }),
        Route::Empty => body::Fields::new(body, &[]).map(drop),
    });
    if let Err(error) = outcome {
        assert_client_error(&error);
    }
}

/// Stored rows as a backend reads them back: the input's first line is an execution's `record`
/// column, every further line an event's `json` column of the log after it.
///
/// Properties: no panic; a list page of such rows skips the unreadable ones and keeps the rest;
/// a record that decodes encodes and decodes again to itself; the log replays onto it (as at
/// start-up) without panicking and leaves a record that still encodes and decodes.
pub fn stored_rows(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let mut lines = text.split('\n');
    let record_text = lines.next().unwrap_or_default();
    let events: Vec<&str> = lines.collect();
    let decoded = row::decode(record_text).ok();
    let page = unreadable::page([("exec_fuzz", record_text)], 1);
    assert_eq!(
        page.records.len(),
        usize::from(decoded.is_some()),
        "a page disagrees with the decoder"
    );
    for json in &events {
        if let Some(event) = SerializedEvent::from_stored(0, json) {
            assert_eq!(event.text(), *json, "a stored event's JSON is not kept as stored");
        }
    }
    let Some(record) = decoded else {
        return;
    };
    assert_round_trip(&record);
    let mut records = [record];
    let changed = replay::catch_up(&mut records, events.iter().copied());
    assert!(
        changed.len() <= 1,
        "a replay onto one record changed {} records",
        changed.len()
    );
    assert_round_trip(&records[0]);
}

#[derive(Debug, Clone, Copy)]
enum Route {
    Create,
    State,
    Phase,
    Heartbeats,
    Record,
    Token,
    Empty,
}

fn route_of(byte: u8) -> Route {
    const ROUTES: [Route; 7] = [
        Route::Create,
        Route::State,
        Route::Phase,
        Route::Heartbeats,
        Route::Record,
        Route::Token,
        Route::Empty,
    ];
    match byte {
        b'c' => Route::Create,
        b's' => Route::State,
        b'p' => Route::Phase,
        b'h' => Route::Heartbeats,
        b'r' => Route::Record,
        b't' => Route::Token,
        b'e' => Route::Empty,
        other => ROUTES[usize::from(other) % ROUTES.len()],
    }
}

fn created(tracker: &Tracker) -> agentrack::ExecutionId {
    let change = tracker
        .create(agentrack::NewExecution::new("agent", "thread", "user"))
        .expect("a plain execution is created");
    let id = change.execution_id;
    tracker.start(id).expect("a new execution starts");
    id
}

fn assert_name(name: &str) {
    assert!(!name.trim().is_empty(), "a blank name was accepted: {name:?}");
    assert!(
        name.chars().count() <= MAX_NAME_CHARS,
        "a name of {} characters was accepted",
        name.chars().count()
    );
}

fn assert_shallow(value: &Value) {
    let depth = body::depth(value);
    assert!(depth <= MAX_DEPTH, "a value nested {depth} levels was accepted");
}

fn assert_client_error(error: &ApiError) {
    let status = error.status();
    assert!(
        status.is_client_error(),
        "a body was refused with {status}: {:?}",
        error.body()
    );
}

/// The execution's record, as the store writes it, decodes back to itself.
fn assert_stored(tracker: &Tracker, id: agentrack::ExecutionId) {
    let record = tracker.get(id).expect("the execution is in memory");
    assert_round_trip(&record);
}

fn assert_round_trip(record: &ExecutionRecord) {
    let text = serde_json::to_string(record).expect("a record encodes");
    let back = row::decode(&text).unwrap_or_else(|error| panic!("a stored record does not decode: {error}"));
    let again = serde_json::to_string(&back).expect("a record encodes");
    assert_eq!(again, text, "a stored record changes when read back");
}
