"""Remote mode on a three-node cluster (PostgreSQL, ``AGENTRACK_TEST_PG_URL``): a tracker given the
three URLs keeps working when the node it talks to is killed. Skipped only when no PostgreSQL is
named (scripts/test always names one)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from agentrack_server import Server

from agentrack import ExecutionState, RemoteTracker

PG_URL = os.environ.get("AGENTRACK_TEST_PG_URL", "")

pytestmark = [
    pytest.mark.remote_only,
    pytest.mark.skipif(not PG_URL, reason="needs AGENTRACK_TEST_PG_URL (scripts/test always sets it)"),
]


def fresh_database() -> str:
    name = f"agentrack_py_{uuid.uuid4().hex[:12]}"
    subprocess.run(["psql", PG_URL, "-q", "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    parts = urlsplit(PG_URL)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[Server]]:
    store = fresh_database()
    nodes: list[Server] = []
    try:
        for index in range(3):
            data = tmp_path / f"node{index}"
            data.mkdir()
            nodes.append(Server(data, "--lease-ttl", "2s", "--monitor-interval", "100ms", store=store))
        yield nodes
    finally:
        for node in nodes:
            node.stop()
        name = urlsplit(store).path.lstrip("/")
        subprocess.run(
            ["psql", PG_URL, "-q", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True
        )


def test_a_tracker_given_three_nodes_keeps_working_when_its_node_is_killed(cluster: list[Server]) -> None:
    token = cluster[0].mint()
    urls = ",".join(node.url for node in cluster)
    tracker = RemoteTracker(url=urls, token=token, heartbeat_timeout=60, retry_timeout=60)
    before = [tracker.create_execution("agent", f"thread-{n}", "alice") for n in range(8)]
    for execution_id in before:
        assert tracker.start_execution(execution_id)
        assert tracker.heartbeat(execution_id)
    tracker.flush()
    assert tracker._remote.urls[0] == cluster[0].url

    cluster[0].kill()  # the node the tracker talks to, mid-run

    for execution_id in before:
        assert tracker.get_execution_state(execution_id) == ExecutionState.RUNNING
    after = tracker.create_execution("agent", "thread-after", "alice")
    assert tracker.start_execution(after)
    for execution_id in [*before, after]:
        assert tracker.complete_execution(execution_id, {"ok": True})
    metrics = tracker.get_metrics()
    assert metrics["successful_executions"] == len(before) + 1
    assert all(tracker.get_execution_state(e) == ExecutionState.COMPLETED for e in before)
    tracker.close()
