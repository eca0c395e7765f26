#!/usr/bin/env bash
# Builds the reference server that the product suites (tests/e2e, multi, oidc, apps, engines)
# run against, and prints its path on stdout (cargo's output goes to stderr).
#
# The default is cargo's dev profile: the same code with debug assertions and overflow checks
# on, built in 65 s on a fresh 2-core machine after `make unit`, against 6.6 min for the release
# profile (fat LTO, codegen-units 1, opt-level 3 dependencies; measured 2026-12-02). That is
# what keeps `make test` within its 30 minutes. The suites pass on either (e2e: 41/41 in 222 s
# on the dev build, 223 s on the release one). `make demo`, `make bench` and `make load` use
# the release build; TW_SERVER_PROFILE=release runs the suites on it too.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

profile=${TW_SERVER_PROFILE:-dev}
case $profile in
  dev) dir=debug ;;
  release) dir=release ;;
  *) echo "scripts/test-server.sh: TW_SERVER_PROFILE is dev or release, not '$profile'" >&2; exit 2 ;;
esac
cargo build --profile "$profile" -p tokenwarden-server >&2
echo "$PWD/target/$dir/tokenwarden-server"
