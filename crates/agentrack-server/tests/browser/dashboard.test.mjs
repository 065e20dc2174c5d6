// The dashboard in a real browser against the real server: sign-in, the golden path appearing
// live and ending `completed`, isolation between users, the overview, resuming after the server
// went away, keyboard reachability, contrast, and a 390-wide phone viewport. Screenshots go to
// target/browser-test/ (or $BROWSER_TEST_OUT).
//
// Every wait is for a condition in the page (a row's state, a data attribute), never a fixed
// sleep.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GOLDEN_PHASES, Server, freshDatabase, launchBrowser, outputDir, signedInPage } from "./harness.mjs";

const PHONE = { width: 390, height: 844 };
let server;
let browser;
let agent;
let out;

before(async () => {
  out = outputDir();
  // Timeouts longer than the suite: a slow test must not let the running executions of earlier
  // tests die and change the counts later tests read (the dead chart has a server of its own).
  // An overview cached for the whole suite: a page that re-reads it after an event must still
  // get numbers that reflect the event, however soon after another read of the same scope.
  const config = join(mkdtempSync(join(tmpdir(), "agentrack-browser-config-")), "agentrack.toml");
  writeFileSync(config, '[quotas]\noverview_cache = "1h"\n');
  server = await new Server(["--config", config, "--heartbeat-timeout", "1h", "--execution-timeout", "1h"]).start();
  browser = await launchBrowser();
  agent = await server.token("agent", "acme");
});

after(async () => {
  await browser?.close();
  await server?.dispose();
});

async function shot(page, name) {
  await page.screenshot({ path: join(out, `${name}.png`), fullPage: true });
}

function row(page, id) {
  return page.locator(`tr[data-id="${id}"]`);
}

async function rowState(page, id, state) {
  await page.locator(`tr[data-id="${id}"][data-state="${state}"]`).waitFor();
}

function noErrors(page) {
  assert.deepEqual(page.errors ?? [], [], "no uncaught errors in the page");
}

