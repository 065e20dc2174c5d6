//! The AG-UI view of the event stream, for standard agent front ends.
//!
//! | agentrack event                         | AG-UI events                                     |
//! |-----------------------------------------|--------------------------------------------------|
//! | `execution_created`                     | `RUN_STARTED`                                    |
//! | phase change out of a working phase     | `STEP_FINISHED` (`TOOL_CALL_END` for a tool)     |
//! | phase change into a working phase       | `STEP_STARTED` (`TOOL_CALL_START` for a tool)    |
//! | `execution_completed`                   | `RUN_FINISHED`                                   |
//! | failed, timed out, dead, cancelled      | `RUN_ERROR`                                      |
//!
//! Heartbeats, lifecycle moves, agent-state updates, record edits and breaker changes have no
//! AG-UI counterpart and are left out. [`treatment`] decides this for every kind of event, by
//! name; a kind added to the core later is left out too until it is given a treatment there
//! (`tests/event_kinds.rs` fails until then).
//! AG-UI clients reject anything after a run's end, so nothing more is sent for an execution
//! once its `RUN_FINISHED` or `RUN_ERROR` went out. Every message carries `rawEvent` with the
//! original `type` and `global_seq`, which is what a client passes as `since` to resume.

use std::collections::{HashMap, HashSet, VecDeque};

use agentrack::{Event, EventKind, ExecutionId, Finished, Phase, Transition};
use serde_json::{Value, json};

/// Finished executions remembered per stream (to suppress anything after their end).
const REMEMBERED: usize = 10_000;

/// Per-stream mapping state.
#[derive(Debug, Default)]
pub struct AguiMapper {
    open_tool_calls: HashMap<ExecutionId, String>,
    finished: HashSet<ExecutionId>,
    finished_order: VecDeque<ExecutionId>,
}

fn working(phase: Phase) -> bool {
    !matches!(
        phase,
        Phase::Created | Phase::Completed | Phase::Failed | Phase::Timeout | Phase::CircuitBreakerOpen
    )
}

/// What the AG-UI view makes of one kind of event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Treatment<'a> {
    /// `RUN_STARTED`.
    RunStarted,
    /// A phase change: the step (or tool call) left ends, the one entered starts.
    Step {
        /// The phase change.
        transition: &'a Transition,
        /// The tool's name, when a tool starts.
        tool_name: Option<&'a str>,
    },
    /// `RUN_FINISHED` with the result.
    RunFinished(&'a Finished),
    /// `RUN_ERROR` with the reason.
    RunError(&'a Finished),
    /// No AG-UI counterpart.
    Omitted,
}

/// What the AG-UI view makes of `kind`; `None` for a kind this server does not know yet (left
/// out, like an omitted one).
pub fn treatment(kind: &EventKind) -> Option<Treatment<'_>> {
    let step = |transition| Treatment::Step {
        transition,
        tool_name: None,
    };
    Some(match kind {
        EventKind::ExecutionCreated { .. } => Treatment::RunStarted,
        EventKind::PhaseChanged { transition }
        | EventKind::AgentStarted { transition, .. }
        | EventKind::AgentThinking { transition, .. }
        | EventKind::AgentCompleted { transition, .. }
        | EventKind::AgentError { transition, .. } => step(transition),
        EventKind::ToolExecuting {
            transition, tool_name, ..
        } => Treatment::Step {
            transition,
            tool_name: Some(tool_name),
        },
        EventKind::ExecutionCompleted(finished) => Treatment::RunFinished(finished),
        EventKind::ExecutionFailed(finished)
        | EventKind::ExecutionCancelled(finished)
        | EventKind::TimedOut(finished)
        | EventKind::Dead(finished) => Treatment::RunError(finished),
        EventKind::StateChanged { .. }
        | EventKind::Heartbeat { .. }
        | EventKind::AgentStateUpdated { .. }
        | EventKind::RecordEdited { .. }
        | EventKind::BreakerOpened(_)
        | EventKind::BreakerHalfOpen(_)
        | EventKind::BreakerClosed(_) => Treatment::Omitted,
        // `EventKind` is non-exhaustive: a kind newer than this match.
        _ => return None,
    })
}

impl AguiMapper {
    /// The AG-UI messages for one event (often none, sometimes two).
    pub fn map(&mut self, event: &Event) -> Vec<Value> {
        let Some(scope) = &event.execution else {
            return Vec::new();
        };
        let id = scope.execution_id;
        if self.finished.contains(&id) {
            return Vec::new();
        }
        let run_id = id.to_string();
        let thread_id = scope.owner.thread_id.as_str();
        let mut out = Vec::new();
        let mut push = |mut message: Value| {
            message["timestamp"] = json!(event.timestamp.timestamp_millis());
            message["rawEvent"] = json!({"type": event.kind.name(), "global_seq": event.global_seq});
            out.push(message);
        };
        match treatment(&event.kind) {
            Some(Treatment::RunStarted) => {
                push(json!({"type": "RUN_STARTED", "threadId": thread_id, "runId": run_id}));
            }
            Some(Treatment::Step { transition, tool_name }) => {
                let from = transition.from_phase;
                let to = transition.to_phase;
                if working(from) {
                    if from == Phase::ToolExecution {
                        let call = self
                            .open_tool_calls
                            .remove(&id)
                            .unwrap_or_else(|| format!("{run_id}:tool"));
                        push(json!({"type": "TOOL_CALL_END", "toolCallId": call}));
                    } else {
                        push(json!({"type": "STEP_FINISHED", "stepName": from.as_str()}));
                    }
                }
                if working(to) {
                    if to == Phase::ToolExecution {
                        let call = format!("{run_id}:{}", scope.seq);
                        let name = tool_name.unwrap_or("unknown");
                        self.open_tool_calls.insert(id, call.clone());
                        push(json!({"type": "TOOL_CALL_START", "toolCallId": call, "toolCallName": name}));
                    } else {
                        push(json!({"type": "STEP_STARTED", "stepName": to.as_str()}));
                    }
                }
            }
            Some(Treatment::RunFinished(finished)) => {
                push(json!({"type": "RUN_FINISHED", "threadId": thread_id, "runId": run_id,
                    "result": finished.result}));
                self.finish(id);
            }
            Some(Treatment::RunError(finished)) => {
                let message = finished
                    .error
                    .clone()
                    .unwrap_or_else(|| format!("execution {}", finished.state));
                push(json!({"type": "RUN_ERROR", "message": message, "code": finished.state.as_str()}));
                self.finish(id);
            }
            Some(Treatment::Omitted) | None => {}
        }
        out
    }

    fn finish(&mut self, id: ExecutionId) {
        self.open_tool_calls.remove(&id);
        if self.finished.insert(id) {
            self.finished_order.push_back(id);
        }
        while self.finished_order.len() > REMEMBERED {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }
}
