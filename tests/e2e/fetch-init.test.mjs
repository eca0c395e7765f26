// client.fetch as a drop-in for window.fetch with the less common `init`s (found by an audit
// that compared the two request by request): an `init` that is a Request or inherits its
// options keeps them; a `no-cors` request never carries the token, so its 401 makes no
// refresh and no replay; headers given as a one-shot iterable are still on the 401's replay.
// /api/echo is answered by the test (context.route), which records what each request carried.
import { test } from "node:test";
import assert from "node:assert/strict";
import { useEnv, login, countLog } from "./harness.mjs";

const env = useEnv();

/** Answers **\/api/echo with `status(n)` for the n-th request; `seen` lists what each carried. */
async function echo(context, status = () => 200) {
  const seen = [];
  await context.route("**/api/echo", (route) => {
    const r = route.request();
    const h = r.headers();
    seen.push({ method: r.method(), auth: h.authorization ? h.authorization.split(" ")[0] : null, xa: h["x-a"] ?? null });
    return route.fulfill({ status: status(seen.length), headers: { "content-type": "text/plain" }, body: r.method() });
  });
  return seen;
}

async function signedIn() {
  const context = await env.newContext();
  const page = await env.openTab(context, { crossTab: false });
  await login(page);
  await env.server.reset();
  return { context, page };
}

test("an init that is a Request, or inherits its options, keeps them (method, headers) as fetch does", async () => {
  const { context, page } = await signedIn();
  const seen = await echo(context);
  const got = await page.evaluate(async () => {
    const asRequest = new Request("/api/echo", { method: "DELETE", headers: { "X-A": "r" } });
    const inherited = Object.create({ method: "PUT", headers: { "X-A": "i" } });
    return [
      await (await window.tw.fetch("/api/echo", asRequest)).text(),
      await (await window.tw.fetch("/api/echo", inherited)).text(),
    ];
  });
  assert.deepEqual(got, ["DELETE", "PUT"]);
  assert.deepEqual(seen, [
    { method: "DELETE", auth: "Bearer", xa: "r" },
    { method: "PUT", auth: "Bearer", xa: "i" },
  ]);
});

test("a no-cors request never carries the token: its 401 makes no refresh and no replay", async () => {
  const { context, page } = await signedIn();
  const seen = await echo(context, () => 401);
  const status = await page.evaluate(async () => {
    const a = await window.tw.fetch("/api/echo", { mode: "no-cors" });
    const b = await window.tw.fetch(new Request("/api/echo", { mode: "no-cors" }));
    return [a.status, b.status];
  });
  assert.deepEqual(status, [401, 401], "same-origin no-cors responses are readable");
  assert.deepEqual(seen.map((s) => s.auth), [null, null], "no token on either");
  assert.equal(countLog(await env.server.log(), "POST", "/auth/refresh"), 0, "no refresh");
});

test("headers given as a one-shot iterable are still on the 401's replay", async () => {
  const { context, page } = await signedIn();
  const seen = await echo(context, (n) => (n === 1 ? 401 : 200));
  const status = await page.evaluate(async () => {
    function* headers() {
      yield ["X-A", "gen"];
    }
    return (await window.tw.fetch("/api/echo", { headers: headers() })).status;
  });
  assert.equal(status, 200, "replayed after one refresh");
  assert.deepEqual(seen, [
    { method: "GET", auth: "Bearer", xa: "gen" },
    { method: "GET", auth: "Bearer", xa: "gen" },
  ]);
  assert.equal(countLog(await env.server.log(), "POST", "/auth/refresh"), 1);
});
