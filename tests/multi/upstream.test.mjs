// Upstream mode on two reference-server instances sharing one PostgreSQL behind the
// round-robin proxy, in front of a real OpenID Provider (oidc-provider, tests/oidc/provider.mjs):
// the sign-in's start and callback land on different instances, five tabs refresh through
// both for 20 s, and the provider sees exactly one refresh per rotation of its access token
// (the per-family lease lives in the shared store), no reuse, and the logout. Then the same
// with DPoP (the provider's DPoP feature on): every renewal, whichever instance makes it,
// forwards the browser's proof, and the provider's (opaque, introspected) tokens are bound to
// the tabs' one key.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { launchBrowser, watch, sleep } from "../e2e/harness.mjs";
import { watchStalls } from "../support/timed-run.mjs";
import { signIn, appUrl, started } from "../oidc/env.mjs";
import { startUpstreamCluster, dumpDatabase } from "./cluster.mjs";

let provider;
let cluster;
let browser;

before(async () => {
  let base;
  ({ provider, cluster, base } = await startUpstreamCluster({
    provider: { accessTokenTtl: 8, dpop: true },
    timeoutMs: 2000,
    // The DPoP key rule counts our access-token lifetime: make it the provider's.
    args: ["--access-ttl", "8"],
  }));
  assert.equal(cluster.url, base);
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (cluster) await cluster.stop();
  if (provider) await provider.close();
});

/**
 * Every tab calls the API every 500 ms for 20 s while the first tab's token is sampled every
 * 200 ms (each token lives 4-5 s, so every one is seen). `baseline` runs after the first sample
 * and before the loops start. The tabs' loop results, the tokens seen, the seconds taken, the
 * seconds the host ran (`ran`: its stalls left out), the stalls and what `baseline` returned.
 */
async function loopAndSample(tabs, tokenOf, baseline) {
  const seen = new Set([await tokenOf()]);
  const base = await baseline();
  for (const t of tabs) await t.evaluate(() => window.startLoop(500));
  const t0 = Date.now();
  // 20 s of the host's running time: a stall of the whole machine is left out (`ran`).
  const host = watchStalls();
  while (Date.now() - t0 - host.stalledMs < 20_000) {
    seen.add(await tokenOf());
    await sleep(200);
  }
  host.stop();
  const stats = [];
  for (const t of tabs) stats.push(await t.evaluate(() => window.stopLoop()));
  seen.add(await tokenOf());
  const seconds = (Date.now() - t0) / 1000;
  return { seen, stats, seconds, ran: seconds - host.stalledMs / 1000, stalls: host.stalls, base };
}

async function upstreamCounters() {
  const all = await Promise.all(cluster.instances.map(async (s) => (await fetch(`${s.url}/test/upstream/counters`)).json()));
  const sum = {};
  for (const c of all) for (const [k, v] of Object.entries(c)) sum[k] = (sum[k] || 0) + v;
  return sum;
}

