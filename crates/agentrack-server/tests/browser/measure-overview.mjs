// Measures how long the dashboard's overview takes to render with 10,000 executions in the
// store (issue 5, acceptance 3). Not a test: it prints figures and asserts nothing.
//
//   scripts/browser-test --measure        (or: node measure-overview.mjs [count])
//
// It seeds a fresh `agentrack serve` through the API (every execution created, started and
// heartbeated; nine in ten taken through two phases and completed or failed; the rest left
// running), then loads the overview in headless Chromium at 1280×800 several times and reports
// the time from navigation start to the overview being rendered (the `overview-rendered`
// performance mark the page sets once it has drawn the numbers), plus the /v1/overview read
// alone, and the first page of the executions table.

import { Server, launchBrowser } from "./harness.mjs";

const COUNT = Number(process.argv[2] ?? 10_000);
const CONCURRENCY = 32;
const LOADS = 7;

async function pool(items, worker) {
  let next = 0;
  const run = async () => {
    while (next < items.length) {
      const index = next++;
      await worker(items[index], index);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, run));
}

function stats(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.round((sorted.length - 1) * q))];
  return { min: sorted[0], median: at(0.5), max: sorted.at(-1) };
}

const ms = (v) => `${v.toFixed(0)} ms`;

const server = await new Server().start();
const browser = await launchBrowser();
try {
  const agent = await server.token("agent", "acme");
  const seeding = performance.now();
  await pool(Array.from({ length: COUNT }, (_, i) => i), async (i) => {
    const id = await server.create(agent, `agent-${i % 7}`, `thread-${i % 500}`, `user-${i % 50}`, 3600);
    await server.ok(`/v1/executions/${id}/start`, agent);
    await server.ok(`/v1/executions/${id}/heartbeat`, agent);
    if (i % 10 === 9) return; // left running
    await server.ok(`/v1/executions/${id}/phase`, agent, { phase: "websocket_setup" });
    await server.ok(`/v1/executions/${id}/phase`, agent, { phase: "context_validation" });
    const failed = i % 10 === 8;
    await server.ok(`/v1/executions/${id}/state`, agent, failed ? { state: "failed", error: "boom" } : { state: "completed", result: i });
  });
  const seeded = performance.now() - seeding;
  const overview = (await server.call("GET", "/v1/overview", agent)).body;
  console.log(`seeded ${overview.counts.total} executions in ${(seeded / 1000).toFixed(1)} s ` +
    `(${overview.counts.completed} completed, ${overview.counts.failed} failed, ${overview.counts.active} active)`);

  const api = [];
  for (let i = 0; i < LOADS; i += 1) {
    const start = performance.now();
    await server.call("GET", "/v1/overview", agent);
    api.push(performance.now() - start);
  }

  const measure = async (hash, marker) => {
    const times = [];
    for (let i = 0; i < LOADS; i += 1) {
      const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
      await context.addInitScript((token) => sessionStorage.setItem("agentrack.token", token), agent);
      const page = await context.newPage();
      await page.goto(`${server.url}/${hash}`);
      await page.locator(".view[data-ready='true']").waitFor();
      times.push(await page.evaluate(marker));
      await context.close();
    }
    return times;
  };
  const overviewTimes = await measure("#/", () => performance.getEntriesByName("overview-rendered")[0].startTime);
  const tableTimes = await measure("#/executions", () => performance.now());

  const o = stats(overviewTimes);
  const a = stats(api);
  const t = stats(tableTimes);
  console.log(`GET /v1/overview over ${COUNT} executions: median ${ms(a.median)} (min ${ms(a.min)}, max ${ms(a.max)})`);
  console.log(`overview rendered after navigation start: median ${ms(o.median)} (min ${ms(o.min)}, max ${ms(o.max)}) over ${LOADS} loads`);
  console.log(`executions table (first page of 50) ready: median ${ms(t.median)} (min ${ms(t.min)}, max ${ms(t.max)})`);
} finally {
  await browser.close();
  await server.dispose();
}
