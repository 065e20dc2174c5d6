// One execution: its details, result or error, breaker, the phase timeline drawn to scale and
// the event log. It opens its own event stream for just this execution with since=0, so the log
// is the full stored history followed by live events; the same stream keeps the rest current.

import * as api from "../api.js";
import { h, replace, s, setText } from "../dom.js";
import { clock, clockMs, duration, json, label, serverNow, since } from "../format.js";
import { EventStream } from "../stream.js";
import { apply, isAlive } from "../model.js";

const TERMINAL_PHASES = new Set(["completed", "failed", "timeout", "circuit_breaker_open"]);
const LOG_LIMIT = 1000;

/** Time spent in each phase: from the history, plus the current phase while it lasts. */
export function segments(record, now) {
  const parts = (record.phase_history ?? []).map((t) => {
    const end = Date.parse(t.timestamp);
    return { phase: t.from_phase, start: end - t.duration_ms, end, ms: t.duration_ms, ongoing: false };
  });
  const entered = Date.parse(record.phase_entered_at);
  if (isAlive(record.state)) {
    parts.push({ phase: record.current_phase, start: entered, end: now, ms: now - entered, ongoing: true });
  } else if (record.completed_at && !TERMINAL_PHASES.has(record.current_phase)) {
    const end = Date.parse(record.completed_at);
    if (end > entered) parts.push({ phase: record.current_phase, start: entered, end, ms: end - entered, ongoing: false });
  }
  return parts;
}

function timeline(record, width) {
  const now = serverNow();
  const parts = segments(record, now);
  if (parts.length === 0) return h("p", { class: "empty" }, ["No phase yet: the execution is still being created."]);
  const t0 = Math.min(Date.parse(record.started_at), ...parts.map((p) => p.start));
  const t1 = Math.max(t0 + 1, ...parts.map((p) => p.end));
  const narrow = width < 520;
  const labelWidth = narrow ? 112 : 170;
  const valueWidth = narrow ? 64 : 84;
  const plot = Math.max(60, width - labelWidth - valueWidth - 8);
  const rowHeight = 24;
  const height = parts.length * rowHeight + 26;
  const x = (t) => labelWidth + ((t - t0) / (t1 - t0)) * plot;
  const rows = parts.map((p, i) => {
    const y = i * rowHeight + 4;
    const left = x(p.start);
    const barWidth = Math.max(2, x(p.end) - left);
    return s("g", { class: `segment${p.ongoing ? " ongoing" : ""}`, dataset: { phase: p.phase } }, [
      s("title", {}, [`${label(p.phase)}: ${duration(p.ms)}${p.ongoing ? " so far" : ""}`]),
      s("text", { x: 0, y: y + 15, class: "phase-label" }, [label(p.phase)]),
      s("rect", { x: labelWidth, y, width: plot, height: rowHeight - 6, class: "lane" }),
      s("rect", { x: left, y, width: barWidth, height: rowHeight - 6, class: `bar phase-${p.phase}` }),
      s("text", { x: width - 4, y: y + 15, class: "phase-value", "text-anchor": "end" }, [duration(p.ms) + (p.ongoing ? "…" : "")]),
    ]);
  });
  const axisY = parts.length * rowHeight + 12;
  return s(
    "svg",
    {
      class: "timeline",
      width,
      height,
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-label": `Phase timeline over ${duration(t1 - t0)}: ${parts.map((p) => `${label(p.phase)} ${duration(p.ms)}`).join(", ")}.`,
    },
    [
      ...rows,
      s("line", { x1: labelWidth, x2: labelWidth + plot, y1: axisY - 6, y2: axisY - 6, class: "axis" }),
      s("text", { x: labelWidth, y: axisY + 10, class: "tick" }, ["0"]),
      s("text", { x: labelWidth + plot, y: axisY + 10, class: "tick", "text-anchor": "end" }, [duration(t1 - t0)]),
    ],
  );
}

function describeEvent(event) {
  const t = event.transition;
  switch (event.type) {
    case "execution_created":
      return `timeout ${event.timeout_seconds} s`;
    case "state_changed":
      return `${label(event.from)} → ${label(event.to)}`;
    case "heartbeat":
      return `heartbeat #${event.heartbeat_count}`;
    case "tool_executing":
      return `${label(t?.from_phase)} → ${label(t?.to_phase)} after ${duration(t?.duration_ms)} · tool ${event.tool_name}`;
    case "agent_thinking":
      return `${label(t?.from_phase)} → ${label(t?.to_phase)} after ${duration(t?.duration_ms)} · ${event.reasoning}`;
    case "agent_error":
      return `${label(t?.from_phase)} → ${label(t?.to_phase)} · ${event.error}`;
    case "record_edited":
      return `fields: ${(event.fields ?? []).join(", ")}`;
    case "breaker_opened":
    case "breaker_half_open":
    case "breaker_closed":
      return `${event.breaker}: ${label(event.state)}, ${event.failures} failures`;
    default:
      if (t) return `${label(t.from_phase)} → ${label(t.to_phase)} after ${duration(t.duration_ms)}`;
      if (event.state) return `${label(event.from)} → ${label(event.state)} after ${duration(event.duration_ms)}${event.error ? ` · ${event.error}` : ""}`;
      return "";
  }
}

