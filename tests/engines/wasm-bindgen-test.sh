#!/usr/bin/env bash
# tests/browser.rs (wasm-bindgen-test) in one engine: chromium, firefox or webkit.
# Called by `make browser-chromium|browser-firefox|browser-webkit`.
#
# This is what `wasm-pack test --headless --chrome|--firefox` does — cargo with
# wasm-bindgen-test-runner (installed with wasm-bindgen-cli at the pinned version)
# as the wasm32 runner, told which WebDriver to use — without wasm-pack itself, so
# `make test` does not build wasm-pack on a fresh machine (about 3 minutes of its
# 30-minute budget). WebKit: WebKitGTK's WebKitWebDriver stands in as the runner's
# "safaridriver" (it launches MiniBrowser) on a private Xvfb display; wasm-pack
# cannot do that at all (its --safari wants macOS).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
engine=${1:?usage: $0 chromium|firefox|webkit}
command -v wasm-bindgen-test-runner >/dev/null || scripts/setup.sh rust
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
# The runner gives the whole suite 20 s by default; it takes about 14 s here on an idle
# machine, so a loaded one could fail it on time alone.
export WASM_BINDGEN_TEST_TIMEOUT=${WASM_BINDGEN_TEST_TIMEOUT:-120}
test=(cargo test --target wasm32-unknown-unknown --test browser)
case "$engine" in
  chromium)
    [ -x /usr/bin/chromedriver ] || scripts/setup.sh browser
    export CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver}
    exec "${test[@]}" ;;
  firefox)
    command -v geckodriver >/dev/null && [ -x /usr/bin/firefox-esr ] || scripts/setup.sh engines
    GECKODRIVER=$(command -v geckodriver)
    export GECKODRIVER
    exec "${test[@]}" ;;
  webkit)
    [ -x /usr/bin/WebKitWebDriver ] && command -v xvfb-run >/dev/null || scripts/setup.sh engines
    export SAFARIDRIVER=/usr/bin/WebKitWebDriver
    # -a picks a free display number; the runner starts and stops WebKitWebDriver itself.
    exec xvfb-run -a -s "-screen 0 1280x1024x24 -nolisten tcp" "${test[@]}" ;;
  *) echo "usage: $0 chromium|firefox|webkit" >&2; exit 2 ;;
esac
