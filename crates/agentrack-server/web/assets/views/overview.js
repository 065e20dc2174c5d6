// The overview: counts by state, rates, dead and timed-out executions per minute over the last
// hour, breakers (open ones first and highlighted), stuck executions and phase-duration
// percentiles. It re-reads /v1/overview when the event stream says something it shows changed
// (at most once a second), never on a timer.

import * as api from "../api.js";
import { h, replace, s } from "../dom.js";
import { count, duration, label, percent, syncClock } from "../format.js";
import { ALIVE, byPhaseOrder, refreshesOverview } from "../model.js";

const MIN_REFRESH_MS = 1000;

function shortId(id) {
  return id.length > 18 ? `${id.slice(0, 13)}…${id.slice(-4)}` : id;
}

function card(name, value, { tone, note } = {}) {
  return h("div", { class: `card${tone ? ` tone-${tone}` : ""}`, dataset: { card: name } }, [
    h("div", { class: "card-value" }, [value]),
    h("div", { class: "card-label" }, [label(name)]),
    note ? h("div", { class: "card-note" }, [note]) : null,
  ]);
}

function countsSection(data) {
  const c = data.counts;
  const alive = data.alive_by_state ?? {};
  return h("section", { "aria-labelledby": "counts-title" }, [
    h("h2", { id: "counts-title" }, ["Executions by state"]),
    h("div", { class: "cards" }, [
      card("active", count(c.active), { tone: "info" }),
      ...ALIVE.map((state) => card(state, count(alive[state] ?? 0))),
      card("completed", count(c.completed), { tone: "good" }),
      card("failed", count(c.failed), { tone: c.failed ? "bad" : null }),
      card("timeout", count(c.timeout), { tone: c.timeout ? "warn" : null }),
      card("dead", count(c.dead), { tone: c.dead ? "bad" : null }),
      card("cancelled", count(c.cancelled)),
      card("total", count(c.total)),
    ]),
    h("div", { class: "cards rates" }, [
      card("success rate", percent(data.success_rate), { tone: "good", note: "of finished executions" }),
      card("failure rate", percent(data.failure_rate), {
        tone: data.failure_rate > 0 ? "bad" : null,
        note: "failed, timed out or dead",
      }),
    ]),
  ]);
}

/** Stacked bars per minute: dead (dark) over timed out (amber). */
function incidentChart(incidents) {
  const dead = incidents?.dead ?? [];
  const timeout = incidents?.timeout ?? [];
  const minutes = Math.max(dead.length, timeout.length, 60);
  const totals = Array.from({ length: minutes }, (_, i) => (dead[i] ?? 0) + (timeout[i] ?? 0));
  const peak = Math.max(1, ...totals);
  const sum = totals.reduce((a, b) => a + b, 0);
  const width = 600;
  const height = 110;
  const top = 6;
  const bottom = 2;
  const barWidth = width / minutes;
  const scale = (n) => ((height - top - bottom) * n) / peak;
  const bars = [];
  for (let i = 0; i < minutes; i += 1) {
    const x = i * barWidth + 1;
    const w = Math.max(1, barWidth - 2);
    const d = scale(dead[i] ?? 0);
    const t = scale(timeout[i] ?? 0);
    const base = height - bottom;
    const title = `${minutes - i - 1} min ago: ${dead[i] ?? 0} dead, ${timeout[i] ?? 0} timed out`;
    if (t > 0) bars.push(s("rect", { x, y: base - t, width: w, height: t, class: "bar-timeout" }, [s("title", {}, [title])]));
    if (d > 0) bars.push(s("rect", { x, y: base - t - d, width: w, height: d, class: "bar-dead" }, [s("title", {}, [title])]));
  }
  const svg = s(
    "svg",
    {
      class: "chart",
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-label": `Dead and timed-out executions per minute over the last hour: ${sum} in total, at most ${sum ? peak : 0} in one minute.`,
    },
    [
      s("line", { x1: 0, x2: width, y1: height - bottom, y2: height - bottom, class: "axis" }),
      ...bars,
    ],
  );
  return h("section", { "aria-labelledby": "incidents-title" }, [
    h("h2", { id: "incidents-title" }, ["Dead and timed out, last hour"]),
    h("p", { class: "legend" }, [
      h("span", { class: "swatch swatch-dead", "aria-hidden": "true" }),
      ` dead ${count(dead.reduce((a, b) => a + b, 0))}`,
      h("span", { class: "swatch swatch-timeout", "aria-hidden": "true" }),
      ` timed out ${count(timeout.reduce((a, b) => a + b, 0))}`,
      h("span", { class: "peak" }, [` · peak ${sum ? peak : 0} a minute`]),
    ]),
    svg,
    // Axis labels in HTML, so they stay readable however narrow the chart is drawn.
    h("div", { class: "axis-labels", "aria-hidden": "true" }, [h("span", {}, ["−60 min"]), h("span", {}, ["−30 min"]), h("span", {}, ["now"])]),
  ]);
}

