// Issue 5: several tabs of one browser context (they share the cookie jar, Web Locks and
// BroadcastChannel), against the reference server.
import { test } from "node:test";
import assert from "node:assert/strict";
import { useEnv, login, callApi, events, jti, waitFor, sleep, watchStalls } from "./harness.mjs";

const env = useEnv();

const allActive = (pages) => waitFor(async () => {
  for (const p of pages) if ((await p.evaluate(() => tw.state)) !== "active") return false;
  return true;
}, { timeoutMs: 3000, what: "every tab to be signed in" });

test("a tab that asks for a refresh while another tab holds the lock adopts that tab's token without a refresh call", async () => {
  const context = await env.newContext();
  const [a, b] = await env.openTabs(context, 2);
  await login(a);
  await allActive([a, b]);
  const before = await jti(a);
  await env.server.reset();
  await env.server.faults([{ kind: "delay", ms: 1000 }]);

  await a.evaluate(() => { window.pending = tw.refresh().then(() => "ok", (e) => e.code); });
  await sleep(200);
  const t0 = Date.now();
  const bResult = await b.evaluate(() => tw.refresh().then(() => "ok", (e) => e.code));
  const waited = Date.now() - t0;
  assert.equal(bResult, "ok");
  assert.equal(await a.evaluate(() => window.pending), "ok");
  assert.ok(waited >= 500, `b's refresh settled after ${waited} ms, before a's delayed refresh could`);

  const c = await env.server.counters();
  assert.equal(c.refreshRequests, 1, "the waiting tab rotated the refresh token again");
  assert.equal(c.reuseDetected, 0);
  assert.notEqual(await jti(a), before);
  assert.equal(await jti(b), await jti(a));
  const evs = await events(b);
  assert.ok(evs.some((e) => e.type === "refreshed" && e.source === "tab"), JSON.stringify(evs));
  assert.ok(!evs.some((e) => e.type === "refreshed" && e.source === "self"), JSON.stringify(evs));
  assert.equal(await callApi(b), 200);
});

test("two tabs whose tokens are due and that refresh at the same moment make exactly one refresh call", async () => {
  await env.server.config({ accessTtlSeconds: 3, leewaySeconds: 0 });
  const context = await env.newContext();
  const [a, b] = await env.openTabs(context, 2);
  await login(a);
  await allActive([a, b]);
  // Both tabs' timers fire at half-life (1.5 s); the first call is slowed down so the two
  // attempts overlap for sure, then both tabs also force a refresh at once.
  await env.server.reset();
  await env.server.faults([{ kind: "delay", ms: 400 }]);
  await sleep(1000);
  const [ra, rb] = await Promise.all([
    a.evaluate(() => tw.refresh().then(() => "ok", (e) => e.code)),
    b.evaluate(() => tw.refresh().then(() => "ok", (e) => e.code)),
  ]);
  assert.deepEqual([ra, rb], ["ok", "ok"]);
  const c = await env.server.counters();
  assert.equal(c.refreshRequests, 1);
  assert.equal(c.reuseDetected, 0);
  assert.equal(await jti(a), await jti(b));
  assert.equal(await callApi(a), 200);
  assert.equal(await callApi(b), 200);
});

test("logout in one of three tabs signs the other two out with reason tab within 1 s, and their next API call carries no Bearer", async () => {
  const context = await env.newContext();
  const [a, b, c] = await env.openTabs(context, 3);
  await login(a);
  await allActive([a, b, c]);
  for (const p of [a, b, c]) assert.equal(await callApi(p), 200);

  const t0 = Date.now();
  await b.evaluate(() => tw.logout());
  for (const p of [a, c]) {
    await waitFor(async () => (await events(p)).some((e) => e.type === "signedOut"),
      { timeoutMs: 1000, intervalMs: 20, what: "signedOut in another tab" });
  }
  const took = Date.now() - t0;
  for (const p of [a, c]) {
    const evs = await events(p);
    assert.deepEqual(evs.filter((e) => e.type === "signedOut").map((e) => e.reason), ["tab"]);
    assert.equal(await p.evaluate(() => tw.state), "signedOut");
    assert.equal(await p.evaluate(() => tw.getToken()), null);
  }
  assert.deepEqual((await events(b)).filter((e) => e.type === "signedOut").map((e) => e.reason), ["logout"]);
  assert.ok(took < 1000, `other tabs signed out after ${took} ms`);

  await env.server.reset();
  assert.equal(await callApi(a), 401);
  assert.equal(await callApi(c), 401);
  const log = await env.server.log();
  const api = log.filter((e) => e.path === "/api/me");
  assert.deepEqual(api.map((e) => e.bearer), ["none", "none"]);
  assert.equal((await env.server.counters()).refreshRequests, 0, "a signed-out tab tried to refresh");
  const cookies = await context.cookies(env.server.url + "/auth/refresh");
  assert.equal(cookies.find((x) => x.name === "__Secure-tw_refresh"), undefined);
});

