"""The WebSocket manager's calls, pinned to the original's: for every phase the original notified
about, the whole call (method, positional and keyword arguments, their values, their types and
the order of dict keys) is compared with the list in SPEC.md ("The values of those keyword
arguments, exactly"). Front ends built on the original read these arguments.

A tracker on a ``ManualClock`` makes the durations exact: the execution is created at the
clock's start, so ``d`` (its total duration in ms) is the time the test advanced.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from agentrack import AgentExecutionPhase as P
from agentrack import AgentExecutionTracker, ManualClock

METHODS = (
    "notify_agent_started",
    "notify_agent_thinking",
    "notify_tool_executing",
    "notify_agent_completed",
    "notify_agent_error",
)


class RecordingManager:
    """A WebSocket manager that records every call whole: method, positional and keyword
    arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        if name not in METHODS:
            raise AttributeError(name)

        async def notify(*args: Any, **kwargs: Any) -> None:
            self.calls.append((name, args, kwargs))

        return notify


class OriginalSignatureManager:
    """A manager whose methods take exactly the original's parameters and nothing more, as a
    front end's manager written for the original does: an added or missing argument would raise
    ``TypeError`` and leave the transition unsent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def notify_agent_started(self, run_id, agent_name, context):
        self.sent.append("agent_started")

    async def notify_agent_thinking(self, run_id, agent_name, reasoning, step_number):
        self.sent.append("agent_thinking")

    async def notify_tool_executing(self, run_id, agent_name, tool_name, parameters):
        self.sent.append("tool_executing")

    async def notify_agent_completed(self, run_id, agent_name, result, execution_time_ms):
        self.sent.append("agent_completed")

    async def notify_agent_error(self, run_id, agent_name, error, error_context):
        self.sent.append("agent_error")


def typed(value: Any) -> Any:
    """``value`` with the type of each part and the order of dict keys spelled out, so that a
    comparison also tells ``1`` from ``1.0`` and ``True``, a list from a tuple, and
    ``{"a", "b"}`` ordered from ``{"b", "a"}``."""
    if isinstance(value, dict):
        return ("dict", [(typed(key), typed(item)) for key, item in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [typed(item) for item in value])
    return (type(value).__name__, value)


def assert_calls(actual: list[Any], expected: list[Any]) -> None:
    assert actual == expected
    assert typed(actual) == typed(expected)


RUN = {"run_id": "thread-1", "agent_name": "agent"}
RECORD_METADATA = {"request": "weather in Paris", "locale": "fr"}
STEP_METADATA = {"step": "the step's own data", "attempt": 1}

# Entering each phase after two silent ones (websocket_setup, context_validation), 1.25 s after
# the execution was created, with STEP_METADATA, on an execution with RECORD_METADATA and two
# warnings: d = 1250.0, n = 3.
EXPECTED: dict[P, tuple[str, dict[str, Any]]] = {
    P.STARTING: (
        "notify_agent_started",
        {**RUN, "context": {"phase": "starting", "total_duration_ms": 1250.0, "metadata": STEP_METADATA}},
    ),
    P.THINKING: (
        "notify_agent_thinking",
        {**RUN, "reasoning": "Agent is thinking... (step 3)", "step_number": 3},
    ),
    P.TOOL_PREPARATION: (
        "notify_agent_thinking",
        {**RUN, "reasoning": "Preparing tools for execution...", "step_number": 3},
    ),
    P.LLM_INTERACTION: (
        "notify_agent_thinking",
        {**RUN, "reasoning": "Interacting with AI language model...", "step_number": 3},
    ),
    P.RESULT_PROCESSING: (
        "notify_agent_thinking",
        {**RUN, "reasoning": "Processing results...", "step_number": 3},
    ),
    P.COMPLETING: (
        "notify_agent_thinking",
        {**RUN, "reasoning": "Finalizing response...", "step_number": 3},
    ),
    P.TOOL_EXECUTION: (
        "notify_tool_executing",
        {**RUN, "tool_name": "execution_tools", "parameters": STEP_METADATA},
    ),
    P.COMPLETED: (
        "notify_agent_completed",
        {
            **RUN,
            "result": {
                "success": True,
                "total_duration_ms": 1250.0,
                "phase_count": 3,
                "warnings": 2,
                "metadata": RECORD_METADATA,
            },
            "execution_time_ms": 1250,
        },
    ),
    P.FAILED: (
        "notify_agent_error",
        {
            **RUN,
            "error": "Agent execution failed",
            "error_context": {"phase": "failed", "total_duration_ms": 1250.0, "metadata": STEP_METADATA},
        },
    ),
    P.TIMEOUT: (
        "notify_agent_error",
        {
            **RUN,
            "error": "Agent execution timed out",
            "error_context": {"phase": "timeout", "total_duration_ms": 1250.0, "metadata": STEP_METADATA},
        },
    ),
    P.CIRCUIT_BREAKER_OPEN: (
        "notify_agent_error",
        {
            **RUN,
            "error": "Service temporarily unavailable",
            "error_context": {
                "phase": "circuit_breaker_open",
                "total_duration_ms": 1250.0,
                "metadata": STEP_METADATA,
            },
        },
    ),
}


def test_every_phase_is_pinned():
    silent = {P.CREATED, P.WEBSOCKET_SETUP, P.CONTEXT_VALIDATION}
    assert set(EXPECTED) | silent == set(P)


@pytest.fixture
def execution(tracker: AgentExecutionTracker) -> str:
    """An execution with RECORD_METADATA and two warnings, past the two silent setup phases."""
    execution_id = tracker.create_execution("agent", "thread-1", "user-1", metadata=dict(RECORD_METADATA))
    assert tracker.set_agent_state(execution_id, {"warning_count": 2})
    return execution_id


async def enter_after_setup(tracker: AgentExecutionTracker, execution_id: str, clock: ManualClock) -> None:
    clock.advance(0.5)
    assert await tracker.transition_state(execution_id, P.WEBSOCKET_SETUP, {"socket": "open"})
    clock.advance(0.5)
    assert await tracker.transition_state(execution_id, P.CONTEXT_VALIDATION, {"valid": True})
    clock.advance(0.25)


@pytest.mark.parametrize("phase", list(EXPECTED), ids=lambda phase: phase.value)
async def test_each_notified_phase_sends_the_originals_call(tracker, clock, execution, phase):
    await enter_after_setup(tracker, execution, clock)
    manager = RecordingManager()
    assert await tracker.transition_state(execution, phase, dict(STEP_METADATA), manager) is True
    method, kwargs = EXPECTED[phase]
    assert_calls(manager.calls, [(method, (), kwargs)])
    assert tracker.get_execution(execution).phase_history[-1].websocket_event_sent is True


@pytest.mark.parametrize("phase", [P.CREATED, P.WEBSOCKET_SETUP, P.CONTEXT_VALIDATION], ids=lambda p: p.value)
async def test_setup_phases_send_nothing(tracker, execution, phase):
    manager = RecordingManager()
    assert await tracker.transition_state(execution, phase, dict(STEP_METADATA), manager) is True
    assert manager.calls == []


@pytest.mark.parametrize("phase", list(EXPECTED), ids=lambda phase: phase.value)
async def test_a_manager_with_exactly_the_originals_parameters_takes_every_call(tracker, clock, execution, phase):
    await enter_after_setup(tracker, execution, clock)
    manager = OriginalSignatureManager()
    assert await tracker.transition_state(execution, phase, dict(STEP_METADATA), manager) is True
    assert manager.sent == [EXPECTED[phase][0].removeprefix("notify_")]
    assert tracker.get_execution(execution).phase_history[-1].websocket_event_sent is True


async def test_the_golden_path_sends_the_originals_calls_in_order(tracker, clock):
    """SPEC.md's golden path, 0.25 s per phase, with a warning and a metadata update on the
    way: each call carries its own step number and duration, and the completion summary the
    record's metadata as it is then."""
    execution_id = tracker.create_execution("supervisor", "thread-42", "user-42", metadata={"message": "weather?"})
    assert tracker.start_execution(execution_id)
    manager = RecordingManager()
    steps: list[tuple[P, dict[str, Any]]] = [
        (P.WEBSOCKET_SETUP, {"connection": "ok"}),
        (P.CONTEXT_VALIDATION, {"user": "user-42"}),
        (P.STARTING, {"message": "weather?"}),
        (P.THINKING, {"reasoning": "need a forecast"}),
        (P.LLM_INTERACTION, {"model": "m"}),
        (P.TOOL_EXECUTION, {"tool_name": "forecast", "parameters": {"city": "Paris"}}),
        (P.RESULT_PROCESSING, {"reasoning": "summarising"}),
        (P.COMPLETING, {"reasoning": "writing the answer"}),
        (P.COMPLETED, {"result": "sunny"}),
    ]
    for phase, metadata in steps:
        clock.advance(0.25)
        if phase is P.TOOL_EXECUTION:
            assert tracker.set_agent_state(execution_id, {"warning_count": 1, "metadata": {"model": "m"}})
        assert await tracker.transition_state(execution_id, phase, metadata, manager)
    run = {"run_id": "thread-42", "agent_name": "supervisor"}
    assert_calls(
        manager.calls,
        [
            (
                "notify_agent_started",
                (),
                {
                    **run,
                    "context": {"phase": "starting", "total_duration_ms": 750.0, "metadata": {"message": "weather?"}},
                },
            ),
            ("notify_agent_thinking", (), {**run, "reasoning": "Agent is thinking... (step 4)", "step_number": 4}),
            (
                "notify_agent_thinking",
                (),
                {**run, "reasoning": "Interacting with AI language model...", "step_number": 5},
            ),
            (
                "notify_tool_executing",
                (),
                {
                    **run,
                    "tool_name": "execution_tools",
                    "parameters": {"tool_name": "forecast", "parameters": {"city": "Paris"}},
                },
            ),
            ("notify_agent_thinking", (), {**run, "reasoning": "Processing results...", "step_number": 7}),
            ("notify_agent_thinking", (), {**run, "reasoning": "Finalizing response...", "step_number": 8}),
            (
                "notify_agent_completed",
                (),
                {
                    **run,
                    "result": {
                        "success": True,
                        "total_duration_ms": 2250.0,
                        "phase_count": 9,
                        "warnings": 1,
                        "metadata": {"message": "weather?", "model": "m"},
                    },
                    "execution_time_ms": 2250,
                },
            ),
        ],
    )