test("an unknown token is refused at sign-in", async () => {
  const page = await browser.newPage();
  await page.goto(`${server.url}/`);
  await page.locator("#token").fill("agt_not_a_real_token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "not valid on this server" }).waitFor();
  assert.equal(await page.locator("#nav").isHidden(), true, "nothing but the sign-in form is shown");
  assert.equal(await page.evaluate(() => sessionStorage.getItem("agentrack.token")), null);
  await page.close();
});

test("the dashboard is served with a strict Content-Security-Policy", async () => {
  const { status, headers, body } = await server.call("GET", "/");
  assert.equal(status, 200);
  assert.match(headers.get("content-type"), /^text\/html/);
  const csp = headers.get("content-security-policy");
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  assert.match(body, /\/assets\/app\.js/);
});

test("the golden path appears live, moves through its phases and ends completed", async () => {
  const page = await signedInPage(browser, server, agent, { hash: "#/executions" });
  await page.locator(".table-status[data-empty='true']").waitFor();

  const id = await server.create(agent, "researcher", "thread-1", "alice");
  await rowState(page, id, "pending");
  await server.ok(`/v1/executions/${id}/start`, agent);
  await rowState(page, id, "starting");
  await server.ok(`/v1/executions/${id}/heartbeat`, agent);
  await rowState(page, id, "running");
  await page.locator(`tr[data-id="${id}"] td:nth-child(9)`).filter({ hasText: /^1$/ }).waitFor();
  for (const [phase, metadata] of GOLDEN_PHASES) {
    await server.ok(`/v1/executions/${id}/phase`, agent, { phase, metadata });
    await page.locator(`tr[data-id="${id}"][data-phase="${phase}"]`).waitFor();
  }
  await server.ok(`/v1/executions/${id}/state`, agent, { state: "completed", result: { answer: "sunny" } });
  await rowState(page, id, "completed");
  const cells = await row(page, id).locator("td").allTextContents();
  assert.equal(cells[1], "researcher");
  assert.equal(cells[2], "alice");
  assert.equal(cells[3], "thread-1");
  assert.equal(cells[4], "completed");

  await shot(page, "executions-desktop");

  // The execution page, found with the search box: timeline to scale, event log, result, breaker.
  await page.locator("#search-id").fill(id);
  await page.locator("#search-id").press("Enter");
  await page.locator(`.view[data-state="completed"][data-ready="true"]`).waitFor();
  const phases = await page.locator("svg.timeline g.segment").evaluateAll((nodes) => nodes.map((n) => n.dataset.phase));
  assert.deepEqual(phases, ["created", ...GOLDEN_PHASES.slice(0, -1).map(([phase]) => phase)]);
  await page.locator("table.log tr[data-type='execution_completed']").waitFor();
  const log = await page.locator("table.log tbody tr").evaluateAll((rows) => rows.map((r) => r.dataset.type));
  assert.equal(log[0], "execution_created");
  assert.equal(log.at(-1), "execution_completed");
  assert.ok(log.includes("tool_executing"));
  assert.match(await page.locator("pre.result").textContent(), /sunny/);
  await page.locator(".breaker[data-state='closed']").waitFor();
  await shot(page, "execution-desktop");
  noErrors(page);
  await page.context().close();
});

test("an execution page follows a running execution live", async () => {
  const id = await server.create(agent, "planner", "thread-2", "alice");
  const page = await signedInPage(browser, server, agent, { hash: `#/executions/${id}` });
  await page.locator(`.view[data-state="pending"][data-ready="true"]`).waitFor();
  await server.ok(`/v1/executions/${id}/start`, agent);
  await server.ok(`/v1/executions/${id}/heartbeat`, agent);
  await page.locator(`.view[data-state="running"]`).waitFor();
  for (const [phase, metadata] of GOLDEN_PHASES.slice(0, 5)) {
    await server.ok(`/v1/executions/${id}/phase`, agent, { phase, metadata });
    await page.locator(`.view[data-phase="${phase}"]`).waitFor();
  }
  // The current phase is drawn as an ongoing bar.
  await page.locator(`svg.timeline g.segment.ongoing[data-phase="llm_interaction"]`).waitFor();
  await server.ok(`/v1/executions/${id}/state`, agent, { state: "failed", error: "provider returned 500" });
  await page.locator(`.view[data-state="failed"]`).waitFor();
  assert.match(await page.locator("pre.error-box").textContent(), /provider returned 500/);
  await page.locator("table.log tr[data-type='execution_failed']").waitFor();
  noErrors(page);
  await page.context().close();
});

test("a viewer of another user sees none of alice's executions, live or stored", async () => {
  const bob = await server.token("viewer", "acme", "bob");
  const alice = await server.token("viewer", "acme", "alice");
  const page = await signedInPage(browser, server, bob, { hash: "#/executions" });
  await page.locator(".table-status[data-empty='true']").waitFor();
  const alicePage = await signedInPage(browser, server, alice, { hash: "#/executions" });
  await alicePage.locator("tbody tr").first().waitFor();

  // An execution of alice's, then one of bob's: the stream is ordered, so once bob's row is
  // there, alice's event has been seen (or not) already.
  const hers = await server.create(agent, "researcher", "thread-3", "alice");
  const his = await server.create(agent, "researcher", "thread-4", "bob");
  await rowState(page, his, "pending");
  await rowState(alicePage, hers, "pending");
  assert.equal(await row(page, hers).count(), 0, "bob does not see alice's new execution");
  assert.equal(await page.locator("tbody tr").count(), 1, "bob sees only his own");
  assert.equal(await alicePage.locator(`tr[data-id="${his}"]`).count(), 0, "alice does not see bob's");

  // Nor by id, nor in the overview's numbers.
  await page.goto(`${server.url}/#/executions/${hers}`);
  await page.getByRole("heading", { name: "Execution not found" }).waitFor();
  await page.goto(`${server.url}/#/`);
  await page.locator(".view[data-ready='true'] [data-card='total'] .card-value").filter({ hasText: /^1$/ }).waitFor();
  noErrors(page);
  await page.context().close();
  await alicePage.context().close();
});

test("the overview shows counts, rates, phase percentiles and open breakers", async () => {
  // A breaker that opens after three failures.
  for (let i = 0; i < 3; i += 1) {
    const { permit } = await server.ok("/v1/breakers/openai:gpt-4o/acquire", agent);
    await server.ok("/v1/breakers/openai:gpt-4o/record", agent, { permit, outcome: "failure" });
  }
  const page = await signedInPage(browser, server, agent, { hash: "#/" });
  await page.locator(".view[data-ready='true']").waitFor();
  const value = async (card) => (await page.locator(`[data-card='${card}'] .card-value`).textContent()).trim();
  assert.equal(await value("completed"), "1");
  assert.equal(await value("failed"), "1");
  assert.equal(await value("success rate"), "50 %");
  await page.locator("li.breaker[data-state='open']").filter({ hasText: "openai:gpt-4o" }).waitFor();
  assert.equal(await page.locator("section.alarm").count(), 1, "open breakers are highlighted");
  await page.locator("table.phases tr[data-phase='thinking']").waitFor();

  // Live: a new execution raises the counts without a reload.
  const before = Number(await value("total"));
  await server.create(agent, "researcher", "thread-5", "carol");
  await page.locator("[data-card='total'] .card-value").filter({ hasText: new RegExp(`^${before + 1}$`) }).waitFor();
  await shot(page, "overview-desktop");
  noErrors(page);
  await page.context().close();
});

test("dead executions show in the last hour's chart", async () => {
  const fast = await new Server(["--heartbeat-timeout", "300ms", "--monitor-interval", "50ms"]).start();
  try {
    const token = await fast.token("agent", "acme");
    const page = await signedInPage(browser, fast, token, { hash: "#/" });
    await page.locator(".empty-state[data-empty='true']").waitFor();
    const id = await fast.create(token, "researcher", "thread-6", "alice");
    await fast.ok(`/v1/executions/${id}/start`, token);
    // No heartbeat: the monitor declares it dead; the overview follows the event.
    await page.locator("[data-card='dead'] .card-value").filter({ hasText: /^1$/ }).waitFor();
    await page.locator("svg.chart rect.bar-dead").waitFor();
    noErrors(page);
    await page.context().close();
  } finally {
    await fast.dispose();
  }
});

test("after the server goes away the page says so, reconnects and misses nothing", async () => {
  const page = await signedInPage(browser, server, agent, { hash: "#/executions" });
  const id = await server.create(agent, "researcher", "thread-7", "dave");
  await rowState(page, id, "pending");

  await server.stop();
  await page.locator("#connection[data-state='disconnected']").waitFor();
  await server.start();
  // Drive the execution at once: whether the page reconnects before or after these writes, it
  // must end up showing all of them (live, or replayed from `since`).
  await server.ok(`/v1/executions/${id}/start`, agent);
  await server.ok(`/v1/executions/${id}/heartbeat`, agent);
  for (const [phase, metadata] of GOLDEN_PHASES) await server.ok(`/v1/executions/${id}/phase`, agent, { phase, metadata });
  await server.ok(`/v1/executions/${id}/state`, agent, { state: "completed", result: "sunny" });
  await rowState(page, id, "completed");
  await page.locator("#connection[data-state='live']").waitFor();
  assert.equal(await page.locator(`tr[data-id="${id}"][data-phase="completed"]`).count(), 1);
  noErrors(page);
  await page.context().close();
});

test("a revoked or wrong token in the session shows the sign-in again", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${server.url}/`);
  await page.evaluate(() => sessionStorage.setItem("agentrack.token", "agt_revoked"));
  await page.reload();
  await page.getByText("Your token was refused").waitFor();
  await page.locator("#token").waitFor();
  await context.close();
});

test("every control is reachable with the keyboard", async () => {
  const page = await signedInPage(browser, server, agent, { hash: "#/executions" });
  await page.locator("tbody tr").first().waitFor();
  await page.evaluate(() => document.activeElement?.blur());
  const reached = [];
  for (let i = 0; i < 30; i += 1) {
    await page.keyboard.press("Tab");
    reached.push(
      await page.evaluate(() => {
        const el = document.activeElement;
        const style = getComputedStyle(el);
        return {
          key: el.id || el.getAttribute("href") || el.textContent.trim().slice(0, 20),
          tag: el.tagName,
          outlined: style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2,
        };
      }),
    );
  }
  const keys = reached.map((r) => r.key);
  for (const expected of ["#/", "#/executions", "search-id", "signout", "filter-state", "filter-agent_name", "filter-user_id", "filter-thread_id"]) {
    assert.ok(keys.includes(expected), `Tab reaches ${expected}; reached ${keys.join(", ")}`);
  }
  assert.ok(keys.some((k) => k.startsWith("#/executions/")), "Tab reaches the execution links");
  const unmarked = reached.filter((r) => r.tag !== "BODY" && !r.outlined).map((r) => `${r.tag} ${r.key}`);
  assert.deepEqual(unmarked, [], "every focused control has a visible outline");

  // Enter on a row's link opens the execution.
  const link = page.locator("tbody tr a").first();
  await link.focus();
  await page.keyboard.press("Enter");
  await page.locator(".view[data-ready='true'] svg.timeline, .view[data-ready='true'] .timeline-box").first().waitFor();
  noErrors(page);
  await page.context().close();
});

test("text has readable contrast (WCAG AA, 4.5:1)", async () => {
  const page = await signedInPage(browser, server, agent, { hash: "#/" });
  await page.locator(".view[data-ready='true']").waitFor();
  const contrast = () =>
    page.evaluate(() => {
      const parse = (c) => {
        const m = c.match(/rgba?\(([^)]+)\)/);
        if (!m) return null;
        const [r, g, b, a = 1] = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
        return { r, g, b, a };
      };
      const luminance = ({ r, g, b }) => {
        const f = (v) => {
          const x = v / 255;
          return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4;
        };
        return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
      };
      const background = (el) => {
        for (let node = el; node; node = node.parentElement) {
          const bg = parse(getComputedStyle(node).backgroundColor);
          if (bg && bg.a > 0.5) return bg;
        }
        return { r: 255, g: 255, b: 255 };
      };
      const failures = [];
      let checked = 0;
      const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
      while (walker.nextNode()) {
        const el = walker.currentNode.parentElement;
        if (!walker.currentNode.textContent.trim() || !el || el.closest("svg,[hidden]") || !el.getClientRects().length) continue;
        const style = getComputedStyle(el);
        if (style.visibility === "hidden" || parseFloat(style.opacity) < 1) continue;
        const fg = parse(style.color);
        const bg = background(el);
        const [hi, lo] = [luminance(fg), luminance(bg)].sort((a, b) => b - a);
        const ratio = (hi + 0.05) / (lo + 0.05);
        checked += 1;
        if (ratio < 4.5) failures.push(`${el.tagName}.${el.className} "${el.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
      }
      return { checked, failures };
    });
  let result = await contrast();
  assert.ok(result.checked > 20, `checked ${result.checked} text nodes`);
  assert.deepEqual(result.failures, [], "every visible text is at least 4.5:1");
  await page.goto(`${server.url}/#/executions`);
  await page.locator(".view[data-ready='true']").waitFor();
  result = await contrast();
  assert.deepEqual(result.failures, []);
  await page.context().close();
});

