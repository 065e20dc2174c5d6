//! Fan-out of committed events to live subscribers, routed by owner.
//!
//! With one channel for everyone, every event wakes every subscriber, which then drops what is
//! not its own: 10,000 browsers watching their own user's runs cost 10,000 wake-ups per event.
//! So a subscriber whose scope is one user (a viewer token) listens on that user's own channel,
//! and only subscribers that may see more (agent and admin tokens) share the channel of all
//! events. An event is serialised once, before it gets here, whatever the number of channels.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::broadcast;

use crate::store::writer::SerializedEvent;

/// A receiver of committed events.
pub type Receiver = broadcast::Receiver<Arc<SerializedEvent>>;

/// Events buffered per user channel. A user's share of the traffic is small, so a short buffer
/// keeps 10,000 users' channels cheap (a slot is a few words); a subscriber that falls this far
/// behind is closed as slow and resumes with `since`, as on the shared channel.
const USER_BUFFER: usize = 256;

/// The channels.
#[derive(Debug)]
pub struct Hub {
    all: broadcast::Sender<Arc<SerializedEvent>>,
    /// Keyed by `tenant \n user_id`. Two owners could share a key only through a newline in a
    /// name; subscribers still filter on the exact owner, so that would cost wake-ups, not leak.
    users: DashMap<String, broadcast::Sender<Arc<SerializedEvent>>>,
}

fn user_key(tenant: &str, user_id: &str) -> String {
    let mut key = String::with_capacity(tenant.len() + user_id.len() + 1);
    key.push_str(tenant);
    key.push('\n');
    key.push_str(user_id);
    key
}

impl Hub {
    /// A hub whose shared channel buffers `buffer` events.
    pub fn new(buffer: usize) -> Self {
        Self {
            all: broadcast::channel(buffer.max(16)).0,
            users: DashMap::new(),
        }
    }

    /// Every event.
    pub fn subscribe_all(&self) -> Receiver {
        self.all.subscribe()
    }

    /// The events of one user's executions.
    pub fn subscribe_user(&self, tenant: &str, user_id: &str) -> Receiver {
        self.users
            .entry(user_key(tenant, user_id))
            .or_insert_with(|| broadcast::channel(USER_BUFFER).0)
            .subscribe()
    }

    /// Hands `event` to the shared channel and to its owner's channel.
    pub fn publish(&self, event: &Arc<SerializedEvent>) {
        if self.all.receiver_count() > 0 {
            let _ = self.all.send(Arc::clone(event));
        }
        let Some(scope) = &event.event.execution else { return };
        let key = user_key(&scope.owner.tenant, &scope.owner.user_id);
        let abandoned = match self.users.get(&key) {
            Some(channel) => channel.send(Arc::clone(event)).is_err(),
            None => false,
        };
        if abandoned {
            // Its last subscriber left; a new one re-creates the channel under the map's lock.
            self.users.remove_if(&key, |_, channel| channel.receiver_count() == 0);
        }
    }

    /// How many subscribers are connected.
    pub fn subscribers(&self) -> usize {
        self.all.receiver_count() + self.users.iter().map(|channel| channel.receiver_count()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use agentrack::{EventFilter, NewExecution, Tracker};

    use super::Hub;
    use crate::store::writer::SerializedEvent;

    #[tokio::test]
    async fn a_user_channel_gets_only_its_users_events_and_the_shared_one_gets_all() {
        let tracker = Tracker::new();
        let mut events = tracker.subscribe(EventFilter::all());
        tracker.create(NewExecution::new("a", "t", "alice")).unwrap();
        tracker.create(NewExecution::new("a", "t", "bob")).unwrap();
        let hub = Hub::new(16);
        let mut all = hub.subscribe_all();
        let mut alice = hub.subscribe_user("default", "alice");
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
}