function breakersSection(data) {
  const named = (data.breakers ?? []).map((b) => ({
    key: `${b.tenant}/${b.name}`,
    name: b.name,
    where: data.scope.role === "admin" ? `tenant ${b.tenant}` : "shared",
    state: b.state,
    failures: b.failure_count,
    next: b.next_attempt_time,
  }));
  const own = (data.execution_breakers ?? []).map((b) => ({
    key: b.execution_id,
    name: b.agent_name,
    where: "execution",
    link: b.execution_id,
    state: b.state,
    failures: b.failure_count,
    next: b.next_attempt_time,
  }));
  const rank = { open: 0, half_open: 1, closed: 2 };
  const all = [...named, ...own].sort((a, b) => (rank[a.state] ?? 3) - (rank[b.state] ?? 3) || a.key.localeCompare(b.key));
  const open = all.filter((b) => b.state !== "closed").length;
  const body =
    all.length === 0
      ? h("p", { class: "empty" }, [
          data.scope.role === "viewer"
            ? "No breaker of your executions is open."
            : "No circuit breakers yet: they appear when agents make protected calls.",
        ])
      : h("ul", { class: "breakers" }, all.map((b) =>
          h("li", { class: `breaker breaker-${b.state}`, dataset: { breaker: b.key, state: b.state } }, [
            h("span", { class: `badge state-${b.state}` }, [b.state === "open" ? "OPEN" : label(b.state)]),
            " ",
            b.link ? h("a", { href: `#/executions/${encodeURIComponent(b.link)}` }, [b.name]) : h("strong", {}, [b.name]),
            h("span", { class: "muted" }, [` ${b.where} · ${b.failures} failures`]),
          ]),
        ));
  return h("section", { "aria-labelledby": "breakers-title", class: open ? "alarm" : null }, [
    h("h2", { id: "breakers-title" }, [open ? `Breakers — ${open} not closed` : "Breakers"]),
    body,
  ]);
}

function stuckSection(data) {
  const stuck = data.stuck ?? [];
  return h("section", { "aria-labelledby": "stuck-title" }, [
    h("h2", { id: "stuck-title" }, ["Stuck (no heartbeat for over half the timeout)"]),
    stuck.length === 0
      ? h("p", { class: "empty" }, ["Nothing stuck: every alive execution heartbeats in time."])
      : h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Stuck executions" }, [
          h("table", {}, [
            h("thead", {}, [h("tr", {}, ["Execution", "Agent", "User", "Phase", "Silent for"].map((t) => h("th", { scope: "col" }, [t])))]),
            h("tbody", {}, stuck.map((e) =>
              h("tr", {}, [
                h("td", {}, [h("a", { href: `#/executions/${encodeURIComponent(e.execution_id)}`, class: "mono", title: e.execution_id }, [shortId(e.execution_id)])]),
                h("td", {}, [e.agent_name]),
                h("td", {}, [e.user_id]),
                h("td", {}, [label(e.current_phase)]),
                h("td", { class: "num" }, [duration(e.seconds_since_heartbeat * 1000)]),
              ]),
            )),
          ]),
        ]),
  ]);
}