test("the pages fit a 390-wide phone screen", async () => {
  const page = await signedInPage(browser, server, agent, { hash: "#/", viewport: PHONE });
  await page.locator(".view[data-ready='true']").waitFor();
  const overflow = () => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok((await overflow()) <= 0, "the overview does not scroll sideways");
  await shot(page, "overview-phone");

  const { executions } = (await server.call("GET", "/v1/executions?state=completed&limit=1", agent)).body;
  await page.goto(`${server.url}/#/executions/${executions[0].execution_id}`);
  await page.locator(".view[data-ready='true'] svg.timeline").waitFor();
  assert.ok((await overflow()) <= 0, "the execution page does not scroll sideways");
  const width = await page.locator("svg.timeline").evaluate((svg) => svg.getBoundingClientRect().width);
  assert.ok(width <= 390, `the timeline fits (${width}px)`);
  await shot(page, "execution-phone");

  await page.goto(`${server.url}/#/executions`);
  await page.locator(".view[data-ready='true']").waitFor();
  assert.ok((await overflow()) <= 0, "the table scrolls inside its own box, not the page");
  await shot(page, "executions-phone");
  noErrors(page);
  await page.context().close();
});

test("the cluster view shows a single node owning its one shard, and a non-admin a clear message", async () => {
  const page = await signedInPage(browser, server, server.admin, { hash: "#/cluster" });
  await page.locator(".view[data-ready='true'] tr[data-node]").first().waitFor();
  const nodes = page.locator("tr[data-node]");
  assert.equal(await nodes.count(), 1, "one node");
  const node = nodes.first();
  assert.equal(await node.getAttribute("data-shards"), "1", "it owns the one shard");
  assert.equal(await node.getAttribute("data-health"), "serving");
  await page.locator("section[data-unowned='0']").waitFor();
  assert.equal(await page.locator("section.alarm").count(), 0, "nothing is highlighted as unserved");
  await page.getByText("Every one of the 1 shards has an owner.").waitFor();
  await page.getByText("A single node: shards never move.").waitFor();
  // It agrees with the API it reads.
  const { status, body } = await server.call("GET", "/v1/cluster", server.admin);
  assert.equal(status, 200);
  assert.equal(await node.getAttribute("data-node"), body.nodes[0].node_id);
  // It polls: the view is re-rendered (a new row node) without any event.
  await node.evaluate((el) => {
    el.dataset.stale = "true";
  });
  await page.locator("tr[data-node]:not([data-stale])").waitFor();
  await shot(page, "cluster");
  noErrors(page);
  await page.context().close();

  const viewer = await signedInPage(browser, server, agent, { hash: "#/cluster" });
  await viewer.locator(".view[data-ready='true'] [data-forbidden='true']").waitFor();
  assert.match(await viewer.locator("[data-forbidden='true']").textContent(), /admin tokens only/);
  assert.equal(await viewer.locator(".notice.error").count(), 0, "no error shown");
  noErrors(viewer);
  await viewer.context().close();
});

