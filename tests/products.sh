#!/usr/bin/env bash
# The product suites of `make test`, in two lanes side by side (`make products`):
#   lane 1: tests/e2e (several tabs against the reference server), then tests/oidc (a real
#           OpenID Provider)
#   lane 2: tests/apps (Vite + React and Next.js apps), then tests/engines (Chromium, Firefox
#           and WebKit; it reuses the Vite build of tests/apps), then tests/multi (two
#           instances on a real PostgreSQL)
# Each suite waits on browsers and timers most of the time: measured alone on 2 cores, the
# machine is 23-37 % busy during multi, oidc and engines and 26 % during e2e, so two lanes
# take about the time of the longer one (about 7.5 min) instead of the sum (about 14). Every
# suite keeps its own servers, browsers, ports (all chosen free) and temporary directories.
# Each line is prefixed with its lane; both lanes always run to the end, and the exit status
# says whether every suite passed. The server binary is built once, before the lanes.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

scripts/test-server.sh >/dev/null || exit 1

lane() { # lane NAME SUITE...
  local name=$1 suite status=0 failed=()
  shift
  for suite in "$@"; do
    local s; s=$(date +%s)
    if "tests/$suite/run.sh"; then
      echo "tests/products: $suite passed in $(( $(date +%s) - s )) s"
    else
      echo "tests/products: $suite FAILED after $(( $(date +%s) - s )) s"
      failed+=("$suite"); status=1
    fi
  done
  [ $status -eq 0 ] || echo "tests/products: lane $name failed: ${failed[*]}"
  return $status
}

# Each lane's output is also kept, so that a failure can be summed up on the last lines:
# CI shows only the tail of what it ran, and the lane that failed may have ended long before
# the other one.
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
start=$(date +%s)
( lane 1 e2e oidc 2>&1 | sed -u 's/^/[1] /' | tee "$logs/1"; exit "${PIPESTATUS[0]}" ) &
one=$!
( lane 2 apps engines multi 2>&1 | sed -u 's/^/[2] /' | tee "$logs/2"; exit "${PIPESTATUS[0]}" ) &
two=$!
status=0
wait $one || status=1
wait $two || status=1
if [ $status -ne 0 ]; then
  tests/support/failures.sh "$logs/1" "$logs/2"
fi
echo "tests/products: both lanes took $(( $(date +%s) - start )) s; $([ $status -eq 0 ] && echo 'every suite passed' || echo 'FAILED (see the lines above)')"
exit $status
