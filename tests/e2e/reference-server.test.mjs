// Issue 4: the client against the reference server, one tab at a time.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  useEnv, login, callApi, events, stateChanges, waitFor, sleep, countLog, ensureArtifactsDir, sleepWatched, watchStalls,
} from "./harness.mjs";

const env = useEnv();

test("the refresh cookie is stored by Chromium on http://127.0.0.1 as HttpOnly, Secure, SameSite=Strict, Path=/auth", async () => {
  const context = await env.newContext();
  const page = await env.openTab(context);
  await login(page);
  const cookies = await context.cookies(env.server.url + "/auth/refresh");
  const c = cookies.find((x) => x.name === "__Secure-tw_refresh");
  assert.ok(c, `Chromium did not store __Secure-tw_refresh (cookies for /auth: ${cookies.map((x) => x.name)})`);
  assert.equal(c.httpOnly, true);
  assert.equal(c.secure, true);
  assert.equal(c.sameSite, "Strict");
  assert.equal(c.path, "/auth");
  assert.equal(c.domain, "127.0.0.1");
  // Path=/auth: the cookie is not sent to the page or the API.
  const forPage = await context.cookies(env.server.url + "/api/me");
  assert.equal(forPage.find((x) => x.name === "__Secure-tw_refresh"), undefined);
  // Its anchor is host-only (__Host-, Path=/): a sibling host cannot plant a refresh cookie
  // that counts. It is a hash of the token, not the token, and no script reads it.
  const a = forPage.find((x) => x.name === "__Host-tw_anchor");
  assert.ok(a, `no anchor cookie (cookies for /: ${forPage.map((x) => x.name)})`);
  assert.deepEqual([a.httpOnly, a.secure, a.sameSite, a.path, a.domain], [true, true, "Strict", "/", "127.0.0.1"]);
  assert.notEqual(a.value, c.value);
  assert.ok(!(await page.evaluate(() => document.cookie)).includes("tw_"), "HttpOnly");
});

test("a signed-in page calls the API with a valid Bearer, refreshes silently before expiry, and logout clears the cookie", async () => {
  await env.server.config({ accessTtlSeconds: 3, leewaySeconds: 0 });
  const context = await env.newContext();
  const page = await env.openTab(context);
  await login(page);
  assert.equal(await page.evaluate(() => tw.state), "active");

  assert.equal(await callApi(page), 200);
  let log = await env.server.log();
  const api = log.filter((e) => e.path === "/api/me");
  assert.deepEqual(api.map((e) => [e.status, e.bearer]), [[200, "valid"]]);

  // No user action: the client's timer refreshes at half of the 3 s lifetime.
  // Timed on the host's running time: a stall of the whole machine is nobody's lateness.
  const t0 = Date.now();
  const host = watchStalls();
  await waitFor(async () => (await env.server.counters()).refreshesServed >= 1,
    { timeoutMs: 10_000, what: "a silent refresh seen by the server" });
  const took = Date.now() - t0 - host.stop().stalledMs;
  assert.ok(took < 2500, `silent refresh came ${took} ms after login (host stalls left out: ${JSON.stringify(host.stalls)}), expected about 1.5 s`);
  // The server counts the refresh before its answer reaches the page: wait for the page's event.
  await waitFor(async () => (await events(page)).some((e) => e.type === "refreshed" && e.source === "self"),
    { timeoutMs: 5000, what: "the page's own refreshed event" });
  log = await env.server.log();
  const refresh = log.filter((e) => e.path === "/auth/refresh");
  assert.ok(refresh.every((e) => e.status === 200 && e.csrf && e.cookie), JSON.stringify(refresh));

  // After the token the page was first given has expired, calls still go out fresh.
  await sleep(3200);
  assert.equal(await callApi(page), 200);

  await page.evaluate(() => tw.logout());
  assert.equal(await page.evaluate(() => tw.state), "signedOut");
  const c = await env.server.counters();
  assert.equal(c.logouts, 1);
  const cookies = await context.cookies(env.server.url + "/auth/refresh");
  assert.equal(cookies.find((x) => x.name === "__Secure-tw_refresh"), undefined, "cookie still in the jar after logout");
  assert.equal(cookies.find((x) => x.name === "__Host-tw_anchor"), undefined, "anchor still in the jar after logout");

  // A later refresh from the page is refused, and the client sends no Bearer.
  const status = await page.evaluate(async () => (await fetch("/auth/refresh", {
    method: "POST", credentials: "include", headers: { "X-Requested-With": "tokenwarden" },
  })).status);
  assert.equal(status, 401);
  assert.equal(await callApi(page), 401);
  log = await env.server.log();
  assert.equal(log.filter((e) => e.path === "/api/me").at(-1).bearer, "none");
  assert.equal((await env.server.counters()).reuseDetected, 0);
});