// Two nodes on a fresh PostgreSQL database (AGENTRACK_TEST_PG_URL, exported by scripts/test).
const PG = process.env.AGENTRACK_TEST_PG_URL;
test("the cluster view lists two nodes and their shares, then one node owning all after the other stops", { skip: PG ? false : "AGENTRACK_TEST_PG_URL is not set" }, async () => {
  const database = freshDatabase(PG);
  const args = ["--store", database.url, "--lease-ttl", "2s"];
  const first = await new Server(args).start();
  const second = await new Server(args, { admin: first.admin }).start();
  try {
    const { body } = await first.call("GET", "/v1/cluster", first.admin);
    const total = body.shard_count;
    const firstId = body.this_node;
    const page = await signedInPage(browser, first, first.admin, { hash: "#/cluster" });
    // Both nodes serve a share, and every shard has an owner (the view polls; no reload).
    await page.waitForFunction((count) => {
      const rows = [...document.querySelectorAll("tr[data-node]")];
      const shares = rows.map((r) => Number(r.dataset.shards));
      return rows.length === 2 && shares.every((n) => n > 0) && shares.reduce((a, b) => a + b, 0) === count
        && document.querySelector("section[data-unowned='0']") !== null;
    }, total);
    await page.locator("tr[data-reason]").first().waitFor();
    await shot(page, "cluster-two-nodes");

    await second.stop();
    await page.locator(`tr[data-node="${firstId}"][data-shards="${total}"]`).waitFor();
    await page.locator("section[data-unowned='0']").waitFor();
    assert.equal(await page.locator(`tr[data-node]:not([data-node="${firstId}"])[data-health="serving"]`).count(), 0,
      "the stopped node serves nothing");
    await shot(page, "cluster-after-stop");
    noErrors(page);
    await page.context().close();
  } finally {
    await second.dispose();
    await first.dispose();
    database.drop();
  }
});
