#!/usr/bin/env node
// Size budget of the npm payload a browser downloads: pkg/index.js, the entry
// with the wasm-bindgen glue and the .wasm itself bundled in by
// scripts/build-pkg.sh, compressed as a server would send it. The table also
// shows pkg/tokenwarden_bg.wasm, the same wasm as a file for tools (twiggy;
// not in the npm package, not counted). Fails (exit 1) when the brotli
// payload exceeds bench/size-budget.json "maxBrotliBytes".
// Size is deterministic, so this is a real check, not a timed test.
//
// Two figures, and the larger is checked: the entry as shipped, and the entry as an app
// bundled by esbuild with its defaults ships it (ASCII output: the .wasm literal's
// characters above U+007F become escapes; Vite and webpack/terser print UTF-8, like the
// shipped file). The entry must carry the .wasm: a --dev package (wasm.js fetching the file)
// is refused rather than counted without it.
//
//   node scripts/size-budget.mjs            check and print the table
//   node scripts/size-budget.mjs --json     the measurement as JSON (no check)
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { brotliCompressSync, gzipSync, constants } from "node:zlib";
import { createRequire } from "node:module";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
// esbuild (scripts/node_modules, already there for the package build).
const esbuild = createRequire(import.meta.url)("esbuild");
export const PAYLOAD = [["entry", "index.js"]];
/** Shown, not counted: the wasm inside the entry, as the file tools read. */
export const SHOWN = [["wasm (inside the entry)", "tokenwarden_bg.wasm"]];
/** Shown, not counted: the React bindings, which React apps load besides the entry. */
export const REACT = ["react", "react.js"];
export const BUDGET_FILE = "bench/size-budget.json";

/** `buf` brotli-compressed as the budget counts it (quality 11). */
export function compress(buf) {
  return brotliCompressSync(buf, {
    params: {
      [constants.BROTLI_PARAM_QUALITY]: 11,
      [constants.BROTLI_PARAM_SIZE_HINT]: buf.length,
    },
  });
}

export function brotli(buf) {
  return compress(buf).length;
}

export function gzip(buf) {
  return gzipSync(buf, { level: 9 }).length;
}

/** Raw, gzip and brotli bytes of each payload file and of their sum. */
export function measure(pkgDir = join(root, "pkg")) {
  const row = ([name, file]) => {
    const rel = `pkg/${file}`;
    let buf;
    try {
      buf = readFileSync(join(pkgDir, file));
    } catch {
      throw new Error(`${rel} is missing: build the package first (make pkg)`);
    }
    return { name, path: rel, raw: buf.length, gzip: gzip(buf), brotli: brotli(buf) };
  };
  const files = PAYLOAD.map(row);
  const total = { name: "total", path: "npm payload", raw: 0, gzip: 0, brotli: 0 };
  for (const f of files) for (const k of ["raw", "gzip", "brotli"]) total[k] += f[k];
  const shown = SHOWN.map(row).map((f) => ({ ...f, path: `${f.path} (inside the entry; not counted)` }));
  const wasm = shown[0];
  const react = row(REACT);
  shown.push({ ...react, path: `${react.path} (React apps add it; not counted)` });
  if (total.raw < wasm.raw) {
    throw new Error(`pkg/index.js (${total.raw} B) cannot hold pkg/tokenwarden_bg.wasm (${wasm.raw} B): ` +
      "a --dev package fetches the .wasm apart; build the release package (make pkg)");
  }
  return { files, total, shown, bundled: bundledRow(pkgDir) };
}

/** The entry bundled and minified by esbuild with its defaults (ASCII charset), as
 *  bench/bench.mjs bundles the anchors and as a plain esbuild app ships it. */
export function bundledRow(pkgDir) {
  const r = esbuild.buildSync({
    entryPoints: [join(pkgDir, "index.js")],
    bundle: true,
    splitting: true,
    minify: true,
    format: "esm",
    platform: "browser",
    target: "es2020",
    outdir: join(pkgDir, "esbuild-defaults"),
    write: false,
    logLevel: "error",
  });
  const row = { name: "bundled", path: "the entry through esbuild's defaults (ascii)", raw: 0, gzip: 0, brotli: 0 };
  for (const f of r.outputFiles) {
    const buf = Buffer.from(f.contents);
    row.raw += buf.length;
    row.gzip += gzip(buf);
    row.brotli += brotli(buf);
  }
  return row;
}

const kb = (n) => `${(n / 1024).toFixed(1)} KB`;

export function table({ files, total, shown = [], bundled }) {
  const rows = [...files, total, ...(bundled ? [bundled] : []), ...shown].map((f) => [
    f.path,
    String(f.raw),
    String(f.gzip),
    String(f.brotli),
    kb(f.brotli),
  ]);
  const head = ["file", "raw B", "gzip B", "brotli B", "brotli"];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r) => r.map((c, i) => (i ? c.padStart(w[i]) : c.padEnd(w[i]))).join("  ");
  return [line(head), w.map((n) => "-".repeat(n)).join("  "), ...rows.map(line)].join("\n");
}

function main() {
  const m = measure();
  if (process.argv.includes("--json")) {
    console.log(JSON.stringify(m, null, 2));
    return;
  }
  let budget;
  try {
    budget = JSON.parse(readFileSync(join(root, BUDGET_FILE), "utf8"));
  } catch (e) {
    console.error(`size budget: cannot read ${BUDGET_FILE}: ${e.message}`);
    process.exit(2);
  }
  const max = budget.maxBrotliBytes;
  if (!Number.isInteger(max) || max <= 0) {
    console.error(`size budget: ${BUDGET_FILE} needs a positive integer "maxBrotliBytes"`);
    process.exit(2);
  }
  console.log(table(m));
  // The larger of the two ways it reaches a page.
  const used = Math.max(m.total.brotli, m.bundled.brotli);
  const which = used === m.total.brotli ? "the npm payload" : "the payload through esbuild's defaults";
  const pct = ((used / max) * 100).toFixed(1);
  if (used > max) {
    console.error(
      `\nsize budget EXCEEDED: ${which} is ${used} B brotli (${kb(used)}), ` +
        `over the budget of ${max} B (${kb(max)}) in ${BUDGET_FILE} by ${used - max} B. ` +
        `Shrink the wasm/glue (twiggy top pkg/tokenwarden_bg.wasm), or raise the budget ` +
        `deliberately in ${BUDGET_FILE} with a note saying why.`,
    );
    process.exit(1);
  }
  console.log(`\nsize budget ok: ${which}, ${used} B of ${max} B brotli (${pct} %, ${max - used} B left)`);
  if (used < max * 0.9) {
    console.log(
      `note: the payload is more than 10 % under budget; tighten ${BUDGET_FILE} ` +
        `(e.g. to ${Math.ceil(used * 1.05)} B = measured + 5 %).`,
    );
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) main();
