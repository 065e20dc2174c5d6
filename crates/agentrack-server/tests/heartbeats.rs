//! Heartbeats: the small acknowledgement, the batch route, heartbeats over the event stream, and
//! per-user fan-out.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::collections::{HashMap, HashSet};

use agentrack_server::api::heartbeats::MAX_BATCH;
use common::{Backend, Frame, SECOND, TestServer, Ws};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

async fn a_heartbeat_answers_with_a_small_acknowledgement(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let agent = server.token("agent", "t1", None).await;
    let id = server.create_started(&agent, "researcher", "thread-1", "alice").await;
    let ack = server
        .ok(&format!("/v1/executions/{id}/heartbeat"), &agent, json!({}))
        .await;
    assert_eq!(ack["execution_id"], id.as_str());
    assert_eq!(ack["state"], "running", "starting becomes running");
    assert_eq!(ack["heartbeat_count"], 1);
    assert!(ack["global_seq"].as_u64().unwrap() > 0);
    assert!(ack.get("phase_history").is_none(), "not the whole record: {ack}");
    let record = server.get(&format!("/v1/executions/{id}"), &agent).await.1;
    assert_eq!(
        (record["state"].clone(), record["heartbeat_count"].clone()),
        (json!("running"), json!(1))
    );
}

async fn a_batch_counts_each_id_on_its_own_and_names_each_failure(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let agent = server.token("agent", "t1", None).await;
    let other_tenant = server.token("agent", "t2", None).await;
    let a = server.create(&agent, "researcher", "thread-1", "alice").await;
    let b = server.create(&agent, "researcher", "thread-2", "bob").await;
    let foreign = server.create(&other_tenant, "researcher", "thread-3", "carol").await;
    let done = server.create(&agent, "researcher", "thread-4", "alice").await;
    server
        .ok(
            &format!("/v1/executions/{done}/state"),
            &agent,
            json!({"state": "failed", "error": "x"}),
        )
        .await;

    let ids = json!([a, b, foreign, "exec_nonsense", done, a]);
    let (status, report) = server
        .post("/v1/heartbeats", &agent, json!({ "execution_ids": ids }))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (report["accepted"].clone(), report["rejected"].clone()),
        (json!(3), json!(3))
    );
    let results = report["results"].as_array().unwrap();
    assert_eq!(results[0]["ok"]["heartbeat_count"], 1);
    assert_eq!(results[1]["ok"]["execution_id"], b.as_str());
    assert_eq!(
        results[2]["error"]["code"], "not_found",
        "another tenant's id is unknown here"
    );
    assert_eq!(results[3]["error"]["code"], "not_found");
    assert!(
        results[3]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exec_nonsense")
    );
    assert_eq!(results[4]["error"]["code"], "terminal");
    assert_eq!(results[5]["ok"]["heartbeat_count"], 2, "the same id twice counts twice");
    let (_, foreign_record) = server.get(&format!("/v1/executions/{foreign}"), &other_tenant).await;
    assert_eq!(
        foreign_record["heartbeat_count"], 0,
        "nothing changed outside the caller's scope"
    );
}

async fn a_bad_batch_is_refused_whole_with_a_specific_error(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let agent = server.token("agent", "t1", None).await;
    let viewer = server.token("viewer", "t1", Some("alice")).await;
    let id = server.create(&agent, "researcher", "thread-1", "alice").await;
    let cases = [
        (json!({}), 422, "missing_field"),
        (json!({"execution_ids": []}), 422, "invalid_field"),
        (json!({"execution_ids": {"id": id}}), 422, "invalid_field"),
        (json!({"execution_ids": [id, 7]}), 422, "invalid_field"),
        (json!({"execution_ids": [id], "extra": 1}), 422, "unknown_field"),
    ];
    for (body, status, code) in cases {
        let (got, answer) = server.post("/v1/heartbeats", &agent, body.clone()).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str().unwrap()),
            (status, code),
            "{body} → {answer}"
        );
    }
    let (status, _) = server
        .post("/v1/heartbeats", &viewer, json!({"execution_ids": [id]}))
        .await;
    assert_eq!(status, 403);
    let (_, record) = server.get(&format!("/v1/executions/{id}"), &agent).await;
    assert_eq!(record["heartbeat_count"], 0, "no refused batch counted anything");
}