function phasesSection(data) {
  const phases = Object.entries(data.phase_durations_ms ?? {}).sort(([a], [b]) => byPhaseOrder(a, b));
  const longest = Math.max(1, ...phases.map(([, p]) => p.p99));
  return h("section", { "aria-labelledby": "phases-title" }, [
    h("h2", { id: "phases-title" }, ["Time per phase"]),
    phases.length === 0
      ? h("p", { class: "empty" }, ["No phase has finished yet."])
      : h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Phase durations" }, [
          h("table", { class: "phases" }, [
            h("thead", {}, [h("tr", {}, ["Phase", "Samples", "p50", "p90", "p99", "Max", "p50 – p99"].map((t) => h("th", { scope: "col" }, [t])))]),
            h("tbody", {}, phases.map(([phase, p]) =>
              h("tr", { dataset: { phase } }, [
                h("th", { scope: "row" }, [label(phase)]),
                h("td", { class: "num" }, [count(p.count)]),
                h("td", { class: "num" }, [duration(p.p50)]),
                h("td", { class: "num" }, [duration(p.p90)]),
                h("td", { class: "num" }, [duration(p.p99)]),
                h("td", { class: "num" }, [duration(p.max)]),
                h("td", { class: "spark" }, [
                  s("svg", { viewBox: "0 0 100 10", preserveAspectRatio: "none", "aria-hidden": "true" }, [
                    s("rect", { x: 0, y: 3, width: (100 * p.p99) / longest, height: 4, class: "range" }),
                    s("rect", { x: Math.max(0, (100 * p.p50) / longest - 1), y: 0, width: 2, height: 10, class: "median" }),
                  ]),
                ]),
              ]),
            )),
          ]),
        ]),
  ]);
}

function render(container, data) {
  const scopeText =
    data.scope.role === "admin"
      ? "All tenants."
      : data.scope.user_id
        ? `Tenant ${data.scope.tenant}, user ${data.scope.user_id}.`
        : `Tenant ${data.scope.tenant}.`;
  const header = h("div", { class: "view-head" }, [
    h("h1", {}, ["Overview"]),
    h("p", { class: "muted" }, [scopeText]),
  ]);
  if (data.counts.total === 0) {
    replace(container, [
      header,
      h("div", { class: "empty-state", dataset: { empty: "true" } }, [
        h("h2", {}, ["No executions yet"]),
        h("p", {}, ["Executions that agents report to this server appear here as they happen."]),
      ]),
      breakersSection(data),
    ]);
  } else {
    replace(container, [
      header,
      countsSection(data),
      h("div", { class: "columns" }, [incidentChart(data.incidents), breakersSection(data)]),
      stuckSection(data),
      phasesSection(data),
    ]);
  }
  container.dataset.ready = "true";
}

/** Mounts the overview into `container`. */
export function overviewView(container, session, prefetched) {
  let alive = true;
  let pending = false;
  let inFlight = false;
  let lastRead = 0;
  let timer = null;
  let first = true;

  const apply = (data) => {
    if (!alive) return;
    syncClock(data.generated_at);
    render(container, data);
    if (first) {
      first = false;
      performance.mark("overview-rendered");
    }
  };

  const read = async () => {
    inFlight = true;
    pending = false;
    lastRead = performance.now();
    try {
      // Numbers from before the last event seen would stay wrong until the next event.
      apply(await api.overview({ since: session.stream?.cursor }));
    } catch (error) {
      if (alive && error.status !== 401) {
        replace(container, h("p", { class: "notice error", role: "alert" }, [`Could not load the overview: ${error.message}`]));
      }
    } finally {
      inFlight = false;
      if (pending && alive) schedule();
    }
  };

  function schedule() {
    pending = true;
    if (inFlight || timer) return;
    const wait = Math.max(0, MIN_REFRESH_MS - (performance.now() - lastRead));
    timer = setTimeout(() => {
      timer = null;
      if (alive) read();
    }, wait);
  }

  replace(container, h("p", { class: "loading", "aria-busy": "true" }, ["Loading overview…"]));
  if (prefetched) {
    lastRead = performance.now();
    apply(prefetched);
  } else {
    read();
  }

  return {
    onEvent(event) {
      if (refreshesOverview(event)) schedule();
    },
    onConnection(state) {
      // Whatever happened while away is replayed by the stream; re-read once it is back.
      if (state === "live" && !first) schedule();
    },
    unmount() {
      alive = false;
      clearTimeout(timer);
    },
  };
}
