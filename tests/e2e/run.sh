#!/usr/bin/env bash
# End-to-end suite: the built package (pkg/, from `make pkg`) against the reference
# server in test mode, in Debian's headless Chromium driven by playwright-core.
# Called by `make e2e`. Files: tests/e2e/*.test.mjs (node's test runner, one at a time:
# the server's counters are per process and the multi-tab timings want a quiet machine).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"

scripts/setup.sh npm tests/e2e
[ -x /usr/bin/chromium ] || scripts/setup.sh browser
[ -f pkg/index.js ] || { echo "tests/e2e: pkg/ is missing; run 'make pkg' first" >&2; exit 1; }
TW_SERVER_BIN=$(scripts/test-server.sh)
export TW_SERVER_BIN

# The long chaos run (about 5 minutes) is its own target, `make chaos` (run.sh chaos), which
# .ci/run runs after `make test`; `make e2e` runs every other file.
if [ "${1:-}" = chaos ]; then
  files=(tests/e2e/chaos.test.mjs)
else
  files=()
  for f in tests/e2e/*.test.mjs; do [ "$f" = tests/e2e/chaos.test.mjs ] || files+=("$f"); done
fi
start=$(date +%s)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
node --test --test-concurrency=1 "${files[@]}" 2>&1 | tee "$log" || status=$?
# On a failure, the failed tests and their errors again on the last lines (CI shows the tail).
[ $status -eq 0 ] || tests/support/failures.sh "$log"
echo "tests/e2e: ${1:-suite} took $(( $(date +%s) - start )) s$([ $status -eq 0 ] || echo '; FAILED')"
exit $status
