// README's "A faster first load" and how the package loads: the release entry carries the
// .wasm inside it, so a page makes one request (the entry) and none for a .wasm; the
// README's one head link makes even that one start with the page; an early `init()` is
// shared by a later `createTokenClient()`; a load that fails is a TokenClientError whose
// code says why (unsupported_environment: no WebAssembly, or a Content-Security-Policy
// without 'wasm-unsafe-eval'), and is not kept. Its own small static server (pkg/ only),
// counting requests; the reference server is not needed.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { REPO, launchBrowser, watch } from "./harness.mjs";

const PKG = process.env.TW_E2E_PKG_DIR || join(REPO, "pkg");
const LINKS = {
  readme: '<link rel="modulepreload" href="/tokenwarden/index.js">',
  none: "",
};

let server, base, browser;
/** Requests for the package's files (served at /tokenwarden/) by path, since the page opened. */
let requests = {};

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
    if (!url.pathname.startsWith("/tokenwarden/")) return void res.writeHead(404).end(); // a favicon
    requests[url.pathname] = (requests[url.pathname] || 0) + 1;
    let body;
    try {
      body = readFileSync(join(PKG, url.pathname.slice("/tokenwarden/".length)));
    } catch {
      return void res.writeHead(404).end();
    }
    res.writeHead(200, {
      "Content-Type": url.pathname.endsWith(".wasm") ? "application/wasm" : "text/javascript",
      "Cache-Control": "no-store", // every load is a request the server sees
    });
    res.end(body);
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
  requests = {};
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

// The preload was requested before the load event and the module import after it: both are
// counted when createTokenClient() resolves, no waiting needed.
for (const [links, name] of [
  ["readme", "README's head link: the entry is requested once, by the preload, and no .wasm at all"],
  ["none", "without a preload: one request, the entry's, and no .wasm"],
]) {
  test(name, async () => {
    const { context, page, seen } = await open(links);
    assert.equal(await construct(page), "signedOut");
    assert.deepEqual(requests, { "/tokenwarden/index.js": 1 }, "what the page asked the server for");
    assert.deepEqual(seen.errors, []);
    await context.close();
  });
}

test("an early init() is shared by a later createTokenClient()", async () => {
  const { context, page, seen } = await open("none");
  // as the README's recipe: init() without awaiting it, at the top of the app's module
  const same = await page.evaluate(async () => {
    const m = await import("/tokenwarden/index.js");
    const early = m.init();
    const client = await m.createTokenClient({ refreshUrl: "/auth/refresh", crossTab: false });
    client.dispose();
    return early === m.init();
  });
  assert.equal(same, true, "one load, shared");
  assert.deepEqual(seen.errors, []);
  await context.close();
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
        message: e.message,
        cause: e.cause === undefined ? undefined : String(e.cause && e.cause.name),
      };
    }
  });

test("a Content-Security-Policy without 'wasm-unsafe-eval' is unsupported_environment, with the browser's CompileError as cause", async () => {
  const { context, page, seen } = await open("none", "&csp=strict");
  const r = await failure(page);
  assert.equal(typeof r, "object", `createTokenClient() resolved: ${r}`);
  assert.deepEqual({ typed: r.typed, name: r.name, code: r.code, cause: r.cause },
    { typed: true, name: "TokenClientError", code: "unsupported_environment", cause: "CompileError" }, r.message);
  assert.match(r.message, /'wasm-unsafe-eval'/);
  assert.deepEqual(seen.errors, [], "no uncaught error or unhandled rejection");
  await context.close();
});

test("no WebAssembly (turned off) is unsupported_environment; the failed load is not kept", async () => {
  const { context, page, seen } = await open("none");
  const r = await page.evaluate(async () => {
    const saved = globalThis.WebAssembly;
    delete globalThis.WebAssembly;
    const m = await import("/tokenwarden/index.js");
    let first;
    try {
      await m.createTokenClient({ refreshUrl: "/auth/refresh", crossTab: false });
      first = "created";
    } catch (e) {
      first = { typed: e instanceof m.TokenClientError, code: e.code, message: e.message };
    }
    globalThis.WebAssembly = saved;
    const client = await m.createTokenClient({ refreshUrl: "/auth/refresh", crossTab: false });
    const state = client.state;
    client.dispose();
    return { first, state };
  });
  assert.deepEqual(r.first, { typed: true, code: "unsupported_environment", message: "WebAssembly is turned off in this browser" });
  assert.equal(r.state, "signedOut", "the next call loads");
  assert.deepEqual(seen.errors, []);
  await context.close();
});

test("an engine without Uint8Array.prototype.setFromBase64 (Chrome < 140, Firefox < 133, Safari < 18.2) decodes the embedded wasm with the loop", async () => {
  const { context, page, seen } = await open("none");
  const r = await page.evaluate(async () => {
    const had = typeof Uint8Array.prototype.setFromBase64 === "function";
    const saved = Object.getOwnPropertyDescriptor(Uint8Array.prototype, "setFromBase64");
    delete Uint8Array.prototype.setFromBase64;
    try {
      const m = await import("/tokenwarden/index.js");
      const client = await m.createTokenClient({ refreshUrl: "/auth/refresh", crossTab: false });
      const state = client.state;
      client.dispose();
      return { had, state, gone: typeof Uint8Array.prototype.setFromBase64 };
    } finally {
      if (saved) Object.defineProperty(Uint8Array.prototype, "setFromBase64", saved);
    }
  });
  assert.deepEqual(r, { had: true, state: "signedOut", gone: "undefined" });
  assert.deepEqual(seen.errors, []);
  await context.close();
});

/**
 * Loads the package in a page whose WebAssembly.Module refuses buffers above `limit` bytes as
 * Chromium before 115 did on the main thread (`null`: no limit), counting the asynchronous
 * compiles; the client's state and that count.
 */
const loadWithSyncLimit = (page, limit) =>
  page.evaluate(async (limit) => {
    const W = globalThis.WebAssembly;
    const { Module, instantiate } = W;
    let refused = 0;
    let async = 0;
    W.Module = new Proxy(Module, {
      construct(target, args) {
        if (limit !== null && args[0].byteLength > limit) {
          refused++;
          throw new RangeError(
            "WebAssembly.Compile is disallowed on the main thread, if the buffer size is larger than 4KB. Use WebAssembly.compile, or compile on a worker thread.",
          );
        }
        return Reflect.construct(target, args);
      },
    });
    W.instantiate = (...args) => {
      async++;
      return instantiate(...args);
    };
    try {
      const m = await import("/tokenwarden/index.js");
      const client = await m.createTokenClient({ refreshUrl: "/auth/refresh", crossTab: false });
      const state = client.state;
      client.dispose();
      return { state, refused, async };
    } finally {
      W.Module = Module;
      W.instantiate = instantiate;
    }
  }, limit);

test("the embedded wasm is compiled synchronously: no asynchronous compile", async () => {
  const { context, page, seen } = await open("none");
  assert.deepEqual(await loadWithSyncLimit(page, null), { state: "signedOut", refused: 0, async: 0 });
  assert.deepEqual(seen.errors, []);
  await context.close();
});

test("an engine that refuses a synchronous compile of this size (Chromium < 115: RangeError above 4 KB) compiles it asynchronously", async () => {
  const { context, page, seen } = await open("none");
  // the 70-byte XOR module is still compiled synchronously; the package's wasm is refused once
  assert.deepEqual(await loadWithSyncLimit(page, 4096), { state: "signedOut", refused: 1, async: 1 });
  assert.deepEqual(seen.errors, []);
  await context.close();
});
