"""Assigning to a record's fields, as code written against the original does: each write goes
through to the tracker, which acts on it; a value of the wrong type is a TypeError naming the
expected type. Time is simulated by writing timestamps, never by sleeping."""

from __future__ import annotations

import copy
import pickle
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from agentrack import (
    AgentExecutionPhase,
    AgentExecutionTracker,
    CircuitBreakerOpenError,
    CircuitBreakerState,
    ExecutionState,
    ManualClock,
    PhaseTransition,
    TimeoutConfig,
)


def ago(clock: ManualClock, seconds: float) -> datetime:
    return clock.now() - timedelta(seconds=seconds)


# ---------------------------------------------------------------- time simulated by timestamps


async def test_back_dated_last_heartbeat_makes_the_execution_dead(tracker, running, clock):
    record = tracker.get_execution(running)
    record.last_heartbeat = ago(clock, 15)
    assert [r.execution_id for r in tracker.detect_dead_executions()] == [running]
    assert record.is_dead()
    passed = await tracker.run_monitor_pass()
    assert [r.execution_id for r in passed["dead"]] == [running]
    assert record.state is ExecutionState.DEAD
    assert record.error.startswith("No heartbeat for 15")
    assert tracker.get_metrics()["dead_executions"] == 1


async def test_back_dated_started_at_times_out_a_two_second_execution(tracker, new_execution, clock):
    execution_id = new_execution(timeout_seconds=2)
    tracker.start_execution(execution_id)
    tracker.heartbeat(execution_id)
    record = tracker.get_execution(execution_id)
    assert not record.is_timed_out()
    record.started_at = ago(clock, 5)
    assert record.is_timed_out()
    assert tracker.check_timeout(execution_id)["is_timed_out"] is True
    passed = await tracker.run_monitor_pass()
    assert [r.execution_id for r in passed["timed_out"]] == [execution_id]
    assert record.state is ExecutionState.TIMEOUT
    assert record.error == "Execution exceeded 2 s timeout"


async def test_a_fresh_heartbeat_after_a_back_dated_one_keeps_the_execution_alive(tracker, running, clock):
    record = tracker.get_execution(running)
    record.last_heartbeat = ago(clock, 15)
    assert tracker.heartbeat(running)
    assert tracker.detect_dead_executions() == []
    assert (await tracker.run_monitor_pass())["dead"] == []
    assert record.state is ExecutionState.RUNNING


async def test_back_dated_completed_at_lets_the_cleanup_purge_the_record(clock):
    # The original's test_execution_cleanup_prevents_memory_leaks, on a manual clock.
    tracker = AgentExecutionTracker(cleanup_interval=5, clock=clock)
    old = []
    for i in range(5):
        execution_id = tracker.create_execution(f"cleanup-agent-{i}", f"thread-{i}", f"user-{i}")
        tracker.start_execution(execution_id)
        tracker.update_execution_state(execution_id, ExecutionState.COMPLETED)
        old.append(execution_id)
    recent = tracker.create_execution("recent", "thread", "user")
    tracker.update_execution_state(recent, ExecutionState.COMPLETED)
    assert len(tracker._executions) == 6
    for execution_id in old:
        tracker.get_execution(execution_id).completed_at = ago(clock, 10)
    await tracker._cleanup_old_executions()
    assert len(tracker._executions) == 1
    assert recent in tracker._executions
    assert all(execution_id not in tracker._executions for execution_id in old)
    assert tracker.get_metrics()["total_executions"] == 6
    assert tracker._check_consistency() == []


async def test_completed_at_moved_later_delays_the_purge(clock):
    tracker = AgentExecutionTracker(cleanup_interval=60, clock=clock)
    execution_id = tracker.create_execution("agent", "thread", "user")
    tracker.complete_execution(execution_id)
    tracker.get_execution(execution_id).completed_at = clock.now() + timedelta(seconds=30)
    clock.advance(61)
    await tracker._cleanup_old_executions()
    assert execution_id in tracker._executions
    clock.advance(30)
    await tracker._cleanup_old_executions()
    assert execution_id not in tracker._executions


# ---------------------------------------------------------------- states and counters forced by assignment


def test_assigned_terminal_state_finishes_the_execution(tracker, running, clock):
    record = tracker.get_execution(running)
    record.state = ExecutionState.COMPLETED
    assert tracker.get_execution_state(running) is ExecutionState.COMPLETED
    assert record.is_terminal and not record.is_alive
    assert record.completed_at == clock.now()
    assert running not in {r.execution_id for r in tracker.get_active_executions()}
    metrics = tracker.get_metrics()
    assert metrics["successful_executions"] == 1
    assert metrics["active_executions"] == 0
    # Finished: the public methods treat it as final.
    assert tracker.heartbeat(running) is False
    assert tracker._check_consistency() == []


