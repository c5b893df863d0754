#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests and local runs, from Debian's postgresql package.
# Usage: deploy/local/postgres.sh start|stop|status|url   (PDO_PG_DIR, PDO_PG_PORT override the defaults)
set -euo pipefail

PG_DIR=${PDO_PG_DIR:-/tmp/pdo-postgres}
PG_PORT=${PDO_PG_PORT:-55432}
PG_BIN=${PDO_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
URL="postgresql+psycopg://postgres@127.0.0.1:${PG_PORT}/postgres"

as_postgres() {
  # The server refuses to run as root; Debian's package creates the postgres user for it.
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  [[ -x "$PG_BIN/pg_ctl" ]] || { echo "PostgreSQL not installed: run deploy/setup.sh (apt-get install postgresql)" >&2; exit 1; }
  if as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR" status >/dev/null 2>&1; then
    echo "postgres already running on port $PG_PORT"
    return
  fi
  if [[ ! -f "$PG_DIR/PG_VERSION" ]]; then
    mkdir -p "$PG_DIR"
    [[ $(id -u) -eq 0 ]] && chown postgres: "$PG_DIR"
    as_postgres "$PG_BIN/initdb" -D "$PG_DIR" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR" -l "$PG_DIR/server.log" -w -t 30 \
    -o "-p $PG_PORT -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
  echo "postgres running on port $PG_PORT ($PG_DIR)"
}

stop() {
  if as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR" status >/dev/null 2>&1; then
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR" -m fast -w stop >/dev/null
    echo "postgres stopped"
  fi
}

status() {
  as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR" status >/dev/null 2>&1
}

case "${1:-}" in
  start) start ;;
  status) status ;;
  stop) stop ;;
  url) echo "$URL" ;;
  *) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
