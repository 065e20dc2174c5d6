//! Circuit breakers: per execution (the original's semantics) and shared by name.
//!
//! The state machine is the original's — consecutive failures open the breaker, an open breaker
//! refuses calls until its recovery timeout, then half-open trial calls decide — with three fixes:
//! a failure in half-open re-opens at once, only `half_open_max_calls` trials run at a time, and a
//! breaker can be shared by name (one per LLM provider/model) so that one failing provider stops
//! every execution that uses it, not just the one that noticed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::bus::EventBus;
use crate::clock::Clock;
use crate::config::TimeoutConfig;
use crate::error::{CallError, TrackerError};
use crate::event::{BreakerChange, Event};
use crate::retry::RetryPolicy;
use crate::state::BreakerState;

/// A breaker's thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before trial calls.
    #[serde(with = "crate::serde_secs")]
    pub recovery_timeout: Duration,
    /// Successful trials that close it.
    pub success_threshold: u32,
    /// Trials allowed at once while half-open.
    pub half_open_max_calls: u32,
    /// The time limit on each protected call; a call that overruns counts as a failure.
    #[serde(with = "crate::serde_secs")]
    pub call_timeout: Duration,
}

impl From<&TimeoutConfig> for BreakerConfig {
    fn from(config: &TimeoutConfig) -> Self {
        Self {
            failure_threshold: config.failure_threshold.max(1),
            recovery_timeout: config.recovery_timeout,
            success_threshold: config.success_threshold.max(1),
            half_open_max_calls: 1,
            call_timeout: config.llm_api_timeout,
        }
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self::from(&TimeoutConfig::default())
    }
}

/// A breaker's state, as reported by status calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerStatus {
    /// The breaker's name (`execution:<id>` for a per-execution breaker).
    pub name: String,
    /// Current state.
    pub state: BreakerState,
    /// Consecutive failures counted.
    pub failure_count: u32,
    /// Failures that open it.
    pub failure_threshold: u32,
    /// Successful trials so far while half-open.
    pub success_count: u32,
    /// Latest failure.
    pub last_failure_time: Option<DateTime<Utc>>,
    /// When an open breaker allows a trial.
    pub next_attempt_time: Option<DateTime<Utc>>,
    /// Whether it is open.
    pub is_open: bool,
    /// Whether a call would be let through now.
    pub can_retry: bool,
    /// Seconds an opened breaker waits before trials.
    pub recovery_timeout: f64,
}

/// The outcome of a protected call, as reported to a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The call worked.
    Success,
    /// The call failed in a way that says the provider is unwell (5xx, rate limit, ...).
    Failure,
    /// The call ran out of time; counts as a failure.
    Timeout,
    /// The call failed by the caller's own fault (e.g. a bad request); not counted.
    Ignored,
}

/// The pure breaker state machine, driven with explicit times.
#[derive(Debug, Clone)]
pub(crate) struct BreakerCore {
    /// Shared: most executions use the tracker's defaults.
    pub(crate) config: Arc<BreakerConfig>,
    pub(crate) state: BreakerState,
    pub(crate) failures: u32,
    successes: u32,
    trials_in_flight: u32,
    // Bumped on every state change, so an outcome of a call admitted under an earlier state
    // (e.g. a slow call that finishes after the breaker re-opened) is not miscounted.
    generation: u64,
    open_until: Duration,
    pub(crate) last_failure_time: Option<DateTime<Utc>>,
    pub(crate) next_attempt_time: Option<DateTime<Utc>>,
}

/// Admission to one protected call under the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    generation: u64,
    trial: bool,
}

impl BreakerCore {
    pub(crate) fn new(config: Arc<BreakerConfig>) -> Self {
        Self {
            config,
            state: BreakerState::Closed,
            failures: 0,
            successes: 0,
            trials_in_flight: 0,
            generation: 0,
            open_until: Duration::ZERO,
            last_failure_time: None,
            next_attempt_time: None,
        }
    }

