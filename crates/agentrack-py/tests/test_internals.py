"""The original's underscore members that its callers and test suites use: ``_executions``,
``_monitor_task``, ``_cleanup_old_executions()`` and the breaker bookkeeping hooks; records and
transitions built by hand; and the monitor's schedule (first pass at once, then every 2 s; death
before timeout; never-started executions included)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import agentrack
from agentrack import (
    AgentExecutionPhase,
    AgentExecutionTracker,
    CircuitBreakerOpenError,
    CircuitBreakerState,
    ExecutionRecord,
    ExecutionState,
    PhaseTransition,
    TimeoutConfig,
)

# ---------------------------------------------------------------- _executions


def test_executions_is_a_live_mapping_of_id_to_record(tracker, new_execution):
    executions = tracker._executions
    assert len(executions) == 0
    first = new_execution()
    second = new_execution()
    assert len(executions) == 2  # the same mapping object sees later executions
    assert first in executions and "exec_unknown" not in executions and 42 not in executions
    assert list(executions) == [first, second]
    assert executions[first].execution_id == first
    assert isinstance(executions[first], ExecutionRecord)
    with pytest.raises(KeyError):
        executions["exec_unknown"]
    assert executions.get("exec_unknown") is None
    assert {record.execution_id for record in executions.values()} == {first, second}


def test_records_from_executions_are_writable(tracker, running, clock):
    tracker._executions[running].last_heartbeat = clock.now() - timedelta(seconds=30)
    assert [r.execution_id for r in tracker.detect_dead_executions()] == [running]


def test_executions_counts_finished_records_until_they_are_removed(tracker, running):
    tracker.complete_execution(running)
    assert len(tracker._executions) == 1
    assert tracker.cleanup_state(running)
    assert len(tracker._executions) == 0
    assert running not in tracker._executions


# ---------------------------------------------------------------- _monitor_task


async def test_monitor_task_is_the_running_task_or_none(tracker):
    assert tracker._monitor_task is None
    await tracker.start_monitoring()
    task = tracker._monitor_task
    assert isinstance(task, asyncio.Task)
    assert not task.done()
    await tracker.start_monitoring()  # idempotent: the same task
    assert tracker._monitor_task is task
    await tracker.stop_monitoring()
    assert tracker._monitor_task is None
    assert task.done()


async def test_global_tracker_monitor_task_follows_initialize_and_shutdown(fresh_global):
    # The original's test_initialization_and_shutdown_lifecycle.
    tracker = await agentrack.initialize_tracker()
    assert tracker._monitor_task is not None
    await agentrack.shutdown_tracker()
    assert agentrack.get_execution_tracker()._monitor_task is None


# ---------------------------------------------------------------- _cleanup_old_executions


async def test_cleanup_old_executions_purges_by_cleanup_interval(clock):
    tracker = AgentExecutionTracker(cleanup_interval=30, clock=clock)
    old = tracker.create_execution("agent", "thread", "user")
    tracker.complete_execution(old)
    clock.advance(20)
    young = tracker.create_execution("agent", "thread", "user")
    tracker.fail_execution(young, "boom")
    alive = tracker.create_execution("agent", "thread", "user")
    clock.advance(10)  # old finished 30 s ago, young 10 s ago
    assert await tracker._cleanup_old_executions() is None
    assert old not in tracker._executions
    assert young in tracker._executions and alive in tracker._executions
    assert tracker.get_execution_state(alive) is ExecutionState.PENDING  # it only purges
    clock.advance(20)
    await tracker._cleanup_old_executions()
    assert young not in tracker._executions
    assert tracker.get_metrics()["total_executions"] == 3


async def test_the_originals_cleanup_test_passes_as_written_on_the_system_clock():
    # test_execution_cleanup_prevents_memory_leaks from the original's suite, unchanged: a real
    # clock, completion times back-dated past cleanup_interval by assignment.
    tracker = AgentExecutionTracker(cleanup_interval=5)
    old_executions = []
    for i in range(5):
        exec_id = tracker.create_execution(f"cleanup-agent-{i}", f"cleanup-thread-{i}", f"cleanup-user-{i}")
        old_executions.append(exec_id)
        tracker.start_execution(exec_id)
        tracker.update_execution_state(exec_id, ExecutionState.COMPLETED)
    initial_count = len(tracker._executions)
    assert initial_count == 5
    for exec_id in old_executions:
        record = tracker.get_execution(exec_id)
        if record:
            record.completed_at = datetime.now(timezone.utc) - timedelta(seconds=10)
    await tracker._cleanup_old_executions()
    assert len(tracker._executions) < initial_count
    assert tracker.get_metrics()["total_executions"] == 5


def test_a_back_dated_heartbeat_is_dead_on_the_system_clock():
    tracker = AgentExecutionTracker(heartbeat_timeout=5)
    exec_id = tracker.create_execution("agent", "thread", "user")
    tracker.start_execution(exec_id)
    tracker.heartbeat(exec_id)
    tracker.get_execution(exec_id).last_heartbeat = datetime.now(timezone.utc) - timedelta(seconds=6)
    assert [r.execution_id for r in tracker.detect_dead_executions()] == [exec_id]


# ---------------------------------------------------------------- breaker bookkeeping


async def test_breaker_failure_bookkeeping_opens_the_breaker_at_the_threshold(tracker, running):
    for n in (1, 2):
        await tracker._on_circuit_breaker_failure(running, "llm_call", ValueError("boom"))
        assert tracker.get_execution(running).circuit_breaker_failures == n
        assert tracker.circuit_breaker_status(running)["state"] == "closed"
    await tracker._on_circuit_breaker_failure(running, "llm_call", ValueError("boom"))
    record = tracker.get_execution(running)
    assert record.circuit_breaker_state is CircuitBreakerState.OPEN
    assert record.is_circuit_breaker_open()
    assert record.next_attempt_time > record.last_failure_time > 0

    async def call() -> str:
        return "never runs"

    with pytest.raises(CircuitBreakerOpenError):
        await tracker.execute_with_circuit_breaker(running, call, "llm_call")


async def test_breaker_failure_bookkeeping_while_open_counts_and_keeps_it_open(tracker, running, clock):
    for _ in range(3):
        await tracker._on_circuit_breaker_failure(running, "llm_call", "boom")
    first_reopen = tracker.get_execution(running).next_attempt_time
    clock.advance(20)
    for _ in range(2):
        await tracker._on_circuit_breaker_failure(running, "llm_call", "boom")
    record = tracker.get_execution(running)
    assert record.circuit_breaker_failures == 5
    assert record.circuit_breaker_state is CircuitBreakerState.OPEN
    assert record.next_attempt_time == pytest.approx(first_reopen + 20)
    clock.advance(15)  # past the first window, not the second
    assert tracker.circuit_breaker_status(running)["is_open"] is True
    await tracker._on_circuit_breaker_success(running, "llm_call")  # refused while open
    assert tracker.get_execution(running).circuit_breaker_state is CircuitBreakerState.OPEN
    clock.advance(16)
    await tracker._on_circuit_breaker_success(running, "llm_call")
    assert tracker.get_execution(running).circuit_breaker_state is CircuitBreakerState.HALF_OPEN


async def test_breaker_success_bookkeeping_closes_a_recovering_breaker(tracker, running, clock):
    for _ in range(3):
        await tracker._on_circuit_breaker_failure(running, "llm_call", "boom")
    clock.advance(31)  # past recovery_timeout: the next call is a trial
    await tracker._on_circuit_breaker_success(running, "llm_call")
    assert tracker.get_execution(running).circuit_breaker_state is CircuitBreakerState.HALF_OPEN
    await tracker._on_circuit_breaker_success(running, "llm_call")  # success_threshold 2
    record = tracker.get_execution(running)
    assert record.circuit_breaker_state is CircuitBreakerState.CLOSED
    assert record.circuit_breaker_failures == 0


async def test_breaker_success_bookkeeping_zeroes_failures_when_closed(tracker, running):
    await tracker._on_circuit_breaker_failure(running, "op", "boom")
    await tracker._on_circuit_breaker_failure(running, "op", "boom")
    await tracker._on_circuit_breaker_success(running, "op")
    assert tracker.circuit_breaker_status(running)["failure_count"] == 0


async def test_breaker_bookkeeping_follows_a_per_execution_timeout_config(tracker, running):
    tracker.set_timeout(running, TimeoutConfig(failure_threshold=1))
    await tracker._on_circuit_breaker_failure(running, "op", "boom")
    assert tracker.circuit_breaker_status(running)["state"] == "open"


async def test_breaker_bookkeeping_ignores_unknown_and_finished_executions(tracker, running):
    await tracker._on_circuit_breaker_failure("exec_unknown", "op", "boom")
    await tracker._on_circuit_breaker_success("exec_unknown", "op")
    tracker.complete_execution(running)
    await tracker._on_circuit_breaker_failure(running, "op", "boom")
    assert tracker.get_execution(running).circuit_breaker_failures == 0


# ---------------------------------------------------------------- records and transitions built by hand


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def hand_built(**overrides: Any) -> ExecutionRecord:
    fields: dict[str, Any] = {
        "execution_id": "exec_by_hand",
        "agent_name": "agent",
        "thread_id": "thread",
        "user_id": "user",
        "state": ExecutionState.RUNNING,
        "started_at": now_utc(),
        "last_heartbeat": now_utc(),
    }
    fields.update(overrides)
    return ExecutionRecord(**fields)


def test_a_record_built_by_hand_has_the_original_dataclass_defaults():
    record = hand_built()
    assert record.execution_id == "exec_by_hand"
    assert record.state is ExecutionState.RUNNING
    assert record.completed_at is None and record.error is None and record.result is None
    assert record.heartbeat_count == 0
    assert record.timeout_seconds == 30
    assert record.metadata == {}
    assert record.current_phase is AgentExecutionPhase.CREATED
    assert record.phase_history == []
    assert (record.warning_count, record.error_count) == (0, 0)
    assert record.timeout_config is None
    assert record.circuit_breaker_failures == 0
    assert record.circuit_breaker_state is CircuitBreakerState.CLOSED
    assert (record.last_failure_time, record.next_attempt_time) == (0.0, 0.0)
    assert record.updated_at.tzinfo is not None
    assert record.is_alive and not record.is_terminal
    assert not record.is_dead() and not record.is_timed_out()


def test_a_record_built_by_hand_takes_positional_arguments_in_field_order():
    started = now_utc()
    record = ExecutionRecord("exec_1", "agent", "thread", "user", ExecutionState.PENDING, started, started)
    assert (record.agent_name, record.started_at, record.last_heartbeat) == ("agent", started, started)


def test_a_record_built_by_hand_stores_what_it_is_given_like_a_dataclass():
    record = hand_built(metadata={"a": 1}, result=object)
    assert record.result is object  # kept as given, not converted
    record.metadata["b"] = 2  # mutable in place, as the dataclass's dict
    assert record.metadata == {"a": 1, "b": 2}
    record.state = ExecutionState.COMPLETED
    record.completed_at = record.started_at + timedelta(seconds=4)
    assert record.is_terminal
    assert record.duration == timedelta(seconds=4)
    record.last_heartbeat = now_utc() - timedelta(seconds=20)
    assert not record.is_dead()  # terminal: dead only if its state is DEAD


def test_a_record_built_by_hand_computes_its_properties_from_its_values():
    record = hand_built(started_at=now_utc() - timedelta(seconds=40), timeout_seconds=30)
    assert record.is_timed_out()
    assert record.time_until_timeout() == 0
    assert record.get_total_duration_ms() >= 40_000
    record.last_heartbeat = now_utc() - timedelta(seconds=15)
    assert record.is_dead() and not record.is_dead(heartbeat_timeout=20)
    record.circuit_breaker_state = CircuitBreakerState.OPEN
    record.next_attempt_time = now_utc().timestamp() + 60
    assert record.is_circuit_breaker_open()
    assert not record.should_retry()


def test_a_record_built_by_hand_is_attached_to_no_tracker(tracker):
    record = hand_built()
    record.state = ExecutionState.FAILED
    assert len(tracker._executions) == 0
    assert tracker.get_metrics()["total_executions"] == 0


def test_records_built_by_hand_compare_by_value():
    started = now_utc()
    assert hand_built(started_at=started, last_heartbeat=started, updated_at=started) == hand_built(
        started_at=started, last_heartbeat=started, updated_at=started
    )
    assert hand_built(execution_id="a") != hand_built(execution_id="b")
    assert "execution_id='exec_by_hand'" in repr(hand_built())
    with pytest.raises(TypeError, match="unhashable"):
        hash(hand_built())


def test_a_record_built_by_hand_rejects_bad_arguments():
    with pytest.raises(TypeError, match="missing 3 required argument"):
        ExecutionRecord(execution_id="x", agent_name="a", thread_id="t", user_id="u")
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        hand_built(colour="red")
    with pytest.raises(TypeError, match="state must be an ExecutionState, not dict"):
        hand_built(state={"state": "running"})
    with pytest.raises(TypeError, match="last_heartbeat must be a datetime, not str"):
        hand_built().last_heartbeat = "now"


def test_a_phase_history_built_by_hand_gives_phase_durations():
    started = now_utc() - timedelta(seconds=10)
    history = [
        PhaseTransition(
            from_phase=AgentExecutionPhase.CREATED,
            to_phase=AgentExecutionPhase.STARTING,
            timestamp=started + timedelta(seconds=1),
            duration_ms=1000.0,
        ),
        PhaseTransition(
            from_phase=AgentExecutionPhase.STARTING,
            to_phase=AgentExecutionPhase.THINKING,
            timestamp=started + timedelta(seconds=3),
            duration_ms=2000.0,
            metadata={"step": 1},
            websocket_event_sent=True,
        ),
    ]
    record = hand_built(started_at=started, current_phase=AgentExecutionPhase.THINKING, phase_history=history)
    assert record.phase_history is history
    assert record.get_phase_duration_ms(AgentExecutionPhase.STARTING) == 2000.0
    assert record.get_current_phase_duration_ms() >= 7000


def test_a_phase_transition_is_built_with_the_originals_keyword_arguments():
    at = now_utc()
    transition = PhaseTransition(from_phase=None, to_phase=AgentExecutionPhase.WEBSOCKET_SETUP, timestamp=at)
    assert (transition.duration_ms, transition.metadata, transition.websocket_event_sent) == (0.0, {}, False)
    transition.duration_ms = 12.5
    assert transition == PhaseTransition(None, AgentExecutionPhase.WEBSOCKET_SETUP, at, 12.5)


# ---------------------------------------------------------------- the monitor's schedule


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_monitor_first_pass_runs_at_once_and_includes_never_started_executions(tracker, new_execution, clock):
    pending = new_execution()  # never started
    clock.advance(11)
    dead: list[str] = []
    tracker.register_death_callback(lambda record: dead.append(record.execution_id))
    await tracker.start_monitoring()
    try:
        await settle()
        assert dead == [pending]
        assert tracker.get_execution_state(pending) is ExecutionState.DEAD
    finally:
        await tracker.stop_monitoring()


async def test_monitor_passes_are_two_seconds_apart(tracker, monkeypatch):
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float, *args: Any, **kwargs: Any) -> None:
        delays.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(agentrack._tracker.asyncio, "sleep", recording_sleep)
    await tracker.start_monitoring()
    for _ in range(5):
        await real_sleep(0)
    await tracker.stop_monitoring()
    assert delays and set(delays) == {2.0}


async def test_monitor_checks_death_before_timeout(tracker, new_execution, clock):
    execution_id = new_execution(timeout_seconds=5)
    clock.advance(20)  # both silent for 20 s and past its 5 s timeout
    passed = await tracker.run_monitor_pass()
    assert [r.execution_id for r in passed["dead"]] == [execution_id]
    assert passed["timed_out"] == []
    assert tracker.get_execution_state(execution_id) is ExecutionState.DEAD


async def test_monitor_checks_death_before_timeout_when_both_are_back_dated(tracker, running, clock):
    record = tracker.get_execution(running)
    record.started_at = clock.now() - timedelta(seconds=60)
    record.last_heartbeat = clock.now() - timedelta(seconds=60)
    passed = await tracker.run_monitor_pass()
    assert [r.execution_id for r in passed["dead"]] == [running]
    assert record.state is ExecutionState.DEAD


async def test_monitor_times_out_a_never_started_execution(clock):
    tracker = AgentExecutionTracker(heartbeat_timeout=100, execution_timeout=5, clock=clock)
    pending = tracker.create_execution("agent", "thread", "user")
    clock.advance(6)
    passed = await tracker.run_monitor_pass()
    assert [r.execution_id for r in passed["timed_out"]] == [pending]
    assert tracker.get_execution_state(pending) is ExecutionState.TIMEOUT
