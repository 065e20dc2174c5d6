"""Lifecycle operations, queries and the execution record, with their error paths."""

from __future__ import annotations

from datetime import timedelta, timezone

import pytest

from agentrack import AgentExecutionPhase, AgentExecutionTracker, ExecutionState, TimeoutConfig

ALIVE = [ExecutionState.PENDING, ExecutionState.STARTING, ExecutionState.RUNNING, ExecutionState.COMPLETING]
TERMINAL = [
    ExecutionState.COMPLETED,
    ExecutionState.FAILED,
    ExecutionState.TIMEOUT,
    ExecutionState.DEAD,
    ExecutionState.CANCELLED,
]


# ---------------------------------------------------------------- create


def test_create_execution_returns_a_prefixed_unique_id(tracker):
    ids = {tracker.create_execution("agent", "thread", "user") for _ in range(2000)}
    assert len(ids) == 2000
    for execution_id in ids:
        assert isinstance(execution_id, str)
        assert execution_id.startswith("exec_")
        assert len(execution_id) > 10


def test_create_execution_makes_a_pending_record(tracker, clock):
    execution_id = tracker.create_execution("agent", "thread-1", "user-1", metadata={"k": "v"})
    record = tracker.get_execution(execution_id)
    assert record.execution_id == execution_id
    assert (record.agent_name, record.thread_id, record.user_id) == ("agent", "thread-1", "user-1")
    assert record.state is ExecutionState.PENDING
    assert record.current_phase is AgentExecutionPhase.CREATED
    assert record.phase_history == []
    assert record.started_at == record.last_heartbeat == record.updated_at == clock.now()
    assert record.started_at.tzinfo is not None and record.started_at.utcoffset() == timedelta(0)
    assert record.completed_at is None
    assert record.error is None and record.result is None
    assert record.heartbeat_count == 0
    assert record.metadata == {"k": "v"}
    assert record.timeout_seconds == 15
    assert (record.warning_count, record.error_count) == (0, 0)
    assert record.timeout_config is None
    assert record.circuit_breaker_failures == 0
    assert record.last_failure_time == 0.0 and record.next_attempt_time == 0.0


def test_create_execution_uses_the_given_timeout_or_the_default(tracker):
    assert tracker.get_execution(tracker.create_execution("a", "t", "u", timeout_seconds=42)).timeout_seconds == 42
    assert tracker.get_execution(tracker.create_execution("a", "t", "u", timeout_seconds=2.5)).timeout_seconds == 2.5
    # As in the original, 0 / None mean the tracker's default.
    assert tracker.get_execution(tracker.create_execution("a", "t", "u", timeout_seconds=0)).timeout_seconds == 15
    assert tracker.get_execution(tracker.create_execution("a", "t", "u")).timeout_seconds == 15


def test_create_execution_indexes_by_agent_and_thread_and_counts(tracker):
    a = tracker.create_execution("agent-a", "thread-1", "user-1")
    b = tracker.create_execution("agent-a", "thread-2", "user-1")
    c = tracker.create_execution("agent-b", "thread-1", "user-2")
    assert [r.execution_id for r in tracker.get_executions_by_agent("agent-a")] == [a, b]
    assert [r.execution_id for r in tracker.get_executions_by_thread("thread-1")] == [a, c]
    assert [r.execution_id for r in tracker.get_executions_by_user("user-1")] == [a, b]
    assert tracker.get_executions_by_agent("nobody") == []
    assert tracker.get_executions_by_thread("nowhere") == []
    assert tracker.get_metrics()["total_executions"] == 3
    assert tracker.get_metrics()["active_executions"] == 3


def test_create_execution_rejects_bad_arguments(tracker):
    with pytest.raises(ValueError, match="timeout_seconds"):
        tracker.create_execution("a", "t", "u", timeout_seconds=-1)
    with pytest.raises(TypeError, match="metadata must be a dict"):
        tracker.create_execution("a", "t", "u", metadata=[1, 2])
    with pytest.raises(ValueError, match="agent_name"):
        tracker.create_execution("", "t", "u")


def test_non_string_ids_of_thread_and_user_are_stored_as_text(tracker):
    record = tracker.get_execution(tracker.create_execution("a", 42, 7))
    assert (record.thread_id, record.user_id) == ("42", "7")


