#!/usr/bin/env bash
# make load: the reference server under load, on 127.0.0.1 only, for a bounded time, side by
# side in one run with a token server people use today and a database-only reference. The
# set-ups (LOAD_SETUPS, run in the order given, each as often as listed):
#   oidc     the anchor: oidc-provider (npm, tests/oidc/node_modules) with refresh-token
#            rotation, started by tools/load/oidc-provider.mjs; the same client, users and window
#            drive its refresh_token grant (+ userinfo) as they drive tokenwarden's refresh (+ /api/me);
#   sqlite   tokenwarden, one instance, temporary --data-dir (the default store);
#   memory   tokenwarden, one instance, --memory-store;
#   pg1      tokenwarden on PostgreSQL, one instance;
#   pg2      tokenwarden, two instances on the same database (each virtual user alternates its
#            requests over both; the duplicate-refresh pairs go one to each instance);
#   pgbench  pgbench -N (simple update) on the same PostgreSQL, LOAD_USERS clients, the same
#            window: a database-only reference (no HTTP, no token work).
# The default interleaves them: "pgbench oidc sqlite pg1 oidc pg2 oidc pgbench". PostgreSQL is
# a throw-away PostgreSQL 15 (scripts/pg.sh), started when a set-up needs it, stopped on exit.
#
# Builds the release server and the load client (tools/load, a crate outside the root
# workspace, built into tools/load/target), prints the side-by-side table and writes
# tools/load/RESULTS.md (the table, then each set-up's full report). It fails on a
# correctness check (5xx, refused, lost or double-issued rotation, family counts, the
# duplicate-refresh rule, the anchor's own checks) or an ERROR line in a server's log, never
# on timing.
#
#   LOAD_SECONDS       run time of the client per set-up (default 20); phase 1, the window every
#                      row is measured over, is LOAD_SECONDS - LOAD_DUP_SECONDS
#   LOAD_USERS         virtual users, one token family each (default 64)
#   LOAD_DUP_SECONDS   phase 2, concurrent duplicate refreshes (default 30 % of LOAD_SECONDS; 0 skips it)
#   LOAD_DUP_WORKERS   phase-2 workers, two connections each (default 8)
#   LOAD_SETUPS        which set-ups, space-separated (default above)
#   LOAD_PGBENCH       0 = leave out the pgbench set-ups (default 1)
#   LOAD_RESULTS       where to write the table (default tools/load/RESULTS.md; "-" = nowhere)
#   LOAD_SERVER_BIN    run this server binary instead of building target/release/tokenwarden-server
#   TW_LOG             server log level (default info, as people run it); logs go to temporary
#                      files, whose warnings are summarised at the end
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"

seconds=${LOAD_SECONDS:-20}
users=${LOAD_USERS:-64}
# Phase 2 is the only phase that can catch a double-issued rotation: a real share of the run.
dup_seconds=${LOAD_DUP_SECONDS:-$(awk -v s="$seconds" 'BEGIN { printf "%.1f", s * 0.3 }')}
dup_workers=${LOAD_DUP_WORKERS:-8}
setups=${LOAD_SETUPS:-pgbench oidc sqlite pg1 oidc pg2 oidc pgbench}
oidc_version=""
case " $setups " in
  *" oidc "*)
    command -v node >/dev/null || { echo "load: the oidc set-up needs node" >&2; exit 2; }
    scripts/setup.sh npm tests/oidc # installs what is missing (as make oidc does), idempotently
    oidc_version=$(node -p 'require("./tests/oidc/node_modules/oidc-provider/package.json").version' 2>/dev/null) \
      || { echo "load: no oidc-provider in tests/oidc/node_modules (cd tests/oidc && npm ci)" >&2; exit 2; } ;;
