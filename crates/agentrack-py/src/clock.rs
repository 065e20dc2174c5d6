//! A clock that Python tests move by hand.

use agentrack::{Clock, ManualClock};
use chrono::{DateTime, Utc};
use pyo3::prelude::*;

use crate::types::duration_arg;

/// A clock that moves only when told to (`clock.advance(seconds)`); pass it to the tracker as
/// `AgentExecutionTracker(clock=clock)` to test heartbeats, timeouts and breaker recovery
/// without sleeping.
#[pyclass(frozen, module = "agentrack", name = "ManualClock")]
pub(crate) struct PyManualClock {
    pub(crate) clock: ManualClock,
}

#[pymethods]
impl PyManualClock {
    /// A manual clock starting at the current wall time.
    #[new]
    fn new() -> Self {
        Self {
            clock: ManualClock::new(),
        }
    }

    /// Moves the clock forward by `seconds`.
    fn advance(&self, seconds: f64) -> PyResult<()> {
        self.clock.advance(duration_arg("seconds", seconds)?);
        Ok(())
    }

    /// The clock's current UTC time.
    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Seconds advanced since the clock was created.
    fn monotonic(&self) -> f64 {
        self.clock.monotonic().as_secs_f64()
    }

    fn __repr__(&self) -> String {
        format!("ManualClock(now={})", self.clock.now().to_rfc3339())
    }
}
