// Test harness: the real `agentrack serve` on a free loopback port with a temp data dir, a small
// HTTP client for its API, and Debian's Chromium driven by playwright-core.

import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, mkdirSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, "../../../..");

/** The server binary: $AGENTRACK_BIN, or the debug build in the Cargo target dir. */
export function binary() {
  if (process.env.AGENTRACK_BIN) return process.env.AGENTRACK_BIN;
  const target = process.env.CARGO_TARGET_DIR ? resolve(repo, process.env.CARGO_TARGET_DIR) : join(repo, "target");
  return join(target, "debug", "agentrack");
}

/** Where screenshots go: $BROWSER_TEST_OUT, or target/browser-test. */
export function outputDir() {
  const dir = process.env.BROWSER_TEST_OUT ? resolve(process.env.BROWSER_TEST_OUT) : join(repo, "target", "browser-test");
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** A running `agentrack serve`. */
export class Server {
  /** `admin`: the admin token, when another node of the same store made it (no admin.token here). */
  constructor(extraArgs = [], { admin = null } = {}) {
    this.extraArgs = extraArgs;
    this.givenAdmin = admin;
    this.data = mkdtempSync(join(tmpdir(), "agentrack-browser-"));
    this.child = null;
    this.url = null;
    this.port = 0;
    this.admin = null;
  }

  /** Starts (or restarts, on the same port and data) the server; resolves once it listens. */
  async start() {
    const listen = `127.0.0.1:${this.port}`;
    const env = { ...process.env, AGENTRACK_LOG: "warn" };
    delete env.AGENTRACK_CONFIG;
    const child = spawn(binary(), ["serve", "--data", this.data, "--listen", listen, ...this.extraArgs], {
      stdio: ["ignore", "pipe", "pipe"],
      env,
    });
    this.child = child;
    this.log = "";
    child.stderr.on("data", (chunk) => {
      this.log += chunk;
    });
    const lines = createInterface({ input: child.stdout });
    const url = await new Promise((resolveUrl, reject) => {
      const timer = setTimeout(() => reject(new Error(`no "listening on" line; log:\n${this.log}`)), 30_000);
      child.once("exit", (code) => reject(new Error(`agentrack serve exited with ${code}; log:\n${this.log}`)));
      lines.on("line", (line) => {
        const match = /^listening on (http:\/\/\S+)/.exec(line);
        if (match) {
          clearTimeout(timer);
          resolveUrl(match[1]);
        }
      });
    });
    this.url = url;
    this.port = Number(new URL(url).port);
    this.admin = this.givenAdmin ?? readFileSync(join(this.data, "admin.token"), "utf8").trim();
    return this;
  }

  /** SIGTERM, and wait for the exit. */
  async stop() {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    this.child = null;
    await new Promise((done) => {
      child.once("exit", done);
      child.kill("SIGTERM");
    });
  }

  /** Stops and removes the data dir. */
  async dispose() {
    await this.stop();
    rmSync(this.data, { recursive: true, force: true });
  }

  /** One API call; resolves to {status, body}. */
  async call(method, path, token, body) {
    const response = await fetch(`${this.url}${path}`, {
      method,
      headers: {
        ...(token ? { Authorization: `Bearer ${token}` } : {}),
        ...(body !== undefined ? { "Content-Type": "application/json" } : {}),
      },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const text = await response.text();
    let parsed = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON
    }
    return { status: response.status, body: parsed, headers: response.headers };
  }

  /** A POST that must succeed. */
  async ok(path, token, body = {}) {
    const { status, body: answer } = await this.call("POST", path, token, body);
    if (status < 200 || status >= 300) throw new Error(`POST ${path} → ${status} ${JSON.stringify(answer)}`);
    return answer;
  }

  /** A token made with the admin token. */
  async token(role, tenant, user) {
    const body = { role, tenant };
    if (user) body.user_id = user;
    return (await this.ok("/v1/tokens", this.admin, body)).token;
  }

  /** A new execution's id. */
  async create(token, agent, thread, user, timeoutSeconds = 300) {
    const record = await this.ok("/v1/executions", token, {
      agent_name: agent,
      thread_id: thread,
      user_id: user,
      timeout_seconds: timeoutSeconds,
    });
    return record.execution_id;
  }
}

/** The golden path's phases, as the server tests use them. */
export const GOLDEN_PHASES = [
  ["websocket_setup", {}],
  ["context_validation", { user_context: "ok" }],
  ["starting", { request: "weather in Paris" }],
  ["thinking", { reasoning: "need a forecast" }],
  ["llm_interaction", { model: "gpt" }],
  ["tool_execution", { tool_name: "get_forecast", parameters: { city: "Paris" } }],
  ["result_processing", {}],
  ["completing", {}],
  ["completed", { result: "sunny" }],
];

/** Debian's Chromium, headless, with everything that would reach the network turned off. */
export async function launchBrowser() {
  const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
  if (!existsSync(executablePath)) throw new Error(`${executablePath} is missing: apt-get install -y chromium`);
  // playwright-core gives every launch a fresh temporary profile (--user-data-dir).
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
    ],
  });
}

/** A page signed in with `token` (through the sign-in form), at `hash`. */
export async function signedInPage(browser, server, token, { hash = "#/", viewport = { width: 1280, height: 800 } } = {}) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on("pageerror", (error) => {
    page.errors = [...(page.errors ?? []), error];
  });
  page.on("console", (message) => {
    if (message.type() === "error") page.consoleErrors = [...(page.consoleErrors ?? []), message.text()];
  });
  await page.goto(`${server.url}/${hash}`);
  await page.locator("#token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#connection[data-state='live']").waitFor();
  return page;
}

/** A fresh, empty database on the PostgreSQL at `serverUrl` (with psql); returns {url, drop}. */
export function freshDatabase(serverUrl) {
  const name = `agentrack_browser_${process.pid}_${Date.now()}`;
  execFileSync("psql", [serverUrl, "-qc", `CREATE DATABASE ${name}`]);
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: () => execFileSync("psql", [serverUrl, "-qc", `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`]),
  };
}
