//! Bringing a stored row up to its log: the events after the row's snapshot, applied to it.
//!
//! The pipeline writes an execution's row at once only for changes it cannot rebuild from its
//! events (creation, state changes, the terminal event, breaker changes, edits); for the bulk of
//! the traffic — phase transitions, agent-state updates and heartbeats — it writes the event at
//! once and the row later, at least every `heartbeat_flush` (see the pipeline). After a crash a
//! row can therefore be behind its log by those kinds only, and [`apply`] replays exactly those.

use agentrack::{Event, EventKind, ExecutionRecord};

/// Whether an event of this kind can wait for its row: its own content is enough to rebuild
/// what it changed ([`apply`]).
pub(crate) fn row_can_wait(kind: &EventKind) -> bool {
    kind.transition().is_some() || matches!(kind, EventKind::AgentStateUpdated { .. } | EventKind::Heartbeat { .. })
}

/// Applies stored events (their JSON, in log order) to the records they belong to; returns the
/// executions that changed.
pub(crate) fn catch_up<'a>(
    records: &mut [ExecutionRecord],
    events: impl IntoIterator<Item = &'a str>,
) -> Vec<agentrack::ExecutionId> {
    let mut changed = Vec::new();
    let positions: std::collections::HashMap<agentrack::ExecutionId, usize> = records
        .iter()
        .enumerate()
        .map(|(index, record)| (record.execution_id, index))
        .collect();
    for json in events {
        let event: Event = match serde_json::from_str(json) {
            Ok(event) => event,
            Err(error) => {
                tracing::error!(%error, "skipping an unreadable stored event while replaying");
                continue;
            }
        };
        let index = event
            .execution
            .as_ref()
            .and_then(|scope| positions.get(&scope.execution_id));
        if let Some(&index) = index
            && apply(&mut records[index], &event)
        {
            changed.push(records[index].execution_id);
        }
    }
    changed.sort();
    changed.dedup();
    changed
}

/// Applies `event` to `record` if it is newer than the record; returns whether it did.
pub(crate) fn apply(record: &mut ExecutionRecord, event: &Event) -> bool {
    let Some(scope) = &event.execution else {
        return false;
    };
    if scope.execution_id != record.execution_id || scope.seq <= record.seq {
        return false;
    }
    let at = event.timestamp;
    match &event.kind {
        EventKind::Heartbeat { heartbeat_count } => {
            record.heartbeat_count = *heartbeat_count;
            record.last_heartbeat = at;
            record.updated_at = at;
        }
        EventKind::AgentStateUpdated {
            warning_count,
            error_count,
            metadata,
        } => {
            record.warning_count = *warning_count;
            record.error_count = *error_count;
            record.metadata.clone_from(metadata);
            record.updated_at = at;
        }
        kind => {
            let Some(transition) = kind.transition() else {
                // A kind whose row is always written with it: nothing of it can be missing.
                record.seq = scope.seq;
                return false;
            };
            record.phase_history.push(transition.clone());
            record.current_phase = transition.to_phase;
            record.phase_entered_at = at;
            if record.is_alive() {
                record.last_heartbeat = at;
                record.updated_at = at;
            }
        }
    }
    record.seq = scope.seq;
    true
}

#[cfg(test)]
mod tests {
    use agentrack::{AgentStateUpdate, NewExecution, Phase, Tracker};
    use serde_json::json;

    use super::*;

    #[test]
    fn a_row_behind_its_log_is_rebuilt_from_the_events_that_can_wait() {
        let tracker = Tracker::new();
        let id = tracker.create(NewExecution::new("a", "t", "u")).unwrap().id();
        tracker.start(id).unwrap();
        tracker.heartbeat(id).unwrap();
        let row = tracker.get(id).unwrap();
        let mut events = Vec::new();
        events.extend(tracker.transition(id, Phase::WebsocketSetup, None).unwrap().events);
        events.extend(tracker.heartbeat(id).unwrap().events);
        let update = AgentStateUpdate {
            warning_count: Some(2),
            metadata: json!({"k": "v"}).as_object().cloned(),
            ..AgentStateUpdate::default()
        };
        events.extend(tracker.update_agent_state(id, update).unwrap().events);
        events.extend(
            tracker
                .transition(id, Phase::ContextValidation, json!({"x": 1}).as_object().cloned())
                .unwrap()
                .events,
        );
        assert!(events.iter().all(|e| row_can_wait(&e.kind)), "only kinds that can wait");
        let mut rebuilt = row.clone();
        for event in &events {
            assert!(apply(&mut rebuilt, event));
        }
        assert_eq!(rebuilt, tracker.get(id).unwrap(), "the same record as in memory");
        // Events the row already reflects change nothing.
        let before = rebuilt.clone();
        for event in &events {
            assert!(!apply(&mut rebuilt, event));
        }
        assert_eq!(rebuilt, before);
    }
}
