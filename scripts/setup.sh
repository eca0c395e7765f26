#!/usr/bin/env bash
# Installs what the build and tests need on a fresh Debian machine of this
# project's kind, and skips whatever is already there. Idempotent.
#   scripts/setup.sh rust      wasm32 target, clippy/rustfmt, wasm-pack, wasm-bindgen-cli
#   (wasm-opt comes from npm's binaryen via scripts/package.json: Debian's is too old)
#   scripts/setup.sh browser   Debian chromium + chromedriver
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
    $sudo apt-get update -qq
    apt_updated=1
  fi
  say "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
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
  if ! command -v wasm-pack >/dev/null; then
    say "cargo install wasm-pack (a few minutes, once)"
    cargo install wasm-pack
  fi
  local want have
  want=$(bindgen_version)
  have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
  if [ "$have" != "$want" ]; then
    say "cargo install wasm-bindgen-cli $want (a few minutes, once)"
    cargo install wasm-bindgen-cli --version "$want"
  fi
}

setup_browser() {
  apt_install chromium chromium-driver
}

setup_pg() {
  # The package only: scripts/pg.sh runs its own throw-away cluster, never the system one.
  apt_install postgresql
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
  npm) setup_npm "$2" ;;
  pg) setup_pg ;;
  all) setup_rust; setup_browser; setup_pg ;;
  *) echo "usage: $0 rust|browser|npm DIR|pg|all" >&2; exit 2 ;;
esac
