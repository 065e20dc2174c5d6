//! Direct edits of a record, for code written against the original that assigns to a record's
//! fields: back-dating timestamps to simulate time, forcing states, setting breaker counters.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::breaker::BreakerConfig;
use crate::error::TrackerError;
use crate::event::{EventKind, Owner};
use crate::id::ExecutionId;
use crate::record::ExecutionRecord;
use crate::slot::Slot;
use crate::tracker::{Change, Tracker};

impl Tracker {
    /// Overwrites fields of an execution's record, bypassing the lifecycle and phase rules, and
    /// makes the tracker act on the new values from then on: a back-dated `last_heartbeat` makes
    /// the execution dead to the next sweep, a back-dated `started_at` (or a shorter `timeout`)
    /// times it out, a back-dated `completed_at` lets the purge drop it, a terminal `state`
    /// finishes it (with its terminal event) and an alive one revives it, new owner fields
    /// re-index it, and the breaker fields set its breaker.
    ///
    /// Emits `RecordEdited` naming the changed fields (nothing when nothing changed).
    ///
    /// # Errors
    ///
    /// `NotFound`; `InvalidInput` when the edit changes `execution_id`, `tenant` or `seq`, or
    /// sets a zero timeout. A rejected edit changes nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use agentrack::{ExecutionState, ManualClock, NewExecution, Tracker, TrackerConfig};
    ///
    /// let clock = Arc::new(ManualClock::new());
    /// let tracker = Tracker::with_clock(TrackerConfig::default(), clock.clone());
    /// let id = tracker.create(NewExecution::new("researcher", "thread-1", "user-1"))?.id();
    /// let now = tracker.clock().now();
    /// tracker.edit(id, |record| record.last_heartbeat = now - chrono::TimeDelta::seconds(15))?;
    /// let sweep = tracker.sweep();
    /// assert_eq!(sweep.dead.len(), 1);
    /// assert_eq!(tracker.get(id)?.state, ExecutionState::Dead);
    /// # Ok::<(), agentrack::TrackerError>(())
    /// ```
    pub fn edit(&self, id: ExecutionId, edit: impl FnOnce(&mut ExecutionRecord)) -> Result<Change, TrackerError> {
        let change = {
            let slot = self.slot(id)?;
            let mut guard = slot.lock();
            // Through a plain reference, so the record and the times can be borrowed apart.
            let slot: &mut Slot = &mut guard;
            let mut record = slot.record.clone();
            edit(&mut record);
            check_edit(&slot.record, &record)?;
            let fields = changed_fields(&slot.record, &record);
            if fields.is_empty() {
                return Ok(Change {
                    execution_id: id,
                    events: Vec::new(),
                });
            }
            let now = self.inner.clock.now();
            let mono = self.mono();
            let at = |wall: DateTime<Utc>| mono_at(now, mono, wall);
            let before = std::mem::replace(&mut slot.record, record);
            let after = &slot.record;
            if after.started_at != before.started_at || after.timeout != before.timeout {
                slot.execution_due = at(after.started_at) + after.timeout;
            }
            if after.timeout_config != before.timeout_config {
                slot.breaker.config = match after.timeout_config.as_deref() {
                    Some(custom) => Arc::new(BreakerConfig::from(custom)),
                    None => Arc::clone(&self.inner.default_breaker),
                };
            }
            if after.last_heartbeat != before.last_heartbeat {
                slot.heartbeat_mono = at(after.last_heartbeat);
            }
            if (&after.agent_name, &after.thread_id, &after.user_id)
                != (&before.agent_name, &before.thread_id, &before.user_id)
            {
                self.reindex(slot);
            }
            let after = &slot.record;
            let breaker = (
                after.circuit_breaker_state,
                after.circuit_breaker_failures,
                after.last_failure_time,
                after.next_attempt_time,
            );
            if breaker
                != (
                    before.circuit_breaker_state,
                    before.circuit_breaker_failures,
                    before.last_failure_time,
                    before.next_attempt_time,
                )
            {
                let (state, failures, last, next) = breaker;
                slot.breaker.force(state, failures, last, next, mono, now);
            }
            let mut events = vec![self.emit(
                slot,
                now,
                EventKind::RecordEdited {
                    fields: fields.iter().map(|f| (*f).to_owned()).collect(),
                },
            )];
            let (was, is) = (before.state, slot.record.state);
            if was.is_alive() && is.is_terminal() {
                // Finish through the one path that keeps the counters and indexes right, then
                // keep the completion time the edit gave, if it gave one.
                slot.record.state = was;
                let completed_at = slot.record.completed_at.filter(|_| fields.contains(&"completed_at"));
                events.push(self.finish(slot, is, now, mono));
                if let Some(completed_at) = completed_at {
                    self.set_completed_at(slot, completed_at, at(completed_at));
                }
            } else {
                if was.is_terminal() && is.is_alive() {
                    self.revive(slot);
                }
                self.inner.counters.moved(was, is);
                if is.is_terminal() && fields.contains(&"completed_at") {
                    let completed_at = slot.record.completed_at.unwrap_or(now);
                    self.set_completed_at(slot, completed_at, at(completed_at));
                }
            }
            if slot.record.is_alive() {
                self.rearm(slot);
            }
            Change {
                execution_id: id,
                events,
            }
        };
        self.enforce_finished_cap();
        Ok(change)
    }

