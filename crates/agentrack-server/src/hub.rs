//! Fan-out of committed events to live subscribers, routed by owner.
//!
//! With one channel for everyone, every event wakes every subscriber, which then drops what is
//! not its own: 10,000 browsers watching their own user's runs cost 10,000 wake-ups per event,
//! and one tenant's burst overruns every other tenant's streams. So a subscriber listens on the
//! narrowest channel its scope allows: a viewer on its user's, an agent on its tenant's, and only
//! an admin on the channel of all events. An event is serialised once, before it gets here,
//! whatever the number of channels.
//!
//! Heartbeats are coalesced per subscriber. A batch of 10,000 heartbeats would overrun any
//! buffer of events, and closing a stream as slow because it missed heartbeats helps nobody: a
//! subscriber only wants the latest one of each execution. So a channel carries two things:
//!
//! - a ring of every other event (a bounded broadcast buffer): each is delivered exactly once and
//!   in order, and a subscriber that falls a whole buffer behind lags and is closed as slow;
//! - a table of the latest heartbeat of each execution, each entry numbered in publishing order
//!   (its *version*) and stamped with how many ring events were published before it.
//!
//! A subscriber remembers the version it took last and how many ring events it took. It takes a
//! heartbeat once every ring event published before it was taken, so a heartbeat never comes
//! ahead of an event published before it, and the cursor after it never passes an event not yet
//! delivered. One that keeps up takes every heartbeat as it comes; one behind finds a newer
//! version in place of the older ones and gets only the latest of each execution. A heartbeat
//! may come after a ring event published after it (the subscriber held heartbeats back for room,
//! see [`Receiver::recv`]); the cursor is still exact, as it only ever moves forward. A terminal
//! event removes its execution's entry, and a table holds at most [`MAX_BEATS`] entries (the
//! oldest goes first), so its memory follows the channel's running executions.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use agentrack::{EventKind, ExecutionId};
use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::sync::{broadcast, watch};

pub use tokio::sync::broadcast::error::RecvError;

use crate::cursor::Positions;
use crate::serialized_event::SerializedEvent;
use crate::store::ShardId;

/// Events buffered per user channel. A user's share of the traffic is small, so a short buffer
/// keeps 10,000 users' channels cheap (a slot is a few words); a subscriber that falls this far
/// behind is closed as slow and resumes with `since`, as on the other channels.
const USER_BUFFER: usize = 256;

/// The most latest-heartbeat entries one channel keeps. Terminal events remove theirs; this
/// bounds a channel whose executions stop without one reaching it (the oldest heartbeat goes:
/// a subscriber that had not taken it yet misses one heartbeat, never another event).
pub const MAX_BEATS: usize = 65_536;

/// The latest heartbeat of one execution.
#[derive(Debug)]
struct Beat {
    event: Arc<SerializedEvent>,
    /// Ring events published before it.
    ring_before: u64,
}

/// A channel's latest heartbeats, and the ring's count (kept under the same lock so that each
/// heartbeat knows exactly which ring events came before it).
#[derive(Debug, Default)]
struct Latest {
    /// Ring events published so far.
    ring_sent: u64,
    /// The version of the last heartbeat published.
    version: u64,
    by_version: BTreeMap<u64, Beat>,
    by_execution: HashMap<ExecutionId, u64>,
}

impl Latest {
    fn forget(&mut self, id: ExecutionId) {
        if let Some(version) = self.by_execution.remove(&id) {
            self.by_version.remove(&version);
        }
    }

    fn clear(&mut self) {
        if !self.by_version.is_empty() {
            self.by_version.clear();
            self.by_execution.clear();
        }
    }
}

/// One channel: the ring of events other than heartbeats, and the latest heartbeats.
#[derive(Debug)]
struct Channel {
    ring: broadcast::Sender<Arc<SerializedEvent>>,
    latest: Mutex<Latest>,
    /// The last heartbeat's version, to wake subscribers (a `watch` remembers what each saw, so
    /// a heartbeat published while a subscriber was busy is not missed).
    beats: watch::Sender<u64>,
}

