"""The seed's time-driven scenarios in remote mode, on the server's clock.

In local mode these scenarios step a ``ManualClock`` (``tests/test_scenarios.py``); a server keeps
its own wall clock, so here each one gives its executions sub-second timeouts and waits (polling,
with a generous bound and no timing threshold) for the server's monitor, which the session's
server runs every 50 ms, to act."""

from __future__ import annotations

import asyncio
import time
from unittest.mock import AsyncMock

import pytest
from agentrack_server import eventually

from agentrack import (
    AgentExecutionPhase,
    AgentExecutionTracker,
    CircuitBreakerOpenError,
    CircuitBreakerState,
    ExecutionState,
    TimeoutConfig,
)

pytestmark = pytest.mark.remote_only

BOUND = 20.0


async def test_circuit_breaker_failure_and_recovery_cycle():
    tracker = AgentExecutionTracker(timeout_config=TimeoutConfig(recovery_timeout=0.2))
    running = tracker.create_execution("agent", "thread", "user")
    tracker.start_execution(running)

    async def fail():
        raise RuntimeError("llm down")

    async def succeed():
        return "fine"

    for _ in range(3):
        with pytest.raises(RuntimeError):
            await tracker.execute_with_circuit_breaker(running, fail)
    with pytest.raises(CircuitBreakerOpenError):
        await tracker.execute_with_circuit_breaker(running, succeed)
    deadline = time.monotonic() + BOUND
    while True:
        try:
            assert await tracker.execute_with_circuit_breaker(running, succeed) == "fine"
            break
        except CircuitBreakerOpenError:
            assert time.monotonic() < deadline, "the breaker never let a trial through"
            await asyncio.sleep(0.02)
    assert tracker.get_execution(running).circuit_breaker_state is CircuitBreakerState.HALF_OPEN
    assert await tracker.execute_with_circuit_breaker(running, succeed) == "fine"
    record = tracker.get_execution(running)
    assert record.circuit_breaker_state is CircuitBreakerState.CLOSED
    assert record.circuit_breaker_failures == 0


def test_timeout_configuration_and_validation():
    tracker = AgentExecutionTracker()
    running = tracker.create_execution("agent", "thread", "user")
    tracker.start_execution(running)
    config = TimeoutConfig(agent_execution_timeout=0.3, llm_api_timeout=5.0, failure_threshold=2)
    assert tracker.set_timeout(running, config)
    record = tracker.get_execution(running)
    assert record.timeout_config == config
    assert record.timeout_seconds == 0.3
    status = eventually(
        lambda: (s := tracker.check_timeout(running)) and s["is_timed_out"] and s, "a timeout", BOUND, 0.02
    )
    assert status["timeout_seconds"] == 0.3
    # The server's monitor then times it out.
    eventually(
        lambda: tracker.get_execution_state(running) is ExecutionState.TIMEOUT, "the server's timeout", BOUND, 0.02
    )
    assert not tracker.set_timeout(running, config), "a finished execution keeps its settings"


async def test_heartbeat_monitoring_and_death_detection():
    tracker = AgentExecutionTracker(heartbeat_timeout=0.3, execution_timeout=600)
    death = AsyncMock()
    tracker.register_death_callback(death)
    running = tracker.create_execution("agent", "thread", "user")
    tracker.start_execution(running)
    for _ in range(5):
        assert tracker.heartbeat(running)
    tracker.flush()
    assert tracker.get_execution(running).heartbeat_count == 5
    await tracker.start_monitoring()
    try:
        deadline = time.monotonic() + BOUND
        while not death.await_count:
            assert time.monotonic() < deadline, "no death callback"
            await asyncio.sleep(0.02)
    finally:
        await tracker.stop_monitoring()
    death.assert_awaited_once()
    assert tracker.get_execution_state(running) is ExecutionState.DEAD
    assert tracker.get_execution(running).error.startswith("No heartbeat for")


async def test_execution_timeout_detection_and_handling():
    tracker = AgentExecutionTracker(heartbeat_timeout=600)
    on_timeout = AsyncMock()
    tracker.register_timeout_callback(on_timeout)
    execution_id = tracker.create_execution("agent", "thread", "user", timeout_seconds=0.3)
    tracker.start_execution(execution_id)
    timed_out = []
    deadline = time.monotonic() + BOUND
    while not timed_out:
        assert time.monotonic() < deadline, "no timeout heard"
        tracker.heartbeat(execution_id)
        result = await tracker.run_monitor_pass()
        timed_out = [r.execution_id for r in result["timed_out"]]
        await asyncio.sleep(0.02)
    assert timed_out == [execution_id]
    record = tracker.get_execution(execution_id)
    assert record.state is ExecutionState.TIMEOUT
    assert record.error.startswith("Execution exceeded")
    on_timeout.assert_awaited_once()
    assert tracker.get_metrics()["timeout_executions"] == 1


async def test_circuit_breaker_open_error_handling():
    tracker = AgentExecutionTracker(timeout_config=TimeoutConfig(recovery_timeout=30))
    running = tracker.create_execution("agent", "thread", "user")
    tracker.start_execution(running)

    async def fail():
        raise RuntimeError("down")

    for _ in range(3):
        with pytest.raises(RuntimeError):
            await tracker.execute_with_circuit_breaker(running, fail, "completion")
    llm = AsyncMock()
    with pytest.raises(CircuitBreakerOpenError) as error:
        await tracker.execute_with_circuit_breaker(running, llm, "completion")
    assert "completion" in str(error.value) and "Next attempt allowed in" in str(error.value)
    llm.assert_not_awaited()
    # The agent can report it as a phase.
    assert await tracker.transition_state(
        running, AgentExecutionPhase.CIRCUIT_BREAKER_OPEN, {"error": str(error.value)}
    )


async def test_state_history_tracking_and_retrieval():
    tracker = AgentExecutionTracker()
    running = tracker.create_execution("agent", "thread", "user")
    tracker.start_execution(running)
    for phase in (
        AgentExecutionPhase.WEBSOCKET_SETUP,
        AgentExecutionPhase.CONTEXT_VALIDATION,
        AgentExecutionPhase.STARTING,
    ):
        await asyncio.sleep(0.01)
        await tracker.transition_state(running, phase, {"phase": phase.value})
    history = tracker.get_state_history(running)
    assert [h["to_phase"] for h in history] == ["websocket_setup", "context_validation", "starting"]
    assert [h["metadata"]["phase"] for h in history] == ["websocket_setup", "context_validation", "starting"]
    # Each phase lasted at least the pause before the next (on the server's clock).
    assert all(h["duration_ms"] >= 10 for h in history[1:])
    assert tracker.get_agent_state(running)["phase_count"] == 3