def test_create_execution_id_creates_no_record(tracker):
    execution_id = tracker.create_execution_id("agent")
    assert execution_id.startswith("exec_") and len(execution_id) > 10
    assert tracker.get_execution(execution_id) is None
    assert tracker.create_execution_id("agent", {"k": 1}) != execution_id
    assert tracker.get_metrics()["total_executions"] == 0


def test_get_default_timeout_is_the_execution_timeout():
    assert AgentExecutionTracker(execution_timeout=7).get_default_timeout() == 7
    assert AgentExecutionTracker(execution_timeout=7.5).get_default_timeout() == 7.5


# ---------------------------------------------------------------- start and heartbeat


def test_start_execution_moves_pending_to_starting(tracker, new_execution, clock):
    execution_id = new_execution()
    clock.advance(1)
    assert tracker.start_execution(execution_id) is True
    record = tracker.get_execution(execution_id)
    assert record.state is ExecutionState.STARTING
    assert record.updated_at == record.last_heartbeat == clock.now()


def test_start_execution_is_false_from_any_other_state(tracker, new_execution):
    execution_id = new_execution()
    assert tracker.start_execution(execution_id)
    assert tracker.start_execution(execution_id) is False
    assert tracker.start_execution("exec_unknown") is False
    assert tracker.start_execution("exec_" + "0" * 32) is False
    assert tracker.start_execution(None) is False


def test_heartbeat_counts_and_moves_starting_to_running(tracker, new_execution, clock):
    execution_id = new_execution()
    assert tracker.heartbeat(execution_id) is True
    assert tracker.get_execution_state(execution_id) is ExecutionState.PENDING
    tracker.start_execution(execution_id)
    clock.advance(2)
    assert tracker.heartbeat(execution_id) is True
    record = tracker.get_execution(execution_id)
    assert record.state is ExecutionState.RUNNING
    assert record.heartbeat_count == 2
    assert record.last_heartbeat == clock.now()


def test_heartbeat_is_false_for_unknown_or_terminal(tracker, running):
    assert tracker.heartbeat("exec_missing") is False
    tracker.update_execution_state(running, ExecutionState.COMPLETED)
    assert tracker.heartbeat(running) is False
    assert tracker.get_execution(running).heartbeat_count == 1


# ---------------------------------------------------------------- update_execution_state


def test_update_execution_state_rejects_a_dict_with_value_error_naming_valid_values(tracker, running):
    with pytest.raises(ValueError) as error:
        tracker.update_execution_state(running, {"state": "completed"})
    message = str(error.value)
    assert "dict" in message.lower()
    for state in ExecutionState:
        assert state.value in message
    assert tracker.get_execution_state(running) is ExecutionState.RUNNING


@pytest.mark.parametrize("bad", ["completed", 3, None, AgentExecutionPhase.COMPLETED, ["completed"]])
def test_update_execution_state_rejects_other_types_with_type_error_naming_valid_values(tracker, running, bad):
    with pytest.raises(TypeError) as error:
        tracker.update_execution_state(running, bad)
    message = str(error.value)
    assert "ExecutionState" in message
    for state in ExecutionState:
        assert state.value in message
    assert tracker.get_execution_state(running) is ExecutionState.RUNNING


def test_update_execution_state_validates_the_state_even_for_unknown_ids(tracker):
    with pytest.raises(ValueError):
        tracker.update_execution_state("exec_unknown", {"state": "x"})
    with pytest.raises(TypeError):
        tracker.update_execution_state("exec_unknown", "running")


def test_update_execution_state_unknown_id_is_false_and_creates_nothing(tracker):
    assert tracker.update_execution_state("exec_phantom", ExecutionState.RUNNING) is False
    assert tracker.update_execution_state("exec_" + "f" * 32, ExecutionState.COMPLETED) is False
    assert tracker.get_execution("exec_phantom") is None
    assert tracker.get_metrics()["total_executions"] == 0
    assert tracker.get_active_executions() == []


