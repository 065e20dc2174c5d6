//! One WebSocket event stream: replay from the store, then live, without gaps or duplicates.
//!
//! The order of the first steps is what makes resumption exact:
//!
//! 1. subscribe to the committed-event fan-out (a viewer to its user's channel, an agent to its
//!    tenant's, see [`crate::hub`]);
//! 2. read the hub's positions `W` (per shard, the last event published): every event up to `W`
//!    is in the store (published only once committed), and every event after it will still
//!    arrive on the subscription;
//! 3. replay stored events in `(since, W]`, shard by shard;
//! 4. forward live events, skipping any at or below `W` (already replayed).
//!
//! Every event the stream sends carries a `cursor`: where the subscriber stands after it, in
//! every shard (see [`crate::cursor`]). `since=<cursor>` resumes there, on any node.
//!
//! Each connection has two tasks: this one picks and maps events, and a writer owns the socket.
//! Between them sits a bounded queue. A client that does not read fills its queue; it is then
//! closed with code 1008 and a reason naming the cursor of the last event it was actually sent,
//! so it can reconnect with `since=` that cursor — memory never grows without bound. Heartbeats
//! never fill the queue: the picker takes them from the hub (coalesced, see [`crate::hub`]) only
//! while the queue is less than half full, and otherwise waits for the writer to make room, so a
//! burst of them leaves the other half to events of other kinds, and a client is closed as slow
//! only for those. A ping goes
//! out every keepalive interval so proxies keep the connection open, and a client that answers
//! none for `websocket.pong_timeout` is closed (1008). A frame or message over its limit closes
//! the stream with 1009, refused from the frame's header. An agent may also send
//! heartbeats over the stream: `{"type": "heartbeat", "execution_ids": [...]}`, answered with a
//! `heartbeat_ack` like `POST /v1/heartbeats`.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agentrack::{Event, EventFilter, ExecutionId, ExecutionRecord};
use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::agui::AguiMapper;
use crate::api::body::{JsonBody, describe};
use crate::api::heartbeats;
use crate::app::AppState;
use crate::auth::Scope;
use crate::cursor::Positions;
use crate::hub::RecvError;
use crate::serialized_event::SerializedEvent;
use crate::store::{EventQuery, LogRange, ShardId};

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
    /// Replay stored events after this position first.
    pub since: Option<Positions>,
    /// The vocabulary.
    pub protocol: Protocol,
    /// Start with a snapshot of the matching executions' current state.
    pub snapshot: bool,
}

/// Stored events fetched per query while replaying.
const REPLAY_PAGE: usize = 500;
/// A send that takes longer than this means the client stopped reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest reason a close frame may carry (RFC 6455: 125 bytes of payload, 2 of them the code).
const MAX_CLOSE_REASON: usize = 123;

/// How long a close frame may take to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// One queued message and, for an event, the cursor after it.
struct Outgoing {
    message: Message,
    cursor: Option<String>,
}

/// Heartbeats wait (coalesced, see [`crate::hub`]) while the queue is at least half full, so
/// that a burst of them never fills it: the other half is the room other events have before
/// the client counts as slow.
fn room_for_heartbeats(free: usize, capacity: usize) -> bool {
    free * 2 > capacity
}

/// How the writer tells the picker that the queue has room for heartbeats again.
#[derive(Default)]
struct Room {
    /// Set by the picker while it holds heartbeats back.
    wanted: AtomicBool,
    made: Notify,
}

