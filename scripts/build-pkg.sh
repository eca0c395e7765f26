#!/usr/bin/env bash
# Builds pkg/: wasm-pack (release, --target web), then wraps it with the
# hand-written entry js/index.js and its types, and completes package.json.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:---release}
features=; [ "$profile" = "--release" ] && features="--features tiny"
# shellcheck disable=SC2086
wasm-pack build "$profile" --target web --out-dir pkg --out-name tokenwarden --no-pack -- $features >/dev/null 2>pkg-build.log || { cat pkg-build.log; exit 1; }
rm -f pkg-build.log pkg/.gitignore
if [ "$profile" = "--release" ]; then
  scripts/setup.sh npm scripts
  scripts/node_modules/.bin/wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int \
    --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue \
    --strip-debug --strip-producers pkg/tokenwarden_bg.wasm -o pkg/tokenwarden_bg.wasm
fi
cp js/index.js js/index.d.ts js/react.js js/react.d.ts pkg/
cp README.md pkg/ 2>/dev/null || true
node scripts/package-json.mjs
