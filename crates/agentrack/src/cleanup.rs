//! Removing finished executions: by hand into the completed history, by age, and over the cap.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;
use std::time::Duration;

use crate::error::TrackerError;
use crate::id::ExecutionId;
use crate::record::ExecutionRecord;
use crate::slot::Slot;
use crate::tracker::Tracker;

impl Tracker {
    /// Removes a finished execution from memory and every index, keeping it in the completed
    /// history (capped at `history_cap`). Returns the record.
    ///
    /// # Errors
    ///
    /// `NotFound`, or `StillAlive`.
    pub fn cleanup(&self, id: ExecutionId) -> Result<ExecutionRecord, TrackerError> {
        let state = self.state(id)?;
        if state.is_alive() {
            return Err(TrackerError::StillAlive {
                execution_id: id,
                state,
            });
        }
        let record = self
            .remove_finished(id)
            .map(|slot| slot.lock().record.clone())
            .ok_or(TrackerError::NotFound { execution_id: id })?;
        let mut history = self.inner.history.lock();
        history.push_back(record.clone());
        while history.len() > self.inner.config.history_cap {
            history.pop_front();
        }
        Ok(record)
    }

    /// Records removed by [`Tracker::cleanup`], oldest first.
    pub fn completed_history(&self) -> Vec<ExecutionRecord> {
        self.inner.history.lock().iter().cloned().collect()
    }

    /// Drops finished records that completed `age` or more ago. Returns how many.
    pub fn purge_finished(&self, age: Duration) -> usize {
        let Some(cutoff) = self.mono().checked_sub(age) else {
            return 0;
        };
        self.inner
            .finished
            .pop_due(cutoff)
            .into_iter()
            // An entry is stale when an edit moved the completion time (or revived the record).
            .filter(|(_, id)| {
                let current = self.slot(*id).ok().and_then(|slot| slot.lock().completed_mono);
                current.is_some_and(|done| done <= cutoff) && self.remove_finished(*id).is_some()
            })
            .count()
    }

    /// Removes a terminal record from the map and the indexes.
    pub(crate) fn remove_finished(&self, id: ExecutionId) -> Option<Arc<Mutex<Slot>>> {
        let (_, slot) = self
            .inner
            .records
            .remove_if(&id, |_, slot| slot.lock().record.is_terminal())?;
        let owner = Arc::clone(&slot.lock().owner);
        self.inner.by_agent.remove(&owner.agent_name, id);
        self.inner.by_thread.remove(&owner.thread_id, id);
        self.inner.by_user.remove(&owner.user_id, id);
        self.inner.owners.release(&owner);
        self.inner.finished_count.fetch_sub(1, Ordering::Relaxed);
        Some(slot)
    }

    pub(crate) fn enforce_finished_cap(&self) {
        while self.inner.finished_count.load(Ordering::Relaxed) > self.inner.config.max_finished {
            match self.inner.finished.pop_earliest() {
                Some((_, id)) => {
                    self.remove_finished(id);
                }
                None => break,
            }
        }
    }
}
