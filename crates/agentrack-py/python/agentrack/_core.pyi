"""Type stubs for the Rust extension module ``agentrack._core``."""

from datetime import datetime, timedelta
from typing import Any, Literal, TypeAlias, final

from typing_extensions import Self, disjoint_base

from ._types import (
    AgentExecutionPhase,
    CircuitBreakerState,
    ExecutionState,
    PhaseTransition,
    TimeoutConfig,
)

__all__ = [
    "ExecutionRecord",
    "ManualClock",
    "PendingNotification",
    "ProtectedCall",
    "TrackerCore",
    "__version__",
    "_register_types",
]

__version__: str

_PhaseLike: TypeAlias = AgentExecutionPhase | str

def _register_types(
    execution_state: type,
    phase: type,
    breaker_state: type,
    timeout_config: type,
    phase_transition: type,
    live_metadata: type,
) -> None: ...

@final
class ManualClock:
    """A clock that moves only when told to; pass it as ``AgentExecutionTracker(clock=...)``."""

    def __init__(self) -> None: ...
    def advance(self, seconds: float) -> None: ...
    def now(self) -> datetime: ...
    def monotonic(self) -> float: ...

@final
class ExecutionRecord:
    """The record of one execution. From a tracker it is live: every attribute read shows the
    current value and every assignment to a field changes the execution in the tracker
    (``LookupError`` once the record has been purged). Built directly, it is attached to no
    tracker and behaves like the original dataclass."""

    execution_id: str
    agent_name: str
    thread_id: str
    user_id: str
    state: ExecutionState
    started_at: datetime
    last_heartbeat: datetime
    updated_at: datetime
    completed_at: datetime | None
    error: str | None
    result: Any | None
    heartbeat_count: int
    timeout_seconds: int | float
    metadata: dict[str, Any]
    current_phase: AgentExecutionPhase
    phase_history: list[PhaseTransition]
    warning_count: int
    error_count: int
    timeout_config: TimeoutConfig | None
    circuit_breaker_failures: int
    circuit_breaker_state: CircuitBreakerState
    last_failure_time: float
    next_attempt_time: float
    def __new__(
        cls,
        execution_id: str,
        agent_name: str,
        thread_id: str,
        user_id: str,
        state: ExecutionState,
        started_at: datetime,
        last_heartbeat: datetime,
        updated_at: datetime = ...,
        completed_at: datetime | None = None,
        error: str | None = None,
        result: Any | None = None,
        heartbeat_count: int = 0,
        timeout_seconds: float = 30,
        metadata: dict[str, Any] | None = ...,
        current_phase: AgentExecutionPhase = ...,
        phase_history: list[PhaseTransition] | None = ...,
        warning_count: int = 0,
        error_count: int = 0,
        timeout_config: TimeoutConfig | None = None,
        circuit_breaker_failures: int = 0,
        circuit_breaker_state: CircuitBreakerState = ...,
        last_failure_time: float | datetime | None = 0.0,
        next_attempt_time: float | datetime | None = 0.0,
    ) -> Self: ...
    @property
    def tenant(self) -> str: ...
    @property
    def is_alive(self) -> bool: ...
    @property
    def is_terminal(self) -> bool: ...
    @property
    def duration(self) -> timedelta: ...
    @property
    def time_since_heartbeat(self) -> timedelta: ...
    def is_timed_out(self) -> bool: ...
    def is_dead(self, heartbeat_timeout: float = 10.0) -> bool: ...
    def get_total_duration_ms(self) -> float: ...
    def get_phase_duration_ms(self, phase: _PhaseLike) -> float: ...
    def get_current_phase_duration_ms(self) -> float: ...
    def is_circuit_breaker_open(self) -> bool: ...
    def should_retry(self, max_retries: int = 2) -> bool: ...
    def time_until_timeout(self) -> float: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class PendingNotification:
    """A recorded transition whose WebSocket notification is still to be sent."""

    @property
    def method(self) -> str: ...
    @property
    def kwargs(self) -> dict[str, Any]: ...
    def finish(self, sent: bool) -> bool: ...

@final
class ProtectedCall:
    """A call admitted by an execution's circuit breaker, awaiting its outcome."""

    @property
    def timeout(self) -> float: ...
    @property
    def trial(self) -> bool: ...
    def finish(self, success: bool) -> None: ...
    def abandon(self) -> None: ...

