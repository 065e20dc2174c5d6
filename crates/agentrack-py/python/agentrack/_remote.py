"""Remote mode: ``AgentExecutionTracker`` answered by an agentrack server.

``AgentExecutionTracker()`` becomes a :class:`RemoteTracker` when ``AGENTRACK_URL`` is set (with
``AGENTRACK_TOKEN``, an agent token), or when given ``url=`` and ``token=``. The synchronous
methods are the Rust ``RemoteCore``'s, bound onto the instance so that a call goes straight into
Rust as in local mode; the asynchronous ones run the blocking Rust call on a worker thread
(``asyncio.to_thread``), so that they never block the event loop, and await the WebSocket
manager and the callbacks here, on the caller's loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from ._core import ExecutionRecord, ManualClock, RemoteCore
from ._tracker import AgentExecutionTracker, _maybe_await, _with_callers_metadata, remote_target
from ._types import AgentExecutionPhase, TimeoutConfig

__all__ = ["RemoteTracker", "remote_target"]

logger = logging.getLogger("agentrack")

T = TypeVar("T")

# The methods RemoteCore answers, bound onto each remote tracker (an instance attribute shadows
# the local core's method of the same name).
_BOUND = (
    "create_execution",
    "create_execution_id",
    "get_default_timeout",
    "start_execution",
    "heartbeat",
    "update_execution_state",
    "complete_execution",
    "fail_execution",
    "cancel_execution",
    "get_execution_state",
    "get_execution",
    "get_active_executions",
    "get_executions_by_agent",
    "get_executions_by_thread",
    "get_executions_by_user",
    "detect_dead_executions",
    "get_metrics",
    "cleanup_state",
    "validate_state_transition",
    "get_state_history",
    "get_agent_state",
    "set_agent_state",
    "check_timeout",
    "register_circuit_breaker",
    "reset_circuit_breaker",
    "circuit_breaker_status",
    "set_timeout",
    "_begin_call",
    "_record_breaker_outcome",
    "_create_with_context",
    "_sweep",
    "_record_count",
    "_execution_ids",
    "_active_count",
    "_now",
    "_json_roundtrip",
)


class RemoteTracker(AgentExecutionTracker):
    """An ``AgentExecutionTracker`` whose executions live on an agentrack server (or a cluster:
    comma-separated node URLs, failed over in order). Same methods, arguments and return values;
    the differences are listed in the package README's "Remote mode" section."""

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
        flush_interval: float = 0.5,
        retry_timeout: float = 5.0,
    ) -> None:
        target = remote_target(url, token)
        if target is None:
            raise ValueError("RemoteTracker needs a server: pass url=... or set AGENTRACK_URL")
        if clock is not None:
            raise ValueError(
                "clock= drives the in-process core only; in remote mode the server's monitor keeps time "
                '(pass url="" for local mode)'
            )
        del history_cap, max_finished  # the server keeps records by its own retention
        urls, token = target
        self._remote = RemoteCore(
            urls,
            token,
            heartbeat_timeout,
            execution_timeout,
            timeout_config,
            flush_interval,
            retry_timeout,
        )
        for name in _BOUND:
            setattr(self, name, getattr(self._remote, name))
        self._setup_python_state(
            heartbeat_timeout, execution_timeout, cleanup_interval, timeout_config, monitor_interval
        )

    def __repr__(self) -> str:
        return (
            f"AgentExecutionTracker(url={','.join(self._remote.urls)!r}, heartbeat_timeout={self.heartbeat_timeout!r}, "
            f"execution_timeout={self.execution_timeout!r})"
        )

    @property
    def _heartbeat_timeout_seconds(self) -> float:
        return self._remote._heartbeat_timeout_seconds

    def close(self) -> None:
        """Sends the heartbeats not yet sent and closes the event stream."""
        self._remote.close()

    def flush(self) -> None:
        """Sends the heartbeats counted so far now (they are otherwise sent every flush interval)."""
        self._remote._flush()

    # ------------------------------------------------------------------ monitoring

    async def start_monitoring(self) -> None:
        """Starts delivering this tracker's deaths and timeouts (heard on the server's event
        stream) to its callbacks, on the running event loop."""
        self._remote._watch()
        await super().start_monitoring()

    def register_death_callback(self, callback: Any) -> None:
        """Registers ``callback(record)`` for each execution this tracker created that the server
        declares dead."""
        self._remote._watch()
        super().register_death_callback(callback)

    def register_timeout_callback(self, callback: Any) -> None:
        """Registers ``callback(record)`` for each execution this tracker created that the server
        times out."""
        self._remote._watch()
        super().register_timeout_callback(callback)

    async def run_monitor_pass(self) -> dict[str, Any]:
        """Hands the deaths and timeouts heard since the last pass to the callbacks. Returns
        ``{"dead": [...], "timed_out": [...], "purged": 0}`` (the server purges)."""
        dead, timed_out, purged = await asyncio.to_thread(self._remote._sweep)
        with self._lock:
            death_callbacks = list(self._death_callbacks)
            timeout_callbacks = list(self._timeout_callbacks)
        for record in dead:
            logger.warning("Execution %s declared dead: %s", record.execution_id, record.error)
            await self._run_callbacks(death_callbacks, record, "Death")
        for record in timed_out:
            logger.warning("Execution %s timed out: %s", record.execution_id, record.error)
            await self._run_callbacks(timeout_callbacks, record, "Timeout")
        return {"dead": dead, "timed_out": timed_out, "purged": purged}

    async def _cleanup_old_executions(self) -> None:
        """Nothing to do here: the server purges finished executions after its retention."""

    def _purge_finished(self) -> int:
        return 0

    def _completed_history(self) -> list[ExecutionRecord]:
        return []

    def _check_consistency(self) -> list[str]:
        return []

    def _stream_events(self) -> list[dict[str, Any]]:
        """The deaths and timeouts the event stream delivered since the last call (every one the
        token may see, not only this tracker's), as event dicts."""
        return self._remote._stream_events()

    # ------------------------------------------------------------------ phases

    async def transition_state(
        self,
        execution_id: str,
        new_phase: AgentExecutionPhase,
        metadata: dict[str, Any] | None = None,
        websocket_manager: Any | None = None,
    ) -> bool:
        """Moves the execution to ``new_phase`` on the server (returning once it acknowledged
        the change) and, with a ``websocket_manager``, awaits its matching ``notify_*`` method
        here with exactly the original's keyword arguments. ``False`` for an unknown execution."""
        outcome = await asyncio.to_thread(self._remote._transition, execution_id, new_phase, metadata)
        if outcome is None:
            logger.error("Unknown execution ID: %s", execution_id)
            return False
        valid, method, kwargs = outcome
        if websocket_manager and method is not None and kwargs is not None:
            try:
                notify = getattr(websocket_manager, method)
                await _maybe_await(notify(**_with_callers_metadata(method, kwargs, metadata)))
            except Exception as error:  # noqa: BLE001 - a failing manager never fails the transition
                logger.error("Failed to emit WebSocket event for phase transition: %s", error)
        if not valid:
            logger.warning(
                "Invalid phase transition for %s to %s (allowed, as in the original)", execution_id, new_phase
            )
        return True

    async def _blocking(self, function: Callable[..., T], *args: Any) -> T:
        """Runs ``function(*args)`` (a request to the server) on a worker thread, so that the
        event loop never waits on the network."""
        return await asyncio.to_thread(function, *args)
