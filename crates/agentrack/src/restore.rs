//! Hooks for a durable store: the event sink, sequence resumption and restoring records.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use crate::breaker::BreakerCore;
use crate::error::TrackerError;
use crate::event::{Event, Owner};
use crate::record::ExecutionRecord;
use crate::slot::Calls;
use crate::slot::Slot;
use crate::state::BreakerState;
use crate::tracker::{TIMELINE_ORIGIN, Tracker};

impl Tracker {
    /// Installs the sink that receives every event synchronously, in global order, before any
    /// subscriber — the hook for a store that must persist every change, including those the
    /// monitor makes. It runs under the bus's ordering lock, so it must be quick (e.g. a send
    /// on an unbounded channel). Returns false if a sink was already installed.
    pub fn set_sink(&self, sink: impl Fn(&Arc<Event>) + Send + Sync + 'static) -> bool {
        self.inner.bus.set_sink(Box::new(sink))
    }

    /// Continues global event numbering after `last_global_seq` (e.g. the last one a store
    /// holds), so numbers stay unique across restarts.
    pub fn resume_sequence(&self, last_global_seq: u64) {
        self.inner.bus.resume_after(last_global_seq);
    }

    /// Brings back a record from a store after a restart, without emitting events. An alive
    /// record gets one full heartbeat window of grace from now before it can be declared dead;
    /// its execution timeout still counts from its original start.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if a record with the same id is already tracked.
    pub fn restore(&self, record: ExecutionRecord) -> Result<(), TrackerError> {
        self.restore_as_of(record, None)
    }

    /// Brings back a record another tracker served until it failed (a cluster node's shard,
    /// taken over), without emitting events. Its stored `last_heartbeat` may be up to `stale`
    /// older than the last heartbeat that tracker acknowledged (heartbeats are written in
    /// batches), and an agent still running needs up to `reconnect` to find this tracker. So an
    /// alive record is declared dead at the later of `min(last_heartbeat + stale, now) +
    /// heartbeat_timeout` and `now + reconnect` — never because of the failover alone, and no
    /// later than that for an agent that really stopped.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if a record with the same id is already tracked.
    ///
    /// ```
    /// use std::time::Duration;
    /// use agentrack::{NewExecution, Tracker};
    ///
    /// let failed_node = Tracker::new();
    /// let id = failed_node.create(NewExecution::new("researcher", "thread-1", "alice"))?.id();
    /// let record = failed_node.get(id)?;
    ///
    /// let next_node = Tracker::new();
    /// next_node.restore_after_failover(record, Duration::from_secs(1), Duration::from_secs(2))?;
    /// assert!(next_node.get(id)?.is_alive());
    /// # Ok::<(), agentrack::TrackerError>(())
    /// ```
    pub fn restore_after_failover(
        &self,
        record: ExecutionRecord,
        stale: Duration,
        reconnect: Duration,
    ) -> Result<(), TrackerError> {
        self.restore_as_of(record, Some((stale, reconnect)))
    }

    /// [`Self::restore`], or with `failover` = `(stale, reconnect)`
    /// [`Self::restore_after_failover`].
    fn restore_as_of(
        &self,
        mut record: ExecutionRecord,
        failover: Option<(Duration, Duration)>,
    ) -> Result<(), TrackerError> {
        // A record stored under a larger cap (or none) is held to this tracker's.
        record.cap_phase_history(self.inner.config.max_phase_history);
        let id = record.execution_id;
        if self.inner.records.contains_key(&id) {
            return Err(TrackerError::InvalidInput {
                field: "execution_id",
                reason: format!("{id} is already tracked"),
            });
        }
        let now = self.inner.clock.now();
        let mono = self.mono();
        let elapsed = |then: DateTime<Utc>| (now - then).to_std().unwrap_or_default();
        // A record finished before this process started counts as finished at our origin: it
        // is purged at most `cleanup_age` after the restart.
        let ago = |then: DateTime<Utc>| mono.saturating_sub(elapsed(then)).max(TIMELINE_ORIGIN);
        let untouched = record.circuit_breaker_state == BreakerState::Closed
            && record.circuit_breaker_failures == 0
            && record.last_failure_time.is_none()
            && record.next_attempt_time.is_none();
        let breaker = BreakerCore::restored(
            self.breaker_config(record.timeout_config.as_deref()),
            record.circuit_breaker_state,
            record.circuit_breaker_failures,
            record.last_failure_time,
            record.next_attempt_time,
            mono,
            now,
        );
        let owner = self.inner.owners.acquire(Owner {
            tenant: record.tenant.clone(),
            user_id: record.user_id.clone(),
            thread_id: record.thread_id.clone(),
            agent_name: record.agent_name.clone(),
        });
        let state = record.state;
        let mut slot = Slot {
            execution_due: mono + record.timeout.saturating_sub(elapsed(record.started_at)),
            heartbeat_mono: match failover {
                None => mono,
                // Never after now: a heartbeat in the future would read as negative silence.
                Some((lag, reconnect)) => (mono + lag)
                    .saturating_sub(elapsed(record.last_heartbeat))
                    .max(
                        (mono + reconnect)
                            .saturating_sub(record.heartbeat_timeout.unwrap_or(self.inner.config.heartbeat_timeout)),
                    )
                    .min(mono),
            },
            completed_mono: record.completed_at.map(ago),
            armed_at: None,
            calls: (!untouched).then(|| Box::new(Calls::new(breaker))),
            cancel: None,
            owner: Arc::clone(&owner),
            record,
        };
        self.inner.by_agent.insert(&owner.agent_name, id);
        self.inner.by_thread.insert(&owner.thread_id, id);
        self.inner.by_user.insert(&owner.user_id, id);
        if state.is_alive() {
            self.inner.counters.created();
            self.rearm(&mut slot);
        } else {
            self.inner.counters.restored(state);
            self.inner.finished_count.fetch_add(1, Ordering::Relaxed);
            self.inner.finished.arm(id, slot.completed_mono.unwrap_or(mono));
        }
        self.inner.records.insert(id, Arc::new(Mutex::new(slot)));
        self.enforce_finished_cap();
        Ok(())
    }
}
