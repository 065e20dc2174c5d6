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

/**
 * What each kind of event the server sends means to the dashboard; tests/event_kinds.rs checks
 * that these are exactly the server's kinds. `record` is what `apply` does with it:
 * - "created": nothing more (the record is built from it, see `recordFromCreated`);
 * - "state", "heartbeat", "phase", "terminal", "breaker": the fields it carries;
 * - "refetch": a change it does not describe in full: the record is read again.
 * `overview` says whether it changes a number the overview shows (phase changes move the
 * percentiles too, but too often to re-read for each).
 * A kind missing here (from a newer server) is read as "refetch" and refreshes the overview.
 */
export const EVENT_KINDS = Object.freeze({
  execution_created: { record: "created", overview: true },
  state_changed: { record: "state", overview: true },
  heartbeat: { record: "heartbeat", overview: false },
  agent_state_updated: { record: "refetch", overview: false },
  phase_changed: { record: "phase", overview: false },
  agent_started: { record: "phase", overview: false },
  agent_thinking: { record: "phase", overview: false },
  tool_executing: { record: "phase", overview: false },
  agent_completed: { record: "phase", overview: false },
  agent_error: { record: "phase", overview: false },
  execution_completed: { record: "terminal", overview: true },
  execution_failed: { record: "terminal", overview: true },
  execution_cancelled: { record: "terminal", overview: true },
  timed_out: { record: "terminal", overview: true },
  dead: { record: "terminal", overview: true },
  record_edited: { record: "refetch", overview: true },
  breaker_opened: { record: "breaker", overview: true },
  breaker_half_open: { record: "breaker", overview: true },
  breaker_closed: { record: "breaker", overview: true },
});

const UNKNOWN_KIND = Object.freeze({ record: "refetch", overview: true });

/** What the dashboard makes of `event`'s kind. */
export function kindOf(event) {
  return Object.hasOwn(EVENT_KINDS, event.type) ? EVENT_KINDS[event.type] : UNKNOWN_KIND;
}

/** Whether an event is an execution's terminal event. */
export function isTerminalEvent(event) {
  return kindOf(event).record === "terminal";
}

/** Whether an event changes something the overview shows. */
export function refreshesOverview(event) {
  return kindOf(event).overview;
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
  switch (kindOf(event).record) {
    case "created":
      break;
    case "state":
      record.state = event.to;
      break;
    case "heartbeat":
      record.heartbeat_count = Math.max(record.heartbeat_count ?? 0, event.heartbeat_count ?? 0);
      record.last_heartbeat = event.timestamp;
      break;
    case "phase":
      if (!event.transition) return "refetch";
      record.current_phase = event.transition.to_phase;
      record.phase_entered_at = event.transition.timestamp;
      record.phase_history = [...(record.phase_history ?? []), event.transition];
      break;
    case "terminal":
      record.state = event.state;
      record.completed_at = event.timestamp;
      record.last_heartbeat = event.last_heartbeat ?? record.last_heartbeat;
      if (event.error !== undefined && event.error !== null) record.error = event.error;
      if (event.result !== undefined && event.result !== null) record.result = event.result;
      break;
    case "breaker":
      // The execution's own breaker (named breakers' events carry no execution).
      record.circuit_breaker_state = event.state;
      record.circuit_breaker_failures = event.failures;
      break;
    case "refetch":
    default:
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

/** What each reason of a shard move means to an operator (GET /v1/cluster `recent_moves`). */
export const MOVE_REASONS = Object.freeze({
  free: "taken while nobody held it",
  released: "handed over",
  expired: "its owner stopped renewing",
  restarted: "its owner took it back after a restart",
});

/**
 * The cluster as the dashboard shows it, from a GET /v1/cluster answer: each node with how many
 * shards it serves and how long its leases hold (on the store's clock, so the browser's clock does
 * not matter), the shards nobody serves, and the moves with their meaning. A node is "down" when
 * it stopped saying it is alive, "idle" when alive but serving nothing, else "serving".
 */
export function clusterModel(status) {
  const now = status.now_ms;
  const nodes = (status.nodes ?? []).map((node) => ({
    id: node.node_id,
    url: node.url,
    self: node.node_id === status.this_node,
    shards: node.shards ?? [],
    health: !node.alive ? "down" : (node.shards ?? []).length === 0 ? "idle" : "serving",
    leaseLeftMs: node.lease_until_ms === null || node.lease_until_ms === undefined ? null : node.lease_until_ms - now,
    seenAgoMs: now - node.seen_ms,
  }));
  const moves = (status.recent_moves ?? []).map((move) => ({
    agoMs: now - move.at_ms,
    atMs: move.at_ms,
    shard: move.shard,
    from: move.from_node,
    to: move.to_node,
    reason: move.reason,
    meaning: MOVE_REASONS[move.reason] ?? move.reason,
  }));
  return {
    clustered: status.clustered,
    shardCount: status.shard_count,
    leaseTtlMs: status.lease_ttl_ms,
    nodes,
    unowned: status.unowned_shards ?? [],
    moves,
  };
}
