// README's "A faster first load": the two head links it recommends are used by the package
// (one request for the .wasm), the `crossorigin` it insists on is
// what makes them match, and an early `init()` is shared by a later `createTokenClient()` or,
// when it failed, not kept; a load that fails is a TokenClientError whose code says why
// (network: the .wasm could not be downloaded; unsupported_environment: the browser would
// not compile it, as under a Content-Security-Policy without 'wasm-unsafe-eval'). Its own
// small static server (pkg/ only), counting .wasm requests; the reference server is not needed.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { REPO, launchBrowser, watch } from "./harness.mjs";

const PKG = process.env.TW_E2E_PKG_DIR || join(REPO, "pkg");
const WASM = "/tokenwarden/tokenwarden_bg.wasm";
const LINKS = {
  readme:
    '<link rel="modulepreload" href="/tokenwarden/index.js">' +
    `<link rel="preload" href="${WASM}" as="fetch" type="application/wasm" crossorigin>`,
  "no-crossorigin":
    '<link rel="modulepreload" href="/tokenwarden/index.js">' +
    `<link rel="preload" href="${WASM}" as="fetch" type="application/wasm">`,
  none: "",
};

let server, base, browser;
let wasmRequests = 0;
/** How the next .wasm request is answered: "503" (an HTML error page), "html" (200 with the
 * page a server sends for every unknown path), "reset" (the connection is dropped). */
let failNextWasm = false;

before(async () => {
  server = createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    if (url.pathname === "/") {
      const head = LINKS[url.searchParams.get("links")] ?? "";
      const headers = { "Content-Type": "text/html", "Cache-Control": "no-store" };
      // ?csp=strict: a policy that allows the page's own scripts but not WebAssembly
      if (url.searchParams.get("csp") === "strict") headers["Content-Security-Policy"] = "script-src 'self'";
      res.writeHead(200, headers);
      res.end(`<!doctype html><meta charset=utf-8>${head}<title>preload</title>`);
      return;
    }
    const file = { "/tokenwarden/index.js": "index.js", [WASM]: "tokenwarden_bg.wasm" }[url.pathname];
    if (!file) return void res.writeHead(404).end();
    if (file.endsWith(".wasm")) {
      wasmRequests++;
      const fail = failNextWasm === true ? "503" : failNextWasm;
      // a dropped connection is retried by the browser: "reset" holds until the test clears it
      if (fail !== "reset") failNextWasm = false;
      if (fail === "503") return void res.writeHead(503, { "Content-Type": "text/html" }).end("<h1>down</h1>");
      if (fail === "html") return void res.writeHead(200, { "Content-Type": "text/html" }).end("<!doctype html><h1>app</h1>");
      if (fail === "reset") return void req.socket.destroy();
    }
    res.writeHead(200, {
      "Content-Type": file.endsWith(".wasm") ? "application/wasm" : "text/javascript",
      "Cache-Control": "no-store", // every load is a request the server sees
    });
    res.end(readFileSync(join(PKG, file)));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${server.address().port}`;
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await new Promise((r) => server?.close(r));
});

/** Opens the page with the given head links and waits for its load event (the preloads). */
async function open(links, query = "") {
  wasmRequests = 0;
  const context = await browser.newContext();
  const page = await context.newPage();
  const seen = watch(page);
  await page.goto(`${base}/?links=${links}${query}`);
  return { context, page, seen };
}

const construct = (page) =>
  page.evaluate(async () => {
    const m = await import("/tokenwarden/index.js");
    const client = await m.createTokenClient({ refreshUrl: "/auth/refresh", crossTab: false });
    const state = client.state;
    client.dispose();
    return state;
  });

// The preload was requested before the load event and the package's own fetch() before
// createTokenClient() resolved: both are counted when it resolves, no waiting needed.
for (const [links, requests, name, why] of [
  ["readme", 1, "README's two head links: the .wasm is requested once, and the package uses the preload", "the package reused the preloaded .wasm"],
  ["no-crossorigin", 2, "without crossorigin the preload does not match the package's fetch(): two requests", "the preloaded copy is not used"],
]) {
  test(name, async () => {
    const { context, page, seen } = await open(links);
    assert.equal(await construct(page), "signedOut");
    assert.equal(wasmRequests, requests, why);
    assert.deepEqual(seen.errors, []);
    await context.close();
  });
}

test("an early init() is shared by a later createTokenClient(); a failed one is not kept", async () => {
  const { context, page, seen } = await open("none");
  // as the README's recipe: init() without awaiting it, at the top of the app's module
  await page.evaluate(async () => {
    const m = await import("/tokenwarden/index.js");
    m.init();
  });
  assert.equal(await construct(page), "signedOut");
  assert.equal(wasmRequests, 1);
  await context.close();

  // The early load fails (an HTML 503): no unhandled rejection on the page, and the next
  // createTokenClient() loads again and works.
  const second = await open("none");
  failNextWasm = true;
  const early = await second.page.evaluate(async () => {
    const m = await import("/tokenwarden/index.js");
    const p = m.init(); // not awaited by the app, as in the recipe
    return p.then(
      () => "loaded",
      () => "failed",
    );
  });
  assert.equal(early, "failed");
  assert.equal(await construct(second.page), "signedOut");
  assert.equal(wasmRequests, 2);
  assert.deepEqual(second.seen.errors, [], "no uncaught error or unhandled rejection");
  assert.deepEqual(seen.errors, []);
  await second.context.close();
});

/** createTokenClient()'s rejection as the app sees it. */
const failure = (page) =>
  page.evaluate(async () => {
    const m = await import("/tokenwarden/index.js");
    try {
      await m.createTokenClient({ refreshUrl: "/auth/refresh", crossTab: false });
      return "created";
    } catch (e) {
      return {
        typed: e instanceof m.TokenClientError,
        name: e.name,
        code: e.code,
        status: e.status,
        message: e.message,
        cause: e.cause === undefined ? undefined : String(e.cause && e.cause.name),
      };
    }
  });

for (const [fail, query, expected, name] of [
  ["503", "", { code: "network", status: 503, cause: undefined }, "an HTTP error for the .wasm is network, with its status"],
  ["reset", "", { code: "network", status: undefined, cause: "TypeError" }, "a dropped connection for the .wasm is network, with fetch's error as cause"],
  ["html", "", { code: "unsupported_environment", status: undefined, cause: "CompileError" }, "an HTML page where the .wasm should be is unsupported_environment, with the compile error as cause"],
  [false, "&csp=strict", { code: "unsupported_environment", status: undefined, cause: "CompileError" }, "a Content-Security-Policy without 'wasm-unsafe-eval' is unsupported_environment, naming the directive"],
]) {
  test(`a failed load: ${name}; the next call loads again`, async () => {
    const { context, page, seen } = await open("none", query);
    failNextWasm = fail;
    const r = await failure(page);
    failNextWasm = false;
    const requests = wasmRequests;
    assert.equal(typeof r, "object", `createTokenClient() resolved: ${r}`);
    assert.equal(r.typed, true, "a TokenClientError");
    assert.equal(r.name, "TokenClientError");
    assert.deepEqual({ code: r.code, status: r.status, cause: r.cause }, expected, r.message);
    if (r.code === "unsupported_environment") assert.match(r.message, /'wasm-unsafe-eval'/);
    else assert.match(r.message, /could not download/);
    if (fail) {
      // the server is back: a failed load is not kept
      assert.equal(await construct(page), "signedOut");
      assert.equal(wasmRequests, requests + 1);
    }
    assert.deepEqual(seen.errors, [], "no uncaught error or unhandled rejection");
    await context.close();
  });
}
