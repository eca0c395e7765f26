#!/usr/bin/env bash
# Fixture apps (Vite + React, Next.js App Router) built against the npm pack
# of pkg/, served on 127.0.0.1 next to the reference server, and driven in
# headless Chromium. Run via `make apps` (which builds pkg/ first).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
export NEXT_TELEMETRY_DISABLED=1

[ -f pkg/package.json ] || { echo "apps: pkg/ is missing; run 'make pkg' first" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
# A free port for an app server, picked below the kernel's ephemeral range: the app ports are
# chosen before the ~15 s Next build, and a port from the ephemeral range could meanwhile be
# handed to any `--port 0` server (or outgoing connection) of the other lane. That happened
# once: Next got EADDRINUSE and the tests met a reference server on its port.
# tests/support/ports.mjs picks in [low - 12000, low) until one binds; `taken` keeps the picks distinct.
taken=" "
free_port() {
  local port
  port=$(TAKEN="$taken" node --input-type=module -e '
    import { freePort } from "./tests/support/ports.mjs";
    console.log(await freePort({ avoid: process.env.TAKEN.split(" ").filter(Boolean).map(Number) }));
  ') || return 1
  taken+="$port "
  echo "$port"
}
# Starts a server in its own process group (so cleanup ends its children too). The log exists
# before it returns: the background job opens it only when it gets to run, and on a busy
# machine the poll below once read it first (sed failed, and set -e ended the suite).
spawn() { local log=$1; shift; : >"$log"; setsid "$@" >"$log" 2>&1 & pids+=($!); }
wait_http() {
  local url=$1 log=$2
  for _ in $(seq 1 150); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.2
  done
  echo "apps: $url did not come up; its log:" >&2; cat "$log" >&2; exit 1
}

apps=(vite-react next-app)

# 1. dependencies (npm ci only when node_modules is missing or stale)
t=$(now)
scripts/setup.sh npm tests/apps
for app in "${apps[@]}"; do scripts/setup.sh npm "tests/apps/$app"; done
echo "apps: dependencies ready in $(since "$t")"

# 2. the package exactly as npm would ship it
npm pack ./pkg --pack-destination "$work" --json --loglevel=error 2>/dev/null >"$work/pack.json"
tarball="$work/$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1]))[0].filename)' "$work/pack.json")"
node -e '
  const [p] = JSON.parse(require("fs").readFileSync(process.argv[1]));
  const kb = (n) => (n / 1024).toFixed(1) + " KiB";
  console.log(`apps: npm pack ${p.filename}: tarball ${kb(p.size)}, unpacked ${kb(p.unpackedSize)}, ${p.entryCount} files`);
' "$work/pack.json"
t=$(now)
for dir in tests/apps "${apps[@]/#/tests/apps/}"; do
  rm -rf "$dir/node_modules/tokenwarden"
  (cd "$dir" && npm install --no-save --no-audit --no-fund --loglevel=error "$tarball" >/dev/null)
done
echo "apps: tarball installed into ${#apps[@]} apps + the test runner in $(since "$t")"

# 3. reference server (Next's rewrites are resolved at build time, so it comes first)
server_bin=$(scripts/test-server.sh 2> >(tail -1 >&2))
# The app servers' ports are chosen now: the reference server allow-lists their origins.
# (Next's rewrites proxy with the server's own Host, so its Origin differs from Host.)
free_port >"$work/port" && vite_port=$(cat "$work/port")
free_port >"$work/port" && dev_port=$(cat "$work/port")
free_port >"$work/port" && next_port=$(cat "$work/port")
free_port >"$work/port" && next_wp_port=$(cat "$work/port")
origins="http://127.0.0.1:$vite_port,http://127.0.0.1:$dev_port,http://127.0.0.1:$next_port,http://127.0.0.1:$next_wp_port"
spawn "$work/server.log" "$server_bin" --port 0 --test-mode --memory-store \
  --allowed-origin "$origins"
server=
for _ in $(seq 1 100); do
  server=$(sed -n '1s/^listening on //p' "$work/server.log")
  [ -n "$server" ] && break
  sleep 0.1
done
[ -n "$server" ] || { echo "apps: reference server did not start:" >&2; cat "$work/server.log" >&2; exit 1; }
curl -fsS -X POST -H 'Content-Type: application/json' -d '{"accessTtlSeconds":3}' "$server/test/config"
echo "apps: reference server $server (access tokens live 3 s)"
export TW_SERVER_URL=$server

# 4. builds
t=$(now)
(cd tests/apps/vite-react && node_modules/.bin/vite build --logLevel warn)
echo "apps: vite-react: vite build in $(since "$t")"
# The Next app twice: Turbopack (Next 16's default) and webpack (`next build --webpack`, what
# apps with a webpack config use), each into its own distDir (next.config.mjs reads
# TW_NEXT_DIST_DIR), served by its own `next start`.
for bundler in turbopack webpack; do
  t=$(now)
  flags=()
  [ "$bundler" = webpack ] && flags=(--webpack)
  rm -rf "tests/apps/next-app/.next-$bundler"
  (cd tests/apps/next-app && TW_NEXT_DIST_DIR=".next-$bundler" node_modules/.bin/next build "${flags[@]}" \
    >"$work/next-build-$bundler.log" 2>&1) || { cat "$work/next-build-$bundler.log" >&2; exit 1; }
  echo "apps: next-app: next build ($bundler) in $(since "$t")"
done
# Two different builds, not the same one twice: only webpack's has a webpack runtime.
[ -f tests/apps/next-app/.next-webpack/server/webpack-runtime.js ] \
  && [ ! -e tests/apps/next-app/.next-turbopack/server/webpack-runtime.js ] \
  || { echo "apps: next-app: the two builds are not one Turbopack and one webpack build" >&2; exit 1; }

# 5. app servers
spawn "$work/vite.log" bash -c "cd tests/apps/vite-react && exec node_modules/.bin/vite preview --host 127.0.0.1 --port $vite_port --strictPort"
# The dev server too: how apps are developed, and where React's Strict Mode
# runs every effect twice (production builds do not).
spawn "$work/vite-dev.log" bash -c "cd tests/apps/vite-react && exec node_modules/.bin/vite --host 127.0.0.1 --port $dev_port --strictPort"
spawn "$work/next.log" bash -c "cd tests/apps/next-app && TW_NEXT_DIST_DIR=.next-turbopack exec node_modules/.bin/next start -H 127.0.0.1 -p $next_port"
spawn "$work/next-webpack.log" bash -c "cd tests/apps/next-app && TW_NEXT_DIST_DIR=.next-webpack exec node_modules/.bin/next start -H 127.0.0.1 -p $next_wp_port"
wait_http "http://127.0.0.1:$vite_port/" "$work/vite.log"
wait_http "http://127.0.0.1:$dev_port/" "$work/vite-dev.log"
wait_http "http://127.0.0.1:$next_port/" "$work/next.log"
wait_http "http://127.0.0.1:$next_wp_port/" "$work/next-webpack.log"
echo "apps: vite-react on http://127.0.0.1:$vite_port (preview), :$dev_port (dev); next-app on http://127.0.0.1:$next_port (Turbopack), :$next_wp_port (webpack)"

# 6. tests
export TW_APPS="{\"vite-react\":\"http://127.0.0.1:$vite_port\",\"vite-react-dev\":\"http://127.0.0.1:$dev_port\",\"next-app\":\"http://127.0.0.1:$next_port\",\"next-app-webpack\":\"http://127.0.0.1:$next_wp_port\"}"
status=0
node --test --test-concurrency=1 tests/apps/node-import.test.mjs tests/apps/provider.test.mjs tests/apps/apps.test.mjs || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- next start log (Turbopack)" >&2; tail -40 "$work/next.log" >&2
  echo "--- next start log (webpack)" >&2; tail -40 "$work/next-webpack.log" >&2
  echo "--- reference server log" >&2; tail -40 "$work/server.log" >&2
fi
exit "$status"
