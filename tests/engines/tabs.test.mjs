// Several tabs — and several windows — of one browser (one cookie jar, Web Locks and
// BroadcastChannel): one refresh per cycle, logout everywhere, a new tab adopting the
// session, and the lock holder closed mid-refresh. The same list runs in Chromium, Firefox
// and WebKit (TW_ENGINE). In Firefox and WebKit a tab behind another one is hidden and its
// timers are throttled (about once a second); a separate window stays visible. Both must hold.
import { test } from "node:test";
import assert from "node:assert/strict";
import { useEnv, login, callApi, events, state, jti, waitFor, sleep, ENGINE } from "./harness.mjs";
import { sleepWatched, watchStalls, runStory, explainFailure } from "../support/timed-run.mjs";

const env = useEnv();
const RUN_MS = 20_000;
const TTL_S = 3;
const CYCLE_MS = (TTL_S * 1000) / 2; // a token shorter than 2 × skew refreshes at half-life

const allActive = (tabs) => waitFor(async () => {
  for (const t of tabs) if ((await state(t)) !== "active") return false;
  return true;
}, { timeoutMs: 5000, what: "every tab to be signed in" });

for (const type of ["tab", "window"]) {
  test(`${ENGINE}: 3 ${type}s calling the API every 500 ms for 20 s with a 3 s token share one refresh per cycle, with 0 reuse and every call 200`, async () => {
    await env.server.config({ accessTtlSeconds: TTL_S, leewaySeconds: 0 });
    const b = await env.openBrowser();
    const tabs = await b.openClients(env.server, 3, {}, { type });
    await login(tabs[0]);
    await allActive(tabs);
    await env.server.reset();
    const t0 = Date.now();
    for (const t of tabs) await t.eval(() => window.startLoop(500));
    const host = await sleepWatched(RUN_MS);
    const stats = [];
    for (const t of tabs) stats.push(await t.eval(() => window.stopLoop()));
    const runtime = Date.now() - t0;
    const visibility = [];
    for (const t of tabs) visibility.push(await t.eval(() => window.__rec.visibility.map(([s]) => s[0]).join("")));

    const c = await env.server.counters();
    const log = await env.server.log();
    // Cycles over the time the host ran (see tests/support/timed-run.mjs); after each stall
    // the token has expired and the first call refreshes off the schedule.
    const cycles = Math.ceil((runtime - host.stalledMs) / CYCLE_MS);
    const times = log.filter((e) => e.path === "/auth/refresh").map((e) => e.t);
    const gaps = times.slice(1).map((t, i) => t - times[i]);
    const calls = stats.reduce((s, x) => s + x.calls, 0);
    const summary = `${ENGINE} ${b.version}, 3 ${type}s, ${(runtime / 1000).toFixed(1)} s ` +
      `(host stalled ${host.stalls.length} times, ${host.stalledMs} ms): refresh calls ${c.refreshRequests} ` +
      `over ${cycles} cycles (min gap ${Math.min(...gaps)} ms, max gap ${Math.max(...gaps)} ms); ` +
      `reuseDetected ${c.reuseDetected}, familiesRevoked ${c.familiesRevoked}; API calls ${calls} per tab ` +
      `${stats.map((s) => s.calls).join("/")} (apiOk ${c.apiOk}, apiUnauthorized ${c.apiUnauthorized}); ` +
      `visibility (v=visible, h=hidden) ${visibility.join(" ")}`;
    console.log(summary);

    explainFailure(() => {
      assert.equal(c.reuseDetected, 0, summary);
      assert.equal(c.familiesRevoked, 0, summary);
      assert.ok(c.refreshRequests <= cycles + 2 + host.stalls.length, summary);
      assert.ok(c.refreshRequests >= cycles - 3, `too few refreshes for a ${TTL_S} s token: ${summary}`);
      assert.equal(c.refreshesServed, c.refreshRequests, summary);
      for (const [i, s] of stats.entries()) {
        assert.deepEqual(s.errors, [], `tab ${i}: ${JSON.stringify(s.errors)}`);
        assert.deepEqual(Object.keys(s.statuses), ["200"], `tab ${i}: ${JSON.stringify(s.statuses)}`);
        // A hidden tab's timers run about once a second in Firefox and WebKit: its loop
        // makes fewer calls, but every one of them must succeed.
        assert.ok(s.calls >= RUN_MS / 1000 * 0.6, `tab ${i} made only ${s.calls} calls`);
      }
      assert.equal(c.apiOk, c.apiCalls, summary);
      assert.equal(c.apiExpiredTokens, 0, summary);
      assert.equal(c.liveFamilies, c.familiesWithOneLiveToken, summary);
    }, () => runStory(log, stats.map((s) => s.trace), t0));
  });

  test(`${ENGINE}: logout in one of three ${type}s signs the other two out with reason tab, and their next API call carries no Bearer`, async () => {
    const b = await env.openBrowser();
    const [a, m, z] = await b.openClients(env.server, 3, {}, { type });
    await login(a);
    await allActive([a, m, z]);
    for (const t of [a, m, z]) assert.equal(await callApi(t), 200);
    await m.eval(() => window.tw.logout());
    for (const t of [a, z]) {
      await waitFor(async () => (await events(t)).some((e) => e.type === "signedOut"),
        { timeoutMs: 3000, intervalMs: 20, what: "signedOut in another tab" });
      assert.deepEqual((await events(t)).filter((e) => e.type === "signedOut").map((e) => e.reason), ["tab"]);
      assert.equal(await state(t), "signedOut");
      assert.equal(await t.eval(() => window.tw.getToken()), null);
    }
    assert.deepEqual((await events(m)).filter((e) => e.type === "signedOut").map((e) => e.reason), ["logout"]);
    // The channel message and the lag between tabs, seen from the pages' own clocks.
    const sentAt = (await events(m)).find((e) => e.type === "signedOut").at;
    const lags = [];
    for (const t of [a, z]) lags.push((await events(t)).find((e) => e.type === "signedOut").at - sentAt);
    console.log(`${ENGINE}: logout reached the other ${type}s after ${lags.join(" / ")} ms`);
    assert.ok(lags.every((l) => l < 1500), `logout reached other ${type}s after ${lags} ms`);

    await env.server.reset();
    assert.equal(await callApi(a), 401);
    assert.equal(await callApi(z), 401);
    const log = await env.server.log();
    assert.deepEqual(log.filter((e) => e.path === "/api/me").map((e) => e.bearer), ["none", "none"]);
    assert.equal((await env.server.counters()).refreshRequests, 0, "a signed-out tab tried to refresh");
    // The cookie is gone for every tab: a fresh start() finds no session.
    assert.equal(await z.eval(() => window.tw.start()), false);
  });
}

