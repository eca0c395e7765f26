// The size check itself (make size): it must not pass on a package it cannot measure.
import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { measure } from "./size-budget.mjs";

const pkg = fileURLToPath(new URL("../pkg", import.meta.url));
const built = existsSync(join(pkg, "index.js"));

test("a package whose entry does not carry the .wasm (a --dev build) is refused, not counted without it", { skip: !built }, (t) => {
  const dir = mkdtempSync(join(tmpdir(), "tw-size-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "index.js"), 'export { default } from "./wasm.js";\n');
  for (const f of ["tokenwarden_bg.wasm", "react.js"]) copyFileSync(join(pkg, f), join(dir, f));
  assert.throws(() => measure(dir), /cannot hold pkg\/tokenwarden_bg\.wasm/);
});

test("the release package is measured shipped and through esbuild's defaults", { skip: !built }, () => {
  const m = measure(pkg);
  assert.ok(m.total.raw > m.shown[0].raw, "the entry holds the .wasm");
  // ASCII output escapes the literal's characters above U+007F: more raw bytes, never fewer.
  assert.ok(m.bundled.raw > m.total.raw, `${m.bundled.raw} vs ${m.total.raw}`);
  assert.ok(m.bundled.brotli > 0 && m.total.brotli > 0);
});
