// Upstream mode with JWT access tokens, as with Auth0 and an API audience: oidc-provider issues
// RFC 9068 JWTs (ES256, `typ: at+jwt`) for a resource indicator and offers no introspection;
// /api/me checks them against the provider's JWKS (src/upstream/access.rs).
import { test } from "node:test";
import assert from "node:assert/strict";
import { useUpstream, signIn, waitFor, sleep, holdCallback } from "./env.mjs";
import { refreshCookieHeader } from "../support/cookies.mjs";

const RESOURCE = "https://api.tokenwarden.test";
const env = useUpstream({
  accessTokenTtl: 8,
  provider: { jwtResource: RESOURCE, introspection: false },
  serverArgs: ["--oidc-audience", RESOURCE],
});
const OPTS = { refreshSkewSeconds: 3 };

const part = (jwt, i) => JSON.parse(Buffer.from(jwt.split(".")[i], "base64url").toString());
const me = (base, authorization) => fetch(`${base}/api/me`, { headers: authorization ? { authorization } : {} });

test("the provider's JWT access tokens are checked against its JWKS (no introspection endpoint): valid, tampered, expired, an ID token, an opaque token", async () => {
  const { provider, server, base } = env;
  const metadata = await (await fetch(`${provider.issuer}/.well-known/openid-configuration`)).json();
  assert.equal(metadata.introspection_endpoint, undefined, "an Auth0-like provider: no introspection");
  const context = await env.newContext();
  const page = await env.newPage(context);
  assert.equal(await signIn(page, base, OPTS, "judy"), true);

  const token = (await page.evaluate(() => window.tw.authorizationHeader())).slice("Bearer ".length);
  const header = part(token, 0);
  const claims = part(token, 1);
  assert.equal(header.typ, "at+jwt");
  assert.equal(header.alg, "ES256");
  const jwks = await (await fetch(metadata.jwks_uri)).json();
  assert.ok(jwks.keys.some((k) => k.kid === header.kid), "signed by a key of the provider's JWKS");
  assert.equal(claims.aud, RESOURCE);
  assert.equal(claims.iss, provider.issuer);
  assert.equal(claims.client_id, provider.clientId);

  const u0 = await server.upstreamCounters();
  const ok = await page.evaluate(() => window.me());
  assert.equal(ok.status, 200, "/api/me accepts the provider's JWT");
  assert.equal(ok.body.checked_by, "jwt");
  assert.equal(ok.body.sub, "judy");
  assert.deepEqual(ok.body.aud, [RESOURCE]);
  assert.equal(ok.body.iss, provider.issuer);
  const u1 = await server.upstreamCounters();
  assert.ok(u1.jwtChecks - u0.jwtChecks >= 1, JSON.stringify(u1));
  assert.equal(u1.introspections, 0, "no introspection was tried");
  assert.equal(provider.stats.introspections, 0);

  // The same token from Node works (a Bearer token); a tampered one does not.
  assert.equal((await me(base, `Bearer ${token}`)).status, 200);
  const [h, , s] = token.split(".");
  const forgedBody = Buffer.from(JSON.stringify({ ...claims, sub: "mallory" })).toString("base64url");
  let res = await me(base, `Bearer ${h}.${forgedBody}.${s}`);
  assert.equal(res.status, 401, "claims changed under the provider's signature");
  assert.equal(res.headers.get("www-authenticate"), 'Bearer error="invalid_token"');
  const none = `${Buffer.from(JSON.stringify({ alg: "none", typ: "at+jwt" })).toString("base64url")}.${forgedBody}.`;
  assert.equal((await me(base, `Bearer ${none}`)).status, 401, "alg none");

  // An opaque token cannot be checked without introspection: a clear 501, not a bare 502.
  res = await me(base, "Bearer an-opaque-token-value");
  assert.equal(res.status, 501);
  const body = await res.json();
  assert.equal(body.error, "server_error");
  assert.match(body.error_description, /opaque.*introspection/);

  // Silent refresh keeps issuing JWTs, and /api/me keeps accepting them.
  const r0 = provider.stats.refreshGrants;
  await waitFor(() => provider.stats.refreshGrants - r0 >= 2, { timeoutMs: 30000, what: "two provider refreshes" });
  assert.equal(await page.evaluate(() => window.callApi()), 200);
  const renewed = (await page.evaluate(() => window.tw.authorizationHeader())).slice("Bearer ".length);
  assert.notEqual(renewed, token);
  assert.equal(part(renewed, 0).typ, "at+jwt");

  // The first token, once past its exp and the 5 s leeway, is refused.
  const wait = claims.exp * 1000 + 5_500 - Date.now();
  if (wait > 0) await sleep(wait);
  assert.equal((await me(base, `Bearer ${token}`)).status, 401, "expired");

  // The ID token (handed to the browser as id_token_hint) is no access token.
  const endSession = await page.evaluate(() => window.tw.logout());
  const idToken = new URL(endSession).searchParams.get("id_token_hint");
  assert.ok(idToken);
  assert.equal((await me(base, `Bearer ${idToken}`)).status, 401, "an ID token is refused");
  assert.equal(provider.stats.refreshReuse, 0);
});