def test_assigned_terminal_state_then_completed_at_are_both_kept(tracker, running, clock):
    record = tracker.get_execution(running)
    clock.advance(10)
    record.error = "gave up"
    record.state = ExecutionState.FAILED
    assert tracker.get_metrics()["failed_executions"] == 1
    assert record.error == "gave up"
    record.completed_at = ago(clock, 3)
    assert record.completed_at == ago(clock, 3)
    assert abs(record.duration - timedelta(seconds=7)) < timedelta(milliseconds=1)


def test_assigned_alive_state_revives_a_finished_execution(tracker, running):
    tracker.update_execution_state(running, ExecutionState.FAILED, error="boom")
    record = tracker.get_execution(running)
    record.state = ExecutionState.RUNNING
    assert record.is_alive
    assert running in {r.execution_id for r in tracker.get_active_executions()}
    assert tracker.heartbeat(running) is True
    assert tracker.complete_execution(running, result="second try")
    assert record.result == "second try"
    assert tracker._check_consistency() == []


def test_assigned_running_state_skips_the_lifecycle(tracker, new_execution):
    execution_id = new_execution()
    record = tracker.get_execution(execution_id)
    record.state = ExecutionState.RUNNING
    assert tracker.get_execution_state(execution_id) is ExecutionState.RUNNING
    assert tracker.start_execution(execution_id) is False  # no longer PENDING


async def test_assigned_current_phase_is_where_the_next_transition_starts(tracker, running):
    record = tracker.get_execution(running)
    record.current_phase = AgentExecutionPhase.THINKING
    assert tracker.get_agent_state(running)["current_phase"] == "thinking"
    assert await tracker.transition_state(running, AgentExecutionPhase.TOOL_PREPARATION)
    history = tracker.get_state_history(running)
    assert history[-1]["from_phase"] == "thinking"
    assert record.phase_history[-1].valid is True
    record.current_phase = "llm_interaction"  # the value string, as the phase methods accept
    assert record.current_phase is AgentExecutionPhase.LLM_INTERACTION


def test_assigned_heartbeat_count_is_counted_on_from(tracker, running):
    record = tracker.get_execution(running)
    record.heartbeat_count = 41
    tracker.heartbeat(running)
    assert record.heartbeat_count == 42


def test_assigned_metadata_replaces_it(tracker, new_execution):
    execution_id = new_execution(metadata={"old": 1})
    record = tracker.get_execution(execution_id)
    record.metadata = {**record.metadata, "priority": "high"}
    assert tracker.get_execution(execution_id).metadata == {"old": 1, "priority": "high"}
    assert tracker.get_agent_state(execution_id)["metadata"] == {"old": 1, "priority": "high"}


def test_metadata_changed_in_place_is_written_back(tracker, new_execution):
    execution_id = new_execution(metadata={"a": 1})
    record = tracker.get_execution(execution_id)
    record.metadata["b"] = 2  # the original's records were changed in place like this
    assert tracker.get_execution(execution_id).metadata == {"a": 1, "b": 2}
    metadata = record.metadata
    metadata.update(c=3)
    del metadata["a"]
    assert metadata.setdefault("d", 4) == 4
    assert metadata.pop("b") == 2
    metadata |= {"e": 5}
    assert tracker.get_agent_state(execution_id)["metadata"] == {"c": 3, "d": 4, "e": 5}
    assert isinstance(record.metadata, dict)
    for plain in (record.metadata.copy(), copy.copy(metadata), copy.deepcopy(metadata)):
        assert type(plain) is dict and plain == {"c": 3, "d": 4, "e": 5}
    assert pickle.loads(pickle.dumps(metadata)) == {"c": 3, "d": 4, "e": 5}
    metadata.clear()
    assert tracker.get_execution(execution_id).metadata == {}


def test_assigned_counts_result_and_error_show_in_the_agent_state(tracker, running):
    record = tracker.get_execution(running)
    record.warning_count = 2
    record.error_count = 1
    record.result = {"answer": 0}
    record.error = None
    state = tracker.get_agent_state(running)
    assert (state["warning_count"], state["error_count"]) == (2, 1)
    assert record.result == {"answer": 0}


def test_assigned_timeout_seconds_moves_the_execution_deadline(tracker, new_execution, clock):
    execution_id = new_execution(timeout_seconds=100)
    record = tracker.get_execution(execution_id)
    clock.advance(4)
    tracker.heartbeat(execution_id)
    record.timeout_seconds = 3
    assert tracker.check_timeout(execution_id)["timeout_seconds"] == 3
    assert [r.execution_id for r in tracker.detect_dead_executions()] == [execution_id]
    assert record.time_until_timeout() == 0


