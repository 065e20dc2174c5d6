//! Time, injected.
//!
//! Every timestamp and deadline in the tracker is read through a [`Clock`], so that tests can move
//! time by hand ([`ManualClock`]) or with tokio's paused time ([`TokioClock`]) instead of sleeping.
//! A clock answers two questions: the UTC wall time (for records and events) and a monotonic
//! reading (for deadlines, immune to wall-clock jumps).

use std::cell::Cell;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
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
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(wall_time)
            .unwrap_or_else(Utc::now)
    }
    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }
}

thread_local! {
    /// The day (since the epoch) this thread last read the wall clock in, and its date.
    static TODAY: Cell<Option<(u64, NaiveDate)>> = const { Cell::new(None) };
}

/// `since` the epoch as a UTC time, exactly as [`Utc::now`] makes it, but with the calendar
/// date computed once a day per thread: turning a day count into a date was a quarter of the
/// clock's cost on a heartbeat (BENCHMARKS.md, round 7). `None` past chrono's range.
fn wall_time(since: Duration) -> Option<DateTime<Utc>> {
    const DAY: u64 = 86_400;
    let secs = since.as_secs();
    let day = secs / DAY;
    let date = match TODAY.get() {
        Some((cached, date)) if cached == day => date,
        _ => {
            let date = DateTime::from_timestamp(i64::try_from(day * DAY).ok()?, 0)?.date_naive();
            TODAY.set(Some((day, date)));
            date
        }
    };
    let time = NaiveTime::from_num_seconds_from_midnight_opt(u32::try_from(secs % DAY).ok()?, since.subsec_nanos())?;
    Some(date.and_time(time).and_utc())
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_wall_clock_reads_as_chrono_reads_it_across_days_and_years() {
        let exact = |since: Duration| {
            DateTime::from_timestamp(i64::try_from(since.as_secs()).unwrap(), since.subsec_nanos()).unwrap()
        };
        // Around midnights (the cached day changes), a leap day, and far from the epoch.
        let starts = [
            0_u64,
            86_399,
            951_782_399,
            1_709_164_799,
            1_798_675_199,
            253_402_300_799,
        ];
        for start in starts {
            for step in 0..3 {
                for nanos in [0, 1, 999_999_999] {
                    let since = Duration::new(start + step, nanos);
                    assert_eq!(wall_time(since).unwrap(), exact(since), "{since:?}");
                }
            }
        }
        // Out of chrono's range: none, never a wrong date.
        assert_eq!(wall_time(Duration::from_secs(u64::MAX)), None);
    }

    #[test]
    fn the_system_clock_is_utc_now() {
        let before = Utc::now();
        let now = SystemClock::new().now();
        assert!(before <= now && now <= Utc::now());
    }
}
