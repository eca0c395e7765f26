// node --test: scripts/check-low-memory.mjs passes Rust's layout and fails the
// layouts under which wasm-opt --low-memory-unused would miscompile.
import { test } from "node:test";
import assert from "node:assert/strict";
import { check } from "./check-low-memory.mjs";

const { default: binaryen } = await import(new URL("./node_modules/binaryen/index.js", import.meta.url));

function wasm(wat) {
  const m = binaryen.parseText(wat);
  m.setFeatures(binaryen.Features.All);
  assert.ok(m.validate(), "the fixture validates");
  const b = m.emitBinary();
  m.dispose();
  return b;
}
const mod = (sp, dataAt) => `(module (memory 17)
  (global $sp (mut i32) (i32.const ${sp}))
  ${dataAt === null ? "" : `(data (i32.const ${dataAt}) "tokenwarden")`}
  (func (export "f") (result i32) (global.get $sp)))`;

test("Rust's stack-first layout passes", () => {
  const r = check(wasm(mod(1048576, 1048576)));
  assert.deepEqual(r.problems, []);
  assert.equal(r.stackPointer, 1048576);
});

test("data-first from --global-base 1024 passes", () => {
  assert.deepEqual(check(wasm(mod(70000, 1024))).problems, []);
});

test("a data segment below 1 KB fails", () => {
  const r = check(wasm(mod(1048576, 16)));
  assert.equal(r.problems.length, 1);
  assert.match(r.problems[0], /data segment starts at 16/);
});

test("a stack pointer below 1 KB fails", () => {
  assert.match(check(wasm(mod(512, 1048576))).problems.join(), /stack pointer starts at 512/);
});

test("no stack pointer fails", () => {
  const r = check(wasm(`(module (memory 1) (data (i32.const 2048) "x"))`));
  assert.match(r.problems.join(), /no mutable i32 global/);
});

test("passive segments have no address and pass", () => {
  const b = wasm(`(module (memory 1) (global (mut i32) (i32.const 4096)) (data "passive"))`);
  assert.deepEqual(check(b).problems, []);
});
