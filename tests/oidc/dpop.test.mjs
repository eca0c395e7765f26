// DPoP in upstream mode (issue 15): oidc-provider with its DPoP feature on issues JWT access
// tokens for a resource; the browser's non-extractable key signs, besides the proof for our
// /auth/refresh, a proof for the provider's token endpoint (`DPoP-Upstream`, asked for by a
// 400 `use_upstream_dpop` naming that endpoint), which the backend forwards with its
// refresh-token grant: the provider's tokens carry `cnf.jkt` = the browser key's thumbprint,
// and /api/me takes them only with a proof by that key.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, generateKeyPairSync, randomUUID, sign } from "node:crypto";
import { useUpstream, signIn, appUrl, started, waitFor, sleep } from "./env.mjs";

const RESOURCE = "https://api.tokenwarden.test";
const env = useUpstream({
  accessTokenTtl: 8,
  provider: { jwtResource: RESOURCE, dpop: true },
  // The key rule counts the longer of --access-ttl (60 s by default) and the provider's
  // lifetime: make it the provider's, so that a new key takes over after 8 s + leeway.
  serverArgs: ["--oidc-audience", RESOURCE, "--access-ttl", "8"],
});
const OPTS = { refreshSkewSeconds: 3, dpop: true };

const b64 = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");
const part = (jwt, i) => JSON.parse(Buffer.from(jwt.split(".")[i], "base64url").toString());
const thumbprint = ({ crv, kty, x, y }) =>
  createHash("sha256").update(JSON.stringify({ crv, kty, x, y })).digest("base64url");
const tokenOf = (page) => page.evaluate(() => window.tw.authorizationHeader());

/** A proof made in Node with a key of its own (the attacker's). */
function nodeProof(htm, htu, token) {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const { kty, crv, x, y } = publicKey.export({ format: "jwk" });
  const input = `${b64({ typ: "dpop+jwt", alg: "ES256", jwk: { kty, crv, x, y } })}.${b64({
    jti: randomUUID(), htm, htu, iat: Math.floor(Date.now() / 1000),
    ath: createHash("sha256").update(token).digest("base64url"),
  })}`;
  const sig = sign("sha256", Buffer.from(input), { key: privateKey, dsaEncoding: "ieee-p1363" });
  return `${input}.${sig.toString("base64url")}`;
}

