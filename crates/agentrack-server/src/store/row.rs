//! How an execution and an event are laid out in columns, the same for every backend.

use agentrack::{Event, ExecutionRecord, Transition};
use chrono::{DateTime, TimeZone, Utc};

use super::StoreError;
use crate::json_size::json_size;
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

/// At most this many of an execution's latest phase changes stay in its row (see
/// [`ExecutionColumns::of`]).
pub(crate) const ROW_PHASES: usize = 16;

/// At most this many bytes of serialized phase changes stay in an execution's row.
pub(crate) const ROW_PHASE_BYTES: usize = 8 * 1024;

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
    /// The number of the first phase change the row's JSON holds (`b`): the `phases` table
    /// holds the kept changes before it, and the `phase_count` column says up to where the
    /// table is written (the greatest `b` written so far).
    pub(super) phase_count: i64,
    /// The record as JSON, with only the recent tail of its history (see [`Self::of`]).
    pub(super) record: String,
}

impl<'a> ExecutionColumns<'a> {
    /// The row of `record`. Its JSON carries the record with only the longest suffix of its
    /// kept history of at most [`ROW_PHASES`] changes and [`ROW_PHASE_BYTES`] bytes, and
    /// `phase_history_dropped` set to the number of that suffix's first change (`b`); the kept
    /// changes before it, from the true `phase_history_dropped`, belong in `phases` (see
    /// [`spilled`]) and [`attach_phases`] puts them back. A golden path's whole history fits, so
    /// its row is the record as it is and its writes touch no other table, as when the row held
    /// the history; one that grows without bound rewrites only its bounded tail with every row
    /// write, each older change being written to `phases` once.
    pub(super) fn of(record: &'a ExecutionRecord, replay_from: u64) -> Result<Self, StoreError> {
        let (record_json, tail_start) = row_json(record)?;
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
            phase_count: to_sql(record.phase_history_dropped + tail_start as u64),
            record: record_json,
        })
    }
}

/// The row's JSON for `record` and the index in its `phase_history` where the part the row
/// holds starts.
fn row_json(record: &ExecutionRecord) -> Result<(String, usize), StoreError> {
    let encode = |record: &ExecutionRecord| serde_json::to_string(record).map_err(StoreError::corrupt);
    let history = &record.phase_history;
    if history.len() <= ROW_PHASES {
        let whole = encode(record)?;
        // The history is part of the whole: when that fits, so does the history, and the
        // changes need not be measured one by one.
        if whole.len() <= ROW_PHASE_BYTES {
            return Ok((whole, 0));
        }
        let start = tail_start(history);
        if start == 0 {
            return Ok((whole, 0));
        }
        return Ok((encode(&with_tail(record, start))?, start));
    }
    let start = tail_start(history);
    Ok((encode(&with_tail(record, start))?, start))
}

/// Where the longest suffix of `history` with at most [`ROW_PHASES`] changes and
/// [`ROW_PHASE_BYTES`] bytes of their JSON starts. Changes are never edited, so as the history
/// grows (or the cap trims it) this boundary only moves forward along the execution's changes.
fn tail_start(history: &[Transition]) -> usize {
    let mut bytes = 0;
    let mut start = history.len();
    while start > 0 && history.len() - start < ROW_PHASES {
        bytes += json_size(&history[start - 1]);
        if bytes > ROW_PHASE_BYTES {
            break;
        }
        start -= 1;
    }
    start
}

