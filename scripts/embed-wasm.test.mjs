// node --test: scripts/embed-wasm.mjs's module gives back exactly the bytes it was made from
// (every byte value, lengths around the 8-byte words the XOR module steps by), through the
// loop Node takes and, where the runtime has it, Uint8Array's setFromBase64; and the real
// .wasm of pkg/, when built, comes back as a module that validates.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { embed, xorModule, K } from "./embed-wasm.mjs";

/** Imports the generated module's text (ESM from a data: URL). */
const load = (text) => import(`data:text/javascript;base64,${Buffer.from(text).toString("base64")}`);

test("every byte value and every length around a word comes back unchanged", async () => {
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  const cases = [new Uint8Array(0), all, Uint8Array.from([0x60, 0, 0x27, 0x22, 0x5c, 0x0a, 0x0d, 0x24, 0x7b])];
  for (const n of [1, 7, 8, 9, 15, 16, 17, 65535, 65536, 65537]) {
    cases.push(Uint8Array.from({ length: n }, (_, i) => (i * 151 + n) & 255));
  }
  for (const bytes of cases) {
    const { wasm } = await load(embed(bytes));
    assert.deepEqual(Buffer.from(wasm()), Buffer.from(bytes), `${bytes.length} bytes`);
  }
});

test("the setFromBase64 path gives the same bytes as the loop", async (t) => {
  if (typeof Uint8Array.prototype.setFromBase64 !== "function") {
    // Node 20 has no setFromBase64: polyfill it from Buffer, the rest of the module unchanged
    Object.defineProperty(Uint8Array.prototype, "setFromBase64", {
      configurable: true,
      value(s) {
        const b = Buffer.from(s, "base64");
        this.set(b);
        return { read: s.length, written: b.length };
      },
    });
    t.after(() => delete Uint8Array.prototype.setFromBase64);
  }
  const bytes = Uint8Array.from({ length: 1000 }, (_, i) => (i * 37) & 255);
  const { wasm } = await load(embed(bytes) + "\n// setFromBase64 path\n");
  assert.deepEqual(Buffer.from(wasm()), Buffer.from(bytes));
});

test("the XOR module is small and valid, and K prints the .wasm's frequent bytes as themselves", () => {
  const x = xorModule();
  assert.ok(WebAssembly.validate(x));
  assert.ok(x.length < 128, `${x.length} bytes`);
  // 0x00 (everywhere) and 0x60 (every function type) must become characters no minifier
  // escapes in any quote style: printable ASCII other than quotes, backslash and `$`.
  for (const b of [0x00, 0x60]) {
    const c = String.fromCharCode(b ^ K);
    assert.match(c, /^[\x20-\x7e]$/, `byte ${b} -> ${JSON.stringify(c)}`);
    assert.ok(!`"'\`\\$`.includes(c), `byte ${b} -> ${JSON.stringify(c)}, which is escaped`);
  }
});

test("pkg/'s .wasm, embedded, comes back as a module that validates", { skip: !existsSync(new URL("../pkg/tokenwarden_bg.wasm", import.meta.url)) }, async () => {
  const file = readFileSync(new URL("../pkg/tokenwarden_bg.wasm", import.meta.url));
  const { wasm } = await load(embed(file));
  const bytes = wasm();
  assert.equal(bytes.length, file.length);
  assert.ok(Buffer.from(bytes).equals(file));
  assert.ok(WebAssembly.validate(bytes));
});
