"""Shared fixtures: a tracker on a manual clock (no test sleeps for time to pass), a mock
WebSocket manager, and a clean process-wide instance.

``--mode remote`` (or ``AGENTRACK_TEST_MODE=remote``) runs the same tests against a real
``agentrack serve`` started for the session: every test gets an agent token of a tenant of its
own (so its queries see only its own executions) through ``AGENTRACK_URL`` and
``AGENTRACK_TOKEN``, which make every ``AgentExecutionTracker()`` a remote one. Tests marked
``local_only(reason)`` are skipped there with their reason."""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import AsyncMock

import pytest
from agentrack_server import Server

import agentrack
from agentrack import AgentExecutionTracker, ManualClock


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--mode",
        choices=("local", "remote"),
        default=os.environ.get("AGENTRACK_TEST_MODE", "local"),
        help="local: the in-process core; remote: a real agentrack server started for the session",
    )


RECORD_WRITES = "assigns to record internals (a remote record is the server's, read-only here)"
CLEANUP = (
    "cleanup_state and the completed history are the in-process core's bookkeeping (the server purges by retention)"
)
SENT = "websocket_event_sent is the in-process core's record of the manager's result; the server does not learn it"
DURATIONS = "expects durations of exactly 0 ms, which only the injectable clock (standing still) gives"
INJECTED = "replaces the core's monitor pass or back-dates time in process"

# Tests that by nature cannot run against a server, by node id prefix (file, or file::test), each
# with why; the package README's "Remote mode" section lists the same. Tests taking the `clock`
# fixture are skipped there too: time moves on the server's clock.
LOCAL_ONLY: dict[str, str] = {
    "test_record_writes.py": RECORD_WRITES,
    "test_record_handles.py": RECORD_WRITES,
    "test_internals.py::test_the_originals_cleanup_test_passes_as_written_on_the_system_clock": RECORD_WRITES,
    "test_internals.py::test_a_back_dated_heartbeat_is_dead_on_the_system_clock": RECORD_WRITES,
    "test_notifications.py::test_durations_follow_the_real_clock_as_the_originals_did": RECORD_WRITES,
    "test_internals.py::test_executions_counts_finished_records_until_they_are_removed": CLEANUP,
    "test_lifecycle.py::test_queries_include_finished_executions_until_cleanup": CLEANUP,
    "test_lifecycle.py::test_cleanup_state_moves_a_terminal_record_to_history": CLEANUP,
    "test_lifecycle.py::test_completed_history_is_capped_at_100": CLEANUP,
    "test_concurrency.py::test_monitor_sweeps_while_threads_heartbeat": "passes clock= (the injectable clock)",
    "test_concurrency.py::test_several_event_loops_transition_and_notify_concurrently": SENT,
    "test_phases.py::test_a_cancelled_notification_leaves_the_transition_unsent": SENT,
    "test_phases.py::test_starting_notifies_agent_started": SENT,
    "test_phases.py::test_get_state_history_gives_dicts": SENT,
    "test_phases.py::test_error_phases_notify_agent_error": DURATIONS,
    "test_phases.py::test_a_manager_without_the_method_keeps_the_transition": DURATIONS,
    "test_phases.py::test_golden_path_notifications_arrive_in_order": DURATIONS,
    "test_notifications.py::test_without_metadata_the_transition_metadata_is_an_empty_dict": DURATIONS,
    "test_notifications.py::test_completed_sends_the_records_metadata_as_it_is_then": RECORD_WRITES,
    "test_scenarios.py::test_terminal_state_handling_and_cleanup": CLEANUP,
    "test_scenarios.py::test_websocket_event_emission_during_phase_transitions": DURATIONS,
    "test_scenarios.py::test_golden_path_chat_functionality_support": DURATIONS,
    "test_monitor.py::test_a_monitor_error_does_not_stop_the_loop": INJECTED,
}


