// Back-Channel Logout 1.0 on two reference-server instances sharing one PostgreSQL behind the
// round-robin proxy, in front of a real OpenID Provider (oidc-provider, tests/oidc/provider.mjs).
// The provider's back-channel logout URI names ONE instance directly (B, not the proxy), while
// the browsers sign in through the proxy, so a session may have been made on A. The provider
// keeps its grants past its own logout (grantsOutliveSession) and issues JWT access tokens (no
// introspection): every effect checked is the servers' own doing. A cluster of its own: the
// provider needs other options than upstream.test.mjs's (DPoP, opaque tokens), and B's port
// must be known before the provider starts (its back-channel URI).
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { launchBrowser, watch, waitFor } from "../e2e/harness.mjs";
import { freePort } from "../oidc/env.mjs";
import { backchannelHelpers } from "../oidc/backchannel.mjs";
import { startUpstreamCluster } from "./cluster.mjs";

const RESOURCE = "https://api.tokenwarden.test";
// 60 s tokens refreshed 3 s before their end: no silent refresh during the test, every
// refresh below is the test's own.
const OPTS = { refreshSkewSeconds: 3 };
let provider;
let cluster;
let browser;
const env = {
  contexts: [],
  pages: [],
  async newContext() {
    const context = await browser.newContext();
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
  const portB = await freePort();
  let base;
  ({ provider, cluster, base } = await startUpstreamCluster({
    provider: {
      accessTokenTtl: 60,
      backchannelLogoutUri: `http://127.0.0.1:${portB}/auth/backchannel-logout`,
      backchannelSessionRequired: true,
      grantsOutliveSession: true,
      jwtResource: RESOURCE,
      introspection: false,
    },
    args: ["--oidc-audience", RESOURCE],
    // Instance B (the second) on the port the provider's back-channel URI names.
    instanceArgs: [[], ["--port", String(portB)]],
  }));
  assert.equal(cluster.url, base);
  assert.equal(cluster.instances[1].url, `http://127.0.0.1:${portB}`);
  env.provider = provider;
  env.base = cluster.url;
  browser = await launchBrowser();
});

after(async () => {
  for (const c of env.contexts.splice(0)) await c.close().catch(() => {});
  if (browser) await browser.close().catch(() => {});
  if (cluster) await cluster.stop();
  if (provider) await provider.close();
});

