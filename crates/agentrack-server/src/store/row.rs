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
    /// How many phase changes the row accounts for ([`ExecutionRecord::phase_count`]): the
    /// history's rows below this number are written (see [`new_phases`]).
    pub(super) phase_count: i64,
    /// The record as JSON, without its phase history (which has rows of its own).
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
            phase_count: to_sql(record.phase_count()),
            record: serde_json::to_string(&without_history(record)).map_err(StoreError::corrupt)?,
        })
    }
}

/// A copy of `record` with an empty phase history: what the execution's row holds. The history
/// is appended to rows of its own, one per change (`phases`), so that writing a row never
/// rewrites it.
fn without_history(record: &ExecutionRecord) -> ExecutionRecord {
    // Destructured, so that a new field cannot be forgotten here.
    let ExecutionRecord {
        execution_id,
        tenant,
        agent_name,
        thread_id,
        user_id,
        state,
        current_phase,
        started_at,
        last_heartbeat,
        updated_at,
        phase_entered_at,
        completed_at,
        error,
        result,
        heartbeat_count,
        timeout,
        heartbeat_timeout,
        metadata,
        phase_history: _,
        phase_history_dropped,
        warning_count,
        error_count,
        timeout_config,
        circuit_breaker_state,
        circuit_breaker_failures,
        last_failure_time,
        next_attempt_time,
        seq,
    } = record;
    ExecutionRecord {
        execution_id: *execution_id,
        tenant: tenant.clone(),
        agent_name: agent_name.clone(),
        thread_id: thread_id.clone(),
        user_id: user_id.clone(),
        state: *state,
        current_phase: *current_phase,
        started_at: *started_at,
        last_heartbeat: *last_heartbeat,
        updated_at: *updated_at,
        phase_entered_at: *phase_entered_at,
        completed_at: *completed_at,
        error: error.clone(),
        result: result.clone(),
        heartbeat_count: *heartbeat_count,
        timeout: *timeout,
        heartbeat_timeout: *heartbeat_timeout,
        metadata: metadata.clone(),
        phase_history: Vec::new(),
        phase_history_dropped: *phase_history_dropped,
        warning_count: *warning_count,
        error_count: *error_count,
        timeout_config: timeout_config.clone(),
        circuit_breaker_state: *circuit_breaker_state,
        circuit_breaker_failures: *circuit_breaker_failures,
        last_failure_time: *last_failure_time,
        next_attempt_time: *next_attempt_time,
        seq: *seq,
    }
}

/// The phase changes of `record` its stored history lacks, given that the stored row accounts
/// for `stored` changes: each with its number (counted from the execution's first change) and
/// its JSON.
pub(super) fn new_phases(record: &ExecutionRecord, stored: u64) -> Result<Vec<(i64, String)>, StoreError> {
    let first = record.phase_history_dropped;
    let skip = usize::try_from(stored.saturating_sub(first)).unwrap_or(usize::MAX);
    (first..)
        .zip(&record.phase_history)
        .skip(skip)
        .map(|(n, transition)| {
            Ok((
                to_sql(n),
                serde_json::to_string(transition).map_err(StoreError::corrupt)?,
            ))
        })
        .collect()
}

/// Below this number, `record`'s stored history rows are no longer kept (the cap dropped them
/// from the record); `None` when nothing was dropped.
pub(super) fn phases_dropped_below(record: &ExecutionRecord) -> Option<i64> {
    (record.phase_history_dropped > 0).then(|| to_sql(record.phase_history_dropped))
}

/// Gives each of `records` (decoded from their rows, so without history) its stored history:
/// `phases` are (execution id, number, JSON) rows in order of id and number. A row that cannot
/// be decoded is left out (counted and logged as an unreadable row).
pub(super) fn attach_phases<'a>(
    records: &mut [ExecutionRecord],
    phases: impl IntoIterator<Item = (&'a str, i64, &'a str)>,
) {
    let positions: std::collections::HashMap<String, usize> = records
        .iter()
        .enumerate()
        .map(|(index, record)| (record.execution_id.to_string(), index))
        .collect();
    for (id, n, json) in phases {
        let Some(&index) = positions.get(id) else {
            continue;
        };
        let record = &mut records[index];
        if from_sql(n) < record.phase_history_dropped {
            continue;
        }
        match serde_json::from_str(json) {
            Ok(transition) => record.phase_history.push(transition),
            Err(error) => super::unreadable::skip(id, &error),
        }
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
