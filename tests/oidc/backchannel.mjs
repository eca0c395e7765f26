// Helpers of the back-channel logout tests (backchannel*.test.mjs): sessions signed in through
// the provider, the provider's own logout, logout tokens posted from Node, the server's
// back-channel counters.
import assert from "node:assert/strict";
import { sign } from "node:crypto";
import { signIn } from "./env.mjs";

export const EVENT = "http://schemas.openid.net/event/backchannel-logout";

/** `env` is useUpstream's; `opts` the app's client options. */
export function backchannelHelpers(env, opts) {
  const part = (jwt, i) => JSON.parse(Buffer.from(jwt.split(".")[i], "base64url").toString());
  const me = (authorization) => fetch(`${env.base}/api/me`, { headers: { authorization } });
  const header = (page) => page.evaluate(() => window.tw.authorizationHeader());
  /** `tw.refresh()` in the page: `{ ok: true }` or the error's code and status. */
  const refresh = (page) => page.evaluate(async () => {
    try {
      await window.tw.refresh();
      return { ok: true };
    } catch (e) {
      return { ok: false, code: e && e.code, status: e && e.status };
    }
  });
  const postLogoutToken = (token) => fetch(`${env.base}/auth/backchannel-logout`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ logout_token: token }),
  });
  const counters = async () => {
    const u = await env.server.upstreamCounters();
    return { logouts: u.backchannelLogouts, refused: u.backchannelRefused, ended: u.backchannelEnded };
  };
  const delta = (a, b) => ({ logouts: b.logouts - a.logouts, refused: b.refused - a.refused, ended: b.ended - a.ended });

  /** A compact JWS over `claims` with `key` (ES256 or RS256, from `hdr.alg`); "none" unsigned. */
  function jws(hdr, claims, key) {
    const input = `${Buffer.from(JSON.stringify(hdr)).toString("base64url")}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}`;
    if (hdr.alg === "none") return `${input}.`;
    const sig = hdr.alg === "ES256"
      ? sign("sha256", Buffer.from(input), { key, dsaEncoding: "ieee-p1363" })
      : sign("sha256", Buffer.from(input), key);
    return `${input}.${sig.toString("base64url")}`;
  }

  /** Signs in a new browser context as `login`: its context, page, provider `sid` and Authorization header. */
  async function session(login) {
    const { provider, base } = env;
    const known = new Set(provider.sids(login));
    const context = await env.newContext();
    const page = await env.newPage(context);
    assert.equal(await signIn(page, base, opts, login), true, `${login} signed in`);
    const sids = provider.sids(login).filter((s) => !known.has(s));
    assert.equal(sids.length, 1, `one new provider session for ${login}`);
    return { context, page, sid: sids[0], auth: await header(page) };
  }

  /** The provider's end-session page, confirmed ("Yes, sign me out"), in a new tab of `context`. */
  async function logoutAtProvider(context) {
    const { provider } = env;
    const tab = await env.newPage(context);
    await tab.goto(`${provider.issuer}/session/end`);
    await tab.click('button[name="logout"]');
    await tab.waitForURL((u) => u.href.startsWith(`${provider.issuer}/session/end/success`), { timeout: 15000 });
  }

  return { part, me, header, refresh, postLogoutToken, counters, delta, jws, session, logoutAtProvider };
}
