//! An event with its JSON, serialised once and shared by the store and every subscriber.

use std::sync::Arc;

use agentrack::Event;
use bytes::Bytes;

/// An event with its JSON, serialised once and shared by the store and every subscriber.
#[derive(Debug)]
pub struct SerializedEvent {
    /// The event.
    pub event: Arc<Event>,
    /// Its JSON text (UTF-8).
    pub json: Bytes,
}

impl SerializedEvent {
    /// Serialises `event`.
    pub fn new(event: Arc<Event>) -> Self {
        // Serialising our own types to a string cannot fail (string keys, finite floats are
        // written as numbers, non-finite ones as null).
        let json = serde_json::to_vec(&*event).unwrap_or_else(|_| b"{}".to_vec());
        Self {
            event,
            json: Bytes::from(json),
        }
    }

    /// The JSON as text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.json).unwrap_or("{}")
    }
}
