//! Protected calls on behalf of an execution: its own breaker (the original's semantics) or a
//! shared named one, with the LLM call timeout, and liveness kept while the call is in flight.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::breaker::{Breaker, BreakerCore, BreakerStatus, Outcome, Ticket};
use crate::error::{CallError, TrackerError};
use crate::event::Event;
use crate::id::ExecutionId;
use crate::retry::RetryPolicy;
use crate::slot::Slot;
use crate::state::BreakerState;
use crate::tracker::{Change, Tracker, ensure_alive, touch};

/// Admission of one protected call on behalf of an execution; see [`Tracker::begin_call`].
///
/// While it lives the execution counts as alive (until the call timeout plus `call_grace`).
/// Report the call's outcome with [`CallPermit::record`]. Dropping it is the end of the call: it
/// counts as a sign of life (the agent was demonstrably waiting, not dead), and an admission
/// whose outcome was never recorded — a caller that gave up mid-call — is given back uncounted,
/// so an abandoned half-open trial cannot wedge the breaker.
#[must_use = "a permit that is dropped at once admits nothing"]
pub struct CallPermit {
    tracker: Tracker,
    slot: Arc<Mutex<Slot>>,
    ticket: Option<Ticket>,
    timeout: Duration,
    /// The breaker's move to half-open that this admission made, if it made one.
    admitted: Option<Arc<Event>>,
}

impl std::fmt::Debug for CallPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallPermit")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl CallPermit {
    /// The time limit of the call (the execution's `llm_api_timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The `breaker_half_open` event of the breaker's move that admitting this call made (a
    /// trial call), for a caller that must make it durable before the call runs.
    pub fn admission_event(&self) -> Option<&Arc<Event>> {
        self.admitted.as_ref()
    }

    /// Reports the call's outcome to the execution's breaker, ending the call. Returns the
    /// change: the breaker's state-change event (`breaker_opened`, `breaker_closed`), if the
    /// outcome caused one.
    pub fn record(mut self, outcome: Outcome) -> Change {
        let mut slot = self.slot.lock();
        let execution_id = slot.record.execution_id;
        let events = match self.ticket.take() {
            Some(ticket) => {
                let now = self.tracker.inner.clock.now();
                let mono = self.tracker.mono();
                let entered = self.tracker.calls(&mut slot).breaker.record(ticket, outcome, mono, now);
                self.tracker.sync_breaker(&mut slot, entered).into_iter().collect()
            }
            None => Vec::new(),
        };
        Change { execution_id, events }
    }
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        let now = self.tracker.inner.clock.now();
        let mono = self.tracker.mono();
        let mut slot = self.slot.lock();
        let ticket = self.ticket.take();
        if let Some(calls) = slot.calls.as_deref_mut() {
            if let Some(ticket) = ticket {
                calls.breaker.release(ticket);
            }
            calls.in_flight = calls.in_flight.saturating_sub(1);
        }
        if slot.record.is_alive() {
            touch(&mut slot, now, mono);
        }
    }
}

impl Tracker {
    /// The per-execution breaker's status.
    ///
    /// # Errors
    ///
    /// `NotFound`.
    pub fn breaker_status(&self, id: ExecutionId) -> Result<BreakerStatus, TrackerError> {
        let mono = self.mono();
        Ok(self.breaker_status_of(&self.slot(id)?.lock(), mono))
    }

    /// Closes the per-execution breaker and zeroes its counters (the original's register and
    /// reset both do this). Returns the change: a `breaker_closed` event if the breaker was not
    /// closed already, none otherwise.
    ///
    /// # Errors
    ///
    /// `NotFound`.
    pub fn reset_breaker(&self, id: ExecutionId) -> Result<Change, TrackerError> {
        let slot = self.slot(id)?;
        let mut slot = slot.lock();
        // No breaker made yet is one closed with no counts: nothing to reset.
        let entered = slot.calls.as_deref_mut().and_then(|calls| calls.breaker.reset());
        let events = self.sync_breaker(&mut slot, entered).into_iter().collect();
        Ok(Change {
            execution_id: id,
            events,
        })
    }