/** Mounts the page of execution `id` into `container`. */
export function executionView(container, session, id) {
  let alive = true;
  let record = null;
  let stream = null;
  const events = [];
  let heartbeats = 0;
  let received = 0;
  let showHeartbeats = false;

  const title = h("h1", {}, ["Execution"]);
  const subtitle = h("p", { class: "mono muted break" }, [id]);
  const status = h("span", { class: "badge" });
  const details = h("dl", { class: "details" });
  const outcome = h("section", { "aria-labelledby": "outcome-title" });
  const breaker = h("section", { "aria-labelledby": "breaker-title" }, [
    h("h2", { id: "breaker-title" }, ["Breaker"]),
    h("p", { class: "muted" }, ["Loading…"]),
  ]);
  const timelineBox = h("div", { class: "timeline-box" });
  const toggle = h("input", { type: "checkbox", id: "show-heartbeats" });
  const logStatus = h("p", { class: "muted", role: "status", "aria-live": "polite" });
  const logBody = h("tbody");
  const streamNote = h("p", { class: "notice", role: "status", hidden: true });

  replace(container, h("p", { class: "loading", "aria-busy": "true" }, ["Loading execution…"]));

  function renderDetails() {
    const r = record;
    setText(status, label(r.state));
    status.className = `badge big state-${r.state}`;
    container.dataset.state = r.state;
    container.dataset.phase = r.current_phase;
    const end = r.completed_at ? Date.parse(r.completed_at) : undefined;
    const items = [
      ["Agent", r.agent_name],
      ["User", r.user_id],
      ["Thread", r.thread_id],
      ["Tenant", r.tenant],
      ["Phase", label(r.current_phase)],
      ["Started", clock(r.started_at)],
      [r.completed_at ? "Duration" : "Age", duration(since(r.started_at, end))],
      ["Last heartbeat", `${clock(r.last_heartbeat)}${isAlive(r.state) ? ` (${duration(since(r.last_heartbeat))} ago)` : ""}`],
      ["Heartbeats", String(r.heartbeat_count ?? 0)],
      ["Timeout", `${r.timeout_seconds} s`],
    ];
    replace(details, items.flatMap(([k, v]) => [h("dt", {}, [k]), h("dd", { dataset: { field: k.toLowerCase() } }, [v])]));
  }

  function renderOutcome() {
    const r = record;
    const children = [h("h2", { id: "outcome-title" }, [r.error ? "Error" : "Result"])];
    if (r.error) children.push(h("pre", { class: "error-box" }, [r.error]));
    if (r.result !== null && r.result !== undefined) {
      if (r.error) children.push(h("h3", {}, ["Result"]));
      children.push(h("pre", { class: "result" }, [json(r.result)]));
    }
    if (!r.error && (r.result === null || r.result === undefined)) {
      children.push(h("p", { class: "empty" }, [isAlive(r.state) ? "Still running: no result yet." : "No result recorded."]));
    }
    replace(outcome, children);
  }

  function renderTimeline() {
    const width = Math.max(280, Math.floor(timelineBox.clientWidth || container.clientWidth || 600));
    replace(timelineBox, timeline(record, width));
  }

  async function loadBreaker() {
    try {
      const b = await api.executionBreaker(id);
      if (!alive) return;
      replace(breaker, [
        h("h2", { id: "breaker-title" }, ["Breaker"]),
        h("p", { class: `breaker breaker-${b.state}`, dataset: { state: b.state } }, [
          h("span", { class: `badge state-${b.state}` }, [b.state === "open" ? "OPEN" : label(b.state)]),
          ` ${b.failure_count} consecutive failure${b.failure_count === 1 ? "" : "s"}`,
          b.next_attempt_time ? ` · next trial at ${clock(b.next_attempt_time)}` : "",
        ]),
      ]);
    } catch (error) {
      if (alive && error.status !== 401) replace(breaker, [h("h2", { id: "breaker-title" }, ["Breaker"]), h("p", { class: "muted" }, [error.message])]);
    }
  }

  function logRow(event) {
    return h("tr", { dataset: { type: event.type } }, [
      h("td", { class: "num mono" }, [String(event.seq ?? "")]),
      h("td", { class: "mono" }, [clockMs(event.timestamp)]),
      h("td", {}, [h("span", { class: `event-type type-${event.type}` }, [event.type])]),
      h("td", { class: "break" }, [describeEvent(event)]),
    ]);
  }

  function renderLog() {
    const shown = events.filter((e) => showHeartbeats || e.type !== "heartbeat").slice(-LOG_LIMIT);
    replace(logBody, shown.map(logRow));
    describeLog();
  }

  function describeLog() {
    const beats = heartbeats;
    const hidden = !showHeartbeats && beats ? ` (${beats} heartbeat${beats === 1 ? "" : "s"} hidden)` : "";
    setText(logStatus, `${received} event${received === 1 ? "" : "s"}${hidden}.`);
  }

  function render() {
    renderDetails();
    renderOutcome();
    renderTimeline();
  }

  function onEvent(event) {
    events.push(event);
    received += 1;
    if (event.type === "heartbeat") heartbeats += 1;
    if (events.length > 10 * LOG_LIMIT) events.splice(0, events.length - LOG_LIMIT);
    if (showHeartbeats || event.type !== "heartbeat") {
      logBody.append(logRow(event));
      if (logBody.childElementCount > LOG_LIMIT) logBody.firstElementChild.remove();
    }
    describeLog();
    if (!record) return;
    const result = apply(record, event);
    if (result === "refetch") {
      api.execution(id).then((fresh) => {
        if (alive) {
          record = fresh;
          render();
        }
      }, () => {});
    } else if (result === "applied") {
      render();
    }
    if (event.type.startsWith("breaker_")) loadBreaker();
  }

  async function load() {
    try {
      record = await api.execution(id);
    } catch (error) {
      if (!alive) return;
      if (error.status === 404) {
        replace(container, [
          h("div", { class: "view-head" }, [h("h1", {}, ["Execution not found"])]),
          h("p", { class: "empty-state", dataset: { empty: "true" } }, [`There is no execution ${id} that this token may see.`]),
          h("p", {}, [h("a", { href: "#/executions" }, ["Back to executions"])]),
        ]);
      } else if (error.status !== 401) {
        replace(container, h("p", { class: "notice error", role: "alert" }, [`Could not load execution ${id}: ${error.message}`]));
      }
      return;
    }
    if (!alive) return;
    toggle.addEventListener("change", () => {
      showHeartbeats = toggle.checked;
      renderLog();
    });
    replace(container, [
      h("div", { class: "view-head" }, [h("p", {}, [h("a", { href: "#/executions" }, ["← Executions"])]), title, subtitle, status]),
      streamNote,
      h("div", { class: "columns" }, [
        h("section", { "aria-labelledby": "details-title" }, [h("h2", { id: "details-title" }, ["Details"]), details]),
        h("div", {}, [outcome, breaker]),
      ]),
      h("section", { "aria-labelledby": "timeline-title" }, [h("h2", { id: "timeline-title" }, ["Phase timeline"]), timelineBox]),
      h("section", { "aria-labelledby": "log-title" }, [
        h("h2", { id: "log-title" }, ["Event log"]),
        h("p", { class: "check" }, [toggle, h("label", { for: "show-heartbeats" }, [" Show heartbeats"])]),
        logStatus,
        h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Event log" }, [
          h("table", { class: "log" }, [
            h("thead", {}, [h("tr", {}, ["#", "Time", "Event", "Details"].map((t) => h("th", { scope: "col" }, [t])))]),
            logBody,
          ]),
        ]),
      ]),
    ]);
    render();
    container.dataset.ready = "true";
    loadBreaker();
    stream = new EventStream({
      params: { execution_id: id },
      since: 0,
      onEvent,
      onStatus: ({ state }) => {
        streamNote.hidden = state !== "disconnected";
        setText(streamNote, "Disconnected from the event stream — reconnecting; missed events will be replayed.");
      },
      onRefused: () => api.execution(id).catch(() => {}),
    });
  }

  const ticker = setInterval(() => {
    if (record && isAlive(record.state)) {
      renderDetails();
      renderTimeline();
    }
  }, 1000);
  const onResize = () => record && renderTimeline();
  window.addEventListener("resize", onResize);

  load();

  return {
    unmount() {
      alive = false;
      clearInterval(ticker);
      window.removeEventListener("resize", onResize);
      stream?.stop();
    },
  };
}
