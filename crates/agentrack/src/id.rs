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
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExecutionId(Uuid);

impl std::hash::Hash for ExecutionId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // One integer write instead of a length-prefixed byte slice: ids are hashed on every
        // lookup.
        state.write_u128(self.0.as_u128());
    }
}

impl ExecutionId {
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