async def test_thinking_counts_every_transition_including_this_one(tracker, execution):
    manager = RecordingManager()
    assert await tracker.transition_state(execution, P.WEBSOCKET_SETUP)  # no manager: counted all the same
    for _ in range(3):
        assert await tracker.transition_state(execution, P.THINKING, None, manager)
        assert await tracker.transition_state(execution, P.LLM_INTERACTION, None, manager)
    assert [(kwargs["reasoning"], kwargs["step_number"]) for _, _, kwargs in manager.calls] == [
        ("Agent is thinking... (step 2)", 2),
        ("Interacting with AI language model...", 3),
        ("Agent is thinking... (step 4)", 4),
        ("Interacting with AI language model...", 5),
        ("Agent is thinking... (step 6)", 6),
        ("Interacting with AI language model...", 7),
    ]


async def test_without_metadata_the_transition_metadata_is_an_empty_dict(tracker, execution):
    manager = RecordingManager()
    for phase in (P.STARTING, P.TOOL_EXECUTION, P.FAILED):
        assert await tracker.transition_state(execution, phase, None, manager)
    assert_calls(
        manager.calls,
        [
            (
                "notify_agent_started",
                (),
                {**RUN, "context": {"phase": "starting", "total_duration_ms": 0.0, "metadata": {}}},
            ),
            ("notify_tool_executing", (), {**RUN, "tool_name": "execution_tools", "parameters": {}}),
            (
                "notify_agent_error",
                (),
                {
                    **RUN,
                    "error": "Agent execution failed",
                    "error_context": {"phase": "failed", "total_duration_ms": 0.0, "metadata": {}},
                },
            ),
        ],
    )


