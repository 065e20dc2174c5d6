"""Phases: transition rules, transitions, WebSocket notifications, history, agent state."""

from __future__ import annotations

from datetime import datetime
from unittest.mock import AsyncMock, MagicMock

import pytest

from agentrack import AgentExecutionPhase as P
from agentrack import ExecutionState, PhaseTransition

RULES = {
    P.CREATED: {P.WEBSOCKET_SETUP, P.FAILED},
    P.WEBSOCKET_SETUP: {P.CONTEXT_VALIDATION, P.FAILED},
    P.CONTEXT_VALIDATION: {P.STARTING, P.FAILED},
    P.STARTING: {P.THINKING, P.FAILED, P.TIMEOUT},
    P.THINKING: {P.TOOL_PREPARATION, P.LLM_INTERACTION, P.FAILED, P.TIMEOUT},
    P.TOOL_PREPARATION: {P.TOOL_EXECUTION, P.LLM_INTERACTION, P.FAILED, P.TIMEOUT},
    P.LLM_INTERACTION: {
        P.THINKING,
        P.TOOL_EXECUTION,
        P.RESULT_PROCESSING,
        P.FAILED,
        P.TIMEOUT,
        P.CIRCUIT_BREAKER_OPEN,
    },
    P.TOOL_EXECUTION: {P.THINKING, P.LLM_INTERACTION, P.RESULT_PROCESSING, P.FAILED, P.TIMEOUT},
    P.RESULT_PROCESSING: {P.COMPLETING, P.THINKING, P.FAILED, P.TIMEOUT},
    P.COMPLETING: {P.COMPLETED, P.FAILED, P.TIMEOUT},
    P.COMPLETED: set(),
    P.TIMEOUT: set(),
    P.FAILED: set(),
    P.CIRCUIT_BREAKER_OPEN: set(),
}

GOLDEN_PATH = [
    P.WEBSOCKET_SETUP,
    P.CONTEXT_VALIDATION,
    P.STARTING,
    P.THINKING,
    P.LLM_INTERACTION,
    P.TOOL_EXECUTION,
    P.RESULT_PROCESSING,
    P.COMPLETING,
    P.COMPLETED,
]


def notifications(manager):
    """The notify_* calls made on a mock manager (the original also asked it for truthiness)."""
    return [c for c in manager.mock_calls if c[0].startswith("notify_")]


@pytest.mark.parametrize("source", list(P))
@pytest.mark.parametrize("target", list(P))
def test_validate_state_transition_answers_the_rules(tracker, source, target):
    assert tracker.validate_state_transition(source, target) is (target in RULES[source])


def test_validate_state_transition_from_none_allows_only_created(tracker):
    assert tracker.validate_state_transition(None, P.CREATED) is True
    assert tracker.validate_state_transition(None, P.STARTING) is False


def test_validate_state_transition_is_false_for_non_phases(tracker):
    assert tracker.validate_state_transition(P.CREATED, "bogus") is False
    assert tracker.validate_state_transition(42, P.WEBSOCKET_SETUP) is False


async def test_transition_state_records_the_transition(tracker, running, clock):
    clock.advance(0.25)
    assert await tracker.transition_state(running, P.WEBSOCKET_SETUP, metadata={"socket": "ok"}) is True
    record = tracker.get_execution(running)
    assert record.current_phase is P.WEBSOCKET_SETUP
    assert record.updated_at == record.last_heartbeat == clock.now()
    [transition] = record.phase_history
    assert isinstance(transition, PhaseTransition)
    assert transition.from_phase is P.CREATED
    assert transition.to_phase is P.WEBSOCKET_SETUP
    assert transition.timestamp == clock.now()
    assert transition.duration_ms == pytest.approx(250.0)
    assert transition.metadata == {"socket": "ok"}
    assert transition.websocket_event_sent is False
    assert transition.valid is True


async def test_transition_state_unknown_execution_is_false(tracker, websocket_manager):
    assert await tracker.transition_state("exec_unknown", P.THINKING) is False
    assert await tracker.transition_state("exec_" + "1" * 32, P.THINKING, websocket_manager=websocket_manager) is False
    websocket_manager.notify_agent_thinking.assert_not_awaited()


