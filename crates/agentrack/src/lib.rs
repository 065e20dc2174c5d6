//! agentrack tracks LLM agent executions: lifecycle states, fine-grained phases with
//! transition rules and history, heartbeats and dead-agent detection, execution timeouts,
//! circuit breakers and timeouts around LLM calls, metrics, bounded memory, and a typed event
//! for every change.
//!
//! It is the core of the agentrack server and Python package, and knows nothing of HTTP, SQL
//! or Python: a pure in-memory state machine plus timers, with time read through an injectable
//! [`Clock`].
//!
//! # Example: the golden path
//!
//! ```
//! use std::time::Duration;
//! use agentrack::{CallError, EventFilter, ExecutionState, NewExecution, Phase, Tracker};
//! use serde_json::{json, Map, Value};
//!
//! fn meta(value: Value) -> Option<Map<String, Value>> {
//!     value.as_object().cloned()
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let tracker = Tracker::new();
//! let mut events = tracker.subscribe(EventFilter::user("user-1"));
//!
//! // An agent run for user-1's question in thread-1.
//! let id = tracker
//!     .create(NewExecution::new("researcher", "thread-1", "user-1").timeout(Duration::from_secs(60)))?
//!     .id();
//! tracker.start(id)?;
//! tracker.heartbeat(id)?; // starting → running
//!
//! tracker.transition(id, Phase::WebsocketSetup, None)?;
//! tracker.transition(id, Phase::ContextValidation, None)?;
//! tracker.transition(id, Phase::Starting, meta(json!({"request": "weather in Paris"})))?;
//! tracker.transition(id, Phase::Thinking, meta(json!({"reasoning": "need a forecast"})))?;
//! tracker.transition(id, Phase::LlmInteraction, None)?;
//!
//! // The LLM call runs under the execution's circuit breaker and the LLM timeout.
//! let reply: Result<String, CallError<std::io::Error>> =
//!     tracker.execute(id, "chat.completions", async { Ok("call get_forecast".to_owned()) }).await;
//! assert_eq!(reply.unwrap(), "call get_forecast");
//!
//! tracker.transition(id, Phase::ToolExecution, meta(json!({"tool_name": "get_forecast"})))?;
//! tracker.transition(id, Phase::ResultProcessing, None)?;
//! tracker.transition(id, Phase::Completing, None)?;
//! tracker.transition(id, Phase::Completed, meta(json!({"result": "sunny"})))?;
//! tracker.complete(id, Some(json!("sunny")))?;
//!
//! let record = tracker.get(id)?;
//! assert_eq!(record.state, ExecutionState::Completed);
//! assert_eq!(record.phase_history.len(), 9);
//!
//! // The user's stream saw every change in order, with the original's notification names.
//! let mut names = Vec::new();
//! while let Ok(Some(Ok(event))) = tokio::time::timeout(Duration::from_millis(10), events.recv()).await {
//!     names.push(event.kind.name());
//! }
//! assert_eq!(names.first(), Some(&"execution_created"));
//! assert!(names.contains(&"agent_started") && names.contains(&"tool_executing"));
//! assert_eq!(names.last(), Some(&"execution_completed"));
//! # Ok::<(), agentrack::TrackerError>(())
//! # }).unwrap();
//! ```
//!
//! # Where to look
//!
//! - [`Tracker`]: every operation; [`Tracker::spawn_monitor`] for dead/timeout detection;
//!   [`Tracker::lean`] for the same calls without their events returned (built only for a
//!   sink or subscribers).
//! - [`ExecutionState`], [`Phase`], [`BreakerState`]: the domain enumerations, parsed from the
//!   original's value strings with errors that list the valid values.
//! - [`Breaker`]: circuit breakers shared by name across executions.
//! - [`Event`], [`EventKind`]: what subscribers and stores receive.
//! - [`global`]: a process-wide default instance.
//!
//! # Cargo features
//!
//! - `legacy` (off by default): `Tracker::legacy_edit`, direct edits that may revive a finished
//!   execution, for the Python drop-in only. Without it no public call can give an execution a
//!   second terminal event; see [`Tracker::edit`].

mod breaker;
mod bus;
mod cleanup;
mod clock;
mod config;
mod consistency;
mod deadlines;
mod edit;
mod error;
mod event;
mod global;
mod id;
mod index;
mod lean;
mod metrics;
mod monitor;
mod new_execution;
mod notifier;
mod owners;
mod parse;
mod phase;
mod protect;
mod record;
mod restore;
mod retry;
mod serde_secs;
mod slot;
mod state;
mod tracker;
mod transition;
mod views;

pub use breaker::{Breaker, BreakerConfig, BreakerStatus, Outcome, Permit};
pub use clock::{Clock, ManualClock, SystemClock, TokioClock};
pub use config::{TimeoutConfig, TrackerConfig};
pub use error::{CallError, TrackerError};
pub use event::{BreakerChange, Event, EventFilter, EventKind, EventScope, EventStream, Finished, Lagged, Owner};
pub use global::{global, global_monitor_running, init_global, shutdown_global};
pub use id::{ExecutionId, ParseIdError};
pub use lean::Lean;
pub use metrics::Metrics;
pub use monitor::{MonitorHandle, Sweep};
pub use new_execution::{DEFAULT_TENANT, NewExecution};
pub use notifier::{Notification, Notifier, NotifyError, ORIGINAL_TOOL_NAME};
pub use parse::ParseEnumError;
pub use phase::{NotificationKind, Phase, Validation};
pub use protect::CallPermit;
pub use record::{ExecutionRecord, Transition};
pub use retry::RetryPolicy;
pub use state::{BreakerState, ExecutionState};
pub use tokio_util::sync::CancellationToken;
pub use tracker::{Change, StateUpdate, Tracker};
pub use views::{AgentState, AgentStateUpdate, ExecutionContext, TimeoutStatus};