async def test_the_callers_own_metadata_object_is_passed_as_the_original_did(tracker, execution):
    """The original put the very dict it was given in ``context``, ``parameters`` and
    ``error_context``; values JSON lacks (a tuple, a datetime, an object) reach the manager as
    they were, while the transition's history keeps its JSON copy."""

    class Tool:
        pass

    tool = Tool()
    when = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
    manager = RecordingManager()
    given: dict[P, dict[str, Any]] = {}
    for phase in (P.STARTING, P.TOOL_EXECUTION, P.FAILED):
        given[phase] = {"pair": (1, 2), "when": when, "tool": tool}
        assert await tracker.transition_state(execution, phase, given[phase], manager)
    (_, _, started), (_, _, tool_call), (_, _, error) = manager.calls
    assert started["context"]["metadata"] is given[P.STARTING]
    assert tool_call["parameters"] is given[P.TOOL_EXECUTION]
    assert error["error_context"]["metadata"] is given[P.FAILED]
    assert tool_call["parameters"] == {"pair": (1, 2), "when": when, "tool": tool}
    stored = tracker.get_execution(execution).phase_history[1].metadata
    assert stored == {"pair": [1, 2], "when": when.isoformat(), "tool": str(tool)}


async def test_completed_sends_the_records_metadata_as_it_is_then(tracker, execution):
    manager = RecordingManager()
    record = tracker.get_execution(execution)
    record.metadata["added"] = [1, 2]
    assert await tracker.transition_state(execution, P.COMPLETED, {"result": "ignored"}, manager)
    [(_, _, kwargs)] = manager.calls
    assert_calls([kwargs["result"]["metadata"]], [{**RECORD_METADATA, "added": [1, 2]}])


