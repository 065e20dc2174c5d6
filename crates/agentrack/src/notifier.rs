//! The original's WebSocket-manager interface: [`Notifier`], which receives the notifications,
//! and [`Notification`], one of them with exactly the arguments the original passed.
//!
//! Front ends built on the original read the keyword arguments its `transition_state` passed to
//! the manager, so these are the original's to the letter (fixed texts such as
//! `tool_name = "execution_tools"`, summary dicts rather than caller data). agentrack's own,
//! richer payloads for the same transitions (`metadata.reasoning`, `metadata.tool_name`, ...)
//! are the phase events' ([`EventKind`](crate::EventKind)), which subscribers receive.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::phase::Phase;
use crate::record::ExecutionRecord;

/// Any error a notifier reports; the transition stands, marked `websocket_event_sent = false`.
pub type NotifyError = Box<dyn std::error::Error + Send + Sync>;

/// Receives the five notifications the original sent on phase transitions; pass one to
/// [`Tracker::transition_notify`](crate::Tracker::transition_notify). The arguments are the
/// original's, as [`Notification`] describes them; `run_id` is the thread id.
pub trait Notifier: Send + Sync {
    /// Phase `starting`.
    fn agent_started(
        &self,
        run_id: &str,
        agent_name: &str,
        context: &Value,
    ) -> impl Future<Output = Result<(), NotifyError>> + Send;
    /// Phases `thinking`, `tool_preparation`, `llm_interaction`, `result_processing`, `completing`.
    fn agent_thinking(
        &self,
        run_id: &str,
        agent_name: &str,
        reasoning: &str,
        step_number: u32,
    ) -> impl Future<Output = Result<(), NotifyError>> + Send;
    /// Phase `tool_execution`.
    fn tool_executing(
        &self,
        run_id: &str,
        agent_name: &str,
        tool_name: &str,
        parameters: &Value,
    ) -> impl Future<Output = Result<(), NotifyError>> + Send;
    /// Phase `completed`.
    fn agent_completed(
        &self,
        run_id: &str,
        agent_name: &str,
        result: &Value,
        execution_time_ms: i64,
    ) -> impl Future<Output = Result<(), NotifyError>> + Send;
    /// Phases `failed`, `timeout`, `circuit_breaker_open`.
    fn agent_error(
        &self,
        run_id: &str,
        agent_name: &str,
        error: &str,
        error_context: &Value,
    ) -> impl Future<Output = Result<(), NotifyError>> + Send;
}

/// The `tool_name` the original sent for every tool execution.
pub const ORIGINAL_TOOL_NAME: &str = "execution_tools";

