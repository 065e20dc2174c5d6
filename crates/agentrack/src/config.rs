//! Configuration: per-execution timeouts and breaker settings, and the tracker's own settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::phase::Validation;

/// Timeouts, circuit-breaker thresholds and retry settings for LLM calls (the original's
/// `TimeoutConfig`, with the same defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TimeoutConfig {
    /// How long a whole execution may run.
    #[serde(with = "crate::serde_secs")]
    pub agent_execution_timeout: Duration,
    /// How long one protected LLM call may take.
    #[serde(with = "crate::serde_secs")]
    pub llm_api_timeout: Duration,
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long an open breaker refuses calls before a trial.
    #[serde(with = "crate::serde_secs")]
    pub recovery_timeout: Duration,
    /// Successful trial calls that close a half-open breaker.
    pub success_threshold: u32,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first retry's delay.
    #[serde(with = "crate::serde_secs")]
    pub retry_base_delay: Duration,
    /// The cap on any retry's delay.
    #[serde(with = "crate::serde_secs")]
    pub retry_max_delay: Duration,
    /// The growth factor between retries.
    pub retry_exponential_base: f64,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            agent_execution_timeout: Duration::from_secs(25),
            llm_api_timeout: Duration::from_secs(15),
            failure_threshold: 3,
            recovery_timeout: Duration::from_secs(30),
            success_threshold: 2,
            max_retries: 2,
            retry_base_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(5),
            retry_exponential_base: 2.0,
        }
    }
}

/// The tracker's settings.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use agentrack::{TrackerConfig, Validation};
///
/// let config = TrackerConfig {
///     heartbeat_timeout: Duration::from_secs(30),
///     phase_validation: Validation::Lenient,
///     ..TrackerConfig::default()
/// };
/// assert_eq!(config.execution_timeout, Duration::from_secs(15));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrackerConfig {
    /// A heartbeat gap longer than this makes an alive execution dead.
    #[serde(with = "crate::serde_secs")]
    pub heartbeat_timeout: Duration,
    /// The execution timeout of a record created without one.
    #[serde(with = "crate::serde_secs")]
    pub execution_timeout: Duration,
    /// Finished records older than this are purged by the monitor.
    #[serde(with = "crate::serde_secs")]
    pub cleanup_age: Duration,
    /// At most this many finished records are kept in memory; the oldest go first.
    pub max_finished: usize,
    /// How many records [`Tracker::cleanup`](crate::Tracker::cleanup) keeps in the completed history.
    pub history_cap: usize,
    /// At most this many phase changes are kept in each record's `phase_history` (the oldest
    /// go first, counted in `phase_history_dropped`); `None`, the default, keeps every one, as
    /// the original did.
    pub max_phase_history: Option<usize>,
    /// Whether illegal phase transitions are refused or only flagged.
    pub phase_validation: Validation,
    /// Whether illegal lifecycle moves (e.g. running → pending) are refused or allowed.
    pub lifecycle_validation: Validation,
    /// Extra time after a protected call's own timeout before its execution may be declared dead.
    #[serde(with = "crate::serde_secs")]
    pub call_grace: Duration,
    /// How often the monitor wakes.
    #[serde(with = "crate::serde_secs")]
    pub monitor_interval: Duration,
    /// How long the monitor waits for one death/timeout callback before giving up on it.
    #[serde(with = "crate::serde_secs")]
    pub callback_timeout: Duration,
    /// Events buffered per subscriber before it is told it lagged.
    pub event_buffer: usize,
    /// Default timeouts and breaker settings for executions and named breakers.
    pub timeout_config: TimeoutConfig,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            heartbeat_timeout: Duration::from_secs(10),
            execution_timeout: Duration::from_secs(15),
            cleanup_age: Duration::from_secs(60),
            max_finished: 100_000,
            history_cap: 100,
            max_phase_history: None,
            phase_validation: Validation::Strict,
            lifecycle_validation: Validation::Strict,
            call_grace: Duration::from_secs(5),
            monitor_interval: Duration::from_secs(1),
            callback_timeout: Duration::from_secs(10),
            event_buffer: 4096,
            timeout_config: TimeoutConfig::default(),
        }
    }
}