/// The writer task: owns the socket, sends what is queued, and closes when told.
async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut queue: mpsc::Receiver<Outgoing>,
    mut close: oneshot::Receiver<(u16, String)>,
    sent: Arc<Mutex<String>>,
    room: Arc<Room>,
) {
    let close_with = |frame: (u16, String)| {
        Message::Close(Some(CloseFrame {
            code: frame.0,
            reason: frame.1.into(),
        }))
    };
    loop {
        let next = tokio::select! {
            biased;
            frame = &mut close => {
                if let Ok(frame) = frame {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(close_with(frame))).await;
                }
                return;
            }
            next = queue.recv() => next,
        };
        let Some(Outgoing { message, cursor }) = next else {
            return;
        };
        // SeqCst with the picker's store-then-check: either it sees this room, or this sees it
        // waiting.
        if room.wanted.load(Ordering::SeqCst)
            && room_for_heartbeats(queue.max_capacity() - queue.len(), queue.max_capacity())
        {
            room.wanted.store(false, Ordering::SeqCst);
            room.made.notify_one();
        }
        // Once fed, the message is whole in the socket's buffer and goes out before anything
        // sent later, a close frame included: it counts as sent.
        match tokio::time::timeout(SEND_TIMEOUT, sink.feed(message)).await {
            Ok(Ok(())) => {
                if let Some(cursor) = cursor {
                    *sent.lock() = cursor;
                }
            }
            _ => return,
        }
        tokio::select! {
            biased;
            frame = &mut close => {
                if let Ok(frame) = frame {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(close_with(frame))).await;
                }
                return;
            }
            result = tokio::time::timeout(SEND_TIMEOUT, sink.flush()) => {
                if !matches!(result, Ok(Ok(()))) {
                    return;
                }
            }
        }
    }
}

enum Push {
    Queued,
    /// The queue is full: the client is not keeping up.
    Full,
    /// The writer is gone (the client left).
    Gone,
}

/// The event-picking side of one connection.
struct Stream {
    queue: mpsc::Sender<Outgoing>,
    close: Option<oneshot::Sender<(u16, String)>>,
    /// The cursor after the last event the writer sent.
    sent: Arc<Mutex<String>>,
    mapper: Option<AguiMapper>,
    /// Where the subscriber stands: moved by every event queued for it.
    positions: Positions,
    /// The store's shard count, for writing cursors.
    shards: u16,
    room: Arc<Room>,
}

impl Stream {
    /// Whether heartbeats may be queued now; when not, asks the writer to say when.
    fn room_for_heartbeats(&self) -> bool {
        // AG-UI has no heartbeat messages: they take no room.
        if self.mapper.is_some() {
            return true;
        }
        let room = || room_for_heartbeats(self.queue.capacity(), self.queue.max_capacity());
        if room() {
            return true;
        }
        self.room.wanted.store(true, Ordering::SeqCst);
        room()
    }

    /// Queues without waiting (live events: a full queue means a slow client).
    fn push(&self, message: Message, cursor: Option<String>) -> Push {
        match self.queue.try_send(Outgoing { message, cursor }) {
            Ok(()) => Push::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Push::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Push::Gone,
        }
    }

    /// Queues, waiting for room (replay: the store paces itself to the client).
    async fn push_wait(&self, message: Message, cursor: Option<String>) -> Push {
        match self.queue.send(Outgoing { message, cursor }).await {
            Ok(()) => Push::Queued,
            Err(_) => Push::Gone,
        }
    }

    /// Moves the subscriber past an event of `shard`; returns the cursor after it.
    fn pass(&mut self, shard: ShardId, seq: u64) -> String {
        self.positions.advance(shard, seq);
        self.positions.encode(self.shards)
    }

    /// The messages for one event: its stored JSON with its `cursor`, or its AG-UI mapping.
    fn messages(&mut self, json: &str, cursor: &str, event: impl FnOnce() -> Option<Arc<Event>>) -> Vec<Message> {
        match &mut self.mapper {
            None => vec![Message::Text(with_cursor(json, cursor).into())],
            Some(mapper) => match event() {
                Some(event) => mapper
                    .map(&event)
                    .into_iter()
                    .map(|message| Message::Text(message.to_string().into()))
                    .collect(),
                None => Vec::new(),
            },
        }
    }

    fn close(&mut self, code: u16, reason: String) {
        if let Some(close) = self.close.take() {
            let _ = close.send((code, reason));
        }
    }

    /// Queues a replayed event or an answer, waiting for room; `Break` once the client left.
    async fn queue_wait(&self, message: Message, cursor: Option<String>) -> ControlFlow<()> {
        match self.push_wait(message, cursor).await {
            Push::Gone => ControlFlow::Break(()),
            Push::Queued | Push::Full => ControlFlow::Continue(()),
        }
    }

    /// Queues a live message without waiting; `Break` once the client left, or fell so far
    /// behind that the queue is full (the stream is then closed as a slow consumer).
    fn queue_live(&mut self, state: &AppState, message: Message, cursor: Option<String>) -> ControlFlow<()> {
        match self.push(message, cursor) {
            Push::Queued => ControlFlow::Continue(()),
            Push::Full => {
                self.close_slow(state, "too many events waiting to be sent");
                ControlFlow::Break(())
            }
            Push::Gone => ControlFlow::Break(()),
        }
    }

