// Drives the fixture apps in headless Chromium (playwright-core with Debian's
// /usr/bin/chromium; no browser download). run.sh starts the servers and sets
//   TW_SERVER_URL  the reference server (test mode, 3 s access tokens)
//   TW_APPS        {"vite-react": url, "vite-react-dev": url, "next-app": url (Turbopack build),
//                   "next-app-webpack": url (the same app, `next build --webpack`)}
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { readFileSync } from "node:fs";

const server = process.env.TW_SERVER_URL;
const apps = JSON.parse(process.env.TW_APPS ?? "{}");
assert.ok(server && Object.keys(apps).length, "run via tests/apps/run.sh");

let browser;
before(async () => {
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [
      "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
});
after(async () => {
  await browser?.close();
});

test("README's axios and ky recipes are the fixture apps' code, word for word", () => {
  const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
  const section = readme.slice(readme.indexOf("### fetch, axios and ky"), readme.indexOf("### React"));
  const recipes = [...section.matchAll(/```js\n([\s\S]*?)```/g)]
    .map((m) => m[1])
    .filter((code) => code.includes("export function"))
    .map((code) => code.slice(code.indexOf("/**")));
  assert.equal(recipes.length, 2, "the axios and the ky recipe");
  for (const app of ["vite-react/src/api.js", "next-app/app/api.js"]) {
    const source = readFileSync(new URL(app, import.meta.url), "utf8");
    for (const code of recipes) assert.ok(source.includes(code), `${app} has the README's\n${code}`);
  }
});

const counters = async () => (await fetch(`${server}/test/counters`)).json();

/** Runs body(page, problems) in a fresh browser context, closed afterwards. */
async function withPage(url, body) {
  const { context, page, problems } = await openPage(url);
  try {
    await body(page);
    assert.deepEqual(problems, [], "no page errors");
  } finally {
    await context.close();
  }
}

/** What reached https://api.other.example (an origin not in allowedOrigins), per page. */
const OTHER = "https://api.other.example/";

async function openPage(url) {
  const context = await browser.newContext();
  const page = await context.newPage();
  // Answers the other origin (with CORS, a preflight too) and records what each request carried.
  page.otherSeen = [];
  await context.route(`${OTHER}**`, (route) => {
    const r = route.request();
    const headers = r.headers();
    page.otherSeen.push({
      method: r.method(),
      // the scheme only: a failure message never shows a token
      authorization: headers.authorization ? headers.authorization.split(" ")[0] : null,
      dpop: headers.dpop ? "(a proof)" : null,
      preflightFor: headers["access-control-request-headers"] ?? null,
    });
    const cors = {
      "access-control-allow-origin": "*",
      "access-control-allow-headers": "authorization, dpop, content-type",
    };
    return route.fulfill(
      r.method() === "OPTIONS" ? { status: 204, headers: cors } : { status: 200, headers: { ...cors, "content-type": "text/plain" }, body: "pong" },
    );
  });
  page.setDefaultTimeout(15_000);
  const problems = [];
  page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  page.on("console", (m) => {
    // The refresh endpoint's 401 before login is expected network noise.
    if (m.type() === "error" && !/Failed to load resource/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  await page.goto(url);
  return { context, page, problems };
}

async function until(check, what, ms = 10_000) {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) assert.fail(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const text = (page, id) => page.getByTestId(id).textContent();
const waitText = (page, id, pattern) =>
  page.waitForFunction(
    ([id, source]) => new RegExp(source).test(document.querySelector(`[data-testid="${id}"]`)?.textContent ?? ""),
    [id, pattern.source],
  );

/** Clicks a call button and returns the new answer shown for it. */
async function call(page, kind) {
  const id = `result-${kind}`;
  const n = Number(await page.getByTestId(id).getAttribute("data-n"));
  await page.getByTestId(`call-${kind}`).click();
  await page.waitForFunction(
    ([id, n]) => Number(document.querySelector(`[data-testid="${id}"]`)?.dataset.n) > n,
    [id, n],
  );
  return text(page, id);
}

async function callAll(page) {
  for (const kind of ["fetch", "axios", "ky"]) {
    assert.equal(await call(page, kind), "200 demo", `${kind} with the Bearer`);
  }
  // The same three (the README's axios and ky recipes) to an origin not in allowedOrigins:
  // answered, and without the token (nor a preflight asking to send it).
  page.otherSeen.length = 0;
  for (const kind of ["fetch", "axios", "ky"]) {
    assert.equal(await call(page, `${kind}-other`), "200", `${kind} to the other origin`);
  }
  assert.deepEqual(
    page.otherSeen,
    ["fetch", "axios", "ky"].map(() => ({ method: "GET", authorization: null, dpop: null, preflightFor: null })),
    "requests to an origin not allowed carry no token",
  );
}

/** The whole user journey, from a fresh page of the app. */
async function journey(page) {
  // start(): no refresh cookie yet, so signed out.
  await waitText(page, "state", /^signedOut$/);
  // Signed out: requests go out without a Bearer and the API says 401.
  assert.equal(await call(page, "fetch"), "401 ");

  const before = await counters();
  await page.locator('input[name="username"]').fill("demo");
  await page.locator('input[name="password"]').fill("demo");
  await page.getByRole("button", { name: "log in" }).click();
  await waitText(page, "state", /^active$/);
  assert.equal(await text(page, "sub"), "demo");
  assert.match(await text(page, "events"), /signedIn/);
  await callAll(page);

  // Silent refresh: a 3 s token is refreshed at half its lifetime.
  await waitText(page, "events", /refreshed:self/);
  const afterRefresh = await counters();
  assert.ok(afterRefresh.refreshesServed > before.refreshesServed, "refreshesServed grew");
  assert.equal(afterRefresh.reuseDetected, before.reuseDetected, "no refresh-token reuse");
  await callAll(page); // with the rotated token

  // A reload restores the session from the HttpOnly cookie (start()).
  await page.reload();
  await waitText(page, "state", /^active$/);
  await callAll(page);

  const beforeLogout = await counters();
  await page.getByTestId("logout").click();
  await waitText(page, "state", /^signedOut$/);
  await until(async () => (await counters()).logouts === beforeLogout.logouts + 1, "logout reached the server");
  assert.equal(await call(page, "fetch"), "401 ");

}

/** Resources a live client holds (counted by public/probe.js). */
const probe = (page) => page.evaluate(() => window.__twProbe());

async function providerLifecycle(page) {
  // One client: one BroadcastChannel, four page-lifecycle listeners.
  assert.deepEqual(await probe(page), { channels: 1, lifecycleListeners: 4 });
  await page.getByTestId("toggle-provider").click(); // unmount: dispose
  await page.waitForFunction(() => !document.querySelector('[data-testid="state"]'));
  assert.deepEqual(await probe(page), { channels: 0, lifecycleListeners: 0 }, "unmount disposed the client");
  await page.getByTestId("toggle-provider").click(); // mount again
  await waitText(page, "state", /^signedOut$/);
  assert.deepEqual(await probe(page), { channels: 1, lifecycleListeners: 4 });
}

if (apps["vite-react"]) {
  const url = apps["vite-react"];

  test("vite-react: login, Bearer via client.fetch/axios/ky, silent refresh, reload, logout", async () => {
    await withPage(`${url}/`, async (page) => {
      assert.equal(await page.evaluate(() => window.__rootEffectRuns), 1, "a production build");
      await journey(page);
      await providerLifecycle(page);
    });
  });

}

if (apps["vite-react-dev"]) {
  const url = apps["vite-react-dev"];

  test("vite-react (vite dev server): Strict Mode double effects leave exactly one client; full journey", async () => {
    await withPage(`${url}/`, async (page) => {
      // First load may still be optimizing dependencies (Vite can reload the page then).
      await waitText(page, "state", /^signedOut$/);
      await page.reload();
      await waitText(page, "state", /^signedOut$/);
      assert.equal(await page.evaluate(() => window.__rootEffectRuns), 2, "Strict Mode ran effects twice");
      await providerLifecycle(page);
      await journey(page);
      // Fast unmount/mount cycles while clients are being created.
      for (let i = 0; i < 5; i++) await page.getByTestId("toggle-provider").click();
      await page.waitForFunction(() => !document.querySelector('[data-testid="state"]'));
      await page.waitForTimeout(300); // let any in-flight creation settle
      assert.deepEqual(await probe(page), { channels: 0, lifecycleListeners: 0 }, "no client leaked");
    });
  });
}

for (const name of ["next-app", "next-app-webpack"].filter((n) => apps[n])) {
  const url = apps[name];

  test(`${name}: server component imports tokenwarden; createTokenClient() rejects unsupported_environment`, async () => {
    const res = await fetch(`${url}/`);
    assert.equal(res.status, 200);
    const html = await res.text();
    assert.match(html, /id="server-typeof">function</);
    assert.match(html, /id="server-code">unsupported_environment</);
    // The client component is server-rendered in its loading state.
    assert.match(html, /data-testid="state">loading</);
    assert.doesNotMatch(html, /Application error|Internal Server Error|NEXT_REDIRECT|digest/);
  });

  test(`${name}: login, Bearer via client.fetch/axios/ky, silent refresh, reload, logout`, async () => {
    await withPage(`${url}/`, journey);
  });
}