test("two instances on one PostgreSQL, 5 tabs for 20 s: one provider refresh per rotation, no reuse, logout at the provider", async (t) => {
  const context = await browser.newContext();
  // Closed even when an assertion fails: its tabs would refresh on through the next test.
  t.after(() => context.close().catch(() => {}));
  const opts = { refreshSkewSeconds: 3 };
  const first = await context.newPage();
  watch(first);
  const byInstance0 = cluster.proxy.state.byInstance.map((x) => x.all);
  assert.equal(await signIn(first, cluster.url, opts, "heidi"), true, "signed in through the provider and the proxy");
  assert.equal(provider.stats.codeGrants, 1);
  assert.ok(cluster.proxy.state.byInstance.every((x, i) => x.all > byInstance0[i]), "the sign-in touched both instances");
  const tabs = [first];
  for (let i = 1; i < 5; i++) {
    const p = await context.newPage();
    watch(p);
    await p.goto(appUrl(cluster.url, opts));
    assert.equal(await started(p), true, `tab ${i + 1} joins the session`);
    tabs.push(p);
  }

  const tokenOf = () => first.evaluate(() => window.tw.authorizationHeader());
  const { seen, stats, seconds, ran, stalls, base: { p0, c0, u0, r0 } } = await loopAndSample(tabs, tokenOf, async () => ({
    p0: { ...provider.stats },
    c0: await cluster.counters(),
    u0: await upstreamCounters(),
    r0: cluster.proxy.state.byInstance.map((x) => x.refresh),
  }));

  const providerRefreshes = provider.stats.refreshGrants - p0.refreshGrants;
  const c1 = await cluster.counters();
  const u1 = await upstreamCounters();
  const perInstance = cluster.proxy.state.byInstance.map((x, i) => x.refresh - r0[i]);
  const summary = `${seconds.toFixed(1)} s (host stalls: ${JSON.stringify(stalls)}): ${providerRefreshes} provider refreshes, ${seen.size - 1} new access tokens, ` +
    `our refreshes per instance ${perInstance.join("/")} (${c1.refreshesServed - c0.refreshesServed} served, ` +
    `${u1.cachedServed - u0.cachedServed} from the cache, ${u1.leaseWaits - u0.leaseWaits} lease waits), ` +
    `API ${c1.apiCalls - c0.apiCalls} calls`;
  console.log(`# ${summary}`);

  // /api/me asks the provider about the token (introspection, with the instances' provider
  // timeout): a host stall during that wait ends it in 503 temporarily_unavailable. Allowed
  // only after a stall the watch saw, at most one per tab per stall (as in
  // tests/oidc/resilience.test.mjs; stall injection: 1 run in 1 had one).
  const unavailable = stats.reduce((n, s) => n + (s.statuses["503"] || 0), 0);
  assert.ok(unavailable <= stalls.length * tabs.length, `${unavailable} API calls answered 503: ${summary}`);
  for (const [i, s] of stats.entries()) {
    assert.deepEqual(s.errors, [], `tab ${i + 1} errors`);
    const statuses = Object.keys(s.statuses).filter((k) => k !== "503");
    assert.deepEqual(statuses, ["200"], `tab ${i + 1} statuses ${JSON.stringify(s.statuses)}`);
    assert.ok(s.calls >= 20, `tab ${i + 1} kept calling (${s.calls})`);
  }
  assert.ok(perInstance.every((n) => n >= 2), `both instances rotated: ${summary}`);
  // One provider refresh per rotation of the provider's token: each one produced exactly the
  // one new token the tabs then used, whichever instance held the lease.
  assert.equal(providerRefreshes, seen.size - 1, summary);
  assert.ok(providerRefreshes >= Math.floor(ran / 8), `the tokens were renewed: ${summary}`);
  assert.ok(providerRefreshes <= Math.floor(seconds / 4) + 2 + stalls.length, `one per cycle, not per tab: ${summary}`);
  assert.equal(u1.providerRefreshes - u0.providerRefreshes, providerRefreshes, "every provider call is one of ours");
  assert.equal(provider.stats.refreshReuse - p0.refreshReuse, 0, "the provider saw no reuse");
  assert.equal(provider.stats.grantErrors - p0.grantErrors, 0, "no failed grant at the provider");
  assert.equal(c1.reuseDetected - c0.reuseDetected, 0, "our instances saw no reuse");
  assert.equal(provider.liveRefreshTokens("heidi"), 1, "rotation: one live provider refresh token");

  // Encrypted at rest: the shared database holds the family's grant, but none of the provider's
  // tokens in any encoding a reader of a dump could use.
  const dump = dumpDatabase(cluster.databaseUrl);
  assert.match(dump, /COPY public\.upstream_grants [^\n]*\n[^\\]/, "the grant is in the database");
  const values = provider.tokenValues();
  assert.ok(values.length >= 2, `the provider holds tokens (${values.length})`);
  for (const v of values) {
    for (const form of [v, Buffer.from(v).toString("hex"), Buffer.from(v).toString("base64"), Buffer.from(v).toString("base64url")]) {
      assert.ok(!dump.includes(form), "a provider token is readable in the database dump");
    }
  }

  // Logout through the proxy: revoked at the provider; our refresh is refused on both instances.
  const revocations = provider.stats.revocations;
  const endSession = await first.evaluate(() => window.tw.logout());
  assert.ok(new URL(endSession).searchParams.get("id_token_hint"));
  assert.equal(provider.stats.revocations - revocations, 1, "revoked at the provider (RFC 7009)");
  assert.equal(provider.liveRefreshTokens("heidi"), 0, "the provider's refresh token no longer works");
  for (const s of cluster.instances) {
    const status = await first.evaluate(async (url) => (await fetch(url, {
      method: "POST", headers: { "X-Requested-With": "tokenwarden" },
    })).status, "/auth/refresh");
    assert.equal(status, 401, `refresh after logout (${s.url})`);
  }
  for (const t of tabs) assert.deepEqual(t.rec.errors, [], "no uncaught errors");
  await context.close();
});