    /// A breaker in the state a stored record describes; an open one stays open for the rest
    /// of its recovery time.
    pub(crate) fn restored(
        config: Arc<BreakerConfig>,
        state: BreakerState,
        failures: u32,
        last_failure_time: Option<DateTime<Utc>>,
        next_attempt_time: Option<DateTime<Utc>>,
        mono: Duration,
        wall: DateTime<Utc>,
    ) -> Self {
        let mut core = Self::new(config);
        // A trial in flight when the process stopped is lost; half-open resumes as open.
        let state = if state == BreakerState::HalfOpen {
            BreakerState::Open
        } else {
            state
        };
        core.force(state, failures, last_failure_time, next_attempt_time, mono, wall);
        core
    }

    /// Puts the breaker in the given state, as a direct edit of the record does. Calls admitted
    /// before are no longer counted; an open breaker allows trials at `next_attempt_time` (at
    /// once without one).
    pub(crate) fn force(
        &mut self,
        state: BreakerState,
        failures: u32,
        last_failure_time: Option<DateTime<Utc>>,
        next_attempt_time: Option<DateTime<Utc>>,
        mono: Duration,
        wall: DateTime<Utc>,
    ) {
        let remaining = next_attempt_time
            .and_then(|next| (next - wall).to_std().ok())
            .unwrap_or_default();
        self.set_state(state);
        self.failures = failures;
        self.open_until = mono + remaining;
        self.last_failure_time = last_failure_time;
        self.next_attempt_time = next_attempt_time;
    }

    pub(crate) fn reset(&mut self) -> Option<BreakerState> {
        let changed = self.state != BreakerState::Closed;
        *self = Self {
            generation: self.generation + 1,
            ..Self::new(Arc::clone(&self.config))
        };
        changed.then_some(BreakerState::Closed)
    }

    fn set_state(&mut self, state: BreakerState) {
        self.state = state;
        self.generation += 1;
        self.successes = 0;
        self.trials_in_flight = 0;
    }

    /// Admits a call, or says how long to wait. Returns the state entered, if any.
    pub(crate) fn try_acquire(&mut self, mono: Duration) -> Result<(Ticket, Option<BreakerState>), Duration> {
        let mut entered = None;
        if self.state == BreakerState::Open {
            if mono < self.open_until {
                return Err(self.open_until.saturating_sub(mono));
            }
            self.set_state(BreakerState::HalfOpen);
            entered = Some(BreakerState::HalfOpen);
        }
        let trial = self.state == BreakerState::HalfOpen;
        if trial {
            if self.trials_in_flight >= self.config.half_open_max_calls.max(1) {
                // A trial settles within its call timeout, so that is the honest wait.
                return Err(self.config.call_timeout);
            }
            self.trials_in_flight += 1;
        }
        Ok((
            Ticket {
                generation: self.generation,
                trial,
            },
            entered,
        ))
    }

    /// Records a call's outcome. Returns the state entered, if any.
    pub(crate) fn record(
        &mut self,
        ticket: Ticket,
        outcome: Outcome,
        mono: Duration,
        wall: DateTime<Utc>,
    ) -> Option<BreakerState> {
        if ticket.generation != self.generation {
            return None;
        }
        if ticket.trial {
            self.trials_in_flight = self.trials_in_flight.saturating_sub(1);
        }
        match outcome {
            Outcome::Ignored => None,
            Outcome::Success => {
                if self.state == BreakerState::HalfOpen {
                    self.successes += 1;
                    if self.successes >= self.config.success_threshold {
                        self.set_state(BreakerState::Closed);
                        self.failures = 0;
                        self.next_attempt_time = None;
                        return Some(BreakerState::Closed);
                    }
                    None
                } else {
                    self.failures = 0;
                    None
                }
            }
            Outcome::Failure | Outcome::Timeout => {
                self.failures += 1;
                self.last_failure_time = Some(wall);
                let trip = self.state == BreakerState::HalfOpen || self.failures >= self.config.failure_threshold;
                if trip {
                    self.set_state(BreakerState::Open);
                    self.open_until = mono + self.config.recovery_timeout;
                    self.next_attempt_time = Some(wall + self.config.recovery_timeout);
                    return Some(BreakerState::Open);
                }
                None
            }
        }
    }

