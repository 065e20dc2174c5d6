//! Core operations that wait on Python in the middle, split in two around a Python `await`.
//!
//! Two core operations await something the caller provides: [`Tracker::transition_notify`]
//! awaits the WebSocket manager's notification, and [`Tracker::execute`] awaits the protected
//! call. In Python both of those are coroutines that must run on the caller's own event loop.
//! Rather than re-implement the core's bookkeeping, the bindings drive the core's own future by
//! hand:
//!
//! 1. The core future is built around a stand-in for the Python side — a notifier or a call that
//!    waits on a one-shot channel — and polled once. Everything the core does before the await
//!    happens in that poll: the transition is recorded and the notification's arguments are
//!    captured, or the breaker admits the call (or refuses it) and marks it in flight.
//! 2. Python awaits the real coroutine.
//! 3. Its outcome is sent through the channel and the future is polled again; it completes in
//!    that poll, doing the core's second half (marking the notification sent, or recording the
//!    call's success or failure in the breaker).
//!
//! The futures never wait on anything else, so a no-op waker suffices. The core's `execute` arms
//! a tokio timer for its call timeout, so the polls run inside a (never driven) tokio runtime's
//! context; the timeout itself is enforced on the Python side with `asyncio.wait_for`, and a
//! Python timeout is reported to the core as a failure, which the breaker counts exactly as it
//! counts a timeout.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use agentrack::{CallError, Notifier, NotifyError, Tracker, TrackerError, Transition};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::convert::json_to_py;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

#[allow(
    clippy::expect_used,
    reason = "not input-derived: a current-thread runtime with only a timer fails to build only if the OS refuses the process a resource, and then nothing could run"
)]
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a tokio runtime with only a timer can always be built")
    })
}

/// Polls `future` once, inside the runtime's context (for the core's timers).
fn poll_once<T>(future: &mut BoxFuture<T>) -> Poll<T> {
    let _context = runtime().enter();
    let mut cx = Context::from_waker(Waker::noop());
    future.as_mut().poll(&mut cx)
}

/// The notification the core asked for, captured for Python to send.
struct Captured {
    method: &'static str,
    kwargs: Vec<(&'static str, Value)>,
}

/// A [`Notifier`] that captures the notification and waits for Python's verdict on it.
struct Bridge {
    captured: Mutex<Option<Captured>>,
    verdict: Mutex<Option<oneshot::Receiver<bool>>>,
}

impl Bridge {
    fn capture(
        &self,
        method: &'static str,
        kwargs: Vec<(&'static str, Value)>,
    ) -> impl Future<Output = Result<(), NotifyError>> + Send + 'static {
        *self.captured.lock() = Some(Captured { method, kwargs });
        let verdict = self.verdict.lock().take();
        async move {
            match verdict {
                Some(verdict) => match verdict.await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err("the websocket manager's notification failed".into()),
                    Err(_) => Err("the notification was abandoned".into()),
                },
                None => Err("one notification per transition".into()),
            }
        }
    }
}

/// `captured` keyword arguments as a dict, in the order the original passed them.
fn kwargs_dict<'py>(py: Python<'py>, kwargs: &[(&'static str, Value)]) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (key, value) in kwargs {
        dict.set_item(*key, json_to_py(py, value)?)?;
    }
    Ok(dict)
}

/// The manager method and keyword arguments of `notification`, exactly as the in-process path
/// passes them (same names, values and order): for a notification made elsewhere (the server's
/// record, in remote mode).
pub(crate) fn notification_call<'py>(
    py: Python<'py>,
    notification: &agentrack::Notification,
) -> PyResult<(&'static str, Bound<'py, PyDict>)> {
    let bridge = Bridge {
        captured: Mutex::new(None),
        verdict: Mutex::new(None),
    };
    // Without a verdict to wait for, sending only captures the call: ready at the first poll.
    {
        let _context = runtime().enter();
        let mut sending = std::pin::pin!(notification.send(&bridge));
        let _ = sending.as_mut().poll(&mut Context::from_waker(Waker::noop()));
    }
    let captured = bridge
        .captured
        .lock()
        .take()
        .ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("the notification made no call"))?;
    Ok((captured.method, kwargs_dict(py, &captured.kwargs)?))
}

fn text(value: &str) -> Value {
    Value::String(value.to_owned())
}

impl Notifier for Bridge {
    fn agent_started(
        &self,
        run_id: &str,
        agent_name: &str,
        context: &Value,
    ) -> impl Future<Output = Result<(), NotifyError>> + Send {
        self.capture(
            "notify_agent_started",
            vec![
                ("run_id", text(run_id)),
                ("agent_name", text(agent_name)),
                ("context", context.clone()),
            ],
        )
    }