    /// Runs `call` under the execution's own breaker and its LLM call timeout
    /// (`llm_api_timeout`). While it runs the execution cannot be declared dead (until the call
    /// timeout plus `call_grace`).
    ///
    /// # Errors
    ///
    /// `NotFound` / `Terminal`; `CircuitOpen` (the call does not run); `Timeout` (counted as a
    /// failure); or the call's own error (counted as a failure).
    pub async fn execute<T, E, F>(&self, id: ExecutionId, operation: &str, call: F) -> Result<T, CallError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        let permit = self.begin_call(id)?;
        let timeout = permit.timeout;
        let outcome = tokio::time::timeout(timeout, call).await;
        permit.record(match &outcome {
            Ok(Ok(_)) => Outcome::Success,
            Ok(Err(_)) => Outcome::Failure,
            Err(_) => Outcome::Timeout,
        });
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(CallError::Operation(error)),
            Err(_) => Err(CallError::Tracker(TrackerError::Timeout {
                operation: operation.to_owned(),
                after: timeout,
            })),
        }
    }

    /// Like [`Tracker::execute`], retrying failures and timeouts with jittered exponential
    /// backoff per the execution's timeout config (`max_retries`, `retry_base_delay`, ...). An
    /// open breaker stops the retries.
    ///
    /// # Errors
    ///
    /// The last attempt's error.
    pub async fn execute_with_retry<T, E, F, Fut>(
        &self,
        id: ExecutionId,
        operation: &str,
        mut make_call: F,
    ) -> Result<T, CallError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let policy = {
            let slot = self.slot(id)?;
            let slot = slot.lock();
            RetryPolicy::from(
                slot.record
                    .timeout_config
                    .as_deref()
                    .unwrap_or(&self.inner.config.timeout_config),
            )
        };
        policy.run(|| self.execute(id, operation, make_call())).await
    }

    /// Runs `call` through a shared named breaker on behalf of an execution, keeping the
    /// execution alive while the call is in flight.
    ///
    /// # Errors
    ///
    /// `NotFound` / `Terminal`, or as [`Breaker::call`].
    pub async fn execute_via<T, E, F>(&self, id: ExecutionId, breaker: &Breaker, call: F) -> Result<T, CallError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        let timeout = breaker.status_config_timeout();
        let guard = self.mark_in_flight(id, timeout)?;
        let result = breaker.call(call).await;
        drop(guard);
        result
    }

    fn mark_in_flight(&self, id: ExecutionId, timeout: Duration) -> Result<CallPermit, TrackerError> {
        let slot = self.slot(id)?;
        {
            let mut locked = slot.lock();
            ensure_alive(&locked)?;
            self.mark_call(&mut locked, timeout);
        }
        Ok(CallPermit {
            tracker: self.clone(),
            slot,
            ticket: None,
            timeout,
            admitted: None,
        })
    }

    fn mark_call(&self, slot: &mut Slot, timeout: Duration) {
        let mono = self.mono();
        let calls = self.calls(slot);
        calls.in_flight += 1;
        calls.deadline = calls.deadline.max(mono + timeout);
    }

    /// Admits one protected call through the execution's own breaker and marks it in flight —
    /// the building block of [`Tracker::execute`] for callers that run the call themselves
    /// (another language's coroutine, a remote agent). Run the call within
    /// [`CallPermit::timeout`], then [`CallPermit::record`] its outcome.
    ///
    /// # Errors
    ///
    /// `NotFound`, `Terminal`, or `CircuitOpen` with the time to wait.
    pub fn begin_call(&self, id: ExecutionId) -> Result<CallPermit, TrackerError> {
        let slot = self.slot(id)?;
        let (ticket, timeout, admitted) = {
            let mut locked = slot.lock();
            ensure_alive(&locked)?;
            let mono = self.mono();
            let (ticket, entered) = self
                .calls(&mut locked)
                .breaker
                .try_acquire(mono)
                .map_err(|retry_after| TrackerError::CircuitOpen {
                    breaker: id.breaker_name(),
                    retry_after,
                })?;
            let admitted = self.sync_breaker(&mut locked, entered);
            let timeout = self.calls(&mut locked).breaker.config.call_timeout;
            self.mark_call(&mut locked, timeout);
            (ticket, timeout, admitted)
        };
        Ok(CallPermit {
            tracker: self.clone(),
            slot,
            ticket: Some(ticket),
            timeout,
            admitted,
        })
    }

    /// Counts one protected call's outcome in the execution's own breaker as if a call had just
    /// been admitted and finished — the original's `_on_circuit_breaker_success` and
    /// `_on_circuit_breaker_failure`, for callers that keep that bookkeeping themselves. A
    /// failure counted while the breaker is open and refusing calls is counted as the original
    /// counted it: one more failure, and the breaker stays open for another `recovery_timeout`
    /// from now. Returns the change (the breaker's state-change event, or `RecordEdited` for a
    /// failure counted while open).
    ///
    /// # Errors
    ///
    /// `NotFound`, `Terminal`, or `CircuitOpen` for a success (or an ignored outcome) while the
    /// breaker refuses calls: nothing is counted.
    pub fn count_call_outcome(&self, id: ExecutionId, outcome: Outcome) -> Result<Change, TrackerError> {
        match self.begin_call(id) {
            Ok(permit) => Ok(permit.record(outcome)),
            Err(TrackerError::CircuitOpen { .. }) if matches!(outcome, Outcome::Failure | Outcome::Timeout) => {
                let now = self.inner.clock.now();
                let default = self.inner.config.timeout_config;
                self.edit(id, move |record| {
                    let recovery = record.timeout_config.as_deref().unwrap_or(&default).recovery_timeout;
                    record.circuit_breaker_failures = record.circuit_breaker_failures.saturating_add(1);
                    record.last_failure_time = Some(now);
                    record.next_attempt_time = chrono::TimeDelta::from_std(recovery)
                        .ok()
                        .and_then(|delta| now.checked_add_signed(delta));
                })
            }
            Err(error) => Err(error),
        }
    }

    /// Copies the breaker's state into the record and announces a state change; returns its
    /// event.
    fn sync_breaker(&self, slot: &mut Slot, entered: Option<BreakerState>) -> Option<Arc<Event>> {
        // Without a breaker made, the record keeps the closed breaker's fields it was made with.
        if let Some(calls) = slot.calls.as_deref() {
            let core: &BreakerCore = &calls.breaker;
            slot.record.circuit_breaker_state = core.state;
            slot.record.circuit_breaker_failures = core.failures;
            slot.record.last_failure_time = core.last_failure_time;
            slot.record.next_attempt_time = core.next_attempt_time;
        }
        let state = entered?;
        let now = self.inner.clock.now();
        let mono = self.mono();
        let name = slot.record.execution_id.breaker_name();
        let change = self.calls(slot).breaker.change(name, state, mono);
        let scope = slot.next_scope();
        Some(self.inner.bus.emit(Some(scope), now, change.into_kind()))
    }
}