/// Whether `kind` ends its execution (no heartbeat of it matters after it).
fn is_terminal(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::ExecutionCompleted(_)
            | EventKind::ExecutionFailed(_)
            | EventKind::ExecutionCancelled(_)
            | EventKind::TimedOut(_)
            | EventKind::Dead(_)
    )
}

impl Channel {
    fn new(buffer: usize) -> Arc<Self> {
        Arc::new(Self {
            ring: broadcast::channel(buffer).0,
            latest: Mutex::new(Latest::default()),
            beats: watch::channel(0).0,
        })
    }

    fn subscribers(&self) -> usize {
        self.ring.receiver_count()
    }

    /// Hands `event` to the subscribers; `false` when there are none.
    fn send(&self, event: &Arc<SerializedEvent>) -> bool {
        let mut latest = self.latest.lock();
        if self.ring.receiver_count() == 0 {
            // A subscriber starts after every entry there is: none would ever be taken.
            latest.clear();
            return false;
        }
        let scope = event.event.execution.as_ref();
        match (&event.event.kind, scope) {
            (EventKind::Heartbeat { .. }, Some(scope)) => {
                latest.version += 1;
                let version = latest.version;
                let ring_before = latest.ring_sent;
                if let Some(old) = latest.by_execution.insert(scope.execution_id, version) {
                    latest.by_version.remove(&old);
                }
                latest.by_version.insert(
                    version,
                    Beat {
                        event: Arc::clone(event),
                        ring_before,
                    },
                );
                while latest.by_version.len() > MAX_BEATS {
                    if let Some((_, oldest)) = latest.by_version.pop_first()
                        && let Some(scope) = &oldest.event.event.execution
                    {
                        latest.by_execution.remove(&scope.execution_id);
                    }
                }
                drop(latest);
                self.beats.send_replace(version);
            }
            (kind, _) => {
                if let Some(scope) = scope
                    && is_terminal(kind)
                {
                    latest.forget(scope.execution_id);
                }
                latest.ring_sent += 1;
                // Sent under the lock: the ring's order is the order `ring_sent` counts.
                let _ = self.ring.send(Arc::clone(event));
            }
        }
        true
    }

    fn subscribe(self: &Arc<Self>) -> Receiver {
        let latest = self.latest.lock();
        Receiver {
            ring: self.ring.subscribe(),
            beats: self.beats.subscribe(),
            channel: Arc::clone(self),
            ring_taken: latest.ring_sent,
            beats_through: latest.version,
            pending: None,
        }
    }
}

/// A receiver of committed events: every event but heartbeats exactly once and in order, and
/// heartbeats coalesced (see the module documentation).
#[derive(Debug)]
pub struct Receiver {
    ring: broadcast::Receiver<Arc<SerializedEvent>>,
    beats: watch::Receiver<u64>,
    channel: Arc<Channel>,
    /// Ring events taken (received and returned, or lagged past).
    ring_taken: u64,
    /// Heartbeats at or below this version were taken or passed over.
    beats_through: u64,
    /// A ring event received but not yet returned: heartbeats published before it go first.
    pending: Option<Arc<SerializedEvent>>,
}

