//! The original's WebSocket-manager interface, for callers that push notifications themselves.

use std::future::Future;

use serde_json::Value;

/// Any error a notifier reports; the transition stands, marked `websocket_event_sent = false`.
pub type NotifyError = Box<dyn std::error::Error + Send + Sync>;

/// Receives the five notifications the original sent on phase transitions; pass one to
/// [`Tracker::transition_notify`](crate::Tracker::transition_notify). `run_id` is the thread id.
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
        execution_time_ms: u64,
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
