#!/usr/bin/env bash
# make bench: tokenwarden next to the JavaScript libraries, in headless
# Chromium. `make bench` builds pkg/ (release) first; this script installs
# the bench's pinned npm dev dependencies (bench/package-lock.json), builds
# the release reference server and runs bench/bench.mjs, which prints a
# markdown table and writes bench/RESULTS.md. It reports figures and never
# fails on timing. BENCH_QUICK=1 for a short smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
[ -f pkg/tokenwarden_bg.wasm ] || scripts/build-pkg.sh --release
scripts/setup.sh browser
scripts/setup.sh npm bench
cargo build --release -q -p tokenwarden-server
bench/floor.sh
exec node bench/bench.mjs "$@"
