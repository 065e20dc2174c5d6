import agentrack

def test_import():
    t = agentrack.AgentExecutionTracker()
    eid = t.create_execution("a", "t", "u")
    assert t.get_execution(eid).state is agentrack.ExecutionState.PENDING
