// Upstream mode against a real OpenID Provider, in headless Chromium: the app's "Sign in"
// goes through the provider's login and consent pages and back, /api/me answers with the
// provider's token, silent refresh goes through the provider, logout revokes there; and each
// way of tampering with the sign-in is refused.
import { test } from "node:test";
import assert from "node:assert/strict";
import { useUpstream, signIn, started, throughProvider, holdCallback, appUrl, waitFor } from "./env.mjs";

// This test asserts that no provider refresh failed: a CI run of 2026-12-04 had one (retried
// and served), most likely the server reusing a connection the provider was closing (fixed:
// upstream::PROVIDER_IDLE_CONNECTION).
const env = useUpstream({ accessTokenTtl: 8 });
const OPTS = { refreshSkewSeconds: 3 };

test("sign-in goes through the provider's pages; /api/me, silent refresh and logout go through the provider", async () => {
  const { provider, server, base } = env;
  const before = { ...provider.stats };
  const context = await env.newContext();
  const page = await env.newPage(context);

  assert.equal(await signIn(page, base, OPTS, "alice"), true, "start() resolves true after the callback");
  assert.equal(new URL(page.url()).searchParams.get("login_error"), null);
  assert.equal(provider.stats.codeGrants - before.codeGrants, 1, "one code exchange at the provider");
  assert.equal(provider.liveRefreshTokens("alice"), 1, "the provider issued one refresh token");
  const cookies = await context.cookies();
  const refreshCookie = cookies.find((c) => c.name === "__Secure-tw_refresh");
  assert.ok(refreshCookie && refreshCookie.httpOnly, "our HttpOnly refresh cookie is set");
  const binding = cookies.find((c) => c.name === "__Host-tw_login");
  assert.ok(binding && binding.httpOnly && binding.secure && binding.path === "/" && !binding.domain.startsWith("."),
    "the login binding is a host-only __Host- cookie (left to expire: another sign-in may be under way)");
  assert.equal(await page.evaluate(() => typeof window.tw.claims()), "undefined", "the provider's token is opaque to the page");

  const me = await page.evaluate(() => window.me());
  assert.equal(me.status, 200, "/api/me accepts the provider's access token");
  assert.equal(me.body.sub, "alice");
  assert.equal(me.body.iss, provider.issuer);
  assert.ok(provider.stats.introspections >= 1, "/api/me asked the provider (introspection)");

  // Silent refresh: the 8 s provider token is renewed at the provider, twice.
  const r0 = provider.stats.refreshGrants;
  await waitFor(() => provider.stats.refreshGrants - r0 >= 2, { timeoutMs: 30000, what: "two provider refreshes" });
  assert.equal(await page.evaluate(() => window.callApi()), 200, "/api/me with the renewed token");
  const refreshed = (await page.evaluate(() => window.events)).filter((e) => e.type === "refreshed");
  assert.ok(refreshed.length >= 2, `the page saw its refreshes (${refreshed.length})`);
  assert.equal(provider.stats.refreshReuse, 0, "the provider saw no refresh-token reuse");
  assert.equal(provider.liveRefreshTokens("alice"), 1, "rotation: one live provider refresh token");
  const up = await server.upstreamCounters();
  assert.ok(up.providerRefreshes >= 2 && up.providerRefreshFailures === 0, JSON.stringify(up));

  // Logout: revoked at the provider, family ended, RP-initiated logout URL handed to the app.
  const revocations = provider.stats.revocations;
  const endSession = await page.evaluate(() => window.tw.logout());
  assert.equal(provider.stats.revocations - revocations, 1, "logout revoked at the provider (RFC 7009)");
  assert.equal(provider.liveRefreshTokens("alice"), 0, "the provider's refresh token no longer works");
  const url = new URL(endSession);
  assert.equal(url.origin + url.pathname, `${provider.issuer}/session/end`);
  assert.ok(url.searchParams.get("id_token_hint"), "id_token_hint");
  assert.equal(url.searchParams.get("post_logout_redirect_uri"), `${base}/app.html`);
  const again = await page.evaluate(async () => (await fetch("/auth/refresh", {
    method: "POST", headers: { "X-Requested-With": "tokenwarden" },
  })).status);
  assert.equal(again, 401, "our refresh cookie is gone with the family");
  // The browser goes to the provider's end-session page and comes back.
  await page.goto(endSession);
  await page.click('button[name="logout"]');
  await page.waitForURL((u) => u.origin === base && u.pathname === "/app.html", { timeout: 15000 });
  assert.equal(await started(page), false, "back in the app, signed out");
});