def test_assigned_owner_fields_reindex_the_execution(tracker, new_execution):
    execution_id = new_execution(agent="old-agent", thread="old-thread", user="old-user")
    record = tracker.get_execution(execution_id)
    record.agent_name = "new-agent"
    record.thread_id = "new-thread"
    record.user_id = "new-user"
    assert tracker.get_executions_by_agent("old-agent") == []
    assert [r.execution_id for r in tracker.get_executions_by_agent("new-agent")] == [execution_id]
    assert [r.execution_id for r in tracker.get_executions_by_thread("new-thread")] == [execution_id]
    assert [r.execution_id for r in tracker.get_executions_by_user("new-user")] == [execution_id]
    assert tracker._check_consistency() == []


def test_assigned_updated_at_and_phase_history_are_kept(tracker, running, clock):
    record = tracker.get_execution(running)
    record.updated_at = ago(clock, 1)
    assert record.updated_at == ago(clock, 1)
    transition = PhaseTransition(
        from_phase=AgentExecutionPhase.CREATED,
        to_phase=AgentExecutionPhase.STARTING,
        timestamp=ago(clock, 1),
        duration_ms=250.0,
        metadata={"by": "hand"},
    )
    record.phase_history = [transition]
    assert record.phase_history == [transition]
    assert record.get_phase_duration_ms(AgentExecutionPhase.CREATED) == 250.0
    assert tracker.get_state_history(running)[0]["metadata"] == {"by": "hand"}


# ---------------------------------------------------------------- the breaker forced by assignment


async def ok() -> str:
    return "success"


async def fail() -> None:
    raise ValueError("simulated failure")


async def test_forced_open_breaker_refuses_calls_until_next_attempt_time(tracker, running, clock):
    record = tracker.get_execution(running)
    record.circuit_breaker_state = CircuitBreakerState.OPEN
    record.next_attempt_time = clock.now().timestamp() + 30
    assert record.is_circuit_breaker_open()
    assert tracker.circuit_breaker_status(running)["state"] == "open"
    with pytest.raises(CircuitBreakerOpenError):
        await tracker.execute_with_circuit_breaker(running, ok, "blocked")
    clock.advance(31)
    assert await tracker.execute_with_circuit_breaker(running, ok, "trial") == "success"
    assert record.circuit_breaker_state is CircuitBreakerState.HALF_OPEN


async def test_the_originals_recovery_test_closes_a_forced_half_open_breaker(running, tracker):
    # The original's test_circuit_breaker_recovery_after_success, as written (wall-clock times).
    config = TimeoutConfig()
    tracker.register_circuit_breaker(running)
    record = tracker.get_execution(running)
    record.circuit_breaker_state = CircuitBreakerState.OPEN
    record.circuit_breaker_failures = config.failure_threshold
    record.next_attempt_time = time.time() - 1
    record.circuit_breaker_state = CircuitBreakerState.HALF_OPEN
    assert await tracker.execute_with_circuit_breaker(running, ok, "recovery_test") == "success"
    for _ in range(config.success_threshold):
        await tracker.execute_with_circuit_breaker(running, ok, "close_circuit")
    status = tracker.circuit_breaker_status(running)
    assert status["can_retry"] is True
    assert status["state"] == "closed"
    assert record.circuit_breaker_failures == 0


async def test_assigned_failure_count_is_counted_on_from(tracker, running):
    record = tracker.get_execution(running)
    record.circuit_breaker_failures = 2  # threshold 3
    with pytest.raises(ValueError, match="simulated"):
        await tracker.execute_with_circuit_breaker(running, fail, "third")
    assert record.circuit_breaker_state is CircuitBreakerState.OPEN
    assert record.circuit_breaker_failures == 3
    assert record.last_failure_time > 0


async def test_assigned_closed_state_reopens_the_way(tracker, running):
    record = tracker.get_execution(running)
    for _ in range(3):
        with pytest.raises(ValueError):
            await tracker.execute_with_circuit_breaker(running, fail, "op")
    assert record.circuit_breaker_state is CircuitBreakerState.OPEN
    record.circuit_breaker_state = CircuitBreakerState.CLOSED
    record.circuit_breaker_failures = 0
    assert await tracker.execute_with_circuit_breaker(running, ok, "op") == "success"


async def test_assigned_timeout_config_sets_the_breaker_thresholds_not_the_timeout(tracker, running):
    record = tracker.get_execution(running)
    record.timeout_config = TimeoutConfig(failure_threshold=1, agent_execution_timeout=99.0)
    assert record.timeout_config.failure_threshold == 1
    assert record.timeout_seconds == 15  # the execution timeout is left as it was
    with pytest.raises(ValueError):
        await tracker.execute_with_circuit_breaker(running, fail, "once")
    assert record.circuit_breaker_state is CircuitBreakerState.OPEN
    record.timeout_config = None
    assert record.timeout_config is None