async def test_transition_state_rejects_a_non_phase(tracker, running):
    with pytest.raises(TypeError, match="valid AgentExecutionPhase values"):
        await tracker.transition_state(running, {"phase": "thinking"})


async def test_transition_state_accepts_a_phase_value_string(tracker, running):
    assert await tracker.transition_state(running, "websocket_setup")
    assert tracker.get_execution(running).current_phase is P.WEBSOCKET_SETUP


async def test_invalid_transitions_happen_and_are_flagged(tracker, running, caplog):
    with caplog.at_level("WARNING", logger="agentrack"):
        assert await tracker.transition_state(running, P.COMPLETED) is True
    record = tracker.get_execution(running)
    assert record.current_phase is P.COMPLETED
    assert record.phase_history[-1].valid is False
    assert "Invalid phase transition" in caplog.text


async def test_transitions_on_a_finished_execution_still_happen(tracker, running):
    tracker.update_execution_state(running, ExecutionState.COMPLETED)
    assert await tracker.transition_state(running, P.COMPLETED) is True
    assert tracker.get_execution(running).current_phase is P.COMPLETED


async def test_phase_durations_go_to_the_phase_occupied(tracker, running, clock):
    clock.advance(1)  # in CREATED
    await tracker.transition_state(running, P.WEBSOCKET_SETUP)
    clock.advance(2)  # in WEBSOCKET_SETUP
    await tracker.transition_state(running, P.CONTEXT_VALIDATION)
    clock.advance(3)  # in CONTEXT_VALIDATION (current)
    record = tracker.get_execution(running)
    assert record.get_phase_duration_ms(P.CREATED) == pytest.approx(1000)
    assert record.get_phase_duration_ms(P.WEBSOCKET_SETUP) == pytest.approx(2000)
    assert record.get_phase_duration_ms(P.CONTEXT_VALIDATION) == pytest.approx(3000)
    assert record.get_current_phase_duration_ms() == pytest.approx(3000)
    assert record.get_total_duration_ms() == pytest.approx(6000)
    # Revisits add up.
    await tracker.transition_state(running, P.STARTING)
    await tracker.transition_state(running, P.THINKING)
    clock.advance(1)
    await tracker.transition_state(running, P.LLM_INTERACTION)
    await tracker.transition_state(running, P.THINKING)
    clock.advance(1)
    assert record.get_phase_duration_ms(P.THINKING) == pytest.approx(2000)


# ---------------------------------------------------------------- notifications


# Every argument of every call is pinned to the original's in tests/test_notifications.py; these
# check which method each phase calls and how the transition records the outcome.


async def test_starting_notifies_agent_started(tracker, running, websocket_manager):
    await tracker.transition_state(running, P.STARTING, {"request": "hi"}, websocket_manager=websocket_manager)
    websocket_manager.notify_agent_started.assert_awaited_once_with(
        run_id="thread-1",
        agent_name="agent",
        context={"phase": "starting", "total_duration_ms": 0.0, "metadata": {"request": "hi"}},
    )
    assert tracker.get_execution(running).phase_history[-1].websocket_event_sent is True


@pytest.mark.parametrize(
    ("phase", "reasoning"),
    [
        (P.THINKING, "Agent is thinking... (step 2)"),
        (P.TOOL_PREPARATION, "Preparing tools for execution..."),
        (P.LLM_INTERACTION, "Interacting with AI language model..."),
        (P.RESULT_PROCESSING, "Processing results..."),
        (P.COMPLETING, "Finalizing response..."),
    ],
)
async def test_working_phases_notify_agent_thinking(tracker, running, websocket_manager, phase, reasoning):
    await tracker.transition_state(running, P.WEBSOCKET_SETUP)
    await tracker.transition_state(running, phase, {"reasoning": "because"}, websocket_manager)
    websocket_manager.notify_agent_thinking.assert_awaited_once_with(
        run_id="thread-1", agent_name="agent", reasoning=reasoning, step_number=2
    )


