#!/usr/bin/env bash
# Several instances: two reference servers on one real PostgreSQL behind a round-robin
# proxy (tests/multi/cluster.mjs), plain HTTP and headless Chromium, in the built-in mode and
# in upstream mode in front of a real OpenID Provider (tests/oidc/provider.mjs). Called by `make multi`.
# scripts/pg.sh starts a throw-away PostgreSQL 15 on 127.0.0.1 for the run and always
# stops it; the harness kills its servers and browser after each file, even on failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"

scripts/setup.sh pg
scripts/setup.sh npm tests/e2e
scripts/setup.sh npm tests/oidc   # upstream.test.mjs: the real OpenID Provider
[ -x /usr/bin/chromium ] || scripts/setup.sh browser
[ -f pkg/index.js ] || { echo "tests/multi: pkg/ is missing; run 'make pkg' first" >&2; exit 1; }
TW_SERVER_BIN=$(scripts/test-server.sh)
export TW_SERVER_BIN

start=$(date +%s)
scripts/pg.sh run node --test --test-concurrency=1 tests/multi/
echo "tests/multi: suite took $(( $(date +%s) - start )) s"
