#!/usr/bin/env bash
# Installs what the build and tests need on a fresh Debian machine of this
# project's kind, and skips whatever is already there. Idempotent.
#   scripts/setup.sh rust      wasm32 target, clippy/rustfmt, nightly's rust-src, wasm-bindgen-cli
#   scripts/setup.sh wasm-pack wasm-pack, for scripts/build-pkg.sh --dev only (make test and
#                              make demo do not need it: see tests/engines/wasm-bindgen-test.sh)
#   (wasm-opt comes from npm's binaryen via scripts/package.json: Debian's is too old)
#   scripts/setup.sh browser   Debian chromium + chromedriver
#   scripts/setup.sh engines   Firefox ESR + geckodriver, WebKitGTK's WebKitWebDriver + MiniBrowser, Xvfb
#   scripts/setup.sh npm DIR   npm ci in DIR when node_modules is missing or stale
#   scripts/setup.sh pg        Debian's PostgreSQL (initdb, pg_ctl, pgbench) for scripts/pg.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '[setup] %s\n' "$*" >&2; }

apt_updated=
apt_install() {
  local missing=()
  for pkg in "$@"; do
    [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=; [ "$(id -u)" -eq 0 ] || sudo=sudo
  if [ -z "$apt_updated" ]; then
    say "apt-get update"
    $sudo apt-get update -qq -o DPkg::Lock::Timeout=600
    apt_updated=1
  fi
  say "apt-get install ${missing[*]}"
  # Waits for another apt run (a parallel setup) instead of failing on its lock.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
}

# The exact wasm-bindgen version the crate is pinned to (Cargo.lock).
bindgen_version() {
  awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock
}

setup_rust() {
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    say "rustup target add wasm32-unknown-unknown"
    rustup target add wasm32-unknown-unknown
  fi
  for c in clippy rustfmt; do
    rustup component list --installed | grep -q "^$c" || rustup component add "$c"
  done
  # The release package is built with the installed `nightly` (never a dated
  # one) and -Zbuild-std, which needs that toolchain's standard library sources.
  if ! rustup toolchain list | grep -q '^nightly'; then
    say "rustup toolchain install nightly (minimal)"
    rustup toolchain install nightly --profile minimal
  fi
  if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
    say "rustup component add rust-src --toolchain nightly"
    rustup component add rust-src --toolchain nightly
  fi
  local want have
  want=$(bindgen_version)
  have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
  if [ "$have" != "$want" ]; then
    say "cargo install wasm-bindgen-cli $want (a few minutes, once)"
    cargo install wasm-bindgen-cli --version "$want"
  fi
}

setup_wasm_pack() {
  if ! command -v wasm-pack >/dev/null; then
    say "cargo install wasm-pack (a few minutes, once)"
    cargo install --locked wasm-pack
  fi
}

setup_browser() {
  apt_install chromium chromium-driver
}

setup_pg() {
  # The package only: scripts/pg.sh runs its own throw-away cluster, never the system one.
  apt_install postgresql
}

# Firefox and WebKit for the multi-engine tests (tests/engines). Debian's firefox-esr is
# driven by geckodriver (crates.io); webkit2gtk-driver brings /usr/bin/WebKitWebDriver,
# which drives WebKitGTK's MiniBrowser; MiniBrowser needs a display, so Xvfb.
setup_engines() {
  apt_install firefox-esr webkit2gtk-driver xvfb
  if ! command -v geckodriver >/dev/null; then
    say "cargo install geckodriver (a few minutes, once)"
    cargo install --locked geckodriver
  fi
}

setup_npm() {
  local dir=$1
  [ -f "$dir/package-lock.json" ] || { say "no package-lock.json in $dir"; exit 1; }
  if [ -d "$dir/node_modules" ] && cmp -s "$dir/package-lock.json" "$dir/node_modules/.tw-lock"; then
    return 0
  fi
  say "npm ci in $dir"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$dir/package-lock.json" "$dir/node_modules/.tw-lock"
}

case "${1:-all}" in
  rust) setup_rust ;;
  browser) setup_browser ;;
  engines) setup_engines ;;
  npm) setup_npm "$2" ;;
  pg) setup_pg ;;
  wasm-pack) setup_wasm_pack ;;
  all) setup_rust; setup_browser; setup_engines; setup_pg ;;
  *) echo "usage: $0 rust|browser|engines|npm DIR|pg|wasm-pack|all" >&2; exit 2 ;;
esac