async def test_tool_execution_notifies_tool_executing(tracker, running, websocket_manager):
    metadata = {"tool_name": "search", "parameters": {"q": "weather"}}
    await tracker.transition_state(running, P.TOOL_EXECUTION, metadata, websocket_manager=websocket_manager)
    websocket_manager.notify_tool_executing.assert_awaited_once_with(
        run_id="thread-1", agent_name="agent", tool_name="execution_tools", parameters=metadata
    )


async def test_completed_notifies_agent_completed(tracker, running, websocket_manager, clock):
    clock.advance(1.5)
    await tracker.transition_state(
        running, P.COMPLETED, {"result": {"answer": 42}}, websocket_manager=websocket_manager
    )
    websocket_manager.notify_agent_completed.assert_awaited_once_with(
        run_id="thread-1",
        agent_name="agent",
        result={"success": True, "total_duration_ms": 1500.0, "phase_count": 1, "warnings": 0, "metadata": {}},
        execution_time_ms=1500,
    )


@pytest.mark.parametrize(
    ("phase", "error"),
    [
        (P.FAILED, "Agent execution failed"),
        (P.TIMEOUT, "Agent execution timed out"),
        (P.CIRCUIT_BREAKER_OPEN, "Service temporarily unavailable"),
    ],
)
async def test_error_phases_notify_agent_error(tracker, running, websocket_manager, phase, error):
    await tracker.transition_state(running, phase, {"error": "bad things"}, websocket_manager=websocket_manager)
    websocket_manager.notify_agent_error.assert_awaited_once_with(
        run_id="thread-1",
        agent_name="agent",
        error=error,
        error_context={"phase": phase.value, "total_duration_ms": 0.0, "metadata": {"error": "bad things"}},
    )


@pytest.mark.parametrize("phase", [P.CREATED, P.WEBSOCKET_SETUP, P.CONTEXT_VALIDATION])
async def test_setup_phases_notify_nothing(tracker, running, websocket_manager, phase):
    assert await tracker.transition_state(running, phase, websocket_manager=websocket_manager)
    assert notifications(websocket_manager) == []
    assert tracker.get_execution(running).phase_history[-1].websocket_event_sent is False


async def test_a_failing_manager_keeps_the_transition(tracker, running, caplog):
    manager = MagicMock()
    manager.notify_agent_thinking = AsyncMock(side_effect=ConnectionError("socket closed"))
    with caplog.at_level("ERROR", logger="agentrack"):
        assert await tracker.transition_state(running, P.THINKING, websocket_manager=manager) is True
    record = tracker.get_execution(running)
    assert record.current_phase is P.THINKING
    assert record.phase_history[-1].websocket_event_sent is False
    assert "socket closed" in caplog.text


async def test_a_manager_without_the_method_keeps_the_transition(tracker, running):
    class OnlyStarted:
        def __init__(self) -> None:
            self.calls: list[dict] = []

        async def notify_agent_started(self, **kwargs):
            self.calls.append(kwargs)

    manager = OnlyStarted()
    assert await tracker.transition_state(running, P.THINKING, websocket_manager=manager)
    assert tracker.get_execution(running).phase_history[-1].websocket_event_sent is False
    assert await tracker.transition_state(running, P.STARTING, websocket_manager=manager)
    assert manager.calls == [
        {
            "run_id": "thread-1",
            "agent_name": "agent",
            "context": {"phase": "starting", "total_duration_ms": 0.0, "metadata": {}},
        }
    ]
    assert tracker.get_execution(running).phase_history[-1].websocket_event_sent is True


async def test_a_plain_object_manager_with_coroutine_methods(tracker, running):
    seen = []

    class Manager:
        async def notify_tool_executing(self, run_id, agent_name, tool_name, parameters):
            seen.append((run_id, agent_name, tool_name, parameters))

    await tracker.transition_state(running, P.TOOL_EXECUTION, {"tool_name": "calc"}, Manager())
    assert seen == [("thread-1", "agent", "execution_tools", {"tool_name": "calc"})]


