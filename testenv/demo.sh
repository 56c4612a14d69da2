#!/usr/bin/env bash
# `make demo`: read-your-writes through lsnpool, on the local topology.
#   1. read-after-write: UPDATE a row, then read it back at once, N times: stale reads, and how
#      many reads a replica served (pg_is_in_recovery());
#   2. the same across connections, as an application's pool does it: UPDATE on one connection,
#      read back at once on another (the default level, global, makes this never stale);
#   3. read-only: N reads by a client that never wrote: the share served by replicas;
#   4. the admin console's SHOW ROUTING and SHOW REPLICAS;
#   5. two more lsnpool instances, A and B, sharing Redis (routing.token_store, set here with
#      LSNPOOL_ROUTING__TOKEN_STORE): UPDATE through A, read back at once through B, under the
#      default level and then under a session key; B's SHOW ROUTING.
# Parts 1-4 use the lsnpool on $PORT (`make run`); with none there, the demo starts one itself.
# Part 5 always starts its own two instances on free ports and stops them at the end.
# r2 is given a 300 ms apply delay for the run (a naive read/write split would read stale data
# from it) and put back to 0 at the end. With PGENV_DATA/PGENV_PORT_BASE (a throwaway topology,
# testenv/README.md) the instances the demo starts use that topology and its Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-300}"
PORT="${PORT:-6432}"
BIN="${LSNPOOL_BIN:-target/release/lsnpool}"
BASE="${PGENV_PORT_BASE:-55432}"
REDIS="${REDIS:-redis://127.0.0.1:$((BASE + 947))}"
if [[ "$BASE" != 55432 ]]; then
    export LSNPOOL_CLUSTERS__APPDB__PRIMARY="127.0.0.1:$BASE"
    export LSNPOOL_CLUSTERS__APPDB__REPLICAS="[\"127.0.0.1:$((BASE + 1))\", \"127.0.0.1:$((BASE + 2))\"]"
fi
W=target/demo
export PGPASSWORD="${PGPASSWORD:-postgres}"
mkdir -p "$W"
dsn() { echo "host=127.0.0.1 port=${2:-$PORT} user=postgres dbname=$1 connect_timeout=5"; }

STARTED=()
cleanup() {
    for pid in "${STARTED[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${STARTED[@]}"; do wait "$pid" 2>/dev/null || true; done
    testenv/pgenv.sh delay 0 >/dev/null 2>&1 || true
}
trap cleanup EXIT

