// Harness of the multi-engine suite: the same tests in Chromium, Firefox and WebKit.
//
// The engine is a parameter (TW_ENGINE=chromium|firefox|webkit); `run.sh` runs the one list
// of tests once per engine. Everything goes through W3C WebDriver (webdriverio, classic
// protocol), so nothing here is specific to one engine except the table ENGINES:
//
//   chromium  Debian's chromium through chromedriver
//   firefox   Debian's firefox-esr (headless) through geckodriver
//   webkit    WebKitGTK's MiniBrowser through WebKitWebDriver, on an Xvfb display
//
// The reference server runs in test mode over HTTPS (`--tls`, a self-signed certificate
// generated at start, accepted through `acceptInsecureCerts`): WebKit drops `Secure` cookies
// on plain http, and the refresh cookie is `Secure`.
//
// Every test file calls `useEnv()` at top level: per file one server, one WebDriver server
// (and one Xvfb for WebKit); per test fresh browser sessions (own profile, own cookies).
// After every test it checks that no /api/me request carried an expired token, that no page
// threw, left a promise rejection unhandled or broke the server's Content-Security-Policy, and that no console line holds a token; and
// it ends every session, even when the test failed.
import { spawn, execFileSync } from "node:child_process";
import { createInterface } from "node:readline";
import { freePort } from "../support/ports.mjs";
import { request as httpsRequest } from "node:https";
import { request as httpRequest } from "node:http";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { existsSync, readFileSync } from "node:fs";
import { before, after, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { remote } from "webdriverio";

export const ENGINES_DIR = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(ENGINES_DIR, "../..");
// The server binary: run.sh exports TW_SERVER_BIN (scripts/test-server.sh, the dev profile by default).
const SERVER_BIN = process.env.TW_SERVER_BIN || join(REPO, "target/debug/tokenwarden-server");

export const ENGINE = process.env.TW_ENGINE || "chromium";

const MINIBROWSER = "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser";

/** How each engine is driven; the only engine-specific table of the suite. */
const ENGINES = {
  chromium: {
    driver: process.env.CHROMEDRIVER || "/usr/bin/chromedriver",
    driverArgs: (port) => [`--port=${port}`],
    capabilities: {
      browserName: "chrome",
      "goog:chromeOptions": {
        binary: process.env.CHROMIUM_BIN || "/usr/bin/chromium",
        args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync"],
      },
    },
  },
  firefox: {
    driver: process.env.GECKODRIVER || "geckodriver",
    driverArgs: (port) => ["--port", String(port), "--binary", process.env.FIREFOX_BIN || "/usr/bin/firefox-esr"],
    capabilities: {
      browserName: "firefox",
      "moz:firefoxOptions": { args: ["-headless"], prefs: { "browser.shell.checkDefaultBrowser": false } },
    },
  },
  webkit: {
    driver: process.env.WEBKITWEBDRIVER || "/usr/bin/WebKitWebDriver",
    driverArgs: (port) => [`--port=${port}`],
    display: true,
    capabilities: {
      browserName: "MiniBrowser",
      "webkitgtk:browserOptions": { binary: MINIBROWSER, args: ["--automation"] },
    },
  },
};

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value or `timeoutMs` passes. */
export async function waitFor(fn, { timeoutMs = 5000, intervalMs = 50, what = "condition" } = {}) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const last = await fn();
    if (last) return last;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

export { freePort };

/** Kills a child we started (its whole process group when it leads one). */
async function stopChild(child, { group = false } = {}) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  const kill = (sig) => {
    try {
      if (group) process.kill(-child.pid, sig);
      else child.kill(sig);
    } catch { /* already gone */ }
  };
  kill("SIGTERM");
  const t = setTimeout(() => kill("SIGKILL"), 3000);
  await exited;
  clearTimeout(t);
}

