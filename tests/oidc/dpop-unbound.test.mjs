// `dpop: true` in front of an OpenID Provider without DPoP: the backend cannot bind the
// provider's tokens and answers `token_type: "Bearer"`, so the client sends them as Bearer,
// without a proof (RFC 9449 §7.1) — in the tab that refreshed and in a tab that adopted the
// token. (Before, it sent `DPoP <unbound token>` and /api/me refused every call.)
import { test } from "node:test";
import assert from "node:assert/strict";
import { useUpstream, signIn, appUrl, started, waitFor } from "./env.mjs";

const env = useUpstream({ accessTokenTtl: 8 });
const OPTS = { refreshSkewSeconds: 3, dpop: true };

test("dpop: true with a provider that does not bind: Bearer tokens go as Bearer without a proof, across a refresh and to a second tab", async () => {
  const { provider, base } = env;
  const metadata = await (await fetch(`${provider.issuer}/.well-known/openid-configuration`)).json();
  assert.equal(metadata.dpop_signing_alg_values_supported, undefined, "the provider has no DPoP");
  const context = await env.newContext();
  const page = await env.newPage(context);
  assert.equal(await signIn(page, base, OPTS, "lee"), true, "start() resolves true");

  const header = () => page.evaluate(() => window.tw.authorizationHeader());
  assert.match(await header(), /^Bearer /, "the provider's token is a Bearer token");
  const me = `${base}/api/me`;
  const headers = await page.evaluate((url) => window.tw.authorize("GET", url), me);
  assert.deepEqual(Object.keys(headers), ["Authorization"], "no DPoP proof for an unbound token");
  const res = await page.evaluate(() => window.me());
  assert.equal(res.status, 200, "/api/me takes it");
  assert.equal(res.body.sub, "lee");

  // A silent refresh at the provider: still Bearer, still accepted.
  const first = await header();
  const r0 = provider.stats.refreshGrants;
  await waitFor(() => provider.stats.refreshGrants - r0 >= 1, { timeoutMs: 30000, what: "a provider refresh" });
  await waitFor(async () => (await header()) !== first, { timeoutMs: 10000, what: "the renewed token" });
  assert.match(await header(), /^Bearer /);
  assert.equal(await page.evaluate(() => window.callApi()), 200, "/api/me with the renewed token");

  // A second tab adopts the token as it was issued.
  const second = await env.newPage(context);
  await second.goto(appUrl(base, OPTS));
  assert.equal(await started(second), true, "the second tab joins the session");
  assert.match(await second.evaluate(() => window.tw.authorizationHeader()), /^Bearer /);
  assert.equal(await second.evaluate(() => window.callApi()), 200);
  const events = await page.evaluate(() => window.events);
  assert.deepEqual(events.filter((e) => e.type === "refreshFailed"), [], "no failed refresh");
});