afterEach(async (t) => {
  if (!t.passed && cluster) {
    for (const [i, s] of cluster.instances.entries()) {
      const tail = s.stderr.slice(-80);
      console.log(`# instance ${"AB"[i]} (${s.url}) log, last ${tail.length} lines:\n${tail.map((l) => `#   ${l}`).join("\n")}`);
    }
  }
  const pages = env.pages.splice(0);
  for (const c of env.contexts.splice(0)) await c.close().catch(() => {});
  for (const p of pages) assert.deepEqual(p.rec.errors, [], `page ${p.url()} had uncaught errors`);
  const log = cluster.instances.flatMap((s) => s.stderr).join("\n");
  assert.ok(!log.includes(provider.clientSecret), "the client secret appeared in a server log");
});

const { part, header, refresh, session, logoutAtProvider } = backchannelHelpers(env, OPTS);

/** One instance's upstream counters. */
async function upstreamCounters(instance) {
  const res = await fetch(`${instance.url}/test/upstream/counters`);
  assert.equal(res.status, 200);
  return res.json();
}
const bc = (u) => ({ logouts: u.backchannelLogouts, refused: u.backchannelRefused, ended: u.backchannelEnded });
const meAt = (instance, authorization) => fetch(`${instance.url}/api/me`, { headers: { authorization } });

test("back-channel logout posted to instance B ends a session signed in through the proxy (callback on A): its JWTs → 401 on both instances, its refresh → 401, the other session lives on both; the same logout token at A → 400 (replay known through the shared store)", async () => {
  const [A, B] = cluster.instances;
  const user = "grace";

  // Sign-ins through the proxy, until one's callback (its code exchange) was served by A: that
  // one is the session to end; another one (the first not taken) stays.
  const signedIn = [];
  let victim;
  for (let attempt = 0; attempt < 4 && !(victim && signedIn.length >= 2); attempt++) {
    const before = await Promise.all([A, B].map(upstreamCounters));
    const s = await session(user);
    const after = await Promise.all([A, B].map(upstreamCounters));
    const exchanged = after.map((u, i) => u.codeExchanges - before[i].codeExchanges);
    assert.equal(exchanged[0] + exchanged[1], 1, `one code exchange for the sign-in (A/B: ${exchanged.join("/")})`);
    s.callbackOn = exchanged[0] === 1 ? "A" : "B";
    signedIn.push(s);
    if (!victim && s.callbackOn === "A") victim = s;
    // The proxy's turns: after two callbacks in a row on B (a sign-in of an even number of
    // requests), skip one so the next one falls on A.
    if (!victim && signedIn.length >= 2 && signedIn.at(-2).callbackOn === "B") cluster.proxy.state.next++;
  }
  assert.ok(victim, `a sign-in whose callback A served (callbacks on: ${signedIn.map((s) => s.callbackOn).join(", ")})`);
  const other = signedIn.find((s) => s !== victim);
  assert.ok(other, "a second session");
  assert.notEqual(victim.sid, other.sid, "two provider sessions of one user");
  console.log(`# callbacks served by: ${signedIn.map((s) => s.callbackOn).join(", ")}; the session ended: ${signedIn.indexOf(victim) + 1}`);
  assert.equal(part(victim.auth.slice("Bearer ".length), 0).typ, "at+jwt", "a JWT access token: only the servers can refuse it");
  for (const s of signedIn) for (const inst of [A, B]) {
    assert.equal((await meAt(inst, s.auth)).status, 200, `a session's token passes at ${inst.url} before`);
  }
  assert.equal(provider.liveRefreshTokens(user), signedIn.length);

  // The victim ends its session at the provider's end-session page; the provider POSTs the
  // logout token to B.
  const a0 = bc(await upstreamCounters(A));
  const b0 = bc(await upstreamCounters(B));
  const p0 = { ...provider.stats };
  const sent = provider.backchannelRequests.length;
  await logoutAtProvider(victim.context);
  await waitFor(() => provider.stats.backchannelSuccess + provider.stats.backchannelErrors > p0.backchannelSuccess + p0.backchannelErrors,
    { timeoutMs: 10000, what: "the provider's back-channel logout" });
  assert.deepEqual(provider.backchannelEvents.slice(-1), [{ ok: true, accountId: user, sid: victim.sid }],
    `the provider saw a 200/204 for the ended session: ${JSON.stringify(provider.backchannelEvents.slice(-1))}`);
  assert.equal(provider.stats.backchannelErrors, p0.backchannelErrors);
  assert.equal(provider.backchannelRequests.length, sent + 1, "one back-channel POST");
  const req = provider.backchannelRequests.at(-1);
  assert.equal(req.url, `${B.url}/auth/backchannel-logout`, "posted to instance B itself, not the proxy");
  assert.equal(req.status, 200, `B's answer: ${req.status} ${req.body}`);
  assert.equal(part(req.logoutToken, 1).sid, victim.sid);

  // Counted on B, which ended that one session; A saw nothing.
  await waitFor(async () => bc(await upstreamCounters(B)).ended > b0.ended, { what: "backchannelEnded on B" });
  const b1 = bc(await upstreamCounters(B));
  assert.deepEqual({ logouts: b1.logouts - b0.logouts, refused: b1.refused - b0.refused, ended: b1.ended - b0.ended },
    { logouts: 1, refused: 0, ended: 1 }, "B's back-channel counters");
  assert.deepEqual(bc(await upstreamCounters(A)), a0, "A's back-channel counters unchanged");

  // The ended session's access token is refused by both instances (the shared store), the
  // other session's passes on both.
  for (const inst of [A, B]) {
    const res = await meAt(inst, victim.auth);
    assert.equal(res.status, 401, `the ended session's JWT at ${inst.url}`);
    assert.equal(res.headers.get("www-authenticate"), 'Bearer error="invalid_token"');
    assert.equal((await meAt(inst, other.auth)).status, 200, `the other session's JWT at ${inst.url}`);
  }
  await waitFor(() => provider.stats.revocations > p0.revocations, { what: "a revocation at the provider" });
  assert.equal(provider.stats.revocations - p0.revocations, 1, "one revocation at the provider (RFC 7009)");
  assert.equal(provider.liveRefreshTokens(user), signedIn.length - 1, "the ended session's provider refresh token is gone");

  // Its browser: the next refresh through the proxy is refused and the page signs out.
  const outV = await refresh(victim.page);
  assert.deepEqual(outV, { ok: false, code: "refresh_rejected", status: 401 }, JSON.stringify(outV));
  await waitFor(() => victim.page.evaluate(() => window.events.some((e) => e.type === "signedOut" && e.reason === "rejected")),
    { what: "the ended session's page signed out (rejected)" });
  assert.equal(await victim.page.evaluate(() => window.tw.state), "signedOut");

  // The other browser refreshes through the proxy twice (refreshes alternate: each instance
  // serves one) and its token passes /api/me on both instances.
  const r0 = cluster.proxy.state.byInstance.map((x) => x.refresh);
  for (let i = 0; i < 2; i++) assert.deepEqual(await refresh(other.page), { ok: true }, `the other session's refresh ${i + 1}`);
  assert.deepEqual(cluster.proxy.state.byInstance.map((x, i) => x.refresh - r0[i]), [1, 1], "one refresh on each instance");
  const otherAuth = await header(other.page);
  for (const inst of [A, B]) {
    const res = await meAt(inst, otherAuth);
    assert.equal(res.status, 200, `the other session after its refreshes at ${inst.url}`);
    assert.equal((await res.json()).sub, user);
  }
  assert.equal(provider.stats.refreshReuse, 0);

  // The same logout token again, to A: refused as a replay (A never saw it: the shared store).
  const aBefore = bc(await upstreamCounters(A));
  const bBefore = bc(await upstreamCounters(B));
  const res = await fetch(`${A.url}/auth/backchannel-logout`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ logout_token: req.logoutToken }),
  });
  const body = await res.json();
  assert.equal(res.status, 400, `the replay at A: ${JSON.stringify(body)}`);
  assert.equal(body.error, "invalid_request");
  assert.match(body.error_description, /replay/, "refused as a replay, not for another reason");
  const aAfter = bc(await upstreamCounters(A));
  assert.deepEqual({ logouts: aAfter.logouts - aBefore.logouts, refused: aAfter.refused - aBefore.refused, ended: aAfter.ended - aBefore.ended },
    { logouts: 0, refused: 1, ended: 0 }, "A's back-channel counters");
  assert.deepEqual(bc(await upstreamCounters(B)), bBefore, "B's counters untouched by the replay at A");
  for (const inst of [A, B]) assert.equal((await meAt(inst, otherAuth)).status, 200, `the other session untouched by the replay (${inst.url})`);
  assert.ok(cluster.instances.every((s) => s.stderr.every((l) => !l.includes(req.logoutToken))), "the logout token is not logged");
});
