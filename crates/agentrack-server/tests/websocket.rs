//! Event-stream behaviour beyond ordering: slow consumers, snapshots, keepalive.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::time::Instant;

use common::{Backend, Frame, SECOND, TestServer, Ws};
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn config(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("agentrack.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn metric(text: &str, name: &str) -> u64 {
    common::metric_value(text, name).unwrap_or(0)
}

async fn a_client_that_stops_reading_is_closed_with_the_sequence_to_resume_from(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "subscriber_buffer = 8\n");
    let server = TestServer::start_on(backend, &["--config", &config]).await;
    let agent = server.token("agent", "t1", None).await;

    // A client with a tiny receive window that reads nothing for now.
    let addr = server.url.strip_prefix("http://").unwrap().parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let mut request = format!("ws://{addr}/v1/events").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {agent}").parse().unwrap());
    let (socket, _) = tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
        .await
        .unwrap();
    let mut slow = Ws { socket };

    // Big events (just under the 64 KiB metadata limit), until the server gives up on the client.
    let blob = "x".repeat(63 * 1024);
    let started = Instant::now();
    loop {
        for _ in 0..5 {
            server
                .ok(
                    "/v1/executions",
                    &agent,
                    json!({"agent_name": "a", "thread_id": "t", "user_id": "u", "metadata": {"blob": blob}}),
                )
                .await;
        }
        let (_, text) = server.request("GET", "/metrics", Some(&server.admin), None).await;
        if metric(text.as_str().unwrap(), "agentrack_websocket_slow_disconnects_total") > 0 {
            break;
        }
        assert!(
            started.elapsed() < 20 * SECOND,
            "the slow client was never disconnected"
        );
    }

    // Reading now: everything sent arrives, then a close frame saying where to resume.
    let mut last = None;
    let mut received = Vec::new();
    let (code, reason) = loop {
        match slow.next(5 * SECOND).await {
            Frame::Event(event) => {
                received.push((event["execution_id"].clone(), event["seq"].clone()));
                last = Some(event);
            }
            Frame::Closed(Some(frame)) => break frame,
            Frame::Closed(None) => panic!("dropped without a close frame"),
            Frame::Timeout => panic!("neither events nor a close frame"),
        }
    };
    assert_eq!(code, 1008);
    assert!(reason.starts_with("slow consumer"), "{reason}");
    let last = last.unwrap();
    // The reason names the cursor of the last event the client got, when it fits a close frame.
    let since = if let Some((_, since)) = reason.split_once("since=") {
        assert_eq!(since, last["cursor"], "{reason}");
        since.to_owned()
    } else {
        assert!(reason.ends_with("the cursor of the last event"), "{reason}");
        last["cursor"].as_str().unwrap().to_owned()
    };

    // Resuming from there loses nothing and repeats nothing: exactly the events the client did
    // not get, of all those the server has.
    let mut resumed = server.ws(&format!("?since={since}"), Some(&agent)).await;
    let after = resumed.drain(SECOND).await;
    let mut all = server.ws("?since=0", Some(&agent)).await;
    let everything = all.drain(SECOND).await;
    let key = |e: &serde_json::Value| (e["execution_id"].to_string(), e["seq"].to_string());
    let received: Vec<(String, String)> = received
        .iter()
        .map(|(id, seq)| (id.to_string(), seq.to_string()))
        .collect();
    let mut expected: Vec<_> = everything.iter().map(key).filter(|k| !received.contains(k)).collect();
    let mut got: Vec<_> = after.iter().map(key).collect();
    expected.sort();
    got.sort();
    assert!(!expected.is_empty(), "events were left unsent");
    assert_eq!(got, expected);
}

async fn a_snapshot_of_current_state_can_start_the_stream(backend: Backend) {
    let server = TestServer::start_on(backend, &[]).await;
    let agent = server.token("agent", "t1", None).await;
    let id = server.create_started(&agent, "researcher", "thread-1", "alice").await;
    let mut stream = server
        .ws(&format!("?snapshot=true&execution_id={id}"), Some(&agent))
        .await;
    let first = stream.until(5 * SECOND, |_| true).await.remove(0);
    assert_eq!(first["type"], "snapshot");
    assert_eq!(first["executions"][0]["execution_id"], id.as_str());
    assert_eq!(first["executions"][0]["state"], "starting");
    server.heartbeat(&agent, &id).await;
    let next = stream.until(5 * SECOND, |_| true).await.remove(0);
    assert_eq!(next["type"], "state_changed");
    assert!(next["global_seq"].as_u64().unwrap() > first["global_seq"].as_u64().unwrap());

    let mut agui = server
        .ws("?snapshot=true&protocol=agui&thread_id=thread-1", Some(&agent))
        .await;
    let first = agui.until(5 * SECOND, |_| true).await.remove(0);
    assert_eq!(first["type"], "STATE_SNAPSHOT");
    assert_eq!(first["snapshot"]["executions"][0]["execution_id"], id.as_str());
}

async fn idle_streams_are_kept_alive_with_pings(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "keepalive = \"100ms\"\n");
    let server = TestServer::start_on(backend, &["--config", &config]).await;
    let mut stream = server.ws("", Some(&server.admin)).await;
    // Not just once: the pings go on while the stream stays idle.
    for n in 1..=2 {
        let ping = tokio::time::timeout(2 * SECOND, async {
            loop {
                if let Some(Ok(Message::Ping(_))) = stream.socket.next().await {
                    return;
                }
            }
        })
        .await;
        assert!(ping.is_ok(), "no ping {n} within 2 s");
    }
}

on_both_backends!(
    a_client_that_stops_reading_is_closed_with_the_sequence_to_resume_from,
    a_snapshot_of_current_state_can_start_the_stream,
    idle_streams_are_kept_alive_with_pings,
);