async fn an_agent_can_heartbeat_over_its_event_stream(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let agent = server.token("agent", "t1", None).await;
    let id = server.create_started(&agent, "researcher", "thread-1", "alice").await;
    let mut ws = server.ws("", Some(&agent)).await;
    let beat = json!({"type": "heartbeat", "execution_ids": [id]}).to_string();
    ws.socket.send(Message::Text(beat.into())).await.unwrap();
    // The acknowledgement, and the state change it caused, both arrive (in either order).
    let (mut ack, mut changed) = (None, false);
    ws.until(5 * SECOND, |event| {
        match event["type"].as_str() {
            Some("heartbeat_ack") => ack = Some(event.clone()),
            Some("state_changed") => changed = event["to"] == "running",
            _ => {}
        }
        ack.is_some() && changed
    })
    .await;
    let ack = ack.unwrap();
    assert_eq!((ack["accepted"].clone(), ack["rejected"].clone()), (json!(1), json!(0)));
    assert_eq!(ack["results"][0]["ok"]["state"], "running");

    // A message it does not understand gets an error naming what it does; the stream goes on.
    ws.socket
        .send(Message::Text("{\"type\": \"subscribe\"}".into()))
        .await
        .unwrap();
    let error = ws.until(5 * SECOND, |event| event["type"] == "error").await;
    assert_eq!(error.last().unwrap()["error"]["code"], "invalid_message");
    ws.socket.send(Message::Text("[1]".into())).await.unwrap();
    let error = ws.until(5 * SECOND, |event| event["type"] == "error").await;
    assert!(
        error.last().unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("JSON object")
    );
    server.heartbeat(&agent, &id).await;
    ws.until(5 * SECOND, |event| event["type"] == "heartbeat").await;
}

async fn a_viewer_cannot_heartbeat_over_its_stream(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let agent = server.token("agent", "t1", None).await;
    let viewer = server.token("viewer", "t1", Some("alice")).await;
    let id = server.create(&agent, "researcher", "thread-1", "alice").await;
    let mut ws = server.ws("", Some(&viewer)).await;
    let beat = json!({"type": "heartbeat", "execution_ids": [id]}).to_string();
    ws.socket.send(Message::Text(beat.into())).await.unwrap();
    let error = ws.until(5 * SECOND, |event| event["type"] == "error").await;
    assert_eq!(error.last().unwrap()["error"]["code"], "forbidden");
    let (_, record) = server.get(&format!("/v1/executions/{id}"), &agent).await;
    assert_eq!(record["heartbeat_count"], 0);
}

async fn viewers_of_different_users_each_get_only_their_own_events(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let agent = server.token("agent", "t1", None).await;
    let alice = server.token("viewer", "t1", Some("alice")).await;
    let bob = server.token("viewer", "t1", Some("bob")).await;
    let mut alice_ws = server.ws("", Some(&alice)).await;
    let mut bob_ws = server.ws("", Some(&bob)).await;
    let mut agent_ws = server.ws("", Some(&agent)).await;
    // Interleaved, so that a leaked event would arrive before the next own one.
    let a1 = server.create(&agent, "researcher", "thread-1", "alice").await;
    let b1 = server.create(&agent, "researcher", "thread-2", "bob").await;
    let a2 = server.create(&agent, "researcher", "thread-1", "alice").await;
    let b2 = server.create(&agent, "researcher", "thread-2", "bob").await;
    for (ws, mine) in [(&mut alice_ws, [&a1, &a2]), (&mut bob_ws, [&b1, &b2])] {
        for id in mine {
            match ws.next(5 * SECOND).await {
                Frame::Event(event) => assert_eq!(event["execution_id"], id.as_str(), "{event}"),
                _ => panic!("no event for {id}"),
            }
        }
    }
    let seen = agent_ws
        .until(5 * SECOND, |event| event["execution_id"] == b2.as_str())
        .await;
    let ids: Vec<&str> = seen.iter().filter_map(|event| event["execution_id"].as_str()).collect();
    assert_eq!(
        ids,
        [a1.as_str(), b1.as_str(), a2.as_str(), b2.as_str()],
        "an agent sees its tenant's"
    );
}