    /// Gives back a ticket whose call never ran to an outcome (e.g. it was cancelled).
    pub(crate) fn release(&mut self, ticket: Ticket) {
        if ticket.trial && ticket.generation == self.generation {
            self.trials_in_flight = self.trials_in_flight.saturating_sub(1);
        }
    }

    pub(crate) fn retry_after(&self, mono: Duration) -> Option<Duration> {
        (self.state == BreakerState::Open).then(|| self.open_until.saturating_sub(mono))
    }

    pub(crate) fn status(&self, name: String, mono: Duration) -> BreakerStatus {
        let can_retry = match self.state {
            BreakerState::Closed => true,
            BreakerState::Open => mono >= self.open_until,
            BreakerState::HalfOpen => self.trials_in_flight < self.config.half_open_max_calls.max(1),
        };
        BreakerStatus {
            name,
            state: self.state,
            failure_count: self.failures,
            failure_threshold: self.config.failure_threshold,
            success_count: self.successes,
            last_failure_time: self.last_failure_time,
            next_attempt_time: self.next_attempt_time,
            is_open: self.state == BreakerState::Open,
            can_retry,
            recovery_timeout: self.config.recovery_timeout.as_secs_f64(),
        }
    }

    pub(crate) fn change(&self, name: String, state: BreakerState, mono: Duration) -> BreakerChange {
        BreakerChange::new(name, state, self.failures, self.retry_after(mono))
    }
}

#[derive(Debug)]
struct Shared {
    name: String,
    core: Mutex<BreakerCore>,
    clock: Arc<dyn Clock>,
    bus: Arc<EventBus>,
}

/// A circuit breaker shared by name, e.g. one per LLM provider and model; see
/// [`Tracker::breaker`](crate::Tracker::breaker). Cloning gives another handle to the same breaker.
///
/// # Examples
///
/// ```
/// # tokio_test_block(async {
/// use agentrack::{Tracker, BreakerState};
///
/// let tracker = Tracker::new();
/// let openai = tracker.breaker("openai:gpt-4o");
/// let answer: Result<&str, agentrack::CallError<std::io::Error>> =
///     openai.call(async { Ok("hello") }).await;
/// assert_eq!(answer.unwrap(), "hello");
/// assert_eq!(openai.status().state, BreakerState::Closed);
/// # });
/// # fn tokio_test_block(f: impl std::future::Future) { tokio::runtime::Runtime::new().unwrap().block_on(f); }
/// ```
#[derive(Debug, Clone)]
pub struct Breaker {
    shared: Arc<Shared>,
}

