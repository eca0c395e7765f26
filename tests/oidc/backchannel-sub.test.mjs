// Back-Channel Logout with oidc-provider's defaults for a client that does not ask for
// `backchannel_logout_session_required`: neither its ID tokens nor its logout tokens carry
// `sid`, so a logout token names the user (`sub`) alone, and every session of that user here
// ends. Opaque access tokens checked by introspection (the suite's default); the provider
// keeps its grants past its own logout (grantsOutliveSession), so a token refused or a refresh
// token revoked below is the server's doing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { useUpstream, waitFor } from "./env.mjs";
import { backchannelHelpers, EVENT } from "./backchannel.mjs";

const env = useUpstream({
  accessTokenTtl: 60,
  provider: (base) => ({ backchannelLogoutUri: `${base}/auth/backchannel-logout`, grantsOutliveSession: true }),
});
const OPTS = { refreshSkewSeconds: 3 };
const { part, me, refresh, counters, delta, session, logoutAtProvider } = backchannelHelpers(env, OPTS);

test("a logout token without sid (sub only) ends every session of that user here, and no other user's", async () => {
  const { provider, base } = env;
  const dave1 = await session("dave");
  const dave2 = await session("dave");
  const erin = await session("erin");
  for (const s of [dave1, dave2, erin]) assert.equal((await me(s.auth)).status, 200, "every token passes before");
  assert.equal(provider.liveRefreshTokens("dave"), 2);

  const c0 = await counters();
  const p0 = { ...provider.stats };
  await logoutAtProvider(dave1.context);
  await waitFor(() => provider.stats.backchannelSuccess + provider.stats.backchannelErrors > p0.backchannelSuccess + p0.backchannelErrors,
    { timeoutMs: 10000, what: "the provider's back-channel logout" });
  assert.deepEqual(provider.backchannelEvents.slice(-1), [{ ok: true, accountId: "dave", sid: dave1.sid }]);
  const req = provider.backchannelRequests.at(-1);
  assert.equal(req.url, `${base}/auth/backchannel-logout`);
  assert.equal(req.status, 200);
  const claims = part(req.logoutToken, 1);
  assert.equal(claims.sub, "dave");
  assert.equal("sid" in claims, false, "no sid without backchannel_logout_session_required");
  assert.deepEqual(claims.events, { [EVENT]: {} });

  await waitFor(async () => (await counters()).ended - c0.ended >= 2, { what: "both of dave's sessions ended" });
  assert.deepEqual(delta(c0, await counters()), { logouts: 1, refused: 0, ended: 2 });
  for (const s of [dave1, dave2]) assert.equal((await me(s.auth)).status, 401, "dave's tokens are refused (inactive at introspection)");
  assert.equal((await me(erin.auth)).status, 200, "erin's token still passes");
  await waitFor(() => provider.liveRefreshTokens("dave") === 0, { what: "dave's provider refresh tokens revoked" });
  assert.equal(provider.stats.revocations - p0.revocations, 2, "two revocations at the provider (RFC 7009)");
  assert.equal(provider.liveRefreshTokens("erin"), 1);
  for (const s of [dave1, dave2]) {
    assert.deepEqual(await refresh(s.page), { ok: false, code: "refresh_rejected", status: 401 });
    await waitFor(() => s.page.evaluate(() => window.events.some((e) => e.type === "signedOut" && e.reason === "rejected")),
      { what: "dave signed out (rejected)" });
  }
  assert.deepEqual(await refresh(erin.page), { ok: true });
  assert.equal(await erin.page.evaluate(() => window.callApi()), 200);
});
