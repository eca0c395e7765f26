// Issue 8, chaos end to end: one page keeps a session alive through 300+ refresh cycles of
// a 2 s access token (refresh at half-life, about once a second, in real time) while the
// reference server fails a seeded-random 30 % of the refresh calls in every way its test
// mode knows. The page calls the API every 300 ms and getToken() at random meanwhile.
import { test } from "node:test";
import assert from "node:assert/strict";
import { useEnv, waitFor, sleep, watchStalls } from "./harness.mjs";

const env = useEnv();

/** Refresh calls to reach (each is one cycle of the refresh machinery). */
const CYCLES = Number(process.env.TW_CHAOS_CYCLES || 300);
/** Hard stop of the fault phase, whatever the count (the suite must stay short). */
const MAX_MS = Number(process.env.TW_CHAOS_MAX_MS || 360_000);
const SEED = 0x7e57c0de;
const FAULT_RATE = 0.3;

/** mulberry32: small, fixed-seed PRNG, so every run injects the same plan. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const FAULTS = {
  "500": { kind: "status", status: 500 },
  "503+Retry-After": { kind: "retryAfter", status: 503, retryAfterSeconds: 1 },
  "429": { kind: "status", status: 429 },
  hang: { kind: "hang" },
  malformed: { kind: "malformed" },
  html: { kind: "html" },
  html200: { kind: "html200" },
  empty: { kind: "empty" },
  missingToken: { kind: "missingToken" },
  expired: { kind: "expired" },
};
const KINDS = Object.keys(FAULTS);

/** The plan: for each refresh call in order, a fault kind or "ok" (a 0–150 ms delay fault,
 *  which refreshes normally: the queue is FIFO, one entry per call). */
function plan(n) {
  const rnd = prng(SEED);
  const out = [];
  for (let i = 0; i < n; i++) {
    if (rnd() < FAULT_RATE) {
      const kind = KINDS[Math.floor(rnd() * KINDS.length)];
      out.push({ kind, fault: FAULTS[kind] });
    } else {
      out.push({ kind: "ok", fault: { kind: "delay", ms: Math.floor(rnd() * 150) } });
    }
  }
  return out;
}

/** /test/log keeps the last 2000 requests: poll it and keep the union. */
function logCollector(server) {
  const seen = new Map();
  return {
    async poll() {
      for (const e of await server.log()) seen.set(`${e.t}|${e.method}|${e.path}|${e.status}|${e.bearer}`, e);
    },
    entries: () => [...seen.values()].sort((a, b) => a.t - b.t),
  };
}

const minGap = (times) => {
  let m = Infinity;
  for (let i = 1; i < times.length; i++) m = Math.min(m, times[i] - times[i - 1]);
  return m;
};