const part = (jwt, i) => JSON.parse(Buffer.from(jwt.split(".")[i], "base64url").toString());
const thumbprint = ({ crv, kty, x, y }) =>
  createHash("sha256").update(JSON.stringify({ crv, kty, x, y })).digest("base64url");

test("DPoP on two instances: every provider renewal carries the browser's proof, one per new token; the bound token is refused without its key", async (t) => {
  const context = await browser.newContext();
  t.after(() => context.close().catch(() => {}));
  const opts = { refreshSkewSeconds: 3, dpop: true };
  const first = await context.newPage();
  watch(first);
  assert.equal(await signIn(first, cluster.url, opts, "ivy"), true);
  const me = `${cluster.url}/api/me`;
  const proofHeaders = await first.evaluate((url) => window.tw.authorize("GET", url), me);
  const jkt = thumbprint(part(proofHeaders.DPoP, 0).jwk);
  const ok = await first.evaluate(() => window.me());
  assert.equal(ok.status, 200);
  assert.equal(ok.body.checked_by, "introspection");
  assert.equal(ok.body.jkt, jkt, "the provider's (opaque) token is bound to the page's key (introspection's cnf.jkt)");
  const token = (await first.evaluate(() => window.tw.authorizationHeader())).slice("DPoP ".length);
  for (const authorization of [`Bearer ${token}`, `DPoP ${token}`]) {
    const res = await fetch(me, { headers: { authorization } });
    assert.equal(res.status, 401, `${authorization.split(" ")[0]} without a proof, from Node`);
  }
  const tabs = [first];
  for (let i = 1; i < 3; i++) {
    const p = await context.newPage();
    watch(p);
    await p.goto(appUrl(cluster.url, opts));
    assert.equal(await started(p), true, `tab ${i + 1} joins the session`);
    tabs.push(p);
  }
  const tokenOf = async () => (await first.evaluate(() => window.tw.authorizationHeader())).slice("DPoP ".length);
  const { seen, stats, stalls, base: { p0, c0, r0 } } = await loopAndSample(tabs, tokenOf, async () => ({
    p0: { ...provider.stats },
    c0: await cluster.counters(),
    r0: cluster.proxy.state.byInstance.map((x) => x.refresh),
  }));
  const refreshes = provider.stats.refreshGrants - p0.refreshGrants;
  const withProof = provider.stats.dpopRefreshGrants - p0.dpopRefreshGrants;
  const c1 = await cluster.counters();
  const perInstance = cluster.proxy.state.byInstance.map((x, i) => x.refresh - r0[i]);
  const summary = `${refreshes} provider refreshes (${withProof} with the browser's proof), ${seen.size - 1} new tokens, ` +
    `our refreshes per instance ${perInstance.join("/")}, API ${c1.apiCalls - c0.apiCalls} calls`;
  console.log(`# DPoP, 3 tabs 20 s (host stalls: ${JSON.stringify(stalls)}): ${summary}`);
  // 503 after a host stall: see the test above.
  const unavailable = stats.reduce((n, s) => n + (s.statuses["503"] || 0), 0);
  assert.ok(unavailable <= stalls.length * tabs.length, `${unavailable} API calls answered 503: ${summary}`);
  for (const [i, s] of stats.entries()) {
    assert.deepEqual(s.errors, [], `tab ${i + 1} errors`);
    const statuses = Object.keys(s.statuses).filter((k) => k !== "503");
    assert.deepEqual(statuses, ["200"], `tab ${i + 1} statuses ${JSON.stringify(s.statuses)}`);
  }
  assert.ok(perInstance.every((n) => n >= 2), `both instances rotated: ${summary}`);
  assert.ok(refreshes >= 2, summary);
  assert.equal(withProof, refreshes, `every renewal forwarded the browser's proof: ${summary}`);
  assert.equal(refreshes, seen.size - 1, `one provider refresh per new token: ${summary}`);
  assert.equal(provider.stats.refreshReuse - p0.refreshReuse, 0, "no reuse at the provider");
  assert.equal(provider.stats.dpopErrors - p0.dpopErrors, 0, "no DPoP error at the provider");
  assert.equal(c1.reuseDetected - c0.reuseDetected, 0);
  const last = await first.evaluate(() => window.me());
  assert.equal(last.body.jkt, jkt, "still bound to the one key");
  await first.evaluate(() => window.tw.logout());
  assert.equal(provider.liveRefreshTokens("ivy"), 0);
  for (const t of tabs) assert.deepEqual(t.rec.errors, [], "no uncaught errors");
  await context.close();
});
