// The live event stream: one WebSocket to /v1/events that reconnects by itself and resumes with
// `since=` the cursor of the last event it received, so nothing is missed while it was away
// (the server replays stored events first, then goes live, without gaps or duplicates — on any
// node of a cluster).
//
// Browsers cannot set an Authorization header on a WebSocket, and a token in a URL ends up in
// proxies' access logs. So each connection first gets a single-use, short-lived ticket
// (POST /v1/events/ticket, with the token in a header) and passes that in the query.

import { eventTicket } from "./api.js";

const MIN_DELAY_MS = 250;
const MAX_DELAY_MS = 8000;

/**
 * A resumable event stream.
 *
 * - `params`: extra query parameters (thread_id, execution_id).
 * - `since`: the cursor to resume after (from the overview's `event_cursor`).
 * - `onEvent(event)`: every event, in global order, once.
 * - `onStatus({state, retryInMs})`: "connecting", "live", "disconnected", "stopped".
 * - `onRefused()`: the connection failed before opening; the caller may check whether the token
 *   is still valid (a refused handshake looks the same as a network error to a browser).
 */
export class EventStream {
  constructor({ params = {}, since = "0", onEvent, onStatus = () => {}, onRefused = () => {} }) {
    this.params = params;
    this.cursor = since;
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.onRefused = onRefused;
    this.delay = MIN_DELAY_MS;
    this.socket = null;
    this.timer = null;
    this.stopped = false;
    this.connect();
  }

  url(ticket) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const search = new URLSearchParams({ ...this.params, since: String(this.cursor), ticket });
    return `${scheme}//${location.host}/v1/events?${search}`;
  }

  async connect() {
    if (this.stopped) return;
    this.onStatus({ state: "connecting" });
    let ticket;
    try {
      ({ ticket } = await eventTicket());
    } catch {
      // A refused token signs the page out (api.js); anything else is retried.
      if (!this.stopped) this.retry();
      return;
    }
    if (this.stopped) return;
    let opened = false;
    const socket = new WebSocket(this.url(ticket));
    this.socket = socket;
    socket.addEventListener("open", () => {
      opened = true;
      this.delay = MIN_DELAY_MS;
      this.onStatus({ state: "live" });
    });
    socket.addEventListener("message", (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      if (typeof event.cursor !== "string" || event.type === "snapshot") return;
      this.cursor = event.cursor;
      this.onEvent(event);
    });
    socket.addEventListener("close", () => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.stopped) return;
      if (!opened) this.onRefused();
      this.retry();
    });
  }

  /** Reconnects after a jittered, growing delay. */
  retry() {
    const wait = Math.round(this.delay * (0.75 + Math.random() * 0.5));
    this.delay = Math.min(this.delay * 2, MAX_DELAY_MS);
    this.onStatus({ state: "disconnected", retryInMs: wait });
    this.timer = setTimeout(() => this.connect(), wait);
  }

  /** Closes the stream for good. */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close(1000, "done");
    this.onStatus({ state: "stopped" });
  }
}
