"""How caller data (metadata, results, contexts) is stored: as JSON-like values."""

from __future__ import annotations

from datetime import date, datetime, time, timezone
from types import SimpleNamespace

from agentrack import AgentExecutionTracker, CircuitBreakerState, ExecutionState

roundtrip = AgentExecutionTracker._json_roundtrip


def test_json_values_come_back_as_they_went_in():
    value = {"none": None, "t": True, "f": False, "i": -3, "big": 2**63, "x": 1.5, "s": "é", "l": [1, [2, {"k": "v"}]]}
    assert roundtrip(value) == value
    assert type(roundtrip(2**63)) is int


def test_dict_keys_keep_the_order_they_were_given_in(tracker):
    metadata = {"zeta": 1, "alpha": {"y": 2, "b": 3}, "mid": 4}
    execution_id = tracker.create_execution("agent", "thread", "user", metadata=metadata)
    tracker.complete_execution(execution_id, result={"z": 1, "a": 2})
    record = tracker.get_execution(execution_id)
    assert list(record.metadata) == ["zeta", "alpha", "mid"]
    assert list(record.metadata["alpha"]) == ["y", "b"]
    assert list(record.result) == ["z", "a"]


def test_other_values_are_converted():
    assert roundtrip((1, 2)) == [1, 2]
    assert sorted(roundtrip({3, 1, 2})) == [1, 2, 3]
    assert roundtrip(frozenset()) == []
    assert roundtrip(ExecutionState.RUNNING) == "running"
    assert roundtrip({"state": CircuitBreakerState.HALF_OPEN}) == {"state": "half_open"}
    assert roundtrip(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)) == "2026-01-02T03:04:05+00:00"
    assert roundtrip(date(2026, 1, 2)) == "2026-01-02"
    assert roundtrip(time(3, 4)) == "03:04:00"
    assert roundtrip({1: "a", None: "b"}) == {"1": "a", "null": "b"}
    assert roundtrip(float("nan")) == "NaN"
    assert roundtrip(2**80) == str(2**80)
    assert roundtrip(SimpleNamespace(a=1)) == "namespace(a=1)"


def test_deep_or_self_referencing_values_do_not_overflow():
    nested: list = []
    nested.append(nested)
    assert isinstance(roundtrip(nested), list)
    deep: dict = {}
    cursor = deep
    for _ in range(200):
        cursor["k"] = {}
        cursor = cursor["k"]
    assert isinstance(roundtrip(deep), dict)


def test_full_context_accepts_an_object_as_user_context(tracker):
    context = SimpleNamespace(user_id="user-5", thread_id="thread-5", metadata={"m": 1})
    execution_id = tracker.create_execution_with_full_context("agent", context)
    record = tracker.get_execution(execution_id)
    assert (record.user_id, record.thread_id, record.metadata) == ("user-5", "thread-5", {"m": 1})


def test_full_context_accepts_an_execution_state_as_initial_state(tracker):
    execution_id = tracker.create_execution_with_full_context("agent", {}, initial_state=ExecutionState.STARTING)
    assert tracker.get_execution_state(execution_id) is ExecutionState.STARTING
