//! An event with its JSON, serialised once and shared by the store and every subscriber.

use std::sync::Arc;

use agentrack::Event;
use bytes::Bytes;

use crate::store::ShardId;

/// An event with its JSON, serialised once and shared by the store and every subscriber.
#[derive(Debug)]
pub struct SerializedEvent {
    /// The shard it belongs to (its `global_seq` numbers it within the shard).
    pub shard: ShardId,
    /// The event.
    pub event: Arc<Event>,
    /// Its JSON text (UTF-8).
    pub json: Bytes,
}

impl SerializedEvent {
    /// Serialises `event` of shard 0 (a store with one shard).
    pub fn new(event: Arc<Event>) -> Self {
        Self::of_shard(0, event)
    }

    /// Serialises `event` of `shard`.
    pub fn of_shard(shard: ShardId, event: Arc<Event>) -> Self {
        // Serialising our own types to a string cannot fail (string keys, finite floats are
        // written as numbers, non-finite ones as null).
        let json = serde_json::to_vec(&*event).unwrap_or_else(|_| b"{}".to_vec());
        Self {
            shard,
            event,
            json: Bytes::from(json),
        }
    }

    /// The JSON as text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.json).unwrap_or("{}")
    }
}

impl SerializedEvent {
    /// An event read back from the log of `shard`, keeping its stored JSON; `None` when the JSON
    /// is not an event.
    pub fn from_stored(shard: ShardId, json: &str) -> Option<Self> {
        let event: Event = serde_json::from_str(json).ok()?;
        Some(Self {
            shard,
            event: Arc::new(event),
            json: Bytes::copy_from_slice(json.as_bytes()),
        })
    }
}
