"""The original's 26 integration scenarios, one test each, named after them.

The original passed 25 of these; it failed ``invalid_execution_id_handling`` because
``update_execution_state`` auto-created records for unknown ids. agentrack passes all 26.
"""

from __future__ import annotations

import asyncio
import threading
from unittest.mock import AsyncMock

import pytest

import agentrack
from agentrack import (
    AgentExecutionPhase,
    AgentExecutionTracker,
    CircuitBreakerOpenError,
    CircuitBreakerState,
    ExecutionState,
    ExecutionTracker,
    TimeoutConfig,
)


def notifications(manager):
    """The notify_* calls made on a mock manager (the original also asked it for truthiness)."""
    return [c for c in manager.mock_calls if c[0].startswith("notify_")]


def test_execution_state_enum_usage_validation_critical_fix(tracker, running):
    # The production bug: a dict passed where an ExecutionState belongs.
    with pytest.raises(ValueError, match="ExecutionState"):
        tracker.update_execution_state(running, {"state": "completed", "success": True})
    with pytest.raises(TypeError, match="ExecutionState"):
        tracker.update_execution_state(running, "completed")
    assert tracker.get_execution_state(running) is ExecutionState.RUNNING
    # Every enum member is accepted.
    assert tracker.update_execution_state(running, ExecutionState.COMPLETING)
    assert tracker.update_execution_state(running, ExecutionState.COMPLETED, result={"ok": True})
    assert tracker.get_execution_state(running) is ExecutionState.COMPLETED


def test_execution_state_transition_validation(tracker, new_execution):
    execution_id = new_execution()
    assert tracker.get_execution_state(execution_id) is ExecutionState.PENDING
    assert tracker.heartbeat(execution_id)
    assert tracker.get_execution_state(execution_id) is ExecutionState.PENDING
    assert tracker.start_execution(execution_id)
    assert tracker.get_execution_state(execution_id) is ExecutionState.STARTING
    assert not tracker.start_execution(execution_id)
    assert tracker.heartbeat(execution_id)
    assert tracker.get_execution_state(execution_id) is ExecutionState.RUNNING
    assert tracker.update_execution_state(execution_id, ExecutionState.COMPLETING)
    assert tracker.update_execution_state(execution_id, ExecutionState.COMPLETED)
    assert not tracker.update_execution_state(execution_id, ExecutionState.RUNNING)
    assert tracker.get_execution_state(execution_id) is ExecutionState.COMPLETED


def test_terminal_state_handling_and_cleanup(tracker, new_execution):
    terminal = [
        ExecutionState.COMPLETED,
        ExecutionState.FAILED,
        ExecutionState.TIMEOUT,
        ExecutionState.DEAD,
        ExecutionState.CANCELLED,
    ]
    ids = []
    for state in terminal:
        execution_id = new_execution()
        tracker.start_execution(execution_id)
        assert tracker.update_execution_state(
            execution_id, state, error="x" if state is not ExecutionState.COMPLETED else None
        )
        record = tracker.get_execution(execution_id)
        assert record.is_terminal and record.completed_at is not None
        assert not tracker.heartbeat(execution_id)
        assert not tracker.update_execution_state(execution_id, ExecutionState.RUNNING)
        ids.append(execution_id)
    assert tracker.get_active_executions() == []
    for execution_id in ids:
        assert tracker.cleanup_state(execution_id)
        assert tracker.get_execution(execution_id) is None
    assert len(tracker._completed_executions) == len(terminal)


async def test_phase_transition_validation_from_consolidated_state_tracker(tracker, running):
    assert tracker.validate_state_transition(AgentExecutionPhase.CREATED, AgentExecutionPhase.WEBSOCKET_SETUP)
    assert not tracker.validate_state_transition(AgentExecutionPhase.CREATED, AgentExecutionPhase.COMPLETED)
    assert tracker.validate_state_transition(
        AgentExecutionPhase.LLM_INTERACTION, AgentExecutionPhase.CIRCUIT_BREAKER_OPEN
    )
    assert not tracker.validate_state_transition(AgentExecutionPhase.COMPLETED, AgentExecutionPhase.THINKING)
    # Valid transitions pass; an invalid one still happens (and is flagged).
    assert await tracker.transition_state(running, AgentExecutionPhase.WEBSOCKET_SETUP)
    assert await tracker.transition_state(running, AgentExecutionPhase.THINKING)
    record = tracker.get_execution(running)
    assert record.current_phase is AgentExecutionPhase.THINKING
    assert [t.valid for t in record.phase_history] == [True, False]