/** A session held at its callback (a browser through the provider), then completed from Node: its refresh cookie. */
async function heldSession(login) {
  const { provider, base } = env;
  const context = await env.newContext();
  const page = await env.newPage(context);
  const held = await holdCallback(context, page, base, login, provider.issuer);
  const binding = (await context.cookies()).find((c) => c.name === "__Host-tw_login").value;
  return async () => {
    const res = await fetch(held, { headers: { cookie: `__Host-tw_login=${binding}` }, redirect: "manual" });
    assert.equal(res.status, 303);
    return /__Secure-tw_refresh=([^;]*)/.exec(res.headers.get("set-cookie"))[1];
  };
}

const post = (path, cookie) => fetch(`${env.base}${path}`, {
  method: "POST",
  headers: { cookie: refreshCookieHeader(cookie), "x-requested-with": "tokenwarden", origin: env.base },
});
const cookieOf = (res) => /__Secure-tw_refresh=([^;]*)/.exec(res.headers.get("set-cookie") || "")?.[1];
async function refresh(cookie) {
  const res = await post("/auth/refresh", cookie);
  if (res.status !== 200) return { status: res.status };
  return { status: 200, token: (await res.json()).access_token, cookie: cookieOf(res) };
}

test("after logout, and after refresh-token reuse, /api/me refuses every JWT handed out for the family (the current one and older ones) before their exp; other families' tokens still pass", async () => {
  const { server, base } = env;
  // The browser part (the provider's pages) first: the tokens below then all live 8 s.
  const [kim, lou, mia] = [await heldSession("kim"), await heldSession("lou"), await heldSession("mia")];
  const c0 = await kim();
  const r1 = await refresh(c0);
  assert.equal(r1.status, 200);
  // Renew the family's provider token (the cached one marked used up), so that it has two.
  const renewed = await post("/test/upstream/concurrent-access?n=1", r1.cookie);
  assert.equal(renewed.status, 200);
  const r2 = await refresh(cookieOf(renewed));
  assert.equal(r2.status, 200);
  assert.notEqual(r2.token, r1.token, "a second, newer token of the family");
  const other = await refresh(await lou());
  for (const t of [r1.token, r2.token, other.token]) assert.equal((await me(base, `Bearer ${t}`)).status, 200);

  const c0stats = await server.counters();
  assert.ok([200, 204].includes((await post("/auth/logout", r2.cookie)).status), "logout");
  for (const [t, what] of [[r1.token, "the older token"], [r2.token, "the current token"]]) {
    const res = await me(base, `Bearer ${t}`);
    assert.equal(res.status, 401, `${what} after logout`);
    assert.equal(res.headers.get("www-authenticate"), 'Bearer error="invalid_token"');
  }
  assert.equal((await me(base, `Bearer ${other.token}`)).status, 200, "another family's token");
  const c1stats = await server.counters();
  assert.equal(c1stats.apiRevokedTokens - c0stats.apiRevokedTokens, 2, "counted as revoked tokens");

  // Reuse: the first cookie presented again after its successor was used ends the family.
  const m0 = await mia();
  const m1 = await refresh(m0);
  assert.equal((await me(base, `Bearer ${m1.token}`)).status, 200);
  assert.equal((await refresh(m1.cookie)).status, 200, "the successor is used");
  assert.equal((await refresh(m0)).status, 401, "reuse");
  assert.equal((await me(base, `Bearer ${m1.token}`)).status, 401, "a token of the family revoked for reuse");
  assert.equal((await me(base, `Bearer ${other.token}`)).status, 200);
});