test(`${ENGINE}: a new tab opened while another tab holds a live token signs in over the channel with zero refresh calls`, async () => {
  const b = await env.openBrowser();
  const a = await b.openClient(env.server);
  await login(a);
  await env.server.reset();
  const n = await b.openClient(env.server);
  assert.equal(await n.eval(() => window.tw.start()), true);
  assert.equal(await state(n), "active");
  assert.equal(await jti(n), await jti(a));
  assert.equal(await callApi(n), 200);
  const c = await env.server.counters();
  assert.equal(c.refreshRequests, 0);
  assert.deepEqual((await events(n)).map((e) => e.type), ["signedIn"]);
});

// In WebKit, m's polls after closing a are where WebKitWebDriver sometimes ran the scripts in
// z's page (see Tab in harness.mjs): m's refresh had settled, but the test read z's window.
test(`${ENGINE}: when the tab holding the refresh lock is closed mid-refresh, the other tabs get a valid token within the lock time limit, with no reuse`, async () => {
  const opts = { requestTimeoutMs: 2000 };
  const lockLimitMs = opts.requestTimeoutMs + 2000;
  const b = await env.openBrowser();
  const [a, m, z] = await b.openClients(env.server, 3, opts);
  await login(a);
  await allActive([a, m, z]);
  await env.server.reset();
  await env.server.faults([{ kind: "delay", ms: 3000 }]);

  // a takes the lock and waits on the slow server; m asks for a refresh and queues.
  await a.eval(() => { window.tw.refresh().catch(() => {}); });
  await waitFor(async () => (await env.server.counters()).refreshRequests === 1,
    { what: "a's refresh to reach the server" });
  await m.eval(() => { window.pending = window.tw.refresh().then(() => "ok", (e) => e.code); });
  await sleep(200);
  const t0 = Date.now();
  const host = watchStalls(); // timed on the host's running time
  await a.close();

  const result = await waitFor(() => m.eval(() => window.pending), { timeoutMs: lockLimitMs + 15_000, what: "m's refresh to settle" });
  const recoveredIn = Date.now() - t0 - host.stop().stalledMs;
  assert.equal(result, "ok");
  assert.ok(recoveredIn <= lockLimitMs + 500, `m got a token ${recoveredIn} ms after the holder died`);
  assert.equal(await callApi(m), 200);
  await waitFor(async () => (await jti(z)) === (await jti(m)), { timeoutMs: 2000, what: "z to adopt m's token" });
  assert.equal(await callApi(z), 200);

  await sleep(3500); // the dead tab's request finishes sleeping in the server
  const further = await m.eval(() => window.tw.refresh().then(() => "ok", (e) => e.code));
  const final = await env.server.counters();
  const refreshes = (await env.server.log()).filter((e) => e.path === "/auth/refresh").map((e) => `${e.status}@${e.t}`);
  console.log(`${ENGINE}: lock holder closed mid-refresh at ${t0}: the next tab recovered in ${recoveredIn} ms; ` +
    `refreshRequests ${final.refreshRequests}, reuseDetected ${final.reuseDetected}, refreshes ${refreshes.join(" ")}, later refresh ${further}`);
  assert.equal(final.reuseDetected, 0);
  assert.equal(further, "ok");
  assert.equal(await callApi(z), 200);
});