/** The pids of every descendant of `pid` (from /proc), deepest last. */
export function descendants(pid) {
  const children = new Map();
  for (const line of execFileSync("ps", ["-e", "-o", "pid=,ppid="], { encoding: "utf8" }).split("\n")) {
    const [p, pp] = line.trim().split(/\s+/).map(Number);
    if (!p) continue;
    if (!children.has(pp)) children.set(pp, []);
    children.get(pp).push(p);
  }
  const out = [];
  const walk = (p) => { for (const c of children.get(p) || []) { out.push(c); walk(c); } };
  walk(pid);
  return out;
}

// ---- reference server ------------------------------------------------------------

/** The reference server's test API over its own (self-signed) HTTPS, loopback only. */
function apiCall(base, method, path, body) {
  const url = new URL(path, base);
  const request = url.protocol === "https:" ? httpsRequest : httpRequest;
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((res, rej) => {
    const req = request(url, {
      method,
      rejectUnauthorized: false, // the certificate is generated by the server at start
      headers: payload ? { "content-type": "application/json", "content-length": Buffer.byteLength(payload) } : {},
    }, (r) => {
      let text = "";
      r.setEncoding("utf8");
      r.on("data", (d) => { text += d; });
      r.on("end", () => {
        if (r.statusCode >= 300) rej(new Error(`${method} ${path} -> ${r.statusCode} ${text}`));
        else res(r.statusCode === 204 || !text ? undefined : JSON.parse(text));
      });
    });
    req.on("error", rej);
    if (payload) req.end(payload); else req.end();
  });
}

/**
 * Starts `tokenwarden-server --port 0 --test-mode --memory-store` (HTTPS unless `tls` is
 * false) serving `wwwDir`, and resolves once its first stdout line names the URL.
 */
export async function startServer({ tls = true, wwwDir = join(ENGINES_DIR, "www"), extraArgs = [] } = {}) {
  const args = ["--port", "0", "--test-mode", "--memory-store", "--www-dir", wwwDir,
    "--pkg-dir", process.env.TW_E2E_PKG_DIR || join(REPO, "pkg"), ...(tls ? ["--tls"] : []), ...extraArgs];
  const child = spawn(SERVER_BIN, args, {
    cwd: REPO, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, TW_LOG: process.env.TW_LOG || "warn" },
  });
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
      const m = /^listening on (https?:\/\/127\.0\.0\.1:\d+)$/.exec(line.trim());
      if (m) resolveUrl(m[1]);
      else reject(new Error(`unexpected first line from the server: ${line}`));
    });
    rl.on("line", () => {});
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${stderr.join("\n")}`));
    });
  });
  const call = (method, path, body) => apiCall(url, method, path, body);
  return {
    url,
    stderr,
    counters: () => call("GET", "/test/counters"),
    log: () => call("GET", "/test/log"),
    config: (cfg) => call("POST", "/test/config", cfg),
    faults: (list) => call("POST", "/test/faults", { faults: list }),
    reset: () => call("POST", "/test/reset"),
    rotateKey: () => call("POST", "/test/rotate-key"),
    async stop() {
      process.removeListener("exit", killOnExit);
      await stopChild(child);
    },
  };
}

// ---- WebDriver server (and its display) ----------------------------------------------

async function startXvfb() {
  const child = spawn("Xvfb", ["-displayfd", "3", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"], {
    stdio: ["ignore", "ignore", "pipe", "pipe"],
  });
  const display = await new Promise((res, rej) => {
    let out = "";
    const timer = setTimeout(() => rej(new Error("Xvfb did not report a display")), 10000);
    child.stdio[3].on("data", (d) => {
      out += d;
      if (out.includes("\n")) { clearTimeout(timer); res(`:${out.trim()}`); }
    });
    child.once("exit", (code) => { clearTimeout(timer); rej(new Error(`Xvfb exited with ${code}`)); });
  });
  return { child, display };
}

/** Starts the engine's WebDriver server on a free port (and Xvfb for WebKit). */
export async function startDriver(engine = ENGINE) {
  const spec = ENGINES[engine];
  if (!spec) throw new Error(`unknown engine ${engine} (chromium, firefox, webkit)`);
  const xvfb = spec.display ? await startXvfb() : undefined;
  const port = await freePort();
  const env = { ...process.env };
  if (xvfb) env.DISPLAY = xvfb.display;
  const out = [];
  const child = spawn(spec.driver, spec.driverArgs(port), { stdio: ["ignore", "pipe", "pipe"], env, detached: true });
  for (const s of [child.stdout, child.stderr]) {
    createInterface({ input: s }).on("line", (l) => { out.push(l); if (out.length > 200) out.shift(); });
  }
  const killOnExit = () => {
    try { process.kill(-child.pid, "SIGKILL"); } catch { /* gone */ }
    if (xvfb) try { xvfb.child.kill("SIGKILL"); } catch { /* gone */ }
  };
  process.once("exit", killOnExit);
  await waitFor(() => new Promise((res) => {
    const req = httpRequest(`http://127.0.0.1:${port}/status`, (r) => { r.resume(); res(r.statusCode === 200); });
    req.on("error", () => res(false));
    req.end();
  }), { timeoutMs: 15000, intervalMs: 100, what: `${spec.driver} on port ${port}` });
  return {
    engine,
    port,
    pid: child.pid,
    output: out,
    async stop() {
      process.removeListener("exit", killOnExit);
      await stopChild(child, { group: true });
      if (xvfb) await stopChild(xvfb.child);
    },
  };
}

