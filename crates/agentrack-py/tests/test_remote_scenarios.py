"""The seed's scenarios that remote mode cannot run as written, as far as they can run there.

``tests/test_scenarios.py`` has them exactly as the seed wrote them; in remote mode they are
skipped (``LOCAL_ONLY`` in ``conftest.py``) because they expect durations of exactly 0 ms (true
only on a clock that stands still), read ``websocket_event_sent`` (which the server does not
learn), or remove finished records from memory with ``cleanup_state`` (the server purges by its
retention). Here each keeps every other assertion, with the duration any non-negative number."""

from __future__ import annotations

from typing import Any

import pytest
from test_notifications import EXPECTED, RECORD_METADATA, STEP_METADATA, RecordingManager, assert_calls

from agentrack import AgentExecutionPhase, ExecutionState

pytestmark = pytest.mark.remote_only


class NonNegative:
    """Equal to any number of at least zero (a duration on the server's clock)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, float | int) and other >= 0

    def __repr__(self) -> str:
        return "<a duration>"


DURATION: Any = NonNegative()


def notifications(manager):
    return [c for c in manager.mock_calls if c[0].startswith("notify_")]


async def test_websocket_event_emission_during_phase_transitions(tracker, running, websocket_manager):
    await tracker.transition_state(running, AgentExecutionPhase.STARTING, {"k": 1}, websocket_manager)
    await tracker.transition_state(running, AgentExecutionPhase.THINKING, {"reasoning": "plan"}, websocket_manager)
    await tracker.transition_state(
        running, AgentExecutionPhase.TOOL_EXECUTION, {"tool_name": "search", "parameters": {"q": 1}}, websocket_manager
    )
    await tracker.transition_state(running, AgentExecutionPhase.FAILED, {"error": "tool failed"}, websocket_manager)
    websocket_manager.notify_agent_started.assert_awaited_once_with(
        run_id="thread-1",
        agent_name="agent",
        context={"phase": "starting", "total_duration_ms": DURATION, "metadata": {"k": 1}},
    )
    websocket_manager.notify_agent_thinking.assert_awaited_once_with(
        run_id="thread-1", agent_name="agent", reasoning="Agent is thinking... (step 2)", step_number=2
    )
    websocket_manager.notify_tool_executing.assert_awaited_once_with(
        run_id="thread-1",
        agent_name="agent",
        tool_name="execution_tools",
        parameters={"tool_name": "search", "parameters": {"q": 1}},
    )
    websocket_manager.notify_agent_error.assert_awaited_once_with(
        run_id="thread-1",
        agent_name="agent",
        error="Agent execution failed",
        error_context={"phase": "failed", "total_duration_ms": DURATION, "metadata": {"error": "tool failed"}},
    )


async def test_golden_path_chat_functionality_support(tracker, websocket_manager):
    execution_id = tracker.create_execution("supervisor", "thread-42", "user-42", metadata={"message": "weather?"})
    assert tracker.start_execution(execution_id)
    assert tracker.heartbeat(execution_id)
    steps = [
        (AgentExecutionPhase.WEBSOCKET_SETUP, {"connection": "ok"}),
        (AgentExecutionPhase.CONTEXT_VALIDATION, {"user": "user-42"}),
        (AgentExecutionPhase.STARTING, {"message": "weather?"}),
        (AgentExecutionPhase.THINKING, {"reasoning": "need a forecast"}),
        (AgentExecutionPhase.LLM_INTERACTION, {"model": "m"}),
        (AgentExecutionPhase.TOOL_EXECUTION, {"tool_name": "forecast", "parameters": {"city": "Paris"}}),
        (AgentExecutionPhase.RESULT_PROCESSING, {"reasoning": "summarising"}),
        (AgentExecutionPhase.COMPLETING, {"reasoning": "writing answer"}),
        (AgentExecutionPhase.COMPLETED, {"result": "sunny"}),
    ]
    for phase, metadata in steps:
        assert await tracker.transition_state(execution_id, phase, metadata, websocket_manager)
        tracker.heartbeat(execution_id)
    assert tracker.complete_execution(execution_id, result="sunny", execution_time_ms=1200)
    record = tracker.get_execution(execution_id)
    assert record.state is ExecutionState.COMPLETED
    assert record.current_phase is AgentExecutionPhase.COMPLETED
    assert all(t.valid for t in record.phase_history)
    events = []
    for name, _, kwargs in notifications(websocket_manager):
        assert kwargs["run_id"] == "thread-42" and kwargs["agent_name"] == "supervisor"
        event = name.removeprefix("notify_")
        if not events or events[-1] != event:
            events.append(event)
    assert events == ["agent_started", "agent_thinking", "tool_executing", "agent_thinking", "agent_completed"]
    assert websocket_manager.notify_agent_completed.await_args.kwargs["result"] == {
        "success": True,
        "total_duration_ms": DURATION,
        "phase_count": 9,
        "warnings": 0,
        "metadata": {"message": "weather?"},
    }


def test_terminal_state_handling_and_cleanup(tracker, new_execution):
    terminal = [
        ExecutionState.COMPLETED,
        ExecutionState.FAILED,
        ExecutionState.TIMEOUT,
        ExecutionState.DEAD,
        ExecutionState.CANCELLED,
    ]
    for state in terminal:
        execution_id = new_execution()
        tracker.start_execution(execution_id)
        assert tracker.update_execution_state(
            execution_id, state, error="x" if state is not ExecutionState.COMPLETED else None
        )
        record = tracker.get_execution(execution_id)
        assert record.is_terminal and record.completed_at is not None
        assert not tracker.heartbeat(execution_id)
        assert not tracker.update_execution_state(execution_id, ExecutionState.RUNNING)
        # Finished: the server keeps it until its retention, then purges it.
        assert tracker.cleanup_state(execution_id)
    assert tracker.get_active_executions() == []


DURATION_KEYS = ("total_duration_ms", "execution_time_ms")


def durations_checked(value):
    """``value`` with each duration replaced by its type and whether it is at least zero: on the
    server's clock a duration is whatever time passed, while every other argument stays exact."""
    if isinstance(value, dict):
        return {
            key: (type(item).__name__, item >= 0) if key in DURATION_KEYS else durations_checked(item)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(durations_checked(item) for item in value)
    return value


@pytest.mark.parametrize("phase", list(EXPECTED), ids=lambda phase: phase.value)
async def test_each_notified_phase_sends_the_originals_call(tracker, phase):
    """The twin of ``test_notifications.py``'s pin of every phase's call, in remote mode."""
    execution = tracker.create_execution("agent", "thread-1", "user-1", metadata=dict(RECORD_METADATA))
    assert tracker.set_agent_state(execution, {"warning_count": 2})
    assert await tracker.transition_state(execution, AgentExecutionPhase.WEBSOCKET_SETUP, {"socket": "open"})
    assert await tracker.transition_state(execution, AgentExecutionPhase.CONTEXT_VALIDATION, {"valid": True})
    manager = RecordingManager()
    assert await tracker.transition_state(execution, phase, dict(STEP_METADATA), manager) is True
    method, kwargs = EXPECTED[phase]
    assert_calls(durations_checked(manager.calls), durations_checked([(method, (), kwargs)]))
