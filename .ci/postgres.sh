#!/usr/bin/env bash
# A throw-away PostgreSQL server on a loopback port, for the LaminDB tests (tests/lamin).
#
#   .ci/postgres.sh start   # install Debian's postgresql if missing, initdb, start, create the database
#   .ci/postgres.sh url     # print the connection URL (export it as SPORA_SD_TEST_PG_URL)
#   .ci/postgres.sh stop    # stop the server and delete its data directory
#
# Settings (environment): SPORA_SD_PG_PORT (default 54329), SPORA_SD_PG_DIR (default
# /tmp/spora-sd-pg-<port>), SPORA_SD_PG_DB (default spora_test). The server listens on 127.0.0.1
# only and trusts local connections: it is for tests, never for data.
set -euo pipefail

PORT="${SPORA_SD_PG_PORT:-54329}"
DIR="${SPORA_SD_PG_DIR:-/tmp/spora-sd-pg-${PORT}}"
DB="${SPORA_SD_PG_DB:-spora_test}"
PGUSER_NAME=postgres

log() { echo "postgres.sh: $*" >&2; }

find_bindir() {
    # Debian keeps the server binaries (initdb, pg_ctl, postgres) outside PATH
    local d
    for d in /usr/lib/postgresql/*/bin; do
        if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then
            echo "$d"
            return 0
        fi
    done
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return 0
    fi
    return 1
}

ensure_installed() {
    if find_bindir >/dev/null; then
        return 0
    fi
    log "PostgreSQL server binaries not found; installing Debian's postgresql"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends postgresql >/dev/null 2>&1; then
        # the package lists may be missing or stale on a fresh machine: refresh only when needed
        apt-get update >/dev/null
        apt-get install -y --no-install-recommends postgresql >/dev/null
    fi
    find_bindir >/dev/null || { log "installed postgresql but found no initdb/pg_ctl"; exit 1; }
}

# initdb and postgres refuse to run as root; as root, run them as the 'postgres' system user
as_pg() {
    if [[ "$(id -u)" == "0" ]]; then
        runuser -u "$PGUSER_NAME" -- "$@"
    else
        "$@"
    fi
}

db_user() {
    if [[ "$(id -u)" == "0" ]]; then echo "$PGUSER_NAME"; else id -un; fi
}

url() {
    echo "postgresql://$(db_user)@127.0.0.1:${PORT}/${DB}"
}

is_running() {
    local bindir
    bindir="$(find_bindir)" || return 1
    [[ -f "$DIR/data/postmaster.pid" ]] && as_pg "$bindir/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1
}

start() {
    ensure_installed
    local bindir
    bindir="$(find_bindir)"
    if is_running; then
        log "already running on 127.0.0.1:${PORT}"
        url
        return 0
    fi
    rm -rf "$DIR"
    mkdir -p "$DIR"
    if [[ "$(id -u)" == "0" ]]; then chown "$PGUSER_NAME" "$DIR"; fi
    as_pg "$bindir/initdb" -D "$DIR/data" --auth=trust --encoding=UTF8 --no-locale -U "$(db_user)" >"$DIR/initdb.log" 2>&1 \
        || { cat "$DIR/initdb.log" >&2; exit 1; }
    # loopback only; the socket lives in our folder (no write access to /var/run/postgresql needed);
    # fsync off: test data need no durability and tests run faster without it
    as_pg "$bindir/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p ${PORT} -k ${DIR} -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null || { cat "$DIR/server.log" >&2; exit 1; }
    as_pg "$bindir/createdb" -h 127.0.0.1 -p "$PORT" -U "$(db_user)" "$DB"
    log "running on 127.0.0.1:${PORT}, data in ${DIR}"
    url
}

stop() {
    local bindir
    if bindir="$(find_bindir)" && [[ -f "$DIR/data/postmaster.pid" ]]; then
        as_pg "$bindir/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$DIR"
    log "stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    url) url ;;
    status) if is_running; then echo running; else echo stopped; exit 1; fi ;;
    *) echo "usage: $0 start|stop|url|status" >&2; exit 2 ;;
esac
