// The dashboard shell: session, routing, the shared live event stream and the connection
// indicator. Views live in ./views/, one module each; a view is mounted into <main> and gets the
// events of the shared stream (the execution page opens its own, narrowed to one execution).
//
// Routes (in the URL fragment, so the server only ever serves one page):
//   #/                      overview
//   #/executions?filters    the live table
//   #/executions/<id>       one execution
//   #/cluster               nodes, shards and shard moves (admin)

import * as api from "./api.js";
import { h, replace } from "./dom.js";
import { syncClock } from "./format.js";
import { EventStream } from "./stream.js";
import { signIn } from "./views/signin.js";
import { overviewView } from "./views/overview.js";
import { executionsView } from "./views/executions.js";
import { executionView } from "./views/execution.js";
import { clusterView } from "./views/cluster.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const search = document.getElementById("search");
const connection = document.getElementById("connection");
const who = document.getElementById("who");
const signout = document.getElementById("signout");

/** What every view may use. */
const session = {
  scope: null,
  heartbeatTimeoutSeconds: 10,
  stream: null,
  view: null,
  // The latest connection state, so a view can show "disconnected" where it matters.
  connection: "connecting",
};

function showChrome(signedIn) {
  nav.hidden = !signedIn;
  search.hidden = !signedIn;
  connection.hidden = !signedIn;
  who.hidden = !signedIn;
  signout.hidden = !signedIn;
}

function setConnection({ state, retryInMs }) {
  session.connection = state;
  connection.dataset.state = state;
  const text = {
    connecting: "Connecting…",
    live: "Live",
    disconnected: `Disconnected — reconnecting in ${Math.max(1, Math.round((retryInMs ?? 0) / 1000))} s`,
    stopped: "Offline",
  }[state];
  connection.textContent = text ?? state;
  session.view?.onConnection?.(state);
}

function stopStream() {
  session.stream?.stop();
  session.stream = null;
}

function startStream(since) {
  stopStream();
  session.stream = new EventStream({
    since,
    onEvent: (event) => session.view?.onEvent?.(event),
    onStatus: setConnection,
    // A refused handshake and a network error look alike to a browser: ask over HTTP, where a
    // 401 signs the operator out.
    onRefused: () => api.overview().catch(() => {}),
  });
}

function unmountView() {
  session.view?.unmount?.();
  session.view = null;
}

function signOut(message) {
  api.setToken(null);
  stopStream();
  unmountView();
  session.scope = null;
  showChrome(false);
  // The address stays as it is: after signing in, the page it names opens.
  replace(main, signIn({ message, onToken: start }));
}

/** Signs in with `token` (after checking it), or resumes a session. */
async function start(token) {
  const first = token !== undefined;
  let overview;
  try {
    overview = await api.overview(first ? { tokenOverride: token } : undefined);
  } catch (error) {
    if (error.status === 401) {
      if (first) throw error;
      signOut("Your token was refused: it is unknown or has been revoked. Sign in again.");
      return;
    }
    if (first) throw error;
    replace(main, h("p", { class: "notice error", role: "alert" }, [`The server cannot be reached: ${error.message}`]));
    return;
  }
  if (first) api.setToken(token);
  syncClock(overview.generated_at);
  session.scope = overview.scope;
  session.heartbeatTimeoutSeconds = overview.heartbeat_timeout_seconds ?? 10;
  const scope = overview.scope;
  who.textContent = [scope.role, scope.tenant ?? "all tenants", scope.user_id ? `user ${scope.user_id}` : null]
    .filter(Boolean)
    .join(" · ");
  showChrome(true);
  startStream(overview.event_cursor);
  route(overview);
}

function parseRoute() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, queryText] = hash.split("?");
  const params = Object.fromEntries(new URLSearchParams(queryText ?? ""));
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "executions" && parts[1]) return { name: "execution", id: parts[1] };
  if (parts[0] === "executions") return { name: "executions", params };
  if (parts[0] === "cluster") return { name: "cluster" };
  return { name: "overview" };
}

let routed = false;

function route(prefetched) {
  if (!session.scope) return;
  unmountView();
  const where = parseRoute();
  for (const link of nav.querySelectorAll("a")) {
    const current = link.dataset.nav === (where.name === "execution" ? "executions" : where.name);
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const container = h("div", { class: "view" });
  replace(main, container);
  if (where.name === "execution") session.view = executionView(container, session, where.id);
  else if (where.name === "executions") session.view = executionsView(container, session, where.params);
  else if (where.name === "cluster") session.view = clusterView(container, session);
  else session.view = overviewView(container, session, prefetched);
  session.view?.onConnection?.(session.connection);
  // Move focus to the new page for keyboard and screen-reader users (not on the first load).
  if (routed) main.focus({ preventScroll: false });
  routed = true;
}

search.addEventListener("submit", (event) => {
  event.preventDefault();
  const input = search.elements.namedItem("id");
  const id = input.value.trim();
  if (!id) return;
  input.value = "";
  location.hash = `#/executions/${encodeURIComponent(id)}`;
});

signout.addEventListener("click", () => signOut("Signed out."));
window.addEventListener("hashchange", () => route());
api.onUnauthorised(() => {
  if (session.scope) signOut("Your token was refused: it is unknown or has been revoked. Sign in again.");
});

if (api.token()) start();
else signOut();