test("no request to /api/me carries an expired token while a page calls the API every 300 ms for 6 s", async () => {
  await env.server.config({ accessTtlSeconds: 2, leewaySeconds: 0 });
  const context = await env.newContext();
  const page = await env.openTab(context);
  await login(page);
  await page.evaluate(() => window.startLoop(300));
  await sleepWatched(6000); // 6 s of the host's running time
  const stats = await page.evaluate(() => window.stopLoop());
  const c = await env.server.counters();
  const log = await env.server.log();
  assert.deepEqual(stats.errors, []);
  assert.deepEqual(Object.keys(stats.statuses), ["200"], JSON.stringify(stats.statuses));
  assert.equal(c.apiExpiredTokens, 0);
  assert.equal(c.apiUnauthorized, 0);
  const bearers = new Set(log.filter((e) => e.path === "/api/me").map((e) => e.bearer));
  assert.deepEqual([...bearers], ["valid"]);
  assert.ok(c.refreshesServed >= 4, `only ${c.refreshesServed} refreshes in 6 s with a 2 s token`);
});

test("after a reload, start() restores the session with exactly one refresh call", async () => {
  const context = await env.newContext();
  const page = await env.openTab(context);
  await login(page);
  await env.server.reset();
  await page.reload();
  await page.waitForFunction(() => window.twReady === true);
  assert.equal(await page.evaluate(() => tw.state), "signedOut");
  assert.equal(await page.evaluate(() => tw.start()), true);
  assert.equal(await page.evaluate(() => tw.state), "active");
  assert.equal(await callApi(page), 200);
  await sleep(300);
  const c = await env.server.counters();
  assert.equal(c.refreshRequests, 1);
  assert.equal(c.refreshesServed, 1);
  assert.equal(c.apiOk, 1);
  const evs = await events(page);
  assert.deepEqual(evs.map((e) => e.type), ["signedIn"]);
  // stateChanged told the page about the refresh start() made.
  assert.deepEqual(await stateChanges(page), ["refreshing", "active"]);
});

test("start() without a session resolves false after one refresh call", async () => {
  const context = await env.newContext();
  const page = await env.openTab(context);
  assert.equal(await page.evaluate(() => tw.start()), false);
  assert.equal(await page.evaluate(() => tw.state), "signedOut");
  const c = await env.server.counters();
  assert.equal(c.refreshRequests, 1);
  assert.equal(c.refreshRejected, 1);
  assert.equal(await callApi(page), 401);
  assert.equal((await env.server.log()).filter((e) => e.path === "/api/me")[0].bearer, "none");
});

test("the token never reaches localStorage, sessionStorage, IndexedDB, the Cache API, document.cookie, the DOM or the console", async () => {
  await env.server.config({ accessTtlSeconds: 3, leewaySeconds: 0 });
  const context = await env.newContext();
  // The demo page too: it renders claims and the API answer.
  const demo = await context.newPage();
  await demo.goto(env.server.url + "/");
  await demo.locator("#wasm-status").filter({ hasText: "wasm loaded" }).waitFor();
  const page = await env.openTab(context);
  await login(page);
  assert.equal(await callApi(page), 200);
  await demo.locator("#state").filter({ hasText: /active|refreshing/ }).waitFor({ timeout: 3000 });
  await demo.click("#call-api");
  await demo.locator("#api-result").filter({ hasText: "sub" }).waitFor();
  // Let a couple of refreshes and cross-tab hand-overs happen.
  await sleep(3500);
  assert.ok((await env.server.counters()).refreshesServed >= 1);

  const consoleText = [...page.rec.console, ...demo.rec.console].map((m) => m.text);
  // The check itself runs in the test page, against the token it holds, for every
  // same-origin storage (shared by both pages) and both pages' DOM and console.
  const demoHtml = await demo.content();
  const result = await page.evaluate(async ({ consoleText, demoHtml }) => {
    const token = await window.tw.getToken();
    const parts = token.split(".");
    const needles = [token, parts[1], parts[2]].filter((s) => s && s.length > 20);
    const has = (s) => typeof s === "string" && needles.some((n) => s.includes(n));
    const out = {};
    const ls = Object.keys(localStorage).map((k) => k + "=" + localStorage.getItem(k));
    out.localStorage = ls.some(has);
    const ss = Object.keys(sessionStorage).map((k) => k + "=" + sessionStorage.getItem(k));
    out.sessionStorage = ss.some(has);
    const dbs = indexedDB.databases ? await indexedDB.databases() : [];
    out.indexedDBNames = dbs.some((d) => has(d.name));
    out.indexedDBCount = dbs.length;
    let cacheHit = false;
    const names = await caches.keys();
    for (const n of names) {
      if (has(n)) cacheHit = true;
      const cache = await caches.open(n);
      for (const req of await cache.keys()) {
        if (has(req.url) || has(req.headers.get("authorization") || "")) cacheHit = true;
        const res = await cache.match(req);
        if (res && has(await res.text())) cacheHit = true;
      }
    }
    out.cacheApi = cacheHit;
    out.cacheNames = names.length;
    out.documentCookie = has(document.cookie);
    out.cookieVisible = document.cookie.includes("tw_refresh");
    out.dom = has(document.documentElement.outerHTML);
    out.demoDom = has(demoHtml);
    out.console = consoleText.some(has);
    out.title = has(document.title) || has(location.href);
    return out;
  }, { consoleText, demoHtml });
  assert.deepEqual(result, {
    localStorage: false, sessionStorage: false, indexedDBNames: false, indexedDBCount: 0,
    cacheApi: false, cacheNames: 0, documentCookie: false, cookieVisible: false,
    dom: false, demoDom: false, console: false, title: false,
  });
});

