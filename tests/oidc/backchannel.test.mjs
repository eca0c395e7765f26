// OpenID Connect Back-Channel Logout 1.0 in upstream mode: the provider (oidc-provider) POSTs a
// logout token to the server's /auth/backchannel-logout when the user ends a session at the
// provider (its end-session page, not our /auth/logout). The provider keeps its grants past its
// own logout here (grantsOutliveSession) and issues JWT access tokens (no introspection), so
// every effect checked below is the server's own doing: without the back-channel handling the
// provider's refresh token and the JWTs it issued would all still work.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createPrivateKey, generateKeyPairSync, randomBytes } from "node:crypto";
import { useUpstream, waitFor } from "./env.mjs";
import { backchannelHelpers, EVENT } from "./backchannel.mjs";

const RESOURCE = "https://api.tokenwarden.test";
const env = useUpstream({
  // 60 s tokens refreshed 3 s before their end: no silent refresh during a test, every
  // refresh below is the test's own.
  accessTokenTtl: 60,
  provider: (base) => ({
    backchannelLogoutUri: `${base}/auth/backchannel-logout`,
    backchannelSessionRequired: true,
    grantsOutliveSession: true,
    jwtResource: RESOURCE,
    introspection: false,
  }),
  serverArgs: ["--oidc-audience", RESOURCE],
});
const OPTS = { refreshSkewSeconds: 3 };

const { part, me, refresh, postLogoutToken, counters, delta, jws, session, logoutAtProvider } = backchannelHelpers(env, OPTS);

test("a session ended at the provider ends here through the back channel: its JWTs are refused, its refresh token revoked at the provider, its browser signed out; the same user's other session lives on; the logout token replayed is refused", async () => {
  const { provider, server, base } = env;
  const a = await session("alice");
  const b = await session("alice");
  assert.notEqual(a.sid, b.sid, "two provider sessions of one user");
  assert.equal(part(a.auth.slice("Bearer ".length), 0).typ, "at+jwt", "a JWT access token: only the server can refuse it");
  for (const s of [a, b]) assert.equal((await me(s.auth)).status, 200, "both sessions' tokens pass before");
  assert.equal(provider.liveRefreshTokens("alice"), 2);

  const c0 = await counters();
  const p0 = { ...provider.stats };
  const sent = provider.backchannelRequests.length;
  await logoutAtProvider(a.context);

  // The provider's POST (its end-session confirm waits for it) and our answer.
  await waitFor(() => provider.stats.backchannelSuccess + provider.stats.backchannelErrors > p0.backchannelSuccess + p0.backchannelErrors,
    { timeoutMs: 10000, what: "the provider's back-channel logout" });
  assert.deepEqual(provider.backchannelEvents.slice(-1), [{ ok: true, accountId: "alice", sid: a.sid }],
    "the provider saw a 200/204 for A's session");
  assert.equal(provider.stats.backchannelErrors, p0.backchannelErrors);
  assert.equal(provider.backchannelRequests.length, sent + 1, "one back-channel POST");
  const req = provider.backchannelRequests.at(-1);
  assert.equal(req.url, `${base}/auth/backchannel-logout`);
  assert.equal(req.contentType, "application/x-www-form-urlencoded");
  assert.equal(req.status, 200);
  assert.equal(req.body, "", "an empty body");
  assert.equal(req.cacheControl, "no-store");
  const claims = part(req.logoutToken, 1);
  assert.equal(part(req.logoutToken, 0).typ, "logout+jwt");
  assert.equal(claims.sub, "alice");
  assert.equal(claims.sid, a.sid);
  assert.deepEqual(claims.events, { [EVENT]: {} });

  // Counted once; that one session ended.
  await waitFor(async () => (await counters()).ended > c0.ended, { what: "backchannelEnded" });
  assert.deepEqual(delta(c0, await counters()), { logouts: 1, refused: 0, ended: 1 });
  let res = await me(a.auth);
  assert.equal(res.status, 401, "A's access token, handed out before, is refused");
  assert.equal(res.headers.get("www-authenticate"), 'Bearer error="invalid_token"');
  assert.equal((await me(b.auth)).status, 200, "B's access token still passes");
  await waitFor(() => provider.stats.revocations > p0.revocations, { what: "a revocation at the provider" });
  assert.equal(provider.stats.revocations - p0.revocations, 1, "one revocation at the provider (RFC 7009)");
  assert.equal(provider.liveRefreshTokens("alice"), 1, "A's provider refresh token is gone, B's is live");

  // A's browser: its next refresh is refused and it signs out ("rejected").
  const outA = await refresh(a.page);
  assert.deepEqual(outA, { ok: false, code: "refresh_rejected", status: 401 }, JSON.stringify(outA));
  await waitFor(() => a.page.evaluate(() => window.events.some((e) => e.type === "signedOut" && e.reason === "rejected")),
    { what: "A signed out (rejected)" });
  assert.equal(await a.page.evaluate(() => window.tw.state), "signedOut");
  // B's browser: still refreshes, and calls /api/me.
  assert.deepEqual(await refresh(b.page), { ok: true });
  const me2 = await b.page.evaluate(() => window.me());
  assert.equal(me2.status, 200);
  assert.equal(me2.body.sub, "alice");
  assert.equal(provider.stats.refreshReuse, 0);

  // The same logout token again: refused, nothing more ended.
  const c1 = await counters();
  res = await postLogoutToken(req.logoutToken);
  assert.equal(res.status, 400, "a replayed logout token (same jti)");
  const body = await res.json();
  assert.equal(body.error, "invalid_request");
  assert.equal(typeof body.error_description, "string");
  assert.deepEqual(delta(c1, await counters()), { logouts: 0, refused: 1, ended: 0 });
  assert.equal((await me(b.auth)).status, 200, "B untouched by the replay");
  assert.deepEqual(await refresh(b.page), { ok: true });
  assert.ok(server.stderr.every((l) => !l.includes(req.logoutToken)), "the logout token is not logged");
});

