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
#   scripts/setup.sh all       all of the above but wasm-pack, plus every test directory's npm ci
#                              (what `make setup` runs): the two cargo installs, the apt packages
#                              and the npm trees are fetched side by side, so a fresh machine
#                              waits for the slowest (the compiles) rather than for the sum
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

setup_toolchains() {
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
}

setup_bindgen() {
  local want have
  want=$(bindgen_version)
  have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
  if [ "$have" != "$want" ]; then
    say "cargo install wasm-bindgen-cli $want (a few minutes, once)"
    # --debug: a third of the release build's time (84 s against 162 s here); the one cost is
    # wasm-bindgen-test-runner reading the 18 MB test wasm in 7.5 s instead of 1.3 s, once per
    # engine. pkg's output is byte-identical.
    cargo install --debug wasm-bindgen-cli --version "$want" ${TW_INSTALL_ROOT_FLAG:-}
  fi
}

setup_rust() {
  setup_toolchains
  setup_bindgen
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
setup_geckodriver() {
  if ! command -v geckodriver >/dev/null; then
    say "cargo install geckodriver (a few minutes, once)"
    # --debug: 72 s against 157 s for the release build; it only relays WebDriver commands.
    cargo install --locked --debug geckodriver ${TW_INSTALL_ROOT_FLAG:-}
  fi
}

setup_engines() {
  apt_install firefox-esr webkit2gtk-driver xvfb
  setup_geckodriver
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

# Every directory whose npm tree a test layer installs (the layers call setup_npm again: a no-op).
NPM_DIRS=(scripts tests/types tests/e2e tests/oidc tests/engines tests/apps tests/apps/vite-react tests/apps/next-app)

# `make setup` on a fresh machine: the cargo installs are CPU-bound (72-84 s each as debug
# builds on 2 cores), apt and npm are network-bound (about 1.5 min together), so they run at
# once (3.8 min in all, measured, against 6.6 min one after the other). Each
# cargo install gets its own root (two installs into one root take turns on its lock) and its
# binaries are copied to ~/.cargo/bin. A failure in any part fails the whole, with its log.
setup_all() {
  setup_toolchains
  local logs pids=() names=() status=0
  logs=$(mktemp -d)
  (apt_install chromium chromium-driver firefox-esr webkit2gtk-driver xvfb postgresql) >"$logs/apt" 2>&1 &
  pids+=($!); names+=(apt)
  (for d in "${NPM_DIRS[@]}"; do setup_npm "$d"; done) >"$logs/npm" 2>&1 &
  pids+=($!); names+=(npm)
  for tool in bindgen geckodriver; do
    (
      root="$logs/root-$tool"
      TW_INSTALL_ROOT_FLAG="--root $root" "setup_$tool"
      if [ -d "$root/bin" ]; then mkdir -p "$HOME/.cargo/bin" && cp "$root/bin/"* "$HOME/.cargo/bin/"; fi
    ) >"$logs/$tool" 2>&1 &
    pids+=($!); names+=("$tool")
  done
  for i in "${!pids[@]}"; do
    if wait "${pids[$i]}"; then
      grep -h '^\[setup\]' "$logs/${names[$i]}" >&2 || true
    else
      say "${names[$i]} failed:"; tail -n 40 "$logs/${names[$i]}" >&2; status=1
    fi
  done
  rm -rf "$logs"
  return $status
}

case "${1:-all}" in
  rust) setup_rust ;;
  browser) setup_browser ;;
  engines) setup_engines ;;
  npm) setup_npm "$2" ;;
  pg) setup_pg ;;
  wasm-pack) setup_wasm_pack ;;
  all) setup_all ;;
  *) echo "usage: $0 rust|browser|engines|npm DIR|pg|wasm-pack|all" >&2; exit 2 ;;
esac
