// The Vite + React fixture app (tests/apps/vite-react, `vite build` against the npm pack of
// pkg/) in Chromium, Firefox and WebKit (TW_ENGINE). Its dist/ is served by the reference
// server over HTTPS (same origin as /auth and /api, as the README's recipe asks) and driven
// like a user would: type into the form, click the buttons, reload.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { existsSync } from "node:fs";
import { useEnv, waitFor, REPO, ENGINE } from "./harness.mjs";

const DIST = process.env.TW_VITE_DIST || join(REPO, "tests/apps/vite-react/dist");
if (!existsSync(join(DIST, "index.html"))) {
  throw new Error(`${DIST}/index.html is missing: tests/engines/run.sh builds it (vite build)`);
}

const env = useEnv({ wwwDir: DIST });

const text = (tab, id) => tab.eval((id) => document.querySelector(`[data-testid="${id}"]`)?.textContent ?? null, id);
const waitText = (tab, id, pattern, timeoutMs = 10000) =>
  waitFor(async () => pattern.test((await text(tab, id)) ?? ""), { timeoutMs, intervalMs: 100, what: `${id} to match ${pattern}` });

/** Clicks a call button (a real WebDriver click) and returns the new answer shown for it. */
async function call(tab, kind) {
  const id = `result-${kind}`;
  const n = Number(await tab.eval((id) => document.querySelector(`[data-testid="${id}"]`).dataset.n, id));
  await tab.focus();
  await tab.browser.wd.$(`[data-testid="call-${kind}"]`).click();
  await waitFor(async () => Number(await tab.eval((id) => document.querySelector(`[data-testid="${id}"]`).dataset.n, id)) > n,
    { timeoutMs: 10000, what: `a new ${kind} answer` });
  return text(tab, id);
}

async function callAll(tab) {
  for (const kind of ["fetch", "axios", "ky"]) assert.equal(await call(tab, kind), "200 demo", `${kind} with the Bearer`);
}

test(`${ENGINE}: vite-react: log in through the form, Bearer via client.fetch/axios/ky, silent refresh, reload, logout`, async () => {
  await env.server.config({ accessTtlSeconds: 3, leewaySeconds: 0 });
  const b = await env.openBrowser();
  const tab = await b.open(env.server.url + "/");
  await waitText(tab, "state", /^signedOut$/);
  assert.equal(await call(tab, "fetch"), "401 ");

  const wd = b.wd;
  await wd.$('input[name="username"]').setValue("demo");
  await wd.$('input[name="password"]').setValue("demo");
  await wd.$('button[type="submit"]').click();
  await waitText(tab, "state", /^active$/);
  assert.equal(await text(tab, "sub"), "demo");
  await callAll(tab);

  // Silent refresh: a 3 s token is refreshed at half its lifetime.
  await waitText(tab, "events", /refreshed:self/);
  const c = await env.server.counters();
  assert.ok(c.refreshesServed >= 1);
  assert.equal(c.reuseDetected, 0);
  await callAll(tab);

  // A reload restores the session from the Secure HttpOnly cookie (start()).
  await wd.refresh();
  await waitText(tab, "state", /^active$/);
  await callAll(tab);

  await tab.focus();
  await wd.$('[data-testid="logout"]').click();
  await waitText(tab, "state", /^signedOut$/);
  await waitFor(async () => (await env.server.counters()).logouts === 1, { what: "the logout to reach the server" });
  assert.equal(await call(tab, "fetch"), "401 ");
  await wd.refresh();
  await waitText(tab, "state", /^signedOut$/);

  // The provider holds exactly one client: one BroadcastChannel, four page listeners.
  assert.deepEqual(await tab.eval(() => window.__twProbe()), { channels: 1, lifecycleListeners: 4 });
  const final = await env.server.counters();
  assert.equal(final.reuseDetected, 0);
  assert.equal(final.apiExpiredTokens, 0);
});