impl Receiver {
    /// The next event. With `beats` false, heartbeats are left waiting in the table (the caller
    /// has no room for them now) and only ring events come; a heartbeat left waiting may then
    /// come after ring events published after it, never before one published before it.
    ///
    /// # Errors
    ///
    /// [`RecvError::Lagged`] when the ring overran this subscriber (it missed events other
    /// than heartbeats), [`RecvError::Closed`] when the hub is gone.
    ///
    /// Cancel safe: a ring event received when the future is dropped is kept for the next call.
    pub async fn recv(&mut self, beats: bool) -> Result<Arc<SerializedEvent>, RecvError> {
        loop {
            if beats && let Some(beat) = self.take_beat() {
                return Ok(beat);
            }
            if let Some(event) = self.pending.take() {
                self.ring_taken += 1;
                return Ok(event);
            }
            tokio::select! {
                biased;
                received = self.ring.recv() => match received {
                    Ok(event) => self.pending = Some(event),
                    Err(RecvError::Lagged(missed)) => {
                        self.ring_taken += missed;
                        return Err(RecvError::Lagged(missed));
                    }
                    Err(RecvError::Closed) => return Err(RecvError::Closed),
                },
                changed = self.beats.changed(), if beats => {
                    if changed.is_err() {
                        return Err(RecvError::Closed);
                    }
                }
            }
        }
    }

    /// The oldest heartbeat not yet taken whose preceding ring events were all taken.
    fn take_beat(&mut self) -> Option<Arc<SerializedEvent>> {
        if *self.beats.borrow_and_update() <= self.beats_through {
            return None;
        }
        let latest = self.channel.latest.lock();
        let Some((version, beat)) = latest.by_version.range(self.beats_through + 1..).next() else {
            // The newer ones were removed (their executions ended): nothing to look at again.
            self.beats_through = latest.version;
            return None;
        };
        if beat.ring_before > self.ring_taken {
            // Ring events come first. The `watch` was marked seen, but `beats_through` stays, so
            // the next call looks again (`recv` does after each ring event, before waiting).
            return None;
        }
        self.beats_through = *version;
        Some(Arc::clone(&beat.event))
    }

    /// Whether heartbeats wait to be taken.
    pub fn beats_waiting(&self) -> bool {
        *self.beats.borrow() > self.beats_through
    }
}

/// The channels.
#[derive(Debug)]
pub struct Hub {
    all: Arc<Channel>,
    /// Events buffered by the shared and the tenant channels.
    buffer: usize,
    tenants: DashMap<String, Arc<Channel>>,
    /// Keyed by `tenant \n user_id`. Two owners could share a key only through a newline in a
    /// name; subscribers still filter on the exact owner, so that would cost wake-ups, not leak.
    users: DashMap<String, Arc<Channel>>,
    /// Per shard, the number of the last event published: a subscriber that reads it after
    /// subscribing replays the store up to it and takes the rest live. Events arrive from this
    /// node's pipeline and, for the shards other nodes own, from following their logs; one at or
    /// below the position was already published and is dropped, so a shard changing hands never
    /// shows an event twice.
    positions: Mutex<Positions>,
}

/// The key of a user's channel: the tenant's length first, so that no tenant or user id (a
/// stored one may predate the names' rule) reaches into the other's part.
fn user_key(tenant: &str, user_id: &str) -> String {
    use std::fmt::Write as _;
    let mut key = String::with_capacity(tenant.len() + user_id.len() + 8);
    let _ = write!(key, "{}:", tenant.len());
    key.push_str(tenant);
    key.push_str(user_id);
    key
}

/// Sends `event` on the channel under `key`, if anyone listens there; drops a channel whose last
/// subscriber left (a new subscriber re-creates it under the map's lock).
fn send_to(channels: &DashMap<String, Arc<Channel>>, key: &str, event: &Arc<SerializedEvent>) {
    let abandoned = match channels.get(key) {
        Some(channel) => !channel.send(event),
        None => false,
    };
    if abandoned {
        channels.remove_if(key, |_, channel| channel.subscribers() == 0);
    }
}

impl Hub {
    /// A hub whose shared and tenant channels buffer `buffer` events.
    pub fn new(buffer: usize) -> Self {
        let buffer = buffer.max(16);
        Self {
            all: Channel::new(buffer),
            buffer,
            tenants: DashMap::new(),
            users: DashMap::new(),
            positions: Mutex::new(Positions::default()),
        }
    }

    /// Where publishing stands, per shard.
    pub fn positions(&self) -> Positions {
        self.positions.lock().clone()
    }

