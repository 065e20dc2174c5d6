"""Dead and timed-out executions, the background monitor, its callbacks and purging."""

from __future__ import annotations

import asyncio
import threading
from unittest.mock import AsyncMock

import pytest

from agentrack import AgentExecutionTracker, ExecutionState


def test_detect_dead_executions_reports_without_changing_state(tracker, new_execution, clock):
    quiet = new_execution()
    lively = new_execution()
    clock.advance(9)
    tracker.heartbeat(lively)
    clock.advance(2)  # quiet: 11 s without heartbeat; lively: 2 s
    dead = tracker.detect_dead_executions()
    assert [r.execution_id for r in dead] == [quiet]
    assert tracker.get_execution_state(quiet) is ExecutionState.PENDING


def test_detect_dead_executions_reports_timed_out_ones(tracker, new_execution, clock):
    execution_id = new_execution(timeout_seconds=5)
    clock.advance(3)
    tracker.heartbeat(execution_id)
    clock.advance(3)
    assert [r.execution_id for r in tracker.detect_dead_executions()] == [execution_id]


def test_detect_dead_executions_ignores_finished_ones(tracker, new_execution, clock):
    execution_id = new_execution()
    tracker.update_execution_state(execution_id, ExecutionState.COMPLETED)
    clock.advance(100)
    assert tracker.detect_dead_executions() == []


async def test_monitor_pass_marks_dead_and_timed_out_executions(tracker, new_execution, clock):
    dead = new_execution(timeout_seconds=100)
    timed_out = new_execution(timeout_seconds=5)
    alive = new_execution(timeout_seconds=100)
    clock.advance(4)
    tracker.heartbeat(timed_out)
    clock.advance(2)
    tracker.heartbeat(timed_out)
    tracker.heartbeat(alive)
    clock.advance(5)  # dead: 11 s silent; timed_out: 11 s old with a 5 s timeout
    result = await tracker.run_monitor_pass()
    assert [r.execution_id for r in result["dead"]] == [dead]
    assert [r.execution_id for r in result["timed_out"]] == [timed_out]
    dead_record = tracker.get_execution(dead)
    assert dead_record.state is ExecutionState.DEAD
    assert dead_record.error.startswith("No heartbeat for")
    timed_out_record = tracker.get_execution(timed_out)
    assert timed_out_record.state is ExecutionState.TIMEOUT
    assert timed_out_record.error == "Execution exceeded 5 s timeout"
    assert tracker.get_execution_state(alive) is ExecutionState.PENDING
    metrics = tracker.get_metrics()
    assert (metrics["dead_executions"], metrics["timeout_executions"], metrics["active_executions"]) == (1, 1, 1)


async def test_monitor_awaits_death_and_timeout_callbacks(tracker, new_execution, clock):
    death = AsyncMock()
    timeout = AsyncMock()
    tracker.register_death_callback(death)
    tracker.register_timeout_callback(timeout)
    dead = new_execution(timeout_seconds=100)
    timed_out = new_execution(timeout_seconds=1)
    tracker.heartbeat(timed_out)
    clock.advance(2)
    tracker.heartbeat(timed_out)
    await tracker.run_monitor_pass()
    death.assert_not_awaited()
    [(record,), _] = timeout.await_args
    assert record.execution_id == timed_out and record.state is ExecutionState.TIMEOUT
    clock.advance(9)
    await tracker.run_monitor_pass()
    death.assert_awaited_once()
    assert death.await_args.args[0].execution_id == dead
    assert death.await_args.args[0].state is ExecutionState.DEAD


async def test_plain_function_callbacks_are_called_too(tracker, new_execution, clock):
    seen = []
    tracker.register_death_callback(seen.append)
    execution_id = new_execution()
    clock.advance(11)
    await tracker.run_monitor_pass()
    assert [r.execution_id for r in seen] == [execution_id]


async def test_a_failing_callback_is_logged_and_never_fatal(tracker, new_execution, clock, caplog):
    async def broken(record):
        raise RuntimeError("callback exploded")

    after = AsyncMock()
    tracker.register_death_callback(broken)
    tracker.register_death_callback(after)
    new_execution()
    new_execution()
    clock.advance(11)
    with caplog.at_level("ERROR", logger="agentrack"):
        result = await tracker.run_monitor_pass()
    assert len(result["dead"]) == 2
    assert after.await_count == 2
    assert "callback exploded" in caplog.text


