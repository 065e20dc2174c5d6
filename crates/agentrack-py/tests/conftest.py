"""Shared fixtures: a tracker on a manual clock (no test sleeps for time to pass), a mock
WebSocket manager, and a clean process-wide instance."""

from __future__ import annotations

from collections.abc import Iterator
from unittest.mock import AsyncMock

import pytest

import agentrack
from agentrack import AgentExecutionTracker, ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def tracker(clock: ManualClock) -> AgentExecutionTracker:
    return AgentExecutionTracker(clock=clock)


@pytest.fixture
def websocket_manager() -> AsyncMock:
    """A duck-typed WebSocket manager whose notify_* coroutines record their calls."""
    manager = AsyncMock()
    for name in (
        "notify_agent_started",
        "notify_agent_thinking",
        "notify_tool_executing",
        "notify_agent_completed",
        "notify_agent_error",
    ):
        setattr(manager, name, AsyncMock(return_value=None))
    return manager


@pytest.fixture
def new_execution(tracker: AgentExecutionTracker):
    """Creates an execution: new_execution(agent="agent", thread="thread-1", user="user-1", **kw)."""

    def create(agent: str = "agent", thread: str = "thread-1", user: str = "user-1", **kwargs) -> str:
        return tracker.create_execution(agent, thread, user, **kwargs)

    return create


@pytest.fixture
def running(tracker: AgentExecutionTracker, new_execution) -> str:
    """An execution that has started and heartbeated (state RUNNING)."""
    execution_id = new_execution()
    assert tracker.start_execution(execution_id)
    assert tracker.heartbeat(execution_id)
    return execution_id


@pytest.fixture
def fresh_global() -> Iterator[None]:
    """Runs a test with no process-wide tracker, and drops the one it made."""
    agentrack._tracker_instance = None
    yield
    agentrack._tracker_instance = None