    /// Moves a shard's position on without publishing (to where this node starts numbering, or
    /// to the head of a log it begins to follow): nothing at or below it will be published.
    pub fn advance(&self, shard: ShardId, seq: u64) {
        self.positions.lock().advance(shard, seq);
    }

    /// Where publishing stands in one shard.
    pub fn position(&self, shard: ShardId) -> u64 {
        self.positions.lock().get(shard)
    }

    /// The events a subscriber limited to `tenant` and `user_id` may see (every event when both
    /// are `None`); the caller still filters on thread or execution.
    pub fn subscribe(&self, tenant: Option<&str>, user_id: Option<&str>) -> Receiver {
        let (channels, key, buffer) = match (tenant, user_id) {
            (Some(tenant), Some(user_id)) => (&self.users, user_key(tenant, user_id), USER_BUFFER),
            (Some(tenant), None) => (&self.tenants, tenant.to_owned(), self.buffer),
            _ => return self.all.subscribe(),
        };
        channels.entry(key).or_insert_with(|| Channel::new(buffer)).subscribe()
    }

    /// Hands `event` to the shared channel and to its tenant's and its user's, unless an event of
    /// its shard at or after it was published already.
    pub fn publish(&self, event: &Arc<SerializedEvent>) {
        {
            let mut positions = self.positions.lock();
            if event.event.global_seq <= positions.get(event.shard) {
                return;
            }
            positions.advance(event.shard, event.event.global_seq);
        }
        self.all.send(event);
        let Some(scope) = &event.event.execution else { return };
        send_to(&self.tenants, &scope.owner.tenant, event);
        send_to(&self.users, &user_key(&scope.owner.tenant, &scope.owner.user_id), event);
    }

    /// How many subscribers are connected.
    pub fn subscribers(&self) -> usize {
        let count = |channels: &DashMap<String, Arc<Channel>>| channels.iter().map(|c| c.subscribers()).sum::<usize>();
        self.all.subscribers() + count(&self.tenants) + count(&self.users)
    }
}

#[cfg(test)]
mod tests {

    use std::sync::Arc;

    use agentrack::{Event, EventFilter, EventKind, ExecutionId, NewExecution, Tracker};
    use futures_util::FutureExt as _;

    use super::Hub;
    use crate::serialized_event::SerializedEvent;

    #[test]
    fn no_tenant_or_user_reaches_into_the_others_part_of_a_user_key() {
        // Names stored before the names' rule may hold a newline or a colon.
        let pairs = [
            ("a\nb", "c"),
            ("a", "b\nc"),
            ("a:", "b"),
            ("a", ":b"),
            ("1:a", ""),
            ("", "1:a"),
        ];
        let keys: std::collections::HashSet<String> = pairs.iter().map(|(t, u)| super::user_key(t, u)).collect();
        assert_eq!(keys.len(), pairs.len(), "{keys:?}");
    }

    #[tokio::test]
    async fn a_user_channel_gets_only_its_users_events_and_the_shared_one_gets_all() {
        let tracker = Tracker::new();
        let mut events = tracker.subscribe(EventFilter::all());
        tracker.create(NewExecution::new("a", "t", "alice")).unwrap();
        tracker.create(NewExecution::new("a", "t", "bob")).unwrap();
        let hub = Hub::new(16);
        let mut all = hub.subscribe(None, None);
        let mut alice = hub.subscribe(Some("default"), Some("alice"));
        for _ in 0..2 {
            let event = events.recv().await.unwrap().unwrap();
            hub.publish(&Arc::new(SerializedEvent::new(event)));
        }
        assert_eq!(hub.subscribers(), 2);
        let owner = |received: Arc<SerializedEvent>| received.event.execution.as_ref().unwrap().owner.user_id.clone();
        assert_eq!(owner(alice.recv(true).await.unwrap()), "alice");
        assert!(
            alice.recv(true).now_or_never().is_none(),
            "bob's event is not on alice's channel"
        );
        assert_eq!(owner(all.recv(true).await.unwrap()), "alice");
        assert_eq!(owner(all.recv(true).await.unwrap()), "bob");
        drop(alice);
        let change = tracker.create(NewExecution::new("a", "t", "alice")).unwrap();
        hub.publish(&Arc::new(SerializedEvent::new(Arc::clone(&change.events[0]))));
        assert_eq!(hub.subscribers(), 1, "an abandoned user channel is dropped");
    }

