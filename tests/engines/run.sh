#!/usr/bin/env bash
# Multi-engine suite: the same tests (tests/engines/*.test.mjs) in Chromium, Firefox and
# WebKit through WebDriver, against the reference server over HTTPS. Called by
# `make engines`. TW_ENGINES="firefox webkit" runs a subset; one file:
#   TW_ENGINE=webkit node --test tests/engines/tabs.test.mjs
# Every engine runs even when another failed; the exit status says whether all passed.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"

[ -f pkg/index.js ] || { echo "tests/engines: pkg/ is missing; run 'make pkg' first" >&2; exit 1; }
scripts/setup.sh npm tests/engines
scripts/setup.sh engines
[ -x /usr/bin/chromedriver ] || scripts/setup.sh browser
TW_SERVER_BIN=$(scripts/test-server.sh)
export TW_SERVER_BIN

# The Vite + React fixture, built from the npm pack of pkg/ (skipped when dist/ was already
# built from this very pkg/, e.g. by `make apps` just before).
app=tests/apps/vite-react
if ! { [ -f "$app/dist/index.html" ] && cmp -s pkg/index.js "$app/node_modules/tokenwarden/index.js" \
       && [ "$app/dist/index.html" -nt "$app/node_modules/tokenwarden/index.js" ]; }; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  scripts/setup.sh npm "$app"
  npm pack ./pkg --pack-destination "$work" --loglevel=error >/dev/null
  rm -rf "$app/node_modules/tokenwarden"
  (cd "$app" && npm install --no-save --no-audit --no-fund --loglevel=error "$work"/tokenwarden-*.tgz >/dev/null)
  (cd "$app" && node_modules/.bin/vite build --logLevel warn)
  echo "tests/engines: built $app/dist"
fi

failed=()
summary=()
for engine in ${TW_ENGINES:-chromium firefox webkit}; do
  start=$(date +%s)
  log=$(mktemp)
  status=0
  TW_ENGINE=$engine node --test --test-concurrency=1 tests/engines/ 2>&1 | tee "$log" || status=$?
  took=$(( $(date +%s) - start ))
  pass=$(sed -nE "s/^(ℹ|#) pass //p" "$log" | tail -1)
  total=$(sed -nE "s/^(ℹ|#) tests //p" "$log" | tail -1)
  summary+=("$engine: ${pass:-0}/${total:-?} passed in ${took} s")
  rm -f "$log"
  [ "$status" -eq 0 ] || failed+=("$engine")
done
printf 'tests/engines: %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "tests/engines: failed in ${failed[*]}" >&2
  exit 1
fi