/// One notification with exactly the keyword arguments the original tracker passed its
/// WebSocket manager for a phase transition (`notify_<method>(**arguments)`).
///
/// Below, `d` is the execution's total duration in milliseconds when the transition was made
/// (a fraction, from the times' whole microseconds, as the original's `get_total_duration_ms()`),
/// and `n` the number of transitions in its phase history, this one included. Serialized, the
/// variant is the `method` field (`notify_agent_started`, ...) next to the arguments.
///
/// # Examples
///
/// ```
/// use agentrack::{NewExecution, Notification, Phase, Tracker};
///
/// let tracker = Tracker::new();
/// let id = tracker.create(NewExecution::new("researcher", "thread-1", "user-1")).unwrap().id();
/// tracker.transition(id, Phase::WebsocketSetup, None).unwrap();
/// tracker.transition(id, Phase::ContextValidation, None).unwrap();
/// tracker.transition(id, Phase::Starting, None).unwrap();
/// tracker.transition(id, Phase::Thinking, None).unwrap();
///
/// let record = tracker.get(id).unwrap();
/// let notification = Notification::for_latest_transition(&record, record.updated_at).unwrap();
/// assert_eq!(notification.method(), "notify_agent_thinking");
/// assert_eq!(
///     notification,
///     Notification::AgentThinking {
///         run_id: "thread-1".into(),
///         agent_name: "researcher".into(),
///         reasoning: "Agent is thinking... (step 4)".into(),
///         step_number: 4,
///     }
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method")]
pub enum Notification {
    /// `notify_agent_started`, on entering `starting`.
    #[serde(rename = "notify_agent_started")]
    AgentStarted {
        /// The execution's thread id.
        run_id: String,
        /// The execution's agent.
        agent_name: String,
        /// `{"phase": "starting", "total_duration_ms": d, "metadata": <the transition's metadata>}`.
        context: Value,
    },
    /// `notify_agent_thinking`, on entering `thinking`, `tool_preparation`, `llm_interaction`,
    /// `result_processing` or `completing`.
    #[serde(rename = "notify_agent_thinking")]
    AgentThinking {
        /// The execution's thread id.
        run_id: String,
        /// The execution's agent.
        agent_name: String,
        /// By phase: `"Agent is thinking... (step n)"`, `"Preparing tools for execution..."`,
        /// `"Interacting with AI language model..."`, `"Processing results..."`,
        /// `"Finalizing response..."`.
        reasoning: String,
        /// `n`.
        step_number: u32,
    },
    /// `notify_tool_executing`, on entering `tool_execution`.
    #[serde(rename = "notify_tool_executing")]
    ToolExecuting {
        /// The execution's thread id.
        run_id: String,
        /// The execution's agent.
        agent_name: String,
        /// Always [`ORIGINAL_TOOL_NAME`] (`"execution_tools"`).
        tool_name: String,
        /// The transition's metadata.
        parameters: Value,
    },
    /// `notify_agent_completed`, on entering `completed`.
    #[serde(rename = "notify_agent_completed")]
    AgentCompleted {
        /// The execution's thread id.
        run_id: String,
        /// The execution's agent.
        agent_name: String,
        /// `{"success": true, "total_duration_ms": d, "phase_count": n, "warnings": <warning
        /// count>, "metadata": <the execution's metadata>}`.
        result: Value,
        /// `d`, truncated toward zero (the original's `int(d)`).
        execution_time_ms: i64,
    },
    /// `notify_agent_error`, on entering `failed`, `timeout` or `circuit_breaker_open`.
    #[serde(rename = "notify_agent_error")]
    AgentError {
        /// The execution's thread id.
        run_id: String,
        /// The execution's agent.
        agent_name: String,
        /// By phase: `"Agent execution failed"`, `"Agent execution timed out"`,
        /// `"Service temporarily unavailable"`.
        error: String,
        /// `{"phase": <the phase>, "total_duration_ms": d, "metadata": <the transition's metadata>}`.
        error_context: Value,
    },
}

