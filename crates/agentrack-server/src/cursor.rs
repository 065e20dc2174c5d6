//! Cursors: where a subscriber is in the event log, as an opaque string it hands back to resume
//! on any node.
//!
//! A position is, per shard, the number of the last event the subscriber was brought past. On a
//! store with one shard the cursor is that number itself, so the integer `since=` of a single node
//! keeps working; on a sharded store it is `c1.` and the base64url of (shard, number) pairs as
//! LEB128 varints, for the shards whose position is not zero.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::store::ShardId;

const PREFIX: &str = "c1.";

/// Per shard, the last event number a subscriber is past (0 when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Positions(BTreeMap<ShardId, u64>);

/// A cursor that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CursorError(String);

impl Positions {
    /// The position in `shard`.
    pub fn get(&self, shard: ShardId) -> u64 {
        self.0.get(&shard).copied().unwrap_or(0)
    }

    /// Moves `shard` to `seq` if that is later.
    pub fn advance(&mut self, shard: ShardId, seq: u64) {
        let position = self.0.entry(shard).or_default();
        *position = (*position).max(seq);
    }

    /// Whether these positions are at or past `other` in every shard: whatever `other` was
    /// brought past, these were too.
    pub fn covers(&self, other: &Self) -> bool {
        other.iter().all(|(shard, seq)| self.get(shard) >= seq)
    }

    /// Every shard with a position, in order.
    pub fn iter(&self) -> impl Iterator<Item = (ShardId, u64)> + '_ {
        self.0.iter().map(|(shard, seq)| (*shard, *seq))
    }

    /// The cursor for a store of `shards` shards.
    pub fn encode(&self, shards: u16) -> String {
        if shards <= 1 {
            return self.get(0).to_string();
        }
        let mut bytes = Vec::with_capacity(self.0.len() * 4);
        for (shard, seq) in self.iter().filter(|(_, seq)| *seq > 0) {
            varint(&mut bytes, u64::from(shard));
            varint(&mut bytes, seq);
        }
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Reads a cursor of a store of `shards` shards.
    ///
    /// # Errors
    ///
    /// Anything this module did not write, or an integer on a sharded store (where it means
    /// nothing), with a message saying what is accepted.
    pub fn decode(text: &str, shards: u16) -> Result<Self, CursorError> {
        let text = text.trim();
        if let Ok(seq) = text.parse::<u64>() {
            // 0 is the start of every log, whatever the store.
            if shards > 1 && seq > 0 {
                return Err(CursorError(format!(
                    "{text:?} is a sequence number; this store has {shards} shards, so resume with the `cursor` of the last event received"
                )));
            }
            let mut positions = Self::default();
            if seq > 0 {
                positions.advance(0, seq);
            }
            return Ok(positions);
        }
        let invalid = || CursorError(format!("{text:?} is not a cursor returned by this server"));
        let encoded = text.strip_prefix(PREFIX).ok_or_else(invalid)?;
        let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| invalid())?;
        let mut positions = Self::default();
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            let shard = read_varint(&mut rest).ok_or_else(invalid)?;
            let seq = read_varint(&mut rest).ok_or_else(invalid)?;
            let shard = ShardId::try_from(shard)
                .ok()
                .filter(|s| *s < shards.max(1))
                .ok_or_else(invalid)?;
            positions.advance(shard, seq);
        }
        Ok(positions)
    }
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        // The low seven bits, with the high bit saying more follow.
        let byte = u8::try_from(value & 0x7f).unwrap_or(0);
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_a_single_shard_uses_plain_numbers() {
        let mut positions = Positions::default();
        positions.advance(0, 5);
        assert_eq!(positions.encode(1), "5");
        assert_eq!(Positions::decode("5", 1).unwrap(), positions);
        positions.advance(7, 300_000);
        positions.advance(63, 1);
        let cursor = positions.encode(64);
        assert!(cursor.starts_with("c1."));
        assert_eq!(Positions::decode(&cursor, 64).unwrap(), positions);
        positions.advance(7, 10);
        assert_eq!(positions.get(7), 300_000, "positions never move back");
    }

    #[test]
    fn positions_cover_what_they_are_at_or_past_in_every_shard() {
        let mut later = Positions::default();
        later.advance(1, 10);
        later.advance(2, 5);
        let mut earlier = Positions::default();
        earlier.advance(1, 10);
        assert!(later.covers(&earlier));
        assert!(later.covers(&Positions::default()));
        earlier.advance(3, 1);
        assert!(!later.covers(&earlier), "shard 3 is unknown to `later`");
        assert!(!Positions::default().covers(&later));
    }

    #[test]
    fn foreign_cursors_are_refused_with_a_reason() {
        assert!(
            Positions::decode("12", 64)
                .unwrap_err()
                .to_string()
                .contains("resume with the `cursor`")
        );
        assert_eq!(
            Positions::decode("0", 64).unwrap(),
            Positions::default(),
            "0 is the start anywhere"
        );
        assert!(Positions::decode("c1.!!", 64).is_err());
        assert!(Positions::decode("c1.gAE", 4).is_err(), "shard 128 of 4");
        assert!(Positions::decode("soon", 1).is_err());
    }
}
