"""``AgentExecutionTracker``: the original's class, on the Rust core.

The synchronous methods are inherited from :class:`agentrack._core.TrackerCore` and run in Rust.
The asynchronous ones are written here so that they run on the caller's own event loop:

* ``transition_state`` records the transition in Rust, awaits the WebSocket manager's
  ``notify_*`` coroutine here, and tells Rust whether it was sent;
* ``execute_with_circuit_breaker`` asks Rust's per-execution breaker to admit the call, awaits the
  coroutine under ``asyncio.wait_for`` here, and reports the outcome back;
* ``start_monitoring`` runs an asyncio task that calls the Rust sweep (marking dead and timed-out
  executions, purging old finished ones) and awaits the registered callbacks.

All state is in Rust, which is thread-safe; the little Python state here (callbacks and the
monitor task) is guarded by a lock, so one tracker can serve several threads and event loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ._core import ExecutionRecord, ManualClock, PendingNotification, TrackerCore
from ._types import (
    AgentExecutionPhase,
    CircuitBreakerOpenError,
    ExecutionState,
    TimeoutConfig,
)

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["AgentExecutionTracker", "remote_target"]

logger = logging.getLogger("agentrack")

T = TypeVar("T")

Callback = Callable[[ExecutionRecord], Awaitable[Any] | Any]


class _ExecutionsView(Mapping):  # type: ignore[type-arg]
    """A live, read-only mapping of id → record, standing in for the original's ``_executions``
    dict: ``len``, ``in``, iteration and ``[]`` always answer from the tracker's current state,
    and the records it gives are live (assigning their fields changes the executions)."""

    def __init__(self, tracker: AgentExecutionTracker) -> None:
        self._tracker = tracker

    def __getitem__(self, execution_id: str) -> ExecutionRecord:
        record = self._tracker.get_execution(execution_id)
        if record is None:
            raise KeyError(execution_id)
        return record

    def __contains__(self, execution_id: object) -> bool:
        return self._tracker.get_execution_state(execution_id) is not None  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tracker._execution_ids())

    def __len__(self) -> int:
        return self._tracker._record_count()


def _read_only(name: str) -> property:
    def getter(self: AgentExecutionTracker) -> Any:
        return self._settings[name]

    def setter(self: AgentExecutionTracker, value: Any) -> None:
        raise AttributeError(
            f"{name} is fixed when the tracker is created: pass {name}={value!r} to AgentExecutionTracker(...) instead"
        )

    return property(getter, setter, doc=f"The tracker's {name} (fixed at creation).")


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


# Where the original's notifications carry the transition's metadata: the argument itself, or the
# ``"metadata"`` entry of the dict argument.
_TRANSITION_METADATA: dict[str, tuple[str, str | None]] = {
    "notify_agent_started": ("context", "metadata"),
    "notify_tool_executing": ("parameters", None),
    "notify_agent_error": ("error_context", "metadata"),
}


def _with_callers_metadata(method: str, kwargs: dict[str, Any], metadata: Any) -> dict[str, Any]:
    """The notification's arguments with the caller's own metadata dict where the original put it
    (its transitions kept ``metadata or {}``, the very object given). The core's arguments hold
    the JSON copy it stored, which is equal for JSON-like values but not for others (a tuple, a
    date, an object) and is not the caller's object."""
    place = _TRANSITION_METADATA.get(method)
    if place is None or not metadata:
        return kwargs
    argument, key = place
    if key is None:
        kwargs[argument] = metadata
    else:
        kwargs[argument][key] = metadata
    return kwargs