impl Notification {
    /// The original's notification for the latest transition in `record`'s phase history,
    /// made at `now`; `None` if the history is empty or the phase entered is one the original
    /// did not notify (`created`, `websocket_setup`, `context_validation`).
    pub fn for_latest_transition(record: &ExecutionRecord, now: DateTime<Utc>) -> Option<Self> {
        let transition = record.phase_history.last()?;
        let phase = transition.to_phase;
        let steps = record.phase_count();
        let step_number = u32::try_from(steps).unwrap_or(u32::MAX);
        let total = total_duration_ms(record.started_at, now);
        let run_id = record.thread_id.clone();
        let agent_name = record.agent_name.clone();
        let phase_context = || {
            object([
                ("phase", Value::from(phase.as_str())),
                ("total_duration_ms", Value::from(total)),
                ("metadata", Value::Object(transition.metadata.clone())),
            ])
        };
        let thinking = |reasoning: String| Self::AgentThinking {
            run_id: run_id.clone(),
            agent_name: agent_name.clone(),
            reasoning,
            step_number,
        };
        let error = |error: &str| Self::AgentError {
            run_id: run_id.clone(),
            agent_name: agent_name.clone(),
            error: error.to_owned(),
            error_context: phase_context(),
        };
        Some(match phase {
            Phase::Created | Phase::WebsocketSetup | Phase::ContextValidation => return None,
            Phase::Starting => Self::AgentStarted {
                run_id,
                agent_name,
                context: phase_context(),
            },
            Phase::Thinking => thinking(format!("Agent is thinking... (step {steps})")),
            Phase::ToolPreparation => thinking("Preparing tools for execution...".to_owned()),
            Phase::LlmInteraction => thinking("Interacting with AI language model...".to_owned()),
            Phase::ResultProcessing => thinking("Processing results...".to_owned()),
            Phase::Completing => thinking("Finalizing response...".to_owned()),
            Phase::ToolExecution => Self::ToolExecuting {
                run_id,
                agent_name,
                tool_name: ORIGINAL_TOOL_NAME.to_owned(),
                parameters: Value::Object(transition.metadata.clone()),
            },
            Phase::Completed => Self::AgentCompleted {
                run_id,
                agent_name,
                result: object([
                    ("success", Value::Bool(true)),
                    ("total_duration_ms", Value::from(total)),
                    ("phase_count", Value::from(steps)),
                    ("warnings", Value::from(record.warning_count)),
                    ("metadata", Value::Object(record.metadata.clone())),
                ]),
                execution_time_ms: truncate(total),
            },
            Phase::Failed => error("Agent execution failed"),
            Phase::Timeout => error("Agent execution timed out"),
            Phase::CircuitBreakerOpen => error("Service temporarily unavailable"),
        })
    }

    /// The WebSocket manager's method, e.g. `"notify_agent_thinking"`.
    pub fn method(&self) -> &'static str {
        match self {
            Self::AgentStarted { .. } => "notify_agent_started",
            Self::AgentThinking { .. } => "notify_agent_thinking",
            Self::ToolExecuting { .. } => "notify_tool_executing",
            Self::AgentCompleted { .. } => "notify_agent_completed",
            Self::AgentError { .. } => "notify_agent_error",
        }
    }

    /// Hands the notification to `notifier`'s matching method.
    ///
    /// # Errors
    ///
    /// The notifier's.
    pub async fn send<N: Notifier>(&self, notifier: &N) -> Result<(), NotifyError> {
        match self {
            Self::AgentStarted {
                run_id,
                agent_name,
                context,
            } => notifier.agent_started(run_id, agent_name, context).await,
            Self::AgentThinking {
                run_id,
                agent_name,
                reasoning,
                step_number,
            } => {
                notifier
                    .agent_thinking(run_id, agent_name, reasoning, *step_number)
                    .await
            }
            Self::ToolExecuting {
                run_id,
                agent_name,
                tool_name,
                parameters,
            } => notifier.tool_executing(run_id, agent_name, tool_name, parameters).await,
            Self::AgentCompleted {
                run_id,
                agent_name,
                result,
                execution_time_ms,
            } => {
                notifier
                    .agent_completed(run_id, agent_name, result, *execution_time_ms)
                    .await
            }
            Self::AgentError {
                run_id,
                agent_name,
                error,
                error_context,
            } => notifier.agent_error(run_id, agent_name, error, error_context).await,
        }
    }
}

/// A JSON object with these entries, in this order (as the original's dict literals).
fn object<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Object(
        entries
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect::<Map<_, _>>(),
    )
}

/// Milliseconds from `start` to `now` as the original computed them from its datetimes (which
/// hold whole microseconds): `(now - start).total_seconds() * 1000`.
fn total_duration_ms(start: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    let micros = now.timestamp_micros().saturating_sub(start.timestamp_micros());
    #[allow(
        clippy::cast_precision_loss,
        reason = "exact below 2^53 µs (285 years); Python's int / int rounds the same way"
    )]
    let seconds = micros as f64 / 1_000_000.0;
    seconds * 1000.0
}

/// `int(ms)` in Python: toward zero (saturating, far beyond any real duration).
fn truncate(ms: f64) -> i64 {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "truncation toward zero is the point: the original's int(d)"
    )]
    let whole = ms.trunc() as i64;
    whole
}