async def test_websocket_event_emission_during_phase_transitions(tracker, running, websocket_manager):
    await tracker.transition_state(running, AgentExecutionPhase.STARTING, {"k": 1}, websocket_manager)
    await tracker.transition_state(running, AgentExecutionPhase.THINKING, {"reasoning": "plan"}, websocket_manager)
    await tracker.transition_state(
        running, AgentExecutionPhase.TOOL_EXECUTION, {"tool_name": "search", "parameters": {"q": 1}}, websocket_manager
    )
    await tracker.transition_state(running, AgentExecutionPhase.FAILED, {"error": "tool failed"}, websocket_manager)
    # The original's arguments (SPEC.md): fixed texts and summaries, not the caller's keys.
    websocket_manager.notify_agent_started.assert_awaited_once_with(
        run_id="thread-1",
        agent_name="agent",
        context={"phase": "starting", "total_duration_ms": 0.0, "metadata": {"k": 1}},
    )
    websocket_manager.notify_agent_thinking.assert_awaited_once_with(
        run_id="thread-1", agent_name="agent", reasoning="Agent is thinking... (step 2)", step_number=2
    )
    websocket_manager.notify_tool_executing.assert_awaited_once_with(
        run_id="thread-1",
        agent_name="agent",
        tool_name="execution_tools",
        parameters={"tool_name": "search", "parameters": {"q": 1}},
    )
    websocket_manager.notify_agent_error.assert_awaited_once_with(
        run_id="thread-1",
        agent_name="agent",
        error="Agent execution failed",
        error_context={"phase": "failed", "total_duration_ms": 0.0, "metadata": {"error": "tool failed"}},
    )
    assert all(t.websocket_event_sent for t in tracker.get_execution(running).phase_history)


async def test_state_history_tracking_and_retrieval(tracker, running, clock):
    for phase in (
        AgentExecutionPhase.WEBSOCKET_SETUP,
        AgentExecutionPhase.CONTEXT_VALIDATION,
        AgentExecutionPhase.STARTING,
    ):
        clock.advance(0.1)
        await tracker.transition_state(running, phase, {"phase": phase.value})
    history = tracker.get_state_history(running)
    assert len(history) == 3
    assert [h["to_phase"] for h in history] == ["websocket_setup", "context_validation", "starting"]
    assert [h["metadata"]["phase"] for h in history] == ["websocket_setup", "context_validation", "starting"]
    assert all(h["duration_ms"] == pytest.approx(100) for h in history)
    assert tracker.get_agent_state(running)["phase_count"] == 3


def test_agent_state_management_and_updates(tracker, new_execution):
    execution_id = new_execution(metadata={"request": "hello"})
    state = tracker.get_agent_state(execution_id)
    assert state["state"] == "pending" and state["current_phase"] == "created"
    assert tracker.set_agent_state(execution_id, {"warning_count": 1, "error_count": 2, "metadata": {"model": "m"}})
    state = tracker.get_agent_state(execution_id)
    assert (state["warning_count"], state["error_count"]) == (1, 2)
    assert state["metadata"] == {"request": "hello", "model": "m"}
    assert not tracker.set_agent_state("exec_unknown", {"warning_count": 1})


def test_timeout_configuration_and_validation(tracker, running, clock):
    config = TimeoutConfig(agent_execution_timeout=20.0, llm_api_timeout=5.0, failure_threshold=2)
    assert tracker.set_timeout(running, config)
    record = tracker.get_execution(running)
    assert record.timeout_config == config
    assert record.timeout_seconds == 20
    clock.advance(21)
    status = tracker.check_timeout(running)
    assert status["is_timed_out"] and status["timeout_seconds"] == 20.0
    assert [r.execution_id for r in tracker.detect_dead_executions()] == [running]


