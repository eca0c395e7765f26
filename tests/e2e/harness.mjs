// Harness of the end-to-end suite: the reference server in test mode, Debian's
// Chromium through playwright-core, and a minimal test page that exposes the client.
//
// Every test file calls `useEnv()` at top level: it registers node:test hooks that
// start one server and one browser for the file, reset the server's counters/log/faults
// before each test, close every browser context a test opened, and kill the server and
// the browser after the file, even when a test failed.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { mkdirSync } from "node:fs";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { before, after, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

export const E2E_DIR = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(E2E_DIR, "../..");
export const PAGES_DIR = join(E2E_DIR, "pages");
export const ARTIFACTS_DIR = join(E2E_DIR, "artifacts");

// The server binary: run.sh exports TW_SERVER_BIN (scripts/test-server.sh, the dev profile by default).
const SERVER_BIN = process.env.TW_SERVER_BIN || join(REPO, "target/debug/tokenwarden-server");
const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
export const CHROMIUM_ARGS = [
  "--headless=new",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  // Tabs of one context must all keep running their timers at full speed.
  "--disable-background-timer-throttling",
  "--disable-renderer-backgrounding",
  "--disable-backgrounding-occluded-windows",
];

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value or `timeoutMs` passes. */
export async function waitFor(fn, { timeoutMs = 5000, intervalMs = 50, what = "condition" } = {}) {
  const end = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

// ---- server ------------------------------------------------------------------------

/**
 * Starts `tokenwarden-server --port 0 --test-mode --memory-store` and resolves once its
 * first stdout line names the URL. stderr (one line per request) is kept in a small ring
 * buffer for diagnostics only; it never holds a token (the server logs none).
 */
export async function startServer({ extraArgs = [] } = {}) {
  const child = spawn(
    SERVER_BIN,
    ["--port", "0", "--test-mode", "--memory-store", "--www-dir", join(REPO, "www", "demo"),
      "--pkg-dir", process.env.TW_E2E_PKG_DIR || join(REPO, "pkg"), ...extraArgs],
    { cwd: REPO, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, TW_LOG: process.env.TW_LOG || "warn" } },
  );
  const stderr = [];
  createInterface({ input: child.stderr }).on("line", (l) => {
    stderr.push(l);
    if (stderr.length > 300) stderr.shift();
  });
  const killOnExit = () => { try { child.kill("SIGKILL"); } catch { /* gone */ } };
  process.once("exit", killOnExit);

  const url = await new Promise((resolveUrl, reject) => {
    const rl = createInterface({ input: child.stdout });
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${stderr.join("\n")}`)), 15000);
    rl.once("line", (line) => {
      clearTimeout(timer);
      const m = /^listening on (http:\/\/127\.0\.0\.1:\d+)$/.exec(line.trim());
      if (m) resolveUrl(m[1]);
      else reject(new Error(`unexpected first line from the server: ${line}`));
    });
    // Keep draining stdout after the first line.
    rl.on("line", () => {});
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${stderr.join("\n")}`));
    });
  });

  async function call(method, path, body) {
    const res = await fetch(url + path, {
      method,
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!res.ok) throw new Error(`${method} ${path} -> ${res.status} ${await res.text()}`);
    return res.status === 204 ? undefined : res.json();
  }

  return {
    url,
    stderr,
    /** GET /test/counters */
    counters: () => call("GET", "/test/counters"),
    /** GET /test/log: [{t, method, path, status, bearer, csrf, cookie}] */
    log: () => call("GET", "/test/log"),
    /** POST /test/config {accessTtlSeconds?, familyLifetimeSeconds?, leewaySeconds?} */
    config: (cfg) => call("POST", "/test/config", cfg),
    /** POST /test/faults {faults: [...]} (appended to the queue) */
    faults: (list) => call("POST", "/test/faults", { faults: list }),
    clearFaults: () => call("DELETE", "/test/faults"),
    /** POST /test/reset: counters, log and faults (not sessions, config or keys) */
    reset: () => call("POST", "/test/reset"),
    rotateKey: () => call("POST", "/test/rotate-key"),
    async stop() {
      process.removeListener("exit", killOnExit);
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 3000);
      await exited;
      clearTimeout(t);
    },
  };
}

// ---- browser -----------------------------------------------------------------------

export function launchBrowser() {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
}

/**
 * Records what a page says: console messages, uncaught errors (`pageerror`, which in
 * Chromium also covers unhandled promise rejections) and crashes.
 */
export function watch(page) {
  const rec = { console: [], errors: [], crashed: false };
  page.on("console", (m) => rec.console.push({ type: m.type(), text: m.text() }));
  page.on("pageerror", (e) => rec.errors.push(String(e && e.stack ? e.stack : e)));
  page.on("crash", () => { rec.crashed = true; });
  page.rec = rec;
  return rec;
}

