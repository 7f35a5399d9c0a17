#!/usr/bin/env bash
# A local PostgreSQL instance of the project's own, for tests and for trying the PostgreSQL store.
#
#   deploy/local/postgres.sh start|stop|status|url
#
# Installs Debian's `postgresql` package when its binaries are missing and we are root. The data
# dir is var/postgres (git-ignored); the server listens on 127.0.0.1:$PG_PORT (default 54329, not
# the system default, so it never collides with a system instance) and trusts loopback connections:
# it is a throwaway development database, never a deployment. Idempotent like kafka.sh.
# It runs with fsync off, as a test server may; WEBHOOKS_PG_DURABLE=1 starts it as production
# runs (fsync=on, synchronous_commit=on: a commit returns once its WAL is on disk), to measure
# what durability costs (docs/performance.md). A server already running keeps how it started.
# PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
port="${PG_PORT:-54329}"
db="${PG_DATABASE:-webhooks}"
state="${PG_STATE:-$root/var/postgres}"  # PG_STATE: a second, private instance

log() { printf 'postgres: %s\n' "$*" >&2; }

bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [[ -n "$d" && -x "$d/initdb" ]] && echo "$d"
}

install() {
  if bindir >/dev/null; then return; fi
  if [[ $EUID -ne 0 ]]; then
    log "PostgreSQL binaries not found and not root: install Debian's 'postgresql' package"
    exit 1
  fi
  log "installing Debian's postgresql package (once)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
}

# As root, everything that touches the data dir runs as `postgres`.
as_owner() {
  # From `/`: the caller's directory may be one `postgres` cannot enter (a private temp dir).
  if [[ $EUID -eq 0 ]]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

datadir() {
  # The postgres user must be able to reach the data dir; a checkout under a private home (0700)
  # is not reachable, so fall back to a per-checkout folder under /tmp.
  if [[ $EUID -eq 0 ]] && ! runuser -u postgres -- test -x "$root/var" 2>/dev/null; then
    mkdir -p "$root/var"
    if ! runuser -u postgres -- test -x "$root/var" 2>/dev/null; then
      echo "/tmp/identity-webhooks-pg-$(echo -n "$state" | md5sum | cut -c1-12)"
      return
    fi
  fi
  echo "$state"
}

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

running() {
  local bin data
  bin=$(bindir) || return 1
  data=$(datadir)
  [[ -f "$data/PG_VERSION" ]] || return 1
  as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1
}

start() {
  mkdir -p "$root/var"
  if running; then log "already running on 127.0.0.1:$port"; ensure_db; return; fi
  if port_taken "$port"; then
    log "port $port on 127.0.0.1 is taken by another process; set PG_PORT to a free one"
    exit 1
  fi
  install
  local bin data
  bin=$(bindir)
  data=$(datadir)
  if [[ ! -f "$data/PG_VERSION" ]]; then
    log "initdb into $data"
    mkdir -p "$data"
    [[ $EUID -eq 0 ]] && chown postgres:postgres "$data"
    chmod 700 "$data"
    as_owner "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --no-locale >/dev/null
  fi
  log "starting on 127.0.0.1:$port"
  local options="-p $port -h 127.0.0.1 -k $data -c max_connections=200"
  if [[ "${WEBHOOKS_PG_DURABLE:-0}" == 1 ]]; then
    log "durable: fsync=on, synchronous_commit=on"
    options+=" -c fsync=on -c synchronous_commit=on"
  else
    options+=" -c fsync=off"
  fi
  # The bench reads the statements' own counts (bench/pgstats.py) when Debian's package ships
  # the extension; it is loaded at start only.
  if [[ -f "$("$bin/pg_config" --pkglibdir 2>/dev/null || echo "$bin/../lib")/pg_stat_statements.so" ]]; then
    options+=" -c shared_preload_libraries=pg_stat_statements"
  fi
  as_owner "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 -o "$options" start >/dev/null \
    || { log "failed to start; see $data/server.log"; tail -20 "$data/server.log" >&2; exit 1; }
  ensure_db
  log "ready: $(url)"
}

ensure_db() {
  local bin
  bin=$(bindir)
  if ! "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -Atqc \
      "select 1 from pg_database where datname = '$db'" postgres | grep -q 1; then
    "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres "$db"
  fi
}

stop() {
  if ! running; then log "not running"; return; fi
  local bin
  bin=$(bindir)
  as_owner "$bin/pg_ctl" -D "$(datadir)" -m fast -w stop >/dev/null
  log "stopped"
}

status() {
  if ! running; then echo "postgres: stopped"; return 3; fi
  local fsync
  fsync=$("$(bindir)/psql" -h 127.0.0.1 -p "$port" -U postgres -Atqc "show fsync" postgres 2>/dev/null || echo "?")
  echo "postgres: running on 127.0.0.1:$port (fsync $fsync)"
}

url() { echo "postgresql://postgres@127.0.0.1:$port/$db"; }

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  url) url ;;
  *) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