// ---- sessions and tabs ---------------------------------------------------------------

/** The in-page recorder every test page installs first (www/rec.js; the Vite app's probe.js). */
const readRecorder = () => (window.__rec ? { console: window.__rec.console, errors: window.__rec.errors, visibility: window.__rec.visibility } : null);
/** Pages that carry no recorder on purpose: blank tabs, and the strict-CSP page (its
 *  violation is what is tested). Any other page without one is reported as an error, so a
 *  recorder that failed to load cannot hide the page's uncaught errors. */
const withoutRecorder = (url) => url.startsWith("about:") || new URL(url).pathname === "/csp.html";
const recorderOf = (url, r) => r ? { url, ...r }
  : withoutRecorder(url) ? null
  : { url, console: [], errors: ["no recorder on the page (rec.js or probe.js did not run)"], visibility: [] };

/**
 * One browser (a WebDriver session: its own profile, cookie jar, locks and channels) and
 * the tabs or windows opened in it. WebDriver talks to one tab at a time, so every call
 * first switches to its tab; in Firefox and WebKit that brings the tab to the front.
 */
export class Browser {
  constructor(driver, wd) {
    this.driver = driver;
    this.wd = wd;
    this.current = undefined;
    this.tabs = [];
    this.closedRecords = [];
    this.firstUsed = false;
    /** Switches after which scripts ran in another tab's page (WebKitGTK), and how many tries it took. */
    this.misrouted = [];
  }

  static async open(driver) {
    const spec = ENGINES[driver.engine];
    const wd = await remote({
      hostname: "127.0.0.1",
      port: driver.port,
      path: "/",
      logLevel: "error",
      connectionRetryCount: 1,
      connectionRetryTimeout: 60000,
      capabilities: { ...spec.capabilities, acceptInsecureCerts: true, "wdio:enforceWebDriverClassic": true },
    });
    await wd.setTimeout({ script: 60000, pageLoad: 30000 });
    const b = new Browser(driver, wd);
    b.version = wd.capabilities.browserVersion;
    return b;
  }

  /**
   * Opens `url` in a tab (`type: "tab"`) or a separate window (`type: "window"`); the first
   * call reuses the session's initial window.
   */
  async open(url, { type = "tab" } = {}) {
    let handle;
    if (!this.firstUsed) {
      this.firstUsed = true;
      handle = await this.wd.getWindowHandle();
    } else {
      handle = (await this.wd.createWindow(type)).handle;
    }
    const tab = new Tab(this, handle);
    this.tabs.push(tab);
    await tab.focus();
    await this.wd.navigateTo(url);
    tab.url = url; // what the recorder check goes by until waitReady() reads location.href
    await tab.mark();
    return tab;
  }

