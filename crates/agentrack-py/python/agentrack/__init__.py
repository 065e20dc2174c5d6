"""agentrack: agent execution tracking for LLM agents, backed by a Rust core.

A drop-in for the original ``netra_backend.app.core.agent_execution_tracker`` module: change

    from netra_backend.app.core.agent_execution_tracker import AgentExecutionTracker, ExecutionState

to

    from agentrack import AgentExecutionTracker, ExecutionState

and every public name keeps its signature, defaults, return values and errors, while the tracker
becomes thread-safe, never reuses an execution id, and no longer scans every execution to find
dead ones.

With ``AGENTRACK_URL`` set (and ``AGENTRACK_TOKEN``, an agent token), or given
``AgentExecutionTracker(url=..., token=...)``, the tracker is the server's instead: every worker
process of every machine sees the same executions, and the server declares a dead worker's runs
dead (remote mode, see the README).
"""

from __future__ import annotations

import logging
import threading

from ._core import AgentrackUnavailableError, ExecutionRecord, ManualClock, __version__
from ._remote import RemoteTracker
from ._tracker import AgentExecutionTracker
from ._types import (
    AgentExecutionPhase,
    CircuitBreakerOpenError,
    CircuitBreakerState,
    ExecutionState,
    PhaseTransition,
    TimeoutConfig,
)

__all__ = [
    "AgentExecutionPhase",
    "AgentExecutionTracker",
    "AgentrackUnavailableError",
    "CircuitBreakerOpenError",
    "CircuitBreakerState",
    "ExecutionRecord",
    "ExecutionState",
    "ExecutionTracker",
    "ManualClock",
    "PhaseTransition",
    "RemoteTracker",
    "TimeoutConfig",
    "__version__",
    "get_agent_state_tracker",
    "get_execution_tracker",
    "initialize_tracker",
    "shutdown_tracker",
]

logger = logging.getLogger("agentrack")

# The process-wide instance, as in the original (a test may reset it to None).
_tracker_instance: AgentExecutionTracker | None = None
_tracker_lock = threading.Lock()


def get_execution_tracker() -> AgentExecutionTracker:
    """The process-wide tracker, created on first use."""
    global _tracker_instance
    tracker = _tracker_instance
    if tracker is None:
        with _tracker_lock:
            if _tracker_instance is None:
                _tracker_instance = AgentExecutionTracker()
            tracker = _tracker_instance
    return tracker


async def initialize_tracker() -> AgentExecutionTracker:
    """Starts the process-wide tracker's monitoring and returns the tracker."""
    tracker = get_execution_tracker()
    await tracker.start_monitoring()
    logger.info("Initialized agent execution tracker")
    return tracker


async def shutdown_tracker() -> None:
    """Stops the process-wide tracker's monitoring."""
    tracker = get_execution_tracker()
    await tracker.stop_monitoring()
    logger.info("Shutdown agent execution tracker")


# Compatibility alias of the original.
ExecutionTracker = AgentExecutionTracker


def get_agent_state_tracker() -> AgentExecutionTracker:
    """The process-wide tracker (the original's compatibility name)."""
    return get_execution_tracker()