async def test_golden_path_notifications_arrive_in_order(tracker, running, websocket_manager):
    for phase in GOLDEN_PATH:
        assert await tracker.transition_state(running, phase, {"step": phase.value}, websocket_manager)
    names = [name for name, _, _ in notifications(websocket_manager)]
    assert names == [
        "notify_agent_started",
        "notify_agent_thinking",  # thinking
        "notify_agent_thinking",  # llm_interaction
        "notify_tool_executing",
        "notify_agent_thinking",  # result_processing
        "notify_agent_thinking",  # completing
        "notify_agent_completed",
    ]
    history = tracker.get_execution(running).phase_history
    assert [t.valid for t in history] == [True] * len(GOLDEN_PATH)
    assert [t.websocket_event_sent for t in history] == [False, False] + [True] * 7


async def test_a_cancelled_notification_leaves_the_transition_unsent(tracker, running):
    import asyncio

    started = asyncio.Event()

    class Slow:
        async def notify_agent_thinking(self, **kwargs):
            started.set()
            await asyncio.sleep(10)

    task = asyncio.ensure_future(tracker.transition_state(running, P.THINKING, websocket_manager=Slow()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    record = tracker.get_execution(running)
    assert record.current_phase is P.THINKING
    assert record.phase_history[-1].websocket_event_sent is False


# ---------------------------------------------------------------- history and agent state


async def test_get_state_history_gives_dicts(tracker, running, websocket_manager):
    await tracker.transition_state(running, P.WEBSOCKET_SETUP, {"a": 1})
    await tracker.transition_state(running, P.CONTEXT_VALIDATION)
    await tracker.transition_state(running, P.STARTING, websocket_manager=websocket_manager)
    history = tracker.get_state_history(running)
    assert [(h["from_phase"], h["to_phase"]) for h in history] == [
        ("created", "websocket_setup"),
        ("websocket_setup", "context_validation"),
        ("context_validation", "starting"),
    ]
    first = history[0]
    assert set(first) >= {"from_phase", "to_phase", "timestamp", "duration_ms", "metadata", "websocket_event_sent"}
    assert first["metadata"] == {"a": 1}
    assert datetime.fromisoformat(first["timestamp"]).utcoffset().total_seconds() == 0
    assert isinstance(first["duration_ms"], float)
    assert [h["websocket_event_sent"] for h in history] == [False, False, True]


def test_get_state_history_of_unknown_is_empty(tracker):
    assert tracker.get_state_history("exec_unknown") == []


async def test_get_agent_state(tracker, running, clock):
    clock.advance(2)
    await tracker.transition_state(running, P.WEBSOCKET_SETUP)
    clock.advance(1)
    state = tracker.get_agent_state(running)
    assert state == {
        "execution_id": running,
        "agent_name": "agent",
        "user_id": "user-1",
        "thread_id": "thread-1",
        "state": "running",
        "current_phase": "websocket_setup",
        "started_at": tracker.get_execution(running).started_at.isoformat(),
        "last_heartbeat": tracker.get_execution(running).last_heartbeat.isoformat(),
        "total_duration_ms": pytest.approx(3000),
        "current_phase_duration_ms": pytest.approx(1000),
        "phase_count": 1,
        "warning_count": 0,
        "error_count": 0,
        "metadata": {},
    }
    assert tracker.get_agent_state("exec_unknown") is None


def test_set_agent_state_updates_counts_and_merges_metadata(tracker, new_execution):
    execution_id = new_execution(metadata={"keep": 1, "replace": 1})
    assert tracker.set_agent_state(
        execution_id, {"warning_count": 2, "error_count": 1, "metadata": {"replace": 2, "new": 3}, "ignored": 9}
    )
    state = tracker.get_agent_state(execution_id)
    assert (state["warning_count"], state["error_count"]) == (2, 1)
    assert state["metadata"] == {"keep": 1, "replace": 2, "new": 3}
    record = tracker.get_execution(execution_id)
    assert (record.warning_count, record.error_count) == (2, 1)
    assert tracker.set_agent_state(execution_id, {"warning_count": 3})
    assert tracker.get_execution(execution_id).error_count == 1


def test_set_agent_state_error_paths(tracker, running):
    assert tracker.set_agent_state("exec_unknown", {"warning_count": 1}) is False
    with pytest.raises(TypeError, match="state_updates must be a dict"):
        tracker.set_agent_state(running, [("warning_count", 1)])
    with pytest.raises(TypeError):
        tracker.set_agent_state(running, {"warning_count": "many"})
