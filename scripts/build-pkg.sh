#!/usr/bin/env bash
# Builds pkg/ and wraps it with the hand-written entry js/index.js and its
# types, and completes package.json.
#
# --release (the published package): the installed `nightly` toolchain (never
# a dated one; scripts/setup.sh adds its rust-src) rebuilds core and alloc
# for size (-Zbuild-std), aborts on panic without any formatting
# (immediate-abort, no location details, no Debug formatting), then
# wasm-bindgen and a current wasm-opt -Oz. --dev: wasm-pack's debug build.
#
# Without the reference-types target feature, wasm-bindgen keeps JS values in
# its JS-side heap instead of an externref table: no externref shim around
# each export and import (measured: payload 47,559 -> 46,747 B brotli; the
# wasm -1,015 B, the glue +203 B). Every engine the package supports runs
# both; the suites that load pkg/ (e2e, engines, apps) run this build.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:---release}
if [ "$profile" = "--release" ]; then
  # --inline-threshold=12: LLVM's inliner a little more willing than opt-level
  # z's default (measured on the release wasm, brotli: 5 (default) 39,789 B,
  # 8 39,572, 12 and 15 39,423, 18 39,685, 25 39,637, 40 40,319). Re-measure
  # when the code changes much. -Zmir-opt-level=3 would take 1.2 KB more with
  # it, but that level runs MIR passes rustc does not enable by default: not used.
  RUSTFLAGS="-Zunstable-options -Cpanic=immediate-abort -Zlocation-detail=none -Zfmt-debug=none -Ctarget-feature=-reference-types -Cllvm-args=--inline-threshold=12" \
    cargo +nightly build --release --target wasm32-unknown-unknown --features tiny \
    -Zbuild-std=core,alloc --target-dir target/nightly -p tokenwarden >pkg-build.log 2>&1 \
    || { cat pkg-build.log; exit 1; }
  wasm-bindgen --target web --out-dir pkg --out-name tokenwarden \
    target/nightly/wasm32-unknown-unknown/release/tokenwarden.wasm >>pkg-build.log 2>&1 \
    || { cat pkg-build.log; exit 1; }
  scripts/setup.sh npm scripts
  # --low-memory-unused: the optimizer may assume nothing lives below address
  # 1024. Rust's wasm32 layout puts the 1 MB stack first, growing down to 0,
  # and the data after it (__stack_pointer starts at 1048576), so those bytes
  # are only reached by a stack 1 MB deep. --flatten --rereloop, then -Oz twice,
  # rebuilds the control flow before shrinking it. Measured (brotli, wasm
  # before short names): -Oz 38,822 B; -Oz --converge 38,798; -Oz
  # --low-memory-unused --converge 38,538; this line 38,264.
  # scripts/check-low-memory.mjs fails the build if that layout ever changes.
  node scripts/check-low-memory.mjs pkg/tokenwarden_bg.wasm >>pkg-build.log 2>&1 \
    || { cat pkg-build.log; exit 1; }
  scripts/node_modules/.bin/wasm-opt --low-memory-unused --flatten --rereloop -Oz -Oz --enable-bulk-memory --enable-nontrapping-float-to-int \
    --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue \
    --strip-debug --strip-producers pkg/tokenwarden_bg.wasm -o pkg/tokenwarden_bg.wasm
else
  command -v wasm-pack >/dev/null || scripts/setup.sh wasm-pack
  wasm-pack build "$profile" --target web --out-dir pkg --out-name tokenwarden --no-pack >/dev/null 2>pkg-build.log \
    || { cat pkg-build.log; exit 1; }
fi
rm -f pkg-build.log pkg/.gitignore
cp js/index.d.ts js/react.js js/react.d.ts pkg/
if [ "$profile" = "--release" ]; then
  # What a browser downloads is minified (size is a feature): the glue and
  # the entry lose comments, whitespace and local names; exports, the
  # `new URL("…wasm", import.meta.url)` that bundlers follow, and behaviour
  # stay. The readable sources are js/index.js and wasm-bindgen's output.
  scripts/node_modules/.bin/esbuild pkg/tokenwarden.js --minify --format=esm --log-level=warning \
    --outfile=pkg/tokenwarden.min.js
  mv pkg/tokenwarden.min.js pkg/tokenwarden.js
  node scripts/short-names.mjs pkg/tokenwarden_bg.wasm pkg/tokenwarden.js >/dev/null
  # The glue's default .wasm URL, used only when no module is given (the entry always gives
  # one): gone, so that bundlers that follow `new URL(…, import.meta.url)` look for no file.
  node -e '
    const fs = require("fs"), f = "pkg/tokenwarden.js", s = fs.readFileSync(f, "utf8");
    const url = "new URL(\"tokenwarden_bg.wasm\",import.meta.url)";
    if (s.split(url).length !== 2) { console.error("build-pkg: not exactly one default .wasm URL in the glue"); process.exit(1); }
    fs.writeFileSync(f, s.replace(url, "void 0"));'
  # The .wasm inside the entry (scripts/embed-wasm.mjs: one request, not two in a row).
  node scripts/embed-wasm.mjs pkg/tokenwarden_bg.wasm pkg/wasm.js
  # The entry, the glue and the .wasm are one file (cold start: one module to wait for);
  # the glue's own file is then not shipped. UTF-8 output: the .wasm's characters above
  # U+007F stay one character each instead of a \xNN escape.
  (cd pkg && ../scripts/node_modules/.bin/esbuild --bundle --minify --format=esm --charset=utf8 \
    --log-level=warning --sourcefile=index.js <../js/index.js >index.js)
  # js/shell.js (a wasm-bindgen snippet the glue imports) is bundled in too.
  rm -r pkg/tokenwarden.js pkg/snippets pkg/wasm.js
  # Nothing in the entry points at a file any more.
  if grep -q "import\.meta" pkg/index.js; then
    echo "build-pkg: pkg/index.js still refers to a file beside it (import.meta)" >&2
    exit 1
  fi
else
  cp js/index.js js/wasm.js pkg/
fi
cp README.md pkg/ 2>/dev/null || true
node scripts/package-json.mjs
