#!/usr/bin/env bash
# pgenv.sh - local PostgreSQL test topology for lsnpool.
#
#   primary  127.0.0.1:55432
#   r1       127.0.0.1:55433   streaming replica, no apply delay
#   r2       127.0.0.1:55434   streaming replica, recovery_min_apply_delay=$R2_APPLY_DELAY
#
# Usage: testenv/pgenv.sh up|down|status|delay <duration>|psql <node> [args]|clean
# See testenv/README.md.
set -euo pipefail

# ---------------------------------------------------------------- constants
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
# PGENV_DATA and PGENV_PORT_BASE run a separate throwaway copy of the topology (e.g. to try
# changes to this script without touching the shared one): its own data dir, and ports
# BASE, BASE+1, BASE+2 (Redis: BASE+947, so 56379 for the default 55432).
DATA_LINK="${PGENV_DATA:-$SCRIPT_DIR/data}"
NODES=(primary r1 r2)
PORT_BASE="${PGENV_PORT_BASE:-55432}"
declare -A PORT=([primary]=$PORT_BASE [r1]=$((PORT_BASE + 1)) [r2]=$((PORT_BASE + 2)))
export REDIS_PORT="${REDIS_PORT:-$((PORT_BASE + 947))}"
SUPERUSER=postgres
SUPERPASS=postgres
OS_PG_USER="${PGENV_OS_USER:-postgres}"   # system user that runs the servers when we are root
START_TIMEOUT="${PGENV_TIMEOUT:-60}"      # seconds

# Connection settings from the caller's environment must not redirect our own queries.
unset PGHOSTADDR PGSERVICE PGSERVICEFILE PGOPTIONS PGTARGETSESSIONATTRS PGREQUIRESSL PGSSLMODE PGCHANNELBINDING || true

IS_ROOT=0
[[ "$(id -u)" == 0 ]] && IS_ROOT=1

