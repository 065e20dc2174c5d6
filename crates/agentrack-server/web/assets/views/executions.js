// The live table of executions: one page (50 rows) of /v1/executions at a time, with filters,
// kept current by the shared event stream — rows change in place, new executions that match the
// filters slide in at the top of the first page, and rows that stop matching leave. Ages and
// heartbeat gaps tick locally once a second (no request).

import * as api from "../api.js";
import { h, replace, setText } from "../dom.js";
import { duration, label, since } from "../format.js";
import { ALIVE, STATES, TERMINAL, apply, isAlive, recordFromCreated } from "../model.js";

const PAGE_SIZE = 50;
const COLUMNS = ["Execution", "Agent", "User", "Thread", "State", "Phase", "Age", "Since heartbeat", "Heartbeats"];
const STATE_CHOICES = [
  ["", "Any state"],
  [ALIVE.join(","), "Alive"],
  [TERMINAL.join(","), "Finished"],
  ...STATES.map((state) => [state, label(state)]),
];

function shortId(id) {
  return id.length > 18 ? `${id.slice(0, 13)}…${id.slice(-4)}` : id;
}

function matches(record, filters) {
  if (filters.agent_name && record.agent_name !== filters.agent_name) return false;
  if (filters.user_id && record.user_id !== filters.user_id) return false;
  if (filters.thread_id && record.thread_id !== filters.thread_id) return false;
  if (filters.state && !filters.state.split(",").includes(record.state)) return false;
  return true;
}