test("a DPoP session in upstream mode across 3 tabs: the provider's tokens are bound to the browser's key; replayed from Node they are refused", async () => {
  const { provider, server, base } = env;
  const metadata = await (await fetch(`${provider.issuer}/.well-known/openid-configuration`)).json();
  assert.ok(metadata.dpop_signing_alg_values_supported.includes("ES256"), "the provider supports DPoP");
  const context = await env.newContext();
  const first = await env.newPage(context);
  const u0 = await server.upstreamCounters();
  assert.equal(await signIn(first, base, OPTS, "kim"), true, "start() resolves true");

  // The page's key, from a proof it makes; the provider's token is bound to it.
  const me = `${base}/api/me`;
  const headers = await first.evaluate((url) => window.tw.authorize("GET", url), me);
  const proof = headers.DPoP ?? headers.dpop;
  const jkt = thumbprint(part(proof, 0).jwk);
  const auth = await tokenOf(first);
  assert.match(auth, /^DPoP /, "token_type DPoP");
  const token = auth.slice("DPoP ".length);
  assert.equal(part(token, 1).cnf?.jkt, jkt, "the provider's token carries cnf.jkt = the browser key's thumbprint");
  assert.equal(part(token, 1).aud, RESOURCE);
  const u1 = await server.upstreamCounters();
  assert.ok(u1.dpopChallenges - u0.dpopChallenges >= 1, `the first refresh asked for a proof for the provider (${JSON.stringify(u1)})`);
  assert.ok(u1.dpopRefreshes - u0.dpopRefreshes >= 1, "and forwarded it");
  assert.ok(provider.stats.dpopRefreshGrants >= 1, "the provider received a DPoP refresh grant");

  // /api/me from the page: 200 with a proof by that key.
  const ok = await first.evaluate(() => window.me());
  assert.equal(ok.status, 200);
  assert.equal(ok.body.jkt, jkt);
  assert.equal(ok.body.checked_by, "jwt");

  // The same token replayed from Node.
  const call = (h) => fetch(me, { headers: h });
  let res = await call({ authorization: `Bearer ${token}` });
  assert.equal(res.status, 401, "a bound token as Bearer");
  assert.equal(res.headers.get("www-authenticate"), 'Bearer error="invalid_token"');
  res = await call({ authorization: `DPoP ${token}` });
  assert.equal(res.status, 401, "no proof");
  assert.match(res.headers.get("www-authenticate"), /^DPoP error="invalid_dpop_proof"/);
  res = await call({ authorization: `DPoP ${token}`, dpop: nodeProof("GET", me, token) });
  assert.equal(res.status, 401, "a proof by another key");
  assert.match(res.headers.get("www-authenticate"), /^DPoP error="invalid_dpop_proof"/);
  const captured = (await first.evaluate((url) => window.tw.authorize("GET", url), me));
  res = await call({ authorization: captured.Authorization, dpop: captured.DPoP });
  assert.equal(res.status, 200, "a proof the page made, used once");
  res = await call({ authorization: captured.Authorization, dpop: captured.DPoP });
  assert.equal(res.status, 401, "the same proof again: jti seen");

  // Two more tabs; all three call the API while the provider's token is renewed.
  const tabs = [first];
  for (let i = 1; i < 3; i++) {
    const p = await env.newPage(context);
    await p.goto(appUrl(base, OPTS));
    assert.equal(await started(p), true, `tab ${i + 1} joins the session`);
    tabs.push(p);
  }
  const p0 = { ...provider.stats };
  const seen = new Set([token]);
  for (const t of tabs) await t.evaluate(() => window.startLoop(500));
  const t0 = Date.now();
  while (Date.now() - t0 < 20_000) {
    for (const t of tabs) seen.add((await tokenOf(t)).slice("DPoP ".length));
    await sleep(200);
  }
  const stats = [];
  for (const t of tabs) stats.push(await t.evaluate(() => window.stopLoop()));
  for (const t of tabs) seen.add((await tokenOf(t)).slice("DPoP ".length));
  const seconds = (Date.now() - t0) / 1000;
  const refreshes = provider.stats.refreshGrants - p0.refreshGrants;
  console.log(`# 3 DPoP tabs ${seconds.toFixed(1)} s: ${refreshes} provider refreshes (${provider.stats.dpopRefreshGrants - p0.dpopRefreshGrants} with DPoP), ${seen.size - 1} new tokens`);
  for (const [i, s] of stats.entries()) {
    assert.deepEqual(s.errors, [], `tab ${i + 1} errors`);
    assert.deepEqual(Object.keys(s.statuses), ["200"], `tab ${i + 1} statuses ${JSON.stringify(s.statuses)}`);
  }
  assert.ok(refreshes >= 2, "renewed at the provider");
  assert.equal(provider.stats.dpopRefreshGrants - p0.dpopRefreshGrants, refreshes, "every renewal carried the browser's proof");
  assert.equal(refreshes, seen.size - 1, "one provider refresh per new token");
  for (const t of seen) assert.equal(part(t, 1).cnf?.jkt, jkt, "every token bound to the one key of the tabs");
  assert.equal(provider.stats.refreshReuse - p0.refreshReuse, 0, "no reuse at the provider");
  assert.equal(provider.stats.dpopErrors - p0.dpopErrors, 0, "no DPoP error at the provider");

  // Every tab closed: the next start makes a new key. Once the old key's tokens could have
  // expired (8 s + 5 s leeway) the family takes it, and the cached provider token (bound
  // to the old key) is not handed out: a new one is bound to the new key.
  for (const t of tabs) await t.close();
  await sleep(14_500);
  const later = await env.newPage(context);
  await later.goto(appUrl(base, OPTS));
  assert.equal(await started(later), true, "a new key takes the session over");
  const h2 = await later.evaluate((url) => window.tw.authorize("GET", url), me);
  const jkt2 = thumbprint(part(h2.DPoP, 0).jwk);
  assert.notEqual(jkt2, jkt, "a new key");
  const token2 = (await tokenOf(later)).slice("DPoP ".length);
  assert.equal(part(token2, 1).cnf?.jkt, jkt2, "the provider's new token is bound to the new key");
  assert.equal((await later.evaluate(() => window.me())).status, 200);
  res = await call({ authorization: `DPoP ${token2}`, dpop: nodeProof("GET", me, token2) });
  assert.equal(res.status, 401);

  await later.evaluate(() => window.tw.logout());
  assert.equal(provider.liveRefreshTokens("kim"), 0, "logout revoked at the provider");
});
