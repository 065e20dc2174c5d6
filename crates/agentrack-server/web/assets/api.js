// The HTTP client: bearer token from the session, JSON in and out, API errors as ApiError.
// A 401 anywhere signs the operator out (the token was revoked or is wrong).

const TOKEN_KEY = "agentrack.token";

/** An error answer from the API (or the network). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The token of this browser tab's session, or null. */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Keeps `value` for this tab's session only (never localStorage, never a cookie). */
export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

const unauthorisedListeners = new Set();

/** Calls `listener` when the server refuses the token. */
export function onUnauthorised(listener) {
  unauthorisedListeners.add(listener);
}

async function request(method, path, { tokenOverride, signal } = {}) {
  const bearer = tokenOverride ?? token();
  let response;
  try {
    response = await fetch(path, {
      method,
      signal,
      headers: bearer ? { Authorization: `Bearer ${bearer}`, Accept: "application/json" } : {},
      cache: "no-store",
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network", "The server cannot be reached.");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const code = body?.error?.code ?? "http_error";
    const message = body?.error?.message ?? `HTTP ${response.status}`;
    const error = new ApiError(response.status, code, message);
    if (response.status === 401 && tokenOverride === undefined) {
      for (const listener of unauthorisedListeners) listener(error);
    }
    throw error;
  }
  return body;
}

/** A single-use ticket to open the event stream with (`?ticket=`): tokens stay out of URLs. */
export function eventTicket() {
  return request("POST", "/v1/events/ticket");
}

/** GET a JSON resource. */
export function get(path, options) {
  return request("GET", path, options);
}

/** A query string from an object, skipping empty values. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/**
 * The dashboard overview for the signed-in scope; with `since` (an event cursor), numbers that
 * reflect at least every event up to it.
 */
export function overview({ since, ...options } = {}) {
  return get(`/v1/overview${query({ since })}`, options);
}

/** A page of executions. */
export function executions(filters, cursor, limit = 50) {
  return get(`/v1/executions${query({ ...filters, cursor, limit })}`);
}

/** One execution. */
export function execution(id) {
  return get(`/v1/executions/${encodeURIComponent(id)}`);
}

/** One execution's own breaker. */
export function executionBreaker(id) {
  return get(`/v1/executions/${encodeURIComponent(id)}/breaker`);
}

/** The cluster: nodes, shards, leases and recent moves (admin only). */
export function cluster() {
  return get("/v1/cluster");
}
