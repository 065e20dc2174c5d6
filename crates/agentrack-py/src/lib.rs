//! The `agentrack._core` extension module: the Rust half of the Python package `agentrack`.
//!
//! The Python package reproduces the original `AgentExecutionTracker` API. Everything that is
//! state — records, indexes, phases, deadlines, breakers, metrics — lives in the Rust core
//! ([`agentrack::Tracker`]); this crate adapts it to Python:
//!
//! - `TrackerCore` is the base class of the Python `AgentExecutionTracker`: every synchronous
//!   method of the original is implemented here, so a call goes straight from Python into Rust.
//!   The asynchronous ones (`transition_state`, `execute_with_circuit_breaker`, monitoring) are
//!   written in Python on top of the primitives below, so that they run on the caller's event loop.
//! - `ExecutionRecord` is a live view of one record: each attribute read fetches the current
//!   value from the tracker (and keeps the last one seen once the record is purged), and each
//!   assignment to a field edits the execution in the tracker (see the `fields` module). Called
//!   directly, it builds a record attached to no tracker, as the original dataclass did.
//! - `PendingNotification` and `ProtectedCall` split one core operation that awaits something in
//!   two halves around a Python `await`: the core's `transition_notify` (waiting on the WebSocket
//!   manager) and `execute` (waiting on the protected coroutine). See the `calls` module.
//! - The enumerations, `TimeoutConfig` and `PhaseTransition` are Python classes (real
//!   `enum.Enum`s and dataclasses, as in the original); Python registers them here at import.

mod calls;
mod clock;
mod convert;
mod fields;
mod record;
mod remote;
mod tracker;
mod types;

use pyo3::prelude::pymodule;

/// The Rust half of the `agentrack` Python package.
#[pymodule(name = "_core")]
mod core_module {
    #[pymodule_export]
    use crate::calls::{PendingNotification, ProtectedCall};
    #[pymodule_export]
    use crate::clock::PyManualClock;
    #[pymodule_export]
    use crate::record::RecordView;
    #[pymodule_export]
    use crate::remote::{AgentrackUnavailableError, RemoteCall, RemoteCore};
    #[pymodule_export]
    use crate::tracker::TrackerCore;
    #[pymodule_export]
    use crate::types::register_types;

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(module: &Bound<'_, PyModule>) -> PyResult<()> {
        module.add("__version__", env!("CARGO_PKG_VERSION"))
    }
}