  /** Opens the test page (`/client.html?opts=…`) and waits for `window.tw`. */
  async openClient(server, options = {}, { type = "tab" } = {}) {
    const tab = await this.open(clientUrl(server.url, options), { type });
    await tab.waitReady();
    return tab;
  }

  async openClients(server, n, options = {}, { type = "tab" } = {}) {
    const tabs = [];
    for (let i = 0; i < n; i++) tabs.push(await this.openClient(server, options, { type }));
    return tabs;
  }

  /** Every recorder of this browser's pages, open and closed. */
  async records() {
    const out = [...this.closedRecords];
    for (const t of this.tabs) {
      try {
        const r = recorderOf(t.url, await t.eval(readRecorder));
        if (r) out.push(r);
      } catch (e) {
        out.push({ url: t.url, console: [], errors: [`could not read the page: ${e.message}`], visibility: [] });
      }
    }
    return out;
  }

  async close() {
    try { await this.wd.deleteSession(); } catch { /* the browser may be gone */ }
  }
}

let tabCount = 0;

/**
 * One tab (or window) of a Browser. Its page is marked with the tab's id in `window.name` (kept
 * across same-origin navigations and reloads), and every script the harness runs checks that
 * mark first, in the same evaluation: WebKitGTK 2.50's WebKitWebDriver, after a window was
 * closed, sometimes runs the scripts of the tab switched to in another tab's page (while
 * reporting the right window handle) until the next switch. A script that lands in the wrong
 * page does nothing there; the harness switches away and back and runs it again.
 */
export class Tab {
  constructor(browser, handle) {
    this.browser = browser;
    this.handle = handle;
    this.url = undefined;
    this.id = `tw-tab-${++tabCount}`;
    this.marked = false;
  }

  async focus() {
    if (this.browser.current !== this.handle) {
      await this.browser.wd.switchToWindow(this.handle);
      this.browser.current = this.handle;
    }
  }

  /**
   * Runs `script` (WebDriver's execute; its first argument is this tab's id) in this tab's
   * page; `{ __twElsewhere: name }` from the script means it found another page (named so).
   */
  async inPage(script, ...args) {
    for (let attempt = 1; ; attempt++) {
      await this.focus();
      const out = await this.browser.wd.execute(script, this.id, ...args);
      const elsewhere = out !== null && typeof out === "object" && Object.hasOwn(out, "__twElsewhere");
      if (!elsewhere) {
        if (attempt > 1) this.browser.misrouted.push({ tab: this.id, found: this.lastElsewhere, attempts: attempt });
        return out;
      }
      this.lastElsewhere = out.__twElsewhere;
      if (attempt === 5) {
        throw new Error(`${ENGINE}: WebDriver ran ${this.id}'s script in page "${out.__twElsewhere}" ${attempt} times`);
      }
      const other = this.browser.tabs.find((t) => t.handle !== this.handle);
      if (other) await this.browser.wd.switchToWindow(other.handle);
      this.browser.current = undefined;
    }
  }

  /** Writes this tab's id into its page's `window.name` (a fresh page's is empty). */
  async mark() {
    await this.inPage(function mark(id) {
      if (window.name && window.name !== id) return { __twElsewhere: window.name };
      window.name = id;
      return null;
    });
    this.marked = true;
  }

  /** Runs `fn(...args)` in the page; a returned promise is awaited (WebDriver does that). */
  async eval(fn, ...args) {
    if (!this.marked) {
      await this.focus();
      return this.browser.wd.execute(fn, ...args);
    }
    const script = `const [id, ...args] = arguments;
      if (window.name !== id) return { __twElsewhere: String(window.name) };
      return (${fn}).apply(null, args);`;
    return this.inPage(script, ...args);
  }

  async waitReady() {
    await waitFor(() => this.eval(() => window.twReady === true || !!window.twError),
      { timeoutMs: 15000, intervalMs: 100, what: "the test page to create the client" });
    const err = await this.eval(() => window.twError);
    if (err) throw new Error(`test page failed to create the client: ${err}`);
    this.url = await this.eval(() => location.href);
  }