async def test_circuit_breaker_functionality_and_states(tracker, running):
    assert tracker.register_circuit_breaker(running)
    status = tracker.circuit_breaker_status(running)
    assert status["state"] == "closed" and status["failure_count"] == 0 and not status["is_open"]

    async def fail():
        raise ConnectionError("503")

    for expected in (1, 2):
        with pytest.raises(ConnectionError):
            await tracker.execute_with_circuit_breaker(running, fail, "llm")
        assert tracker.circuit_breaker_status(running)["failure_count"] == expected
    with pytest.raises(ConnectionError):
        await tracker.execute_with_circuit_breaker(running, fail, "llm")
    status = tracker.circuit_breaker_status(running)
    assert status["state"] == "open" and status["is_open"] and not status["can_retry"]
    assert tracker.get_execution(running).circuit_breaker_state is CircuitBreakerState.OPEN
    assert tracker.reset_circuit_breaker(running)
    assert tracker.circuit_breaker_status(running)["state"] == "closed"


async def test_circuit_breaker_failure_and_recovery_cycle(tracker, running, clock):
    async def fail():
        raise RuntimeError("llm down")

    async def succeed():
        return "fine"

    for _ in range(3):
        with pytest.raises(RuntimeError):
            await tracker.execute_with_circuit_breaker(running, fail)
    with pytest.raises(CircuitBreakerOpenError):
        await tracker.execute_with_circuit_breaker(running, succeed)
    clock.advance(30)
    assert await tracker.execute_with_circuit_breaker(running, succeed) == "fine"
    assert tracker.get_execution(running).circuit_breaker_state is CircuitBreakerState.HALF_OPEN
    assert await tracker.execute_with_circuit_breaker(running, succeed) == "fine"
    record = tracker.get_execution(running)
    assert record.circuit_breaker_state is CircuitBreakerState.CLOSED
    assert record.circuit_breaker_failures == 0


async def test_execute_with_circuit_breaker_protection():
    tracker = AgentExecutionTracker(timeout_config=TimeoutConfig(llm_api_timeout=0.02))
    execution_id = tracker.create_execution("agent", "thread", "user")
    llm = AsyncMock(return_value={"content": "hi"})
    assert await tracker.execute_with_circuit_breaker(execution_id, llm, "chat") == {"content": "hi"}
    llm.assert_awaited_once_with()

    async def hangs():
        await asyncio.sleep(5)

    with pytest.raises(TimeoutError):
        await tracker.execute_with_circuit_breaker(execution_id, hangs, "chat")

    class ProviderError(Exception):
        pass

    async def raises():
        raise ProviderError("rate limited")

    with pytest.raises(ProviderError, match="rate limited"):
        await tracker.execute_with_circuit_breaker(execution_id, raises, "chat")
    assert tracker.circuit_breaker_status(execution_id)["failure_count"] == 2
    with pytest.raises(ValueError):
        await tracker.execute_with_circuit_breaker("exec_unknown", llm, "chat")


def test_heartbeat_monitoring_and_death_detection(tracker, running, clock):
    record = tracker.get_execution(running)
    for _ in range(5):
        clock.advance(5)
        assert tracker.heartbeat(running)
        assert not record.is_dead(tracker.heartbeat_timeout)
    assert record.heartbeat_count == 6
    clock.advance(10.5)
    assert record.is_dead(tracker.heartbeat_timeout)
    assert [r.execution_id for r in tracker.detect_dead_executions()] == [running]


async def test_background_monitoring_task_functionality(clock):
    tracker = AgentExecutionTracker(clock=clock, monitor_interval=0.005)
    death = AsyncMock()
    tracker.register_death_callback(death)
    execution_id = tracker.create_execution("agent", "thread", "user")
    tracker.start_execution(execution_id)
    await tracker.start_monitoring()
    await tracker.start_monitoring()
    clock.advance(15)
    for _ in range(400):
        if death.await_count:
            break
        await asyncio.sleep(0.005)
    await tracker.stop_monitoring()
    death.assert_awaited_once()
    assert tracker.get_execution_state(execution_id) is ExecutionState.DEAD
    assert tracker.get_execution(execution_id).error.startswith("No heartbeat for")


async def test_execution_timeout_detection_and_handling(tracker, new_execution, clock):
    on_timeout = AsyncMock()
    tracker.register_timeout_callback(on_timeout)
    execution_id = new_execution(timeout_seconds=3)
    tracker.start_execution(execution_id)
    for _ in range(4):
        clock.advance(1)
        tracker.heartbeat(execution_id)
    assert tracker.get_execution(execution_id).is_timed_out()
    result = await tracker.run_monitor_pass()
    assert [r.execution_id for r in result["timed_out"]] == [execution_id]
    record = tracker.get_execution(execution_id)
    assert record.state is ExecutionState.TIMEOUT
    assert record.error == "Execution exceeded 3 s timeout"
    on_timeout.assert_awaited_once()
    assert tracker.get_metrics()["timeout_executions"] == 1


