// Environment of the upstream-mode tests: a real OpenID Provider (oidc-provider, in this
// process, see provider.mjs), the reference server in upstream mode pointed at it, and
// Debian's Chromium. `useUpstream()` registers node:test hooks that start all three for a
// test file and stop them after it, also when a test failed.
import { freePort } from "../support/ports.mjs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { startServer, launchBrowser, watch, waitFor } from "../e2e/harness.mjs";
import { startProvider } from "./provider.mjs";

export { waitFor, sleep } from "../e2e/harness.mjs";
const PAGES = join(dirname(fileURLToPath(import.meta.url)), "pages");
/** The demo page's directory (`make demo`, `make demo-oidc`). */
export const DEMO_DIR = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "www", "demo");

/** A port that was free a moment ago (the server's callback URL must be known up front); see tests/support/ports.mjs. */
export { freePort };

/**
 * Starts the provider and the reference server in upstream mode. `timeoutMs` is the server's
 * `--oidc-timeout-ms`: 5 s by default (2 s before), a margin for a provider that runs in this
 * test process on two cores shared with another lane's browsers. (The multi-tab failures of
 * CI runs on 2026-12-04 and 12-05 were not that timeout but the server reusing a connection
 * the provider was closing: fixed in the server, `upstream::PROVIDER_IDLE_CONNECTION`.) The
 * provider-down tests (resilience.test.mjs) pass a short one of their own. `provider` is
 * startProvider's options, or a function of the server's URL (known before either starts)
 * that returns them: a back-channel logout URI names the server.
 */
export async function startUpstream({
  accessTokenTtl = 8, timeoutMs = 5000, wwwDir = PAGES, appPath = "/app.html", provider: providerOpts = {}, serverArgs = [],
} = {}) {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const provider = await startProvider({
    redirectUris: [`${base}/auth/callback`],
    postLogoutRedirectUris: [`${base}${appPath}`],
    accessTokenTtl,
    ...(typeof providerOpts === "function" ? providerOpts(base) : providerOpts),
  });
  // The secret reaches the server through its environment only (never a flag, never a log).
  process.env.TW_OIDC_CLIENT_SECRET = provider.clientSecret;
  let server;
  try {
    server = await startServer({
      extraArgs: [
        "--port", String(port),
        "--oidc-issuer", provider.issuer,
        "--oidc-client-id", provider.clientId,
        "--oidc-redirect-uri", `${base}/auth/callback`,
        "--oidc-allowed-return", `${base}${appPath}`,
        // The app page is a real file of the server: Playwright's routing does not see the
        // requests a redirect chain makes (provider → /auth/callback → the app).
        "--www-dir", wwwDir,
        "--oidc-post-logout-uri", `${base}${appPath}`,
        "--oidc-timeout-ms", String(timeoutMs),
        ...serverArgs,
      ],
    });
  } catch (e) {
    await provider.close();
    throw e;
  } finally {
    delete process.env.TW_OIDC_CLIENT_SECRET;
  }
  assert.equal(server.url, base);
  const upstream = async (method, path) => {
    const res = await fetch(server.url + path, { method });
    if (!res.ok) throw new Error(`${method} ${path} -> ${res.status}`);
    return res.status === 204 ? undefined : res.json();
  };
  server.upstreamCounters = () => upstream("GET", "/test/upstream/counters");
  server.tamperNextNonce = () => upstream("POST", "/test/upstream/tamper-next-nonce");
  return { provider, server, secret: provider.clientSecret };
}

export function appUrl(base, opts = {}) {
  return `${base}/app.html?opts=${encodeURIComponent(JSON.stringify(opts))}`;
}

/** Waits until the app page has run `tw.start()`; returns its result. */
export async function started(page) {
  await page.waitForFunction(() => window.started !== undefined || window.twError, null, { timeout: 15000 });
  const err = await page.evaluate(() => window.twError);
  if (err) throw new Error(`app page failed: ${err}`);
  return page.evaluate(() => window.started);
}

/**
 * The provider's own login page (any login and password), then its consent page
 * ("Continue", or "[ Cancel ]" when `cancel`).
 */
