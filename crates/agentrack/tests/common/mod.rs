//! Helpers shared by the integration tests: clocks, metadata, the golden path, protected calls
//! and tripped breakers, event draining and a recording notifier.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::{Ready, ready};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use agentrack::{
    Breaker, Event, EventStream, ExecutionId, ManualClock, NewExecution, Notifier, NotifyError, Outcome, Phase,
    Tracker, TrackerConfig,
};
use futures_core::Stream;
use serde_json::{Map, Value};

/// Whole seconds.
pub(crate) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Milliseconds.
pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A JSON object literal as transition metadata.
#[allow(
    clippy::unnecessary_wraps,
    reason = "transition metadata is an Option: this is its literal"
)]
pub(crate) fn meta(value: Value) -> Option<Map<String, Value>> {
    Some(obj(value))
}

/// A JSON object literal as a map.
pub(crate) fn obj(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not a JSON object: {other}"),
    }
}

/// The golden path's phases after `created`, in order.
pub(crate) const GOLDEN_PATH: [Phase; 9] = [
    Phase::WebsocketSetup,
    Phase::ContextValidation,
    Phase::Starting,
    Phase::Thinking,
    Phase::LlmInteraction,
    Phase::ToolExecution,
    Phase::ResultProcessing,
    Phase::Completing,
    Phase::Completed,
];

/// A new execution of `agent` in `thread` for `user`.
pub(crate) fn new(agent: &str, thread: &str, user: &str) -> NewExecution {
    NewExecution::new(agent, thread, user)
}

/// A protected call that fails, like an overloaded provider.
pub(crate) fn fail_call() -> Ready<Result<u32, &'static str>> {
    ready(Err("503"))
}

/// A protected call that succeeds with `value`.
pub(crate) fn ok_call(value: u32) -> Ready<Result<u32, &'static str>> {
    ready(Ok(value))
}

/// A new execution whose own breaker three failed protected calls opened (the default
/// threshold). Its 600 s timeout outlives any clock move of the tests.
pub(crate) async fn tripped_execution(tracker: &Tracker) -> ExecutionId {
    let id = tracker
        .create(new("agent", "thread", "user").timeout(secs(600)))
        .expect("a valid new execution")
        .id();
    for _ in 0..3 {
        assert!(tracker.execute(id, "llm", fail_call()).await.is_err());
    }
    id
}

/// `times` calls through `breaker`, each ending with `outcome`.
pub(crate) fn record(breaker: &Breaker, outcome: Outcome, times: usize) {
    for _ in 0..times {
        breaker
            .acquire()
            .expect("the breaker lets the call through")
            .record(outcome);
    }
}

/// A tracker driven by a manual clock, and the clock.
pub(crate) fn manual(config: TrackerConfig) -> (Tracker, ManualClock) {
    let clock = ManualClock::new();
    (Tracker::with_clock(config, Arc::new(clock.clone())), clock)
}

/// Every event already delivered to `stream`, without waiting (events are broadcast
/// synchronously, so everything emitted so far is there).
pub(crate) fn drain(stream: &mut EventStream) -> Vec<Arc<Event>> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    loop {
        match Pin::new(&mut *stream).poll_next(&mut cx) {
            Poll::Ready(Some(Ok(event))) => out.push(event),
            Poll::Ready(Some(Err(lagged))) => panic!("subscriber lagged: {lagged}"),
            Poll::Ready(None) | Poll::Pending => return out,
        }
    }
}

/// The `type` names of events.
pub(crate) fn names(events: &[Arc<Event>]) -> Vec<&'static str> {
    events.iter().map(|event| event.kind.name()).collect()
}

/// The events of one execution.
pub(crate) fn of(events: &[Arc<Event>], id: ExecutionId) -> Vec<Arc<Event>> {
    events
        .iter()
        .filter(|event| event.execution.as_ref().is_some_and(|scope| scope.execution_id == id))
        .cloned()
        .collect()
}

/// One notification received by [`Recorder`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Note {
    Started {
        run_id: String,
        agent: String,
        context: Value,
    },
    Thinking {
        run_id: String,
        agent: String,
        reasoning: String,
        step: u32,
    },
    Tool {
        run_id: String,
        agent: String,
        tool: String,
        parameters: Value,
    },
    Completed {
        run_id: String,
        agent: String,
        result: Value,
        execution_time_ms: i64,
    },
    Error {
        run_id: String,
        agent: String,
        error: String,
        context: Value,
    },
}

impl Note {
    /// The original's notification name.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Note::Started { .. } => "agent_started",
            Note::Thinking { .. } => "agent_thinking",
            Note::Tool { .. } => "tool_executing",
            Note::Completed { .. } => "agent_completed",
            Note::Error { .. } => "agent_error",
        }
    }
}

/// A [`Notifier`] that records what it is told; with `fail` set it records and then reports an
/// error, like a WebSocket manager whose socket closed.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub(crate) notes: Mutex<Vec<Note>>,
    pub(crate) fail: bool,
}

impl Recorder {
    pub(crate) fn failing() -> Self {
        Self {
            notes: Mutex::default(),
            fail: true,
        }
    }

    pub(crate) fn notes(&self) -> Vec<Note> {
        self.notes.lock().expect("notes lock").clone()
    }

    fn push(&self, note: Note) -> Result<(), NotifyError> {
        self.notes.lock().expect("notes lock").push(note);
        if self.fail {
            Err("websocket closed".into())
        } else {
            Ok(())
        }
    }
}

impl Notifier for Recorder {
    async fn agent_started(&self, run_id: &str, agent_name: &str, context: &Value) -> Result<(), NotifyError> {
        self.push(Note::Started {
            run_id: run_id.to_owned(),
            agent: agent_name.to_owned(),
            context: context.clone(),
        })
    }

    async fn agent_thinking(
        &self,
        run_id: &str,
        agent_name: &str,
        reasoning: &str,
        step_number: u32,
    ) -> Result<(), NotifyError> {
        self.push(Note::Thinking {
            run_id: run_id.to_owned(),
            agent: agent_name.to_owned(),
            reasoning: reasoning.to_owned(),
            step: step_number,
        })
    }

    async fn tool_executing(
        &self,
        run_id: &str,
        agent_name: &str,
        tool_name: &str,
        parameters: &Value,
    ) -> Result<(), NotifyError> {
        self.push(Note::Tool {
            run_id: run_id.to_owned(),
            agent: agent_name.to_owned(),
            tool: tool_name.to_owned(),
            parameters: parameters.clone(),
        })
    }

    async fn agent_completed(
        &self,
        run_id: &str,
        agent_name: &str,
        result: &Value,
        execution_time_ms: i64,
    ) -> Result<(), NotifyError> {
        self.push(Note::Completed {
            run_id: run_id.to_owned(),
            agent: agent_name.to_owned(),
            result: result.clone(),
            execution_time_ms,
        })
    }

    async fn agent_error(
        &self,
        run_id: &str,
        agent_name: &str,
        error: &str,
        error_context: &Value,
    ) -> Result<(), NotifyError> {
        self.push(Note::Error {
            run_id: run_id.to_owned(),
            agent: agent_name.to_owned(),
            error: error.to_owned(),
            context: error_context.clone(),
        })
    }
}
