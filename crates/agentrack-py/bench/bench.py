"""Benchmark: the drop-in side by side with the original ``AgentExecutionTracker``.

The original is public (``netra-systems/zen``, ``netra_backend/app/core/agent_execution_tracker.py``,
removed later: take the last version from the history, commit ``386846b``). It is not part of this
repository; pass the path of a copy::

    pip install ./crates/agentrack-py        # or: maturin develop --release
    python crates/agentrack-py/bench/bench.py --original /path/to/agent_execution_tracker.py

The original imports two small modules of its code base, its logger and its id generator; the
bench puts stand-ins for them in ``sys.modules`` before loading it: ``get_logger`` is
``logging.getLogger`` (logging left at its default level, WARNING, for both sides), and
``UnifiedIDManager.generate_id`` builds the original's id format (``exec_execution_1_`` + 8 hex
digits of a ``uuid4``) without the real manager's registry, lock and debug log — so the original's
figures here are, if anything, a little faster than in its own code base.

Workloads, with N = 100,000 (``--scale`` multiplies every size):

1. lifecycle: create, start, 5 heartbeats and complete N executions (a fresh tracker each round);
2. golden path: N/10 executions, created and started outside the timed region, each moved through
   the 9 phases of the golden path with ``await transition_state(...)`` (no WebSocket manager);
3. heartbeats: 10·N heartbeats over N/10 active executions, round robin;
4. dead detection: one ``detect_dead_executions()`` pass over N active executions (none dead).

Both sides run in this process, in alternating order, for ``--rounds`` rounds; the table gives each
side's median and the median (and range) of the per-round ratios, so both columns of a row come
from the same minutes of machine load. Peak RSS is measured per side in a fresh process of its own
(its ``VmHWM``) that runs all four workloads once, as one application would, and per
workload. The "Python call floor" rows time calls that do no work, to show how much of a
drop-in call is the interpreter's own cost of calling anything.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
import types
import uuid
from collections.abc import Callable
from enum import Enum
from typing import Any

N = 100_000
WORKLOADS = ("lifecycle", "golden_path", "heartbeats", "dead_detection")
GOLDEN_PATH = (
    "websocket_setup",
    "context_validation",
    "starting",
    "thinking",
    "llm_interaction",
    "tool_execution",
    "result_processing",
    "completing",
    "completed",
)

# --------------------------------------------------------------------------- the two sides


def _install_original_stubs() -> None:
    """Stand-ins for the two modules the original imports from its code base."""

    def package(name: str) -> types.ModuleType:
        module = types.ModuleType(name)
        module.__path__ = []
        sys.modules.setdefault(name, module)
        return sys.modules[name]

    for name in ("shared", "shared.logging", "netra_backend", "netra_backend.app", "netra_backend.app.core"):
        package(name)

    ssot = types.ModuleType("shared.logging.unified_logging_ssot")
    ssot.get_logger = logging.getLogger  # type: ignore[attr-defined]
    sys.modules["shared.logging.unified_logging_ssot"] = ssot

    class IDType(Enum):
        EXECUTION = "execution"

    class UnifiedIDManager:
        """The id format of the original's manager (a fresh manager per id, so the counter is 1)."""

        def __init__(self) -> None:
            self._counter = 0

        def generate_id(self, id_type: IDType, prefix: str | None = None, context: Any = None) -> str:
            self._counter += 1
            return f"{prefix}_{id_type.value}_{self._counter}_{str(uuid.uuid4())[:8]}"

    ids = types.ModuleType("netra_backend.app.core.unified_id_manager")
    ids.IDType = IDType  # type: ignore[attr-defined]
    ids.UnifiedIDManager = UnifiedIDManager  # type: ignore[attr-defined]
    sys.modules["netra_backend.app.core.unified_id_manager"] = ids