@disjoint_base
class TrackerCore:
    """The Rust core of ``AgentExecutionTracker``."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Self: ...
    def _init_core(
        self,
        heartbeat_timeout: float = 10.0,
        execution_timeout: float = 15.0,
        cleanup_interval: float = 60.0,
        timeout_config: TimeoutConfig | None = None,
        clock: ManualClock | None = None,
        monitor_interval: float = 2.0,
        history_cap: int = 100,
        max_finished: int = 100_000,
    ) -> None: ...

    # lifecycle
    def create_execution(
        self,
        agent_name: str,
        thread_id: str,
        user_id: str,
        timeout_seconds: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str: ...
    def create_execution_id(self, agent_name: str | None = None, context: dict[str, Any] | None = None) -> str: ...
    def get_default_timeout(self) -> int | float: ...
    def start_execution(self, execution_id: str) -> bool: ...
    def heartbeat(self, execution_id: str) -> bool: ...
    def update_execution_state(
        self,
        execution_id: str,
        state: ExecutionState,
        error: str | None = None,
        result: Any | None = None,
    ) -> bool: ...
    def complete_execution(
        self, execution_id: str, result: Any | None = None, execution_time_ms: float | None = None
    ) -> bool: ...
    def fail_execution(self, execution_id: str, error: str, error_context: dict[str, Any] | None = None) -> bool: ...
    def cancel_execution(self, execution_id: str, reason: str = "cancelled") -> bool: ...

    # queries
    def get_execution_state(self, execution_id: str) -> ExecutionState | None: ...
    def get_execution(self, execution_id: str) -> ExecutionRecord | None: ...
    def get_active_executions(self) -> list[ExecutionRecord]: ...
    def get_executions_by_agent(self, agent_name: str) -> list[ExecutionRecord]: ...
    def get_executions_by_thread(self, thread_id: str) -> list[ExecutionRecord]: ...
    def get_executions_by_user(self, user_id: str) -> list[ExecutionRecord]: ...
    def detect_dead_executions(self) -> list[ExecutionRecord]: ...
    def get_metrics(self) -> dict[str, Any]: ...
    def cleanup_state(self, execution_id: str) -> bool: ...

    # phases
    def validate_state_transition(
        self, current_phase: AgentExecutionPhase | None, new_phase: AgentExecutionPhase
    ) -> bool: ...
    def get_state_history(self, execution_id: str) -> list[dict[str, Any]]: ...
    def get_agent_state(self, execution_id: str) -> dict[str, Any] | None: ...
    def set_agent_state(self, execution_id: str, state_updates: dict[str, Any]) -> bool: ...
    def _transition(
        self,
        execution_id: str,
        phase: _PhaseLike,
        metadata: dict[str, Any] | None = None,
        notify: bool = False,
    ) -> bool | PendingNotification | None: ...

    # timeouts and breakers
    def set_timeout(self, execution_id: str, timeout_config: TimeoutConfig) -> bool: ...
    def check_timeout(self, execution_id: str) -> dict[str, Any] | None: ...
    def register_circuit_breaker(self, execution_id: str) -> bool: ...
    def reset_circuit_breaker(self, execution_id: str) -> bool: ...
    def circuit_breaker_status(self, execution_id: str) -> dict[str, Any] | None: ...
    def _begin_call(
        self, execution_id: str, operation_name: str
    ) -> tuple[Literal["admitted", "open", "not_found", "terminal"], ProtectedCall | None, float]: ...

    # integration and monitor
    def _create_with_context(
        self,
        agent_name: str,
        thread_id: str,
        user_id: str,
        metadata: dict[str, Any] | None,
        timeout_config: TimeoutConfig | None,
        initial_state: ExecutionState | None = None,
    ) -> str: ...
    def _sweep(self) -> tuple[list[ExecutionRecord], list[ExecutionRecord], int]: ...
    def _purge_finished(self) -> int: ...
    def _record_breaker_outcome(
        self, execution_id: str, success: bool
    ) -> Literal["recorded", "open", "terminal", "not_found"]: ...
    def _record_count(self) -> int: ...
    def _completed_history(self) -> list[ExecutionRecord]: ...
    def _execution_ids(self) -> list[str]: ...
    def _active_count(self) -> int: ...
    def _check_consistency(self) -> list[str]: ...
    @property
    def _heartbeat_timeout_seconds(self) -> float: ...
    def _now(self) -> datetime: ...
    @staticmethod
    def _json_roundtrip(value: Any) -> Any: ...
