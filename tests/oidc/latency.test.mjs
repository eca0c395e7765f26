// What a refresh costs in upstream mode: median latency of POST /auth/refresh when every
// refresh renews at the provider (a 1 s provider token is never reused), against the built-in
// mode (own ES256 tokens), same machine, same run, interleaved. Prints the figures.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, launchBrowser } from "../e2e/harness.mjs";
import { startUpstream, holdCallback } from "./env.mjs";
import { refreshCookieHeader } from "../support/cookies.mjs";

const ROUNDS = 60;
let up, builtin, browser;

before(async () => {
  up = await startUpstream({ accessTokenTtl: 1 });
  builtin = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (builtin) await builtin.stop();
  if (up) { await up.server.stop(); await up.provider.close(); }
});

const cookieOf = (res) => /__Secure-tw_refresh=([^;]*)/.exec(res.headers.get("set-cookie") || "")?.[1];

/** One refresh with `cookie`; resolves with [ms, next cookie]. */
async function timedRefresh(base, cookie) {
  const t0 = performance.now();
  const res = await fetch(`${base}/auth/refresh`, {
    method: "POST",
    headers: { cookie: refreshCookieHeader(cookie), "x-requested-with": "tokenwarden" },
  });
  await res.arrayBuffer();
  const ms = performance.now() - t0;
  assert.equal(res.status, 200, `${base} refresh`);
  return [ms, cookieOf(res)];
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

test("a refresh through the provider costs a provider round trip more than a built-in one", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  // The browser signs in at the provider; the callback is finished here, so that the refresh
  // cookie never reaches a page whose client would race us for it.
  const held = await holdCallback(context, page, up.server.url, "heidi", up.provider.issuer);
  const binding = (await context.cookies()).find((c) => c.name === "__Host-tw_login").value;
  await context.close();
  const callback = await fetch(held, { headers: { cookie: `__Host-tw_login=${binding}` }, redirect: "manual" });
  assert.equal(callback.status, 303);
  let upCookie = cookieOf(callback);
  assert.ok(upCookie, "the callback set the refresh cookie");

  const login = await fetch(`${builtin.url}/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: "demo", password: "demo" }),
  });
  let builtinCookie = cookieOf(login);

  const grants0 = up.provider.stats.refreshGrants;
  const upMs = [];
  const builtinMs = [];
  for (let i = 0; i < ROUNDS; i++) {
    let ms;
    [ms, upCookie] = await timedRefresh(up.server.url, upCookie);
    upMs.push(ms);
    [ms, builtinCookie] = await timedRefresh(builtin.url, builtinCookie);
    builtinMs.push(ms);
  }
  const providerCalls = up.provider.stats.refreshGrants - grants0;
  const [mu, mb] = [median(upMs), median(builtinMs)];
  console.log(`# refresh latency, median of ${ROUNDS}: upstream ${mu.toFixed(2)} ms, built-in ${mb.toFixed(2)} ms, `
    + `extra ${(mu - mb).toFixed(2)} ms (provider refresh grants: ${providerCalls})`);
  // The upstream figure is a refresh that went to the provider, every time (after the first,
  // the cached 1 s token never has 2 s left).
  assert.ok(providerCalls >= ROUNDS - 1, `each upstream refresh renewed at the provider (${providerCalls})`);
  assert.equal(up.provider.stats.refreshReuse, 0);
});
