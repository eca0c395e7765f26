// Issue 5: a browser restart with a persistent profile. The refresh cookie (Max-Age set)
// survives; the access token, kept in memory only, does not. Two tabs restored at once
// share one refresh call.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import {
  useEnv, routeTestPages, testPageUrl, watch, CHROMIUM_ARGS, waitFor,
} from "./harness.mjs";

const env = useEnv();

async function openPersistent(dir) {
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM_BIN || "/usr/bin/chromium",
    args: CHROMIUM_ARGS,
  });
  await routeTestPages(context);
  return context;
}

async function open(context, url) {
  const page = await context.newPage();
  watch(page);
  await page.goto(testPageUrl(url));
  await page.waitForFunction(() => window.twReady === true);
  return page;
}

test("after a browser restart with a persistent profile, two tabs starting at once restore the session with one refresh call", async () => {
  const dir = mkdtempSync(join(tmpdir(), "tw-e2e-profile-"));
  let context;
  try {
    context = await openPersistent(dir);
    const first = await open(context, env.server.url);
    await first.evaluate(() => window.login());
    assert.equal(await first.evaluate(() => window.callApi()), 200);
    await context.close();
    context = undefined;

    await env.server.reset();
    context = await openPersistent(dir);
    const cookies = await context.cookies(env.server.url + "/auth/refresh");
    assert.ok(cookies.some((c) => c.name === "__Secure-tw_refresh"), "the refresh cookie did not survive the restart");
    const [a, b] = [await open(context, env.server.url), await open(context, env.server.url)];
    const [ra, rb] = await Promise.all([a.evaluate(() => tw.start()), b.evaluate(() => tw.start())]);
    assert.deepEqual([ra, rb], [true, true]);
    await waitFor(async () => (await a.evaluate(() => tw.claims()?.jti)) === (await b.evaluate(() => tw.claims()?.jti)),
      { timeoutMs: 1000, what: "both tabs to hold the same token" });
    const c = await env.server.counters();
    assert.equal(c.refreshRequests, 1);
    assert.equal(c.reuseDetected, 0);
    assert.equal(await a.evaluate(() => window.callApi()), 200);
    assert.equal(await b.evaluate(() => window.callApi()), 200);
    for (const p of [a, b]) assert.deepEqual(p.rec.errors, []);
    // Nothing about the token was written to the profile's storage either.
    const stored = await a.evaluate(async () => ({
      ls: localStorage.length, ss: sessionStorage.length,
      idb: (await indexedDB.databases()).length, caches: (await caches.keys()).length,
    }));
    assert.deepEqual(stored, { ls: 0, ss: 0, idb: 0, caches: 0 });
  } finally {
    if (context) await context.close().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
});