test("upstream refresh and logout keep the CSRF header and Origin checks; a cross-site sign-in start is refused", async () => {
  const { base } = env;
  const post = (path, headers) => fetch(base + path, { method: "POST", headers });
  for (const path of ["/auth/refresh", "/auth/logout"]) {
    let res = await post(path, {});
    assert.equal(res.status, 403, `${path} without X-Requested-With`);
    assert.equal((await res.json()).error, "csrf");
    res = await post(path, { "x-requested-with": "tokenwarden", origin: "https://evil.example" });
    assert.equal(res.status, 403, `${path} from a foreign Origin`);
    res = await post(path, { "x-requested-with": "tokenwarden", "sec-fetch-site": "cross-site" });
    assert.equal(res.status, 403, `${path} with Sec-Fetch-Site: cross-site`);
  }
  // Without a cookie, refresh is 401 and logout 204 once both checks pass.
  assert.equal((await post("/auth/refresh", { "x-requested-with": "tokenwarden", origin: base })).status, 401);
  assert.equal((await post("/auth/logout", { "x-requested-with": "tokenwarden", origin: base })).status, 204);
  const login = (headers) => fetch(`${base}/auth/login`, { headers, redirect: "manual" });
  let res = await login({ "sec-fetch-site": "cross-site" });
  assert.equal(res.status, 403, "a sign-in started from another site");
  assert.equal(res.headers.get("location"), null);
  res = await login({ "sec-fetch-site": "same-origin" });
  assert.equal(res.status, 303, "a sign-in started from the app's own page");
  res = await login({ "sec-fetch-site": "none" });
  assert.equal(res.status, 303, "a sign-in typed into the address bar");
  assert.match(res.headers.get("set-cookie"), /^__Host-tw_login=[^;]+; HttpOnly; Secure; SameSite=Lax; Path=\/; Max-Age=600$/);
});

test("two sign-ins under way in one browser both stay bound to it; a cookie of the old __Secure- name binds nothing", async () => {
  const { base } = env;
  const login = (cookie) => fetch(`${base}/auth/login`, { headers: cookie ? { cookie } : {}, redirect: "manual" });
  const first = await login();
  assert.equal(first.status, 303);
  const binding = first.headers.get("set-cookie").split(";")[0];
  assert.match(binding, /^__Host-tw_login=[A-Za-z0-9_-]{43}$/);
  const second = await login(binding);
  assert.equal(second.status, 303);
  assert.equal(second.headers.get("set-cookie").split(";")[0], binding, "the second sign-in reuses the browser's binding");
  // Before, the second sign-in replaced the cookie and the first one's callback was a 400.
  // Here each callback (with a code the provider never issued) passes the binding check and
  // fails at the code exchange: back to the app with login_error, not a 400.
  const callback = (res, cookie) => {
    const state = new URL(res.headers.get("location")).searchParams.get("state");
    return fetch(`${base}/auth/callback?state=${encodeURIComponent(state)}&code=not-issued`, { headers: { cookie }, redirect: "manual" });
  };
  for (const res of [first, second]) {
    const cb = await callback(res, binding);
    assert.equal(cb.status, 303, await cb.text());
    assert.equal(new URL(cb.headers.get("location")).searchParams.get("login_error"), "invalid_grant");
  }
  // A planted cookie of the old name (a sibling host can set a __Secure- cookie for the parent
  // domain; it cannot set a __Host- one) binds nothing.
  const third = await login();
  const value = third.headers.get("set-cookie").split(";")[0].split("=")[1];
  const cb = await callback(third, `__Secure-tw_login=${value}`);
  assert.equal(cb.status, 400);
});