/// A copy of `record` whose history is its tail from `start` on, numbered from there: what the
/// row holds when the history is too long for it. Only for such rows, so the copy of the rest
/// is rare.
fn with_tail(record: &ExecutionRecord, start: usize) -> ExecutionRecord {
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
        phase_history,
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
        phase_history: phase_history.get(start..).unwrap_or_default().to_vec(),
        phase_history_dropped: phase_history_dropped + start as u64,
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

/// The phase changes of `record` numbered in `[from, up_to)` (clamped to those it keeps), each
/// with its number (counted from the execution's first change) and its JSON: what a row write
/// adds to `phases` when the row's tail has moved past them.
pub(super) fn spilled(record: &ExecutionRecord, from: u64, up_to: u64) -> Result<Vec<(i64, String)>, StoreError> {
    let first = record.phase_history_dropped;
    let skip = usize::try_from(from.saturating_sub(first)).unwrap_or(usize::MAX);
    let take = usize::try_from(up_to.saturating_sub(first.max(from))).unwrap_or(usize::MAX);
    (first..)
        .zip(&record.phase_history)
        .skip(skip)
        .take(take)
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

/// Gives each of `records` (decoded from their rows, so with only their history's tail, and
/// `phase_history_dropped` saying where that tail starts) the rest of its kept history:
/// `phases` are (execution id, number, JSON) rows in order of id and number. Of an execution's
/// rows, those below its tail's start are put before the tail, and the first of them is its
/// true `phase_history_dropped`; those from the tail's start on repeat the tail (a row written
/// before the tail moved there) and are ignored. Only a gapless run up to the tail is taken, so
/// the numbering stays true even if a row were missing. A record that has its whole history in
/// its row is left as it is; a change that cannot be decoded is left out (counted and logged as
/// an unreadable row).
pub(super) fn attach_phases<'a>(
    records: &mut [ExecutionRecord],
    phases: impl IntoIterator<Item = (&'a str, i64, &'a str)>,
) {
    let positions: std::collections::HashMap<String, usize> = records
        .iter()
        .enumerate()
        .filter(|(_, record)| record.phase_history_dropped > 0)
        .map(|(index, record)| (record.execution_id.to_string(), index))
        .collect();
    if positions.is_empty() {
        return;
    }
    let mut before: Vec<Vec<(u64, Transition)>> = vec![Vec::new(); records.len()];
    for (id, n, json) in phases {
        let Some(&index) = positions.get(id) else {
            continue;
        };
        let n = from_sql(n);
        if n >= records[index].phase_history_dropped {
            continue;
        }
        match serde_json::from_str(json) {
            Ok(transition) => before[index].push((n, transition)),
            Err(error) => super::unreadable::skip(id, &error),
        }
    }
    for (record, mut found) in records.iter_mut().zip(before) {
        if found.is_empty() {
            continue;
        }
        found.sort_by_key(|(n, _)| *n);
        // The gapless run that ends just before the tail.
        let mut next = record.phase_history_dropped;
        let mut run = found.len();
        while run > 0 && found[run - 1].0 + 1 == next {
            run -= 1;
            next -= 1;
        }
        let older: Vec<Transition> = found.drain(run..).map(|(_, transition)| transition).collect();
        record.phase_history_dropped = next;
        record.phase_history.splice(0..0, older);
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

/// The `step`th phase of a test execution with a long history: the three opening phases, then
/// thinking and LLM interaction in turn, every move valid.
#[cfg(test)]
pub(super) fn nth_phase(step: usize) -> agentrack::Phase {
    use agentrack::Phase;
    match step {
        0 => Phase::WebsocketSetup,
        1 => Phase::ContextValidation,
        2 => Phase::Starting,
        _ if step % 2 == 1 => Phase::Thinking,
        _ => Phase::LlmInteraction,
    }
}

#[cfg(test)]
mod tests {
    use agentrack::{NewExecution, Tracker};

    use super::*;

    fn with_changes(count: usize, blob: usize) -> ExecutionRecord {
        let tracker = Tracker::new();
        let id = tracker.create(NewExecution::new("a", "t", "u")).unwrap().execution_id;
        tracker.start(id).unwrap();
        for step in 0..count {
            let phase = nth_phase(step);
            let metadata = serde_json::json!({"blob": "x".repeat(blob)}).as_object().cloned();
            tracker.transition(id, phase, metadata).unwrap();
        }
        tracker.get(id).unwrap()
    }

    /// The row's record and the `phases` rows a writer would have written for `record`.
    fn stored(record: &ExecutionRecord) -> (ExecutionRecord, Vec<(u64, String)>) {
        let row = ExecutionColumns::of(record, 0).unwrap();
        let spilled = spilled(record, 0, from_sql(row.phase_count)).unwrap();
        (
            decode(&row.record).unwrap(),
            spilled.into_iter().map(|(n, json)| (from_sql(n), json)).collect(),
        )
    }

    fn attached(mut row: ExecutionRecord, phases: &[(u64, String)]) -> ExecutionRecord {
        let id = row.execution_id.to_string();
        attach_phases(
            std::slice::from_mut(&mut row),
            phases.iter().map(|(n, json)| (id.as_str(), to_sql(*n), json.as_str())),
        );
        row
    }

    #[test]
    fn a_short_history_stays_whole_in_the_row() {
        let record = with_changes(16, 100);
        let (row, phases) = stored(&record);
        assert_eq!(row, record);
        assert!(phases.is_empty());
    }

    #[test]
    fn the_row_keeps_at_most_16_changes_and_8_kib_of_them() {
        let record = with_changes(17, 10);
        let (row, phases) = stored(&record);
        assert_eq!(
            (row.phase_history.len(), row.phase_history_dropped, phases.len()),
            (16, 1, 1)
        );
        assert_eq!(attached(row, &phases), record);
        // About 1 KiB each: as many as fit in 8 KiB.
        let record = with_changes(10, 1000);
        let size = serde_json::to_vec(&record.phase_history[9]).unwrap().len();
        let (row, phases) = stored(&record);
        assert_eq!((row.phase_history.len(), phases.len()), (8192 / size, 10 - 8192 / size));
        assert_eq!(attached(row, &phases), record);
        // One change larger than the bound: the row holds none.
        let record = with_changes(2, 9000);
        let (row, phases) = stored(&record);
        assert_eq!((row.phase_history.len(), phases.len()), (0, 2));
        assert_eq!(attached(row, &phases), record);
    }

    #[test]
    fn rows_from_the_tail_on_and_before_a_gap_are_left_out() {
        let record = with_changes(20, 10);
        let (row, mut phases) = stored(&record);
        assert_eq!(phases.len(), 4);
        // A row written before the tail moved past 4..6: ignored.
        phases.extend(
            spilled(&record, 4, 6)
                .unwrap()
                .into_iter()
                .map(|(n, json)| (from_sql(n), json)),
        );
        assert_eq!(attached(row.clone(), &phases), record);
        // Without change 1, only 2 and 3 are put back, and the record says 2 were dropped.
        phases.retain(|(n, _)| *n != 1);
        let back = attached(row, &phases);
        assert_eq!(back.phase_history_dropped, 2);
        assert_eq!(back.phase_history[..], record.phase_history[2..]);
    }
}