@pytest.mark.parametrize("state", TERMINAL)
def test_update_to_a_terminal_state_finishes_and_counts(tracker, running, clock, state):
    clock.advance(3)
    assert tracker.update_execution_state(
        running, state, error="boom" if state is not ExecutionState.COMPLETED else None
    )
    record = tracker.get_execution(running)
    assert record.state is state
    assert record.completed_at == record.updated_at == record.last_heartbeat == clock.now()
    assert record.is_terminal and not record.is_alive
    assert tracker.get_active_executions() == []
    metrics = tracker.get_metrics()
    counter = {
        ExecutionState.COMPLETED: "successful_executions",
        ExecutionState.FAILED: "failed_executions",
        ExecutionState.TIMEOUT: "timeout_executions",
        ExecutionState.DEAD: "dead_executions",
        ExecutionState.CANCELLED: "cancelled_executions",
    }[state]
    assert metrics[counter] == 1
    assert metrics["active_executions"] == 0


@pytest.mark.parametrize("start", ALIVE)
@pytest.mark.parametrize("target", list(ExecutionState))
def test_any_state_may_be_set_from_any_alive_state(tracker, new_execution, start, target):
    execution_id = new_execution()
    if start is not ExecutionState.PENDING:
        assert tracker.update_execution_state(execution_id, start)
    assert tracker.update_execution_state(execution_id, target) is True
    assert tracker.get_execution_state(execution_id) is target


@pytest.mark.parametrize("state", TERMINAL)
def test_a_terminal_record_cannot_be_updated(tracker, running, state):
    tracker.update_execution_state(running, state, error="first")
    for target in ExecutionState:
        assert tracker.update_execution_state(running, target, error="second") is False
    record = tracker.get_execution(running)
    assert record.state is state
    assert record.error == "first"


def test_update_stores_error_and_result(tracker, running):
    tracker.update_execution_state(running, ExecutionState.COMPLETING, result={"partial": True})
    tracker.update_execution_state(running, ExecutionState.FAILED, error="it broke")
    record = tracker.get_execution(running)
    assert record.result == {"partial": True}
    assert record.error == "it broke"


@pytest.mark.parametrize("falsy", [0, "", {}, [], False, 0.0])
def test_a_falsy_result_is_kept(tracker, running, falsy):
    tracker.update_execution_state(running, ExecutionState.COMPLETED, result=falsy)
    assert tracker.get_execution(running).result == falsy


def test_results_of_any_type_are_stored_as_json_like_values(tracker, new_execution):
    class Custom:
        def __str__(self) -> str:
            return "custom!"

    results = {
        "nested": {"a": [1, 2.5, None, True, "x", (3, 4)], "b": {"c": ExecutionState.RUNNING}},
        "big": 2**70,
        "custom": Custom(),
    }
    execution_id = new_execution()
    tracker.update_execution_state(execution_id, ExecutionState.COMPLETED, result=results)
    assert tracker.get_execution(execution_id).result == {
        "nested": {"a": [1, 2.5, None, True, "x", [3, 4]], "b": {"c": "running"}},
        "big": str(2**70),
        "custom": "custom!",
    }


# ---------------------------------------------------------------- complete / fail


def test_complete_execution_stores_result_and_time(tracker, running):
    assert tracker.complete_execution(running, result={"answer": 42}, execution_time_ms=1234) is True
    record = tracker.get_execution(running)
    assert record.state is ExecutionState.COMPLETED
    assert record.result == {"answer": 42}
    assert record.metadata["execution_time_ms"] == 1234
    assert tracker.get_metrics()["successful_executions"] == 1


def test_complete_execution_without_arguments(tracker, running):
    assert tracker.complete_execution(running)
    record = tracker.get_execution(running)
    assert record.result is None and "execution_time_ms" not in record.metadata


def test_complete_and_fail_are_false_for_unknown_or_terminal(tracker, running):
    assert tracker.complete_execution("exec_unknown") is False
    assert tracker.fail_execution("exec_unknown", "e") is False
    assert tracker.complete_execution(running, result=1)
    assert tracker.complete_execution(running, result=2, execution_time_ms=5) is False
    assert tracker.fail_execution(running, "late", {"k": 1}) is False
    record = tracker.get_execution(running)
    assert record.result == 1 and record.state is ExecutionState.COMPLETED
    assert "execution_time_ms" not in record.metadata and "error_context" not in record.metadata


def test_fail_execution_stores_error_and_context(tracker, running):
    assert tracker.fail_execution(running, "llm exploded", error_context={"step": 3}) is True
    record = tracker.get_execution(running)
    assert record.state is ExecutionState.FAILED
    assert record.error == "llm exploded"
    assert record.metadata["error_context"] == {"step": 3}
    assert tracker.get_metrics()["failed_executions"] == 1