esac
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
pids=()
pg_dir=""
stop_servers() {
  local pid
  for pid in "${pids[@]}"; do
    kill -INT "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}
cleanup() {
  [ -z "${pg_watcher:-}" ] || kill "$pg_watcher" 2>/dev/null || true
  stop_servers
  [ -z "$pg_dir" ] || scripts/pg.sh stop "$pg_dir"
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pgbin() {
  local b
  for b in /usr/lib/postgresql/*/bin; do [ -x "$b/$1" ] && { echo "$b/$1"; return; }; done
  command -v "$1"
}

database_url=""
need_pg() {
  [ -n "$database_url" ] && return 0
  scripts/setup.sh pg
  # Its own directory: the postgres user cannot enter $tmp (mode 700, ours).
  pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/tw-load-pg.XXXXXX")
  database_url=$(scripts/pg.sh start "$pg_dir")
  database_url=${database_url#DATABASE_URL=}
  echo "load: PostgreSQL on ${database_url#postgres://postgres@}" >&2
}
# A fresh database on the PostgreSQL; prints its URL.
fresh_db() {
  "$(pgbin psql)" "$database_url" -qAtc "CREATE DATABASE $1" >/dev/null
  echo "${database_url%/*}/$1"
}

# start_server NAME ARGS...: one more instance; appends to pids, sets addr.
addr=""
start_server() {
  local name=$1
  shift
  start_process "$name" "$server_bin" --bind 127.0.0.1:0 --port 0 --test-mode "$@"
}
# start_process NAME CMD...: a process that prints `listening on http://127.0.0.1:PORT` first.
start_process() {
  local name=$1 line
  shift
  mkfifo "$tmp/$name.stdout"
  "$@" >"$tmp/$name.stdout" 2>"$tmp/$name.log" &
  pids+=($!)
  exec 3<"$tmp/$name.stdout"
  line=""
  if ! read -r -t 30 line <&3; then
    echo "load: $name printed no first line within 30 s; its log:" >&2
    tail -n 20 "$tmp/$name.log" >&2 || true
    exit 1
  fi
  # Keep draining stdout so the server never blocks on a full pipe.
  cat <&3 >/dev/null &
  exec 3<&-
  case "$line" in
    "listening on http://127.0.0.1:"*) addr=${line#listening on http://} ;;
    *) echo "load: unexpected first line from $name: $line" >&2; exit 1 ;;
  esac
}

status=0
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# Seconds the threads of the given processes have spent runnable but waiting for a CPU
# (/proc/PID/task/*/schedstat, 2nd field, ns): on a crowded machine, where the time goes.
run_wait() {
  local pid
  for pid in "$@"; do cat /proc/"$pid"/task/*/schedstat 2>/dev/null; done |
    awk '{ s += $2 } END { printf "%.2f", s / 1e9 }'
}
# This run's PostgreSQL only: its postmaster (first line of the data dir's postmaster.pid)
# and the postmaster's children (backends, checkpointer, walwriter, autovacuum, ...). Other
# clusters of the postgres user on the machine (other people's `make pg-test`) are not ours.
pg_postmaster() { head -n 1 "$pg_dir/data/postmaster.pid"; }
pg_pids() {
  local pm
  pm=$(pg_postmaster)
  echo "$pm"
  pgrep -P "$pm" 2>/dev/null || true
}
# CPU seconds used so far by this run's cluster, a counter that only grows: the postmaster's
# own utime+stime, plus its cutime+cstime (every child it has reaped: a backend that exited
# during the run is counted in full there, having been counted as far as it had got in an
# earlier sample), plus utime+stime+cutime+cstime of each child alive now. The difference
# of two samples is the CPU of the processes present at both, plus those that exited, plus
# those that started, between them. (The postmaster is read first: a child that exits and is
# reaped between that read and its own is counted zero times in that sample; backends here
# live as long as a pool's connection.)
pg_cpu() {
  local pm hz
  pm=$(pg_postmaster); hz=$(getconf CLK_TCK)
  { cut -d')' -f2- "/proc/$pm/stat"
    for pid in $(pgrep -P "$pm" 2>/dev/null); do cut -d')' -f2- "/proc/$pid/stat" 2>/dev/null || true; done
  } | awk -v hz="$hz" '{ t += $12 + $13 + $14 + $15 } END { printf "%.2f", t / hz }'
}
# Run-queue wait has no reaped-children counter: per pid, ns waited (summed over its threads),
# read with builtins only (it runs every half second while a set-up runs).
pg_wait_sample() {
  local pid f w sum
  for pid in $(pg_pids); do
    sum=0
    for f in /proc/"$pid"/task/*/schedstat; do
      read -r _ w _ 2>/dev/null <"$f" && sum=$((sum + w))
    done
    echo "$pid $sum"
  done
}
# pg_wait_start / pg_wait_stop KEY T: a sample now, then one every 0.5 s until stopped; KEY.pgwait
# gets seconds per second of run-queue wait over T seconds. Each pid counts from its value in
# the first sample (0 if it started later: a pgbench client's backend) to the largest seen, so
# a backend that exits in between counts up to its last sample (at most 0.5 s is missed).
pg_watcher=""
pg_wait_start() {
  pg_wait_sample >"$tmp/pgwait0"
  ( while sleep 0.5; do pg_wait_sample; done ) >"$tmp/pgwait.samples" 2>/dev/null &
  pg_watcher=$!
}
pg_wait_stop() {
  kill "$pg_watcher" 2>/dev/null || true
  wait "$pg_watcher" 2>/dev/null || true
  pg_watcher=""
  pg_wait_sample >>"$tmp/pgwait.samples"
  awk -v t="$2" 'FNR == NR { a[$1] = $2; next }
                 { if (!($1 in m) || $2 > m[$1]) m[$1] = $2 }
                 END { for (p in m) s += m[p] - (p in a ? a[p] : 0)
                       printf "%.2f\n", s / 1e9 / t }' "$tmp/pgwait0" "$tmp/pgwait.samples" >"$tmp/$1.pgwait"
}
load_before=$(loadavg)
# The window every row is measured over: tokenwarden's phase 1 (LOAD_SECONDS - phase 2); the
# oidc-provider set-ups and pgbench run for the same window (pgbench: whole seconds, rounded up).
window=$(awk -v s="$seconds" -v d="$dup_seconds" 'BEGIN { printf "%.1f", s - d }')
pgbench_db=""
rows=()
n=0
for setup in $setups; do
  n=$((n + 1)); key="$n-$setup"
  addrs=(); extra=()
  case "$setup" in
    pgbench)
      [ "${LOAD_PGBENCH:-1}" = 1 ] || continue
      need_pg
      if [ -z "$pgbench_db" ]; then
        pgbench_db=$(fresh_db load_pgbench)
        "$(pgbin pgbench)" -q -i -s 10 "$pgbench_db" >/dev/null 2>&1
      fi
      t=$(awk -v w="$window" 'BEGIN { t = int(w); if (t < w) t++; print t }')
      desc="pgbench -N (simple update, scale 10), $users clients, ${t} s — database only, no HTTP, no token work"
      echo "load: $desc" >&2
      cpu0=$(pg_cpu); pg_wait_start; t0=$(date +%s.%N)
      "$(pgbin pgbench)" -N -c "$users" -j 2 -T "$t" "$pgbench_db" >"$tmp/$key.pgbench" 2>&1 || status=1
      t1=$(date +%s.%N)
      pg_wait_stop "$key" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"
      awk -v a="$cpu0" -v b="$(pg_cpu)" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.2f\n", (b - a) / (t1 - t0) }' >"$tmp/$key.pgcores"
      rows+=("$key|$desc")
      continue ;;
    oidc)
      secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
      start_process "$key" node tools/load/oidc-provider.mjs "$secret"; addrs+=(--addr "$addr")
      extra=(--oidc-client "load:$secret")
      desc="oidc-provider $oidc_version (Node $(node --version)), in-memory adapter" ;;
    sqlite)
      start_server "$key" --data-dir "$tmp/data-$n"; addrs+=(--addr "$addr")
      desc="tokenwarden, SQLite, 1 instance" ;;
    memory)
      start_server "$key" --memory-store; addrs+=(--addr "$addr")
      desc="tokenwarden, memory, 1 instance" ;;
    pg1)
      need_pg; url=$(fresh_db "load_${n}_pg1")
      start_server "$key" --database-url "$url"; addrs+=(--addr "$addr")
      desc="tokenwarden, PostgreSQL, 1 instance" ;;
    pg2)
      need_pg; url=$(fresh_db "load_${n}_pg2")
      start_server "$key-a" --database-url "$url"; addrs+=(--addr "$addr")
      start_server "$key-b" --database-url "$url"; addrs+=(--addr "$addr")
      desc="tokenwarden, PostgreSQL, 2 instances" ;;
    *) echo "load: unknown set-up $setup" >&2; exit 2 ;;
  esac
  echo "load: $desc (server pids ${pids[*]})" >&2
  s=0
  on_pg=0; case "$setup" in pg1|pg2) on_pg=1 ;; esac
  cpu0=""; [ "$on_pg" = 0 ] || { cpu0=$(pg_cpu); pg_wait_start; }
  t0=$(date +%s.%N)
  wait0=$(run_wait "${pids[@]}")
  if [ "$setup" = oidc ]; then
    server_meta="server=node tools/load/oidc-provider.mjs (tests/oidc/node_modules/oidc-provider $oidc_version)"
  else
    server_meta="server=$server_desc --test-mode"
  fi
  "$client" "${addrs[@]}" "${extra[@]}" --users "$users" --seconds "$seconds" \
    --dup-seconds "$dup_seconds" --dup-workers "$dup_workers" \
    --server-pid "$(IFS=,; echo "${pids[*]}")" \
    --results "$tmp/$key.md" --summary "$tmp/$key.json" \
    --meta "set-up=$desc" \
    --meta "$server_meta" \
    --meta "server log level=${TW_LOG:-info}, to a file" || s=$?
  [ "$s" = 0 ] || status=$s
  awk -v a="$wait0" -v b="$(run_wait "${pids[@]}")" -v t0="$t0" -v t1="$(date +%s.%N)" \
    'BEGIN { printf "%.2f\n", (b - a) / (t1 - t0) }' >"$tmp/$key.wait"
  if [ "$on_pg" = 1 ]; then
    pg_wait_stop "$key" "$(awk -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN { print t1 - t0 }')"
    # Over the whole client run (logins, phase 1, phase 2, logouts).
    awk -v a="$cpu0" -v b="$(pg_cpu)" -v t0="$t0" -v t1="$(date +%s.%N)" \
      'BEGIN { printf "%.2f\n", (b - a) / (t1 - t0) }' >"$tmp/$key.pgcores"
  fi
  stop_servers
  warns=$(cat "$tmp"/*.log | grep -c ' WARN ' || true)
  errors=$(cat "$tmp"/*.log | grep -c ' ERROR ' || true)
  echo "load: $desc: server logs $warns WARN, $errors ERROR" >&2
  if [ "$errors" != 0 ]; then
    # An ERROR line is a failure of the run, whatever the client's checks said.
    echo "load: $desc: FAILED: the server logged $errors ERROR line(s):" >&2
    grep -H ' ERROR ' "$tmp"/*.log | sed "s|^$tmp/||" | head -n 50 >&2
    [ "$errors" -le 50 ] || echo "load: … and $((errors - 50)) more" >&2
    echo "$errors" >"$tmp/$key.errors"
    status=1
  fi
  rm -f "$tmp"/*.log "$tmp"/*.stdout
  rows+=("$key|$desc")
done
load_after=$(loadavg)

table=$(python3 - "$tmp" "${rows[@]}" <<'PY'
import json, re, statistics, sys
tmp = sys.argv[1]
out = ["| # | set-up | rotations | rotations/s | vs oidc-provider | refresh p50 ms | refresh p99 ms | refused (phase 1) | tokens repeated (phase 1) | phase-2 pairs: same successor / double-issued | server cores | server run-queue wait | PostgreSQL cores | PostgreSQL run-queue wait | checks |",
       "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
def read(key, ext):
    try:
        return open(f"{tmp}/{key}.{ext}").read().strip() or "—"
    except OSError:
        return "—"
results, pgbench = {}, []
for row in sys.argv[2:]:
    key, desc = row.split("|", 1)
    try:
        results[key] = json.load(open(f"{tmp}/{key}.json"))
    except OSError:
        pass
    if key.endswith("-pgbench"):
        m = re.search(r"^tps = ([0-9.]+)", read(key, "pgbench"), re.M)
        if m:
            pgbench.append(float(m.group(1)))
anchor = [s["rotations_per_s"] for k, s in results.items() if k.endswith("-oidc") and s["checks_ok"]]
anchor = statistics.mean(anchor) if anchor else None
rates = {}
for row in sys.argv[2:]:
    key, desc = row.split("|", 1)
    n, setup = key.split("-", 1)
    pgc, wait, pgwait, errors = read(key, "pgcores"), read(key, "wait"), read(key, "pgwait"), read(key, "errors")
    if setup == "pgbench":
        m = re.search(r"^tps = ([0-9.]+)", read(key, "pgbench"), re.M)
        lat = re.search(r"^latency average = ([0-9.]+) ms", read(key, "pgbench"), re.M)
        tps = f"{float(m.group(1)):.0f} tps" if m else "**failed**"
        out.append(f"| {n} | {desc} | | {tps} | | {lat.group(1) + ' (mean)' if lat else ''} | | | | | | | {pgc} | {pgwait} | {'ok' if m else '**FAILED**'} |")
        continue
    s = results.get(key)
    if s is None:
        out.append(f"| {n} | {desc} | — | — | — | — | — | — | — | — | — | — | — | — | **no result** |")
        continue
    rates.setdefault(setup, []).append(s["rotations_per_s"])
    dup = s["issued"] - s["distinct_issued"]
    cores = "—" if s["server_cores"] is None else f'{s["server_cores"]:.2f}'
    verdict = "ok" if s["checks_ok"] else "**FAILED**"
    if errors != "—":
        verdict = f"**FAILED** ({errors} ERROR log lines)"
    pairs = "—" if s.get("dup_pairs") is None else f'{s["dup_pairs"]}: {s["dup_same_successor"]} / {s.get("dup_diverged", "?")}'
    vs = "—" if anchor is None or setup == "oidc" else f'{s["rotations_per_s"] / anchor:.2f} ×'
    out.append(f'| {n} | {desc} | {s["rotations"]} | {s["rotations_per_s"]:.0f} | {vs} | {s["refresh_p50_ms"]:.2f} | '
               f'{s["refresh_p99_ms"]:.2f} | {s["refresh_401"]} | {dup} | {pairs} | '
               f'{cores} | {wait} | {pgc} | {pgwait} | {verdict} |')
out.append("")
if anchor is not None:
    out.append(f"The anchor: oidc-provider's refresh_token grant with rotation, {anchor:.0f} rotations/s "
               f"(mean of its {len([k for k in results if k.endswith('-oidc')])} runs, interleaved with tokenwarden's); "
               "\"vs oidc-provider\" is each tokenwarden set-up's rate over it.")
if "sqlite" in rates:
    r = statistics.mean(rates["sqlite"])
    out.append(f"Target ≥ 5,000 rotations/s on SQLite: {r:.0f}/s, {'met' if r >= 5000 else 'missed'}.")
if "pg2" in rates and pgbench:
    r, p = statistics.mean(rates["pg2"]), statistics.mean(pgbench)
    out.append(f"Target PostgreSQL with two instances ≥ 50 % of pgbench -N (a database-only reference, the mean of its "
               f"{len(pgbench)} runs: {', '.join(f'{x:.0f}' for x in pgbench)} tps): {r:.0f}/s = {100 * r / p:.0f} %, {'met' if r >= p / 2 else 'missed'}.")
print("\n".join(out))
PY
)

md="# tokenwarden-server under load

Written by \`make load\` (\`tools/load/run.sh\`), one run, the set-ups one after the other in the
order numbered (\`LOAD_SETUPS\`), the anchor and pgbench interleaved with tokenwarden's. Client,
servers and PostgreSQL share the machine; figures are for comparison within one run, not absolute.

- **oidc-provider** (npm, OpenID Certified; \`tools/load/oidc-provider.mjs\`, in-memory adapter, so
  closest to tokenwarden's memory set-up) is the anchor: a token server people use today, driven by
  the same client, users and window: each virtual user signs in once with the code flow, then loops
  the \`refresh_token\` grant with rotation and userinfo, as tokenwarden's users loop
  \`/auth/refresh\` and \`/api/me\`. One ES256 signature per rotation on both (its ID token,
  tokenwarden's access token). Its checks: every answer 200, no transport error, every token new,
  its own counts agree.
- **pgbench -N** is a database-only reference (one short UPDATE/SELECT/INSERT transaction, no
  HTTP, no token work), with as many clients as there are virtual users, before and after.
- \"refused (phase 1)\": refreshes not answered 200 in phase 1 (a lost rotation). \"tokens repeated
  (phase 1)\": refresh tokens handed out twice; phase 1 drives each family strictly sequentially,
  so this catches an echo or a repeated token, never a double-issued rotation. That is phase 2's
  job: two connections present one token at once; \"same successor\" is the lost-response rule
  holding, \"double-issued\" two different successors (a failure).
- \"server cores\": CPU of the server process(es) in phase 1; \"PostgreSQL cores\": CPU of this run's
  PostgreSQL (its postmaster and the postmaster's children, exited ones included) over the whole
  client run (logins to logouts); \"run-queue wait\": seconds per second that their threads were
  runnable but waiting for a CPU (/proc schedstat) — on a crowded machine, where the time goes.
- tokenwarden's virtual users are all the demo account (demo/demo): the server has no other
  account and no way to add one in test mode, so its per-user lock and family cap see one user
  (64 + phase-2 families < the cap of 100). oidc-provider's users are distinct accounts.

| | |
| --- | --- |
| date | $(date -u +%Y-%m-%dT%H:%MZ) |
| commit | $(git rev-parse --short HEAD 2>/dev/null || echo unknown) |
| nproc | $(nproc) |
| load average (1, 5, 15 min) before / after | $load_before / $load_after |
| per set-up | ${seconds} s: phase 1 ${window} s (the window every row is measured over), phase 2 ${dup_seconds} s; ${users} virtual users |

$table
"
for row in "${rows[@]}"; do
  key=${row%%|*}
  [ -f "$tmp/$key.md" ] && md+="
---

$(sed '1s/^# .*/## '"${key%%-*}. ${row#*|}"'/' "$tmp/$key.md")
"
  [ -f "$tmp/$key.pgbench" ] && md+="
---

## ${key%%-*}. ${row#*|}

\`\`\`
$(grep -E '^(transaction type|scaling|number of clients|duration|number of transactions|latency average|tps)' "$tmp/$key.pgbench")
\`\`\`
"
done
echo "$table"
if [ "$results" != "-" ]; then
  printf '%s' "$md" >"$results"
  echo "load: wrote $results" >&2
fi
exit "$status"