def test_breaker_times_accept_posix_seconds_datetimes_and_none(tracker, running, clock):
    record = tracker.get_execution(running)
    record.last_failure_time = 1_700_000_000.5
    assert record.last_failure_time == 1_700_000_000.5
    record.last_failure_time = datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert record.last_failure_time == datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()
    record.last_failure_time = None
    assert record.last_failure_time == 0.0


# ---------------------------------------------------------------- wrong types and values


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("last_heartbeat", {}, "last_heartbeat must be a datetime, not dict"),
        ("started_at", "2024-01-01", "started_at must be a datetime, not str"),
        ("completed_at", 5, "completed_at must be a datetime or None, not int"),
        ("updated_at", None, "updated_at must be a datetime, not NoneType"),
        ("state", "completed", "state must be an ExecutionState, not str"),
        ("state", AgentExecutionPhase.COMPLETED, "state must be an ExecutionState, not AgentExecutionPhase"),
        ("current_phase", 3, "current_phase must be an AgentExecutionPhase, not int"),
        ("heartbeat_count", "3", "heartbeat_count must be an int, not str"),
        ("heartbeat_count", True, "heartbeat_count must be an int, not bool"),
        ("timeout_seconds", "30", "timeout_seconds must be a number of seconds"),
        ("metadata", [("a", 1)], "metadata must be a dict, not list"),
        ("error", 5, "error must be a str or None, not int"),
        ("agent_name", None, "agent_name must be a str, not NoneType"),
        ("circuit_breaker_state", "open", "circuit_breaker_state must be a CircuitBreakerState, not str"),
        ("circuit_breaker_failures", 1.5, "circuit_breaker_failures must be an int, not float"),
        ("next_attempt_time", "soon", "next_attempt_time must be POSIX seconds"),
        ("phase_history", [{"to_phase": "thinking"}], "phase_history must be a list of PhaseTransition"),
        ("timeout_config", {"llm_api_timeout": 1}, "timeout_config must be a TimeoutConfig or None, not dict"),
        ("execution_id", 7, "execution_id must be a str, not int"),
    ],
)
def test_a_wrong_type_is_a_type_error_naming_the_expected_type(tracker, running, field, value, message):
    record = tracker.get_execution(running)
    before = tracker.get_agent_state(running)
    with pytest.raises(TypeError, match=message):
        setattr(record, field, value)
    assert tracker.get_agent_state(running) == before


def test_a_dict_assigned_as_state_is_a_clear_type_error_and_changes_nothing(tracker, running):
    record = tracker.get_execution(running)
    with pytest.raises(TypeError, match="a dict is not a state") as raised:
        record.state = {"state": "completed"}
    assert "ExecutionState.COMPLETED" in str(raised.value)
    assert record.state is ExecutionState.RUNNING


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("timeout_seconds", 0, "greater than|> 0"),
        ("timeout_seconds", -1, "> 0"),
        ("heartbeat_count", -1, "between 0"),
        ("warning_count", 2**40, "between 0"),
    ],
)
def test_a_value_out_of_range_is_a_value_error(tracker, running, field, value, message):
    with pytest.raises(ValueError, match=message):
        setattr(tracker.get_execution(running), field, value)


def test_the_id_of_a_tracked_record_cannot_change(tracker, running):
    record = tracker.get_execution(running)
    record.execution_id = running  # the same id: nothing to do
    with pytest.raises(ValueError, match="cannot be changed"):
        record.execution_id = "exec_other"
    assert record.execution_id == running


@pytest.mark.parametrize("name", ["is_alive", "is_terminal", "duration", "tenant", "time_since_heartbeat"])
def test_computed_attributes_are_read_only(tracker, running, name):
    with pytest.raises(AttributeError, match="read-only"):
        setattr(tracker.get_execution(running), name, 1)


def test_unknown_attributes_and_deletion_are_attribute_errors(tracker, running):
    record: Any = tracker.get_execution(running)
    with pytest.raises(AttributeError, match="no attribute 'colour'"):
        record.colour = "red"
    with pytest.raises(AttributeError, match="cannot delete"):
        del record.state


def test_naive_datetimes_are_taken_as_utc_and_aware_ones_converted(tracker, running, clock):
    record = tracker.get_execution(running)
    naive = ago(clock, 15).replace(tzinfo=None)
    record.last_heartbeat = naive
    assert record.last_heartbeat == naive.replace(tzinfo=timezone.utc)
    plus_two = timezone(timedelta(hours=2))
    aware = ago(clock, 3).astimezone(plus_two)
    record.last_heartbeat = aware
    assert record.last_heartbeat == aware
    assert record.last_heartbeat.tzinfo == timezone.utc
    assert tracker.detect_dead_executions() == []