    /// Closes a client that fell `behind`, with the sequence number it can resume from.
    fn close_slow(&mut self, state: &AppState, behind: &str) {
        state.metrics.slow_disconnects.fetch_add(1, Ordering::Relaxed);
        let last = self.sent.lock().clone();
        // A close frame's reason holds at most 123 bytes; a long cursor is in every event sent.
        let mut reason = format!("slow consumer: {behind}; reconnect with since={last}");
        if reason.len() > MAX_CLOSE_REASON {
            reason = format!("slow consumer: {behind}; reconnect with the cursor of the last event");
        }
        tracing::info!(%reason, "closing a slow event stream");
        self.close(close_code::POLICY, reason);
    }
}

/// Steps 1 and 2 of the module documentation, taken before the handshake is answered: once a
/// client sees the upgrade go through, every event published after it reaches the stream.
pub struct Subscribed {
    live: crate::hub::Receiver,
    horizon: Positions,
}

/// Subscribes `subscription` to the fan-out and reads the horizon.
pub fn subscribe(state: &AppState, subscription: &Subscription) -> Subscribed {
    let filter = subscription
        .scope
        .event_filter(subscription.thread_id.clone(), subscription.execution_id);
    let live = state.hub.subscribe(filter.tenant.as_deref(), filter.user_id.as_deref());
    Subscribed {
        live,
        horizon: state.hub.positions(),
    }
}

/// Runs one subscriber's stream until either side ends it.
pub async fn serve(socket: WebSocket, state: AppState, subscription: Subscription, subscribed: Subscribed) {
    state.metrics.websockets.fetch_add(1, Ordering::Relaxed);
    let buffer = state.settings.subscriber_queue.max(1);
    let (sink, incoming) = socket.split();
    let (queue, queued) = mpsc::channel(buffer);
    let (close, closing) = oneshot::channel();
    let shards = state.shards.count();
    let positions = subscription.since.clone().unwrap_or_default();
    let sent = Arc::new(Mutex::new(positions.encode(shards)));
    let room = Arc::new(Room::default());
    let writer = tokio::spawn(write(sink, queued, closing, Arc::clone(&sent), Arc::clone(&room)));
    let stream = Stream {
        queue,
        close: Some(close),
        sent,
        mapper: (subscription.protocol == Protocol::Agui).then(AguiMapper::default),
        positions,
        shards,
        room,
    };
    run(stream, incoming, &state, subscription, subscribed).await;
    let _ = writer.await;
    state.metrics.websockets.fetch_sub(1, Ordering::Relaxed);
}

/// What a snapshot shows: at most `quotas.snapshot_executions` records, newest first, and
/// when there are more, the id to page the rest from.
struct Snapshot {
    executions: Vec<ExecutionRecord>,
    /// `GET /v1/executions?cursor=` this (with the query of [`next_page`]) lists the rest.
    next_cursor: Option<ExecutionId>,
}

/// The records a snapshot shows, of the shards this node serves: the one execution, the
/// thread's, or the alive ones in scope — newest first, at most `limit`. Only the ids of the
/// matching records are gathered first, so a snapshot never copies more than `limit` records.
fn snapshot_records(state: &AppState, subscription: &Subscription, limit: usize) -> Snapshot {
    let trackers = state.shards.trackers();
    let wanted = |record: &ExecutionRecord| {
        subscription.scope.sees(record)
            && subscription
                .thread_id
                .as_ref()
                .is_none_or(|thread| *thread == record.thread_id)
    };
    let mut ids: Vec<ExecutionId> = match (&subscription.execution_id, &subscription.thread_id) {
        (Some(id), _) => state
            .shards
            .get(*id)
            .filter(wanted)
            .map(|r| r.execution_id)
            .into_iter()
            .collect(),
        (None, Some(thread)) => trackers
            .iter()
            .flat_map(|tracker| tracker.by_thread(thread))
            .filter(wanted)
            .map(|record| record.execution_id)
            .collect(),
        // A viewer's own executions through the user index, rather than every alive one.
        (None, None) => {
            if let Some(user_id) = subscription.scope.event_filter(None, None).user_id {
                state
                    .shards
                    .by_user(&user_id)
                    .into_iter()
                    .filter(|record| record.is_alive() && wanted(record))
                    .map(|record| record.execution_id)
                    .collect()
            } else {
                let mut ids = Vec::new();
                for tracker in &trackers {
                    tracker.visit(|record| {
                        if record.is_alive() && wanted(record) {
                            ids.push(record.execution_id);
                        }
                    });
                }
                ids
            }
        }
    };
    ids.sort_unstable_by(|a, b| b.cmp(a));
    let next_cursor = if ids.len() > limit {
        ids.get(limit.saturating_sub(1)).copied()
    } else {
        None
    };
    ids.truncate(limit);
    Snapshot {
        executions: ids.into_iter().filter_map(|id| state.shards.get(id)).collect(),
        next_cursor,
    }
}

