//! The event bus: assigns global sequence numbers and broadcasts in that order.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tokio::sync::broadcast;

use crate::event::{Event, EventFilter, EventKind, EventScope, EventStream};

#[derive(Debug)]
pub(crate) struct EventBus {
    // Numbering and sending under one short lock keeps broadcast order equal to global order,
    // which is what lets a reconnecting client resume from a sequence number without gaps.
    next_seq: Mutex<u64>,
    sender: broadcast::Sender<Arc<Event>>,
}

impl EventBus {
    pub(crate) fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self {
            next_seq: Mutex::new(1),
            sender,
        }
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
        // An error only means nobody is listening right now.
        let _ = self.sender.send(Arc::clone(&event));
        event
    }

    pub(crate) fn last_seq(&self) -> u64 {
        *self.next_seq.lock() - 1
    }

    pub(crate) fn subscribe(&self, filter: EventFilter) -> EventStream {
        EventStream::new(self.sender.subscribe(), filter)
    }
}
