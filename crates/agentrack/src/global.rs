//! A process-wide default tracker, like the original's module-level instance.

use std::sync::OnceLock;

use parking_lot::Mutex;

use crate::monitor::MonitorHandle;
use crate::tracker::Tracker;

static GLOBAL: OnceLock<Tracker> = OnceLock::new();
static MONITOR: Mutex<Option<MonitorHandle>> = Mutex::new(None);

/// The process-wide tracker, created with default settings on first use.
///
/// # Examples
///
/// ```
/// let a = agentrack::global();
/// let b = agentrack::global();
/// let id = a.create(agentrack::NewExecution::new("agent", "thread", "user"))?.id();
/// assert!(b.get(id).is_ok());
/// # Ok::<(), agentrack::TrackerError>(())
/// ```
pub fn global() -> &'static Tracker {
    GLOBAL.get_or_init(Tracker::new)
}

/// Starts the global tracker's monitor if it is not running; returns whether it started it.
///
/// # Panics
///
/// Outside a tokio runtime.
pub fn init_global() -> bool {
    let mut monitor = MONITOR.lock();
    if monitor.as_ref().is_some_and(MonitorHandle::is_running) {
        return false;
    }
    *monitor = Some(global().spawn_monitor());
    true
}

/// Stops the global tracker's monitor, if running.
pub async fn shutdown_global() {
    let handle = MONITOR.lock().take();
    if let Some(handle) = handle {
        handle.stop().await;
    }
}

/// Whether the global tracker's monitor is running.
pub fn global_monitor_running() -> bool {
    MONITOR.lock().as_ref().is_some_and(MonitorHandle::is_running)
}
