//! The event bus: assigns global sequence numbers and broadcasts in that order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tokio::sync::broadcast;

use crate::event::{Event, EventFilter, EventKind, EventScope, EventStream};

pub(crate) struct EventBus {
    // Numbering and sending under one short lock keeps broadcast order equal to global order,
    // which is what lets a reconnecting client resume from a sequence number without gaps.
    next_seq: Mutex<u64>,
    sender: broadcast::Sender<Arc<Event>>,
    sink: OnceLock<Sink>,
    /// Live [`EventStream`]s. Changed under `next_seq`'s lock, so an event numbered after a
    /// subscription is always built and sent to it.
    subscribers: Arc<AtomicUsize>,
}

/// Receives every event synchronously, in global order, before any subscriber; see
/// [`Tracker::set_sink`](crate::Tracker::set_sink).
pub(crate) type Sink = Box<dyn Fn(&Arc<Event>) + Send + Sync>;

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("next_seq", &*self.next_seq.lock())
            .finish_non_exhaustive()
    }
}

impl EventBus {
    pub(crate) fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self {
            next_seq: Mutex::new(1),
            sender,
            sink: OnceLock::new(),
            subscribers: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Whether anyone receives events: a sink, or a live subscriber.
    pub(crate) fn observed(&self) -> bool {
        self.sink.get().is_some() || self.subscribers.load(Ordering::Acquire) > 0
    }

    /// Numbers an event that nobody will receive, without building it. Returns `false`, and
    /// numbers nothing, if someone receives events after all: then the caller emits it.
    pub(crate) fn skip(&self) -> bool {
        let mut next = self.next_seq.lock();
        if self.observed() {
            return false;
        }
        *next += 1;
        true
    }

    pub(crate) fn emit(&self, execution: Option<EventScope>, timestamp: DateTime<Utc>, kind: EventKind) -> Arc<Event> {
        let mut next = self.next_seq.lock();
        let event = Arc::new(Event {
            global_seq: *next,
            execution,
            timestamp,
            kind,
        });
        *next += 1;
        if let Some(sink) = self.sink.get() {
            sink(&event);
        }
        // An error only means nobody is listening right now.
        let _ = self.sender.send(Arc::clone(&event));
        event
    }

    pub(crate) fn set_sink(&self, sink: Sink) -> bool {
        self.sink.set(sink).is_ok()
    }

    /// Continues numbering after `last`, e.g. the last sequence a store holds.
    pub(crate) fn resume_after(&self, last: u64) {
        let mut next = self.next_seq.lock();
        *next = (*next).max(last + 1);
    }

    pub(crate) fn last_seq(&self) -> u64 {
        *self.next_seq.lock() - 1
    }

    pub(crate) fn subscribe(&self, filter: EventFilter) -> EventStream {
        let _numbering = self.next_seq.lock();
        self.subscribers.fetch_add(1, Ordering::AcqRel);
        EventStream::new(self.sender.subscribe(), filter, Arc::clone(&self.subscribers))
    }
}
