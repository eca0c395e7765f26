// tokenwarden in plain Node (what Next.js server rendering does): importing
// it never throws and touches no browser global; creating a client rejects
// with code "unsupported_environment". Uses the copy installed from the npm
// pack tarball (tests/apps/node_modules/tokenwarden).
import { test } from "node:test";
import assert from "node:assert/strict";

const BROWSER_GLOBALS = [
  "window", "document", "navigator", "location", "self", "localStorage", "sessionStorage",
  "indexedDB", "caches", "BroadcastChannel", "fetch", "addEventListener",
];

test("import('tokenwarden') in Node touches no browser global; createTokenClient rejects unsupported_environment", async () => {
  const touched = [];
  const saved = new Map();
  for (const name of BROWSER_GLOBALS) {
    saved.set(name, Object.getOwnPropertyDescriptor(globalThis, name));
    const original = globalThis[name];
    Object.defineProperty(globalThis, name, {
      configurable: true,
      get() {
        touched.push(name);
        return original;
      },
    });
  }
  let mod;
  try {
    mod = await import("tokenwarden");
  } finally {
    for (const [name, desc] of saved) {
      if (desc) Object.defineProperty(globalThis, name, desc);
      else delete globalThis[name];
    }
  }
  assert.deepEqual(touched, [], `import touched ${touched.join(", ")}`);
  assert.equal(typeof mod.createTokenClient, "function");
  assert.equal(typeof mod.TokenClientError, "function");

  await assert.rejects(mod.createTokenClient({ refreshUrl: "/r" }), (err) => {
    assert.ok(err instanceof mod.TokenClientError, "a TokenClientError");
    assert.ok(err instanceof Error);
    assert.equal(err.name, "TokenClientError");
    assert.equal(err.code, "unsupported_environment");
    return true;
  });
});

test("the package ships an optional React entry and keeps React out of the main entry", async () => {
  const { createRequire } = await import("node:module");
  const { readFile } = await import("node:fs/promises");
  const require = createRequire(import.meta.url);
  const pkgJson = JSON.parse(await readFile(require.resolve("tokenwarden/package.json"), "utf8"));
  assert.equal(pkgJson.exports["./react"].import, "./react.js");
  assert.equal(pkgJson.peerDependenciesMeta?.react?.optional, true);
  assert.equal(pkgJson.dependencies, undefined, "no runtime dependencies");
  const dir = require.resolve("tokenwarden/package.json").replace(/package\.json$/, "");
  // The release entry carries the wasm-bindgen glue (scripts/build-pkg.sh).
  assert.equal(pkgJson.files.includes("tokenwarden.js"), false, "the glue is bundled into index.js");
  // ... and so is the .wasm (scripts/embed-wasm.mjs): no file beside it to fetch or emit.
  assert.deepEqual(pkgJson.files.filter((f) => f.endsWith(".wasm")), [], "no .wasm shipped");
  assert.doesNotMatch(await readFile(dir + "index.js", "utf8"), /import\.meta|\.wasm["'`]/, "index.js refers to no file beside it");
  for (const file of ["index.js"]) {
    const src = await readFile(dir + file, "utf8");
    assert.doesNotMatch(src, /from\s+["']react["']/, `${file} imports react`);
  }
});
