"""The original's enumerations, configuration and transition classes, unchanged in shape.

They are plain Python (``enum.Enum`` subclasses and dataclasses) so that code written against
the original keeps working: ``ExecutionState.COMPLETED.value == "completed"``, ``isinstance``
checks, ``TimeoutConfig(llm_api_timeout=5.0)``, equality and ``repr``. The Rust core is told
about them once, here, so that it can hand out the same members and instances.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from . import _core

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "AgentExecutionPhase",
    "CircuitBreakerOpenError",
    "CircuitBreakerState",
    "ExecutionState",
    "PhaseTransition",
    "TimeoutConfig",
]


class ExecutionState(Enum):
    """Agent execution states."""

    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    COMPLETING = "completing"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    DEAD = "dead"
    CANCELLED = "cancelled"


class AgentExecutionPhase(Enum):
    """Explicit phases of agent execution."""

    # Initialization phases
    CREATED = "created"
    WEBSOCKET_SETUP = "websocket_setup"
    CONTEXT_VALIDATION = "context_validation"

    # Execution phases
    STARTING = "starting"
    THINKING = "thinking"
    TOOL_PREPARATION = "tool_preparation"
    LLM_INTERACTION = "llm_interaction"
    TOOL_EXECUTION = "tool_execution"
    RESULT_PROCESSING = "result_processing"

    # Completion phases
    COMPLETING = "completing"
    COMPLETED = "completed"

    # Error phases
    TIMEOUT = "timeout"
    FAILED = "failed"
    CIRCUIT_BREAKER_OPEN = "circuit_breaker_open"


class CircuitBreakerState(Enum):
    """Circuit breaker states for LLM call resilience."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class TimeoutConfig:
    """Timeouts, circuit-breaker thresholds and retry settings (seconds for durations)."""

    agent_execution_timeout: float = 25.0
    llm_api_timeout: float = 15.0
    failure_threshold: int = 3
    recovery_timeout: float = 30.0
    success_threshold: int = 2
    max_retries: int = 2
    retry_base_delay: float = 1.0
    retry_max_delay: float = 5.0
    retry_exponential_base: float = 2.0


@dataclass
class PhaseTransition:
    """One phase change of an execution.

    ``duration_ms`` is the time spent in ``from_phase``; ``valid`` is false when the phase rules
    do not allow the transition (it happened anyway, as in the original, and was logged).
    """

    from_phase: AgentExecutionPhase | None
    to_phase: AgentExecutionPhase
    timestamp: datetime
    duration_ms: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    websocket_event_sent: bool = False
    valid: bool = True


class CircuitBreakerOpenError(Exception):
    """Raised when a circuit breaker is open and blocking requests."""


class _LiveMetadata(dict[str, Any]):
    """A tracked record's ``metadata``: a plain dict whose changes are written back to the
    execution (the whole dict is assigned to ``record.metadata`` after each change), so code
    that changes the original's records in place keeps working. Changes inside nested values
    are not seen; copies (``dict(m)``, ``copy.copy``, ``copy.deepcopy``, pickling) are plain
    dicts."""

    __slots__ = ("_record",)

    def __init__(self, record: Any, values: dict[str, Any]) -> None:
        super().__init__(values)
        self._record = record

    def _write_back(self) -> None:
        self._record.metadata = dict(self)

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._write_back()

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._write_back()

    def __ior__(self, other: Any) -> Self:  # type: ignore[override, misc]
        super().update(other)
        self._write_back()
        return self

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        self._write_back()

    def setdefault(self, key: str, default: Any = None) -> Any:
        value = super().setdefault(key, default)
        self._write_back()
        return value

    def pop(self, key: str, *default: Any) -> Any:
        value = super().pop(key, *default)
        self._write_back()
        return value

    def popitem(self) -> tuple[str, Any]:
        item = super().popitem()
        self._write_back()
        return item

    def clear(self) -> None:
        super().clear()
        self._write_back()

    def copy(self) -> dict[str, Any]:
        return dict(self)

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __reduce__(self) -> tuple[type, tuple[Iterable[tuple[str, Any]]]]:
        return (dict, (list(self.items()),))


_core._register_types(
    ExecutionState,
    AgentExecutionPhase,
    CircuitBreakerState,
    TimeoutConfig,
    PhaseTransition,
    _LiveMetadata,
)
