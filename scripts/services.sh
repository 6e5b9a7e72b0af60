#!/usr/bin/env bash
# Start the engines riskguard's tests run against, on 127.0.0.1, each in a data directory of
# its own: PostgreSQL 15 (5432), MariaDB (3306), Redis (6379), each with a database `test`.
# Idempotent: installs what is missing (Debian packages), leaves running servers alone, and
# waits until each answers. Exits non-zero naming the engine that did not come up.
set -euo pipefail

STATE_DIR=${RISKGUARD_SERVICES_DIR:-/tmp/riskguard-services}
TIMEOUT=${RISKGUARD_SERVICES_TIMEOUT:-90}
PG_PORT=5432; MY_PORT=3306; REDIS_PORT=6379
export PATH="$PATH:/usr/sbin:/sbin:/usr/lib/postgresql/15/bin"

log() { echo "[services] $*"; }
die() { echo "[services] ERROR: $*" >&2; exit 1; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

wait_for() {  # name, command...
  local name=$1; shift
  local deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if [ -n "${MARIADB_PID:-}" ] && [ "$name" = "mariadb (socket)" ] && ! kill -0 "$MARIADB_PID" 2>/dev/null; then
      die "mariadb exited during start-up (see $STATE_DIR/mariadb.log)"
    fi
    [ $SECONDS -lt $deadline ] || die "$name did not answer within ${TIMEOUT}s (see $STATE_DIR/*.log)"
    sleep 0.5
  done
  log "$name is up"
}

install_missing() {
  local pkgs=()
  command -v redis-server >/dev/null 2>&1 || pkgs+=(redis-server)
  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || pkgs+=(mariadb-server)
  command -v initdb >/dev/null 2>&1 || pkgs+=(postgresql)
  if [ ${#pkgs[@]} -gt 0 ]; then
    log "installing ${pkgs[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  fi
  # Debian's packages start their own instances on install; ours use separate data dirs.
  if command -v service >/dev/null 2>&1; then
    as_root service redis-server stop >/dev/null 2>&1 || true
    as_root service mariadb stop >/dev/null 2>&1 || true
  fi
}

start_postgres() {
  if pg_isready -h 127.0.0.1 -p $PG_PORT -q 2>/dev/null; then
    log "postgresql already running"
  else
    local dir=$STATE_DIR/pg
    mkdir -p "$STATE_DIR"; chmod 755 "$STATE_DIR"
    if [ ! -s "$dir/PG_VERSION" ]; then
      rm -rf "$dir"; mkdir -p "$dir"; chown postgres:postgres "$dir"
      su postgres -c "initdb -D '$dir' -U postgres --auth=trust -E UTF8 --locale=C.UTF-8" >"$STATE_DIR/pg-init.log" 2>&1 \
        || die "postgresql initdb failed (see $STATE_DIR/pg-init.log)"
    fi
    touch "$STATE_DIR/pg.log"; chown postgres:postgres "$STATE_DIR/pg.log"
    su postgres -c "pg_ctl -D '$dir' -l '$STATE_DIR/pg.log' -w -t $TIMEOUT \
      -o '-c listen_addresses=127.0.0.1 -p $PG_PORT -k /tmp -c max_connections=300 -c fsync=off' start" >/dev/null \
      || die "postgresql did not start (see $STATE_DIR/pg.log)"
  fi
  wait_for postgresql pg_isready -h 127.0.0.1 -p $PG_PORT -q
  psql -h 127.0.0.1 -p $PG_PORT -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" | grep -q 1 \
    || psql -h 127.0.0.1 -p $PG_PORT -U postgres -qc "CREATE DATABASE test" \
    || die "postgresql: cannot create database test"
}

my_tcp() { mariadb --protocol=tcp -h 127.0.0.1 -P $MY_PORT -uroot "$@"; }

start_mariadb() {
  if my_tcp -e "SELECT 1" >/dev/null 2>&1; then
    log "mariadb already running"
  else
    local dir=$STATE_DIR/mariadb sock=$STATE_DIR/mariadb/mysqld.sock
    mkdir -p "$STATE_DIR"
    if [ ! -d "$dir/mysql" ]; then
      rm -rf "$dir"; mkdir -p "$dir"; chown mysql:mysql "$dir"
      mariadb-install-db --user=mysql --datadir="$dir" --auth-root-authentication-method=socket \
        --skip-test-db >"$STATE_DIR/mariadb-init.log" 2>&1 \
        || die "mariadb-install-db failed (see $STATE_DIR/mariadb-init.log)"
    fi
    touch "$STATE_DIR/mariadb.log"; chown mysql:mysql "$STATE_DIR/mariadb.log"
    chmod 755 "$STATE_DIR"
    setsid mariadbd --user=mysql --datadir="$dir" --socket="$sock" --port=$MY_PORT \
      --bind-address=127.0.0.1 --pid-file="$dir/mysqld.pid" --log-error="$STATE_DIR/mariadb.log" \
      --max-connections=500 --innodb-flush-log-at-trx-commit=2 --skip-name-resolve \
      </dev/null >/dev/null 2>&1 &
    MARIADB_PID=$!
    wait_for "mariadb (socket)" mariadb --socket="$sock" -uroot -e "SELECT 1"
    # Root uses socket auth on a fresh install; the tests reach it over TCP with no password.
    mariadb --socket="$sock" -uroot -e \
      "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('');
       CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
       GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; FLUSH PRIVILEGES;" \
      || die "mariadb: cannot enable password-less TCP login for root"
  fi
  wait_for mariadb my_tcp -e "SELECT 1"
  my_tcp -e "CREATE DATABASE IF NOT EXISTS test CHARACTER SET utf8mb4" || die "mariadb: cannot create database test"
}

start_redis() {
  if redis-cli -h 127.0.0.1 -p $REDIS_PORT ping 2>/dev/null | grep -q PONG; then
    log "redis already running"
  else
    mkdir -p "$STATE_DIR/redis"
    redis-server --bind 127.0.0.1 --port $REDIS_PORT --dir "$STATE_DIR/redis" --save '' \
      --appendonly no --daemonize yes --logfile "$STATE_DIR/redis.log" \
      || die "redis did not start (see $STATE_DIR/redis.log)"
  fi
  wait_for redis sh -c "redis-cli -h 127.0.0.1 -p $REDIS_PORT ping | grep -q PONG"
}

install_missing
start_postgres
start_mariadb
start_redis
log "all engines answer: postgresql :$PG_PORT, mariadb :$MY_PORT, redis :$REDIS_PORT"
