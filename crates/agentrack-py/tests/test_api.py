"""The public surface: names, enumerations, configuration classes, signatures, sync vs async."""

from __future__ import annotations

import dataclasses
import enum
import inspect
from datetime import datetime, timezone

import pytest

import agentrack
from agentrack import (
    AgentExecutionPhase,
    AgentExecutionTracker,
    CircuitBreakerOpenError,
    CircuitBreakerState,
    ExecutionRecord,
    ExecutionState,
    ExecutionTracker,
    PhaseTransition,
    TimeoutConfig,
)


def test_every_public_name_of_the_original_is_exported():
    for name in (
        "AgentExecutionTracker",
        "ExecutionTracker",
        "ExecutionState",
        "AgentExecutionPhase",
        "CircuitBreakerState",
        "ExecutionRecord",
        "PhaseTransition",
        "TimeoutConfig",
        "CircuitBreakerOpenError",
        "get_execution_tracker",
        "initialize_tracker",
        "shutdown_tracker",
        "get_agent_state_tracker",
    ):
        assert hasattr(agentrack, name), name
        assert name in agentrack.__all__


def test_execution_state_is_an_enum_with_the_original_members():
    assert issubclass(ExecutionState, enum.Enum)
    assert {m.name: m.value for m in ExecutionState} == {
        "PENDING": "pending",
        "STARTING": "starting",
        "RUNNING": "running",
        "COMPLETING": "completing",
        "COMPLETED": "completed",
        "FAILED": "failed",
        "TIMEOUT": "timeout",
        "DEAD": "dead",
        "CANCELLED": "cancelled",
    }
    assert ExecutionState("running") is ExecutionState.RUNNING


def test_phase_is_an_enum_with_the_original_members():
    assert issubclass(AgentExecutionPhase, enum.Enum)
    assert [m.value for m in AgentExecutionPhase] == [
        "created",
        "websocket_setup",
        "context_validation",
        "starting",
        "thinking",
        "tool_preparation",
        "llm_interaction",
        "tool_execution",
        "result_processing",
        "completing",
        "completed",
        "timeout",
        "failed",
        "circuit_breaker_open",
    ]


def test_circuit_breaker_state_is_an_enum_with_the_original_members():
    assert issubclass(CircuitBreakerState, enum.Enum)
    assert [(m.name, m.value) for m in CircuitBreakerState] == [
        ("CLOSED", "closed"),
        ("OPEN", "open"),
        ("HALF_OPEN", "half_open"),
    ]


def test_timeout_config_has_the_original_defaults():
    config = TimeoutConfig()
    assert dataclasses.is_dataclass(config)
    assert dataclasses.asdict(config) == {
        "agent_execution_timeout": 25.0,
        "llm_api_timeout": 15.0,
        "failure_threshold": 3,
        "recovery_timeout": 30.0,
        "success_threshold": 2,
        "max_retries": 2,
        "retry_base_delay": 1.0,
        "retry_max_delay": 5.0,
        "retry_exponential_base": 2.0,
    }


def test_timeout_config_takes_keywords_and_compares_by_value():
    config = TimeoutConfig(llm_api_timeout=5.0, failure_threshold=1)
    assert config.llm_api_timeout == 5.0
    assert config.failure_threshold == 1
    assert config == TimeoutConfig(llm_api_timeout=5.0, failure_threshold=1)
    assert config != TimeoutConfig()


def test_phase_transition_is_a_dataclass_with_the_original_fields():
    now = datetime.now(timezone.utc)
    transition = PhaseTransition(
        from_phase=AgentExecutionPhase.CREATED, to_phase=AgentExecutionPhase.WEBSOCKET_SETUP, timestamp=now
    )
    assert transition.duration_ms == 0.0
    assert transition.metadata == {}
    assert transition.websocket_event_sent is False
    fields = [f.name for f in dataclasses.fields(PhaseTransition)]
    assert fields[:6] == ["from_phase", "to_phase", "timestamp", "duration_ms", "metadata", "websocket_event_sent"]


def test_circuit_breaker_open_error_is_an_exception():
    assert issubclass(CircuitBreakerOpenError, Exception)
    with pytest.raises(CircuitBreakerOpenError, match="open"):
        raise CircuitBreakerOpenError("open")


def test_execution_tracker_is_an_alias():
    assert ExecutionTracker is AgentExecutionTracker


def test_constructor_signature_and_defaults():
    parameters = inspect.signature(AgentExecutionTracker.__init__).parameters
    assert parameters["heartbeat_timeout"].default == 10
    assert parameters["execution_timeout"].default == 15
    assert parameters["cleanup_interval"].default == 60
    assert parameters["timeout_config"].default is None
    tracker = AgentExecutionTracker()
    assert tracker.heartbeat_timeout == 10
    assert tracker.execution_timeout == 15
    assert tracker.cleanup_interval == 60
    assert tracker.timeout_config == TimeoutConfig()
    assert tracker.get_default_timeout() == 15


