// Applying events to execution records: the same fold the server does, kept to the fields the
// dashboard shows. Each event carries its execution's own sequence number (`seq`); an event at or
// below the record's `seq` is already reflected in it and is ignored, so a record read over HTTP
// and events replayed from an older point can be combined in any order.

export const ALIVE = ["pending", "starting", "running", "completing"];
export const TERMINAL = ["completed", "failed", "timeout", "dead", "cancelled"];
export const STATES = [...ALIVE, ...TERMINAL];
/** Phases in the order an execution goes through them. */
export const PHASES = [
  "created", "websocket_setup", "context_validation", "starting", "thinking", "tool_preparation",
  "llm_interaction", "tool_execution", "result_processing", "completing", "completed", "timeout",
  "failed", "circuit_breaker_open",
];

/** Compares phase names by their place in the lifecycle (unknown ones last). */
export function byPhaseOrder(a, b) {
  const rank = (p) => (PHASES.includes(p) ? PHASES.indexOf(p) : PHASES.length);
  return rank(a) - rank(b) || a.localeCompare(b);
}

const TERMINAL_EVENTS = new Set(["execution_completed", "execution_failed", "execution_cancelled", "timed_out", "dead"]);
const PHASE_EVENTS = new Set(["phase_changed", "agent_started", "agent_thinking", "tool_executing", "agent_completed", "agent_error"]);

/** Whether an event is an execution's terminal event. */
export function isTerminalEvent(event) {
  return TERMINAL_EVENTS.has(event.type);
}

/** The record an `execution_created` event describes. */
export function recordFromCreated(event) {
  return {
    execution_id: event.execution_id,
    tenant: event.tenant,
    agent_name: event.agent_name,
    thread_id: event.thread_id,
    user_id: event.user_id,
    state: "pending",
    current_phase: "created",
    started_at: event.timestamp,
    last_heartbeat: event.timestamp,
    updated_at: event.timestamp,
    phase_entered_at: event.timestamp,
    completed_at: null,
    error: null,
    result: null,
    heartbeat_count: 0,
    timeout_seconds: event.timeout_seconds,
    metadata: event.metadata ?? {},
    phase_history: [],
    circuit_breaker_state: "closed",
    circuit_breaker_failures: 0,
    seq: event.seq,
  };
}

/**
 * Applies `event` to `record` in place. Returns "applied", "stale" (already reflected) or
 * "refetch" (a change the event does not describe in full, e.g. a direct record edit).
 */
export function apply(record, event) {
  if (typeof event.seq === "number" && typeof record.seq === "number" && event.seq <= record.seq) return "stale";
  let outcome = "applied";
  if (event.type === "state_changed") {
    record.state = event.to;
  } else if (event.type === "heartbeat") {
    record.heartbeat_count = Math.max(record.heartbeat_count ?? 0, event.heartbeat_count ?? 0);
    record.last_heartbeat = event.timestamp;
  } else if (PHASE_EVENTS.has(event.type) && event.transition) {
    record.current_phase = event.transition.to_phase;
    record.phase_entered_at = event.transition.timestamp;
    record.phase_history = [...(record.phase_history ?? []), event.transition];
  } else if (TERMINAL_EVENTS.has(event.type)) {
    record.state = event.state;
    record.completed_at = event.timestamp;
    record.last_heartbeat = event.last_heartbeat ?? record.last_heartbeat;
    if (event.error !== undefined && event.error !== null) record.error = event.error;
    if (event.result !== undefined && event.result !== null) record.result = event.result;
  } else if (event.type === "record_edited" || event.type === "agent_state_updated") {
    outcome = "refetch";
  }
  record.updated_at = event.timestamp;
  if (typeof event.seq === "number") record.seq = event.seq;
  return outcome;
}

/** Whether a state is alive. */
export function isAlive(state) {
  return ALIVE.includes(state);
}
