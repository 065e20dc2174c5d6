//! Fan-out of committed events to live subscribers, routed by owner.
//!
//! With one channel for everyone, every event wakes every subscriber, which then drops what is
//! not its own: 10,000 browsers watching their own user's runs cost 10,000 wake-ups per event,
//! and one tenant's burst (a batch of 5,000 heartbeats) overruns every other tenant's streams.
//! So a subscriber listens on the narrowest channel its scope allows: a viewer on its user's,
//! an agent on its tenant's, and only an admin on the channel of all events. An event is
//! serialised once, before it gets here, whatever the number of channels.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::broadcast;

use parking_lot::Mutex;

use crate::cursor::Positions;
use crate::serialized_event::SerializedEvent;
use crate::store::ShardId;

/// A receiver of committed events.
pub type Receiver = broadcast::Receiver<Arc<SerializedEvent>>;

type Sender = broadcast::Sender<Arc<SerializedEvent>>;

/// Events buffered per user channel. A user's share of the traffic is small, so a short buffer
/// keeps 10,000 users' channels cheap (a slot is a few words); a subscriber that falls this far
/// behind is closed as slow and resumes with `since`, as on the other channels.
const USER_BUFFER: usize = 256;

/// The channels.
#[derive(Debug)]
pub struct Hub {
    all: Sender,
    /// Events buffered by the shared and the tenant channels.
    buffer: usize,
    tenants: DashMap<String, Sender>,
    /// Keyed by `tenant \n user_id`. Two owners could share a key only through a newline in a
    /// name; subscribers still filter on the exact owner, so that would cost wake-ups, not leak.
    users: DashMap<String, Sender>,
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
fn send_to(channels: &DashMap<String, Sender>, key: &str, event: &Arc<SerializedEvent>) {
    let abandoned = match channels.get(key) {
        Some(channel) => channel.send(Arc::clone(event)).is_err(),
        None => false,
    };
    if abandoned {
        channels.remove_if(key, |_, channel| channel.receiver_count() == 0);
    }
}

impl Hub {
    /// A hub whose shared and tenant channels buffer `buffer` events.
    pub fn new(buffer: usize) -> Self {
        let buffer = buffer.max(16);
        Self {
            all: broadcast::channel(buffer).0,
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
        channels
            .entry(key)
            .or_insert_with(|| broadcast::channel(buffer).0)
            .subscribe()
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
        if self.all.receiver_count() > 0 {
            let _ = self.all.send(Arc::clone(event));
        }
        let Some(scope) = &event.event.execution else { return };
        send_to(&self.tenants, &scope.owner.tenant, event);
        send_to(&self.users, &user_key(&scope.owner.tenant, &scope.owner.user_id), event);
    }

    /// How many subscribers are connected.
    pub fn subscribers(&self) -> usize {
        let count = |channels: &DashMap<String, Sender>| channels.iter().map(|c| c.receiver_count()).sum::<usize>();
        self.all.receiver_count() + count(&self.tenants) + count(&self.users)
    }
}

#[cfg(test)]
mod tests {

    use std::sync::Arc;

    use agentrack::{EventFilter, NewExecution, Tracker};

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
        assert_eq!(owner(alice.recv().await.unwrap()), "alice");
        assert!(alice.try_recv().is_err(), "bob's event is not on alice's channel");
        assert_eq!(owner(all.recv().await.unwrap()), "alice");
        assert_eq!(owner(all.recv().await.unwrap()), "bob");
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
                busy.recv().await,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_))
            ),
            "100 events overrun a 16-event buffer"
        );
        let received = quiet.recv().await.unwrap();
        assert_eq!(received.event.execution.as_ref().unwrap().owner.tenant, "quiet");
        assert!(quiet.try_recv().is_err(), "and nothing else");
    }
}