    fn agent_thinking(
        &self,
        run_id: &str,
        agent_name: &str,
        reasoning: &str,
        step_number: u32,
    ) -> impl Future<Output = Result<(), NotifyError>> + Send {
        self.capture(
            "notify_agent_thinking",
            vec![
                ("run_id", text(run_id)),
                ("agent_name", text(agent_name)),
                ("reasoning", text(reasoning)),
                ("step_number", Value::from(step_number)),
            ],
        )
    }

    fn tool_executing(
        &self,
        run_id: &str,
        agent_name: &str,
        tool_name: &str,
        parameters: &Value,
    ) -> impl Future<Output = Result<(), NotifyError>> + Send {
        self.capture(
            "notify_tool_executing",
            vec![
                ("run_id", text(run_id)),
                ("agent_name", text(agent_name)),
                ("tool_name", text(tool_name)),
                ("parameters", parameters.clone()),
            ],
        )
    }

    fn agent_completed(
        &self,
        run_id: &str,
        agent_name: &str,
        result: &Value,
        execution_time_ms: i64,
    ) -> impl Future<Output = Result<(), NotifyError>> + Send {
        self.capture(
            "notify_agent_completed",
            vec![
                ("run_id", text(run_id)),
                ("agent_name", text(agent_name)),
                ("result", result.clone()),
                ("execution_time_ms", Value::from(execution_time_ms)),
            ],
        )
    }

    fn agent_error(
        &self,
        run_id: &str,
        agent_name: &str,
        error: &str,
        error_context: &Value,
    ) -> impl Future<Output = Result<(), NotifyError>> + Send {
        self.capture(
            "notify_agent_error",
            vec![
                ("run_id", text(run_id)),
                ("agent_name", text(agent_name)),
                ("error", text(error)),
                ("error_context", error_context.clone()),
            ],
        )
    }
}

type TransitionFuture = BoxFuture<Result<Transition, TrackerError>>;

/// What the first half of a notified transition produced.
pub(crate) enum TransitionStep {
    /// The transition is recorded and needs no notification; whether the rules allow it.
    Done(bool),
    /// The transition is recorded; the notification is to be sent.
    Notify(PendingNotification),
}

/// Records a phase transition through the core's `transition_notify`, up to the point where the
/// notification must be sent.
///
/// # Errors
///
/// The core's error (`NotFound` for an unknown execution).
pub(crate) fn begin_transition(
    py: Python<'_>,
    tracker: &Tracker,
    id: agentrack::ExecutionId,
    phase: agentrack::Phase,
    metadata: serde_json::Map<String, Value>,
) -> PyResult<Result<TransitionStep, TrackerError>> {
    let (send, receive) = oneshot::channel();
    let bridge = Arc::new(Bridge {
        captured: Mutex::new(None),
        verdict: Mutex::new(Some(receive)),
    });
    let tracker = tracker.clone();
    let notifier = Arc::clone(&bridge);
    let mut future: TransitionFuture =
        Box::pin(async move { tracker.transition_notify(id, phase, Some(metadata), &*notifier).await });
    match poll_once(&mut future) {
        Poll::Ready(Ok(transition)) => Ok(Ok(TransitionStep::Done(transition.valid))),
        Poll::Ready(Err(error)) => Ok(Err(error)),
        Poll::Pending => {
            let Some(captured) = bridge.captured.lock().take() else {
                // Cannot happen: the core only waits on the notifier.
                return Ok(Ok(TransitionStep::Done(true)));
            };
            let kwargs = kwargs_dict(py, &captured.kwargs)?;
            Ok(Ok(TransitionStep::Notify(PendingNotification {
                method: captured.method,
                kwargs: kwargs.unbind(),
                rest: Mutex::new(Some((future, send))),
            })))
        }
    }
}

/// A recorded phase transition whose notification is still to be sent: call the manager's
/// `method` with `kwargs`, then `finish(sent)`.
#[pyclass(frozen, module = "agentrack._core")]
pub(crate) struct PendingNotification {
    method: &'static str,
    kwargs: Py<PyDict>,
    rest: Mutex<Option<(TransitionFuture, oneshot::Sender<bool>)>>,
}