def test_fail_execution_accepts_an_exception_as_error(tracker, running):
    assert tracker.fail_execution(running, RuntimeError("kaput"))
    assert tracker.get_execution(running).error == "kaput"


def test_cancel_execution(tracker, running):
    assert tracker.cancel_execution(running, "user left") is True
    assert tracker.get_execution_state(running) is ExecutionState.CANCELLED
    assert tracker.cancel_execution(running) is False


# ---------------------------------------------------------------- queries


def test_get_execution_state_and_get_execution_for_unknown_ids(tracker):
    assert tracker.get_execution_state("exec_unknown") is None
    assert tracker.get_execution("exec_unknown") is None
    assert tracker.get_execution(None) is None
    assert tracker.get_execution(123) is None


def test_get_active_executions_lists_only_alive_ones_oldest_first(tracker):
    ids = [tracker.create_execution("a", "t", "u") for _ in range(4)]
    tracker.update_execution_state(ids[1], ExecutionState.COMPLETED)
    tracker.update_execution_state(ids[2], ExecutionState.RUNNING)
    assert [r.execution_id for r in tracker.get_active_executions()] == [ids[0], ids[2], ids[3]]
    assert tracker._active_executions == {ids[0], ids[2], ids[3]}


def test_queries_include_finished_executions_until_cleanup(tracker):
    execution_id = tracker.create_execution("agent", "thread", "user")
    tracker.update_execution_state(execution_id, ExecutionState.COMPLETED)
    assert [r.execution_id for r in tracker.get_executions_by_agent("agent")] == [execution_id]
    assert tracker.cleanup_state(execution_id)
    assert tracker.get_executions_by_agent("agent") == []
    assert tracker.get_executions_by_thread("thread") == []


def test_private_mappings_of_the_original_are_readable(tracker):
    execution_id = tracker.create_execution("a", "t", "u")
    assert execution_id in tracker._executions
    assert tracker._executions[execution_id].execution_id == execution_id
    assert list(tracker._executions) == [execution_id]
    assert len(tracker._executions) == 1
    assert "exec_unknown" not in tracker._executions
    with pytest.raises(KeyError):
        tracker._executions["exec_unknown"]


# ---------------------------------------------------------------- cleanup


def test_cleanup_state_moves_a_terminal_record_to_history(tracker, running):
    assert tracker.cleanup_state(running) is False  # still alive
    tracker.update_execution_state(running, ExecutionState.COMPLETED)
    assert tracker.cleanup_state(running) is True
    assert tracker.get_execution(running) is None
    assert tracker.get_execution_state(running) is None
    assert [r.execution_id for r in tracker._completed_executions] == [running]
    assert tracker.cleanup_state(running) is False  # gone
    assert tracker.cleanup_state("exec_unknown") is False
    # Counters survive cleanup.
    assert tracker.get_metrics()["successful_executions"] == 1


def test_completed_history_is_capped_at_100(tracker):
    ids = []
    for _ in range(105):
        execution_id = tracker.create_execution("a", "t", "u")
        tracker.update_execution_state(execution_id, ExecutionState.COMPLETED)
        assert tracker.cleanup_state(execution_id)
        ids.append(execution_id)
    history = tracker._completed_executions
    assert len(history) == 100
    assert [r.execution_id for r in history] == ids[5:]


def test_a_cleaned_up_record_view_keeps_its_last_values(tracker, running):
    record = tracker.get_execution(running)
    tracker.update_execution_state(running, ExecutionState.FAILED, error="bad")
    tracker.cleanup_state(running)
    assert record.state is ExecutionState.FAILED
    assert record.error == "bad"
    assert record.is_terminal


# ---------------------------------------------------------------- the record


def test_record_is_a_live_view(tracker, new_execution, clock):
    execution_id = new_execution()
    record = tracker.get_execution(execution_id)
    tracker.start_execution(execution_id)
    clock.advance(1)
    tracker.heartbeat(execution_id)
    assert record.state is ExecutionState.RUNNING
    assert record.heartbeat_count == 1
    assert record.last_heartbeat == clock.now()
    tracker.set_agent_state(execution_id, {"metadata": {"added": True}})
    assert record.metadata == {"added": True}
    tracker.update_execution_state(execution_id, ExecutionState.COMPLETED, result="done")
    assert record.result == "done"
    assert record.completed_at == clock.now()


