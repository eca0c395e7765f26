#!/usr/bin/env bash
# make load: the reference server under load, on 127.0.0.1 only, for a bounded time.
#
# Builds the release server and the load client (tools/load, a crate outside the root
# workspace, built into tools/load/target), starts the server with --port 0 --test-mode and a
# SQLite store in a temporary data dir (the default store; LOAD_MEMORY_STORE=1 for
# --memory-store), runs the client, prints a markdown table and writes tools/load/RESULTS.md.
# It fails on a correctness check (5xx, refused or double-issued rotation, family counts,
# duplicate-refresh outcome), never on timing.
#
#   LOAD_SECONDS       total run time of the client (default 20; phase 2 takes LOAD_DUP_SECONDS of it)
#   LOAD_USERS         virtual users, one token family each (default 64)
#   LOAD_DUP_SECONDS   phase 2, concurrent duplicate refreshes (default 3; 0 skips it)
#   LOAD_DUP_WORKERS   phase-2 workers, two connections each (default 8)
#   LOAD_MEMORY_STORE  1 = --memory-store instead of SQLite
#   LOAD_RESULTS       where to write the table (default tools/load/RESULTS.md; "-" = nowhere)
#   LOAD_COOKIE        refresh-cookie name (default __Secure-tw_refresh; tw_refresh for servers
#                      from before the rename)
#   LOAD_SERVER_BIN    run this server binary instead of building target/release/tokenwarden-server
#                      (e.g. one built with CARGO_PROFILE_RELEASE_OPT_LEVEL=3 to compare)
#   TW_LOG             server log level (default info, as people run it); the log goes to a
#                      temporary file, whose warnings are summarised at the end
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"

seconds=${LOAD_SECONDS:-20}
users=${LOAD_USERS:-64}
dup_seconds=${LOAD_DUP_SECONDS:-3}
dup_workers=${LOAD_DUP_WORKERS:-8}
results=${LOAD_RESULTS:-tools/load/RESULTS.md}

server_bin=${LOAD_SERVER_BIN:-}
if [ -z "$server_bin" ]; then
  echo "load: building the release server and the load client" >&2
  cargo build --release -q -p tokenwarden-server
  server_bin=target/release/tokenwarden-server
  server_desc="target/release/tokenwarden-server (root workspace release profile)"
else
  server_desc="$server_bin (LOAD_SERVER_BIN)"
fi
CARGO_TARGET_DIR="${LOAD_TARGET_DIR:-tools/load/target}" \
  cargo build --release -q --manifest-path tools/load/Cargo.toml
client="${LOAD_TARGET_DIR:-tools/load/target}/release/tokenwarden-load"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tw-load.XXXXXX")
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -INT "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

store_flags=(--data-dir "$tmp/data")
store_name="SQLite (temporary --data-dir)"
if [ "${LOAD_MEMORY_STORE:-0}" = 1 ]; then
  store_flags=(--memory-store)
  store_name="memory (--memory-store)"
fi

mkfifo "$tmp/stdout"
"$server_bin" --bind 127.0.0.1:0 --port 0 --test-mode "${store_flags[@]}" \
  >"$tmp/stdout" 2>"$tmp/server.log" &
server_pid=$!
exec 3<"$tmp/stdout"
line=""
if ! read -r -t 30 line <&3; then
  echo "load: the server printed no first line within 30 s; its log:" >&2
  tail -n 20 "$tmp/server.log" >&2 || true
  exit 1
fi
# Keep draining stdout so the server never blocks on a full pipe.
cat <&3 >/dev/null &
exec 3<&-
case "$line" in
  "listening on http://127.0.0.1:"*) addr=${line#listening on http://} ;;
  *) echo "load: unexpected first line from the server: $line" >&2; exit 1 ;;
esac
echo "load: server pid $server_pid on $addr, store: $store_name" >&2

results_flag=()
[ "$results" = "-" ] || results_flag=(--results "$results")
status=0
"$client" --addr "$addr" --users "$users" --seconds "$seconds" \
  --dup-seconds "$dup_seconds" --dup-workers "$dup_workers" \
  --server-pid "$server_pid" "${results_flag[@]}" \
  --meta "date=$(date -u +%Y-%m-%dT%H:%MZ)" \
  --meta "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  --meta "server=$server_desc --test-mode" \
  --meta "store=$store_name" \
  --meta "server log level=${TW_LOG:-info}, to a file" || status=$?

# What the server said about it (counts only; the log never holds a token).
warns=$(grep -c ' WARN ' "$tmp/server.log" || true)
reuse=$(grep -c 'reuse detected' "$tmp/server.log" || true)
errors=$(grep -c ' ERROR ' "$tmp/server.log" || true)
echo "load: server log: $(wc -l <"$tmp/server.log") lines, $warns WARN ($reuse reuse detected), $errors ERROR" >&2
if [ "$errors" != 0 ]; then
  grep ' ERROR ' "$tmp/server.log" | head -n 5 >&2
fi
exit "$status"