async def test_durations_are_the_originals_fractional_milliseconds(tracker, clock, execution):
    """``d`` is ``(now - started_at).total_seconds() * 1000`` on the record's own datetimes, to
    the bit, and ``execution_time_ms`` is ``int(d)``."""
    manager = RecordingManager()
    clock.advance(1.2345678)
    assert await tracker.transition_state(execution, P.FAILED, None, manager)
    clock.advance(0.0003)
    assert await tracker.transition_state(execution, P.COMPLETED, None, manager)
    record = tracker.get_execution(execution)
    expected = [(t.timestamp - record.started_at).total_seconds() * 1000 for t in record.phase_history]
    (_, _, failed), (_, _, completed) = manager.calls
    # The clock starts at the wall time, with nanoseconds: the record's datetimes hold whole
    # microseconds, as the original's did, so d is 1234.567 or 1234.568 ms (and a float's last bits).
    assert failed["error_context"]["total_duration_ms"] == expected[0] == pytest.approx(1234.567, abs=0.0011)
    assert completed["result"]["total_duration_ms"] == expected[1] == pytest.approx(1234.8678, abs=0.0011)
    assert completed["execution_time_ms"] == int(expected[1]) == 1234
    assert type(completed["execution_time_ms"]) is int


async def test_durations_follow_the_real_clock_as_the_originals_did():
    tracker = AgentExecutionTracker()
    execution_id = tracker.create_execution("agent", "thread-1", "user-1")
    manager = RecordingManager()
    for phase in (P.STARTING, P.COMPLETED):
        assert await tracker.transition_state(execution_id, phase, None, manager)
    record = tracker.get_execution(execution_id)
    expected = [(t.timestamp - record.started_at).total_seconds() * 1000 for t in record.phase_history]
    (_, _, started), (_, _, completed) = manager.calls
    assert started["context"]["total_duration_ms"] == expected[0]
    assert completed["result"]["total_duration_ms"] == expected[1]
    assert completed["execution_time_ms"] == int(expected[1])


async def test_a_start_moved_into_the_future_gives_negative_durations_as_the_original(tracker, clock, execution):
    record = tracker.get_execution(execution)
    record.started_at = clock.now() + timedelta(seconds=2.5)
    manager = RecordingManager()
    assert await tracker.transition_state(execution, P.COMPLETED, None, manager)
    [(_, _, kwargs)] = manager.calls
    assert_calls(
        [kwargs["result"]["total_duration_ms"], kwargs["execution_time_ms"]],
        [-2500.0, -2500],
    )