export async function throughProvider(page, { login = "alice", cancel = false } = {}) {
  await page.waitForSelector('input[name="login"]', { timeout: 15000 });
  await page.fill('input[name="login"]', login);
  await page.fill('input[name="password"]', "any password");
  await page.click('button[type="submit"]');
  await page.waitForSelector('input[name="prompt"][value="consent"]', { state: "attached", timeout: 15000 });
  if (cancel) await page.click("text=[ Cancel ]");
  else await page.click('button[type="submit"]');
}

/** Opens the app, clicks "Sign in", goes through the provider; resolves with start()'s result. */
export async function signIn(page, base, opts = {}, login = "alice") {
  await page.goto(appUrl(base, opts));
  assert.equal(await started(page), false, "signed out before sign-in");
  await page.click("#sign-in");
  await throughProvider(page, { login });
  await page.waitForURL((u) => u.pathname === "/app.html", { timeout: 15000 });
  return started(page);
}

/**
 * Signs in at the provider from the app page but holds the provider's redirect back to
 * `/auth/callback`: resolves with that URL, unused (the pending login stays open).
 * Playwright routes only the first request of a redirect chain, so the consent form's POST
 * is the one taken over: it and the provider's next redirect are made with the context's own
 * cookies, and the browser is shown a placeholder instead of following to the callback.
 */
export async function holdCallback(context, page, base, login, issuer) {
  let held;
  const pattern = `${issuer}/interaction/**`;
  await context.route(pattern, async (route) => {
    const req = route.request();
    if (req.method() !== "POST" || !(req.postData() || "").includes("prompt=consent")) return route.continue();
    let res = await route.fetch({ maxRedirects: 0 });
    let location = res.headers().location;
    while (location && !location.startsWith(`${base}/auth/callback`)) {
      res = await context.request.get(new URL(location, issuer).href, { maxRedirects: 0 });
      location = res.headers().location;
    }
    held = location;
    return route.fulfill({ status: 200, contentType: "text/plain", body: "held by the test" });
  });
  await page.goto(appUrl(base));
  assert.equal(await started(page), false);
  await page.click("#sign-in");
  await throughProvider(page, { login });
  await waitFor(() => held, { what: "the provider's redirect to /auth/callback" });
  await context.unroute(pattern);
  return held;
}

/** Registers the hooks of one file; returns the environment (set once `before` ran). */
export function useUpstream(options = {}) {
  const env = {
    contexts: [],
    pages: [],
    async newContext() {
      const context = await env.browser.newContext();
      // The server's strict CSP must hold on our own pages (the provider's pages have their own).
      await context.addInitScript((ours) => {
        if (location.origin !== ours) return;
        document.addEventListener("securitypolicyviolation", (e) => {
          console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`);
        });
      }, env.base);
      env.contexts.push(context);
      context.on("page", (p) => { if (!p.rec) { watch(p); env.pages.push(p); } });
      return context;
    },
    async newPage(context) {
      const page = await context.newPage();
      if (!page.rec) { watch(page); env.pages.push(page); }
      return page;
    },
  };
  before(async () => {
    Object.assign(env, await startUpstream(options));
    env.base = env.server.url;
    env.browser = await launchBrowser();
  });
  after(async () => {
    for (const c of env.contexts.splice(0)) await c.close().catch(() => {});
    if (env.browser) await env.browser.close().catch(() => {});
    if (env.server) await env.server.stop();
    if (env.provider) await env.provider.close();
  });
  afterEach(async (t) => {
    // A failed test shows the server's last log lines (one per request, never a token or a
    // secret, as the end of this hook checks): a CI run keeps no other trace of them.
    if (!t.passed && env.server) {
      const tail = env.server.stderr.slice(-120);
      console.log(`# server log, last ${tail.length} lines:\n${tail.map((l) => `#   ${l}`).join("\n")}`);
    }
    const pages = env.pages.splice(0);
    for (const c of env.contexts.splice(0)) await c.close().catch(() => {});
    for (const p of pages) {
      assert.deepEqual(p.rec.errors, [], `page ${p.url()} had uncaught errors`);
      const csp = p.rec.console.filter((m) => m.text.startsWith("CSP violation"));
      assert.deepEqual(csp, [], `page ${p.url()} broke the CSP`);
      assert.equal(p.rec.crashed, false, "a page crashed");
    }
    // No secret of the provider's or ours in the server's log lines.
    const log = env.server.stderr.join("\n");
    assert.ok(!log.includes(env.secret), "the client secret appeared in the server log");
  });
  return env;
}