test("the demo page runs under its strict CSP: signs in, calls the API, no violation; saved as a screenshot", async () => {
  const context = await env.newContext({ viewport: { width: 1280, height: 1100 } });
  await context.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener("securitypolicyviolation", (e) => {
      window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  const page = await context.newPage();
  const response = await page.goto(env.server.url + "/");
  const csp = response.headers()["content-security-policy"] || "";
  assert.match(csp, /script-src 'self' 'wasm-unsafe-eval'/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.equal(response.headers()["x-content-type-options"], "nosniff");
  await page.locator("#wasm-status").filter({ hasText: "wasm loaded" }).waitFor();
  await page.locator("#message").filter({ hasText: "No session yet" }).waitFor();
  await page.fill("#username", "demo");
  await page.fill("#password", "demo");
  await page.click("#login");
  await page.locator("#state").filter({ hasText: "active" }).waitFor();
  assert.match(await page.textContent("#expires-in"), /\d/);
  assert.match(await page.textContent("#claims"), /tokenwarden-demo/);
  await page.click("#call-api");
  await page.locator("#api-result").filter({ hasText: "sub" }).waitFor();
  const timeline = await page.locator("#timeline li").allTextContents();
  assert.ok(timeline.some((t) => t.includes("signedIn")), timeline.join("\n"));
  const log = await env.server.log();
  assert.deepEqual(log.filter((e) => e.path === "/api/me").map((e) => [e.status, e.bearer]), [[200, "valid"]]);
  assert.equal(countLog(log, "POST", "/auth/login"), 1);
  assert.deepEqual(await page.evaluate(() => window.__cspViolations), []);
  await page.screenshot({ path: join(ensureArtifactsDir(), "demo.png"), fullPage: true });
});

test("a 401 for a token whose signing key was retired makes tw.fetch refresh once and replay the request", async () => {
  const context = await env.newContext();
  const page = await env.openTab(context);
  await login(page);
  assert.equal(await callApi(page), 200);
  // The server keeps the signing key and 4 previous ones: 5 rotations retire ours.
  for (let i = 0; i < 5; i++) await env.server.rotateKey();
  await env.server.reset();
  assert.equal(await callApi(page), 200);
  const log = await env.server.log();
  const seen = log.filter((e) => e.path === "/api/me" || e.path === "/auth/refresh")
    .map((e) => `${e.path}:${e.status}${e.path === "/api/me" ? ":" + e.bearer : ""}`);
  assert.deepEqual(seen, ["/api/me:401:invalid", "/auth/refresh:200", "/api/me:200:valid"]);
  assert.equal(await page.evaluate(() => tw.state), "active");
});

test("client.fetch: a URL object and a Request both get the Bearer; an app's own Authorization is sent as it is, on the fast path (string URL) and the full path (Request) alike", async () => {
  const context = await env.newContext();
  const page = await env.openTab(context);
  await login(page);
  await env.server.reset();
  const statuses = await page.evaluate(async () => {
    const own = { headers: { Authorization: "Bearer app-own" } };
    return [
      (await tw.fetch(new URL("/api/me", location.href))).status,
      (await tw.fetch(new Request("/api/me"))).status,
      (await tw.fetch("/api/me", own)).status,
      (await tw.fetch(new Request("/api/me", own))).status,
    ];
  });
  const log = await env.server.log();
  const me = log.filter((e) => e.path === "/api/me").map((e) => e.bearer);
  // The app's "Bearer app-own" is refused by the server (401) and, not being ours, never
  // makes the client refresh or replay.
  assert.deepEqual(me, ["valid", "valid", "invalid", "invalid"]);
  assert.equal(countLog(log, "POST", "/auth/refresh"), 0);
  assert.deepEqual(statuses.slice(0, 2), [200, 200]);
  assert.deepEqual(statuses.slice(2, 4), [401, 401]);
});

test("a handler that panics answers 500 and the server goes on serving (it unwinds, not aborts; the release profile: www/server/tests/release_profile.rs)", async () => {
  const res = await fetch(env.server.url + "/test/panic", { method: "POST" });
  assert.equal(res.status, 500);
  const body = await res.json();
  assert.equal(body.error, "server_error");
  assert.doesNotMatch(JSON.stringify(body), /deliberate/, "the panic message stays out of the response");
  const health = await fetch(env.server.url + "/healthz");
  assert.equal(health.status, 200);
  // and a user can still sign in
  const context = await env.newContext();
  const page = await env.openTab(context);
  await login(page);
  assert.equal(await callApi(page), 200);
});