def test_record_equality_is_by_execution_id(tracker, running):
    a = tracker.get_execution(running)
    b = tracker.get_execution(running)
    assert a == b and hash(a) == hash(b)
    assert a in tracker.get_active_executions()
    other = tracker.get_execution(tracker.create_execution("a", "t", "u"))
    assert a != other
    assert a != running


def test_record_repr_names_the_execution(tracker, running):
    text = repr(tracker.get_execution(running))
    assert running in text and "RUNNING" in text


def test_is_alive_and_is_terminal(tracker, new_execution):
    for state in ALIVE:
        execution_id = new_execution()
        tracker.update_execution_state(execution_id, state)
        record = tracker.get_execution(execution_id)
        assert record.is_alive and not record.is_terminal
    for state in TERMINAL:
        execution_id = new_execution()
        tracker.update_execution_state(execution_id, state)
        record = tracker.get_execution(execution_id)
        assert record.is_terminal and not record.is_alive


def test_duration_runs_while_alive_and_freezes_at_completion(tracker, running, clock):
    record = tracker.get_execution(running)
    clock.advance(5)
    assert record.duration == timedelta(seconds=5)
    tracker.update_execution_state(running, ExecutionState.COMPLETED)
    clock.advance(10)
    assert record.duration == timedelta(seconds=5)


def test_is_dead_uses_the_heartbeat_gap(tracker, running, clock):
    record = tracker.get_execution(running)
    clock.advance(10)
    assert not record.is_dead()  # exactly 10 s is not more than 10 s
    clock.advance(0.5)
    assert record.is_dead()
    assert record.is_dead(heartbeat_timeout=10)
    assert not record.is_dead(heartbeat_timeout=11)
    assert record.time_since_heartbeat == timedelta(seconds=10.5)
    tracker.heartbeat(running)
    assert not record.is_dead()


def test_is_dead_of_a_terminal_record_is_its_state(tracker, new_execution, clock):
    dead = new_execution()
    tracker.update_execution_state(dead, ExecutionState.DEAD)
    done = new_execution()
    tracker.update_execution_state(done, ExecutionState.COMPLETED)
    clock.advance(100)
    assert tracker.get_execution(dead).is_dead()
    assert not tracker.get_execution(done).is_dead()


def test_is_timed_out_uses_the_timeout(tracker, new_execution, clock):
    execution_id = new_execution(timeout_seconds=5)
    record = tracker.get_execution(execution_id)
    clock.advance(5)
    assert not record.is_timed_out()
    clock.advance(0.1)
    assert record.is_timed_out()
    assert record.time_until_timeout() == 0


def test_is_timed_out_of_a_terminal_record_is_its_state(tracker, new_execution, clock):
    timed_out = new_execution(timeout_seconds=1)
    tracker.update_execution_state(timed_out, ExecutionState.TIMEOUT)
    done = new_execution(timeout_seconds=1)
    tracker.update_execution_state(done, ExecutionState.COMPLETED)
    clock.advance(100)
    assert tracker.get_execution(timed_out).is_timed_out()
    assert not tracker.get_execution(done).is_timed_out()


def test_duration_methods_in_milliseconds(tracker, running, clock):
    record = tracker.get_execution(running)
    clock.advance(1)
    assert record.get_total_duration_ms() == pytest.approx(1000.0)
    assert record.get_current_phase_duration_ms() == pytest.approx(1000.0)
    assert record.get_phase_duration_ms(AgentExecutionPhase.CREATED) == pytest.approx(1000.0)
    assert record.get_phase_duration_ms(AgentExecutionPhase.THINKING) == 0.0


def test_timestamps_are_timezone_aware_utc(tracker, running):
    tracker.update_execution_state(running, ExecutionState.COMPLETED)
    record = tracker.get_execution(running)
    for stamp in (record.started_at, record.last_heartbeat, record.updated_at, record.completed_at):
        assert stamp.tzinfo is not None
        assert stamp.astimezone(timezone.utc) == stamp
        assert stamp.utcoffset() == timedelta(0)


def test_record_timeout_config_reflects_set_timeout(tracker, running):
    config = TimeoutConfig(agent_execution_timeout=12.0, llm_api_timeout=3.0)
    assert tracker.set_timeout(running, config)
    record = tracker.get_execution(running)
    assert record.timeout_config == config
    assert record.timeout_seconds == 12
