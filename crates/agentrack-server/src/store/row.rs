//! How an execution and an event are laid out in columns, the same for every backend.

use agentrack::{Event, ExecutionRecord};
use chrono::{DateTime, TimeZone, Utc};

use super::StoreError;
use crate::serialized_event::SerializedEvent;

/// Milliseconds since the epoch, as timestamps are stored.
pub(super) fn millis(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

/// A stored timestamp back as a time (the epoch for one out of range).
pub(super) fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// A sequence number as a signed 64-bit column (numbers past `i64::MAX` never occur).
pub(super) fn to_sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored sequence number back (a negative one, which is never written, as 0).
pub(super) fn from_sql(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// The columns of an execution's materialised row.
pub(super) struct ExecutionColumns<'a> {
    pub(super) execution_id: String,
    pub(super) tenant: &'a str,
    pub(super) user_id: &'a str,
    pub(super) thread_id: &'a str,
    pub(super) agent_name: &'a str,
    pub(super) state: &'static str,
    pub(super) started_at_ms: i64,
    pub(super) completed_at_ms: Option<i64>,
    /// The per-execution sequence number of the last event the row reflects.
    pub(super) seq: i64,
    /// Where in the log a replay onto this row starts ([`Batch::replay_from`](super::Batch)).
    pub(super) replay_from: i64,
    /// The whole record as JSON.
    pub(super) record: String,
}

impl<'a> ExecutionColumns<'a> {
    pub(super) fn of(record: &'a ExecutionRecord, replay_from: u64) -> Result<Self, StoreError> {
        Ok(Self {
            execution_id: record.execution_id.to_string(),
            tenant: &record.tenant,
            user_id: &record.user_id,
            thread_id: &record.thread_id,
            agent_name: &record.agent_name,
            state: record.state.as_str(),
            started_at_ms: millis(record.started_at),
            completed_at_ms: record.completed_at.map(millis),
            seq: to_sql(record.seq),
            replay_from: to_sql(replay_from),
            record: serde_json::to_string(record).map_err(StoreError::corrupt)?,
        })
    }
}

/// The columns of an event in the log.
pub(super) struct EventColumns<'a> {
    pub(super) global_seq: i64,
    pub(super) execution_id: Option<String>,
    pub(super) seq: Option<i64>,
    pub(super) tenant: Option<&'a str>,
    pub(super) user_id: Option<&'a str>,
    pub(super) thread_id: Option<&'a str>,
    pub(super) kind: &'static str,
    pub(super) timestamp_ms: i64,
    pub(super) json: &'a str,
}

impl<'a> EventColumns<'a> {
    pub(super) fn of(row: &'a SerializedEvent) -> Self {
        let event = &row.event;
        let scope = event.execution.as_ref();
        Self {
            global_seq: to_sql(event.global_seq),
            execution_id: scope.map(|s| s.execution_id.to_string()),
            seq: scope.map(|s| to_sql(s.seq)),
            tenant: scope.map(|s| s.owner.tenant.as_str()),
            user_id: scope.map(|s| s.owner.user_id.as_str()),
            thread_id: scope.map(|s| s.owner.thread_id.as_str()),
            kind: event.kind.name(),
            timestamp_ms: millis(event.timestamp),
            json: row.text(),
        }
    }
}

/// A stored record with a terminal event applied, for an execution that left memory before its
/// row could be snapshotted; `None` when there is nothing to change (the event is not terminal,
/// or the stored record already is).
pub(super) fn finished(mut record: ExecutionRecord, event: &Event) -> Option<ExecutionRecord> {
    let finished = event.kind.finished()?;
    if record.state.is_terminal() {
        return None;
    }
    record.state = finished.state;
    record.completed_at = Some(event.timestamp);
    record.updated_at = event.timestamp;
    record.last_heartbeat = finished.last_heartbeat;
    if finished.error.is_some() {
        record.error.clone_from(&finished.error);
    }
    if finished.result.is_some() {
        record.result.clone_from(&finished.result);
    }
    if let Some(scope) = &event.execution {
        record.seq = record.seq.max(scope.seq);
    }
    Some(record)
}

/// Decodes a stored record.
pub(crate) fn decode(text: &str) -> Result<ExecutionRecord, StoreError> {
    serde_json::from_str(text).map_err(StoreError::corrupt)
}
