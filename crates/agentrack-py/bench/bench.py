"""Benchmark: the same workload through agentrack and through a plain-Python tracker.

The plain-Python side does the original tracker's bookkeeping the way the original did it — a
dataclass record per execution, dicts and sets for the indexes, ``datetime.now(timezone.utc)`` for
every timestamp, and a scan of every active record to find dead ones — so the ratios show what
swapping the import buys.

Workloads (sizes scale with ``--scale``):

1. lifecycle: create, start, heartbeat and complete 100,000 executions;
2. heartbeats: 1,000,000 heartbeats spread over 10,000 active executions;
3. dead detection: one pass over 100,000 active executions (none dead) — the original's
   ``detect_dead_executions`` scan against agentrack's ``detect_dead_executions`` (also a scan, it
   reports) and its monitor pass (deadline-driven: it touches only executions whose deadline came).

Run it against an optimised build::

    pip install ./crates/agentrack-py        # or: maturin develop --release
    python crates/agentrack-py/bench/bench.py [--scale 0.1] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

import agentrack

# --------------------------------------------------------------------------- plain-Python reference


class State(Enum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    COMPLETED = "completed"
    DEAD = "dead"
    TIMEOUT = "timeout"


TERMINAL = {State.COMPLETED, State.DEAD, State.TIMEOUT}


@dataclass
class Record:
    execution_id: str
    agent_name: str
    thread_id: str
    user_id: str
    state: State
    started_at: datetime
    last_heartbeat: datetime
    updated_at: datetime
    completed_at: datetime | None = None
    result: Any = None
    heartbeat_count: int = 0
    timeout_seconds: float = 15
    metadata: dict[str, Any] = field(default_factory=dict)


class DictTracker:
    """The original's bookkeeping in plain Python: dicts, sets and datetimes, no locking."""

    def __init__(self, heartbeat_timeout: float = 10, execution_timeout: float = 15) -> None:
        self.heartbeat_timeout = heartbeat_timeout
        self.execution_timeout = execution_timeout
        self.executions: dict[str, Record] = {}
        self.active: set[str] = set()
        self.by_agent: dict[str, set[str]] = defaultdict(set)
        self.by_thread: dict[str, set[str]] = defaultdict(set)
        self.total = 0
        self.successful = 0

    def create_execution(self, agent_name: str, thread_id: str, user_id: str) -> str:
        execution_id = f"exec_{uuid.uuid4().hex}"
        now = datetime.now(timezone.utc)
        self.executions[execution_id] = Record(
            execution_id,
            agent_name,
            thread_id,
            user_id,
            State.PENDING,
            now,
            now,
            now,
            timeout_seconds=self.execution_timeout,
        )
        self.active.add(execution_id)
        self.by_agent[agent_name].add(execution_id)
        self.by_thread[thread_id].add(execution_id)
        self.total += 1
        return execution_id

    def start_execution(self, execution_id: str) -> bool:
        record = self.executions.get(execution_id)
        if not record or record.state is not State.PENDING:
            return False
        now = datetime.now(timezone.utc)
        record.state = State.STARTING
        record.updated_at = now
        record.last_heartbeat = now
        return True

    def heartbeat(self, execution_id: str) -> bool:
        record = self.executions.get(execution_id)
        if not record or record.state in TERMINAL:
            return False
        record.last_heartbeat = datetime.now(timezone.utc)
        record.heartbeat_count += 1
        if record.state is State.STARTING:
            record.state = State.RUNNING
            record.updated_at = datetime.now(timezone.utc)
        return True

    def complete_execution(self, execution_id: str, result: Any = None) -> bool:
        record = self.executions.get(execution_id)
        if not record or record.state in TERMINAL:
            return False
        now = datetime.now(timezone.utc)
        record.state = State.COMPLETED
        record.updated_at = record.last_heartbeat = record.completed_at = now
        if result is not None:
            record.result = result
        self.active.discard(execution_id)
        self.successful += 1
        return True

    def detect_dead_executions(self) -> list[Record]:
        now = datetime.now(timezone.utc)
        dead = []
        for execution_id in list(self.active):
            record = self.executions.get(execution_id)
            if record is None:
                continue
            if (now - record.last_heartbeat).total_seconds() > self.heartbeat_timeout or (
                now - record.started_at
            ).total_seconds() > record.timeout_seconds:
                dead.append(record)
        return dead


# --------------------------------------------------------------------------- workloads


def timed(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def lifecycle(make: Callable[[], Any], n: int) -> Callable[[], None]:
    def run() -> None:
        tracker = make()
        for i in range(n):
            execution_id = tracker.create_execution("agent", f"thread-{i % 1000}", f"user-{i % 100}")
            tracker.start_execution(execution_id)
            tracker.heartbeat(execution_id)
            tracker.complete_execution(execution_id, result={"ok": True})

    return run


def heartbeats(make: Callable[[], Any], active: int, beats: int) -> Callable[[], None]:
    tracker = make()
    ids = [tracker.create_execution("agent", f"thread-{i}", "user") for i in range(active)]

    def run() -> None:
        heartbeat = tracker.heartbeat
        for i in range(beats):
            heartbeat(ids[i % active])

    return run


def detection(make: Callable[[], Any], active: int) -> tuple:
    tracker = make()
    for i in range(active):
        tracker.create_execution("agent", f"thread-{i}", "user")

    def scan() -> None:
        assert tracker.detect_dead_executions() == []

    def monitor_pass() -> None:
        result = asyncio.run(tracker.run_monitor_pass())
        assert result["dead"] == [] and result["timed_out"] == []

    return scan, monitor_pass


def agentrack_tracker() -> agentrack.AgentExecutionTracker:
    return agentrack.AgentExecutionTracker(heartbeat_timeout=600, execution_timeout=600)


def dict_tracker() -> DictTracker:
    return DictTracker(heartbeat_timeout=600, execution_timeout=600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every workload size by this")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (the best is kept)")
    args = parser.parse_args()

    n = int(100_000 * args.scale)
    active = int(10_000 * args.scale) or 1
    beats = int(1_000_000 * args.scale)
    big = int(100_000 * args.scale)

    rows = []
    plain = timed(lifecycle(dict_tracker, n), args.repeat)
    ours = timed(lifecycle(agentrack_tracker, n), args.repeat)
    rows.append((f"lifecycle of {n:,} executions", plain, ours))

    plain = timed(heartbeats(dict_tracker, active, beats), args.repeat)
    ours = timed(heartbeats(agentrack_tracker, active, beats), args.repeat)
    rows.append((f"{beats:,} heartbeats over {active:,} active", plain, ours))

    plain_scan, _ = detection(dict_tracker, big)
    our_scan, our_monitor = detection(agentrack_tracker, big)
    plain = timed(plain_scan, args.repeat)
    rows.append((f"dead-detection scan over {big:,} active", plain, timed(our_scan, args.repeat)))
    rows.append((f"monitor pass over {big:,} active (vs the scan)", plain, timed(our_monitor, args.repeat)))

    width = max(len(name) for name, _, _ in rows)
    print(f"agentrack {agentrack.__version__}; best of {args.repeat}")
    print(f"{'workload':<{width}}  {'plain Python':>12}  {'agentrack':>10}  {'speed-up':>8}")
    for name, plain, ours in rows:
        print(f"{name:<{width}}  {plain:>11.3f}s  {ours:>9.3f}s  {plain / ours:>7.1f}x")


if __name__ == "__main__":
    main()
