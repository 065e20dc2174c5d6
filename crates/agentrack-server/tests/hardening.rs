//! Attacks on the server's connections and inputs, performed against the real binary: slow and
//! idle connections, a connection flood, a slow body, a request flood, an oversized WebSocket
//! frame, a client that answers no ping, and deeply nested values. Each is refused with a
//! specific error naming the limit (or survived), the server goes on serving others, and
//! nothing stored changes.
//!
//! Timeouts are configured short; the tests wait for the outcome (a closed socket, a refusal),
//! never for a fixed time, and assert no durations.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Frame, SECOND, TestServer, eventually, metric_value};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A server with `config` as its TOML file.
async fn start(config: &str) -> (TestServer, tempfile::TempDir) {
    TestServer::start_with_config(config).await
}

fn host(server: &TestServer) -> String {
    server.url.trim_start_matches("http://").to_owned()
}

/// A client that opens a new connection for every request, so that none of its requests can
/// meet a pooled connection the server just closed as idle.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap()
}

async fn health(client: &reqwest::Client, server: &TestServer) -> u16 {
    client
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .map_or(0, |response| response.status().as_u16())
}

/// Whether the server has closed `socket`: a read ends (EOF or reset) instead of waiting.
/// Anything the server sent before closing is read past.
async fn is_closed(socket: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_millis(20), socket.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// Sends `request` on a new connection and reads the answer until the server closes it (or,
/// for a kept-alive answer, until its body is whole); returns the status and the JSON body.
async fn raw_exchange(server: &TestServer, request: &str) -> (u16, Value, String) {
    let mut socket = TcpStream::connect(host(server)).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    read_answer(&mut socket).await
}

async fn read_answer(socket: &mut TcpStream) -> (u16, Value, String) {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    let answer = tokio::time::timeout(10 * SECOND, async {
        loop {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|line| {
                        line.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .and_then(|n| n.trim().parse::<usize>().ok());
                if length.is_some_and(|length| body.len() >= length) {
                    return text;
                }
            }
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return text,
                Ok(n) => bytes.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await
    .expect("an answer within 10 s");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    (
        status,
        serde_json::from_str(body).unwrap_or(Value::Null),
        head.to_owned(),
    )
}

/// An event stream, or `None` when the handshake is refused.
async fn try_ws(server: &TestServer) -> Option<common::Ws> {
    let url = format!("{}/v1/events", server.url.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {}", server.admin).parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Some(common::Ws { socket }),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503, "only the connection limit refuses");
            None
        }
        Err(other) => panic!("unexpected error {other}"),
    }
}

async fn metric(server: &TestServer, name: &str) -> u64 {
    let client = fresh_client();
    let text = client
        .get(format!("{}/metrics", server.url))
        .bearer_auth(&server.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metric_value(&text, name).unwrap_or_else(|| panic!("no sample {name}"))
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_while_others_are_served() {
    let (server, _config) = start("[http]\nheader_read_timeout = \"1s\"\n").await;
    let mut sockets = Vec::new();
    // Idle: connected, nothing sent.
    for _ in 0..20 {
        sockets.push(TcpStream::connect(host(&server)).await.unwrap());
    }
    // Slow: a request head begun and never finished.
    for _ in 0..20 {
        let mut socket = TcpStream::connect(host(&server)).await.unwrap();
        socket
            .write_all(b"POST /v1/executions HTTP/1.1\r\nHost: agentrack\r\nContent-Type: appl")
            .await
            .unwrap();
        sockets.push(socket);
    }
    // Kept alive: one request answered, then nothing.
    for _ in 0..5 {
        let mut socket = TcpStream::connect(host(&server)).await.unwrap();
        socket
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: agentrack\r\n\r\n")
            .await
            .unwrap();
        let (status, _, _) = read_answer(&mut socket).await;
        assert_eq!(status, 200);
        sockets.push(socket);
    }
    // Slowloris proper: a header trickled a byte at a time, for as long as the server listens.
    let trickle = {
        let mut socket = TcpStream::connect(host(&server)).await.unwrap();
        tokio::spawn(async move {
            socket.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ").await.unwrap();
            let mut sent = 0usize;
            while socket.write_all(b"a").await.is_ok() {
                sent += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sent
        })
    };
    // Meanwhile everyone else is served.
    let client = fresh_client();
    for _ in 0..10 {
        assert_eq!(health(&client, &server).await, 200);
    }
    let open = Arc::new(tokio::sync::Mutex::new(sockets));
    eventually("every slow, idle and kept-alive connection is closed", || {
        let open = Arc::clone(&open);
        async move {
            let mut open = open.lock().await;
            let mut still = Vec::new();
            for mut socket in open.drain(..) {
                if !is_closed(&mut socket).await {
                    still.push(socket);
                }
            }
            *open = still;
            open.is_empty()
        }
    })
    .await;
    let trickled = tokio::time::timeout(10 * SECOND, trickle)
        .await
        .expect("the trickling connection is closed")
        .unwrap();
    assert!(trickled > 0, "the trickle got going before it was cut off");
    assert_eq!(health(&client, &server).await, 200, "still serving");
    let timeouts = metric(&server, "agentrack_http_header_timeouts_total").await;
    assert!(timeouts >= 46, "every closed connection is counted: {timeouts}");
}

#[tokio::test]
async fn the_connection_limit_holds() {
    let (server, _config) = start("[http]\nmax_connections = 8\n").await;
    let probe = "GET /healthz HTTP/1.1\r\nHost: agentrack\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(host(&server)).await.unwrap());
    }
    // Accepted in the order they came: once the eight are in, a ninth is refused.
    let (status, body, answer_head) = raw_exchange(&server, probe).await;
    assert_eq!(status, 503, "{answer_head} {body}");
    assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
    assert_eq!(body["error"]["limit"], 8, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("http.max_connections"),
        "{body}"
    );
    assert!(
        answer_head.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer_head}"
    );
    for _ in 0..5 {
        assert_eq!(raw_exchange(&server, probe).await.0, 503, "the limit holds");
    }
    // A slot freed is a slot taken.
    held.pop();
    eventually("a new connection is served once one closes", || async {
        raw_exchange(&server, probe).await.0 == 200
    })
    .await;
    drop(held);

    // An event stream keeps its connection's slot.
    let mut streams = Vec::new();
    tokio::time::timeout(10 * SECOND, async {
        while streams.len() < 8 {
            match try_ws(&server).await {
                Some(stream) => streams.push(stream),
                // The slot of a connection just closed may not be free yet.
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .expect("eight streams connect within 10 s");
    eventually("with eight streams open, a ninth connection is refused", || async {
        raw_exchange(&server, probe).await.0 == 503
    })
    .await;
    streams.pop().unwrap().close().await;
    eventually("a stream closed frees its slot", || async {
        raw_exchange(&server, probe).await.0 == 200
    })
    .await;
    drop(streams);
    eventually("every stream is gone", || async {
        raw_exchange(&server, probe).await.0 == 200 && metric(&server, "agentrack_websocket_connections").await == 0
    })
    .await;
    assert!(metric(&server, "agentrack_http_connections_refused_total").await >= 7);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_refused_with_408_and_nothing_is_stored() {
    let (server, _config) = start("[http]\nbody_read_timeout = \"300ms\"\n").await;
    let agent = server.token("agent", "acme", None).await;
    let request = format!(
        "POST /v1/executions HTTP/1.1\r\nHost: agentrack\r\nAuthorization: Bearer {agent}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"agent_name\": \"a\", "
    );
    let (status, body, head) = raw_exchange(&server, &request).await;
    assert_eq!(status, 408, "{head} {body}");
    assert_eq!(body["error"]["code"], "body_timeout", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("http.body_read_timeout"),
        "{body}"
    );
    assert_eq!(body["error"]["limit_seconds"], 0.3, "{body}");
    let (status, page) = server.get("/v1/executions", &agent).await;
    assert_eq!(status, 200);
    assert_eq!(page["executions"], json!([]), "nothing was created");
    // A whole body in time is served as ever.
    server.create(&agent, "a", "t", "u").await;
}

#[tokio::test]
async fn past_the_request_limit_a_request_waits_then_gets_503() {
    let (server, _config) =
        start("[http]\nmax_requests = 1\nqueue_timeout = \"200ms\"\nbody_read_timeout = \"60s\"\n").await;
    let agent = server.token("agent", "acme", None).await;
    // Holds the one turn: its handler waits for a body that does not come.
    let mut holder = TcpStream::connect(host(&server)).await.unwrap();
    holder
        .write_all(
            format!(
                "POST /v1/executions HTTP/1.1\r\nHost: agentrack\r\nAuthorization: Bearer {agent}\r\n\
                 Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let client = fresh_client();
    let refusal = tokio::time::timeout(10 * SECOND, async {
        loop {
            let response = client.get(format!("{}/healthz", server.url)).send().await.unwrap();
            if response.status() == 503 {
                let retry = response.headers().get("retry-after").cloned();
                break (retry, response.json::<Value>().await.unwrap());
            }
            // Served: the holder has not taken its turn yet.
            assert_eq!(response.status(), 200);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a request past the limit is refused within 10 s");
    let (retry, body) = refusal;
    assert_eq!(body["error"]["code"], "server_busy", "{body}");
    assert_eq!(body["error"]["limit"], 1, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("http.max_requests"));
    assert_eq!(retry.unwrap(), "1");
    // The holder gives up: its turn goes to the next request.
    drop(holder);
    eventually("requests are served again", || async {
        health(&client, &server).await == 200
    })
    .await;
    let (status, page) = server.get("/v1/executions", &agent).await;
    assert_eq!(status, 200);
    assert_eq!(page["executions"], json!([]), "the held request created nothing");
    assert!(metric(&server, "agentrack_http_requests_refused_total").await >= 1);
}

/// An event stream on a socket of its own, to write raw frames on.
async fn raw_ws(server: &TestServer) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let url = format!("{}/v1/events", server.url.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {}", server.admin).parse().unwrap());
    let socket = TcpStream::connect(host(server)).await.unwrap();
    tokio_tungstenite::client_async(request, socket).await.unwrap().0
}

/// The header of a masked client frame (`first` is FIN and opcode) of `length` bytes, with a
/// zero mask key so that a payload goes out as it is.
fn frame_header(first: u8, length: u64) -> Vec<u8> {
    let mut header = vec![first];
    if length < 126 {
        header.push(0x80 | u8::try_from(length).unwrap());
    } else if let Ok(short) = u16::try_from(length) {
        header.push(0xfe); // masked, a 16-bit length follows
        header.extend_from_slice(&short.to_be_bytes());
    } else {
        header.push(0xff); // masked, a 64-bit length follows
        header.extend_from_slice(&length.to_be_bytes());
    }
    header.extend_from_slice(&[0, 0, 0, 0]);
    header
}

/// The close frame the server ends `ws` with.
async fn close_of(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>) -> (u16, String) {
    let close = tokio::time::timeout(10 * SECOND, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => {}
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("a close frame")
    .expect("with a code");
    (u16::from(close.code), close.reason.to_string())
}

#[tokio::test]
async fn a_websocket_frame_over_the_limit_is_refused_from_its_header_with_1009() {
    let server = TestServer::start().await;
    // The header of one 16 MiB binary frame, and no payload: the refusal must come from the
    // header alone, with nothing buffered.
    let mut ws = raw_ws(&server).await;
    ws.get_mut()
        .write_all(&frame_header(0x82, 16 * 1024 * 1024))
        .await
        .unwrap();
    ws.get_mut().flush().await.unwrap();
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("16777216") && reason.contains("65536"), "{reason}");
    // A message over the limit in frames each within it: refused once the frames add up.
    let mut ws = raw_ws(&server).await;
    let part = vec![b'a'; 40_000];
    let mut frames = frame_header(0x01, 40_000);
    frames.extend_from_slice(&part);
    frames.extend(frame_header(0x80, 40_000));
    frames.extend_from_slice(&part);
    ws.get_mut().write_all(&frames).await.unwrap();
    ws.get_mut().flush().await.unwrap();
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("65536"), "{reason}");
    // A message within the limit still works on a new stream.
    let mut stream = server.ws("", Some(&server.admin)).await;
    futures_util::SinkExt::send(
        &mut stream.socket,
        Message::Text(
            json!({"type": "heartbeat", "execution_ids": ["nope"]})
                .to_string()
                .into(),
        ),
    )
    .await
    .unwrap();
    let Frame::Event(reply) = stream.next(10 * SECOND).await else {
        panic!("no answer");
    };
    assert_eq!(reply["type"], "heartbeat_ack", "{reply}");
}

#[tokio::test]
async fn a_websocket_client_that_answers_no_ping_is_closed() {
    let (server, _config) = start("keepalive = \"100ms\"\n[websocket]\npong_timeout = \"1s\"\n").await;
    // Never read: its pings go unanswered.
    let mut silent = server.ws("", Some(&server.admin)).await;
    // Read all along: tungstenite answers every ping.
    let responsive = server.ws("", Some(&server.admin)).await;
    let pings = Arc::new(AtomicUsize::new(0));
    let reader = {
        let pings = Arc::clone(&pings);
        let mut socket = responsive.socket;
        tokio::spawn(async move {
            loop {
                match socket.next().await {
                    Some(Ok(Message::Ping(_))) => {
                        pings.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Ok(Message::Close(frame))) => return format!("closed: {frame:?}"),
                    None | Some(Err(_)) => return "ended".to_owned(),
                    Some(Ok(_)) => {}
                }
            }
        })
    };
    eventually("the silent stream is closed", || async {
        metric(&server, "agentrack_websocket_pong_timeouts_total").await == 1
    })
    .await;
    match silent.next(10 * SECOND).await {
        Frame::Closed(Some((code, reason))) => {
            assert_eq!(code, 1008, "{reason}");
            assert!(reason.contains("websocket.pong_timeout"), "{reason}");
        }
        Frame::Closed(None) => {}
        Frame::Event(event) => panic!("an event instead of the close: {event}"),
        Frame::Timeout => panic!("the silent stream is still open"),
    }
    // The responsive one lives on through many pong deadlines.
    let seen = pings.load(Ordering::Relaxed);
    eventually("the responsive stream answers ten more pings", || async {
        pings.load(Ordering::Relaxed) >= seen + 10 || reader.is_finished()
    })
    .await;
    assert!(!reader.is_finished(), "{}", reader.await.unwrap());
    assert_eq!(metric(&server, "agentrack_websocket_pong_timeouts_total").await, 1);
    assert_eq!(metric(&server, "agentrack_websocket_connections").await, 1);
}

fn nested(levels: usize) -> Value {
    let mut value = json!("bottom");
    for _ in 0..levels {
        value = json!({ "deeper": value });
    }
    value
}

#[tokio::test]
async fn a_value_nested_too_deep_is_refused_with_422_and_nothing_changes() {
    let server = TestServer::start().await;
    let agent = server.token("agent", "acme", None).await;
    let id = server.create_started(&agent, "a", "t", "u").await;
    let phase = format!("/v1/executions/{id}/phase");
    for levels in [33, 40, 125] {
        let (status, body) = server
            .post(
                &phase,
                &agent,
                json!({"phase": "websocket_setup", "metadata": nested(levels)}),
            )
            .await;
        assert_eq!(status, 422, "{levels} levels: {body}");
        assert_eq!(body["error"]["field"], "metadata", "{body}");
        assert_eq!(body["error"]["limit"], 32, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("{levels} levels")),
            "{body}"
        );
    }
    let (status, body) = server
        .post(
            &format!("/v1/executions/{id}/state"),
            &agent,
            json!({"state": "completed", "result": [nested(40)]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "result", "{body}");
    let (status, record) = server.get(&format!("/v1/executions/{id}"), &agent).await;
    assert_eq!(status, 200);
    assert_eq!(
        record["current_phase"], "created",
        "no refused change was applied: {record}"
    );
    assert_eq!(record["state"], "starting", "{record}");
    // At the limit it is taken, stored, and lists as ever.
    server
        .ok(
            &phase,
            &agent,
            json!({"phase": "websocket_setup", "metadata": nested(32)}),
        )
        .await;
    let (status, page) = server.get("/v1/executions", &agent).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["executions"].as_array().unwrap().len(), 1, "{page}");
}

#[tokio::test]
async fn a_stored_row_that_cannot_be_decoded_is_skipped_by_lists() {
    let server = TestServer::start().await;
    let agent = server.token("agent", "acme", None).await;
    let good = server.create(&agent, "a", "t", "u").await;
    let bad = server.create(&agent, "a", "t", "u").await;
    // What an older version, a damaged disk or a value nested past the decoder leaves behind.
    let db = rusqlite::Connection::open(server.data().join("agentrack.db")).unwrap();
    db.busy_timeout(10 * SECOND).unwrap();
    let changed = db
        .execute(
            "UPDATE executions SET record = '{\"execution_id\": [[[' WHERE execution_id = ?1",
            [&bad],
        )
        .unwrap();
    assert_eq!(changed, 1);
    for _ in 0..3 {
        let (status, page) = server.get("/v1/executions", &agent).await;
        assert_eq!(status, 200, "{page}");
        let ids: Vec<&str> = page["executions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|record| record["execution_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [good.as_str()], "the unreadable row is skipped, the rest listed");
    }
    // A page of one whose only row is unreadable still leads on to the next.
    let (status, page) = server.get("/v1/executions?limit=1", &agent).await;
    assert_eq!(status, 200, "{page}");
    if page["executions"].as_array().unwrap().is_empty() {
        assert!(page["next_cursor"].is_string(), "{page}");
    }
    assert!(metric(&server, "agentrack_store_unreadable_rows_total").await >= 3);
    let logged = server.log().matches("skipping an unreadable stored execution").count();
    assert_eq!(logged, 1, "logged once");
}

/// The phases of a loop that never ends: `thinking` ↔ `llm_interaction`.
fn loop_phase(step: i64) -> &'static str {
    if step % 2 == 0 { "thinking" } else { "llm_interaction" }
}

/// The stored execution row's record size, its `phase_count`, and its history rows.
fn stored_row(server: &TestServer, id: &str) -> (i64, i64, i64) {
    let db = rusqlite::Connection::open(server.data().join("agentrack.db")).unwrap();
    db.busy_timeout(10 * SECOND).unwrap();
    let (size, count): (i64, i64) = db
        .query_row(
            "SELECT length(record), phase_count FROM executions WHERE execution_id = ?1",
            [id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    let phases: i64 = db
        .query_row("SELECT COUNT(*) FROM phases WHERE execution_id = ?1", [id], |row| {
            row.get(0)
        })
        .unwrap();
    (size, count, phases)
}

/// `after` is `before` but for `seq`, which numbers on past a headroom after a restart (a number
/// a subscriber saw is never reused); the differing fields are named, histories by length.
fn same_but_seq(before: &Value, after: &Value) {
    let differing: Vec<String> = before
        .as_object()
        .unwrap()
        .iter()
        .filter(|(key, value)| key.as_str() != "seq" && after.get(key.as_str()) != Some(value))
        .map(|(key, value)| {
            let short = |v: &Value| match v.as_array() {
                Some(items) if key == "phase_history" => format!("{} changes", items.len()),
                _ => v.to_string(),
            };
            format!("{key}: {} before, {} after", short(value), short(&after[key.as_str()]))
        })
        .collect();
    assert!(
        differing.is_empty(),
        "the record is the same after the crash: {differing:?}"
    );
}

#[tokio::test]
async fn oversized_metadata_and_results_are_refused_with_413_naming_the_limit_and_nothing_changes() {
    let server = TestServer::start().await;
    let agent = server.token("agent", "acme", None).await;
    let id = server.create_started(&agent, "a", "t", "u").await;
    let phase = format!("/v1/executions/{id}/phase");
    // 1 MiB of metadata: over the body limit itself.
    let mib = "x".repeat(1024 * 1024);
    let (status, body) = server
        .post(
            &phase,
            &agent,
            json!({"phase": "websocket_setup", "metadata": {"blob": mib}}),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    assert_eq!(body["error"]["limit_bytes"], 1024 * 1024, "{body}");
    // Within the body limit, over the metadata limit (64 KiB by default).
    let big = "x".repeat(900 * 1024);
    for (path, request) in [
        (
            phase.clone(),
            json!({"phase": "websocket_setup", "metadata": {"blob": big}}),
        ),
        (
            "/v1/executions".to_owned(),
            json!({"agent_name": "a", "thread_id": "t", "user_id": "u", "metadata": {"blob": big}}),
        ),
    ] {
        let (status, body) = server.post(&path, &agent, request).await;
        assert_eq!(status, 413, "{path}: {body}");
        let error = &body["error"];
        assert_eq!(error["code"], "field_too_large", "{body}");
        assert_eq!(error["field"], "metadata", "{body}");
        assert_eq!(error["limit_bytes"], 64 * 1024, "{body}");
        assert_eq!(error["config_key"], "records.max_metadata_bytes", "{body}");
        assert_eq!(error["size_bytes"], 900 * 1024 + r#"{"blob":""}"#.len(), "{body}");
        assert!(error["message"].as_str().unwrap().contains("65536"), "{body}");
    }
    let (status, body) = server
        .post(
            &format!("/v1/executions/{id}/state"),
            &agent,
            json!({"state": "completed", "result": "y".repeat(300 * 1024)}),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["field"], "result", "{body}");
    assert_eq!(body["error"]["config_key"], "records.max_result_bytes", "{body}");
    let (_, record) = server.get(&format!("/v1/executions/{id}"), &agent).await;
    assert_eq!(record["current_phase"], "created", "{record}");
    assert_eq!(record["state"], "starting", "{record}");
    let (_, page) = server.get("/v1/executions", &agent).await;
    assert_eq!(
        page["executions"].as_array().unwrap().len(),
        1,
        "no execution was created: {page}"
    );
}

#[tokio::test]
async fn a_phase_loop_keeps_the_history_and_the_row_bounded_and_survives_a_crash() {
    const CAP: i64 = 20;
    let (mut server, _dir) = start(&format!(
        "heartbeat_flush = \"50ms\"\n[records]\nmax_phase_history = {CAP}\n"
    ))
    .await;
    let agent = server.token("agent", "acme", None).await;
    let (status, created) = server
        .post(
            "/v1/executions",
            &agent,
            json!({"agent_name": "looper", "thread_id": "t", "user_id": "u", "timeout_seconds": 31_536_000}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["execution_id"].as_str().unwrap().to_owned();
    server.start_execution(&agent, &id).await;
    let phase = format!("/v1/executions/{id}/phase");
    for first in ["websocket_setup", "context_validation", "starting"] {
        server.ok(&phase, &agent, json!({"phase": first})).await;
    }
    // 32 KiB of metadata with every change: within the metadata limit, so only the cap bounds it.
    let blob = "m".repeat(32 * 1024);
    let mut sizes = Vec::new();
    let loops: i64 = 150;
    for step in 0..loops {
        let body = server
            .ok(
                &phase,
                &agent,
                json!({"phase": loop_phase(step), "metadata": {"step": step, "blob": blob}}),
            )
            .await;
        assert!(body["phase_history"].as_array().unwrap().len() <= 20, "step {step}");
        if step % 50 == 49 {
            let changes = 3 + step + 1;
            eventually("the row catches up with the log", || async {
                stored_row(&server, &id).1 == changes
            })
            .await;
            let (size, _, phases) = stored_row(&server, &id);
            assert_eq!(phases, CAP, "the stored history is capped too");
            sizes.push(size);
        }
    }
    let total = 3 + loops;
    let (_, record) = server.get(&format!("/v1/executions/{id}"), &agent).await;
    let history = record["phase_history"].as_array().unwrap();
    assert_eq!(history.len(), 20);
    assert_eq!(record["phase_history_dropped"], total - CAP);
    assert_eq!(history[19]["metadata"]["step"], loops - 1, "the latest kept, in order");
    // The row holds no history: its size does not grow with the changes.
    assert!(sizes.iter().all(|size| *size < 4096), "rows stay small: {sizes:?}");
    let spread = sizes.iter().max().unwrap() - sizes.iter().min().unwrap();
    assert!(spread < 16, "only counters' digits differ: {sizes:?}");
    // Every change is still in the event log.
    let db = rusqlite::Connection::open(server.data().join("agentrack.db")).unwrap();
    let logged: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM events WHERE execution_id = ?1 AND json LIKE '%\"to_phase\"%'",
            [&id],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(logged, total, "every transition is in the log");
    drop(db);
    // A few more, acknowledged (durable) but with the row behind, then a crash.
    for step in loops..loops + 5 {
        server
            .ok(
                &phase,
                &agent,
                json!({"phase": loop_phase(step), "metadata": {"step": step}}),
            )
            .await;
    }
    let (_, before) = server.get(&format!("/v1/executions/{id}"), &agent).await;
    server.kill();
    server.restart();
    let (status, after) = server.get(&format!("/v1/executions/{id}"), &agent).await;
    assert_eq!(status, 200, "{after}");
    same_but_seq(&before, &after);
    assert!(after["seq"].as_u64() >= before["seq"].as_u64());
    assert_eq!(after["phase_history"].as_array().unwrap().len(), 20);
    assert_eq!(after["phase_history_dropped"], total + 5 - CAP);
}