/** Mounts the table into `container`; `params` are the filters from the URL. */
export function executionsView(container, session, params) {
  const filters = {
    state: params.state ?? "",
    agent_name: params.agent_name ?? "",
    user_id: session.scope.role === "viewer" ? "" : (params.user_id ?? ""),
    thread_id: params.thread_id ?? "",
  };
  let alive = true;
  let cursors = [null]; // the cursor of each page seen so far; the last is the current page's
  let nextCursor = null;
  let rows = new Map(); // execution_id → {record, tr, cells}
  let loading = null;
  // Events that arrive while a page is being read; applied once it is in (the `seq` guard drops
  // what the page already reflects), so nothing that happens during the read is lost.
  let held = [];

  // Filters.
  const field = (name, text, placeholder) => {
    const input = h("input", { id: `filter-${name}`, name, type: "text", value: filters[name], placeholder, autocomplete: "off", spellcheck: "false" });
    return h("div", { class: "field" }, [h("label", { for: `filter-${name}` }, [text]), input]);
  };
  const stateSelect = h(
    "select",
    { id: "filter-state", name: "state" },
    STATE_CHOICES.map(([value, text]) => h("option", { value, selected: value === filters.state }, [text])),
  );
  const form = h("form", { class: "filters", "aria-label": "Filter executions" }, [
    h("div", { class: "field" }, [h("label", { for: "filter-state" }, ["State"]), stateSelect]),
    field("agent_name", "Agent", "any agent"),
    session.scope.role === "viewer" ? null : field("user_id", "User", "any user"),
    field("thread_id", "Thread", "any thread"),
    h("div", { class: "field actions" }, [
      h("button", { type: "submit" }, ["Apply"]),
      h("button", { type: "button", class: "secondary", id: "filter-clear" }, ["Clear"]),
    ]),
  ]);
  const status = h("p", { class: "table-status", role: "status", "aria-live": "polite" });
  const tbody = h("tbody");
  const table = h("table", { class: "executions", "aria-describedby": "executions-status" }, [
    h("thead", {}, [h("tr", {}, COLUMNS.map((c) => h("th", { scope: "col" }, [c])))]),
    tbody,
  ]);
  status.id = "executions-status";
  const wrap = h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Executions" }, [table]);
  const newer = h("button", { type: "button", class: "secondary", id: "page-newer" }, ["← Newer"]);
  const older = h("button", { type: "button", class: "secondary", id: "page-older" }, ["Older →"]);
  const pageLabel = h("span", { class: "muted" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages" }, [newer, pageLabel, older]);

  replace(container, [
    h("div", { class: "view-head" }, [
      h("h1", {}, ["Executions"]),
      h("p", { class: "muted" }, ["Newest first, updated live."]),
    ]),
    form,
    status,
    wrap,
    pager,
  ]);

  function readForm() {
    const data = new FormData(form);
    for (const key of Object.keys(filters)) {
      if (data.has(key)) filters[key] = String(data.get(key)).trim();
    }
  }

  function writeUrl() {
    const text = api.query(filters);
    const target = `#/executions${text}`;
    if (location.hash !== target) history.replaceState(null, "", target);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    readForm();
    writeUrl();
    cursors = [null];
    load();
  });
  stateSelect.addEventListener("change", () => form.requestSubmit());
  form.querySelector("#filter-clear").addEventListener("click", () => {
    for (const input of form.querySelectorAll("input")) input.value = "";
    stateSelect.value = "";
    form.requestSubmit();
  });
  newer.addEventListener("click", () => {
    if (cursors.length > 1) {
      cursors.pop();
      load();
    }
  });
  older.addEventListener("click", () => {
    if (nextCursor) {
      cursors.push(nextCursor);
      load();
    }
  });

  function makeRow(record) {
    const link = h("a", { href: `#/executions/${encodeURIComponent(record.execution_id)}`, class: "mono", title: record.execution_id }, [shortId(record.execution_id)]);
    const cells = {
      agent: h("td"),
      user: h("td"),
      thread: h("td"),
      state: h("span", { class: "badge" }),
      phase: h("td"),
      age: h("td", { class: "num" }),
      heartbeat: h("td", { class: "num" }),
      beats: h("td", { class: "num" }),
    };
    const tr = h("tr", { dataset: { id: record.execution_id } }, [
      h("td", {}, [link]),
      cells.agent,
      cells.user,
      cells.thread,
      h("td", {}, [cells.state]),
      cells.phase,
      cells.age,
      cells.heartbeat,
      cells.beats,
    ]);
    const row = { record, tr, cells };
    paint(row);
    return row;
  }

  function paint(row) {
    const { record, cells, tr } = row;
    setText(cells.agent, record.agent_name);
    setText(cells.user, record.user_id);
    setText(cells.thread, record.thread_id);
    setText(cells.state, label(record.state));
    cells.state.className = `badge state-${record.state}`;
    tr.dataset.state = record.state;
    tr.dataset.phase = record.current_phase;
    setText(cells.phase, label(record.current_phase));
    setText(cells.beats, record.heartbeat_count ?? 0);
    tick(row);
  }

  function tick(row) {
    const { record, cells, tr } = row;
    const end = record.completed_at ? Date.parse(record.completed_at) : undefined;
    setText(cells.age, duration(since(record.started_at, end)));
    if (isAlive(record.state)) {
      const silent = since(record.last_heartbeat);
      setText(cells.heartbeat, duration(silent));
      const stale = silent !== null && silent > (session.heartbeatTimeoutSeconds * 1000) / 2;
      tr.classList.toggle("stale", stale);
    } else {
      setText(cells.heartbeat, "—");
      tr.classList.remove("stale");
    }
  }

  function describe() {
    const page = cursors.length;
    setText(pageLabel, `Page ${page}`);
    newer.disabled = page <= 1;
    older.disabled = !nextCursor;
    if (rows.size === 0) {
      const filtered = Object.values(filters).some(Boolean);
      setText(status, filtered ? "No executions match these filters." : "No executions yet: they appear here as agents report them.");
      status.dataset.empty = "true";
      wrap.hidden = true;
    } else {
      setText(status, `${rows.size} execution${rows.size === 1 ? "" : "s"} on this page.`);
      delete status.dataset.empty;
      wrap.hidden = false;
    }
  }

  async function load() {
    const ticket = {};
    loading = ticket;
    container.setAttribute("aria-busy", "true");
    setText(status, "Loading…");
    try {
      const page = await api.executions(filters, cursors[cursors.length - 1], PAGE_SIZE);
      if (!alive || loading !== ticket) return;
      nextCursor = page.next_cursor;
      rows = new Map();
      for (const record of page.executions) rows.set(record.execution_id, makeRow(record));
      replace(tbody, [...rows.values()].map((row) => row.tr));
      loading = null;
      const replay = held;
      held = [];
      for (const event of replay) handle(event);
      describe();
      container.dataset.ready = "true";
    } catch (error) {
      if (!alive || loading !== ticket) return;
      held = [];
      if (error.status !== 401) setText(status, `Could not load executions: ${error.message}`);
    } finally {
      if (loading === ticket) {
        loading = null;
        container.removeAttribute("aria-busy");
      }
    }
  }

  async function refetch(id) {
    try {
      const record = await api.execution(id);
      const row = rows.get(id);
      if (row && alive) {
        row.record = record;
        paint(row);
      }
    } catch {
      // Gone from the caller's view: leave the row as it was.
    }
  }

  const ticker = setInterval(() => {
    for (const row of rows.values()) tick(row);
  }, 1000);

  load();

  function handle(event) {
    if (!event.execution_id) return;
    if (loading) {
      held.push(event);
      return;
    }
    const row = rows.get(event.execution_id);
    if (row) {
      const outcome = apply(row.record, event);
      if (outcome === "refetch") refetch(event.execution_id);
      if (!matches(row.record, filters)) {
        row.tr.remove();
        rows.delete(event.execution_id);
        describe();
      } else if (outcome !== "stale") {
        paint(row);
      }
      return;
    }
    // A new execution belongs at the top of the first page, if it matches.
    if (event.type !== "execution_created" || cursors.length > 1) return;
    const record = recordFromCreated(event);
    if (!matches(record, filters)) return;
    const fresh = makeRow(record);
    rows = new Map([[record.execution_id, fresh], ...rows]);
    tbody.prepend(fresh.tr);
    if (rows.size > PAGE_SIZE) {
      // The oldest row moves to the next page, which now starts after the new last row.
      const ids = [...rows.keys()];
      for (const id of ids.slice(PAGE_SIZE)) {
        rows.get(id).tr.remove();
        rows.delete(id);
      }
      nextCursor = ids[PAGE_SIZE - 1];
    }
    describe();
  }

  return {
    onEvent: handle,
    unmount() {
      alive = false;
      clearInterval(ticker);
    },
  };
}
