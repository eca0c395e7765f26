// Shortens the names the wasm and its wasm-bindgen glue share (size is a
// feature): every import of the glue's module ("__wbg_set_bcb0ec2400cfa22e",
// closure adapters of 200+ characters) and every export gets a
// short name (but two, below), in pkg/tokenwarden_bg.wasm and pkg/tokenwarden.js alike.
// Hex hashes barely compress, so this is ~1.5 KB of brotli per file.
// wasm-opt's --minify-imports-and-exports renames only `env` imports, hence
// this. Run by scripts/build-pkg.sh --release after wasm-opt and esbuild.
//   node scripts/short-names.mjs pkg/tokenwarden_bg.wasm pkg/tokenwarden.js
import { readFileSync, writeFileSync } from "node:fs";

const [wasmPath, gluePath] = process.argv.slice(2);
const b = readFileSync(wasmPath);
let glue = readFileSync(gluePath, "utf8");
// `memory` and the externref table stay named: make bench reads both.
const KEEP = new Set(["memory", "__wbindgen_externrefs"]);

let p = 0;
const uleb = () => {
  let r = 0, s = 0, x;
  do { x = b[p++]; r += (x & 127) * 2 ** s; s += 7; } while (x & 128);
  return r;
};
const enc = (n) => {
  const out = [];
  do { let x = n & 127; n = Math.floor(n / 128); if (n) x |= 128; out.push(x); } while (n);
  return Buffer.from(out);
};
const str = () => { const l = uleb(); const s = b.subarray(p, p + l).toString("utf8"); p += l; return s; };
const encStr = (s) => { const x = Buffer.from(s, "utf8"); return Buffer.concat([enc(x.length), x]); };

// Short identifiers: a, b, …, z, A, …, Z, aa, ab, … (valid JS property names).
const ALPHA = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
let counter = 0;
const used = new Set();
const next = () => {
  for (;;) {
    let n = counter++, s = "";
    do { s = ALPHA[n % 52] + s; n = Math.floor(n / 52) - 1; } while (n >= 0);
    // Never a name the glue already uses as a property (`c.a` must mean ours).
    if (!used.has(s) && !new RegExp(`[.{,]${s}\\b`).test(glue)) { used.add(s); return s; }
  }
};

const rename = new Map();
const imported = new Set();
// The glue's module ("./tokenwarden_bg.js", named in each of ~100 imports) is "w".
const modules = new Set();
const out = [b.subarray(0, 8)];
p = 8;
while (p < b.length) {
  const start = p;
  const id = b[p++];
  const len = uleb();
  const body = p;
  const end = body + len;
  if (id === 2 || id === 7) {
    const n = uleb();
    const parts = [enc(n)];
    for (let i = 0; i < n; i++) {
      if (id === 2) {
        const mod = str();
        const name = str();
        const descStart = p;
        const kind = b[p++];
        if (kind === 0) uleb();
        else if (kind === 1) { p++; const f = uleb(); uleb(); if (f & 1) uleb(); }
        else if (kind === 2) { const f = uleb(); uleb(); if (f & 1) uleb(); }
        else if (kind === 3) p += 2;
        else if (kind === 4) { p++; uleb(); }
        else throw new Error(`import kind ${kind}`);
        let nn = name;
        if (mod.startsWith("./") && !KEEP.has(name)) {
          imported.add(name);
          if (!rename.has(name)) rename.set(name, next());
          nn = rename.get(name);
        }
        if (mod.startsWith("./")) modules.add(mod);
        parts.push(encStr(mod.startsWith("./") ? "w" : mod), encStr(nn), b.subarray(descStart, p));
      } else {
        const name = str();
        const descStart = p;
        p++; uleb();
        let nn = name;
        if (!KEEP.has(name)) {
          if (!rename.has(name)) rename.set(name, next());
          nn = rename.get(name);
        }
        parts.push(encStr(nn), b.subarray(descStart, p));
      }
    }
    if (p !== end) throw new Error(`section ${id}: parsed ${p - body} of ${len} bytes`);
    const content = Buffer.concat(parts);
    out.push(Buffer.from([id]), enc(content.length), content);
  } else {
    out.push(b.subarray(start, end));
  }
  p = end;
}

// The glue names them as properties only: exports as `c.name`, imports as
// `name:` keys of the imports object. Only those spots are rewritten: the
// glue's own exports (`export{… as send}`) share some names and stay.
const esc = (x) => x.replace(/\$/g, "\\$");
for (const [old, short] of rename) {
  const before = glue;
  glue = glue.replace(new RegExp(`\\.${esc(old)}(?![A-Za-z0-9_$])`, "g"), `.${short}`);
  glue = glue.replace(new RegExp(`([{,])${esc(old)}:`, "g"), `$1${short}:`);
  // Every import is defined by the glue; an export it never calls (wasm-bindgen
  // leaves a few) is only renamed.
  if (glue === before && imported.has(old)) throw new Error(`${old} is not in the glue`);
}
for (const mod of modules) {
  const key = JSON.stringify(mod) + ":";
  if (!glue.includes(key)) throw new Error(`${key} is not in the glue`);
  glue = glue.split(key).join("w:");
}
writeFileSync(wasmPath, Buffer.concat(out));
writeFileSync(gluePath, glue);
console.log(`short-names: ${rename.size} names shortened`);