test(`chaos: ${CYCLES}+ refresh cycles of a 2 s token while 30 % of refreshes fail (seed ${SEED.toString(16)}): the session survives every outage, no expired token reaches the API, at most one refresh a second, every promise settles`, async () => {
  const server = env.server;
  await server.config({ accessTtlSeconds: 2, leewaySeconds: 0 });
  const faults = plan(CYCLES + 200);
  // The longest run of consecutive failures in the plan decides how many attempts the
  // client must be allowed before it gives up (the default is 5).
  let longest = 0;
  for (let i = 0, run = 0; i < faults.length; i++) {
    run = faults[i].kind === "ok" ? 0 : run + 1;
    longest = Math.max(longest, run);
  }
  const options = {
    requestTimeoutMs: 1500,
    retry: { maxAttempts: Math.max(5, longest + 2), baseDelayMs: 1000, maxDelayMs: 1000 },
  };

  const context = await env.newContext();
  const page = await context.newPage();
  await page.goto(`${server.url}/e2e/hostile.html?opts=${encodeURIComponent(JSON.stringify(options))}`);
  await page.waitForFunction(() => window.twReady === true || window.twError, null, { timeout: 10000 });
  assert.equal(await page.evaluate(() => window.twError), undefined);

  await page.evaluate(() => window.login());
  await server.reset();
  await server.faults(faults.map((f) => f.fault));
  const log = logCollector(server);

  // The page's own load: tw.fetch('/api/me') every ~300 ms, tw.getToken() at random
  // moments (0–700 ms apart), each promise tracked until it settles.
  await page.evaluate(() => {
    let seed = 12345;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 4294967296);
    const chaos = (window.chaos = { running: true, api: [], tokens: { ok: 0, nulls: 0, rejected: {} }, loops: 2 });
    (async () => {
      while (chaos.running) {
        const t0 = performance.timeOrigin + performance.now();
        const r = await window.track("fetch", window.tw.fetch("/api/me"));
        const t1 = performance.timeOrigin + performance.now();
        chaos.api.push({ t0, t1, status: r.ok ? r.value.status : undefined, code: r.ok ? undefined : r.code });
        const wait = 300 - (t1 - t0);
        if (wait > 0) await new Promise((res) => setTimeout(res, wait));
      }
      chaos.loops--;
    })();
    (async () => {
      while (chaos.running) {
        await new Promise((res) => setTimeout(res, rnd() * 700));
        // Not awaited: several may overlap a refresh in flight.
        window.track("getToken", window.tw.getToken()).then((r) => {
          if (!r.ok) chaos.tokens.rejected[r.code] = (chaos.tokens.rejected[r.code] || 0) + 1;
          else if (r.value === null) chaos.tokens.nulls++;
          else chaos.tokens.ok++;
        });
      }
      chaos.loops--;
    })();
  });

  const t0 = Date.now();
  // Host stalls (this process, the server and the browser all stopped) are counted for one
  // check below: the page/server agreement on refresh calls.
  const host = watchStalls();
  const states = [];
  let lastPoll = 0;
  for (;;) {
    await sleep(1000);
    const c = await server.counters();
    states.push({ t: Date.now(), state: await page.evaluate(() => window.tw.state) });
    if (Date.now() - lastPoll > 15000) { await log.poll(); lastPoll = Date.now(); }
    // The deadline counts the host's running time: a stall adds its length (stall injection,
    // 2 s every 9 s, left 271 cycles in 361 s of wall time).
    if (c.refreshRequests >= CYCLES || Date.now() - t0 > MAX_MS + host.stalledMs) break;
    // A session that ended would stop refreshing: no point in waiting for the deadline.
    if (states.at(-1).state === "signedOut") break;
  }
  const faultPhaseMs = Date.now() - t0;

  // The faults stop: whatever is left in the queue goes, and the client must come back
  // to a valid token on its own (its backoff is at most 2 s, plus a hang's 1.5 s).
  await server.clearFaults();
  const used = (await server.counters()).refreshRequests;
  await waitFor(async () => (await page.evaluate(() => window.tw.state)) === "active"
    && (await page.evaluate(() => window.tw.getToken().then((t) => t !== null, () => false))),
  { timeoutMs: 10000, what: "the client back to an active session once the faults stop" });
  await sleep(2500); // a couple of clean cycles with the API loop still running

  await page.evaluate(() => { window.chaos.running = false; });
  await page.waitForFunction(() => window.chaos.loops === 0, null, { timeout: 5000 });
  // Every promise the page started settles (a hang is cut at 1.5 s, a backoff at 2 s).
  await page.waitForFunction(() => window.promises.pending === 0, null, { timeout: 10000 }).catch(() => {});

  const finalStatus = await page.evaluate(async () => (await window.tw.fetch("/api/me")).status);
  // Page and server are read between two refreshes: none on its way and none due within
  // 600 ms. A refresh on its way when the counters are read counts in the page and not yet
  // at the server (2 s tokens: one refresh a second, so a read can fall on one).
  await waitFor(() => page.evaluate(() => window.tw.state === "active" && window.tw.refreshAt !== undefined
    && window.tw.refreshAt - Date.now() > 600), { timeoutMs: 5000, intervalMs: 20, what: "a moment between two refreshes" });
  await log.poll();
  const counters = await server.counters();
  const stalls = host.stop().stalls;
  const entries = log.entries();
  const page_ = await page.evaluate(() => ({
    state: window.tw.state,
    promises: { ...window.promises, errors: window.promises.errors.length },
    events: window.events,
    api: window.chaos.api,
    tokens: window.chaos.tokens,
    unhandled: window.unhandled,
    uncaught: window.uncaught,
    refreshFetches: window.fetchLog.filter((f) => new URL(f.url).pathname === "/auth/refresh"),
  }));

  // ---- figures ----------------------------------------------------------------------
  const injected = {};
  for (const f of faults.slice(0, used)) injected[f.kind] = (injected[f.kind] || 0) + 1;
  const refreshLog = entries.filter((e) => e.path === "/auth/refresh");
  const serverTimes = refreshLog.map((e) => e.t);
  const serverGap = minGap(serverTimes);
  const shortServerGaps = serverTimes.slice(1).map((t, i) => t - serverTimes[i]).filter((g) => g < 950);
  const clientGap = minGap(page_.refreshFetches.map((f) => f.t));
  const evCount = (type) => page_.events.filter((e) => e.type === type).length;
  const failedByCode = {};
  for (const e of page_.events.filter((x) => x.type === "refreshFailed")) failedByCode[e.code] = (failedByCode[e.code] || 0) + 1;
  const apiOk = page_.api.filter((a) => a.status === 200).length;
  const apiRejected = {};
  for (const a of page_.api.filter((x) => x.code)) apiRejected[a.code] = (apiRejected[a.code] || 0) + 1;
  const apiOther = page_.api.filter((a) => a.status !== undefined && a.status !== 200).length;
  // Outages: runs of refreshFailed events, each closed by a `refreshed`.
  const outages = [];
  let open = null;
  for (const e of page_.events) {
    if (e.type === "refreshFailed") { open ||= { start: e.at, failures: 0 }; open.failures++; }
    if (e.type === "refreshed" && open) { open.end = e.at; outages.push(open); open = null; }
  }
  const figures = {
    seed: SEED.toString(16),
    faultPhaseSeconds: Math.round(faultPhaseMs / 1000),
    hostStalls: stalls.length,
    cycles: used,
    refreshRequests: counters.refreshRequests,
    refreshesServed: counters.refreshesServed,
    refreshedEvents: evCount("refreshed"),
    faultsInjected: Object.values(injected).reduce((a, b) => a + b, 0) - (injected.ok || 0),
    faultsByKind: Object.fromEntries(Object.entries(injected).filter(([k]) => k !== "ok")),
    refreshFailedEvents: evCount("refreshFailed"),
    refreshFailedByCode: failedByCode,
    outages: outages.length,
    longestOutageFailures: Math.max(0, ...outages.map((o) => o.failures)),
    longestOutageMs: Math.round(Math.max(0, ...outages.map((o) => o.end - o.start))),
    minRefreshGapMsServer: serverGap,
    serverGapsUnder950Ms: shortServerGaps,
    minRefreshGapMsClient: Math.round(clientGap),
    refreshCallsLoggedByServer: refreshLog.length,
    apiCalls: page_.api.length,
    apiOk,
    apiRejectedByClient: apiRejected,
    apiOtherStatus: apiOther,
    serverApi: { calls: counters.apiCalls, ok: counters.apiOk, unauthorized: counters.apiUnauthorized, expired: counters.apiExpiredTokens },
    getToken: page_.tokens,
    promises: { started: page_.promises.started, pending: page_.promises.pending, fulfilled: page_.promises.fulfilled, rejected: page_.promises.rejected },
    unhandledRejections: page_.unhandled.length,
    pageErrors: page.rec.errors.length,
  };
  // Every /api/me the server did not accept, with how old its token was by the server's
  // account (from the start of the refresh call that issued it) and what the page saw.
  const served = refreshLog.filter((e) => e.status === 200);
  figures.apiNotValid = entries.filter((e) => e.path === "/api/me" && (e.bearer !== "valid" || e.status !== 200)).map((e) => {
    const issued = served.filter((r) => r.t <= e.t).at(-1);
    const call = page_.api.filter((a) => a.t0 <= e.t + 50).at(-1);
    const lastEv = page_.events.filter((x) => x.at <= e.t).slice(-3).map((x) => `${x.type}${x.code ? ":" + x.code : ""}@${Math.round(e.t - x.at)}ms-before`);
    return { status: e.status, bearer: e.bearer, serverT: e.t, msSinceIssuingRefreshStarted: issued ? e.t - issued.t : null,
      pageCall: call && { t0: Math.round(call.t0), tookMs: Math.round(call.t1 - call.t0), status: call.status }, lastEvents: lastEv };
  });
  console.log(`chaos figures: ${JSON.stringify(figures, null, 2)}`);

  // ---- assertions -------------------------------------------------------------------
  assert.ok(figures.faultsInjected >= Math.floor(used * 0.2), "the plan injected too few faults");
  // The faults reached the page: each injected one is one refreshFailed, with the code its
  // kind means (the plan says what was queued; the page's events are what the client saw,
  // so this fails if the server ignored the queue or the client swallowed a failure). A
  // refresh that arrived between clearFaults and the counters read is counted in `used`
  // without a fault: one either way.
  const expectedCodes = { invalid_response: 0, server_error: 0, timeout: 0 };
  for (const [kind, n] of Object.entries(figures.faultsByKind)) {
    const code = kind === "hang" ? "timeout"
      : ["500", "503+Retry-After", "429", "html"].includes(kind) ? "server_error" : "invalid_response";
    expectedCodes[code] += n;
  }
  let short = 0;
  for (const [code, n] of Object.entries(expectedCodes)) {
    const seen = failedByCode[code] || 0;
    assert.ok(seen <= n, `refreshFailed ${code}: ${seen} events for ${n} injected faults`);
    short += n - seen;
  }
  assert.ok(short <= 1, `${short} injected faults never reached the page as refreshFailed: ${JSON.stringify({ expectedCodes, failedByCode })}`);
  assert.ok(Object.keys(failedByCode).every((c) => c in expectedCodes), `unexpected codes: ${JSON.stringify(failedByCode)}`);
  assert.ok(outages.length > 0, "no outage: the faults did not reach the page");
  // The session never ended: no signedOut, and each outage was closed by a refresh.
  assert.equal(evCount("signedOut"), 0, `the session ended: ${JSON.stringify(page_.events.filter((e) => e.type === "signedOut"))}`);
  assert.equal(open, null, "the last outage was not followed by a successful refresh");
  // (A routine refresh may be in flight at the snapshot: "refreshing" holds a valid token.)
  assert.notEqual(page_.state, "signedOut");
  assert.equal(finalStatus, 200);
  // After each outage, the API works again before the next failure.
  for (const o of outages) {
    const next = page_.events.find((e) => e.type === "refreshFailed" && e.at > o.end);
    const until = next ? next.at : Infinity;
    const ok = page_.api.some((a) => a.t0 >= o.end && a.t1 <= until + 1500 && a.status === 200);
    assert.ok(ok || (until - o.end) < 400, `no successful API call after the outage that ended at ${o.end}`);
  }
  // The server never saw an expired token, nor any but a valid one.
  assert.equal(counters.apiExpiredTokens, 0, "the server saw an expired token");
  const apiLog = entries.filter((e) => e.path === "/api/me");
  assert.deepEqual(apiLog.filter((e) => e.bearer !== "valid" || e.status !== 200).map((e) => [e.status, e.bearer]), []);
  assert.equal(counters.apiUnauthorized, 0);
  assert.equal(apiOther, 0, "the API answered something else than 200");
  // Calls the client could not authorise were refused by the client, never sent without
  // a token or with an expired one; the only codes are the refresh attempt's own.
  const allowedCodes = new Set(["timeout", "server_error", "invalid_response", "network"]);
  for (const code of Object.keys(apiRejected)) assert.ok(allowedCodes.has(code), `tw.fetch rejected with ${code}`);
  for (const code of Object.keys(page_.tokens.rejected)) assert.ok(allowedCodes.has(code), `getToken rejected with ${code}`);
  assert.equal(page_.tokens.nulls, 0, "getToken answered null while signed in");
  // At most one refresh call a second, seen from both ends. The page's view is the client's rule
  // (its storm floor, when each call is handed to fetch). The server stamps arrival, after the
  // browser's own queueing: at most 6 connections per host, some held by the hung refreshes this
  // test injects. On this 2-core host that moved single pairs closer: 941, 947 and 869 ms at the
  // server for 995, 1001 and 999 ms in the page (2026-12-03). A broken floor shows as many short
  // gaps on both ends: allowed at the server are 2 gaps under 950 ms, none under 500.
  assert.ok(serverGap >= 500 && shortServerGaps.length <= 2,
    `refresh calls closer than 950 ms at the server: ${JSON.stringify(shortServerGaps)}`);
  assert.ok(clientGap >= 950, `two refresh calls ${clientGap} ms apart in the page`);
  // A refresh handed to fetch just before a host stall can be cut by its 1.5 s timeout before
  // the browser sent it: the page counts it, the server never sees it. Allowed only after a
  // stall the watch saw, one per stall (stall injection, 2 s every 9 s: 274 against 273 with
  // 40 stalls, 1 run in 1). The server never counts more than the page.
  const unsent = page_.refreshFetches.length - counters.refreshRequests;
  assert.ok(unsent >= 0 && unsent <= stalls.length,
    `page and server disagree on refresh calls: ${page_.refreshFetches.length} in the page, ${counters.refreshRequests} at the server, ${stalls.length} host stalls`);
  // CSRF header on every refresh call.
  assert.ok(refreshLog.every((e) => e.csrf), "a refresh call without the CSRF header");
  // Promises, errors.
  assert.equal(page_.promises.pending, 0, `${page_.promises.pending} promises never settled: ${JSON.stringify(page_.promises.byKind)}`);
  assert.deepEqual(page_.unhandled, []);
  assert.deepEqual(page_.uncaught, []);
  assert.deepEqual(page.rec.errors, []);
  // Every family still holds exactly one live refresh token (no double rotation).
  assert.equal(counters.reuseDetected, 0);
  assert.equal(counters.familiesWithOneLiveToken, counters.liveFamilies);
  assert.ok(used >= CYCLES, `only ${used} refresh cycles in ${faultPhaseMs} ms (${stalls.length} host stalls)`);
});