# A TCP port nothing listens on, from 6450 up.
free_port() {
    local p
    for ((p = ${1:-6450}; p < 6600; p++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
    done
    echo "demo: no free port in 6450-6599" >&2
    return 1
}

# start_lsnpool NAME PORT [VAR=VALUE...]: pooler.toml on PORT (no metrics listener), with the
# given environment overrides; waits until it answers.
start_lsnpool() {
    local name=$1 port=$2
    shift 2
    if [[ ! -x "$BIN" ]]; then
        echo "demo: building $BIN (cargo build --release --bin lsnpool)"
        cargo build --release --bin lsnpool
    fi
    env LSNPOOL_POOLER__LISTEN="127.0.0.1:$port" LSNPOOL_POOLER__METRICS_LISTEN="" "$@" \
        "$BIN" --config pooler.toml >"$W/$name.log" 2>&1 &
    STARTED+=($!)
    for _ in $(seq 100); do
        psql "$(dsn appdb "$port")" -Atqc "SELECT 1" >/dev/null 2>&1 && return 0
        kill -0 "${STARTED[-1]}" 2>/dev/null || break
        sleep 0.1
    done
    echo "demo: lsnpool $name did not start on port $port; its log ($W/$name.log):" >&2
    tail -20 "$W/$name.log" >&2
    exit 1
}

# cross WRITER_PORT READER_PORT [SQL run first on both]: N x (UPDATE on a connection to the
# writer; SELECT at once on a connection to the reader). Prints stale reads and replica share.
cross() {
    local wport=$1 rport=$2 init=${3:-} stale=0 replica=0 i wrote v on_replica
    coproc WR { psql "$(dsn appdb "$wport")" -qAt 2>&1; }
    # bash warns about a second coproc while the first runs; both work.
    { coproc RD { psql "$(dsn appdb "$rport")" -qAt 2>&1; }; } 2>/dev/null
    local wpid=$WR_PID rpid=$RD_PID
    if [[ -n "$init" ]]; then
        echo "$init" >&"${WR[1]}"
        echo "$init" >&"${RD[1]}"
    fi
    for ((i = 1; i <= N; i++)); do
        echo "UPDATE demo_ryw SET v = v + 1 WHERE id = 1 RETURNING v;" >&"${WR[1]}"
        read -r wrote <&"${WR[0]}"   # the new value: the commit is acknowledged
        echo "SELECT v, pg_is_in_recovery() FROM demo_ryw WHERE id = 1;" >&"${RD[1]}"
        IFS='|' read -r v on_replica <&"${RD[0]}"
        [[ "$v" == "$wrote" ]] || stale=$((stale + 1))
        [[ "$on_replica" == "t" ]] && replica=$((replica + 1))
    done
    eval "exec ${WR[1]}>&- ${RD[1]}>&-"
    wait "$wpid" "$rpid" 2>/dev/null || true
    echo "reads: $N   stale: $stale   served by a replica: $replica ($((100 * replica / N)) %)"
}

testenv/pgenv.sh up >/dev/null   # idempotent: the topology and Redis
if ! psql "$(dsn appdb)" -Atqc "SELECT 1" >/dev/null 2>&1; then
    PORT=$(free_port)
    echo "demo: no lsnpool on 127.0.0.1:6432 ('make run'): starting one on $PORT"
    start_lsnpool main "$PORT"
fi
testenv/pgenv.sh delay 300ms >/dev/null
psql "$(dsn app_primary)" -Atqc "CREATE TABLE IF NOT EXISTS demo_ryw (id int PRIMARY KEY, v int NOT NULL);
    INSERT INTO demo_ryw VALUES (1, 0) ON CONFLICT (id) DO UPDATE SET v = 0"

echo "== read-after-write: $N x (UPDATE; SELECT at once), r2 replaying 300 ms late"
for ((i = 1; i <= N; i++)); do
    echo "UPDATE demo_ryw SET v = v + 1 WHERE id = 1;"
    echo "SELECT v, pg_is_in_recovery() FROM demo_ryw WHERE id = 1;"
done | psql "$(dsn appdb)" -At | grep '|' | awk -F'|' '
    { n++; if ($1 != n) stale++; if ($2 == "t") replica++ }
    END { printf "reads: %d   stale: %d   served by a replica: %d (%.0f %%)\n", n, stale, replica, 100 * replica / n }'

echo "== across connections: $N x (UPDATE on connection A; SELECT at once on connection B)"
cross "$PORT" "$PORT"

echo "== read-only: $N reads by a client that has not written"
for ((i = 1; i <= N; i++)); do echo "SELECT pg_is_in_recovery();"; done \
    | psql "$(dsn appdb)" -At | awk '{ n++; if ($1 == "t") replica++ }
    END { printf "reads: %d   served by a replica: %d (%.0f %%)\n", n, replica, 100 * replica / n }'

echo "== admin console (psql -p $PORT -U postgres lsnpool)"
psql "$(dsn lsnpool)" -c "SHOW ROUTING" -c "SHOW REPLICAS"

echo "== two lsnpool instances sharing Redis ($REDIS)"
PA=$(free_port)
start_lsnpool A "$PA" LSNPOOL_ROUTING__TOKEN_STORE="$REDIS"
PB=$(free_port $((PA + 1)))
start_lsnpool B "$PB" LSNPOOL_ROUTING__TOKEN_STORE="$REDIS"
echo "   instance A on $PA, instance B on $PB (logs in $W/)"
# Until B has reached Redis, and while Redis settles after it was found without lsnpool's data
# (a fresh or restarted Redis: max_replica_lag, 10 s), keyed and global reads use the primary.
t0=$SECONDS
for _ in $(seq 150); do
    [[ "$(psql "$(dsn appdb "$PB")" -Atqc "SELECT pg_is_in_recovery()" 2>/dev/null)" == t ]] && break
    sleep 0.1
done
(( SECONDS - t0 >= 2 )) && echo "   (waited $((SECONDS - t0)) s: Redis held no lsnpool data, so reads used the primary while it settled)"
echo "-- default level (global): $N x (UPDATE through A; SELECT at once through B)"
cross "$PA" "$PB"
echo "-- session key: SET lsnpool.session_key = 'user:42', lsnpool.consistency = 'session' on both"
cross "$PA" "$PB" "SET lsnpool.session_key = 'user:42'; SET lsnpool.consistency = 'session';"
echo "-- instance B's SHOW ROUTING (fallback_token_store_down counts reads sent to the primary while Redis was unreachable)"
psql "$(dsn lsnpool "$PB")" -c "SHOW ROUTING"
