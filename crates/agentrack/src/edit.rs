//! Direct edits of a record, for code written against the original that assigns to a record's
//! fields: back-dating timestamps to simulate time, forcing states, setting breaker counters.
//!
//! # Finality
//!
//! Every execution has exactly one terminal event (completed, failed, timed out, dead or
//! cancelled): stores, AG-UI clients and counters rely on it. [`Tracker::edit`] keeps that
//! promise. It may finish an alive execution (emitting its one terminal event) and it may change
//! any other field of a finished one (a back-dated `completed_at` for the purge, a corrected
//! `error`), but it refuses to change a finished execution's `state`: a revived execution could
//! finish a second time, and a relabelled one would contradict the terminal event already sent.
//!
//! The Python drop-in needs that escape hatch. The original's records were plain dataclasses,
//! and code written against it assigns `record.state = ExecutionState.RUNNING` to a finished
//! record and then completes it again. That path is `Tracker::legacy_edit`, compiled only with
//! the `legacy` cargo feature, which only the `agentrack-py` crate turns on. A feature rather
//! than a second method alone, so that the name and the opt-in say at every call site what it
//! is, and an application built on the core (the server, a crates.io user) gets an API in which
//! a second terminal event cannot be expressed. (Cargo unifies features within one workspace
//! build, so the server binary built alongside the Python crate links a core that has the
//! method; nothing outside `agentrack-py` calls it.)

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::TrackerError;
use crate::event::{Event, EventKind, Owner};
use crate::id::ExecutionId;
use crate::record::ExecutionRecord;
use crate::slot::Slot;
use crate::state::ExecutionState;
use crate::tracker::{Change, Tracker, Want};

/// Whether an edit must leave a finished execution's state alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finality {
    /// A finished execution's state is final ([`Tracker::edit`]).
    Kept,
    /// A finished execution's state may be overwritten (`Tracker::legacy_edit`).
    #[cfg_attr(not(feature = "legacy"), allow(dead_code))]
    Waived,
}

/// The time of an edit, on both timelines.
#[derive(Debug, Clone, Copy)]
struct EditTime {
    wall: DateTime<Utc>,
    mono: Duration,
}

impl EditTime {
    /// The monotonic time that corresponds to wall time `wall`.
    fn at(self, wall: DateTime<Utc>) -> Duration {
        mono_at(self.wall, self.mono, wall)
    }
}

impl Tracker {
    /// Overwrites fields of an execution's record, bypassing the lifecycle and phase rules, and
    /// makes the tracker act on the new values from then on: a back-dated `last_heartbeat` makes
    /// the execution dead to the next sweep, a back-dated `started_at` (or a shorter `timeout`)
    /// times it out, a back-dated `completed_at` lets the purge drop it, a terminal `state`
    /// finishes an alive execution (with its one terminal event), new owner fields re-index it,
    /// and the breaker fields set its breaker.
    ///
    /// A finished execution's `state` is final (see the module docs): an edit may change its
    /// other fields, never its state, so no edit can give an execution a second terminal event.
    ///
    /// Emits `RecordEdited` naming the changed fields (nothing when nothing changed).
    ///
    /// # Errors
    ///
    /// `NotFound`; `InvalidInput` when the edit changes `execution_id`, `tenant` or `seq`, sets
    /// a zero timeout, or changes the `state` of a finished execution. A rejected edit changes
    /// nothing.
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
    ///
    /// // Dead is final: no edit brings it back.
    /// assert!(tracker.edit(id, |record| record.state = ExecutionState::Running).is_err());
    /// # Ok::<(), agentrack::TrackerError>(())
    /// ```
    pub fn edit(&self, id: ExecutionId, edit: impl FnOnce(&mut ExecutionRecord)) -> Result<Change, TrackerError> {
        self.apply_edit(id, edit, Finality::Kept)
    }

    /// As [`Tracker::edit`], except that a finished execution's `state` may be overwritten, as
    /// the original's plain record objects allowed: an alive state revives it (it is active
    /// again and may finish again, with a second terminal event), another terminal state
    /// relabels it (the counters move; no new terminal event).
    ///
    /// Only for the Python drop-in's attribute writes (the `legacy` feature; see the module
    /// docs for why it exists and why it is kept apart).
    ///
    /// # Errors
    ///
    /// As [`Tracker::edit`], without the refusal of a finished execution's state change.
    #[cfg(feature = "legacy")]
    pub fn legacy_edit(
        &self,
        id: ExecutionId,
        edit: impl FnOnce(&mut ExecutionRecord),
    ) -> Result<Change, TrackerError> {
        self.apply_edit(id, edit, Finality::Waived)
    }

