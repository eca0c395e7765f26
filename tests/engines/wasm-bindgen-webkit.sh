#!/usr/bin/env bash
# tests/browser.rs (wasm-bindgen-test) in WebKit: wasm-bindgen-test-runner drives
# WebKitGTK's WebKitWebDriver as its "safaridriver" (it launches MiniBrowser by default),
# on a private Xvfb display. wasm-pack cannot do this (its --safari wants macOS), so this
# calls cargo with the runner the way `wasm-pack test` does. Called by `make browser-webkit`.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
command -v wasm-bindgen-test-runner >/dev/null || scripts/setup.sh rust
[ -x /usr/bin/WebKitWebDriver ] && command -v xvfb-run >/dev/null || scripts/setup.sh engines

export SAFARIDRIVER=/usr/bin/WebKitWebDriver
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
# -a picks a free display number; the runner starts and stops WebKitWebDriver itself.
exec xvfb-run -a -s "-screen 0 1280x1024x24 -nolisten tcp" \
  cargo test --target wasm32-unknown-unknown --test browser
