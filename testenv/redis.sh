#!/usr/bin/env bash
# redis.sh - a throwaway Redis for lsnpool's tests (shared token store experiments).
#
#   127.0.0.1:$REDIS_PORT (default 56379), no persistence, daemonized; pidfile, log and
#   working dir in $REDIS_DIR (default testenv/data/redis, or /tmp/lsnpool-redis-<uid> when
#   testenv/data does not exist).
#
# Usage: testenv/redis.sh up|down|status      (pgenv.sh up/down/status call it)
# As root, installs Debian's redis-server when it is missing.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REDIS_PORT="${REDIS_PORT:-56379}"
TIMEOUT=15   # seconds to wait for start/stop

log() { printf 'redis: %s\n' "$*" >&2; }
die() { printf 'redis: ERROR: %s\n' "$*" >&2; exit 1; }

resolve_dir() {
    if [[ -n "${REDIS_DIR:-}" ]]; then
        DIR="$REDIS_DIR"
    elif [[ -d "$SCRIPT_DIR/data" ]]; then
        DIR="$(cd "$SCRIPT_DIR/data" && pwd -P)/redis"
    else
        DIR="/tmp/lsnpool-redis-$(id -u)"
    fi
    PIDFILE="$DIR/redis-$REDIS_PORT.pid"
    LOGFILE="$DIR/redis-$REDIS_PORT.log"
}

have_redis() { command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; }

install_redis() {
    [[ "$(id -u)" == 0 ]] || die "redis-server not found; install it (sudo apt-get install -y redis-server)"
    command -v apt-get >/dev/null 2>&1 || die "redis-server not found and apt-get is unavailable"
    log "redis-server not found; installing Debian package 'redis-server'"
    local apt_log; apt_log="$(mktemp)"
    if ! DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q --no-install-recommends redis-server >"$apt_log" 2>&1; then
        log "install failed; running apt-get update and retrying"
        timeout 300 apt-get update -q >>"$apt_log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q --no-install-recommends redis-server >>"$apt_log" 2>&1 \
            || { tail -n 20 "$apt_log" >&2; die "apt-get install redis-server failed"; }
    fi
    rm -f "$apt_log"
    # Debian's own instance (6379), if the package started one, is not ours and does not
    # conflict with $REDIS_PORT: leave it.
}

ping() { [[ "$(timeout 3 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }

port_in_use() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

cmd_up() {
    have_redis || install_redis
    have_redis || die "still no redis-server after install"
    resolve_dir
    if ping; then return 0; fi
    port_in_use "$REDIS_PORT" && die "port 127.0.0.1:$REDIS_PORT is in use by something that does not answer PING"
    mkdir -p "$DIR"
    chmod 0700 "$DIR"
    log "starting redis-server on 127.0.0.1:$REDIS_PORT (log: $LOGFILE)"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes \
        --save '' --appendonly no --dir "$DIR" \
        --daemonize yes --pidfile "$PIDFILE" --logfile "$LOGFILE" >/dev/null \
        || die "redis-server failed to start; see $LOGFILE"
    local i
    for (( i = 0; i < TIMEOUT * 10; i++ )); do
        ping && return 0
        sleep 0.1
    done
    tail -n 20 "$LOGFILE" >&2 2>/dev/null || true
    die "redis-server does not answer PING on 127.0.0.1:$REDIS_PORT after ${TIMEOUT}s; see $LOGFILE"
}

cmd_down() {
    resolve_dir
    have_redis || return 0
    local pid="" i
    [[ -f "$PIDFILE" ]] && pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    if ping; then
        log "stopping redis-server on 127.0.0.1:$REDIS_PORT"
        timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    elif [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && [[ "$(cat /proc/"$pid"/comm 2>/dev/null)" == redis-server* ]]; then
        kill "$pid" 2>/dev/null || true
    fi
    for (( i = 0; i < TIMEOUT * 10; i++ )); do
        ping || { [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; } || break
        sleep 0.1
    done
    ping && die "redis-server on 127.0.0.1:$REDIS_PORT did not stop"
    rm -f "$PIDFILE"
}

cmd_status() {
    resolve_dir
    local state=down extra=""
    if have_redis && ping; then
        state=up
        extra="pid=$(cat "$PIDFILE" 2>/dev/null || echo '?') dir=$DIR"
    fi
    printf '%-8s %-6s %-5s %-8s %s\n' redis "$REDIS_PORT" "$state" - "$extra"
}

case "${1:-}" in
    up)     cmd_up ;;
    down)   cmd_down ;;
    status) cmd_status ;;
    *)      echo "usage: testenv/redis.sh up|down|status" >&2; exit 2 ;;
esac
