"""The process-wide instance and its functions."""

from __future__ import annotations

import threading

import agentrack
from agentrack import AgentExecutionTracker


def test_get_execution_tracker_returns_one_instance(fresh_global):
    tracker = agentrack.get_execution_tracker()
    assert isinstance(tracker, AgentExecutionTracker)
    assert agentrack.get_execution_tracker() is tracker
    assert agentrack.get_agent_state_tracker() is tracker


def test_the_global_instance_is_created_once_under_threads(fresh_global):
    seen = []
    barrier = threading.Barrier(8)

    def worker():
        barrier.wait()
        seen.append(agentrack.get_execution_tracker())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(tracker) for tracker in seen}) == 1


async def test_initialize_and_shutdown_tracker(fresh_global):
    tracker = await agentrack.initialize_tracker()
    assert tracker is agentrack.get_execution_tracker()
    assert tracker.is_monitoring
    assert await agentrack.initialize_tracker() is tracker  # idempotent
    await agentrack.shutdown_tracker()
    assert not tracker.is_monitoring
    await agentrack.shutdown_tracker()  # safe when stopped


def test_resetting_the_module_global_gives_a_fresh_tracker(fresh_global):
    first = agentrack.get_execution_tracker()
    agentrack._tracker_instance = None
    assert agentrack.get_execution_tracker() is not first
