//! Execution identifiers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

const PREFIX: &str = "exec_";

/// The unique id of one execution: `exec_` followed by a UUIDv7 in 32 hex digits.
///
/// UUIDv7 ids carry a millisecond timestamp followed by random bits, so ids sort by creation
/// time and never collide across processes or nodes (unlike the original's 32 random bits).
///
/// # Examples
///
/// ```
/// use agentrack::ExecutionId;
///
/// let id = ExecutionId::new();
/// let text = id.to_string();
/// assert!(text.starts_with("exec_"));
/// assert_eq!(text.parse::<ExecutionId>().unwrap(), id);
/// assert!("run_42".parse::<ExecutionId>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ExecutionId(Uuid);

impl Ord for ExecutionId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // The same order as the UUID's bytes, compared as one integer rather than byte by byte:
        // the ordered indexes compare ids on every insert.
        self.0.as_u128().cmp(&other.0.as_u128())
    }
}

impl PartialOrd for ExecutionId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::hash::Hash for ExecutionId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // One integer write instead of a length-prefixed byte slice: ids are hashed on every
        // lookup.
        state.write_u128(self.0.as_u128());
    }
}

/// The hasher of the tracker's maps and sets keyed by execution id (or by a hash already).
///
/// An id's low 64 bits are random (a v7 UUID's `rand_b`), so one multiply of the id's two
/// halves folded together spreads it over the table: a few instructions instead of `SipHash`'s
/// rounds on every lookup. The ids in these maps are made by [`ExecutionId::new`], or chosen by
/// the store that runs the tracker (`Tracker::create_as`, `Tracker::restore`), never by the
/// clients of a server, so no one who could aim for collisions chooses where they land.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

/// Builds [`IdHasher`]s.
pub(crate) type IdHash = std::hash::BuildHasherDefault<IdHasher>;

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Not used by `ExecutionId`, which writes one u128; kept correct for any other key.
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(FIBONACCI);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0 ^ value).wrapping_mul(FIBONACCI);
    }

    #[allow(
        clippy::cast_possible_truncation,
        reason = "folding the halves: the truncation is the point"
    )]
    fn write_u128(&mut self, value: u128) {
        let folded = (value as u64) ^ ((value >> 64) as u64);
        self.0 = (self.0 ^ folded).wrapping_mul(FIBONACCI);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// 2^64 divided by the golden ratio: multiplying by it spreads the low bits into the high ones.
const FIBONACCI: u64 = 0x9E37_79B9_7F4A_7C15;

impl ExecutionId {
    /// The name this execution's own circuit breaker goes by in events, statuses and permits:
    /// `execution:` and the id.
    pub fn breaker_name(self) -> String {
        format!("execution:{self}")
    }

    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    pub(crate) fn shard(&self, shards: usize) -> usize {
        // The low bits of a v7 UUID are random: a fair shard key.
        (self.0.as_u128() as usize) % shards
    }
}

impl Default for ExecutionId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for ExecutionId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.0.simple())
    }
}

impl fmt::Debug for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An execution id string that is not `exec_` followed by 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid execution id {value:?}: expected \"exec_\" followed by 32 hex digits")]
pub struct ParseIdError {
    /// The rejected text.
    pub value: String,
}

impl FromStr for ExecutionId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = || ParseIdError { value: s.to_owned() };
        let hex = s.strip_prefix(PREFIX).ok_or_else(error)?;
        if hex.len() != 32 {
            return Err(error());
        }
        Uuid::try_parse(hex).map(Self).map_err(|_| error())
    }
}

impl Serialize for ExecutionId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ExecutionId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