async def test_each_execution_is_reported_once(tracker, new_execution, clock):
    death = AsyncMock()
    tracker.register_death_callback(death)
    new_execution()
    clock.advance(11)
    await tracker.run_monitor_pass()
    clock.advance(11)
    await tracker.run_monitor_pass()
    assert death.await_count == 1


async def test_monitor_purges_finished_executions_after_cleanup_interval(clock):
    tracker = AgentExecutionTracker(clock=clock, cleanup_interval=60)
    old = tracker.create_execution("a", "t", "u")
    tracker.update_execution_state(old, ExecutionState.COMPLETED)
    clock.advance(30)
    recent = tracker.create_execution("a", "t", "u")
    tracker.update_execution_state(recent, ExecutionState.FAILED)
    clock.advance(31)
    result = await tracker.run_monitor_pass()
    assert result["purged"] == 1
    assert tracker.get_execution(old) is None
    assert tracker.get_execution(recent) is not None
    assert tracker.get_executions_by_agent("a")[0].execution_id == recent
    assert tracker.get_metrics()["successful_executions"] == 1


async def test_background_monitoring_runs_passes_and_calls_back(clock):
    tracker = AgentExecutionTracker(clock=clock, monitor_interval=0.005)
    died = asyncio.Event()
    records = []

    async def on_death(record):
        records.append(record)
        died.set()

    tracker.register_death_callback(on_death)
    execution_id = tracker.create_execution("a", "t", "u")
    await tracker.start_monitoring()
    assert tracker.is_monitoring
    clock.advance(11)
    await asyncio.wait_for(died.wait(), timeout=2)
    assert records[0].execution_id == execution_id
    assert tracker.get_execution_state(execution_id) is ExecutionState.DEAD
    await tracker.stop_monitoring()
    assert not tracker.is_monitoring


async def test_start_monitoring_is_idempotent_and_stop_is_safe(tracker):
    await tracker.stop_monitoring()  # not running: no-op
    await tracker.start_monitoring()
    task = tracker._monitor_task
    await tracker.start_monitoring()
    assert tracker._monitor_task is task
    await tracker.stop_monitoring()
    assert task.cancelled() or task.done()
    await tracker.stop_monitoring()
    await tracker.start_monitoring()
    assert tracker._monitor_task is not task
    await tracker.stop_monitoring()


async def test_a_monitor_error_does_not_stop_the_loop(tracker, monkeypatch, caplog):
    calls = []
    real = tracker._sweep

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("sweep failed")
        return real()

    monkeypatch.setattr(tracker, "_sweep", flaky)
    monkeypatch.setattr(tracker, "_monitor_interval", 0.001)
    with caplog.at_level("ERROR", logger="agentrack"):
        await tracker.start_monitoring()
        for _ in range(200):
            if len(calls) >= 2:
                break
            await asyncio.sleep(0.001)
        await tracker.stop_monitoring()
    assert len(calls) >= 2
    assert "sweep failed" in caplog.text


def test_monitoring_started_on_one_loop_can_be_stopped_from_another(clock):
    tracker = AgentExecutionTracker(clock=clock, monitor_interval=0.005)
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run_loop():
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    thread = threading.Thread(target=run_loop)
    thread.start()
    ready.wait()
    asyncio.run_coroutine_threadsafe(tracker.start_monitoring(), loop).result(timeout=2)
    task = tracker._monitor_task
    asyncio.run(tracker.stop_monitoring())  # another loop, in this thread
    for _ in range(200):
        if task.done():
            break
        threading.Event().wait(0.001)
    assert task.done()
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()

    # After the first loop is closed, monitoring can start again elsewhere.
    async def restart():
        await tracker.start_monitoring()
        assert tracker.is_monitoring
        await tracker.stop_monitoring()

    asyncio.run(restart())


@pytest.mark.parametrize("heartbeat_timeout", [0.05])
async def test_real_time_death_detection_with_small_timeouts(heartbeat_timeout):
    tracker = AgentExecutionTracker(heartbeat_timeout=heartbeat_timeout, monitor_interval=0.01)
    execution_id = tracker.create_execution("a", "t", "u")
    tracker.start_execution(execution_id)
    await tracker.start_monitoring()
    try:
        for _ in range(100):
            if tracker.get_execution_state(execution_id) is ExecutionState.DEAD:
                break
            await asyncio.sleep(0.01)
    finally:
        await tracker.stop_monitoring()
    assert tracker.get_execution_state(execution_id) is ExecutionState.DEAD
