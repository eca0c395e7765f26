#!/usr/bin/env bash
# make load: the reference server under load, on 127.0.0.1 only, for a bounded time, in
# three set-ups side by side, one run:
#   1. SQLite (one instance, temporary --data-dir: the default store);
#   2. PostgreSQL, one instance;
#   3. PostgreSQL, two instances on the same database (each virtual user alternates its
#      requests over both; the duplicate-refresh pairs go one to each instance);
# plus pgbench's simple-update transactions/s (-N) on the same PostgreSQL as the physical
# reference. PostgreSQL is a throw-away PostgreSQL 15 (scripts/pg.sh), stopped on exit.
#
# Builds the release server and the load client (tools/load, a crate outside the root
# workspace, built into tools/load/target), prints the side-by-side table and writes
# tools/load/RESULTS.md (the table, then each set-up's full report). It fails on a
# correctness check (5xx, refused, lost or double-issued rotation, family counts, the
# duplicate-refresh rule), never on timing.
#
#   LOAD_SECONDS       run time of the client per set-up (default 20; phase 2 takes LOAD_DUP_SECONDS of it)
#   LOAD_USERS         virtual users, one token family each (default 64)
#   LOAD_DUP_SECONDS   phase 2, concurrent duplicate refreshes (default 3; 0 skips it)
#   LOAD_DUP_WORKERS   phase-2 workers, two connections each (default 8)
#   LOAD_SETUPS        which set-ups, space-separated (default "sqlite pg1 pg2"; also "memory")
#   LOAD_PGBENCH       0 = skip pgbench (default 1)
#   LOAD_RESULTS       where to write the table (default tools/load/RESULTS.md; "-" = nowhere)
#   LOAD_SERVER_BIN    run this server binary instead of building target/release/tokenwarden-server
#   TW_LOG             server log level (default info, as people run it); logs go to temporary
#                      files, whose warnings are summarised at the end
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"