impl Breaker {
    pub(crate) fn new(name: String, config: BreakerConfig, clock: Arc<dyn Clock>, bus: Arc<EventBus>) -> Self {
        Self {
            shared: Arc::new(Shared {
                name,
                core: Mutex::new(BreakerCore::new(Arc::new(config))),
                clock,
                bus,
            }),
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub(crate) fn status_config_timeout(&self) -> Duration {
        self.shared.core.lock().config.call_timeout
    }

    /// Whether nothing would be lost by dropping the breaker: it is closed, and no permit or
    /// other handle of it is held (this one aside).
    pub(crate) fn is_unused(&self) -> bool {
        Arc::strong_count(&self.shared) == 1 && self.shared.core.lock().state == BreakerState::Closed
    }

    /// The current state and counters.
    pub fn status(&self) -> BreakerStatus {
        let mono = self.shared.clock.monotonic();
        self.shared.core.lock().status(self.shared.name.clone(), mono)
    }

    /// Closes the breaker and zeroes its counters. Returns the `breaker_closed` event if it was
    /// not closed already, so that a caller that persists changes can wait for it.
    pub fn reset(&self) -> Option<Arc<Event>> {
        let mut core = self.shared.core.lock();
        core.reset().map(|state| self.announce(&core, state))
    }

    /// Asks to make one call; the permit must be given its outcome. An open breaker whose
    /// recovery time has passed lets this call through as a trial and goes half-open: the
    /// permit's [`Permit::admission_event`] is then that change.
    ///
    /// # Errors
    ///
    /// [`TrackerError::CircuitOpen`] with the time to wait when the breaker refuses calls.
    pub fn acquire(&self) -> Result<Permit, TrackerError> {
        let mono = self.shared.clock.monotonic();
        let mut core = self.shared.core.lock();
        match core.try_acquire(mono) {
            Ok((ticket, entered)) => Ok(Permit {
                breaker: self.clone(),
                ticket: Some(ticket),
                admission: entered.map(|state| self.announce(&core, state)),
            }),
            Err(retry_after) => Err(TrackerError::CircuitOpen {
                breaker: self.shared.name.clone(),
                retry_after,
            }),
        }
    }

    /// Runs `call` under the breaker and its call timeout.
    ///
    /// # Errors
    ///
    /// [`TrackerError::CircuitOpen`] without running the call when the breaker refuses it;
    /// [`TrackerError::Timeout`] when it overruns (counted as a failure); the call's own error
    /// otherwise (counted as a failure).
    pub async fn call<T, E, F>(&self, call: F) -> Result<T, CallError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        let permit = self.acquire()?;
        let timeout = self.shared.core.lock().config.call_timeout;
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(value)) => {
                permit.record(Outcome::Success);
                Ok(value)
            }
            Ok(Err(error)) => {
                permit.record(Outcome::Failure);
                Err(CallError::Operation(error))
            }
            Err(_) => {
                permit.record(Outcome::Timeout);
                Err(CallError::Tracker(TrackerError::Timeout {
                    operation: self.shared.name.clone(),
                    after: timeout,
                }))
            }
        }
    }

    /// Runs `make_call()` under the breaker, retrying failures and timeouts with jittered
    /// exponential backoff per `policy`. An open breaker ends the retries at once.
    ///
    /// # Errors
    ///
    /// The last attempt's error.
    pub async fn call_with_retry<T, E, F, Fut>(&self, policy: &RetryPolicy, mut make_call: F) -> Result<T, CallError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        policy.run(|| self.call(make_call())).await
    }

    /// Emits the event of the breaker entering `state`. The caller holds the core's lock, so
    /// events leave in the order of the changes.
    fn announce(&self, core: &BreakerCore, state: BreakerState) -> Arc<Event> {
        let mono = self.shared.clock.monotonic();
        let change = core.change(self.shared.name.clone(), state, mono);
        self.shared.bus.emit(None, self.shared.clock.now(), change.into_kind())
    }

    fn record(&self, ticket: Ticket, outcome: Outcome) -> Option<Arc<Event>> {
        let mono = self.shared.clock.monotonic();
        let wall = self.shared.clock.now();
        let mut core = self.shared.core.lock();
        core.record(ticket, outcome, mono, wall)
            .map(|state| self.announce(&core, state))
    }
}

/// Permission to make one call through a [`Breaker`]; report how it went with
/// [`Permit::record`]. Dropping it unreported gives the slot back without counting anything.
#[derive(Debug)]
pub struct Permit {
    breaker: Breaker,
    ticket: Option<Ticket>,
    admission: Option<Arc<Event>>,
}

impl Permit {
    /// Reports the call's outcome to the breaker. Returns the event of the state change it
    /// caused (`breaker_opened`, `breaker_closed`), if any, so that a caller that persists
    /// changes can wait for it like for any other write.
    pub fn record(mut self, outcome: Outcome) -> Option<Arc<Event>> {
        let ticket = self.ticket.take()?;
        self.breaker.record(ticket, outcome)
    }

    /// The event of the state change the admission itself made (`breaker_half_open`: an open
    /// breaker let this call through as a trial), if it made one.
    pub fn admission_event(&self) -> Option<&Arc<Event>> {
        self.admission.as_ref()
    }

    /// The breaker this permit belongs to.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.breaker.shared.core.lock().release(ticket);
        }
    }
}
