//! Time, injected.
//!
//! Every timestamp and deadline in the tracker is read through a [`Clock`], so that tests can move
//! time by hand ([`ManualClock`]) or with tokio's paused time ([`TokioClock`]) instead of sleeping.
//! A clock answers two questions: the UTC wall time (for records and events) and a monotonic
//! reading (for deadlines, immune to wall-clock jumps).

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

/// A source of wall time and monotonic time.
pub trait Clock: Send + Sync + Debug + 'static {
    /// The current UTC wall time.
    fn now(&self) -> DateTime<Utc>;
    /// Monotonic time elapsed since this clock's origin; never goes backwards.
    fn monotonic(&self) -> Duration;
}

/// The real clock: `Utc::now()` and `std::time::Instant`.
#[derive(Debug, Clone)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A system clock whose monotonic origin is now.
    pub fn new() -> Self {
        Self { origin: Instant::now() }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that follows tokio's time, so `tokio::time::pause()` / `advance()` drive it.
///
/// Wall time is the wall time at creation plus the tokio time elapsed since then.
#[derive(Debug, Clone)]
pub struct TokioClock {
    origin: tokio::time::Instant,
    wall_origin: DateTime<Utc>,
}

impl TokioClock {
    /// A clock anchored at tokio's current instant.
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            wall_origin: Utc::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        self.wall_origin + self.origin.elapsed()
    }
    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when told to; clones share the same time.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use agentrack::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let before = clock.now();
/// clock.advance(Duration::from_secs(5));
/// assert_eq!((clock.now() - before).num_seconds(), 5);
/// assert_eq!(clock.monotonic(), Duration::from_secs(5));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<(DateTime<Utc>, Duration)>>,
}

impl ManualClock {
    /// A manual clock starting at the current wall time.
    pub fn new() -> Self {
        Self::starting_at(Utc::now())
    }

    /// A manual clock starting at the given wall time.
    pub fn starting_at(wall: DateTime<Utc>) -> Self {
        Self {
            inner: Arc::new(Mutex::new((wall, Duration::ZERO))),
        }
    }

    /// Moves both wall and monotonic time forward.
    pub fn advance(&self, by: Duration) {
        let mut inner = self.inner.lock();
        inner.0 += by;
        inner.1 += by;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.inner.lock().0
    }
    fn monotonic(&self) -> Duration {
        self.inner.lock().1
    }
}