/** Serves tests/e2e/pages/* at /e2e/* of the server's origin (same origin as /auth, /pkg). */
export async function routeTestPages(context) {
  await context.route("**/e2e/**", (route) => {
    const path = new URL(route.request().url()).pathname.replace(/^\/e2e\//, "");
    if (path.includes("..")) return route.fulfill({ status: 404, body: "" });
    return route.fulfill({ path: join(PAGES_DIR, path) });
  });
}

export function testPageUrl(base, options = {}) {
  return `${base}/e2e/client.html?opts=${encodeURIComponent(JSON.stringify(options))}`;
}

// ---- per-file environment -----------------------------------------------------------

/**
 * Registers the hooks of one test file and returns the environment object, whose
 * `server` and `browser` are set once `before` has run.
 */
export function useEnv({ serverArgs = [] } = {}) {
  const env = {
    server: undefined,
    browser: undefined,
    contexts: [],
    pages: [],

    /** A new isolated context (own cookies, own tabs) with the test pages routed. */
    async newContext(opts = {}) {
      const context = await env.browser.newContext(opts);
      await routeTestPages(context);
      env.contexts.push(context);
      context.on("page", (p) => { if (!p.rec) { watch(p); env.pages.push(p); } });
      return context;
    },

    /** Opens the test page in a new tab of `context`; resolves once `window.tw` exists. */
    async openTab(context, options = {}, { clock } = {}) {
      const page = await context.newPage();
      if (!page.rec) { watch(page); env.pages.push(page); }
      if (clock) await clock(page);
      await page.goto(testPageUrl(env.server.url, options));
      await page.waitForFunction(() => window.twReady === true || window.twError, null, { timeout: 10000 });
      const err = await page.evaluate(() => window.twError);
      if (err) throw new Error(`test page failed to create the client: ${err}`);
      return page;
    },

    /** Opens `n` tabs of the test page in one context (they share cookies, locks, channels). */
    async openTabs(context, n, options = {}) {
      const pages = [];
      for (let i = 0; i < n; i++) pages.push(await env.openTab(context, options));
      return pages;
    },
  };

  before(async () => {
    env.server = await startServer({ extraArgs: serverArgs });
    env.browser = await launchBrowser();
  });

  after(async () => {
    for (const c of env.contexts.splice(0)) await c.close().catch(() => {});
    if (env.browser) await env.browser.close().catch(() => {});
    if (env.server) await env.server.stop();
  });

  beforeEach(async () => {
    await env.server.config({ accessTtlSeconds: 60, leewaySeconds: 0, familyLifetimeSeconds: 28800 });
    await env.server.reset();
    env.pages = [];
  });

  afterEach(async () => {
    // Invariants that hold for every test: no request to /api/me carried an expired
    // token, and no page threw or left a promise rejection unhandled.
    const [counters, log] = [await env.server.counters(), await env.server.log()];
    const pages = env.pages.splice(0);
    for (const c of env.contexts.splice(0)) await c.close().catch(() => {});
    assert.equal(counters.apiExpiredTokens, 0, "a request to /api/me carried an expired token");
    assert.deepEqual(log.filter((e) => e.bearer === "expired"), [], "log shows an expired bearer");
    for (const p of pages) {
      assert.deepEqual(p.rec.errors, [], `page ${p.url()} had uncaught errors`);
      assert.equal(p.rec.crashed, false, "a page crashed");
    }
  });

  return env;
}

// ---- page-side helpers ---------------------------------------------------------------

/** Signs in from the page with the app's own login call, then `tw.setSession`. */
export const login = (page) => page.evaluate(() => window.login());

/** `tw.fetch('/api/me')` from the page; resolves with the HTTP status. */
export const callApi = (page) => page.evaluate(() => window.callApi());

/** The page's session events; `stateChanged` (active ↔ refreshing) is left out: tests that
 *  compare sequences are about the session, and `stateChanged` is checked by `stateChanges`. */
export const events = (page) => page.evaluate(() => window.events.filter((e) => e.type !== "stateChanged"));

/** The states the page's client went through, from its `stateChanged` events. */
export const stateChanges = (page) =>
  page.evaluate(() => window.events.filter((e) => e.type === "stateChanged").map((e) => e.state));

/** The `jti` of the page's current token (identifies it without exposing it). */
export const jti = (page) => page.evaluate(() => (window.tw.claims() || {}).jti ?? null);

export function ensureArtifactsDir() {
  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  return ARTIFACTS_DIR;
}

/** Counts log entries matching method+path. */
export const countLog = (log, method, path) => log.filter((e) => e.method === method && e.path === path).length;

// Timed runs under a stalled host, and what a failed run did (shared with tests/engines).
export { sleepWatched, watchStalls, runStory, explainFailure } from "../support/timed-run.mjs";