/// Where a truncated snapshot's rest is listed: `GET /v1/executions` with this query (the
/// list's own paging goes on from there).
fn next_page(subscription: &Subscription, cursor: ExecutionId) -> serde_json::Value {
    let mut query = serde_json::Map::new();
    if let Some(thread) = &subscription.thread_id {
        query.insert("thread_id".into(), thread.clone().into());
    } else {
        query.insert("active".into(), "true".into());
    }
    query.insert("cursor".into(), cursor.to_string().into());
    json!({"path": "/v1/executions", "query": query})
}

/// Runs one connection through the steps of the module documentation.
async fn run(
    mut stream: Stream,
    incoming: futures_util::stream::SplitStream<WebSocket>,
    state: &AppState,
    subscription: Subscription,
    Subscribed { live, horizon }: Subscribed,
) {
    let filter: EventFilter = subscription
        .scope
        .event_filter(subscription.thread_id.clone(), subscription.execution_id);
    if replay(&mut stream, state, &subscription, &horizon).await.is_break() {
        return;
    }
    // Live events at or below these were replayed (or, past the horizon, already seen).
    for (shard, seq) in horizon.iter() {
        stream.positions.advance(shard, seq);
    }
    let skip_through = stream.positions.clone();
    let live = Live {
        events: live,
        filter,
        skip_through,
    };
    forward_live(stream, incoming, live, state, &subscription.scope).await;
}

/// What comes before live events: the snapshot if asked for, then the stored events in
/// `(since, horizon]`. `Break` when the stream is over.
async fn replay(
    stream: &mut Stream,
    state: &AppState,
    subscription: &Subscription,
    horizon: &Positions,
) -> ControlFlow<()> {
    if subscription.snapshot {
        send_snapshot(stream, state, subscription, horizon).await?;
    }
    if let Some(since) = &subscription.since {
        replay_stored(stream, state, subscription, since, horizon).await?;
    }
    ControlFlow::Continue(())
}

/// The matching executions' current state, as of `horizon`.
async fn send_snapshot(
    stream: &mut Stream,
    state: &AppState,
    subscription: &Subscription,
    horizon: &Positions,
) -> ControlFlow<()> {
    let Snapshot {
        executions,
        next_cursor,
    } = snapshot_records(state, subscription, state.quotas.config.snapshot_executions);
    let cursor = horizon.encode(stream.shards);
    let global_seq = horizon.get(0);
    let truncated = next_cursor.is_some();
    let next_page = next_cursor.map(|id| next_page(subscription, id));
    let next_cursor = next_cursor.map(|id| id.to_string());
    let message = match subscription.protocol {
        Protocol::Agentrack => json!({"type": "snapshot", "global_seq": global_seq, "cursor": cursor,
            "executions": executions, "truncated": truncated, "next_cursor": next_cursor, "next_page": next_page}),
        Protocol::Agui => json!({"type": "STATE_SNAPSHOT", "snapshot": {"executions": executions},
            "rawEvent": {"type": "snapshot", "global_seq": global_seq, "cursor": cursor,
                "truncated": truncated, "next_cursor": next_cursor, "next_page": next_page}}),
    };
    stream.queue_wait(Message::Text(message.to_string().into()), None).await
}