    fn apply_edit(
        &self,
        id: ExecutionId,
        edit: impl FnOnce(&mut ExecutionRecord),
        finality: Finality,
    ) -> Result<Change, TrackerError> {
        let change = {
            let slot = self.slot(id)?;
            let mut guard = slot.lock();
            // Through a plain reference, so the record and the times can be borrowed apart.
            let slot: &mut Slot = &mut guard;
            let mut record = slot.record.clone();
            edit(&mut record);
            check_edit(&slot.record, &record, finality)?;
            let fields = changed_fields(&slot.record, &record);
            let mut events = Vec::new();
            if !fields.is_empty() {
                let time = EditTime {
                    wall: self.inner.clock.now(),
                    mono: self.mono(),
                };
                let before = std::mem::replace(&mut slot.record, record);
                self.follow_fields(slot, &before, time);
                let fields_named = fields.iter().map(|f| (*f).to_owned()).collect();
                events.push(self.emit(slot, time.wall, EventKind::RecordEdited { fields: fields_named }));
                events.extend(self.follow_state(slot, before.state, &fields, time));
                if slot.record.is_alive() {
                    self.rearm(slot);
                }
            }
            Change {
                execution_id: id,
                events,
            }
        };
        self.enforce_finished_cap();
        Ok(change)
    }

    /// Brings the deadlines, breaker and indexes in line with the edited record.
    fn follow_fields(&self, slot: &mut Slot, before: &ExecutionRecord, time: EditTime) {
        let after = &slot.record;
        if after.started_at != before.started_at || after.timeout != before.timeout {
            slot.execution_due = time.at(after.started_at) + after.timeout;
        }
        if after.timeout_config != before.timeout_config {
            let config = self.breaker_config(after.timeout_config.as_deref());
            if let Some(calls) = slot.calls.as_deref_mut() {
                calls.breaker.config = config;
            }
        }
        if after.last_heartbeat != before.last_heartbeat {
            slot.heartbeat_mono = time.at(after.last_heartbeat);
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
        let was = (
            before.circuit_breaker_state,
            before.circuit_breaker_failures,
            before.last_failure_time,
            before.next_attempt_time,
        );
        if breaker != was {
            let (state, failures, last, next) = breaker;
            self.calls(slot)
                .breaker
                .force(state, failures, last, next, time.mono, time.wall);
        }
    }

    /// Acts on a state the edit set (it was `was`): finishes an alive execution with its one
    /// terminal event, or moves the counters. Returns the terminal event, if any.
    fn follow_state(
        &self,
        slot: &mut Slot,
        was: ExecutionState,
        fields: &[&str],
        time: EditTime,
    ) -> Option<Arc<Event>> {
        let is = slot.record.state;
        let edited_completion = fields.contains(&"completed_at");
        if was.is_alive() && is.is_terminal() {
            // Finish through the one path that keeps the counters and indexes right, then keep
            // the completion time the edit gave, if it gave one.
            slot.record.state = was;
            let completed_at = slot.record.completed_at.filter(|_| edited_completion);
            let event = self.finish(slot, is, time.wall, time.mono, Want::Events);
            if let Some(completed_at) = completed_at {
                self.set_completed_at(slot, completed_at, time.at(completed_at));
            }
            return event;
        }
        if was.is_terminal() && is.is_alive() {
            // Only `legacy_edit` gets here: `check_edit` refuses it otherwise.
            self.revive(slot);
        }
        self.inner.counters.moved(was, is);
        if is.is_terminal() && edited_completion {
            let completed_at = slot.record.completed_at.unwrap_or(time.wall);
            self.set_completed_at(slot, completed_at, time.at(completed_at));
        }
        None
    }

    fn set_completed_at(&self, slot: &mut Slot, completed_at: DateTime<Utc>, mono: Duration) {
        slot.record.completed_at = Some(completed_at);
        slot.completed_mono = Some(mono);
        // The earlier entry goes stale: the purge checks `completed_mono` before dropping.
        self.inner.finished.arm(slot.record.execution_id, mono);
    }

    /// Makes a finished execution alive again (a legacy edit set an alive state).
    fn revive(&self, slot: &mut Slot) {
        slot.completed_mono = None;
        // The old token was cancelled when the execution ended; a new one is made on request.
        slot.cancel = None;
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
        self.inner.owners.release(&old);
        let owner = self.inner.owners.acquire(Owner {
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

/// Rejects edits of what identifies the record or orders its events, and (unless finality is
/// waived) of a finished execution's state.
fn check_edit(before: &ExecutionRecord, after: &ExecutionRecord, finality: Finality) -> Result<(), TrackerError> {
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
    if finality == Finality::Kept && before.state.is_terminal() && after.state != before.state {
        return Err(TrackerError::InvalidInput {
            field: "state",
            reason: format!(
                "the execution is already {}, and a finished execution's state is final (its one \
                 terminal event was sent); other fields can still be edited",
                before.state
            ),
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
