//! WebSocket subscribers: the browser side of the load.
//!
//! Each subscriber holds a viewer token of one user, so the server has to pick that user's
//! events out of the stream for it, as it would for a real browser. The delivery lag of an event
//! is the time it is received minus its `timestamp` — the tracker's wall clock when the change
//! happened — so it covers the group commit, the fan-out and the socket. Both clocks are this
//! machine's when the server is local; against a remote server the figure includes the clock
//! offset between the two machines.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::stats::{Live, Stats};

/// A connected event stream.
pub(super) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a handshake may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the goodbye close frame may take.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

/// The fields of an event the subscriber looks at; the rest is skipped by the parser.
#[derive(Deserialize)]
struct Incoming {
    timestamp: Option<DateTime<Utc>>,
    user_id: Option<String>,
}

/// The `ws://` URL of the event stream of the server at `base` (`http://...`).
pub(super) fn events_url(base: &str) -> anyhow::Result<String> {
    let base = base.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("http://") {
        Ok(format!("ws://{rest}/v1/events"))
    } else if let Some(rest) = base.strip_prefix("https://") {
        Ok(format!("wss://{rest}/v1/events"))
    } else {
        anyhow::bail!("the URL must start with http:// or https://, not {base:?}")
    }
}

/// Opens one event stream with `token`; on failure, the report's name for what went wrong.
pub(super) async fn connect(url: &str, token: &str) -> Result<Socket, String> {
    let mut request = url.into_client_request().map_err(|_| "ws_bad_url".to_owned())?;
    let authorization = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| "ws_bad_token".to_owned())?;
    request.headers_mut().insert("authorization", authorization);
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(request)).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(tungstenite::Error::Http(response))) => Err(format!("ws_handshake_{}", response.status().as_u16())),
        Ok(Err(tungstenite::Error::Io(error))) => Err(format!("ws_connect_{:?}", error.kind()).to_lowercase()),
        Ok(Err(_)) => Err("ws_connect".to_owned()),
        Err(_) => Err("ws_connect_timeout".to_owned()),
    }
}

/// Reads `socket` until `stop`, recording the lag of every event received while
/// `live.recording` is set. `user` is the user the token belongs to: an event of anyone else is
/// counted as an isolation failure.
pub(super) async fn run(mut socket: Socket, user: String, live: Arc<Live>, stop: CancellationToken) -> Stats {
    let mut stats = Stats::default();
    Live::bump(&live.subscribers);
    loop {
        let message = tokio::select! {
            biased;
            () = stop.cancelled() => {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.close(None)).await;
                break;
            }
            message = socket.next() => message,
        };
        match message {
            Some(Ok(Message::Text(text))) => {
                let received = Utc::now();
                if !live.recording.load(Ordering::Relaxed) {
                    continue;
                }
                let Ok(event) = serde_json::from_str::<Incoming>(text.as_str()) else {
                    stats.error(None, "ws_bad_message");
                    Live::bump(&live.errors);
                    continue;
                };
                // Snapshots and other control messages carry no timestamp.
                let Some(timestamp) = event.timestamp else { continue };
                if event.user_id.as_deref().is_some_and(|owner| owner != user) {
                    stats.foreign_events += 1;
                }
                let lag = (received - timestamp).to_std().unwrap_or(Duration::ZERO);
                stats.event(lag);
                Live::bump(&live.events);
            }
            Some(Ok(Message::Close(frame))) => {
                let kind = match frame {
                    Some(frame) => format!("ws_closed_{}", u16::from(frame.code)),
                    None => "ws_closed".to_owned(),
                };
                stats.error(None, kind);
                Live::bump(&live.errors);
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) => {
                stats.error(None, "ws_error");
                Live::bump(&live.errors);
                break;
            }
            None => {
                stats.error(None, "ws_closed");
                Live::bump(&live.errors);
                break;
            }
        }
    }
    live.subscribers.fetch_sub(1, Ordering::Relaxed);
    stats
}
