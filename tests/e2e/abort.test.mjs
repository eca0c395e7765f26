// client.fetch honours the caller's AbortSignal as window.fetch does: while the request waits
// for a refresh in flight (or for the refresh before a 401's replay), an abort rejects it at
// once with the signal's reason, and the request is never sent. The refresh is held open by
// the test (a route that answers only when released), so nothing here waits on a clock.
import { test } from "node:test";
import assert from "node:assert/strict";
import { useEnv, login, countLog } from "./harness.mjs";

const env = useEnv();

/** Holds every refresh call of `context` until `release()`; `seen()` counts them. */
function holdRefreshes(context) {
  return hold(context, "**/auth/refresh");
}

/** Holds every request of `context` to `pattern` until `release()`; `seen()` counts them. */
async function hold(context, pattern) {
  const held = [];
  let waiters = [];
  await context.route(pattern, (route) => {
    held.push(route);
    for (const w of waiters.splice(0)) w();
  });
  return {
    seen: () => held.length,
    arrived: (n) => (held.length >= n ? Promise.resolve() : new Promise((r) => waiters.push(r)).then(() => undefined)),
    release: async () => {
      for (const r of held.splice(0)) await r.continue();
    },
  };
}

for (const [name, call] of [
  ["init.signal", "tw.fetch('/api/me', { signal: ac.signal })"],
  ["a Request's signal", "tw.fetch(new Request('/api/me', { signal: ac.signal }))"],
  ["AbortSignal.any of the caller's", "tw.fetch('/api/me', { signal: AbortSignal.any([ac.signal]) })"],
]) {
  test(`an abort (${name}) while client.fetch waits for a refresh rejects at once with the signal's reason; nothing is sent`, async () => {
    const context = await env.newContext();
    const page = await env.openTab(context, { crossTab: false });
    await login(page);
    const refreshes = await holdRefreshes(context);
    await env.server.reset();
    // a forced refresh is in flight (held), so client.fetch waits for its token
    await page.evaluate(() => {
      window.forcedDone = false;
      window.forced = window.tw.refresh().then(() => "refreshed", (e) => e.code);
      window.forced.finally(() => (window.forcedDone = true));
    });
    while (refreshes.seen() < 1) await refreshes.arrived(1);
    const outcome = await page.evaluate(async (call) => {
      const ac = new AbortController();
      const reason = new DOMException("the caller gave up", "AbortError");
      const pending = eval(call).then(
        (r) => `resolved ${r.status}`,
        (e) => (e === reason ? "rejected with the signal's reason" : `rejected with ${e && e.name}: ${e && e.message}`),
      );
      await new Promise((r) => setTimeout(r, 0)); // the call is waiting now
      ac.abort(reason);
      return [await pending, window.forcedDone];
    }, call);
    assert.deepEqual(outcome, ["rejected with the signal's reason", false], "rejected while the refresh was still on its way");
    assert.equal(refreshes.seen(), 1, "the refresh is still held: the abort did not wait for it");
    await refreshes.release();
    assert.equal(await page.evaluate(() => window.forced), "refreshed");
    // the aborted request never left, even after the token it waited for arrived
    assert.equal(await page.evaluate(() => window.callApi()), 200);
    assert.equal(countLog(await env.server.log(), "GET", "/api/me"), 1, "only the later call reached the API");
  });
}

test("an abort while client.fetch waits for the refresh before replaying a 401 rejects at once; the replay is not sent", async () => {
  const context = await env.newContext();
  const page = await env.openTab(context, { crossTab: false });
  await login(page);
  // the server retires the token's signing key: /api/me answers 401, and the client refreshes
  for (let i = 0; i < 5; i++) await env.server.rotateKey();
  const refreshes = await holdRefreshes(context);
  await env.server.reset();
  await page.evaluate(() => {
    window.ac = new AbortController();
    window.reason = new DOMException("the caller gave up", "AbortError");
    window.pending = window.tw.fetch("/api/me", { signal: window.ac.signal }).then(
      (r) => `resolved ${r.status}`,
      (e) => (e === window.reason ? "rejected with the signal's reason" : `rejected with ${e && e.name}`),
    );
  });
  await refreshes.arrived(1); // the 401 came back and the refresh is held
  const outcome = await page.evaluate(async () => {
    window.ac.abort(window.reason);
    return [await window.pending, window.tw.state];
  });
  assert.deepEqual(outcome, ["rejected with the signal's reason", "refreshing"], "rejected while the refresh was still on its way");
  assert.equal(refreshes.seen(), 1);
  await refreshes.release();
  assert.equal(await page.evaluate(() => window.callApi()), 200);
  const log = await env.server.log();
  assert.deepEqual(
    log.filter((e) => e.path === "/api/me").map((e) => e.status),
    [401, 200],
    "the first call's 401, then only the later call: the aborted replay was never sent",
  );
});

// An abort while the request is being sent (the fast path's `fetch` for a URL, the full path's
// for a Request) rejects with the signal's reason too, whatever it is: a TimeoutError (what
// AbortSignal.timeout() gives) or the app's own reason, not a TokenClientError.
for (const [name, call] of [
  ["a URL", "tw.fetch('/api/me', { signal: ac.signal })"],
  ["a Request", "tw.fetch(new Request('/api/me', { signal: ac.signal }))"],
  ["a URL to an origin not allowed", "tw.fetch('http://localhost:' + location.port + '/api/me', { signal: ac.signal })"],
]) {
  test(`an abort while client.fetch sends (${name}) rejects with the signal's reason, whatever it is`, async () => {
    const context = await env.newContext();
    const page = await env.openTab(context, { crossTab: false });
    await login(page);
    const api = await hold(context, "**/api/me");
    for (const [i, reason] of ['new DOMException("timed out", "TimeoutError")', 'new Error("the app gave up")'].entries()) {
      await page.evaluate(
        ([call, reason]) => {
          window.ac = new AbortController();
          window.reason = eval(reason);
          const ac = window.ac;
          window.pending = eval(call).then(
            (r) => `resolved ${r.status}`,
            (e) => (e === window.reason ? "rejected with the signal's reason" : `rejected with ${e && e.name}: ${e && e.code}`),
          );
        },
        [call, reason],
      );
      await api.arrived(i + 1); // the request is on its way (held)
      const outcome = await page.evaluate(async () => {
        window.ac.abort(window.reason);
        return await window.pending;
      });
      assert.equal(outcome, "rejected with the signal's reason", reason);
    }
  });
}
