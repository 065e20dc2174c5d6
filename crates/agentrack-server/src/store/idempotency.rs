//! What the store keeps of requests sent with an `Idempotency-Key`: the request's fingerprint
//! and, once it was answered, its answer. Kept in the store (not in a node's memory) so that a
//! retry finds the first answer after a restart and on any node of a cluster, and reserved with
//! one atomic insert, so that of two requests with one key only one ever runs. Entries expire
//! after `idempotency_retention` (the retention purge removes them).

use chrono::{DateTime, Utc};

/// One operation on the kept keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOp {
    /// Reserve `key` for a request with `fingerprint`, unless it is already kept.
    Reserve {
        /// Whose key it is (keys of different callers never meet).
        scope: String,
        /// The client's key.
        key: String,
        /// The request's method, path and body, hashed.
        fingerprint: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Keep the answer of the request that reserved `key`.
    Complete {
        /// Whose key it is.
        scope: String,
        /// The client's key.
        key: String,
        /// The answer's status.
        status: u16,
        /// The answer's body (JSON).
        body: String,
    },
    /// Forget a reservation whose request changed nothing (it failed before): the key may be
    /// used again.
    Release {
        /// Whose key it is.
        scope: String,
        /// The client's key.
        key: String,
    },
    /// Forget every key reserved before `before`.
    Expire {
        /// The cut-off.
        before: DateTime<Utc>,
    },
}

/// What the store says about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// Reserved now, by this request: it runs.
    Reserved,
    /// Reserved by an earlier request with this fingerprint, not answered yet.
    Pending {
        /// The earlier request's fingerprint.
        fingerprint: String,
    },
    /// Answered.
    Done {
        /// The earlier request's fingerprint.
        fingerprint: String,
        /// Its answer's status.
        status: u16,
        /// Its answer's body.
        body: String,
    },
    /// The answer to [`KeyOp::Complete`], [`KeyOp::Release`] and [`KeyOp::Expire`]: how many
    /// keys it changed.
    Changed(u64),
}

impl KeyState {
    /// The state of a kept key from its stored columns.
    pub fn stored(fingerprint: String, status: Option<i64>, body: Option<String>) -> Self {
        match (status.and_then(|status| u16::try_from(status).ok()), body) {
            (Some(status), Some(body)) => Self::Done {
                fingerprint,
                status,
                body,
            },
            _ => Self::Pending { fingerprint },
        }
    }
}