test("a new tab opened while another tab holds a live token signs in over the channel with zero refresh calls", async () => {
  const context = await env.newContext();
  const a = await env.openTab(context);
  await login(a);
  await env.server.reset();
  const b = await env.openTab(context);
  const t0 = Date.now();
  assert.equal(await b.evaluate(() => tw.start()), true);
  const took = Date.now() - t0;
  assert.equal(await b.evaluate(() => tw.state), "active");
  assert.equal(await jti(b), await jti(a));
  assert.equal(await callApi(b), 200);
  const c = await env.server.counters();
  assert.equal(c.refreshRequests, 0);
  assert.equal(c.apiOk, 1);
  assert.ok(took < 1000, `start() took ${took} ms`);
  const evs = await events(b);
  assert.deepEqual(evs.map((e) => e.type), ["signedIn"]);
});

test("when the tab holding the refresh lock is closed mid-refresh, the other tabs get a valid token within the lock time limit", async () => {
  const opts = { requestTimeoutMs: 2000 };
  const lockLimitMs = opts.requestTimeoutMs + 2000;
  const context = await env.newContext();
  const [a, b, c] = await env.openTabs(context, 3, opts);
  await login(a);
  await allActive([a, b, c]);
  await env.server.reset();
  await env.server.faults([{ kind: "delay", ms: 3000 }]);

  // a takes the lock and waits on the slow server; b asks for a refresh and queues.
  await a.evaluate(() => { tw.refresh().catch(() => {}); });
  await waitFor(async () => (await env.server.counters()).refreshRequests === 1,
    { what: "a's refresh to reach the server" });
  await b.evaluate(() => {
    window.pending = tw.refresh().then(() => "ok", (e) => e.code);
  });
  await sleep(200);
  const t0 = Date.now();
  const host = watchStalls(); // timed on the host's running time
  await a.close();

  const bResult = await b.evaluate(() => window.pending);
  const recoveredIn = Date.now() - t0 - host.stop().stalledMs;
  assert.equal(bResult, "ok");
  assert.ok(recoveredIn <= lockLimitMs, `b got a token ${recoveredIn} ms after the holder died`);
  assert.equal(await callApi(b), 200);
  await waitFor(async () => (await jti(c)) === (await jti(b)), { timeoutMs: 1000, what: "c to adopt b's token" });
  assert.equal(await callApi(c), 200);

  // The dead tab's request is still sleeping in the server. What happens to it, and to
  // the refresh-token family, once its 3 s are up?
  await sleep(3500);
  const after = await env.server.counters();
  const log = await env.server.log();
  const refreshes = log.filter((e) => e.path === "/auth/refresh").map((e) => e.status);
  const further = await b.evaluate(() => tw.refresh().then(() => "ok", (e) => e.code));
  const final = await env.server.counters();
  console.log(`lock holder closed mid-refresh: b recovered in ${recoveredIn} ms; ` +
    `refresh statuses logged ${JSON.stringify(refreshes)}; refreshRequests=${after.refreshRequests} refreshesServed=${after.refreshesServed} ` +
    `reuseDetected=${final.reuseDetected} familiesRevoked=${final.familiesRevoked}; a later refresh: ${further}`);
  assert.equal(final.reuseDetected, 0, "the dead tab's refresh was completed by the server and counted as reuse");
  assert.equal(further, "ok");
  assert.equal(await callApi(c), 200);
});

test("a logout in one tab while another tab's refresh is in flight does not bring the session back", async () => {
  const context = await env.newContext();
  const [a, b] = await env.openTabs(context, 2);
  await login(a);
  await allActive([a, b]);
  await env.server.reset();
  await env.server.faults([{ kind: "delay", ms: 1000 }]);
  await a.evaluate(() => { window.pending = tw.refresh().then(() => "ok", (e) => e.code); });
  await waitFor(async () => (await env.server.counters()).refreshRequests === 1, { what: "a's refresh in flight" });
  await b.evaluate(() => tw.logout());
  const aResult = await a.evaluate(() => window.pending);
  await sleep(300);
  for (const p of [a, b]) {
    assert.equal(await p.evaluate(() => tw.state), "signedOut");
    assert.equal(await p.evaluate(() => tw.getToken()), null);
  }
  assert.notEqual(aResult, "ok", "the refresh that was in flight during logout succeeded");
  const aEvents = (await events(a)).map((e) => e.type + (e.reason ? ":" + e.reason : ""));
  assert.deepEqual(aEvents.filter((e) => e.startsWith("signed")), ["signedIn", "signedOut:tab"]);
  assert.equal(await callApi(a), 401);
  const c = await env.server.counters();
  assert.equal(c.logouts, 1);
  assert.equal(c.refreshesServed, 0, "the server rotated a token of a logged-out family");
  assert.equal(c.reuseDetected, 0);
  const cookies = await context.cookies(env.server.url + "/auth/refresh");
  assert.equal(cookies.find((x) => x.name === "__Secure-tw_refresh"), undefined);
});
