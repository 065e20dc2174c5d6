//! Fine-grained execution phases and their transition rules.

use serde::{Deserialize, Serialize};

use crate::parse::value_enum;

value_enum! {
    /// What an agent is doing inside its execution.
    ///
    /// # Examples
    ///
    /// ```
    /// use agentrack::Phase;
    ///
    /// assert!(Phase::Thinking.can_transition_to(Phase::LlmInteraction));
    /// assert!(!Phase::Created.can_transition_to(Phase::Completed));
    /// assert_eq!("tool_execution".parse::<Phase>().unwrap(), Phase::ToolExecution);
    /// ```
    Phase, "phase" {
        /// The record exists.
        Created => "created",
        /// The user's live channel is being prepared.
        WebsocketSetup => "websocket_setup",
        /// The request context is being checked.
        ContextValidation => "context_validation",
        /// The agent is starting.
        Starting => "starting",
        /// The agent is reasoning.
        Thinking => "thinking",
        /// A tool call is being prepared.
        ToolPreparation => "tool_preparation",
        /// Waiting on an LLM.
        LlmInteraction => "llm_interaction",
        /// A tool is running.
        ToolExecution => "tool_execution",
        /// Results are being processed.
        ResultProcessing => "result_processing",
        /// The answer is being finalised.
        Completing => "completing",
        /// Done.
        Completed => "completed",
        /// Ran out of time.
        Timeout => "timeout",
        /// Failed.
        Failed => "failed",
        /// An LLM call was refused by an open circuit breaker.
        CircuitBreakerOpen => "circuit_breaker_open",
    }
}

impl Phase {
    /// The phases this one may move to, as the original's rules state them.
    pub const fn allowed_next(self) -> &'static [Phase] {
        use Phase::{
            CircuitBreakerOpen, Completed, Completing, ContextValidation, Created, Failed, LlmInteraction,
            ResultProcessing, Starting, Thinking, Timeout, ToolExecution, ToolPreparation, WebsocketSetup,
        };
        match self {
            Created => &[WebsocketSetup, Failed],
            WebsocketSetup => &[ContextValidation, Failed],
            ContextValidation => &[Starting, Failed],
            Starting => &[Thinking, Failed, Timeout],
            Thinking => &[ToolPreparation, LlmInteraction, Failed, Timeout],
            ToolPreparation => &[ToolExecution, LlmInteraction, Failed, Timeout],
            LlmInteraction => &[
                Thinking,
                ToolExecution,
                ResultProcessing,
                Failed,
                Timeout,
                CircuitBreakerOpen,
            ],
            ToolExecution => &[Thinking, LlmInteraction, ResultProcessing, Failed, Timeout],
            ResultProcessing => &[Completing, Thinking, Failed, Timeout],
            Completing => &[Completed, Failed, Timeout],
            Completed | Timeout | Failed | CircuitBreakerOpen => &[],
        }
    }

    /// Whether the rules allow `self → next`.
    pub fn can_transition_to(self, next: Phase) -> bool {
        self.allowed_next().contains(&next)
    }

    /// The notification the original sent to the user's browser on entering this phase, if any.
    pub const fn notification_kind(self) -> Option<NotificationKind> {
        use Phase::{
            CircuitBreakerOpen, Completed, Completing, ContextValidation, Created, Failed, LlmInteraction,
            ResultProcessing, Starting, Thinking, Timeout, ToolExecution, ToolPreparation, WebsocketSetup,
        };
        match self {
            Created | WebsocketSetup | ContextValidation => None,
            Starting => Some(NotificationKind::AgentStarted),
            Thinking | ToolPreparation | LlmInteraction | ResultProcessing | Completing => {
                Some(NotificationKind::AgentThinking)
            }
            ToolExecution => Some(NotificationKind::ToolExecuting),
            Completed => Some(NotificationKind::AgentCompleted),
            Failed | Timeout | CircuitBreakerOpen => Some(NotificationKind::AgentError),
        }
    }
}

/// The five notification kinds of the original's WebSocket manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// `notify_agent_started`
    AgentStarted,
    /// `notify_agent_thinking`
    AgentThinking,
    /// `notify_tool_executing`
    ToolExecuting,
    /// `notify_agent_completed`
    AgentCompleted,
    /// `notify_agent_error`
    AgentError,
}

/// How strictly rules are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validation {
    /// Illegal moves are refused with an error.
    #[default]
    Strict,
    /// Illegal moves happen anyway and are flagged (the original's behaviour).
    Lenient,
}
