// TokenProvider cases the fixture apps do not reach, in headless Chromium: provider/cases.js
// bundled by esbuild with the packed tokenwarden (tests/apps/node_modules) and React from
// tests/apps/vite-react (run.sh installs both), served with a refresh endpoint that answers
// 401 (signed out).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { chromium } from "playwright-core";
import { build } from "../../scripts/node_modules/esbuild/lib/main.js";

const here = new URL(".", import.meta.url).pathname;
let browser, server, base;

before(async () => {
  const out = await build({
    entryPoints: [`${here}provider/cases.js`],
    bundle: true,
    format: "esm",
    write: false,
    nodePaths: [`${here}vite-react/node_modules`],
    define: { "process.env.NODE_ENV": '"production"' },
    logLevel: "error",
  });
  const js = out.outputFiles[0].text;
  server = createServer((req, res) => {
    if (req.url === "/cases.js") return res.writeHead(200, { "content-type": "text/javascript" }).end(js);
    if (req.url === "/auth/refresh") {
      return res.writeHead(401, { "content-type": "application/json" }).end('{"error":"invalid_grant"}');
    }
    res.writeHead(200, { "content-type": "text/html" });
    res.end('<!doctype html><div id="root"></div><script type="module" src="/cases.js"></script>');
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${server.address().port}/`;
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
  server?.close();
});

async function open() {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const problems = [];
  page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && !/Failed to load resource/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  await page.goto(base);
  return { context, page, problems };
}

const state = (page, id, value) =>
  page.waitForFunction(([id, v]) => document.querySelector(`[data-testid="${id}"]`)?.textContent === v, [id, value]);

test("new options while a child mounts in the same commit: no 'disposed' error, the child follows the new client", async () => {
  const { context, page, problems } = await open();
  try {
    await state(page, "options-state", "signedOut");
    for (let n = 1; n <= 3; n++) {
      await page.getByTestId("next-options").click();
      await state(page, "options-n", String(n));
      await state(page, "options-state", "signedOut");
    }
    assert.deepEqual(await page.evaluate(() => window.providerErrors), []);
    assert.deepEqual(problems, [], "no page errors");
  } finally {
    await context.close();
  }
});

test("client={null} while the app makes its client: loading, no error; then the client's state", async () => {
  const { context, page, problems } = await open();
  try {
    await state(page, "options-state", "signedOut"); // the page has settled
    assert.equal(await page.getByTestId("null-state").textContent(), "loading");
    await page.getByTestId("make-client").click();
    await state(page, "null-state", "signedOut"); // never started: signed out
    assert.deepEqual(await page.evaluate(() => window.providerErrors), []);
    assert.deepEqual(problems, [], "no page errors");
  } finally {
    await context.close();
  }
});