test("forged and malformed logout tokens are refused (400) and end nothing; tokens signed with the provider's key are taken as the contract says (no session: 200; sid with another sub: 200, nothing ended; sid alone: that session ends)", async () => {
  const { provider } = env;
  const carol = await session("carol");
  assert.equal((await me(carol.auth)).status, 200);
  const now = Math.floor(Date.now() / 1000);
  const claims = (extra = {}) => ({
    iss: provider.issuer, aud: provider.clientId, iat: now, exp: now + 120,
    jti: randomBytes(16).toString("base64url"), events: { [EVENT]: {} }, sub: "carol", sid: carol.sid, ...extra,
  });
  const without = (name) => { const c = claims(); delete c[name]; return c; };
  const rsa = provider.signingKeys.find((k) => k.kty === "RSA");
  const ec = provider.signingKeys.find((k) => k.kty === "EC");
  const providerKey = createPrivateKey({ key: rsa, format: "jwk" });
  const asProvider = (c, hdr = { typ: "logout+jwt" }) => jws({ alg: "RS256", kid: rsa.kid, ...hdr }, c, providerKey);
  const own = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;

  const refusedCases = [
    ["our own ES256 key under the kid of the provider's EC key", jws({ alg: "ES256", typ: "logout+jwt", kid: ec.kid }, claims(), own)],
    ["our own ES256 key, no kid", jws({ alg: "ES256", typ: "logout+jwt" }, claims(), own)],
    ["alg none", jws({ alg: "none", typ: "logout+jwt" }, claims())],
    ["the provider's signature over other claims", (() => {
      const [h, , s] = asProvider(claims()).split(".");
      return `${h}.${Buffer.from(JSON.stringify(claims({ sub: "mallory" }))).toString("base64url")}.${s}`;
    })()],
    ["not a JWT", "not-a-jwt"],
    ["another audience", asProvider(claims({ aud: "another-client" }))],
    ["another issuer", asProvider(claims({ iss: "https://evil.example" }))],
    ["expired", asProvider(claims({ iat: now - 900, exp: now - 600 }))],
    ["no events", asProvider(without("events"))],
    ["events without the back-channel member", asProvider(claims({ events: { "http://schemas.openid.net/event/other": {} } }))],
    ["a nonce", asProvider(claims({ nonce: "n-1" }))],
    ["neither sub nor sid", asProvider((() => { const c = without("sid"); delete c.sub; return c; })())],
    ["no jti", asProvider(without("jti"))],
    ["no iat", asProvider(without("iat"))],
    ["typ at+jwt", asProvider(claims(), { typ: "at+jwt" })],
  ];
  const c0 = await counters();
  for (const [what, token] of refusedCases) {
    const res = await postLogoutToken(token);
    assert.equal(res.status, 400, what);
    const body = await res.json();
    assert.equal(body.error, "invalid_request", what);
  }
  assert.deepEqual(delta(c0, await counters()), { logouts: 0, refused: refusedCases.length, ended: 0 });
  assert.equal((await me(carol.auth)).status, 200, "carol's token still passes");
  assert.deepEqual(await refresh(carol.page), { ok: true }, "carol still refreshes");
  assert.equal(provider.liveRefreshTokens("carol"), 1);

  // Valid tokens (the provider's key) that match no session here: 200, nothing ended; each
  // typ the contract allows. Replayed: 400.
  const c1 = await counters();
  const nobody = asProvider(claims({ sub: "nobody", sid: undefined }), {});
  for (const [what, token] of [
    ["no typ, a sub with no session", nobody],
    ["typ JWT, a sub with no session", asProvider(claims({ sub: "nobody-either", sid: undefined }), { typ: "JWT" })],
    ["carol's sid with another sub", asProvider(claims({ sub: "mallory" }))],
  ]) {
    const res = await postLogoutToken(token);
    assert.equal(res.status, 200, `${what}: ${await res.clone().text()}`);
    assert.equal(await res.text(), "", what);
    assert.equal(res.headers.get("cache-control"), "no-store", what);
  }
  assert.deepEqual(delta(c1, await counters()), { logouts: 3, refused: 0, ended: 0 });
  assert.equal((await postLogoutToken(nobody)).status, 400, "replayed");
  assert.equal((await me(carol.auth)).status, 200, "carol's token still passes");
  assert.deepEqual(await refresh(carol.page), { ok: true }, "carol still refreshes");

  // The same kind of token, for carol's sid alone (no sub): her session ends.
  const c2 = await counters();
  const revocations = provider.stats.revocations;
  const res = await postLogoutToken(asProvider(claims({ sub: undefined })));
  assert.equal(res.status, 200, await res.clone().text());
  await waitFor(async () => (await counters()).ended > c2.ended, { what: "carol's session ended" });
  assert.deepEqual(delta(c2, await counters()), { logouts: 1, refused: 0, ended: 1 });
  assert.equal((await me(carol.auth)).status, 401, "carol's token is refused now");
  await waitFor(() => provider.liveRefreshTokens("carol") === 0, { what: "carol's provider refresh token revoked" });
  assert.equal(provider.stats.revocations - revocations, 1);
  assert.deepEqual(await refresh(carol.page), { ok: false, code: "refresh_rejected", status: 401 });
});
