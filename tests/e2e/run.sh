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
cargo build --release -p tokenwarden-server

start=$(date +%s)
node --test --test-concurrency=1 tests/e2e/
echo "tests/e2e: suite took $(( $(date +%s) - start )) s"