def test_multi_user_execution_isolation_and_safety(tracker):
    alice = [tracker.create_execution("agent", "thread-a", "alice") for _ in range(3)]
    bob = [tracker.create_execution("agent", "thread-b", "bob") for _ in range(2)]
    tracker.update_execution_state(alice[0], ExecutionState.FAILED, error="alice's error")
    assert {r.user_id for r in tracker.get_executions_by_thread("thread-a")} == {"alice"}
    assert [r.execution_id for r in tracker.get_executions_by_thread("thread-b")] == bob
    assert [r.execution_id for r in tracker.get_executions_by_user("bob")] == bob
    for execution_id in bob:
        record = tracker.get_execution(execution_id)
        assert record.state is ExecutionState.PENDING and record.error is None
    tracker.set_agent_state(bob[0], {"metadata": {"secret": "bob"}})
    assert "secret" not in tracker.get_execution(alice[1]).metadata


def test_concurrent_execution_state_updates_safety(tracker):
    ids = [tracker.create_execution("agent", f"thread-{i}", "user") for i in range(100)]

    def worker(offset):
        for execution_id in ids[offset::4]:
            tracker.start_execution(execution_id)
            tracker.heartbeat(execution_id)
            tracker.update_execution_state(execution_id, ExecutionState.COMPLETED)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(tracker.get_execution_state(i) is ExecutionState.COMPLETED for i in ids)
    assert tracker.get_metrics()["successful_executions"] == 100
    assert tracker._check_consistency() == []


def test_unified_id_manager_integration_for_execution_ids(tracker):
    ids = [tracker.create_execution(f"agent-{i % 3}", "thread", "user") for i in range(1000)]
    ids += [tracker.create_execution_id("agent") for _ in range(1000)]
    assert len(set(ids)) == 2000
    for execution_id in ids:
        assert execution_id.startswith("exec_") and len(execution_id) > 10
    # Ids are time-ordered.
    created = ids[:1000]
    assert created == sorted(created)


def test_full_consolidated_execution_context_creation(tracker):
    execution_id = tracker.create_execution_with_full_context(
        agent_name="supervisor",
        user_context={"user_id": "user-9", "thread_id": "thread-9", "metadata": {"source": "chat"}},
        timeout_config={"timeout_seconds": 40.0, "llm_timeout": 10.0, "failure_threshold": 5, "recovery_timeout": 20.0},
        initial_state="RUNNING",
    )
    record = tracker.get_execution(execution_id)
    assert (record.agent_name, record.user_id, record.thread_id) == ("supervisor", "user-9", "thread-9")
    assert record.state is ExecutionState.RUNNING
    assert record.timeout_seconds == 40
    assert record.timeout_config == TimeoutConfig(
        agent_execution_timeout=40.0, llm_api_timeout=10.0, failure_threshold=5, recovery_timeout=20.0
    )
    context = tracker.get_execution_with_full_context(execution_id)
    assert context["execution_id"] == execution_id
    assert context["state"] == "RUNNING"
    assert context["metadata"] == {"source": "chat"}
    assert context["timeout_seconds"] == 40
    assert context["state_info"]["agent_name"] == "supervisor"
    assert context["timeout_status"]["timeout_seconds"] == 40.0
    assert context["circuit_breaker_status"]["failure_threshold"] == 5
    assert context["circuit_breaker_status"]["state"] == "closed"
    assert context["state_history"] == []
    assert context["consolidated"] is True and context["created_with_ssot"] is True
    assert tracker.get_execution_with_full_context("exec_unknown") is None


def test_full_context_defaults_and_initial_states(tracker):
    default = tracker.create_execution_with_full_context("a", {})
    record = tracker.get_execution(default)
    assert (record.user_id, record.thread_id) == ("unknown", "unknown")
    assert record.state is ExecutionState.PENDING
    assert record.timeout_config == TimeoutConfig()
    assert record.timeout_seconds == 25
    bogus = tracker.create_execution_with_full_context("a", {"user_id": "u"}, initial_state="NOT_A_STATE")
    assert tracker.get_execution_state(bogus) is ExecutionState.PENDING
    done = tracker.create_execution_with_full_context("a", {"user_id": "u"}, initial_state="COMPLETED")
    assert tracker.get_execution_state(done) is ExecutionState.COMPLETED