# ---------------------------------------------------------------- helpers
log()  { printf 'pgenv: %s\n' "$*" >&2; }
die()  { printf 'pgenv: ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
    cat <<'EOF'
usage: testenv/pgenv.sh <command>

  up                 create (if needed) and start primary, r1, r2; wait until streaming
                     (r2's apply delay is set from $R2_APPLY_DELAY when given; unchanged otherwise, 0 on creation)
  down               stop all nodes (fast mode)
  status             one line per node: name port up/down role lsn
  delay <duration>   set r2's recovery_min_apply_delay at runtime (e.g. 0, 300ms, 2s)
  psql <node> [args] psql to primary|r1|r2 as postgres (unix socket, default db postgres)
  promote <node>     pg_ctl promote a replica (r1|r2) and wait until it accepts writes
  stop <node> [mode] pg_ctl stop one node (mode: fast (default), immediate, smart)
  start <node>       start one stopped node as its data directory says (an old primary
                     comes back as a primary); use these three on a throwaway topology only
  clean              down, then remove all data
EOF
}

# Run a command as the user that owns the clusters (postgres when we are root).
as_pg() {
    if (( IS_ROOT )); then
        (cd / && runuser -u "$OS_PG_USER" -- "$@")
    else
        "$@"
    fi
}

# ---------------------------------------------------------------- binaries
find_bindir() {
    local cand d
    local -a cands=()
    [[ -n "${PG_BINDIR:-}" ]] && cands+=("$PG_BINDIR")
    if command -v pg_config >/dev/null 2>&1; then
        d="$(pg_config --bindir 2>/dev/null || true)"
        [[ -n "$d" ]] && cands+=("$d")
    fi
    while IFS= read -r d; do cands+=("$d"); done < <(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5Vr)
    cands+=(/usr/local/pgsql/bin)
    if command -v initdb >/dev/null 2>&1; then cands+=("$(dirname "$(command -v initdb)")"); fi
    for cand in "${cands[@]}"; do
        if [[ -x "$cand/initdb" && -x "$cand/postgres" && -x "$cand/pg_ctl" && -x "$cand/pg_basebackup" && -x "$cand/psql" ]]; then
            printf '%s\n' "$cand"
            return 0
        fi
    done
    return 1
}

install_postgres() {
    (( IS_ROOT )) || die "PostgreSQL server binaries not found (looked at \$PG_BINDIR, pg_config --bindir, /usr/lib/postgresql/*/bin).
  Install them, e.g.: sudo apt-get install -y postgresql   (or set PG_BINDIR=/path/to/bin)"
    command -v apt-get >/dev/null 2>&1 || die "PostgreSQL server binaries not found and apt-get is unavailable; install PostgreSQL or set PG_BINDIR"
    log "PostgreSQL server binaries not found; installing Debian package 'postgresql'"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
    # Debian may have created and started its default cluster on 5432; we don't use it.
    if command -v pg_lsclusters >/dev/null 2>&1; then
        local ver name
        while read -r ver name _; do
            [[ "$ver" =~ ^[0-9]+$ ]] || continue
            pg_ctlcluster "$ver" "$name" stop >/dev/null 2>&1 || true
        done < <(pg_lsclusters --no-header 2>/dev/null || true)
    fi
}

# need_bindir [install]: find the server binaries; with install=1 install them if missing.
need_bindir() {
    [[ -n "${BINDIR:-}" ]] && return 0
    BINDIR="$(find_bindir)" && return 0
    BINDIR=""
    [[ "${1:-0}" == 1 ]] || return 1
    install_postgres
    BINDIR="$(find_bindir)" || die "still no PostgreSQL server binaries after install"
}

# ---------------------------------------------------------------- data location
# Sets DATA (real path of the data root) and SOCKDIR. With create=1 the data root is
# created (as root: owned by postgres, under /tmp if postgres cannot reach testenv/).
resolve_data() {
    local create="${1:-0}"
    DATA=""
    if [[ -L "$DATA_LINK" ]]; then
        DATA="$(readlink "$DATA_LINK")"
        if [[ ! -d "$DATA" ]]; then
            if (( create )); then
                make_data_dir "$DATA"
            fi
        fi
    elif [[ -d "$DATA_LINK" ]]; then
        DATA="$DATA_LINK"
    elif [[ -e "$DATA_LINK" ]]; then
        die "$DATA_LINK exists but is neither a directory nor a symlink"
    elif (( create )); then
        if (( IS_ROOT )); then
            getent passwd "$OS_PG_USER" >/dev/null || die "running as root but system user '$OS_PG_USER' does not exist (set PGENV_OS_USER)"
            if runuser -u "$OS_PG_USER" -- test -x "$SCRIPT_DIR" 2>/dev/null && make_data_dir "$DATA_LINK" 2>/dev/null \
               && runuser -u "$OS_PG_USER" -- test -w "$DATA_LINK" 2>/dev/null; then
                DATA="$DATA_LINK"
            else
                rmdir "$DATA_LINK" 2>/dev/null || true
                DATA="/tmp/lsnpool-testenv-$(id -u)"
                log "user '$OS_PG_USER' cannot use $SCRIPT_DIR; keeping data in $DATA (symlinked from $DATA_LINK)"
                make_data_dir "$DATA"
                ln -s "$DATA" "$DATA_LINK"
            fi
        else
            make_data_dir "$DATA_LINK"
            DATA="$DATA_LINK"
        fi
    fi
    if [[ -n "$DATA" && -d "$DATA" ]]; then
        # A tree created by root (owned by postgres) cannot be driven by another normal user.
        if (( ! IS_ROOT )); then
            local owner; owner="$(stat -c %U "$DATA")"
            [[ "$owner" == "$(id -un)" ]] || die "data dir $DATA is owned by '$owner'; run this as root (or 'make clean' as root first)"
        fi
        SOCKDIR="$DATA/run"
        # unix socket paths are limited to ~107 bytes
        if (( ${#SOCKDIR} + 16 > 100 )); then
            SOCKDIR="/tmp/lsnpool-sock-$(id -u)"
            (( create )) && make_owned_dir "$SOCKDIR"
        fi
    else
        SOCKDIR=""
    fi
}

make_owned_dir() {
    local d="$1"
    mkdir -p "$d"
    if (( IS_ROOT )); then
        local owner; owner="$(stat -c %U "$d")"
        [[ "$owner" == root || "$owner" == "$OS_PG_USER" ]] || die "$d is owned by '$owner'; refusing to use it"
        chown "$OS_PG_USER:" "$d"
    fi
    chmod 0755 "$d"
}

make_data_dir() {
    local d="$1"
    make_owned_dir "$d"
    make_owned_dir "$d/run"
    make_owned_dir "$d/log"
}

node_dir() { printf '%s/%s\n' "$DATA" "$1"; }
node_log() { printf '%s/log/%s.log\n' "$DATA" "$1"; }

# ---------------------------------------------------------------- queries
# q <node> [db] <sql>  -> unaligned, tuples only
q() {
    local node="$1"; shift
    local db=postgres
    if (( $# > 1 )); then db="$1"; shift; fi
    "$BINDIR/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$SOCKDIR" -p "${PORT[$node]}" -U "$SUPERUSER" -d "$db" -c "$1"
}

is_ready() {
    [[ -n "${SOCKDIR:-}" ]] || return 1
    "$BINDIR/pg_isready" -q -h "$SOCKDIR" -p "${PORT[$1]}" -U "$SUPERUSER" -d postgres >/dev/null 2>&1
}

# pg_ctl status: 0 = running, 3 = not running, 4 = no data dir
is_running() {
    local d; d="$(node_dir "$1")"
    [[ -f "$d/PG_VERSION" ]] || return 1
    as_pg "$BINDIR/pg_ctl" -D "$d" status >/dev/null 2>&1
}

port_in_use() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

port_owner() {
    local port="$1" out=""
    if command -v ss >/dev/null 2>&1; then
        out="$(ss -Hltnp "sport = :$port" 2>/dev/null | sed -n 's/.*users:((\(.*\)))/\1/p' | head -n1)"
    fi
    if [[ -z "$out" ]] && command -v lsof >/dev/null 2>&1; then
        out="$(lsof -nP -iTCP:"$port" -sTCP:LISTEN 2>/dev/null | awk 'NR==2{print $1" pid="$2" user="$3}')"
    fi
    printf '%s\n' "${out:-unknown process (try: ss -ltnp 'sport = :$port')}"
}

# ---------------------------------------------------------------- configuration
write_common_conf() {   # appended to postgresql.conf of the primary (copied to replicas by pg_basebackup)
    cat <<EOF

# ---- lsnpool testenv (generated by testenv/pgenv.sh) ----
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SOCKDIR'
max_connections = 300
shared_buffers = 128MB
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
hot_standby_feedback = on
wal_receiver_status_interval = 1s
fsync = off
full_page_writes = off
synchronous_commit = on
password_encryption = 'scram-sha-256'
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
# per-node settings (port, cluster_name); rewritten for each node
include_if_exists = 'node.conf'
# TLS (ssl = on with testenv's own CA); written by ensure_node_tls
include_if_exists = 'tls.conf'
EOF
}

write_node_conf() {
    local node="$1" d="$2"
    as_pg tee "$d/node.conf" >/dev/null <<EOF
# generated by testenv/pgenv.sh for node $node
port = ${PORT[$node]}
cluster_name = 'lsnpool-$node'
EOF
}

write_hba() {
    as_pg tee "$1/pg_hba.conf" >/dev/null <<'EOF'
# generated by testenv/pgenv.sh
# TYPE  DATABASE        USER            ADDRESS                 METHOD
local   all             all                                     trust
local   replication     all                                     trust
host    all             md5user         127.0.0.1/32            md5
host    all             all             127.0.0.1/32            scram-sha-256
host    replication     all             127.0.0.1/32            scram-sha-256
EOF
}

# ---------------------------------------------------------------- TLS
# A CA and a server certificate for localhost / 127.0.0.1, made once into $DATA/tls:
#   ca.crt ca.key server.crt server.key   (keys 0600, owned by the servers' OS user)
# The nodes run with ssl = on using them; plain connections keep working (ssl = on only
# allows TLS, and the pg_hba `host` lines match both).
TLS_DAYS=3650

ensure_tls() {
    TLSDIR="$DATA/tls"
    if [[ -s "$TLSDIR/ca.crt" && -s "$TLSDIR/server.crt" && -s "$TLSDIR/server.key" ]]; then
        return 0
    fi
    command -v openssl >/dev/null 2>&1 || { (( IS_ROOT )) && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssl >/dev/null; }
    command -v openssl >/dev/null 2>&1 || die "openssl not found; install it (apt-get install openssl)"
    log "generating a test CA and server certificate (localhost, 127.0.0.1) in $TLSDIR"
    local tmp
    tmp="$(mktemp -d "$DATA/.tls.XXXXXX")"
    (
        set -e
        cd "$tmp"
        openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$TLS_DAYS" \
            -keyout ca.key -out ca.crt -subj "/CN=lsnpool testenv CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
        openssl req -newkey rsa:2048 -nodes -sha256 -keyout server.key -out server.csr -subj "/CN=localhost"
        printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >server.ext
        openssl x509 -req -sha256 -days "$TLS_DAYS" -in server.csr -CA ca.crt -CAkey ca.key \
            -set_serial "0x$(openssl rand -hex 8)" -extfile server.ext -out server.crt
        openssl verify -CAfile ca.crt server.crt
        rm -f server.csr server.ext
        chmod 0600 ca.key server.key
        chmod 0644 ca.crt server.crt
        chmod 0755 .
    ) >"$DATA/log/tls.log" 2>&1 || { rm -rf "$tmp"; die "certificate generation failed; see $DATA/log/tls.log"; }
    (( IS_ROOT )) && chown -R "$OS_PG_USER:" "$tmp"
    # atomic: a concurrent run that got there first wins, ours is dropped
    if ! mv -T "$tmp" "$TLSDIR" 2>/dev/null; then
        rm -rf "$tmp"
    fi
    [[ -s "$TLSDIR/server.key" ]] || die "no $TLSDIR/server.key after generation"
}

write_tls_conf() {
    cat <<EOF
# generated by testenv/pgenv.sh: TLS with testenv's CA ($TLSDIR)
ssl = on
ssl_cert_file = '$TLSDIR/server.crt'
ssl_key_file = '$TLSDIR/server.key'
EOF
}

# ensure_node_tls <data dir>: tls.conf present, and included by postgresql.conf (clusters
# created before TLS support get the include appended). Returns 0 when it changed anything.
ensure_node_tls() {
    local d="$1" changed=1 want
    want="$(write_tls_conf)"
    if [[ "$(as_pg cat "$d/tls.conf" 2>/dev/null)" != "$want" ]]; then
        printf '%s\n' "$want" | as_pg tee "$d/tls.conf" >/dev/null
        changed=0
    fi
    if ! as_pg grep -q "^include_if_exists = 'tls.conf'" "$d/postgresql.conf"; then
        printf '%s\n' "# TLS (ssl = on with testenv's own CA); written by testenv/pgenv.sh" \
            "include_if_exists = 'tls.conf'" | as_pg tee -a "$d/postgresql.conf" >/dev/null
        changed=0
    fi
    return $changed
}

# A running node with ssl off (created before TLS support) gets it by a reload: no restart.
ensure_ssl_on() {
    local node="$1" i
    [[ "$(q "$node" "SHOW ssl")" == on ]] && return 0
    log "$node: enabling ssl (reload)"
    q "$node" "SELECT pg_reload_conf()" >/dev/null
    for (( i = 0; i < 50; i++ )); do
        [[ "$(q "$node" "SHOW ssl")" == on ]] && return 0
        sleep 0.1
    done
    die "$node: ssl is still off after a reload; see $(node_log "$node")"
}

# ---------------------------------------------------------------- node lifecycle
start_node() {
    local node="$1" d logf port
    d="$(node_dir "$node")"; logf="$(node_log "$node")"; port="${PORT[$node]}"
    if is_running "$node"; then
        wait_ready "$node"
        return 0
    fi
    if port_in_use "$port"; then
        die "cannot start $node: port 127.0.0.1:$port is already in use by $(port_owner "$port")
  (it is not our $node cluster at $d). Stop it, or run 'testenv/pgenv.sh down' if it is a stale copy of this environment."
    fi
    log "starting $node on 127.0.0.1:$port (log: $logf)"
    if ! as_pg "$BINDIR/pg_ctl" -D "$d" -l "$logf" -w -t "$START_TIMEOUT" start >/dev/null; then
        {
            echo "pgenv: ERROR: $node failed to start on 127.0.0.1:$port"
            echo "pgenv:   data dir: $d"
            echo "pgenv:   log file: $logf  (last lines below)"
            tail -n 25 "$logf" 2>/dev/null | sed 's/^/    | /'
            if port_in_use "$port"; then echo "pgenv:   port $port is in use by: $(port_owner "$port")"; fi
        } >&2
        exit 1
    fi
    wait_ready "$node"
}

wait_ready() {
    local node="$1" i
    for (( i = 0; i < START_TIMEOUT * 5; i++ )); do
        is_ready "$node" && return 0
        sleep 0.2
    done
    die "$node (port ${PORT[$node]}) is running but does not accept connections after ${START_TIMEOUT}s; see $(node_log "$node")"
}

stop_node() {
    local node="$1" d
    d="$(node_dir "$node")"
    [[ -f "$d/PG_VERSION" ]] || return 0
    if is_running "$node"; then
        log "stopping $node"
        as_pg "$BINDIR/pg_ctl" -D "$d" -m fast -w -t "$START_TIMEOUT" stop >/dev/null \
            || die "failed to stop $node; see $(node_log "$node")"
    fi
}

create_primary() {
    local d tmp pwfile
    d="$(node_dir primary)"; tmp="$d.tmp"
    [[ -f "$d/PG_VERSION" ]] && return 0
    [[ -e "$d" ]] && die "$d exists but is not a PostgreSQL data directory; run 'testenv/pgenv.sh clean'"
    log "initializing primary in $d"
    as_pg rm -rf "$tmp"
    pwfile="$DATA/.pwfile"
    printf '%s\n' "$SUPERPASS" | as_pg tee "$pwfile" >/dev/null
    as_pg chmod 600 "$pwfile"
    if ! as_pg "$BINDIR/initdb" -D "$tmp" -U "$SUPERUSER" --pwfile="$pwfile" \
            --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C >"$(node_log initdb)" 2>&1; then
        as_pg rm -f "$pwfile"
        die "initdb failed; see $(node_log initdb)"
    fi
    as_pg rm -f "$pwfile"
    write_common_conf | as_pg tee -a "$tmp/postgresql.conf" >/dev/null
    write_hba "$tmp"
    write_node_conf primary "$tmp"
    ensure_node_tls "$tmp" || true
    as_pg mv "$tmp" "$d"
}

bootstrap_primary() {
    local n
    n="$(q primary "SELECT (SELECT count(*) FROM pg_roles WHERE rolname IN ('app','md5user'))
                         + (SELECT count(*) FROM pg_database WHERE datname = 'appdb')")"
    [[ "$n" == 3 ]] && return 0
    log "creating roles app, md5user and database appdb"
    "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCKDIR" -p "${PORT[primary]}" -U "$SUPERUSER" -d postgres <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app') THEN
    CREATE ROLE app LOGIN PASSWORD 'app';
  END IF;
END $$;
SET password_encryption = 'md5';
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'md5user') THEN
    CREATE ROLE md5user LOGIN PASSWORD 'md5user';
  END IF;
END $$;
RESET password_encryption;
SELECT 'CREATE DATABASE appdb OWNER postgres' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'appdb')
\gexec
GRANT ALL ON DATABASE appdb TO app;
\connect appdb
GRANT ALL ON SCHEMA public TO app;
SQL
}

create_replica() {
    local node="$1" d tmp
    d="$(node_dir "$node")"; tmp="$d.tmp"
    [[ -f "$d/PG_VERSION" ]] && return 0
    [[ -e "$d" ]] && die "$d exists but is not a PostgreSQL data directory; run 'testenv/pgenv.sh clean'"
    log "creating replica $node from primary (pg_basebackup, slot $node)"
    as_pg rm -rf "$tmp"
    # A slot left over from an earlier replica of the same name would make -C fail.
    q primary "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
               WHERE slot_name = '$node' AND NOT active" >/dev/null
    if ! as_pg "$BINDIR/pg_basebackup" -D "$tmp" \
            -d "host=127.0.0.1 port=${PORT[primary]} user=$SUPERUSER password=$SUPERPASS application_name=$node" \
            -R -X stream -C -S "$node" -c fast >"$(node_log "$node-basebackup")" 2>&1; then
        die "pg_basebackup for $node failed; see $(node_log "$node-basebackup")"
    fi
    write_node_conf "$node" "$tmp"
    as_pg mv "$tmp" "$d"
}

wait_streaming() {
    local i n=0
    for (( i = 0; i < START_TIMEOUT * 5; i++ )); do
        n="$(q primary "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND application_name IN ('r1','r2')" 2>/dev/null || echo 0)"
        [[ "$n" == 2 ]] && return 0
        sleep 0.2
    done
    q primary "SELECT application_name, state, client_addr FROM pg_stat_replication" >&2 || true
    die "replicas are not both streaming after ${START_TIMEOUT}s ($n/2); see logs in $DATA/log/"
}

# ---------------------------------------------------------------- apply delay
# duration -> milliseconds, validated by the server (statement_timeout has the same unit/syntax)
delay_ms() {
    local v="$1"
    "$BINDIR/psql" -X -q -A -t -v ON_ERROR_STOP=1 -v "d=$v" -h "$SOCKDIR" -p "${PORT[r2]}" -U "$SUPERUSER" -d postgres 2>&1 <<'SQL'
SET statement_timeout = :'d';
SELECT setting FROM pg_settings WHERE name = 'statement_timeout';
SQL
}

set_r2_delay() {
    local want="$1" want_ms cur_ms i
    is_ready r2 || die "r2 is not running; run 'testenv/pgenv.sh up' first"
    want_ms="$(delay_ms "$want")" || die "invalid duration '$want' (examples: 0, 300ms, 2s): $want_ms"
    cur_ms="$(q r2 "SELECT setting FROM pg_settings WHERE name = 'recovery_min_apply_delay'")"
    [[ "$cur_ms" == "$want_ms" ]] && return 0
    log "r2: recovery_min_apply_delay ${cur_ms}ms -> ${want_ms}ms"
    "$BINDIR/psql" -X -q -A -t -v ON_ERROR_STOP=1 -v "d=$want" -h "$SOCKDIR" -p "${PORT[r2]}" -U "$SUPERUSER" -d postgres >/dev/null <<'SQL'
ALTER SYSTEM SET recovery_min_apply_delay = :'d';
SELECT pg_reload_conf();
SQL
    for (( i = 0; i < 50; i++ )); do
        cur_ms="$(q r2 "SELECT setting FROM pg_settings WHERE name = 'recovery_min_apply_delay'")"
        [[ "$cur_ms" == "$want_ms" ]] && return 0
        sleep 0.1
    done
    die "r2 did not pick up recovery_min_apply_delay=$want (still ${cur_ms}ms)"
}

# ---------------------------------------------------------------- commands
cmd_up() {
    # Only an explicit R2_APPLY_DELAY changes r2's delay: tests call `up` while other tests
    # hold r2 at a delay they set, and a plain `up` must not undo it.
    local delay="${R2_APPLY_DELAY:-}"
    local node
    need_bindir 1
    resolve_data 1
    ensure_tls
    create_primary
    ensure_node_tls "$(node_dir primary)" || true
    start_node primary
    ensure_ssl_on primary
    bootstrap_primary
    create_replica r1
    create_replica r2
    for node in r1 r2; do
        ensure_node_tls "$(node_dir "$node")" || true
        start_node "$node"
        ensure_ssl_on "$node"
    done
    if [[ -n "$delay" ]]; then set_r2_delay "$delay"; fi
    wait_streaming
    REDIS_DIR="$DATA/redis" "$SCRIPT_DIR/redis.sh" up
    cmd_status
}

cmd_down() {
    need_bindir || { log "no PostgreSQL binaries found; nothing of ours can be running"; return 0; }
    resolve_data 0
    [[ -n "$DATA" && -d "$DATA" ]] || { log "nothing to stop (no data dir)"; return 0; }
    REDIS_DIR="$DATA/redis" "$SCRIPT_DIR/redis.sh" down || true
    local node
    for node in r2 r1 primary; do stop_node "$node"; done
}

cmd_status() {
    local have_bin=1 node port state role extra
    need_bindir || have_bin=0
    resolve_data 0
    for node in "${NODES[@]}"; do
        port="${PORT[$node]}"
        state=down; role=-; extra=
        if (( ! have_bin )); then
            :
        elif [[ -n "$DATA" ]] && is_ready "$node"; then
            state=up
            if [[ "$(q "$node" "SELECT pg_is_in_recovery()")" == t ]]; then
                role=replica
                extra="replay_lsn=$(q "$node" "SELECT coalesce(pg_last_wal_replay_lsn()::text, '-')")"
                [[ "$node" == r2 ]] && extra+=" apply_delay=$(q "$node" "SHOW recovery_min_apply_delay")"
            else
                role=primary
                extra="current_lsn=$(q "$node" "SELECT pg_current_wal_lsn()")"
            fi
        elif [[ -n "$DATA" && -f "$(node_dir "$node")/PG_VERSION" ]] && is_running "$node"; then
            state=starting
        fi
        [[ "$state" == up ]] && extra+=" ssl=$(q "$node" "SHOW ssl")"
        printf '%-8s %-6s %-5s %-8s %s\n' "$node" "$port" "$state" "$role" "$extra"
    done
    if [[ -n "$DATA" ]]; then
        REDIS_DIR="$DATA/redis" "$SCRIPT_DIR/redis.sh" status
    else
        "$SCRIPT_DIR/redis.sh" status
    fi
    [[ -n "$DATA" && -s "$DATA/tls/ca.crt" ]] && printf 'tls      CA %s, server %s (localhost, 127.0.0.1)\n' "$DATA/tls/ca.crt" "$DATA/tls/server.crt"
    return 0
}

cmd_delay() {
    (( $# == 1 )) || die "usage: testenv/pgenv.sh delay <duration>   (e.g. 0, 300ms, 2s)"
    need_bindir || die "PostgreSQL binaries not found; run 'testenv/pgenv.sh up' first"
    resolve_data 0
    [[ -n "$DATA" ]] || die "no test environment; run 'testenv/pgenv.sh up' first"
    set_r2_delay "$1"
    printf 'r2 recovery_min_apply_delay = %s\n' "$(q r2 "SHOW recovery_min_apply_delay")"
}

cmd_psql() {
    (( $# >= 1 )) || die "usage: testenv/pgenv.sh psql primary|r1|r2 [psql args]"
    local node="$1"; shift
    [[ -n "${PORT[$node]:-}" ]] || die "unknown node '$node' (expected primary, r1 or r2)"
    need_bindir || die "PostgreSQL binaries not found; run 'testenv/pgenv.sh up' first"
    resolve_data 0
    [[ -n "$DATA" ]] || die "no test environment; run 'testenv/pgenv.sh up' first"
    PGHOST="$SOCKDIR" PGPORT="${PORT[$node]}" PGUSER="$SUPERUSER" PGDATABASE=postgres \
        exec "$BINDIR/psql" "$@"
}

node_arg() {
    [[ -n "${1:-}" && -n "${PORT[$1]:-}" ]] || die "unknown node '${1:-}' (expected primary, r1 or r2)"
    need_bindir || die "PostgreSQL binaries not found; run 'testenv/pgenv.sh up' first"
    resolve_data 0
    [[ -n "$DATA" ]] || die "no test environment; run 'testenv/pgenv.sh up' first"
}

cmd_promote() {
    (( $# == 1 )) || die "usage: testenv/pgenv.sh promote r1|r2"
    node_arg "$1"
    log "promoting $1"
    as_pg "$BINDIR/pg_ctl" -D "$(node_dir "$1")" -w -t "$START_TIMEOUT" promote >/dev/null \
        || die "failed to promote $1; see $(node_log "$1")"
}

cmd_stop() {
    (( $# >= 1 && $# <= 2 )) || die "usage: testenv/pgenv.sh stop primary|r1|r2 [fast|immediate|smart]"
    node_arg "$1"
    local mode="${2:-fast}"
    case "$mode" in fast|immediate|smart) ;; *) die "unknown stop mode '$mode'";; esac
    is_running "$1" || { log "$1 is not running"; return 0; }
    log "stopping $1 ($mode)"
    as_pg "$BINDIR/pg_ctl" -D "$(node_dir "$1")" -m "$mode" -w -t "$START_TIMEOUT" stop >/dev/null \
        || die "failed to stop $1; see $(node_log "$1")"
}

cmd_start() {
    (( $# == 1 )) || die "usage: testenv/pgenv.sh start primary|r1|r2"
    node_arg "$1"
    start_node "$1"
}

cmd_clean() {
    cmd_down
    local target=""
    if [[ -L "$DATA_LINK" ]]; then
        target="$(readlink "$DATA_LINK")"
        rm -f "$DATA_LINK"
    elif [[ -d "$DATA_LINK" ]]; then
        target="$DATA_LINK"
    fi
    if [[ -n "$target" && -e "$target" ]]; then
        log "removing $target"
        rm -rf "$target"
    fi
    [[ -d "/tmp/lsnpool-sock-$(id -u)" ]] && rm -rf "/tmp/lsnpool-sock-$(id -u)"
    return 0
}

main() {
    local cmd="${1:-}"
    (( $# )) && shift
    case "$cmd" in
        up)     cmd_up ;;
        down)   cmd_down ;;
        status) cmd_status ;;
        delay)  cmd_delay "$@" ;;
        psql)   cmd_psql "$@" ;;
        promote) cmd_promote "$@" ;;
        stop)   cmd_stop "$@" ;;
        start)  cmd_start "$@" ;;
        clean)  cmd_clean ;;
        -h|--help|help) usage ;;
        "")     usage >&2; exit 2 ;;
        *)      usage >&2; die "unknown command '$cmd'" ;;
    esac
}

main "$@"