def test_constructor_takes_positional_arguments_like_the_original():
    config = TimeoutConfig(llm_api_timeout=3.0)
    tracker = AgentExecutionTracker(5, 20, 30, config)
    assert (tracker.heartbeat_timeout, tracker.execution_timeout, tracker.cleanup_interval) == (5, 20, 30)
    assert tracker.timeout_config is config
    assert tracker.get_default_timeout() == 20


def test_settings_are_fixed_after_creation():
    tracker = AgentExecutionTracker()
    with pytest.raises(AttributeError, match="pass heartbeat_timeout"):
        tracker.heartbeat_timeout = 1


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf")])
def test_constructor_rejects_invalid_durations(bad):
    with pytest.raises(ValueError, match="heartbeat_timeout"):
        AgentExecutionTracker(heartbeat_timeout=bad)


def test_constructor_rejects_a_zero_execution_timeout():
    with pytest.raises(ValueError, match="execution_timeout"):
        AgentExecutionTracker(execution_timeout=0)


@pytest.mark.parametrize(
    "name",
    [
        "transition_state",
        "execute_with_circuit_breaker",
        "start_monitoring",
        "stop_monitoring",
    ],
)
def test_async_methods_stay_async(name):
    assert inspect.iscoroutinefunction(getattr(AgentExecutionTracker, name))


@pytest.mark.parametrize(
    "name",
    [
        "create_execution",
        "start_execution",
        "heartbeat",
        "update_execution_state",
        "get_execution_state",
        "get_execution",
        "get_active_executions",
        "get_executions_by_agent",
        "get_executions_by_thread",
        "detect_dead_executions",
        "register_death_callback",
        "register_timeout_callback",
        "get_agent_state",
        "set_agent_state",
        "validate_state_transition",
        "get_state_history",
        "cleanup_state",
        "set_timeout",
        "check_timeout",
        "register_circuit_breaker",
        "circuit_breaker_status",
        "reset_circuit_breaker",
        "create_execution_with_full_context",
        "get_execution_with_full_context",
        "get_metrics",
        "get_default_timeout",
        "create_execution_id",
        "complete_execution",
        "fail_execution",
    ],
)
def test_sync_methods_stay_sync(name):
    method = getattr(AgentExecutionTracker, name)
    assert callable(method)
    assert not inspect.iscoroutinefunction(method)


def test_global_functions_are_sync_or_async_as_in_the_original():
    assert not inspect.iscoroutinefunction(agentrack.get_execution_tracker)
    assert not inspect.iscoroutinefunction(agentrack.get_agent_state_tracker)
    assert inspect.iscoroutinefunction(agentrack.initialize_tracker)
    assert inspect.iscoroutinefunction(agentrack.shutdown_tracker)


def test_keyword_arguments_of_the_original_are_accepted(tracker):
    execution_id = tracker.create_execution(
        agent_name="a", thread_id="t", user_id="u", timeout_seconds=30, metadata={"k": 1}
    )
    assert tracker.update_execution_state(
        execution_id=execution_id, state=ExecutionState.RUNNING, error=None, result=None
    )
    assert tracker.complete_execution(execution_id=execution_id, result="r", execution_time_ms=5)
    other = tracker.create_execution("a", "t", "u")
    assert tracker.fail_execution(execution_id=other, error="e", error_context={"x": 1})
    assert tracker.create_execution_id(agent_name="a", context={"k": 1}).startswith("exec_")


def test_execution_record_is_the_exported_class(tracker):
    execution_id = tracker.create_execution("a", "t", "u")
    assert isinstance(tracker.get_execution(execution_id), ExecutionRecord)


def test_a_subclass_with_its_own_constructor_works():
    class Custom(AgentExecutionTracker):
        def __init__(self, name: str) -> None:
            super().__init__(heartbeat_timeout=3)
            self.name = name

    tracker = Custom("mine")
    assert tracker.name == "mine"
    assert tracker.heartbeat_timeout == 3
    assert tracker.get_execution_state(tracker.create_execution("a", "t", "u")) is ExecutionState.PENDING


def test_a_tracker_without_init_says_so():
    tracker = AgentExecutionTracker.__new__(AgentExecutionTracker)
    with pytest.raises(RuntimeError, match="__init__"):
        tracker.create_execution("a", "t", "u")


def test_version_is_exported():
    assert isinstance(agentrack.__version__, str) and agentrack.__version__


def test_package_ships_type_information():
    import importlib.resources

    files = importlib.resources.files("agentrack")
    assert files.joinpath("py.typed").is_file()
    assert files.joinpath("_core.pyi").is_file()
    assert files.joinpath("__init__.pyi").is_file() or files.joinpath("__init__.py").is_file()