def remote_target(url: str | None, token: str | None) -> tuple[str, str] | None:
    """The server to use, ``(urls, token)``, or ``None`` for the in-process core: ``url`` when
    given (``""`` chooses local mode explicitly), else ``AGENTRACK_URL``; the token given, else
    ``AGENTRACK_TOKEN``."""
    if url is None:
        url = os.environ.get("AGENTRACK_URL", "")
    if not url.strip():
        return None
    if token is None:
        token = os.environ.get("AGENTRACK_TOKEN", "")
    if not token.strip():
        raise ValueError(f"remote mode (url {url!r}) needs an agent token: pass token=... or set AGENTRACK_TOKEN")
    return url, token


class AgentExecutionTracker(TrackerCore):
    """Central tracker for agent executions: lifecycle, heartbeats and death detection, phases
    and WebSocket events, timeouts and per-execution circuit breakers, metrics.

    A drop-in for the original ``AgentExecutionTracker`` with the same constructor, methods and
    return values. The keyword-only arguments are additions: ``monitor_interval`` (seconds between
    monitor passes, 2 as in the original), ``clock`` (a :class:`ManualClock` for tests),
    ``history_cap`` (records kept by ``cleanup_state``, 100) and ``max_finished`` (finished records
    kept in memory at most).
    """

    def __init__(
        self,
        heartbeat_timeout: float = 10,
        execution_timeout: float = 15,
        cleanup_interval: float = 60,
        timeout_config: TimeoutConfig | None = None,
        *,
        monitor_interval: float = 2.0,
        clock: ManualClock | None = None,
        history_cap: int = 100,
        max_finished: int = 100_000,
        url: str | None = None,
        token: str | None = None,
    ) -> None:
        if url is not None and url.strip():
            raise ValueError("url: this tracker is local; AgentExecutionTracker(url=...) makes a remote one")
        self._init_core(
            heartbeat_timeout,
            execution_timeout,
            cleanup_interval,
            timeout_config,
            clock,
            monitor_interval,
            history_cap,
            max_finished,
        )
        self._setup_python_state(
            heartbeat_timeout, execution_timeout, cleanup_interval, timeout_config, monitor_interval
        )
        self._max_completed_history = history_cap

    def __new__(cls, *args: Any, url: str | None = None, token: str | None = None, **kwargs: Any) -> Self:
        """The in-process tracker, or with ``url=`` (or ``AGENTRACK_URL`` set) a remote one."""
        if cls is AgentExecutionTracker and remote_target(url, token) is not None:
            from ._remote import RemoteTracker

            return super().__new__(RemoteTracker)  # type: ignore[return-value]
        return super().__new__(cls)

    def _setup_python_state(
        self,
        heartbeat_timeout: float,
        execution_timeout: float,
        cleanup_interval: float,
        timeout_config: TimeoutConfig | None,
        monitor_interval: float,
    ) -> None:
        timeout_config = timeout_config or TimeoutConfig()
        self._settings: dict[str, Any] = {
            "heartbeat_timeout": heartbeat_timeout,
            "execution_timeout": execution_timeout,
            "cleanup_interval": cleanup_interval,
            "timeout_config": timeout_config,
        }
        self._monitor_interval = monitor_interval
        self._lock = threading.Lock()
        self._monitor_task: asyncio.Task[None] | None = None
        self._death_callbacks: list[Callback] = []
        self._timeout_callbacks: list[Callback] = []

    heartbeat_timeout = _read_only("heartbeat_timeout")
    execution_timeout = _read_only("execution_timeout")
    cleanup_interval = _read_only("cleanup_interval")
    timeout_config = _read_only("timeout_config")

    def __repr__(self) -> str:
        return (
            f"AgentExecutionTracker(heartbeat_timeout={self.heartbeat_timeout!r}, "
            f"execution_timeout={self.execution_timeout!r}, active={self._active_count()})"
        )

    # ------------------------------------------------------------------ monitoring

    async def start_monitoring(self) -> None:
        """Starts the background monitor on the running event loop (no-op if running)."""
        with self._lock:
            task = self._monitor_task
            if task is not None and not task.done() and not task.get_loop().is_closed():
                return
            self._monitor_task = asyncio.get_running_loop().create_task(
                self._monitor_executions(), name="agentrack-monitor"
            )
        logger.info("Started agent execution monitoring")

    async def stop_monitoring(self) -> None:
        """Stops the background monitor, waiting for it to end when it runs on this loop."""
        with self._lock:
            task, self._monitor_task = self._monitor_task, None
        if task is None:
            return
        loop = task.get_loop()
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is running:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        elif not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)
        logger.info("Stopped agent execution monitoring")

    @property
    def is_monitoring(self) -> bool:
        """Whether the background monitor is running."""
        task = self._monitor_task
        return task is not None and not task.done()

    def register_death_callback(self, callback: Callback) -> None:
        """Registers ``callback(record)`` (a coroutine function, or a plain function) for each
        execution the monitor declares dead."""
        with self._lock:
            self._death_callbacks.append(callback)

    def register_timeout_callback(self, callback: Callback) -> None:
        """Registers ``callback(record)`` for each execution the monitor times out."""
        with self._lock:
            self._timeout_callbacks.append(callback)

    async def _monitor_executions(self) -> None:
        """The monitor task: a pass at once, then one every ``monitor_interval`` seconds (2)."""
        logger.info("Started execution monitoring loop")
        while True:
            try:
                await self.run_monitor_pass()
            except asyncio.CancelledError:
                raise
            except Exception:  # the monitor must keep running
                logger.exception("Monitoring error")
            await asyncio.sleep(self._monitor_interval)

    async def run_monitor_pass(self) -> dict[str, Any]:
        """One monitor pass, as the background task runs it every ``monitor_interval`` seconds:
        marks dead executions DEAD and timed-out ones TIMEOUT, awaits the callbacks (a failing
        callback is logged, never fatal), and purges finished executions older than
        ``cleanup_interval``. Returns ``{"dead": [...], "timed_out": [...], "purged": n}``."""
        dead, timed_out, purged = self._sweep()
        with self._lock:
            death_callbacks = list(self._death_callbacks)
            timeout_callbacks = list(self._timeout_callbacks)
        for record in dead:
            logger.warning("Execution %s declared dead: %s", record.execution_id, record.error)
            await self._run_callbacks(death_callbacks, record, "Death")
        for record in timed_out:
            logger.warning("Execution %s timed out: %s", record.execution_id, record.error)
            await self._run_callbacks(timeout_callbacks, record, "Timeout")
        if purged:
            logger.info("Cleaned up %d old executions", purged)
        return {"dead": dead, "timed_out": timed_out, "purged": purged}

    @staticmethod
    async def _run_callbacks(callbacks: list[Callback], record: ExecutionRecord, kind: str) -> None:
        for callback in callbacks:
            try:
                await _maybe_await(callback(record))
            except Exception as error:  # noqa: BLE001 - a callback never stops the monitor
                logger.error("%s callback error: %s", kind, error)

    async def _cleanup_old_executions(self) -> None:
        """One purge pass, as the monitor runs it: drops finished executions that completed
        ``cleanup_interval`` seconds ago or more (a record whose ``completed_at`` was back-dated
        counts from that time)."""
        purged = self._purge_finished()
        if purged:
            logger.info("Cleaned up %d old executions", purged)

    # ------------------------------------------------------------------ phases

    async def transition_state(
        self,
        execution_id: str,
        new_phase: AgentExecutionPhase,
        metadata: dict[str, Any] | None = None,
        websocket_manager: Any | None = None,
    ) -> bool:
        """Moves the execution to ``new_phase``, recording the transition, and with a
        ``websocket_manager`` awaits its matching ``notify_*`` method with exactly the original's
        keyword arguments. ``False`` for an unknown execution. A transition outside the rules
        still happens and is logged; a failing manager is logged and the transition kept with
        ``websocket_event_sent`` false."""
        step = self._transition(execution_id, new_phase, metadata, bool(websocket_manager))
        if step is None:
            logger.error("Unknown execution ID: %s", execution_id)
            return False
        if isinstance(step, PendingNotification):
            valid = await self._send_notification(step, websocket_manager, metadata)
        else:
            valid = step
        if not valid:
            logger.warning(
                "Invalid phase transition for %s to %s (allowed, as in the original)", execution_id, new_phase
            )
        return True

    @staticmethod
    async def _send_notification(step: PendingNotification, websocket_manager: Any, metadata: Any) -> bool:
        sent = False
        try:
            notify = getattr(websocket_manager, step.method)
            await _maybe_await(notify(**_with_callers_metadata(step.method, step.kwargs, metadata)))
            sent = True
        except Exception as error:  # noqa: BLE001 - a failing manager never fails the transition
            logger.error("Failed to emit WebSocket event for phase transition: %s", error)
        except BaseException:
            step.finish(False)
            raise
        return step.finish(sent)

    # ------------------------------------------------------------------ circuit breaker

    async def _blocking(self, function: Callable[..., T], *args: Any) -> T:
        """Calls ``function(*args)``, a method of the core, from a coroutine: at once here (the
        in-process core never waits); remote mode runs it on a worker thread, as it waits on the
        network."""
        return function(*args)

    async def execute_with_circuit_breaker(
        self,
        execution_id: str,
        func: Callable[[], Awaitable[T]],
        operation_name: str = "operation",
    ) -> T:
        """Awaits ``func()`` under the execution's circuit breaker and its ``llm_api_timeout``.

        Raises ``ValueError`` for an unknown (or finished) execution, ``CircuitBreakerOpenError``
        while the breaker is open, ``TimeoutError`` when the call overruns (counted as a failure),
        or the call's own exception (counted as a failure)."""
        status, call, wait = await self._blocking(self._begin_call, execution_id, operation_name)
        if status == "not_found":
            raise ValueError(f"Unknown execution ID: {execution_id}")
        if status == "terminal":
            raise ValueError(f"Execution {execution_id} has finished; terminal states are final")
        if status == "open":
            logger.warning("Circuit breaker OPEN for %s - blocking request", execution_id)
            raise CircuitBreakerOpenError(
                f"Circuit breaker open for {operation_name}. Next attempt allowed in {wait:.1f}s"
            )
        assert call is not None
        try:
            result = await asyncio.wait_for(func(), timeout=call.timeout)
        except asyncio.TimeoutError:
            logger.error("Operation %s timed out for %s", operation_name, execution_id)
            await self._blocking(call.finish, False)
            raise TimeoutError(f"Operation {operation_name} timed out") from None
        except Exception as error:
            logger.error("Operation %s failed for %s: %s", operation_name, execution_id, error)
            await self._blocking(call.finish, False)
            raise
        except BaseException:
            call.abandon()
            raise
        await self._blocking(call.finish, True)
        return result

    async def _on_circuit_breaker_failure(self, execution_id: str, operation_name: str, error: Any) -> None:
        """Counts one failed protected call in the execution's circuit breaker (the original's
        bookkeeping after a call raised): the failure count goes up, and at the failure
        threshold the breaker opens until ``recovery_timeout`` has passed; in HALF_OPEN it
        re-opens at once; while it is open, the failure is counted and the breaker stays open for
        another ``recovery_timeout``. Nothing is counted for an unknown or finished execution."""
        logger.warning("Circuit breaker failure for %s in %s: %s", execution_id, operation_name, error)
        outcome = await self._blocking(self._record_breaker_outcome, execution_id, False)
        if outcome != "recorded":
            logger.debug("Breaker failure of %s not counted: %s", execution_id, outcome)
            return
        status = await self._blocking(self.circuit_breaker_status, execution_id)
        if status is not None and status["state"] == "open":
            logger.error("Circuit breaker OPENED for %s after %s failures", execution_id, status["failure_count"])

    async def _on_circuit_breaker_success(self, execution_id: str, operation_name: str) -> None:
        """Counts one successful protected call in the execution's circuit breaker (the
        original's bookkeeping after a call returned): in CLOSED the failure count is zeroed; in
        HALF_OPEN it counts toward ``success_threshold``, then the breaker closes. Nothing is
        counted for an unknown or finished execution, or while the breaker is open and refusing
        calls."""
        outcome = await self._blocking(self._record_breaker_outcome, execution_id, True)
        if outcome != "recorded":
            logger.debug("Breaker success of %s in %s not counted: %s", execution_id, operation_name, outcome)

    # ------------------------------------------------------------------ integration

    def create_execution_with_full_context(
        self,
        agent_name: str,
        user_context: dict[str, Any],
        timeout_config: dict[str, Any] | None = None,
        initial_state: str = "PENDING",
    ) -> str:
        """Creates an execution from a user context (``user_id``, ``thread_id``, ``metadata``)
        with its own timeout config (keys ``timeout_seconds``, ``llm_timeout``,
        ``failure_threshold``, ``recovery_timeout``, ``success_threshold``, ``max_retries``) and a
        closed circuit breaker, in ``initial_state`` (an ``ExecutionState`` name)."""

        def get(key: str, default: Any) -> Any:
            if isinstance(user_context, Mapping):
                return user_context.get(key, default)
            return getattr(user_context, key, default)

        if timeout_config:
            config = TimeoutConfig(
                agent_execution_timeout=timeout_config.get("timeout_seconds", 25.0),
                llm_api_timeout=timeout_config.get("llm_timeout", 15.0),
                failure_threshold=timeout_config.get("failure_threshold", 3),
                recovery_timeout=timeout_config.get("recovery_timeout", 30.0),
                success_threshold=timeout_config.get("success_threshold", 2),
                max_retries=timeout_config.get("max_retries", 2),
            )
        else:
            config = self.timeout_config
        state: ExecutionState | None = None
        if isinstance(initial_state, ExecutionState):
            state = initial_state
        elif isinstance(initial_state, str) and initial_state in ExecutionState.__members__:
            state = ExecutionState[initial_state]
        execution_id = self._create_with_context(
            agent_name,
            get("thread_id", "unknown"),
            get("user_id", "unknown"),
            get("metadata", None) or {},
            config,
            state,
        )
        logger.info("Created execution with full context: %s", execution_id)
        return execution_id

    def get_execution_with_full_context(self, execution_id: str) -> dict[str, Any] | None:
        """The record's fields with its agent state, timeout status, breaker status and phase
        history (``state`` in upper case, as the original returned it), or ``None``."""
        record = self.get_execution(execution_id)
        if record is None:
            return None
        return {
            "execution_id": record.execution_id,
            "agent_name": record.agent_name,
            "user_id": record.user_id,
            "thread_id": record.thread_id,
            "state": record.state.value.upper(),
            "timeout_seconds": record.timeout_seconds,
            "metadata": record.metadata,
            "state_info": self.get_agent_state(execution_id),
            "timeout_status": self.check_timeout(execution_id),
            "circuit_breaker_status": self.circuit_breaker_status(execution_id),
            "state_history": self.get_state_history(execution_id),
            "consolidated": True,
            "created_with_ssot": True,
        }

    # ------------------------------------------------------------------ the original's internals

    @property
    def _executions(self) -> Mapping:  # type: ignore[type-arg]
        """Read-only id → record mapping (the original's private dict)."""
        return _ExecutionsView(self)

    @property
    def _active_executions(self) -> set[str]:
        """Ids of the alive executions (the original's private set; a copy)."""
        return {record.execution_id for record in self.get_active_executions()}

    @property
    def _completed_executions(self) -> list[ExecutionRecord]:
        """Records removed by ``cleanup_state``, oldest first (the original's private list)."""
        return self._completed_history()
