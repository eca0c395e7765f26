// A device that loses its network keeps its session (the laptop that wakes before its Wi-Fi):
// with the browser offline (playwright's setOffline: navigator.onLine false, every request
// fails), the due refreshes fail with `network` but are not counted against maxAttempts, so
// the expired session is not ended; the `online` event then refreshes at once. Before, five
// attempts were used up within seconds and the session ended as expired although the refresh
// cookie was still good.
import { test } from "node:test";
import assert from "node:assert/strict";
import { useEnv, login, events, sleep } from "./harness.mjs";

const env = useEnv();

test("offline past expiry and past five attempts: the session waits, and comes back on `online`", async () => {
  await env.server.config({ accessTtlSeconds: 2, leewaySeconds: 0, familyLifetimeSeconds: 28800 });
  const context = await env.newContext();
  const page = await env.openTab(context, { crossTab: false });
  await login(page);
  await context.setOffline(true);
  // 2 s tokens: due at 1 s, expired at 2 s; with the default retry (1 s base, 30 s cap, full
  // jitter) five counted attempts would end well within this.
  await sleep(16_000);
  const offline = await page.evaluate(() => ({ state: window.tw.state, onLine: navigator.onLine }));
  const failed = (await events(page)).filter((e) => e.type === "refreshFailed").length;
  assert.equal(offline.onLine, false);
  assert.ok(failed >= 5, `the refreshes failed meanwhile (${failed})`);
  assert.equal(offline.state, "refreshing", "still trying, not signed out");
  await context.setOffline(false);
  await page.waitForFunction(() => window.tw.state === "active", null, { timeout: 5_000 });
  assert.equal(await page.evaluate(() => window.callApi()), 200);
  assert.deepEqual(
    (await events(page)).filter((e) => e.type === "signedOut"),
    [],
    "never signed out",
  );
});
