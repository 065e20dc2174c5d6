//! Agents that heartbeat over their event WebSocket (the `ws-batch` scenario).
//!
//! Each agent opens one event stream and sends `{"type": "heartbeat", "execution_ids": [...]}` on
//! it; the server answers on the same stream with a `heartbeat_ack` (see [`stream_url`] for why
//! the stream carries no events). A round is timed from the send to that ack, as an agent would
//! wait for it. One message is in flight per agent, so the next ack always answers the last
//! message sent; anything else that arrives is read and dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use super::agents::{Agents, ERROR_BACKOFF, Failed, tally_batch};
use super::stats::{Live, Route, Stats};
use super::subscribers::Socket;

/// Most ids a `ws-batch` message may carry: the server reads messages of at most 64 KiB, and an
/// id takes 40 bytes in the message (`"exec_` + 32 hex digits + `",`).
pub(super) const WS_MAX_BATCH: usize = 1_500;

/// How long the goodbye close frame may take.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

/// The part of a server message that says what it is; events and acks share the stream.
#[derive(Deserialize)]
struct Kind<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a str>,
}

/// An `error` message's code.
#[derive(Deserialize)]
struct ErrorMessage {
    error: ErrorCode,
}

/// The code of an `error` message.
#[derive(Deserialize)]
struct ErrorCode {
    code: String,
}

/// How waiting for one answer ended.
enum Answer {
    /// The ack arrived and was counted (`Err`: nothing accepted or a malformed ack).
    Ack(Result<(), Failed>),
    /// The server refused the message (counted); the stream goes on.
    Refused,
    /// The stream is unusable (counted): the agent stops.
    Lost,
    /// The window closed first.
    Stopped,
}

/// The `ws://` URL of agent `name`'s stream. It watches a thread without executions, so that
/// the stream carries the acks alone and a round measures the heartbeat path, not the delivery of
/// the agent's own heartbeat events (the subscribers measure that).
pub(super) fn stream_url(events_url: &str, name: &str) -> String {
    format!("{events_url}?thread_id={name}-acks")
}

/// The heartbeat message for `ids`.
fn message(ids: &[String]) -> Utf8Bytes {
    json!({"type": "heartbeat", "execution_ids": ids}).to_string().into()
}

/// Counts a stream that ended or broke as `ws_closed_<code>`, `ws_closed` or `ws_error`.
fn lost(stats: &mut Stats, live: &Live, message: Option<Result<Message, tungstenite::Error>>) -> Answer {
    let kind = match message {
        Some(Ok(Message::Close(Some(frame)))) => format!("ws_closed_{}", u16::from(frame.code)),
        Some(Err(_)) => "ws_error".to_owned(),
        _ => "ws_closed".to_owned(),
    };
    stats.error(Some(Route::WsBatch), kind);
    Live::bump(&live.errors);
    Answer::Lost
}

/// Reads `socket` until the answer to the message sent at `sent`, skipping events.
async fn answer(
    socket: &mut Socket,
    stats: &mut Stats,
    live: &Live,
    sent: Instant,
    timeout: Duration,
    stop: &CancellationToken,
) -> Answer {
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        let message = tokio::select! {
            biased;
            () = stop.cancelled() => return Answer::Stopped,
            () = &mut deadline => {
                // A late ack would be taken for the next message's: the stream is given up.
                stats.error(Some(Route::WsBatch), "timeout");
                Live::bump(&live.errors);
                return Answer::Lost;
            }
            message = socket.next() => message,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_)) | Err(_)) | None => return lost(stats, live, message),
            Some(Ok(_)) => continue,
        };
        match serde_json::from_str::<Kind<'_>>(text.as_str()).map(|kind| kind.kind) {
            Ok(Some("heartbeat_ack")) => {
                stats.success(Route::WsBatch, sent.elapsed());
                Live::bump(&live.requests);
                return Answer::Ack(tally_batch(stats, live, text.as_bytes()));
            }
            Ok(Some("error")) => {
                let code = serde_json::from_str::<ErrorMessage>(text.as_str())
                    .map_or_else(|_| "unknown".to_owned(), |message| message.error.code);
                stats.error(Some(Route::WsBatch), format!("ws_{code}"));
                Live::bump(&live.errors);
                return Answer::Refused;
            }
            // The events of the executions' own heartbeats, and any other update.
            _ => {}
        }
    }
}

/// Reads and drops what arrives on `socket` until `until` (events must be read, or the server
/// closes a stream that falls behind). False if the stream was lost or `stop` came first.
async fn idle(
    socket: &mut Socket,
    stats: &mut Stats,
    live: &Live,
    until: impl Future<Output = ()>,
    stop: &CancellationToken,
) -> bool {
    tokio::pin!(until);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return false,
            () = &mut until => return true,
            message = socket.next() => match message {
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    lost(stats, live, message);
                    return false;
                }
                Some(Ok(_)) => {}
            },
        }
    }
}

/// An agent of the `ws-batch` scenario: heartbeats for `ids` on `socket`, back to back (or every
/// `--heartbeat`), each waiting for its ack, until `stop`.
pub(super) async fn run(
    agents: Arc<Agents>,
    mut socket: Socket,
    ids: Vec<String>,
    timeout: Duration,
    stop: CancellationToken,
) -> Stats {
    let mut stats = Stats::default();
    let live = &agents.live;
    let body = message(&ids);
    let mut ticker = agents.ticker();
    loop {
        if let Some(ticker) = ticker.as_mut()
            && !idle(&mut socket, &mut stats, live, ticker.tick().map(drop), &stop).await
        {
            break;
        }
        let sent = Instant::now();
        let sending = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            sending = socket.send(Message::Text(body.clone())) => sending,
        };
        if sending.is_err() {
            stats.error(Some(Route::WsBatch), "ws_error");
            Live::bump(&live.errors);
            break;
        }
        match answer(&mut socket, &mut stats, live, sent, timeout, &stop).await {
            Answer::Ack(Ok(())) => {}
            Answer::Ack(Err(Failed)) | Answer::Refused => {
                if !idle(&mut socket, &mut stats, live, tokio::time::sleep(ERROR_BACKOFF), &stop).await {
                    break;
                }
            }
            Answer::Lost | Answer::Stopped => break,
        }
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.close(None)).await;
    stats
}