#[pymethods]
impl PendingNotification {
    /// The WebSocket manager's method to await, e.g. `"notify_agent_thinking"`.
    #[getter]
    fn method(&self) -> &'static str {
        self.method
    }

    /// Its keyword arguments (a fresh dict on each read).
    #[getter]
    fn kwargs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.kwargs.bind(py).copy()
    }

    /// Completes the transition: `sent` says whether the manager accepted the notification (the
    /// transition's `websocket_event_sent`). Returns whether the phase rules allow the transition.
    fn finish(&self, py: Python<'_>, sent: bool) -> bool {
        let Some((mut future, verdict)) = self.rest.lock().take() else {
            return true;
        };
        let _ = verdict.send(sent);
        py.detach(move || match poll_once(&mut future) {
            Poll::Ready(Ok(transition)) => transition.valid,
            _ => true,
        })
    }
}

/// The protected call's outcome, as the core's stand-in call reports it.
#[derive(Debug)]
struct Failed;

type CallFuture = BoxFuture<Result<(), CallError<Failed>>>;

/// The second half of a protected call: the core's future and the channel to its stand-in call.
type CallRest = (CallFuture, oneshot::Sender<Result<(), Failed>>);

/// How a request to run a protected call went.
pub(crate) enum Admission {
    /// The call may run; report its outcome to the `ProtectedCall`.
    Admitted(ProtectedCall),
    /// The breaker is open: retry after this many seconds.
    Open(f64),
    /// The core refused for another reason (unknown or finished execution).
    Refused(TrackerError),
}

/// Asks the execution's circuit breaker to admit one call, through the core's `execute`.
pub(crate) fn begin_call(tracker: &Tracker, id: agentrack::ExecutionId, operation: &str) -> Admission {
    let (send, receive) = oneshot::channel::<Result<(), Failed>>();
    let core = tracker.clone();
    let operation = operation.to_owned();
    let mut future: CallFuture = Box::pin(async move {
        let call = async move { receive.await.unwrap_or(Err(Failed)) };
        core.execute(id, &operation, call).await
    });
    match poll_once(&mut future) {
        Poll::Ready(Err(CallError::Tracker(TrackerError::CircuitOpen { retry_after, .. }))) => {
            Admission::Open(retry_after.as_secs_f64())
        }
        Poll::Ready(Err(CallError::Tracker(error))) => Admission::Refused(error),
        // The stand-in call cannot finish before Python reports; treat it as a refusal.
        Poll::Ready(_) => Admission::Refused(TrackerError::NotFound { execution_id: id }),
        Poll::Pending => {
            let (timeout, trial) = match tracker.get(id) {
                Ok(record) => (
                    record
                        .timeout_config
                        .map_or(tracker.config().timeout_config, |config| *config)
                        .llm_api_timeout
                        .as_secs_f64(),
                    record.circuit_breaker_state == agentrack::BreakerState::HalfOpen,
                ),
                Err(_) => (tracker.config().timeout_config.llm_api_timeout.as_secs_f64(), false),
            };
            Admission::Admitted(ProtectedCall {
                timeout,
                trial,
                rest: Mutex::new(Some((future, send))),
            })
        }
    }
}

/// A call admitted by an execution's circuit breaker: run it within `timeout` seconds, then
/// report `finish(True)` on success or `finish(False)` on failure or timeout.
#[pyclass(frozen, module = "agentrack._core")]
pub(crate) struct ProtectedCall {
    timeout: f64,
    trial: bool,
    rest: Mutex<Option<CallRest>>,
}

#[pymethods]
impl ProtectedCall {
    /// The call's time limit in seconds (the execution's `llm_api_timeout`).
    #[getter]
    fn timeout(&self) -> f64 {
        self.timeout
    }

    /// Whether the call is a half-open breaker's trial.
    #[getter]
    fn trial(&self) -> bool {
        self.trial
    }

    /// Records the call's outcome in the breaker: success closes or keeps it closed, failure counts
    /// toward opening it.
    fn finish(&self, py: Python<'_>, success: bool) {
        let Some((mut future, outcome)) = self.rest.lock().take() else {
            return;
        };
        let _ = outcome.send(if success { Ok(()) } else { Err(Failed) });
        py.detach(move || {
            let _ = poll_once(&mut future);
        });
    }

    /// Gives the admission back without an outcome (the caller was cancelled). Not counted, as in
    /// the original — except a half-open trial, which counts as a failure so that the breaker is
    /// not left waiting for a verdict that never comes.
    fn abandon(&self, py: Python<'_>) {
        if self.trial {
            self.finish(py, false);
        } else {
            let rest = self.rest.lock().take();
            drop(rest);
        }
    }
}