def load_original(path: str) -> types.ModuleType:
    """The original module from its file, with its imports stubbed."""
    _install_original_stubs()
    spec = importlib.util.spec_from_file_location("original_agent_execution_tracker", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--original {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def load_side(side: str, original: str | None) -> types.ModuleType:
    if side == "original":
        if original is None:
            raise SystemExit("--original PATH is required for the original's side")
        return load_original(original)
    import agentrack

    return agentrack


def make_tracker(module: types.ModuleType) -> Any:
    # Long timeouts: nothing is dead or timed out during a workload.
    return module.AgentExecutionTracker(heartbeat_timeout=600, execution_timeout=600)


# --------------------------------------------------------------------------- workloads
#
# Each returns the seconds of its timed region; setup (and the tracker's destruction) is outside.


def lifecycle(module: types.ModuleType, n: int) -> float:
    tracker = make_tracker(module)
    create, start, heartbeat, complete = (
        tracker.create_execution,
        tracker.start_execution,
        tracker.heartbeat,
        tracker.complete_execution,
    )
    result = {"ok": True}
    started = time.perf_counter()
    for i in range(n):
        execution_id = create("agent", f"thread-{i % 1000}", f"user-{i % 100}")
        start(execution_id)
        heartbeat(execution_id)
        heartbeat(execution_id)
        heartbeat(execution_id)
        heartbeat(execution_id)
        heartbeat(execution_id)
        complete(execution_id, result=result)
    elapsed = time.perf_counter() - started
    assert len(tracker.get_active_executions()) == 0
    return elapsed


def golden_path(module: types.ModuleType, n: int) -> float:
    tracker = make_tracker(module)
    phases = [module.AgentExecutionPhase(value) for value in GOLDEN_PATH]
    ids = []
    for i in range(n):
        execution_id = tracker.create_execution("agent", f"thread-{i % 1000}", f"user-{i % 100}")
        tracker.start_execution(execution_id)
        ids.append(execution_id)
    transition = tracker.transition_state

    async def run() -> float:
        started = time.perf_counter()
        for execution_id in ids:
            for phase in phases:
                await transition(execution_id, phase)
        return time.perf_counter() - started

    elapsed = asyncio.run(run())
    assert tracker.get_execution(ids[-1]).current_phase is phases[-1]
    return elapsed


def heartbeats(module: types.ModuleType, active: int, beats: int) -> float:
    tracker = make_tracker(module)
    ids = [tracker.create_execution("agent", f"thread-{i % 1000}", f"user-{i % 100}") for i in range(active)]
    heartbeat = tracker.heartbeat
    rounds, rest = divmod(beats, active)
    started = time.perf_counter()
    for _ in range(rounds):
        for execution_id in ids:
            heartbeat(execution_id)
    for execution_id in ids[:rest]:
        heartbeat(execution_id)
    return time.perf_counter() - started


def dead_detection(module: types.ModuleType, active: int) -> float:
    tracker = make_tracker(module)
    for i in range(active):
        tracker.create_execution("agent", f"thread-{i % 1000}", f"user-{i % 100}")
    started = time.perf_counter()
    dead = tracker.detect_dead_executions()
    elapsed = time.perf_counter() - started
    assert dead == []
    return elapsed


def sizes(scale: float) -> dict[str, int]:
    n = max(int(N * scale), 10)
    return {"n": n, "tenth": max(n // 10, 1), "beats": 10 * n}


def run_workload(name: str, module: types.ModuleType, size: dict[str, int]) -> float:
    gc.collect()
    if name == "lifecycle":
        return lifecycle(module, size["n"])
    if name == "golden_path":
        return golden_path(module, size["tenth"])
    if name == "heartbeats":
        return heartbeats(module, size["tenth"], size["beats"])
    if name == "dead_detection":
        return dead_detection(module, size["n"])
    raise ValueError(f"unknown workload {name!r}; valid: {', '.join(WORKLOADS)}")


# --------------------------------------------------------------------------- the Python call floor


class _PlainPython:
    def heartbeat(self, execution_id: str) -> bool:
        return False


def call_floor(module: types.ModuleType, calls: int = 1_000_000) -> dict[str, float]:
    """Nanoseconds per call of a method that does no work: a plain Python method, and a drop-in
    method refusing a malformed id (the Python → Rust crossing and argument check, nothing else)."""
    tracker = make_tracker(module)

    def per_call(fn: Callable[[str], Any]) -> float:
        gc.collect()
        started = time.perf_counter()
        for _ in range(calls):
            fn("x")
        return (time.perf_counter() - started) / calls * 1e9

    return {
        "python_method": min(per_call(_PlainPython().heartbeat) for _ in range(3)),
        "drop_in_method": min(per_call(tracker.heartbeat) for _ in range(3)),
    }


# --------------------------------------------------------------------------- peak RSS, one process per side


def _high_water_kb() -> int:
    """This process's peak RSS in KiB. Linux's VmHWM belongs to the address space, which a new
    program gets at exec; ``getrusage``'s ``ru_maxrss`` would carry the forking parent's peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _child(side: str, workload: str, original: str | None, scale: float) -> None:
    module = load_side(side, original)
    size = sizes(scale)
    base = _high_water_kb()
    for name in WORKLOADS if workload == "all" else (workload,):
        run_workload(name, module, size)
    print(json.dumps({"base_kb": base, "peak_kb": _high_water_kb()}))


def peak_rss(side: str, workload: str, original: str | None, scale: float) -> dict[str, int]:
    command = [sys.executable, os.path.abspath(__file__), "--child", side, workload, "--scale", str(scale)]
    if original is not None:
        command += ["--original", original]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    result: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --------------------------------------------------------------------------- the table


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def remote_bench(calls: int, beats: int, rounds: int, json_path: str | None) -> None:
    """Remote mode against a real server started here (``AGENTRACK_BIN``, else the release build).

    Latency: each sample times a bare ``GET /healthz`` through the same client and pool, then one
    tracker call, alternately, so both see the same moments of load; p50 and p99 of each and their
    ratios. Heartbeats: ``beats`` calls of ``heartbeat()`` over 1,000 running executions, timed
    until the last batch is acknowledged by the server (``flush()``)."""
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    os.environ.setdefault("AGENTRACK_BIN", str(Path(__file__).resolve().parents[3] / "target/release/agentrack"))
    from agentrack_server import Server

    import agentrack

    with tempfile.TemporaryDirectory() as data:
        server = Server(Path(data))
        try:
            tracker: Any = agentrack.AgentExecutionTracker(
                url=server.url, token=server.mint(), heartbeat_timeout=600, execution_timeout=3600
            )
            remote = tracker._remote
            one = tracker.create_execution("bench", "thread", "user")
            tracker.start_execution(one)
            results: dict[str, Any] = {"calls": calls, "beats": beats}
            operations: dict[str, Callable[[], Any]] = {
                "get_execution_state": lambda: tracker.get_execution_state(one),
                "create_execution": lambda: tracker.create_execution("bench", "thread", "user"),
            }
            for name, operation in operations.items():
                base: list[float] = []
                timed: list[float] = []
                for _ in range(200):  # warm the pool and the server
                    remote._bare_get("/healthz")
                    operation()
                for _ in range(calls):
                    start = time.perf_counter()
                    remote._bare_get("/healthz")
                    middle = time.perf_counter()
                    operation()
                    end = time.perf_counter()
                    base.append(middle - start)
                    timed.append(end - middle)
                figures = {
                    f"{q}": {
                        "healthz_us": _percentile(base, p) * 1e6,
                        "call_us": _percentile(timed, p) * 1e6,
                        "ratio": _percentile(timed, p) / _percentile(base, p),
                    }
                    for q, p in (("p50", 0.5), ("p99", 0.99))
                }
                results[name] = figures
                print(
                    f"{name:22} p50 {figures['p50']['call_us']:8.1f} us vs /healthz"
                    f" {figures['p50']['healthz_us']:8.1f} us"
                    f" = {figures['p50']['ratio']:.2f}x;  p99 {figures['p99']['call_us']:8.1f} us vs"
                    f" {figures['p99']['healthz_us']:8.1f} us = {figures['p99']['ratio']:.2f}x"
                )
            ids = [tracker.create_execution("bench", f"t{i}", "user") for i in range(1000)]
            for execution_id in ids:
                tracker.start_execution(execution_id)
            rates = []
            for _ in range(rounds):
                start = time.perf_counter()
                heartbeat = tracker.heartbeat
                for i in range(beats):
                    heartbeat(ids[i % 1000])
                tracker.flush()
                rates.append(beats / (time.perf_counter() - start))
            # Every heartbeat counted on the server, none lost or doubled by the batching.
            counted = sum(tracker.get_execution(execution_id).heartbeat_count for execution_id in ids)
            if counted != rounds * beats:
                raise SystemExit(f"the server counted {counted:,} heartbeats of {rounds * beats:,} sent")
            results["heartbeats_counted_by_the_server"] = counted
            results["heartbeats_per_second"] = {
                "median": statistics.median(rates),
                "min": min(rates),
                "max": max(rates),
            }
            print(
                f"heartbeats/s (sent and acknowledged): median {statistics.median(rates):,.0f}"
                f" (range {min(rates):,.0f}-{max(rates):,.0f}) over {rounds} rounds of {beats:,};"
                f" the server counted {counted:,}"
            )
            tracker.close()
        finally:
            server.stop()
    if json_path:
        with open(json_path, "w") as out:
            json.dump(results, out, indent=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--original", help="path of the original agent_execution_tracker.py")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every workload size by this")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per workload")
    parser.add_argument("--json", help="also write the raw figures to this file")
    parser.add_argument("--remote", action="store_true", help="remote mode against a server started here")
    parser.add_argument("--calls", type=int, default=5000, help="remote: latency samples per call")
    parser.add_argument("--beats", type=int, default=500_000, help="remote: heartbeats per round")
    parser.add_argument("--child", nargs=2, metavar=("SIDE", "WORKLOAD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.remote:
        remote_bench(args.calls, args.beats, args.rounds, args.json)
        return
    if args.child:
        _child(args.child[0], args.child[1], args.original, args.scale)
        return

    import agentrack

    sides = ["agentrack"] + (["original"] if args.original else [])
    modules = {side: load_side(side, args.original) for side in sides}
    size = sizes(args.scale)
    load = os.getloadavg()
    print(
        f"agentrack {agentrack.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; N = {size['n']:,}, {args.rounds} rounds"
    )

    times: dict[str, dict[str, list[float]]] = {name: {side: [] for side in sides} for name in WORKLOADS}
    for round_number in range(args.rounds):
        order = sides if round_number % 2 == 0 else sides[::-1]
        for name in WORKLOADS:
            for side in order:
                times[name][side].append(run_workload(name, modules[side], size))

    floor = call_floor(modules["agentrack"])
    rss = {side: {w: peak_rss(side, w, args.original, args.scale) for w in ("all", *WORKLOADS)} for side in sides}
    load_after = os.getloadavg()

    labels = {
        "lifecycle": f"lifecycle: create, start, 5 heartbeats, complete; {size['n']:,} executions",
        "golden_path": f"golden path: {size['tenth']:,} executions x 9 transition_state (no manager)",
        "heartbeats": f"heartbeats: {size['beats']:,} over {size['tenth']:,} active",
        "dead_detection": f"one dead-detection pass over {size['n']:,} active",
    }
    print()
    print("| workload | original | drop-in | ratio: median (min-max) |")
    print("|---|---:|---:|---:|")
    for name in WORKLOADS:
        ours = statistics.median(times[name]["agentrack"])
        if "original" not in sides:
            print(f"| {labels[name]} | | {ours:.3f} s | |")
            continue
        theirs = statistics.median(times[name]["original"])
        ratios = [o / a for o, a in zip(times[name]["original"], times[name]["agentrack"], strict=True)]
        if name == "heartbeats":
            cells = f"{size['beats'] / theirs / 1e6:.2f} M/s | {size['beats'] / ours / 1e6:.2f} M/s"
        else:
            cells = f"{theirs:.3f} s | {ours:.3f} s"
        print(
            f"| {labels[name]} | {cells} | **{statistics.median(ratios):.1f}x faster** "
            f"({min(ratios):.1f}-{max(ratios):.1f}) |"
        )
    for workload in ("all", *WORKLOADS):
        label = "peak RSS, all four workloads in one process" if workload == "all" else f"peak RSS, {workload}"
        ours_mb = rss["agentrack"][workload]["peak_kb"] / 1024
        if "original" not in sides:
            print(f"| {label} | | {ours_mb:.0f} MB | |")
            continue
        theirs_mb = rss["original"][workload]["peak_kb"] / 1024
        print(f"| {label} | {theirs_mb:.0f} MB | {ours_mb:.0f} MB | **{ours_mb / theirs_mb:.2f}x** the original's |")
    base = {side: rss[side]["all"]["base_kb"] / 1024 for side in sides}
    print()
    print("RSS after import, before any workload: " + ", ".join(f"{side} {mb:.0f} MB" for side, mb in base.items()))
    print(
        f"Python call floor: a plain Python method {floor['python_method']:.0f} ns/call; "
        f"a drop-in method refusing a malformed id {floor['drop_in_method']:.0f} ns/call"
    )
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"sizes": size, "times": times, "rss": rss, "floor": floor, "load": [load, load_after]}, out)


if __name__ == "__main__":
    main()
