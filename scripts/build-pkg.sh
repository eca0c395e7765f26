#!/usr/bin/env bash
# Builds pkg/ and wraps it with the hand-written entry js/index.js and its
# types, and completes package.json.
#
# --release (the published package): the installed `nightly` toolchain (never
# a dated one; scripts/setup.sh adds its rust-src) rebuilds core and alloc
# for size (-Zbuild-std), aborts on panic without any formatting
# (immediate-abort, no location details, no Debug formatting), then
# wasm-bindgen and a current wasm-opt -Oz (scripts/release-flags.sh has the flags
# and why). --dev: wasm-pack's debug build.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:---release}
# shellcheck source=scripts/release-flags.sh
. scripts/release-flags.sh
if [ "$profile" = "--release" ]; then
  RUSTFLAGS="$RELEASE_RUSTFLAGS" \
    cargo +nightly build --release --target wasm32-unknown-unknown --features tiny \
    -Zbuild-std=core,alloc --target-dir target/nightly -p tokenwarden >pkg-build.log 2>&1 \
    || { cat pkg-build.log; exit 1; }
  wasm-bindgen --target web --out-dir pkg --out-name tokenwarden \
    target/nightly/wasm32-unknown-unknown/release/tokenwarden.wasm >>pkg-build.log 2>&1 \
    || { cat pkg-build.log; exit 1; }
  scripts/setup.sh npm scripts
  # check-low-memory: the layout --low-memory-unused relies on (scripts/release-flags.sh).
  node scripts/check-low-memory.mjs pkg/tokenwarden_bg.wasm >>pkg-build.log 2>&1 \
    || { cat pkg-build.log; exit 1; }
  scripts/node_modules/.bin/wasm-opt "${WASM_OPT_FLAGS[@]}" pkg/tokenwarden_bg.wasm -o pkg/tokenwarden_bg.wasm
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