async def test_golden_path_chat_functionality_support(tracker, websocket_manager):
    execution_id = tracker.create_execution("supervisor", "thread-42", "user-42", metadata={"message": "weather?"})
    assert tracker.start_execution(execution_id)
    assert tracker.heartbeat(execution_id)
    steps = [
        (AgentExecutionPhase.WEBSOCKET_SETUP, {"connection": "ok"}),
        (AgentExecutionPhase.CONTEXT_VALIDATION, {"user": "user-42"}),
        (AgentExecutionPhase.STARTING, {"message": "weather?"}),
        (AgentExecutionPhase.THINKING, {"reasoning": "need a forecast"}),
        (AgentExecutionPhase.LLM_INTERACTION, {"model": "m"}),
        (AgentExecutionPhase.TOOL_EXECUTION, {"tool_name": "forecast", "parameters": {"city": "Paris"}}),
        (AgentExecutionPhase.RESULT_PROCESSING, {"reasoning": "summarising"}),
        (AgentExecutionPhase.COMPLETING, {"reasoning": "writing answer"}),
        (AgentExecutionPhase.COMPLETED, {"result": "sunny"}),
    ]
    for phase, metadata in steps:
        assert await tracker.transition_state(execution_id, phase, metadata, websocket_manager)
        tracker.heartbeat(execution_id)
    assert tracker.complete_execution(execution_id, result="sunny", execution_time_ms=1200)
    record = tracker.get_execution(execution_id)
    assert record.state is ExecutionState.COMPLETED
    assert record.current_phase is AgentExecutionPhase.COMPLETED
    assert all(t.valid for t in record.phase_history)
    events = []
    for name, _, kwargs in notifications(websocket_manager):
        assert kwargs["run_id"] == "thread-42" and kwargs["agent_name"] == "supervisor"
        event = name.removeprefix("notify_")
        if not events or events[-1] != event:
            events.append(event)
    assert events == ["agent_started", "agent_thinking", "tool_executing", "agent_thinking", "agent_completed"]
    assert websocket_manager.notify_agent_completed.await_args.kwargs["result"] == {
        "success": True,
        "total_duration_ms": 0.0,
        "phase_count": 9,
        "warnings": 0,
        "metadata": {"message": "weather?"},
    }


def test_metrics_collection_and_reporting(tracker):
    assert tracker.get_metrics() == {
        "total_executions": 0,
        "active_executions": 0,
        "successful_executions": 0,
        "failed_executions": 0,
        "timeout_executions": 0,
        "dead_executions": 0,
        "cancelled_executions": 0,
        "success_rate": 0,
        "failure_rate": 0,
    }
    states = [ExecutionState.COMPLETED] * 4 + [ExecutionState.FAILED, ExecutionState.TIMEOUT, ExecutionState.DEAD]
    for state in states:
        tracker.update_execution_state(tracker.create_execution("a", "t", "u"), state)
    tracker.create_execution("a", "t", "u")
    metrics = tracker.get_metrics()
    assert metrics["total_executions"] == 8
    assert metrics["active_executions"] == 1
    assert metrics["successful_executions"] == 4
    assert (metrics["failed_executions"], metrics["timeout_executions"], metrics["dead_executions"]) == (1, 1, 1)
    assert metrics["success_rate"] == pytest.approx(4 / 8)
    assert metrics["failure_rate"] == pytest.approx(3 / 8)


def test_execution_tracker_compatibility_alias():
    assert ExecutionTracker is AgentExecutionTracker
    tracker = ExecutionTracker(heartbeat_timeout=5)
    assert isinstance(tracker, AgentExecutionTracker)
    assert tracker.get_execution_state(tracker.create_execution("a", "t", "u")) is ExecutionState.PENDING


async def test_global_tracker_instance_functions(fresh_global):
    tracker = agentrack.get_execution_tracker()
    assert agentrack.get_execution_tracker() is tracker
    assert agentrack.get_agent_state_tracker() is tracker
    assert await agentrack.initialize_tracker() is tracker
    assert tracker.is_monitoring
    await agentrack.shutdown_tracker()
    assert not tracker.is_monitoring