  async reload() {
    await this.focus();
    await this.browser.wd.refresh();
    await this.waitReady();
  }

  /** Closes the tab (its recorder is read first, so afterEach still checks it). */
  async close() {
    try {
      const r = recorderOf(this.url, await this.eval(readRecorder));
      if (r) this.browser.closedRecords.push(r);
    } catch { /* page gone */ }
    await this.focus();
    await this.browser.wd.closeWindow();
    this.browser.current = undefined;
    this.browser.tabs = this.browser.tabs.filter((t) => t !== this);
  }
}

export function clientUrl(base, options = {}) {
  return `${base}/client.html?opts=${encodeURIComponent(JSON.stringify(options))}`;
}

// ---- per-file environment ------------------------------------------------------------

/**
 * Registers the hooks of one test file and returns the environment: `server`, `driver`,
 * and `openBrowser()` for a fresh browser per test (closed after the test).
 */
export function useEnv({ tls = true, wwwDir, serverArgs = [] } = {}) {
  const env = {
    engine: ENGINE,
    server: undefined,
    driver: undefined,
    browsers: [],
    async openBrowser() {
      const b = await Browser.open(env.driver);
      env.browsers.push(b);
      return b;
    },
  };

  before(async () => {
    env.server = await startServer({ tls, wwwDir, extraArgs: serverArgs });
    env.driver = await startDriver(ENGINE);
  });

  after(async () => {
    for (const b of env.browsers.splice(0)) await b.close();
    if (env.driver) await env.driver.stop();
    if (env.server) await env.server.stop();
  });

  beforeEach(async () => {
    await env.server.config({ accessTtlSeconds: 60, leewaySeconds: 0, familyLifetimeSeconds: 28800 });
    await env.server.reset();
  });

  afterEach(async () => {
    const browsers = env.browsers.splice(0);
    for (const b of browsers) {
      if (b.misrouted.length) console.log(`${ENGINE}: WebDriver ran scripts in the wrong tab after a switch, corrected: ${JSON.stringify(b.misrouted)}`);
    }
    let records = [];
    try {
      for (const b of browsers) records = records.concat(await b.records());
    } finally {
      for (const b of browsers) await b.close();
    }
    const [counters, log] = [await env.server.counters(), await env.server.log()];
    assert.equal(counters.apiExpiredTokens, 0, "a request to /api/me carried an expired token");
    assert.deepEqual(log.filter((e) => e.bearer === "expired"), [], "log shows an expired bearer");
    for (const r of records) {
      assert.deepEqual(r.errors, [], `page ${r.url} had uncaught errors or unhandled rejections`);
      const jwtLike = r.console.filter((m) => /eyJ[\w-]{10,}\.[\w-]{10,}/.test(m.text));
      assert.deepEqual(jwtLike, [], `page ${r.url} logged something that looks like a token`);
    }
  });

  return env;
}

// ---- page-side helpers ---------------------------------------------------------------

export const login = (tab) => tab.eval(() => window.login());
export const callApi = (tab) => tab.eval(() => window.callApi());
/** The page's session events; `stateChanged` (active ↔ refreshing) is left out, as in
 *  tests/e2e: the sequences the tests compare are about the session. */
export const events = (tab) => tab.eval(() => window.events.filter((e) => e.type !== "stateChanged"));
export const state = (tab) => tab.eval(() => window.tw.state);
/** The `jti` of the tab's current token (identifies it without exposing it). */
export const jti = (tab) => tab.eval(() => (window.tw.claims() || {}).jti ?? null);

export const countLog = (log, method, path) => log.filter((e) => e.method === method && e.path === path).length;

/** Engine and version, e.g. "firefox 153.8.0esr", for the report lines. */
export function engineLabel(b) {
  return `${ENGINE} ${b.version ?? "?"}`;
}

export { existsSync, readFileSync };
