"""Thread safety: several Python threads and several event loops on one tracker."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from unittest.mock import AsyncMock

from agentrack import AgentExecutionPhase, AgentExecutionTracker, ExecutionState

THREADS = 4


def run_in_threads(worker, n=THREADS):
    barrier = threading.Barrier(n)
    errors = []

    def wrapped(index):
        barrier.wait()
        try:
            worker(index)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_four_threads_updating_concurrently_keep_every_count_and_index_exact():
    # Timeouts longer than the test: against a server (whose monitor runs on the wall clock) the
    # executions left running would otherwise be declared dead while the threads still work.
    tracker = AgentExecutionTracker(heartbeat_timeout=600, execution_timeout=3600)
    per_thread = 500
    created = [[] for _ in range(THREADS)]

    def worker(index):
        for i in range(per_thread):
            execution_id = tracker.create_execution(f"agent-{index % 2}", f"thread-{i % 7}", f"user-{index}")
            created[index].append(execution_id)
            assert tracker.start_execution(execution_id)
            assert tracker.heartbeat(execution_id)
            tracker.set_agent_state(execution_id, {"metadata": {"i": i}})
            final = [ExecutionState.COMPLETED, ExecutionState.FAILED, ExecutionState.RUNNING][i % 3]
            assert tracker.update_execution_state(execution_id, final)

    run_in_threads(worker)
    ids = [execution_id for chunk in created for execution_id in chunk]
    assert len(set(ids)) == THREADS * per_thread
    metrics = tracker.get_metrics()
    total = THREADS * per_thread
    assert metrics["total_executions"] == total
    completed = sum(1 for i in range(per_thread) if i % 3 == 0) * THREADS
    failed = sum(1 for i in range(per_thread) if i % 3 == 1) * THREADS
    assert metrics["successful_executions"] == completed
    assert metrics["failed_executions"] == failed
    assert metrics["active_executions"] == total - completed - failed
    assert len(tracker.get_active_executions()) == total - completed - failed
    assert len(tracker.get_executions_by_agent("agent-0")) + len(tracker.get_executions_by_agent("agent-1")) == total
    assert tracker._check_consistency() == []


def test_four_threads_racing_on_the_same_executions_finish_each_exactly_once():
    tracker = AgentExecutionTracker()
    ids = [tracker.create_execution("a", "t", "u") for _ in range(300)]
    wins = [0] * THREADS
    targets = [ExecutionState.COMPLETED, ExecutionState.FAILED, ExecutionState.TIMEOUT, ExecutionState.CANCELLED]

    def worker(index):
        for execution_id in ids:
            tracker.heartbeat(execution_id)
            if tracker.update_execution_state(execution_id, targets[index], error=f"thread {index}"):
                wins[index] += 1

    run_in_threads(worker)
    assert sum(wins) == len(ids)
    metrics = tracker.get_metrics()
    assert metrics["active_executions"] == 0
    finished = (
        metrics["successful_executions"]
        + metrics["failed_executions"]
        + metrics["timeout_executions"]
        + metrics["cancelled_executions"]
    )
    assert finished == len(ids)
    for execution_id in ids:
        assert tracker.get_execution(execution_id).is_terminal
    assert tracker._check_consistency() == []


def test_concurrent_heartbeats_are_all_counted():
    tracker = AgentExecutionTracker()
    execution_id = tracker.create_execution("a", "t", "u")
    tracker.start_execution(execution_id)

    def worker(index):
        for _ in range(2000):
            assert tracker.heartbeat(execution_id)

    run_in_threads(worker)
    record = tracker.get_execution(execution_id)
    assert record.heartbeat_count == THREADS * 2000
    assert record.state is ExecutionState.RUNNING


PER_LOOP = 25


def test_several_event_loops_transition_and_notify_concurrently():
    tracker = AgentExecutionTracker()
    phases = [
        AgentExecutionPhase.WEBSOCKET_SETUP,
        AgentExecutionPhase.CONTEXT_VALIDATION,
        AgentExecutionPhase.STARTING,
        AgentExecutionPhase.THINKING,
        AgentExecutionPhase.LLM_INTERACTION,
        AgentExecutionPhase.RESULT_PROCESSING,
        AgentExecutionPhase.COMPLETING,
        AgentExecutionPhase.COMPLETED,
    ]

    async def run_executions(index):
        manager = AsyncMock()
        ids = [tracker.create_execution("agent", f"thread-{index}", f"user-{index}") for _ in range(PER_LOOP)]

        async def llm_call():
            await asyncio.sleep(0)
            return index

        async def one(execution_id):
            tracker.start_execution(execution_id)
            for phase in phases:
                assert await tracker.transition_state(execution_id, phase, {"i": index}, manager)
                assert await tracker.execute_with_circuit_breaker(execution_id, llm_call) == index
            assert tracker.complete_execution(execution_id, result=index)

        await asyncio.gather(*(one(execution_id) for execution_id in ids))
        return manager, ids

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(lambda i: asyncio.run(run_executions(i)), range(THREADS)))

    for index, (manager, ids) in enumerate(results):
        assert manager.notify_agent_completed.await_count == len(ids)
        assert manager.notify_agent_started.await_count == len(ids)
        for call in manager.notify_agent_started.await_args_list:
            assert call.kwargs["run_id"] == f"thread-{index}"
        for execution_id in ids:
            record = tracker.get_execution(execution_id)
            assert record.state is ExecutionState.COMPLETED
            assert record.result == index
            assert len(record.phase_history) == len(phases)
            assert all(t.websocket_event_sent for t in record.phase_history[2:])
    assert tracker.get_metrics()["successful_executions"] == THREADS * PER_LOOP
    assert tracker._check_consistency() == []


def test_monitor_sweeps_while_threads_heartbeat():
    from agentrack import ManualClock

    clock = ManualClock()
    tracker = AgentExecutionTracker(clock=clock)
    ids = [tracker.create_execution("a", "t", "u") for _ in range(200)]
    stop = threading.Event()

    def heartbeater(index):
        while not stop.is_set():
            for execution_id in ids[index::2]:
                tracker.heartbeat(execution_id)

    threads = [threading.Thread(target=heartbeater, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(20):
            asyncio.run(tracker.run_monitor_pass())
            clock.advance(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert tracker.get_metrics()["dead_executions"] == 0
    assert tracker._check_consistency() == []
