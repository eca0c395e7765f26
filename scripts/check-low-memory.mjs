#!/usr/bin/env node
// Guards wasm-opt's --low-memory-unused (scripts/build-pkg.sh): that flag lets
// the optimizer assume no load or store touches the first 1,024 bytes of
// memory. True of Rust's wasm32 layout today, where the 1 MB stack comes first
// (growing down from __stack_pointer = 1048576) and the data follows, and of
// wasm-ld's other layout too (data from --global-base = 1024, stack after
// it). If a toolchain ever placed data or the stack's start lower, the
// optimizer would silently miscompile; this makes the build fail instead.
//
//   node scripts/check-low-memory.mjs target/…/tokenwarden.wasm
//
// Checks: every active data segment starts at or above 1024, and the first
// mutable i32 global (Rust's stack pointer) starts at or above 1024. The heap
// (lol_alloc) takes pages from memory.grow, above both.
import { readFileSync } from "node:fs";

const LOW = 1024;

// The two sections are read by hand (60 lines): binaryen's JS API, already a build tool
// here, declares data-segment accessors its 132 build does not have (getNumMemorySegments)
// and throws reading a segment's offset expression (getExpressionInfo), as tried.

export function layout(bytes) {
  const b = bytes;
  if (b.length < 8 || b[0] !== 0 || b[1] !== 0x61 || b[2] !== 0x73 || b[3] !== 0x6d) {
    throw new Error("not a wasm module");
  }
  let p = 8;
  const u = () => {
    let r = 0, s = 0, x;
    do {
      x = b[p++];
      r += (x & 0x7f) * 2 ** s;
      s += 7;
    } while (x & 0x80);
    return r;
  };
  const i32 = () => {
    let r = 0, s = 0, x;
    do {
      x = b[p++];
      r |= (x & 0x7f) << s;
      s += 7;
    } while (x & 0x80);
    return s < 32 && x & 0x40 ? r | (-1 << s) : r;
  };
  /** A constant expression: the value of an `i32.const`, or null for anything else. */
  const constExpr = () => {
    let v = null;
    if (b[p] === 0x41) {
      p++;
      v = i32();
    }
    while (b[p] !== 0x0b) p++; // other expressions: skipped (not an address we know)
    p++;
    return v;
  };
  const globals = [];
  const data = [];
  while (p < b.length) {
    const id = b[p++];
    const len = u();
    const end = p + len;
    if (id === 6) {
      const n = u();
      for (let i = 0; i < n; i++) {
        const type = b[p++];
        const mutable = b[p++] === 1;
        globals.push({ type, mutable, init: constExpr() });
      }
    } else if (id === 11) {
      const n = u();
      for (let i = 0; i < n; i++) {
        const flags = u();
        if (flags === 1) {
          p += u(); // passive: no address
          continue;
        }
        if (flags === 2) u(); // memory index
        const offset = constExpr();
        const size = u();
        p += size;
        data.push({ offset, size });
      }
    }
    p = end;
  }
  return { globals, data };
}

export function check(bytes) {
  const { globals, data } = layout(bytes);
  const problems = [];
  for (const d of data) {
    if (d.offset === null || d.offset < LOW) {
      problems.push(`a data segment starts at ${d.offset ?? "a non-constant address"} (below ${LOW})`);
    }
  }
  const sp = globals.find((g) => g.type === 0x7f && g.mutable && g.init !== null);
  if (!sp) problems.push("no mutable i32 global with a constant start (the stack pointer)");
  else if (sp.init < LOW) problems.push(`the stack pointer starts at ${sp.init} (below ${LOW})`);
  return { problems, stackPointer: sp?.init, lowestData: Math.min(...data.map((d) => d.offset ?? 0)) };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const file = process.argv[2];
  const r = check(readFileSync(file));
  if (r.problems.length) {
    console.error(
      `${file}: wasm-opt --low-memory-unused is not safe for this layout:\n  ${r.problems.join("\n  ")}\n` +
        "Drop --low-memory-unused from scripts/build-pkg.sh (about +270 B brotli) or restore the layout.",
    );
    process.exit(1);
  }
  console.log(`${file}: low 1 KB unused (stack pointer starts at ${r.stackPointer}, data from ${r.lowestData})`);
}
