"""Remote mode across processes: four worker processes against one server share one tracker.

An execution created in one worker is read, heartbeated and completed from another; a worker
killed with SIGKILL mid-run leaves executions the server declares dead by their own (short)
heartbeat timeout, and a subscriber in this process hears of the death on its event stream.
Polls use a generous bound and no timing threshold."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import pytest
from agentrack_server import Server, eventually

from agentrack import AgentExecutionTracker, ExecutionState, RemoteTracker

pytestmark = pytest.mark.remote_only

BOUND = 60.0


def worker(url: str, token: str, pipe: Connection) -> None:
    """Runs the commands sent over `pipe` on a remote tracker of its own, answering each."""
    tracker = RemoteTracker(url=url, token=token, heartbeat_timeout=1.0, flush_interval=0.05)
    while True:
        command, args = pipe.recv()
        if command == "create":
            pipe.send(tracker.create_execution(*args))
        elif command == "start":
            pipe.send(tracker.start_execution(*args))
        elif command == "heartbeat":
            beaten = tracker.heartbeat(*args)
            tracker.flush()
            pipe.send(beaten)
        elif command == "state":
            state = tracker.get_execution_state(*args)
            pipe.send(None if state is None else state.value)
        elif command == "count":
            record = tracker.get_execution(*args)
            pipe.send(None if record is None else record.heartbeat_count)
        elif command == "complete":
            pipe.send(tracker.complete_execution(*args))
        elif command == "pid":
            pipe.send(os.getpid())


class Workers:
    def __init__(self, url: str, token: str, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes = []
        for _ in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(target=worker, args=(url, token, theirs), daemon=True)
            process.start()
            self.pipes.append(ours)
            self.processes.append(process)

    def ask(self, index: int, command: str, *args: Any) -> Any:
        self.pipes[index].send((command, args))
        if not self.pipes[index].poll(BOUND):
            raise AssertionError(f"worker {index} did not answer {command}")
        return self.pipes[index].recv()

    def stop(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.kill()
            process.join()


@pytest.fixture
def shared(server: Server) -> tuple[str, str]:
    """The server's URL and one agent token all workers share."""
    return server.url, server.mint()


@pytest.fixture
def workers(shared: tuple[str, str]) -> Iterator[Workers]:
    started = Workers(*shared, count=4)
    yield started
    started.stop()


def test_an_execution_created_in_one_worker_is_driven_from_the_others(workers: Workers) -> None:
    execution_id = workers.ask(0, "create", "researcher", "thread-1", "alice")
    assert workers.ask(1, "state", execution_id) == "pending"
    assert workers.ask(1, "start", execution_id) is True
    assert workers.ask(2, "heartbeat", execution_id) is True
    assert workers.ask(3, "heartbeat", execution_id) is True
    assert workers.ask(0, "state", execution_id) == "running"
    assert workers.ask(0, "count", execution_id) == 2
    assert workers.ask(3, "complete", execution_id, {"answer": 42}) is True
    assert workers.ask(2, "state", execution_id) == "completed"
    assert workers.ask(1, "complete", execution_id) is False, "finished: a second completion is refused"


def test_a_killed_workers_executions_are_declared_dead_and_a_subscriber_hears_it(
    workers: Workers, shared: tuple[str, str]
) -> None:
    url, token = shared
    subscriber = AgentExecutionTracker(url=url, token=token)
    subscriber.register_death_callback(lambda record: None)  # opens its event stream
    doomed = [workers.ask(1, "create", "coder", f"thread-{n}", "bob") for n in range(3)]
    survivor = workers.ask(2, "create", "coder", "thread-s", "bob")
    for execution_id in [*doomed, survivor]:
        assert workers.ask(0, "start", execution_id) is True
    for execution_id in doomed:
        assert workers.ask(1, "heartbeat", execution_id) is True
    os.kill(workers.ask(1, "pid"), signal.SIGKILL)
    workers.processes[1].join()

    # The survivor keeps beating from another worker while the doomed ones fall silent.
    def all_dead() -> bool:
        workers.ask(2, "heartbeat", survivor)
        return all(subscriber.get_execution_state(e) == ExecutionState.DEAD for e in doomed)

    eventually(all_dead, "the killed worker's executions declared dead")
    assert subscriber.get_execution_state(survivor) == ExecutionState.RUNNING
    record = subscriber.get_execution(doomed[0])
    assert record is not None and record.error is not None and record.error.startswith("No heartbeat")

    heard: set[str] = set()

    def all_heard() -> bool:
        heard.update(e["execution_id"] for e in subscriber._stream_events() if e["type"] == "dead")  # type: ignore[attr-defined]
        return set(doomed) <= heard

    eventually(all_heard, "the subscriber hears every death")
    assert survivor not in heard
    subscriber.close()  # type: ignore[attr-defined]
