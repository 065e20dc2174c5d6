//! Retries with exponential backoff and jitter.

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::TimeoutConfig;
use crate::error::{CallError, TrackerError};

/// How failed protected calls are retried: at most `max_retries` more attempts, the n-th after
/// a delay drawn uniformly from `[cap/2, cap]` where `cap = min(max_delay, base_delay · base^n)`.
///
/// The jitter spreads retries of many executions hitting the same provider, so they do not all
/// return at the same instant; keeping half the cap as a floor keeps the backoff meaningful.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first retry's delay cap.
    #[serde(with = "crate::serde_secs")]
    pub base_delay: Duration,
    /// The cap on any delay.
    #[serde(with = "crate::serde_secs")]
    pub max_delay: Duration,
    /// Growth factor between retries.
    pub exponential_base: f64,
}

impl RetryPolicy {
    /// The upper bound of the delay before retry number `attempt` (0-based).
    pub fn delay_cap(&self, attempt: u32) -> Duration {
        let factor = self
            .exponential_base
            .max(1.0)
            .powi(i32::try_from(attempt).unwrap_or(i32::MAX));
        let secs = (self.base_delay.as_secs_f64() * factor).min(self.max_delay.as_secs_f64());
        Duration::try_from_secs_f64(secs).unwrap_or(self.max_delay)
    }

    /// A jittered delay before retry number `attempt` (0-based), within `[cap/2, cap]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let cap = self.delay_cap(attempt);
        cap.mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

impl RetryPolicy {
    /// Runs `attempt` until it succeeds, fails in a way a retry cannot help (an open breaker,
    /// an unknown or finished execution), or `max_retries` retries are spent, sleeping the
    /// jittered backoff between attempts. Returns the last attempt's result.
    pub(crate) async fn run<T, E, F, Fut>(&self, mut attempt: F) -> Result<T, CallError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CallError<E>>>,
    {
        let mut retries = 0;
        loop {
            match attempt().await {
                Err(error) if retryable(&error) && retries < self.max_retries => {
                    tokio::time::sleep(self.delay(retries)).await;
                    retries += 1;
                }
                other => return other,
            }
        }
    }
}

fn retryable<E>(error: &CallError<E>) -> bool {
    matches!(
        error,
        CallError::Operation(_) | CallError::Tracker(TrackerError::Timeout { .. })
    )
}

impl From<&TimeoutConfig> for RetryPolicy {
    fn from(config: &TimeoutConfig) -> Self {
        Self {
            max_retries: config.max_retries,
            base_delay: config.retry_base_delay,
            max_delay: config.retry_max_delay,
            exponential_base: config.retry_exponential_base,
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::from(&TimeoutConfig::default())
    }
}
