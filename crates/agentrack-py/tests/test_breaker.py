"""Timeouts and the per-execution circuit breaker."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentrack import (
    AgentExecutionTracker,
    CircuitBreakerOpenError,
    CircuitBreakerState,
    ExecutionState,
    TimeoutConfig,
)


async def ok(value="ok"):
    return value


def returning(value):
    async def call():
        return value

    return call


async def failing():
    raise RuntimeError("provider down")


async def fail_times(tracker, execution_id, n):
    for _ in range(n):
        with pytest.raises(RuntimeError, match="provider down"):
            await tracker.execute_with_circuit_breaker(execution_id, failing, "llm")


# ---------------------------------------------------------------- timeouts


def test_set_timeout_and_check_timeout(tracker, running, clock):
    assert tracker.set_timeout(running, TimeoutConfig(agent_execution_timeout=10.0)) is True
    clock.advance(4)
    status = tracker.check_timeout(running)
    assert status == {
        "execution_id": running,
        "elapsed_seconds": pytest.approx(4.0),
        "timeout_seconds": 10.0,
        "is_timed_out": False,
        "circuit_breaker_state": "closed",
        "circuit_breaker_failures": 0,
        "time_until_timeout": pytest.approx(6.0),
    }
    clock.advance(7)
    status = tracker.check_timeout(running)
    assert status["is_timed_out"] is True
    assert status["time_until_timeout"] == 0


def test_timeout_error_paths(tracker, running):
    assert tracker.set_timeout("exec_unknown", TimeoutConfig()) is False
    assert tracker.check_timeout("exec_unknown") is None
    with pytest.raises(ValueError, match="agent_execution_timeout"):
        tracker.set_timeout(running, TimeoutConfig(agent_execution_timeout=0))
    with pytest.raises(ValueError, match="llm_api_timeout"):
        tracker.set_timeout(running, TimeoutConfig(llm_api_timeout=-1))
    tracker.update_execution_state(running, ExecutionState.COMPLETED)
    assert tracker.set_timeout(running, TimeoutConfig()) is False


def test_a_tracker_wide_timeout_config_applies_to_breakers(clock):
    tracker = AgentExecutionTracker(clock=clock, timeout_config=TimeoutConfig(failure_threshold=7))
    execution_id = tracker.create_execution("a", "t", "u")
    assert tracker.circuit_breaker_status(execution_id)["failure_threshold"] == 7


# ---------------------------------------------------------------- breaker status


def test_circuit_breaker_status_of_a_new_execution(tracker, running):
    assert tracker.register_circuit_breaker(running) is True
    status = tracker.circuit_breaker_status(running)
    assert status == {
        "execution_id": running,
        "state": "closed",
        "failure_count": 0,
        "failure_threshold": 3,
        "success_count": 0,
        "last_failure_time": 0.0,
        "next_attempt_time": 0.0,
        "is_open": False,
        "can_retry": True,
        "recovery_timeout": 30.0,
    }


def test_breaker_calls_for_unknown_executions(tracker):
    assert tracker.register_circuit_breaker("exec_unknown") is False
    assert tracker.reset_circuit_breaker("exec_unknown") is False
    assert tracker.circuit_breaker_status("exec_unknown") is None


async def test_execute_returns_the_result_and_keeps_the_breaker_closed(tracker, running):
    assert await tracker.execute_with_circuit_breaker(running, returning({"text": "hi"}), "chat") == {"text": "hi"}
    record = tracker.get_execution(running)
    assert record.circuit_breaker_state is CircuitBreakerState.CLOSED
    assert record.circuit_breaker_failures == 0


async def test_execute_for_an_unknown_execution_raises_value_error(tracker):
    with pytest.raises(ValueError, match="Unknown execution ID"):
        await tracker.execute_with_circuit_breaker("exec_unknown", ok)


async def test_execute_for_a_finished_execution_raises_value_error(tracker, running):
    tracker.update_execution_state(running, ExecutionState.COMPLETED)
    with pytest.raises(ValueError, match="finished"):
        await tracker.execute_with_circuit_breaker(running, ok)


async def test_failures_are_counted_and_re_raised(tracker, running, clock):
    await fail_times(tracker, running, 2)
    record = tracker.get_execution(running)
    assert record.circuit_breaker_failures == 2
    assert record.circuit_breaker_state is CircuitBreakerState.CLOSED
    assert record.last_failure_time == pytest.approx(clock.now().timestamp())
    # Success in CLOSED zeroes the failures.
    await tracker.execute_with_circuit_breaker(running, ok)
    assert record.circuit_breaker_failures == 0


async def test_the_breaker_opens_at_the_threshold_and_refuses_calls(tracker, running, clock):
    await fail_times(tracker, running, 3)
    record = tracker.get_execution(running)
    assert record.circuit_breaker_state is CircuitBreakerState.OPEN
    assert record.next_attempt_time == pytest.approx(clock.now().timestamp() + 30)
    assert record.is_circuit_breaker_open()
    assert not record.should_retry()
    status = tracker.circuit_breaker_status(running)
    assert status["state"] == "open" and status["is_open"] is True and status["can_retry"] is False
    called = []

    async def never():
        called.append(True)

    clock.advance(10)
    with pytest.raises(CircuitBreakerOpenError, match=r"Circuit breaker open for llm\. Next attempt allowed in 20\.0s"):
        await tracker.execute_with_circuit_breaker(running, never, "llm")
    assert called == []
    assert tracker.check_timeout(running)["circuit_breaker_state"] == "open"


async def test_after_recovery_the_breaker_half_opens_and_closes_after_successes(tracker, running, clock):
    await fail_times(tracker, running, 3)
    clock.advance(30)
    status = tracker.circuit_breaker_status(running)
    assert status["is_open"] is False and status["can_retry"] is True
    assert await tracker.execute_with_circuit_breaker(running, returning(1)) == 1
    record = tracker.get_execution(running)
    assert record.circuit_breaker_state is CircuitBreakerState.HALF_OPEN
    assert await tracker.execute_with_circuit_breaker(running, returning(2)) == 2
    assert record.circuit_breaker_state is CircuitBreakerState.CLOSED
    assert record.circuit_breaker_failures == 0
    assert record.next_attempt_time == 0.0


async def test_a_failure_while_half_open_reopens(tracker, running, clock):
    await fail_times(tracker, running, 3)
    clock.advance(31)
    await fail_times(tracker, running, 1)
    record = tracker.get_execution(running)
    assert record.circuit_breaker_state is CircuitBreakerState.OPEN
    with pytest.raises(CircuitBreakerOpenError):
        await tracker.execute_with_circuit_breaker(running, ok)


async def test_a_timeout_raises_timeout_error_and_counts_as_failure(clock):
    tracker = AgentExecutionTracker(
        clock=clock, timeout_config=TimeoutConfig(llm_api_timeout=0.02, failure_threshold=2)
    )
    execution_id = tracker.create_execution("a", "t", "u")
    cancelled = []

    async def slow():
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    started = time.monotonic()
    with pytest.raises(TimeoutError, match="Operation llm timed out"):
        await tracker.execute_with_circuit_breaker(execution_id, slow, "llm")
    assert time.monotonic() - started < 1
    assert cancelled == [True]
    record = tracker.get_execution(execution_id)
    assert record.circuit_breaker_failures == 1
    with pytest.raises(TimeoutError):
        await tracker.execute_with_circuit_breaker(execution_id, slow, "llm")
    assert record.circuit_breaker_state is CircuitBreakerState.OPEN


async def test_the_call_timeout_comes_from_the_executions_own_config(tracker, running):
    tracker.set_timeout(running, TimeoutConfig(llm_api_timeout=0.02))

    async def slow():
        await asyncio.sleep(5)

    with pytest.raises(TimeoutError):
        await tracker.execute_with_circuit_breaker(running, slow)


async def test_reset_circuit_breaker_closes_an_open_breaker(tracker, running):
    await fail_times(tracker, running, 3)
    assert tracker.reset_circuit_breaker(running) is True
    record = tracker.get_execution(running)
    assert record.circuit_breaker_state is CircuitBreakerState.CLOSED
    assert record.circuit_breaker_failures == 0
    assert await tracker.execute_with_circuit_breaker(running, ok) == "ok"


async def test_register_circuit_breaker_also_resets(tracker, running):
    await fail_times(tracker, running, 2)
    assert tracker.register_circuit_breaker(running)
    assert tracker.get_execution(running).circuit_breaker_failures == 0


async def test_a_cancelled_call_is_not_counted(tracker, running):
    started = asyncio.Event()

    async def waits():
        started.set()
        await asyncio.sleep(10)

    task = asyncio.ensure_future(tracker.execute_with_circuit_breaker(running, waits))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    record = tracker.get_execution(running)
    assert record.circuit_breaker_failures == 0
    assert await tracker.execute_with_circuit_breaker(running, ok) == "ok"


async def test_a_cancelled_half_open_trial_does_not_wedge_the_breaker(tracker, running, clock):
    await fail_times(tracker, running, 3)
    clock.advance(30)
    started = asyncio.Event()

    async def waits():
        started.set()
        await asyncio.sleep(10)

    task = asyncio.ensure_future(tracker.execute_with_circuit_breaker(running, waits))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The abandoned trial counts as a failure: open again, and recoverable again.
    assert tracker.get_execution(running).circuit_breaker_state is CircuitBreakerState.OPEN
    clock.advance(30)
    assert await tracker.execute_with_circuit_breaker(running, ok) == "ok"


async def test_an_execution_in_a_protected_call_is_not_declared_dead(clock):
    tracker = AgentExecutionTracker(clock=clock, heartbeat_timeout=10, timeout_config=TimeoutConfig(llm_api_timeout=60))
    execution_id = tracker.create_execution("a", "t", "u", timeout_seconds=1000)
    tracker.start_execution(execution_id)
    gate = asyncio.Event()
    started = asyncio.Event()

    async def long_llm_call():
        started.set()
        await gate.wait()
        return "answer"

    task = asyncio.ensure_future(tracker.execute_with_circuit_breaker(execution_id, long_llm_call))
    await started.wait()
    clock.advance(30)  # heartbeat gap > 10 s, but the call may take 60 s
    assert tracker.detect_dead_executions() == []
    result = await tracker.run_monitor_pass()
    assert result["dead"] == []
    gate.set()
    assert await task == "answer"
    assert tracker.get_execution_state(execution_id) is ExecutionState.STARTING


async def test_one_execution_s_breaker_does_not_affect_another(tracker, new_execution):
    a, b = new_execution(), new_execution()
    await fail_times(tracker, a, 3)
    with pytest.raises(CircuitBreakerOpenError):
        await tracker.execute_with_circuit_breaker(a, ok)
    assert await tracker.execute_with_circuit_breaker(b, ok) == "ok"
