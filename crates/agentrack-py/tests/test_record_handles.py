"""Record handles under concurrent use and after their record is gone.

A handle (what ``get_execution`` returns) stays valid while other threads update the same
execution: every read is a consistent snapshot of one field, and writes from several threads all
land. Once the record is purged or cleaned up, reads give its last known values and writes raise
``LookupError`` — never a crash."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest

from agentrack import AgentExecutionTracker, ExecutionState, ManualClock


def test_a_handle_stays_consistent_while_another_thread_updates_the_execution(tracker, running):
    beats = 5_000
    record = tracker.get_execution(running)
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            own = tracker.get_execution(running)
            start.wait()
            for i in range(beats):
                assert tracker.heartbeat(running)
                if i % 100 == 0:
                    own.metadata = {"beat": i}
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    thread = threading.Thread(target=other_thread)
    thread.start()
    start.wait()
    seen = 0
    writes = 0
    while thread.is_alive():
        count = record.heartbeat_count
        assert count >= seen  # never goes backwards
        seen = count
        assert record.state is ExecutionState.RUNNING
        assert isinstance(record.metadata, dict)
        assert record.last_heartbeat >= record.started_at
        writes += 1
        record.warning_count = writes
    thread.join()
    assert errors == []
    assert record.heartbeat_count == beats + 1  # the fixture's heartbeat and the thread's
    assert record.warning_count == writes
    assert record.metadata == {"beat": (beats - 1) // 100 * 100}
    assert tracker._check_consistency() == []


def test_threads_assigning_different_fields_of_one_execution_all_land(tracker, running):
    rounds = 2_000
    start = threading.Barrier(3)

    def assign(field: str) -> None:
        handle = tracker.get_execution(running)
        start.wait()
        for i in range(1, rounds + 1):
            setattr(handle, field, i)

    threads = [threading.Thread(target=assign, args=(field,)) for field in ("warning_count", "error_count")]
    for thread in threads:
        thread.start()
    start.wait()
    for _ in range(rounds):
        tracker.heartbeat(running)
    for thread in threads:
        thread.join()
    state = tracker.get_agent_state(running)
    assert (state["warning_count"], state["error_count"]) == (rounds, rounds)
    assert tracker.get_execution(running).heartbeat_count == rounds + 1


async def test_a_handle_to_a_purged_record_keeps_its_last_values_and_refuses_writes(clock):
    tracker = AgentExecutionTracker(cleanup_interval=60, clock=clock)
    execution_id = tracker.create_execution("agent", "thread", "user", metadata={"k": "v"})
    tracker.start_execution(execution_id)
    tracker.complete_execution(execution_id, result={"answer": 42})
    record = tracker.get_execution(execution_id)
    record.completed_at = clock.now() - timedelta(seconds=120)
    await tracker._cleanup_old_executions()
    assert execution_id not in tracker._executions
    assert tracker.get_execution(execution_id) is None
    # Reads: the last known values.
    assert record.state is ExecutionState.COMPLETED
    assert record.result == {"answer": 42}
    assert record.metadata == {"k": "v"}
    assert record.completed_at == clock.now() - timedelta(seconds=120)
    assert record.is_terminal and "COMPLETED" in repr(record)
    # Writes: a clear error, and nothing changes.
    with pytest.raises(LookupError, match=f"execution {execution_id} is no longer tracked"):
        record.last_heartbeat = clock.now()
    with pytest.raises(LookupError, match="no longer tracked"):
        record.state = ExecutionState.RUNNING
    with pytest.raises(LookupError, match="no longer tracked"):
        record.metadata["k"] = "changed"
    assert record.state is ExecutionState.COMPLETED
    assert len(tracker._executions) == 0
    # A wrong type is still reported as such.
    with pytest.raises(TypeError, match="must be a datetime"):
        record.last_heartbeat = "now"


def test_a_handle_to_a_cleaned_up_record_reads_its_history_entry_and_refuses_writes(tracker, running):
    record = tracker.get_execution(running)
    tracker.update_execution_state(running, ExecutionState.FAILED, error="boom")
    assert tracker.cleanup_state(running)
    assert record.state is ExecutionState.FAILED
    assert record.error == "boom"
    with pytest.raises(LookupError, match="no longer tracked"):
        record.error = "rewritten"
    assert tracker._completed_executions[-1].error == "boom"


def test_writes_racing_a_purge_in_another_thread_apply_or_raise_lookup_error():
    clock = ManualClock()
    tracker = AgentExecutionTracker(cleanup_interval=60, clock=clock)
    execution_id = tracker.create_execution("agent", "thread", "user")
    tracker.complete_execution(execution_id)
    record = tracker.get_execution(execution_id)
    start = threading.Barrier(2)
    outcome: list[object] = []

    def writer() -> None:
        start.wait()
        for i in range(1_000_000):
            try:
                record.heartbeat_count = i
            except LookupError as error:
                outcome.append(error)
                return
        outcome.append("never purged")

    thread = threading.Thread(target=writer)
    thread.start()
    start.wait()
    clock.advance(61)
    asyncio.run(tracker._cleanup_old_executions())
    thread.join()
    assert len(outcome) == 1 and isinstance(outcome[0], LookupError)
    assert execution_id not in tracker._executions
    assert record.state is ExecutionState.COMPLETED  # still readable
    with pytest.raises(LookupError):
        record.heartbeat_count = 0