def remote_mode(config: pytest.Config) -> bool:
    return bool(config.getoption("--mode") == "remote")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not remote_mode(config):
        for item in items:
            if item.get_closest_marker("remote_only") is not None:
                item.add_marker(pytest.mark.skip(reason="remote mode only (--mode remote)"))
        return
    for item in items:
        function = getattr(item, "function", None)
        if function is not None and "clock" in inspect.signature(function).parameters:
            # Time moves on the server's clock there: a test that steps a ManualClock cannot run.
            item.add_marker(pytest.mark.skip(reason="local mode only: uses the injectable clock (ManualClock)"))
            continue
        listed = next((why for key, why in LOCAL_ONLY.items() if item.nodeid.startswith(f"tests/{key}")), None)
        if listed is not None:
            item.add_marker(pytest.mark.skip(reason=f"local mode only: {listed}"))
            continue
        marker = item.get_closest_marker("local_only")
        if marker is not None:
            reason = marker.args[0] if marker.args else "local mode only"
            item.add_marker(pytest.mark.skip(reason=f"local mode only: {reason}"))


@pytest.fixture(scope="session")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The session's server: monitor passes every 50 ms, so deaths and timeouts show quickly."""
    data: Path = tmp_path_factory.mktemp("agentrack-data")
    # The original's rules: invalid phase transitions and lifecycle moves happen (and are flagged),
    # as a server for drop-in users is configured (see the README's "Remote mode").
    config = data / "agentrack.toml"
    config.write_text('[tracker]\nphase_validation = "lenient"\nlifecycle_validation = "lenient"\n')
    started = Server(data, "--monitor-interval", "50ms", "--config", str(config))
    yield started
    started.stop()


@pytest.fixture(autouse=True)
def _mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """In remote mode: the session's server and a fresh tenant's agent token for this test."""
    if remote_mode(request.config):
        server: Server = request.getfixturevalue("server")
        monkeypatch.setenv("AGENTRACK_URL", server.url)
        monkeypatch.setenv("AGENTRACK_TOKEN", server.mint())
    else:
        monkeypatch.delenv("AGENTRACK_URL", raising=False)


@pytest.fixture
def remote(request: pytest.FixtureRequest) -> bool:
    """Whether the test runs against a server."""
    return remote_mode(request.config)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def tracker(request: pytest.FixtureRequest, clock: ManualClock) -> Iterator[AgentExecutionTracker]:
    if remote_mode(request.config):
        remote_tracker = AgentExecutionTracker()
        yield remote_tracker
        remote_tracker.close()  # type: ignore[attr-defined]
    else:
        yield AgentExecutionTracker(clock=clock)


@pytest.fixture
def websocket_manager() -> AsyncMock:
    """A duck-typed WebSocket manager whose notify_* coroutines record their calls."""
    manager = AsyncMock()
    for name in (
        "notify_agent_started",
        "notify_agent_thinking",
        "notify_tool_executing",
        "notify_agent_completed",
        "notify_agent_error",
    ):
        setattr(manager, name, AsyncMock(return_value=None))
    return manager


@pytest.fixture
def new_execution(tracker: AgentExecutionTracker):
    """Creates an execution: new_execution(agent="agent", thread="thread-1", user="user-1", **kw)."""

    def create(agent: str = "agent", thread: str = "thread-1", user: str = "user-1", **kwargs) -> str:
        return tracker.create_execution(agent, thread, user, **kwargs)

    return create


@pytest.fixture
def running(tracker: AgentExecutionTracker, new_execution) -> str:
    """An execution that has started and heartbeated (state RUNNING)."""
    execution_id = new_execution()
    assert tracker.start_execution(execution_id)
    assert tracker.heartbeat(execution_id)
    return execution_id


@pytest.fixture
def fresh_global() -> Iterator[None]:
    """Runs a test with no process-wide tracker, and drops the one it made."""
    agentrack._tracker_instance = None
    yield
    agentrack._tracker_instance = None