async def test_invalid_execution_id_handling(tracker, websocket_manager):
    bad = "exec_does_not_exist"
    assert tracker.get_execution(bad) is None
    assert tracker.get_execution_state(bad) is None
    assert tracker.start_execution(bad) is False
    assert tracker.heartbeat(bad) is False
    assert tracker.update_execution_state(bad, ExecutionState.RUNNING) is False
    assert tracker.complete_execution(bad) is False
    assert tracker.fail_execution(bad, "e") is False
    assert (
        await tracker.transition_state(bad, AgentExecutionPhase.THINKING, websocket_manager=websocket_manager) is False
    )
    assert tracker.get_state_history(bad) == []
    assert tracker.get_agent_state(bad) is None
    assert tracker.set_agent_state(bad, {"warning_count": 1}) is False
    assert tracker.cleanup_state(bad) is False
    assert tracker.set_timeout(bad, TimeoutConfig()) is False
    assert tracker.check_timeout(bad) is None
    assert tracker.register_circuit_breaker(bad) is False
    assert tracker.reset_circuit_breaker(bad) is False
    assert tracker.circuit_breaker_status(bad) is None
    assert tracker.get_execution_with_full_context(bad) is None
    with pytest.raises(ValueError):
        await tracker.execute_with_circuit_breaker(bad, AsyncMock())
    # Nothing was created (the original's update_execution_state made a phantom record here).
    assert tracker.get_metrics()["total_executions"] == 0
    assert tracker.get_active_executions() == []
    websocket_manager.notify_agent_thinking.assert_not_awaited()


async def test_circuit_breaker_open_error_handling(tracker, running, clock):
    async def fail():
        raise RuntimeError("down")

    for _ in range(3):
        with pytest.raises(RuntimeError):
            await tracker.execute_with_circuit_breaker(running, fail, "completion")
    llm = AsyncMock()
    clock.advance(12.5)
    with pytest.raises(CircuitBreakerOpenError) as error:
        await tracker.execute_with_circuit_breaker(running, llm, "completion")
    assert "completion" in str(error.value) and "17.5s" in str(error.value)
    llm.assert_not_awaited()
    # The agent can report it as a phase.
    assert await tracker.transition_state(
        running, AgentExecutionPhase.CIRCUIT_BREAKER_OPEN, {"error": str(error.value)}
    )


async def test_concurrent_access_and_race_condition_safety(tracker):
    ids = [tracker.create_execution("agent", "thread", f"user-{i}") for i in range(50)]
    manager = AsyncMock()

    async def drive(execution_id):
        tracker.start_execution(execution_id)
        for phase in (
            AgentExecutionPhase.WEBSOCKET_SETUP,
            AgentExecutionPhase.CONTEXT_VALIDATION,
            AgentExecutionPhase.STARTING,
        ):
            await tracker.transition_state(execution_id, phase, None, manager)
            tracker.heartbeat(execution_id)
            await asyncio.sleep(0)
        return tracker.update_execution_state(execution_id, ExecutionState.COMPLETED)

    async def racer(execution_id):
        await asyncio.sleep(0)
        return tracker.update_execution_state(execution_id, ExecutionState.FAILED, error="raced")

    results = await asyncio.gather(*(drive(i) for i in ids), *(racer(i) for i in ids))
    # Each execution finished exactly once, whichever side won.
    assert sum(results) == len(ids)
    metrics = tracker.get_metrics()
    assert metrics["successful_executions"] + metrics["failed_executions"] == len(ids)
    assert metrics["active_executions"] == 0
    assert tracker._check_consistency() == []


async def test_cleanup_of_completed_executions(clock):
    tracker = AgentExecutionTracker(clock=clock, cleanup_interval=60)
    finished = [tracker.create_execution("a", "t", "u") for _ in range(5)]
    alive = tracker.create_execution("a", "t", "u", timeout_seconds=1000)
    for execution_id in finished:
        tracker.update_execution_state(execution_id, ExecutionState.COMPLETED)
    tracker.cleanup_state(finished[0])
    clock.advance(61)
    tracker.heartbeat(alive)
    result = await tracker.run_monitor_pass()
    assert result["purged"] == 4
    assert all(tracker.get_execution(execution_id) is None for execution_id in finished)
    assert tracker.get_execution_state(alive) is ExecutionState.PENDING
    assert [r.execution_id for r in tracker.get_executions_by_agent("a")] == [alive]
    assert tracker.get_metrics()["successful_executions"] == 5