    #[tokio::test]
    async fn one_tenants_burst_does_not_overrun_another_tenants_channel() {
        let tracker = Tracker::new();
        let mut events = tracker.subscribe(EventFilter::all());
        let hub = Hub::new(16);
        let mut quiet = hub.subscribe(Some("quiet"), None);
        let mut busy = hub.subscribe(Some("busy"), None);
        for _ in 0..100 {
            tracker.create(NewExecution::new("a", "t", "u").tenant("busy")).unwrap();
        }
        tracker
            .create(NewExecution::new("a", "t", "u").tenant("quiet"))
            .unwrap();
        for _ in 0..101 {
            let event = events.recv().await.unwrap().unwrap();
            hub.publish(&Arc::new(SerializedEvent::new(event)));
        }
        assert!(
            matches!(
                busy.recv(true).await,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_))
            ),
            "100 events overrun a 16-event buffer"
        );
        let received = quiet.recv(true).await.unwrap();
        assert_eq!(received.event.execution.as_ref().unwrap().owner.tenant, "quiet");
        assert!(quiet.recv(true).now_or_never().is_none(), "and nothing else");
    }

    /// Publishes every event of `change` on `hub`.
    fn publish(hub: &Hub, change: &agentrack::Change) {
        for event in &change.events {
            hub.publish(&Arc::new(SerializedEvent::new(Arc::clone(event))));
        }
    }

    /// What `receiver` has now, as (execution, kind name, heartbeat count) in the order it gives.
    fn drain(receiver: &mut super::Receiver, beats: bool) -> Vec<(ExecutionId, &'static str, u64)> {
        let mut out = Vec::new();
        while let Some(received) = receiver.recv(beats).now_or_never() {
            let event: &Event = &received.unwrap().event;
            let count = match event.kind {
                EventKind::Heartbeat { heartbeat_count } => heartbeat_count,
                _ => 0,
            };
            out.push((event.execution.as_ref().unwrap().execution_id, event.kind.name(), count));
        }
        out
    }

    #[tokio::test]
    async fn a_burst_of_heartbeats_never_lags_and_one_behind_gets_the_latest_of_each_execution() {
        let tracker = Tracker::new();
        let hub = Hub::new(16);
        let mut behind = hub.subscribe(Some("default"), None);
        let mut keeping_up = hub.subscribe(Some("default"), None);
        // Running already (their first heartbeat changed their state), and not published.
        let ids: Vec<ExecutionId> = (0..3)
            .map(|_| {
                let id = tracker.create(NewExecution::new("a", "t", "u")).unwrap().execution_id;
                tracker.start(id).unwrap();
                tracker.heartbeat(id).unwrap();
                id
            })
            .collect();
        for _ in 0..3 {
            publish(&hub, &tracker.create(NewExecution::new("a", "t", "u")).unwrap());
        }
        let mut every = Vec::new();
        // 300 heartbeats through a 16-event buffer.
        for _ in 0..100 {
            for id in &ids {
                publish(&hub, &tracker.heartbeat(*id).unwrap());
                every.extend(drain(&mut keeping_up, true));
            }
        }
        let other = tracker.create(NewExecution::new("a", "t", "u")).unwrap().execution_id;
        publish(&hub, &tracker.start(other).unwrap());
        every.extend(drain(&mut keeping_up, true));
        let beats = every.iter().filter(|(_, kind, _)| *kind == "heartbeat").count();
        assert_eq!(beats, 300, "one that keeps up sees every heartbeat");

        let got = drain(&mut behind, true);
        let kinds: Vec<&str> = got.iter().map(|(_, kind, _)| *kind).collect();
        assert_eq!(&kinds[..3], ["execution_created"; 3], "{got:?}");
        let latest: Vec<(ExecutionId, u64)> = got[3..6].iter().map(|(id, _, count)| (*id, *count)).collect();
        let mut want: Vec<(ExecutionId, u64)> = ids.iter().map(|id| (*id, 101)).collect();
        let mut sorted = latest.clone();
        sorted.sort();
        want.sort();
        assert_eq!(sorted, want, "the latest heartbeat of each, once: {got:?}");
        assert_ne!(got[6].1, "heartbeat", "then the events after them: {got:?}");
        assert!(got[6..].iter().all(|(_, kind, _)| *kind != "heartbeat"), "{got:?}");
    }

    #[tokio::test]
    async fn a_heartbeat_comes_after_the_events_published_before_it() {
        let tracker = Tracker::new();
        let hub = Hub::new(16);
        let mut receiver = hub.subscribe(None, None);
        let created = tracker.create(NewExecution::new("a", "t", "u")).unwrap();
        let id = created.execution_id;
        publish(&hub, &created);
        publish(&hub, &tracker.heartbeat(id).unwrap());
        publish(&hub, &tracker.create(NewExecution::new("a", "t", "u")).unwrap());
        let kinds: Vec<&str> = drain(&mut receiver, true).iter().map(|(_, kind, _)| *kind).collect();
        // The first heartbeat of a pending execution may change its state too; order holds.
        assert_eq!(kinds.first(), Some(&"execution_created"));
        assert_eq!(kinds.last(), Some(&"execution_created"));
        assert_eq!(
            kinds.iter().filter(|kind| **kind == "heartbeat").count(),
            1,
            "{kinds:?}"
        );

        // Held back for room: the other events come, and the heartbeat after them.
        publish(&hub, &tracker.heartbeat(id).unwrap());
        publish(&hub, &tracker.create(NewExecution::new("a", "t", "u")).unwrap());
        assert!(receiver.beats_waiting());
        let kinds: Vec<&str> = drain(&mut receiver, false).iter().map(|(_, kind, _)| *kind).collect();
        assert_eq!(kinds, ["execution_created"]);
        let kinds: Vec<&str> = drain(&mut receiver, true).iter().map(|(_, kind, _)| *kind).collect();
        assert_eq!(kinds, ["heartbeat"]);
        assert!(!receiver.beats_waiting());
    }

    #[tokio::test]
    async fn a_terminal_event_drops_its_executions_heartbeat_and_the_table_is_bounded() {
        let tracker = Tracker::new();
        let hub = Hub::new(16);
        let mut receiver = hub.subscribe(None, None);
        let created = tracker.create(NewExecution::new("a", "t", "u")).unwrap();
        let id = created.execution_id;
        publish(&hub, &created);
        drain(&mut receiver, true);
        publish(&hub, &tracker.heartbeat(id).unwrap());
        publish(&hub, &tracker.fail(id, "x").unwrap());
        let got = drain(&mut receiver, false);
        assert!(got.iter().all(|(_, kind, _)| *kind != "heartbeat"));
        assert!(
            hub.all.latest.lock().by_version.is_empty(),
            "nothing kept for a finished execution"
        );
        assert!(
            drain(&mut receiver, true)
                .iter()
                .all(|(_, kind, _)| *kind != "heartbeat")
        );

        // Without subscribers nothing is kept.
        drop(receiver);
        let created = tracker.create(NewExecution::new("a", "t", "u")).unwrap();
        publish(&hub, &created);
        publish(&hub, &tracker.heartbeat(created.execution_id).unwrap());
        assert!(hub.all.latest.lock().by_version.is_empty());
    }
}