/// The stored events in `(since, horizon]`, every shard's in its order, a page at a time, paced
/// by the client.
async fn replay_stored(
    stream: &mut Stream,
    state: &AppState,
    subscription: &Subscription,
    since: &Positions,
    horizon: &Positions,
) -> ControlFlow<()> {
    let mut ranges: Vec<LogRange> = (0..stream.shards)
        .map(|shard| LogRange {
            shard,
            after: since.get(shard),
            up_to: horizon.get(shard),
        })
        .filter(|range| range.after < range.up_to)
        .collect();
    while !ranges.is_empty() {
        let query = EventQuery {
            ranges: ranges.clone(),
            thread_id: subscription.thread_id.clone(),
            execution_id: subscription.execution_id,
            limit: REPLAY_PAGE,
            ..EventQuery::default()
        };
        let Some(query) = subscription.scope.narrow(query) else {
            break;
        };
        let events = match state.store.events(query).await {
            Ok(events) => events,
            Err(error) => {
                tracing::error!(%error, "replaying stored events failed");
                stream.close(close_code::ERROR, "could not read stored events".into());
                return ControlFlow::Break(());
            }
        };
        for stored in &events {
            let cursor = stream.pass(stored.shard, stored.global_seq);
            let parsed = || serde_json::from_str::<Event>(&stored.json).ok().map(Arc::new);
            for message in stream.messages(&stored.json, &cursor, parsed) {
                stream.queue_wait(message, Some(cursor.clone())).await?;
            }
        }
        if events.len() < REPLAY_PAGE {
            break;
        }
        // Pages come shard by shard: the shards before the last one seen are done.
        let last_shard = events.last().map_or(0, |event| event.shard);
        ranges.retain(|range| range.shard >= last_shard);
        for range in &mut ranges {
            range.after = range.after.max(stream.positions.get(range.shard));
        }
    }
    ControlFlow::Continue(())
}

/// The live side of a stream: the subscription, what it passes, and what was already replayed.
struct Live {
    events: crate::hub::Receiver,
    filter: EventFilter,
    /// Per shard, events at or below this number were already sent.
    skip_through: Positions,
}

/// Forwards live events, answers the client's messages and pings, until either side ends it.
///
/// A client that has sent nothing (no pong, no message) for `pong_timeout` since the first ping
/// it left unanswered is gone or stuck: it is closed with 1008, and its socket dropped even if
/// the close frame cannot go out.
async fn forward_live(
    mut stream: Stream,
    mut incoming: futures_util::stream::SplitStream<WebSocket>,
    mut live: Live,
    state: &AppState,
    scope: &Scope,
) {
    let mut keepalive = tokio::time::interval_at(
        tokio::time::Instant::now() + state.settings.keepalive,
        state.settings.keepalive,
    );
    let pong_timeout = state.settings.websocket.pong_timeout;
    // Armed by the first ping since the client last said anything.
    let mut unanswered = false;
    let pong_deadline = tokio::time::sleep(pong_timeout);
    tokio::pin!(pong_deadline);
    let room = Arc::clone(&stream.room);
    loop {
        let beats = stream.room_for_heartbeats();
        let flow = tokio::select! {
            () = state.shutdown.cancelled() => {
                stream.close(close_code::AWAY, "server shutting down".into());
                ControlFlow::Break(())
            }
            // The writer made room: heartbeats held back may go now.
            () = room.made.notified(), if !beats => ControlFlow::Continue(()),
            received = live.events.recv(beats) => match received {
                Ok(published) => forward(&mut stream, state, &live, &published),
                Err(RecvError::Lagged(missed)) => {
                    stream.close_slow(state, &format!("fell {missed} events behind"));
                    ControlFlow::Break(())
                }
                Err(RecvError::Closed) => {
                    stream.close(close_code::AWAY, "server shutting down".into());
                    ControlFlow::Break(())
                }
            },
            message = incoming.next() => {
                unanswered = false;
                match message {
                    None | Some(Ok(Message::Close(_))) => ControlFlow::Break(()),
                    Some(Err(error)) => {
                        refuse_oversized(&mut stream, &error);
                        ControlFlow::Break(())
                    }
                    Some(Ok(Message::Text(text))) => {
                        let reply = answer(state, scope, &text).await;
                        stream.queue_wait(Message::Text(reply.to_string().into()), None).await
                    }
                    Some(Ok(_)) => ControlFlow::Continue(()),
                }
            },
            _ = keepalive.tick() => {
                if !unanswered {
                    unanswered = true;
                    pong_deadline.as_mut().reset(tokio::time::Instant::now() + pong_timeout);
                }
                stream.queue_live(state, Message::Ping(bytes::Bytes::new()), None)
            }
            () = &mut pong_deadline, if unanswered => {
                state.metrics.pong_timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::info!(?pong_timeout, "closing an event stream whose client answers no ping");
                stream.close(
                    close_code::POLICY,
                    format!("no pong within {pong_timeout:?} of a ping (websocket.pong_timeout)"),
                );
                ControlFlow::Break(())
            }
        };
        if flow.is_break() {
            return;
        }
    }
}

