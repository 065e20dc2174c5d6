//! One WebSocket event stream: replay from the store, then live, without gaps or duplicates.
//!
//! The order of the first steps is what makes resumption exact:
//!
//! 1. subscribe to the committed-event fan-out;
//! 2. read the committed watermark `W`: every event up to `W` is in the store, and every event
//!    after it will still arrive on the subscription (the writer raises the watermark before it
//!    publishes a batch);
//! 3. replay stored events in `(since, W]`;
//! 4. forward live events, skipping any at or below `W` (already replayed).
//!
//! A client that falls more than a buffer behind is not allowed to hold memory: it is closed with
//! code 1008 and a reason naming the last sequence number it was sent, so it can reconnect with
//! `since=` that number. A ping goes out every keepalive interval so proxies keep the connection.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use agentrack::{Event, EventFilter, ExecutionId};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use crate::agui::AguiMapper;
use crate::app::AppState;
use crate::auth::Scope;
use crate::store::EventQuery;

/// Which vocabulary a stream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// agentrack's own events (the original's names plus lifecycle events).
    Agentrack,
    /// AG-UI events.
    Agui,
}

/// What a client subscribed to.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The caller's scope.
    pub scope: Scope,
    /// Only this thread.
    pub thread_id: Option<String>,
    /// Only this execution.
    pub execution_id: Option<ExecutionId>,
    /// Replay stored events after this global sequence number first.
    pub since: Option<u64>,
    /// The vocabulary.
    pub protocol: Protocol,
}

/// Stored events fetched per query while replaying.
const REPLAY_PAGE: usize = 500;
/// A send that takes longer than this means the client stopped reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

struct Stream<'a> {
    sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mapper: Option<AguiMapper>,
    last_sent: u64,
    state: &'a AppState,
}

enum Sent {
    Ok,
    Gone,
}

impl Stream<'_> {
    async fn send(&mut self, message: Message) -> Sent {
        match tokio::time::timeout(SEND_TIMEOUT, self.sink.send(message)).await {
            Ok(Ok(())) => Sent::Ok,
            Ok(Err(_)) => Sent::Gone,
            Err(_) => {
                self.state.metrics.slow_disconnects.fetch_add(1, Ordering::Relaxed);
                Sent::Gone
            }
        }
    }

    /// Sends one event, as stored JSON or mapped to AG-UI.
    async fn event(&mut self, seq: u64, json: Utf8Bytes, parsed: impl FnOnce() -> Option<Arc<Event>>) -> Sent {
        let sent = match &mut self.mapper {
            None => self.send(Message::Text(json)).await,
            Some(mapper) => {
                let Some(event) = parsed() else { return Sent::Ok };
                let messages = mapper.map(&event);
                let mut result = Sent::Ok;
                for message in messages {
                    if let Sent::Gone = self.send(Message::Text(message.to_string().into())).await {
                        result = Sent::Gone;
                        break;
                    }
                }
                result
            }
        };
        if let Sent::Ok = sent {
            self.last_sent = self.last_sent.max(seq);
        }
        sent
    }

    async fn close(mut self, code: u16, reason: String) {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), self.sink.send(Message::Close(Some(frame)))).await;
    }
}

/// Runs one subscriber's stream until either side ends it.
pub async fn serve(socket: WebSocket, state: AppState, subscription: Subscription) {
    state.metrics.websockets.fetch_add(1, Ordering::Relaxed);
    run(socket, &state, subscription).await;
    state.metrics.websockets.fetch_sub(1, Ordering::Relaxed);
}

async fn run(socket: WebSocket, state: &AppState, subscription: Subscription) {
    let mut live = state.pipeline.subscribe();
    let horizon = state.pipeline.committed();
    let filter: EventFilter = subscription
        .scope
        .event_filter(subscription.thread_id.clone(), subscription.execution_id);
    let (sink, mut incoming) = socket.split();
    let mut stream = Stream {
        sink,
        mapper: (subscription.protocol == Protocol::Agui).then(AguiMapper::default),
        last_sent: subscription.since.unwrap_or(horizon),
        state,
    };

    if let Some(since) = subscription.since {
        let mut after = since;
        while after < horizon {
            let query = EventQuery {
                after,
                up_to: horizon,
                thread_id: subscription.thread_id.clone(),
                execution_id: subscription.execution_id,
                limit: REPLAY_PAGE,
                ..EventQuery::default()
            };
            let Some(query) = subscription.scope.event_query(query) else {
                break;
            };
            let events = match state.store.events(query).await {
                Ok(events) => events,
                Err(error) => {
                    tracing::error!(%error, "replaying stored events failed");
                    stream
                        .close(close_code::ERROR, "could not read stored events".into())
                        .await;
                    return;
                }
            };
            for stored in &events {
                let seq = stored.global_seq;
                let parsed = || serde_json::from_str::<Event>(&stored.json).ok().map(Arc::new);
                if let Sent::Gone = stream.event(seq, stored.json.clone().into(), parsed).await {
                    return;
                }
                after = seq;
            }
            if events.len() < REPLAY_PAGE {
                break;
            }
        }
        stream.last_sent = stream.last_sent.max(horizon);
    }

    let mut keepalive = tokio::time::interval_at(
        tokio::time::Instant::now() + state.settings.keepalive,
        state.settings.keepalive,
    );
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => {
                stream.close(close_code::AWAY, "server shutting down".into()).await;
                return;
            }
            received = live.recv() => match received {
                Ok(published) => {
                    let event = &published.event;
                    if event.global_seq <= horizon || !filter.matches(event) {
                        continue;
                    }
                    let Ok(json) = Utf8Bytes::try_from(published.json.clone()) else { continue };
                    let shared = Arc::clone(event);
                    if let Sent::Gone = stream.event(event.global_seq, json, || Some(shared)).await {
                        return;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    state.metrics.slow_disconnects.fetch_add(1, Ordering::Relaxed);
                    let reason = format!(
                        "slow consumer: fell {missed} events behind; reconnect with since={}",
                        stream.last_sent
                    );
                    stream.close(close_code::POLICY, reason).await;
                    return;
                }
                Err(RecvError::Closed) => {
                    stream.close(close_code::AWAY, "server shutting down".into()).await;
                    return;
                }
            },
            message = incoming.next() => match message {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
            _ = keepalive.tick() => {
                if let Sent::Gone = stream.send(Message::Ping(bytes::Bytes::new())).await {
                    return;
                }
            }
        }
    }
}
