"""The original's enumerations, configuration and transition classes, unchanged in shape.

They are plain Python (``enum.Enum`` subclasses and dataclasses) so that code written against
the original keeps working: ``ExecutionState.COMPLETED.value == "completed"``, ``isinstance``
checks, ``TimeoutConfig(llm_api_timeout=5.0)``, equality and ``repr``. The Rust core is told
about them once, here, so that it can hand out the same members and instances.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Dict, Optional

from . import _core

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

    from_phase: Optional[AgentExecutionPhase]
    to_phase: AgentExecutionPhase
    timestamp: datetime
    duration_ms: float = 0.0
    metadata: Dict[str, Any] = field(default_factory=dict)
    websocket_event_sent: bool = False
    valid: bool = True


class CircuitBreakerOpenError(Exception):
    """Raised when a circuit breaker is open and blocking requests."""


_core._register_types(
    ExecutionState, AgentExecutionPhase, CircuitBreakerState, TimeoutConfig, PhaseTransition
)