/// Reads `ws` until it has the latest heartbeat (`count`) of every one of `watched` and the
/// `state_changed` of `then`; panics if the stream closes or goes quiet first.
async fn latest_beats_then_state(ws: &mut Ws, watched: &HashSet<&str>, count: u64, then: &str) {
    let mut latest: HashMap<String, u64> = HashMap::new();
    let mut changed = 0;
    let mut beats = 0;
    ws.until(10 * SECOND, |event| {
        let id = event["execution_id"].as_str().unwrap_or_default();
        match event["type"].as_str() {
            Some("heartbeat") => {
                beats += 1;
                let got = event["heartbeat_count"].as_u64().unwrap();
                let previous = latest.insert(id.to_owned(), got);
                assert!(
                    previous < Some(got),
                    "heartbeats of {id} out of order: {previous:?} then {got}"
                );
            }
            Some("state_changed") if id == then => changed += 1,
            _ => {}
        }
        changed == 1 && watched.iter().all(|id| latest.get(*id) == Some(&count))
    })
    .await;
    assert!(
        latest.keys().all(|id| watched.contains(id.as_str())),
        "only what it watches"
    );
    assert!(beats <= 2 * watched.len(), "no heartbeat is repeated much: {beats}");
}

async fn a_batch_of_heartbeats_closes_no_stream_of_the_tenant(backend: Backend) {
    // None may die while the others are being created.
    let server = TestServer::start_on(backend, &["--heartbeat-timeout", "600s"]).await;
    let agent = server.token("agent", "t1", None).await;
    let viewer = server.token("viewer", "t1", Some("alice")).await;
    // A full batch of executions, every 50th alice's: more heartbeats than any channel buffers.
    let ids: Vec<String> = futures_util::stream::iter(0..MAX_BATCH)
        .map(|i| {
            let (server, agent) = (&server, &agent);
            async move {
                let user = if i % 50 == 0 { "alice" } else { "bob" };
                server.create(agent, "researcher", "thread-1", user).await
            }
        })
        .buffered(32)
        .collect()
        .await;
    let alice: HashSet<&str> = ids.iter().step_by(50).map(String::as_str).collect();
    let everyone: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let beat = |count: u64| {
        let (server, agent, ids) = (&server, &agent, &ids);
        async move {
            let (status, report) = server
                .post("/v1/heartbeats", agent, json!({ "execution_ids": ids }))
                .await;
            let failed = report["results"]
                .as_array()
                .and_then(|results| results.iter().find(|r| r.get("ok").is_none()));
            assert_eq!(
                (status, report["accepted"].as_u64()),
                (200, Some(MAX_BATCH as u64)),
                "{count}: {failed:?}"
            );
        }
    };
    beat(1).await;

    let mut admin_ws = server.ws("", Some(&server.admin)).await;
    let mut agent_ws = server.ws("", Some(&agent)).await;
    let mut viewer_ws = server.ws("", Some(&viewer)).await;
    let mut thread_ws = server.ws("?thread_id=thread-1", Some(&agent)).await;
    let mut one_ws = server.ws(&format!("?execution_id={}", ids[0]), Some(&agent)).await;
    beat(2).await;
    // Then an event that is not a heartbeat, of an execution every stream watches.
    server.start_execution(&agent, &ids[0]).await;

    let one: HashSet<&str> = [ids[0].as_str()].into();
    latest_beats_then_state(&mut admin_ws, &everyone, 2, &ids[0]).await;
    latest_beats_then_state(&mut agent_ws, &everyone, 2, &ids[0]).await;
    latest_beats_then_state(&mut thread_ws, &everyone, 2, &ids[0]).await;
    latest_beats_then_state(&mut viewer_ws, &alice, 2, &ids[0]).await;
    latest_beats_then_state(&mut one_ws, &one, 2, &ids[0]).await;
    let metrics = server.prometheus().await;
    assert_eq!(
        common::metric_value(&metrics, "agentrack_websocket_slow_disconnects_total").unwrap_or(0),
        0
    );
}

on_both_backends!(
    a_batch_of_heartbeats_closes_no_stream_of_the_tenant,
    a_heartbeat_answers_with_a_small_acknowledgement,
    a_batch_counts_each_id_on_its_own_and_names_each_failure,
    a_bad_batch_is_refused_whole_with_a_specific_error,
    an_agent_can_heartbeat_over_its_event_stream,
    a_viewer_cannot_heartbeat_over_its_stream,
    viewers_of_different_users_each_get_only_their_own_events,
);