    fn set_completed_at(&self, slot: &mut Slot, completed_at: DateTime<Utc>, mono: Duration) {
        slot.record.completed_at = Some(completed_at);
        slot.completed_mono = Some(mono);
        // The earlier entry goes stale: the purge checks `completed_mono` before dropping.
        self.inner.finished.arm(slot.record.execution_id, mono);
    }

    /// Makes a finished execution alive again (an edit set an alive state).
    fn revive(&self, slot: &mut Slot) {
        slot.completed_mono = None;
        // The old token was cancelled when the execution ended; a new one is made on request.
        slot.cancel = None;
        self.inner.active.insert(slot.record.execution_id, ());
        self.inner.finished_count.fetch_sub(1, Ordering::Relaxed);
    }

    /// Moves the execution to the indexes its record's owner fields now name.
    fn reindex(&self, slot: &mut Slot) {
        let id = slot.record.execution_id;
        let old = Arc::clone(&slot.owner);
        self.inner.by_agent.remove(&old.agent_name, id);
        self.inner.by_thread.remove(&old.thread_id, id);
        self.inner.by_user.remove(&old.user_id, id);
        let record = &slot.record;
        let owner = Arc::new(Owner {
            tenant: record.tenant.clone(),
            user_id: record.user_id.clone(),
            thread_id: record.thread_id.clone(),
            agent_name: record.agent_name.clone(),
        });
        self.inner.by_agent.insert(&owner.agent_name, id);
        self.inner.by_thread.insert(&owner.thread_id, id);
        self.inner.by_user.insert(&owner.user_id, id);
        slot.owner = owner;
    }
}

/// Rejects edits of what identifies the record or orders its events.
fn check_edit(before: &ExecutionRecord, after: &ExecutionRecord) -> Result<(), TrackerError> {
    let fixed = [
        ("execution_id", before.execution_id == after.execution_id),
        ("tenant", before.tenant == after.tenant),
        ("seq", before.seq == after.seq),
    ];
    if let Some((field, _)) = fixed.into_iter().find(|(_, same)| !same) {
        return Err(TrackerError::InvalidInput {
            field,
            reason: "cannot be changed by an edit".into(),
        });
    }
    if after.timeout.is_zero() {
        return Err(TrackerError::InvalidInput {
            field: "timeout",
            reason: "must be greater than zero".into(),
        });
    }
    Ok(())
}

fn changed_fields(before: &ExecutionRecord, after: &ExecutionRecord) -> Vec<&'static str> {
    macro_rules! changed {
        ($($field:ident),* $(,)?) => {
            [$((stringify!($field), before.$field != after.$field)),*]
                .into_iter()
                .filter_map(|(name, changed)| changed.then_some(name))
                .collect()
        };
    }
    changed!(
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
        metadata,
        phase_history,
        warning_count,
        error_count,
        timeout_config,
        circuit_breaker_state,
        circuit_breaker_failures,
        last_failure_time,
        next_attempt_time,
    )
}

/// The monotonic time that corresponds to wall time `wall`, given that `now` is `mono`.
fn mono_at(now: DateTime<Utc>, mono: Duration, wall: DateTime<Utc>) -> Duration {
    match (now - wall).to_std() {
        Ok(ago) => mono.saturating_sub(ago),
        Err(_) => mono + (wall - now).to_std().unwrap_or_default(),
    }
}