seconds=${LOAD_SECONDS:-20}
users=${LOAD_USERS:-64}
dup_seconds=${LOAD_DUP_SECONDS:-3}
dup_workers=${LOAD_DUP_WORKERS:-8}
setups=${LOAD_SETUPS:-sqlite pg1 pg2}
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
  local name=$1 line
  shift
  mkfifo "$tmp/$name.stdout"
  "$server_bin" --bind 127.0.0.1:0 --port 0 --test-mode "$@" \
    >"$tmp/$name.stdout" 2>"$tmp/$name.log" &
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
# those that started, between them. (A child reaped in the instant between reading its stat
# and the postmaster's would count twice; backends here live as long as a pool's connection.)
pg_cpu() {
  local pm hz
  pm=$(pg_postmaster); hz=$(getconf CLK_TCK)
  { cut -d')' -f2- "/proc/$pm/stat"
    for pid in $(pgrep -P "$pm" 2>/dev/null); do cut -d')' -f2- "/proc/$pid/stat" 2>/dev/null || true; done
  } | awk -v hz="$hz" '{ t += $12 + $13 + $14 + $15 } END { printf "%.2f", t / hz }'
}
# Run-queue wait has no reaped-children counter: per pid, ns waited (summed over its threads).
pg_wait_sample() {
  local pid
  for pid in $(pg_pids); do
    awk -v p="$pid" '{ s += $2 } END { if (NR) printf "%s %d\n", p, s }' /proc/"$pid"/task/*/schedstat 2>/dev/null || true
  done
}
# Seconds per second of run-queue wait between two samples (files), over T seconds: each pid
# of the second sample counts from its first value (0 if it started in between); a pid gone
# by the second sample is left out (its last stretch unknown) and counted in the note.
pg_wait_between() {
  awk -v t="$3" 'FNR == NR { a[$1] = $2; next }
                 { s += $2 - ($1 in a ? a[$1] : 0); seen[$1] = 1 }
                 END { for (p in a) if (!(p in seen)) gone++
                       printf "%.2f%s\n", s / 1e9 / t, gone ? " (" gone " exited, not counted)" : "" }' "$1" "$2"
}
load_before=$(loadavg)
rows=()
for setup in $setups; do
  addrs=()
  case "$setup" in
    sqlite)
      start_server sqlite --data-dir "$tmp/data"; addrs+=(--addr "$addr")
      desc="SQLite, 1 instance" ;;
    memory)
      start_server memory --memory-store; addrs+=(--addr "$addr")
      desc="memory, 1 instance" ;;
    pg1)
      need_pg; url=$(fresh_db load_pg1)
      start_server pg1 --database-url "$url"; addrs+=(--addr "$addr")
      desc="PostgreSQL, 1 instance" ;;
    pg2)
      need_pg; url=$(fresh_db load_pg2)
      start_server pg2a --database-url "$url"; addrs+=(--addr "$addr")
      start_server pg2b --database-url "$url"; addrs+=(--addr "$addr")
      desc="PostgreSQL, 2 instances" ;;
    *) echo "load: unknown set-up $setup" >&2; exit 2 ;;
  esac
  echo "load: $desc (server pids ${pids[*]})" >&2
  s=0
  cpu0=""; [ -z "$database_url" ] || cpu0=$(pg_cpu); t0=$(date +%s.%N)
  wait0=$(run_wait "${pids[@]}")
  [ -z "$database_url" ] || pg_wait_sample >"$tmp/pgwait0"
  "$client" "${addrs[@]}" --users "$users" --seconds "$seconds" \
    --dup-seconds "$dup_seconds" --dup-workers "$dup_workers" \
    --server-pid "$(IFS=,; echo "${pids[*]}")" \
    --results "$tmp/$setup.md" --summary "$tmp/$setup.json" \
    --meta "set-up=$desc" \
    --meta "server=$server_desc --test-mode" \
    --meta "server log level=${TW_LOG:-info}, to a file" || s=$?
  [ "$s" = 0 ] || status=$s
  awk -v a="$wait0" -v b="$(run_wait "${pids[@]}")" -v t0="$t0" -v t1="$(date +%s.%N)" \
    'BEGIN { printf "%.2f\n", (b - a) / (t1 - t0) }' >"$tmp/$setup.wait"
  if [ -n "$database_url" ]; then
    pg_wait_sample >"$tmp/pgwait1"
    pg_wait_between "$tmp/pgwait0" "$tmp/pgwait1" \
      "$(awk -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN { print t1 - t0 }')" >"$tmp/$setup.pgwait"
    # Over the whole client run (logins, phase 1, phase 2, logouts).
    awk -v a="$cpu0" -v b="$(pg_cpu)" -v t0="$t0" -v t1="$(date +%s.%N)" \
      'BEGIN { printf "%.2f\n", (b - a) / (t1 - t0) }' >"$tmp/$setup.pgcores"
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
    echo "$errors" >"$tmp/$setup.errors"
    status=1
  fi
  rm -f "$tmp"/*.log "$tmp"/*.stdout
  rows+=("$setup|$desc")
done

pgbench_tps=""
if [ "${LOAD_PGBENCH:-1}" = 1 ] && [ -n "$database_url" ]; then
  echo "load: pgbench -N (simple update), 16 clients, 10 s, on the same PostgreSQL" >&2
  url=$(fresh_db load_pgbench)
  "$(pgbin pgbench)" -q -i -s 10 "$url" >/dev/null 2>&1
  "$(pgbin pgbench)" -N -c 16 -j 2 -T 10 "$url" >"$tmp/pgbench.txt" 2>&1 || status=1
  pgbench_tps=$(awk '/^tps = / { printf "%.0f", $3; exit }' "$tmp/pgbench.txt")
fi
load_after=$(loadavg)

table=$(python3 - "$tmp" "$pgbench_tps" "${rows[@]}" <<'PY'
import json, sys
tmp, pgbench = sys.argv[1], sys.argv[2]
out = ["| set-up | rotations | rotations/s | refresh p50 ms | refresh p99 ms | lost | duplicated | duplicate pairs (same successor) | server cores | server run-queue wait | PostgreSQL cores | PostgreSQL run-queue wait | checks |",
       "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
rates = {}
for row in sys.argv[3:]:
    key, desc = row.split("|", 1)
    try:
        s = json.load(open(f"{tmp}/{key}.json"))
    except OSError:
        out.append(f"| {desc} | — | — | — | — | — | — | — | — | — | — | — | **no result** |")
        continue
    rates[key] = s["rotations_per_s"]
    dup = s["issued"] - s["distinct_issued"]
    cores = "—" if s["server_cores"] is None else f'{s["server_cores"]:.2f}'
    def read(ext):
        try:
            return open(f"{tmp}/{key}.{ext}").read().strip() or "—"
        except OSError:
            return "—"
    pgc, wait, pgwait = read("pgcores"), read("wait"), read("pgwait")
    errors = read("errors")
    verdict = "ok" if s["checks_ok"] else "**FAILED**"
    if errors != "—":
        verdict = f"**FAILED** ({errors} ERROR log lines)"

    out.append(f'| {desc} | {s["rotations"]} | {s["rotations_per_s"]:.0f} | {s["refresh_p50_ms"]:.2f} | '
               f'{s["refresh_p99_ms"]:.2f} | {s["refresh_401"]} | {dup} | {s["dup_pairs"]} ({s["dup_same_successor"]}) | '
               f'{cores} | {wait} | {pgc} | {pgwait} | {verdict} |')
if pgbench:
    out.append(f"| pgbench -N (simple update), 16 clients, same PostgreSQL | | {pgbench} tps | | | | | | | | | | |")
out.append("")
if "sqlite" in rates:
    r = rates["sqlite"]
    out.append(f"Target ≥ 5,000 rotations/s on SQLite: {r:.0f}/s, {'met' if r >= 5000 else 'missed'}.")
if "pg2" in rates and pgbench:
    r, p = rates["pg2"], float(pgbench)
    out.append(f"Target PostgreSQL with two instances ≥ 50 % of pgbench -N: {r:.0f}/s = {100 * r / p:.0f} % of {p:.0f} tps, {'met' if r >= p / 2 else 'missed'}.")
print("\n".join(out))
PY
)

md="# tokenwarden-server under load

Written by \`make load\` (\`tools/load/run.sh\`), one run, the set-ups one after the other.
Client, servers and PostgreSQL share the machine; figures are for comparison between runs
on the same machine, not absolute. \"lost\": refreshes answered 401 in phase 1 (a lost
rotation); \"duplicated\": refresh tokens handed out twice. \"server cores\": CPU of the
server process(es) in phase 1; \"PostgreSQL cores\": CPU of this run's PostgreSQL (its postmaster
and the postmaster's children, exited ones included) over the whole client run (logins to logouts); \"run-queue wait\": seconds per second that their threads
were runnable but waiting for a CPU (/proc schedstat) — on a crowded machine, where the time goes.

| | |
| --- | --- |
| date | $(date -u +%Y-%m-%dT%H:%MZ) |
| commit | $(git rev-parse --short HEAD 2>/dev/null || echo unknown) |
| nproc | $(nproc) |
| load average (1, 5, 15 min) before / after | $load_before / $load_after |
| per set-up | ${seconds} s (phase 2: ${dup_seconds} s), ${users} virtual users |

$table
"
for row in "${rows[@]}"; do
  key=${row%%|*}
  [ -f "$tmp/$key.md" ] && md+="
---

$(sed '1s/^# .*/## '"${row#*|}"'/' "$tmp/$key.md")
"
done
if [ -f "$tmp/pgbench.txt" ]; then
  md+="
---

## pgbench -N -c 16 -j 2 -T 10 (scale 10) on the same PostgreSQL

\`\`\`
$(grep -E '^(transaction type|scaling|number of clients|duration|number of transactions|latency average|tps)' "$tmp/pgbench.txt")
\`\`\`
"
fi
echo "$table"
if [ "$results" != "-" ]; then
  printf '%s' "$md" >"$results"
  echo "load: wrote $results" >&2
fi
exit "$status"
