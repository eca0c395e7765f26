#!/usr/bin/env bash
# A throw-away PostgreSQL for the tests and the load run: the machine's PostgreSQL 15,
# initialised into a temporary directory as the `postgres` user (initdb and pg_ctl refuse
# to run as root), listening on a free port of 127.0.0.1 only, no Unix socket in /run.
#
#   scripts/pg.sh start DIR    initdb + start; prints DATABASE_URL=postgres://... on stdout
#   scripts/pg.sh stop DIR     fast shutdown and remove DIR
#   scripts/pg.sh run CMD...   start, export DATABASE_URL, run CMD, always stop (exit code of CMD)
#
# Installs nothing itself: scripts/setup.sh pg installs Debian's postgresql when the
# binaries are missing.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"

pgbin() {
  local b
  for b in /usr/lib/postgresql/*/bin; do
    [ -x "$b/pg_ctl" ] && { echo "$b"; return; }
  done
  command -v pg_ctl >/dev/null && { dirname "$(command -v pg_ctl)"; return; }
  echo "pg.sh: no PostgreSQL found (scripts/setup.sh pg installs it)" >&2
  exit 1
}

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    # -s: postgres' own shell may be nologin.
    su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' 2>/dev/null \
    || node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

start() {
  local dir=$1 bin port
  bin=$(pgbin)
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
  chmod 700 "$dir"
  as_pg "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  port=$(free_port)
  # Tuned for a test database on 2 cores: durability kept (fsync on), no socket dir in /run.
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $port -k $dir -c max_connections=200 -c shared_buffers=256MB" start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  echo "$port" >"$dir/port"
  echo "DATABASE_URL=postgres://postgres@127.0.0.1:$port/postgres"
}

stop() {
  local dir=$1 bin
  [ -d "$dir/data" ] || { rm -rf "$dir"; return 0; }
  bin=$(pgbin)
  as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}

case "${1:-}" in
  start) start "$2" ;;
  stop) stop "$2" ;;
  run)
    shift
    dir=$(mktemp -d "${TMPDIR:-/tmp}/tw-pg.XXXXXX")
    trap 'set +e; stop "$dir"' EXIT
    trap 'exit 130' INT TERM HUP
    url=$(start "$dir")
    export "${url?}"
    echo "pg.sh: PostgreSQL on ${DATABASE_URL#postgres://postgres@}" >&2
    status=0
    "$@" || status=$?
    exit "$status"
    ;;
  *) echo "usage: $0 start DIR | stop DIR | run CMD..." >&2; exit 2 ;;
esac