/// Closes the stream with 1009 when `error` is a frame or message over its limit (tungstenite
/// refuses a frame from its header, before reading its payload); other read errors end the
/// stream without a close frame, as the connection is gone.
fn refuse_oversized(stream: &mut Stream, error: &axum::Error) {
    let Some(source) = std::error::Error::source(error) else {
        return;
    };
    if let Some(tungstenite::Error::Capacity(tungstenite::error::CapacityError::MessageTooLong { size, max_size })) =
        source.downcast_ref::<tungstenite::Error>()
    {
        tracing::info!(
            size,
            max_size,
            "closing an event stream sent a frame or message over the limit"
        );
        stream.close(
            close_code::SIZE,
            format!("a frame or message of {size} bytes is over the limit of {max_size} bytes"),
        );
    }
}

/// One live event, unless it was replayed already or the subscription does not pass it.
fn forward(stream: &mut Stream, state: &AppState, live: &Live, published: &SerializedEvent) -> ControlFlow<()> {
    let event = &published.event;
    if event.global_seq <= live.skip_through.get(published.shard) || !live.filter.matches(event) {
        return ControlFlow::Continue(());
    }
    let cursor = stream.pass(published.shard, event.global_seq);
    let shared = Arc::clone(event);
    for message in stream.messages(published.text(), &cursor, || Some(shared)) {
        stream.queue_live(state, message, Some(cursor.clone()))?;
    }
    ControlFlow::Continue(())
}

/// `json` (an object) with a leading `"cursor"` member. Cursors hold no character JSON would
/// escape, and the event JSON is shared by every subscriber, so the member is spliced in.
fn with_cursor(json: &str, cursor: &str) -> String {
    match json.strip_prefix('{') {
        Some(rest) if rest.trim_start().starts_with('}') => format!("{{\"cursor\":\"{cursor}\"}}"),
        Some(rest) => format!("{{\"cursor\":\"{cursor}\",{rest}"),
        None => json.to_owned(),
    }
}

/// Answers a message from the client. The one kind understood is a heartbeat, so that an agent
/// running many executions can keep them alive over the connection it watches them on:
/// `{"type": "heartbeat", "execution_ids": [...]}` → `{"type": "heartbeat_ack", "accepted",
/// "rejected", "results"}` (as `POST /v1/heartbeats`). Anything else gets an `error` message
/// naming what is understood; the stream goes on.
async fn answer(state: &AppState, scope: &Scope, text: &str) -> serde_json::Value {
    let invalid = |message: String| {
        json!({"type": "error", "error": {"code": "invalid_message", "message": message,
            "valid_values": ["{\"type\": \"heartbeat\", \"execution_ids\": [...]}"]}})
    };
    let body = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(body)) => body,
        Ok(other) => return invalid(format!("expected a JSON object, not {}", describe(&other))),
        Err(error) => return invalid(format!("not JSON: {error}")),
    };
    match body.get("type").and_then(serde_json::Value::as_str) {
        Some("heartbeat") => {}
        Some(other) => return invalid(format!("unknown message type {other:?}; valid: heartbeat")),
        None => return invalid("missing \"type\"; valid: heartbeat".into()),
    }
    let mut body = body;
    body.remove("type");
    let batch = match heartbeats::parse_batch(JsonBody(body)) {
        Ok(batch) => batch,
        Err(error) => return json!({"type": "error", "error": error.body()["error"]}),
    };
    match heartbeats::beat_many(state, scope, &batch).await {
        Ok(report) => json!({"type": "heartbeat_ack", "accepted": report.accepted,
            "rejected": report.rejected, "results": report.results}),
        Err(error) => json!({"type": "error", "error": error.body()["error"]}),
    }
}
