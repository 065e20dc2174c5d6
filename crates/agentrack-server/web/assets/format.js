// Formatting of times, durations and numbers. Durations are computed against the server's clock:
// `serverNow()` corrects the browser's clock by the offset seen on the latest overview read.

let clockOffsetMs = 0;

/** Records the server's time as of a response, to correct the browser's clock. */
export function syncClock(serverIso) {
  const server = Date.parse(serverIso);
  if (!Number.isNaN(server)) clockOffsetMs = server - Date.now();
}

/** Now, in the server's clock (ms since the epoch). */
export function serverNow() {
  return Date.now() + clockOffsetMs;
}

/** "350 ms", "4.2 s", "3 m 05 s", "2 h 01 m", "3 d 4 h". */
export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  const value = Math.max(0, ms);
  if (value < 1000) return `${Math.round(value)} ms`;
  const seconds = value / 1000;
  if (seconds < 60) return `${seconds < 10 ? seconds.toFixed(1) : Math.floor(seconds)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} m ${String(Math.floor(seconds % 60)).padStart(2, "0")} s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${String(minutes % 60).padStart(2, "0")} m`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

/** Milliseconds from an ISO time to `to` (default: now on the server's clock). */
export function since(iso, to) {
  const at = Date.parse(iso);
  if (Number.isNaN(at)) return null;
  return (to ?? serverNow()) - at;
}

/** A local date-time with seconds. */
export function clock(iso) {
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return "—";
  return at.toLocaleString(undefined, { hour12: false });
}

/** A local time with milliseconds, for event logs. */
export function clockMs(iso) {
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return "—";
  const time = at.toLocaleTimeString(undefined, { hour12: false });
  return `${time}.${String(at.getMilliseconds()).padStart(3, "0")}`;
}

/** "12.5 %". */
export function percent(share) {
  if (typeof share !== "number" || Number.isNaN(share)) return "—";
  return `${(share * 100).toFixed(share > 0 && share < 0.1 ? 1 : 0)} %`;
}

/** "12,345". */
export function count(n) {
  return typeof n === "number" ? n.toLocaleString("en") : "—";
}

/** A phase or state name for people: "llm_interaction" → "llm interaction". */
export function label(name) {
  return String(name ?? "").replaceAll("_", " ");
}

/** Any JSON value as short text. */
export function json(value) {
  if (value === undefined) return "";
  if (typeof value === "string") return value;
  return JSON.stringify(value, null, 2);
}