test("an off-list returnTo is refused before the provider is involved", async () => {
  const { base } = env;
  for (const returnTo of ["https://evil.example/", "//evil.example/", `${base}/elsewhere`, "/\\evil.example"]) {
    const res = await fetch(`${base}/auth/login?returnTo=${encodeURIComponent(returnTo)}`, { redirect: "manual" });
    assert.equal(res.status, 400, returnTo);
    assert.equal(res.headers.get("location"), null, returnTo);
    assert.equal((await res.json()).error, "invalid_request");
  }
  const ok = await fetch(`${base}/auth/login?returnTo=${encodeURIComponent(`${base}/app.html`)}`, { redirect: "manual" });
  assert.equal(ok.status, 303);
  const to = new URL(ok.headers.get("location"));
  assert.equal(to.origin, env.provider.issuer);
  assert.equal(to.searchParams.get("code_challenge_method"), "S256");
  for (const p of ["state", "nonce", "code_challenge"]) assert.ok(to.searchParams.get(p), p);
});

test("a forged state, a replayed callback and a callback in another browser are refused", async () => {
  const { base, provider } = env;
  const context = await env.newContext();
  const page = await env.newPage(context);
  // Hold the provider's redirect back to us, to play with it.
  const held = await holdCallback(context, page, base, "bob", provider.issuer);
  const exchanges = provider.stats.codeGrants;

  const forged = new URL(held);
  forged.searchParams.set("state", "forged-" + forged.searchParams.get("state").slice(7));
  let res = await page.goto(forged.href);
  assert.equal(res.status(), 400, "forged state");

  const other = await env.newContext();
  const otherPage = await env.newPage(other);
  res = await otherPage.goto(held);
  assert.equal(res.status(), 400, "callback in a browser that did not start the sign-in");
  assert.ok(!(await other.cookies()).some((c) => c.name === "__Secure-tw_refresh"));
  assert.equal(provider.stats.codeGrants, exchanges, "no code exchanged for a refused callback");
  // The sign-in is still the browser's that started it (it used to be consumed).
  await page.goto(held);
  await page.waitForURL((u) => u.pathname === "/app.html");
  assert.equal(await started(page), true, "the owner's callback still signs in");
});

test("a callback is single use: the replay is refused", async () => {
  const { base, provider } = env;
  const context = await env.newContext();
  const page = await env.newPage(context);
  const held = await holdCallback(context, page, base, "carol", provider.issuer);

  await page.goto(held);
  await page.waitForURL((u) => u.pathname === "/app.html");
  assert.equal(await started(page), true, "the genuine callback signs in");
  const exchanges = provider.stats.codeGrants;
  const res = await page.goto(held);
  assert.equal(res.status(), 400, "replayed callback");
  assert.equal(provider.stats.codeGrants, exchanges, "the replayed code never reached the provider");
});

test("an ID token whose nonce does not match the login is refused", async () => {
  const { base, server, provider } = env;
  const context = await env.newContext();
  const page = await env.newPage(context);
  await page.goto(appUrl(base));
  await started(page);
  await server.tamperNextNonce();
  const exchanges = provider.stats.codeGrants;
  await page.click("#sign-in");
  await throughProvider(page, { login: "dave" });
  await page.waitForURL((u) => u.pathname === "/app.html");
  assert.equal(new URL(page.url()).searchParams.get("login_error"), "invalid_id_token");
  assert.equal(await started(page), false);
  assert.equal(provider.stats.codeGrants - exchanges, 1, "the provider's real ID token was checked");
  assert.ok(!(await context.cookies()).some((c) => c.name === "__Secure-tw_refresh"));
});

test("the user cancelling at the provider (access_denied) returns to the app with a clear error", async () => {
  const { base } = env;
  const context = await env.newContext();
  const page = await env.newPage(context);
  await page.goto(appUrl(base));
  await started(page);
  await page.click("#sign-in");
  await throughProvider(page, { login: "erin", cancel: true });
  await page.waitForURL((u) => u.pathname === "/app.html");
  assert.equal(new URL(page.url()).searchParams.get("login_error"), "access_denied");
  assert.equal(await started(page), false);
  assert.equal(await page.evaluate(() => window.loginError), "access_denied");
});
