#!/usr/bin/env bash
# Upstream-mode suite: the reference server as a token-mediating backend in front of a real
# OpenID Provider (oidc-provider from npm, started and stopped by the tests themselves, on
# 127.0.0.1), driven through the provider's own login and consent pages in Debian's headless
# Chromium. Called by `make oidc` (and so by `make test`). Needs pkg/ (`make pkg`).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"

scripts/setup.sh npm tests/e2e
scripts/setup.sh npm tests/oidc
[ -x /usr/bin/chromium ] || scripts/setup.sh browser
[ -f pkg/index.js ] || { echo "tests/oidc: pkg/ is missing; run 'make pkg' first" >&2; exit 1; }
TW_SERVER_BIN=$(scripts/test-server.sh)
export TW_SERVER_BIN

start=$(date +%s)
node --test --test-concurrency=1 tests/oidc/
echo "tests/oidc: suite took $(( $(date +%s) - start )) s"
