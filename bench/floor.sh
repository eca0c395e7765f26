#!/usr/bin/env bash
# The size floor (bench/floor/Cargo.toml says what it is): builds bench/floor with
# the release wasm's flags (scripts/release-flags.sh: the installed nightly,
# -Zbuild-std, the same wasm-opt line) and writes target/floor/floor.json (raw and
# brotli bytes, counted as scripts/size-budget.mjs counts the payload), which
# bench/bench.mjs reports beside the payload. `make bench` runs it first.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# shellcheck source=scripts/release-flags.sh
. scripts/release-flags.sh
scripts/setup.sh npm scripts
RUSTFLAGS="$RELEASE_RUSTFLAGS" cargo +nightly build -q --release --target wasm32-unknown-unknown \
  -Zbuild-std=core,alloc --manifest-path bench/floor/Cargo.toml --target-dir target/floor
in=target/floor/wasm32-unknown-unknown/release/tokenwarden_floor.wasm
node scripts/check-low-memory.mjs "$in" >/dev/null
scripts/node_modules/.bin/wasm-opt "${WASM_OPT_FLAGS[@]}" "$in" -o target/floor/floor.wasm
node --input-type=module -e '
  import { readFileSync, writeFileSync } from "node:fs";
  import { compress } from "./scripts/size-budget.mjs";
  const wasm = readFileSync("target/floor/floor.wasm");
  const exports = WebAssembly.Module.exports(new WebAssembly.Module(wasm)).length;
  const r = { raw: wasm.length, brotli: compress(wasm).length, exports };
  writeFileSync("target/floor/floor.json", JSON.stringify(r) + "\n");
  console.log(`size floor (bench/floor): ${r.raw} B raw, ${r.brotli} B brotli, ${exports} exports`);'
