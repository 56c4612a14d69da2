#!/usr/bin/env bash
# Shows read-your-writes through a running lsnpool (`make run` in another terminal):
#   1. read-after-write: UPDATE a row, then read it back at once, N times: stale reads, and how
#      many reads a replica served (pg_is_in_recovery());
#   2. the same across connections, as an application's pool does it: UPDATE on one connection,
#      read back at once on another (the default level, global, makes this never stale);
#   3. read-only: N reads by a client that never wrote: the share served by replicas;
#   4. the admin console's SHOW ROUTING and SHOW REPLICAS.
# r2 is given a 300 ms apply delay for the run (a naive read/write split would read stale data
# from it) and put back to 0 at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-300}"
PORT="${PORT:-6432}"
export PGPASSWORD="${PGPASSWORD:-postgres}"
dsn() { echo "host=127.0.0.1 port=$PORT user=postgres dbname=$1"; }
psql "$(dsn appdb)" -Atqc "SELECT 1" >/dev/null 2>&1 || {
    echo "demo: no lsnpool on 127.0.0.1:$PORT: start it with 'make run' in another terminal" >&2
    exit 1
}
testenv/pgenv.sh delay 300ms >/dev/null
trap 'testenv/pgenv.sh delay 0 >/dev/null' EXIT
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
psql "$(dsn app_primary)" -Atqc "UPDATE demo_ryw SET v = 0 WHERE id = 1"
coproc W { psql "$(dsn appdb)" -At 2>&1; }
# bash warns about a second coproc while the first runs; both work.
{ coproc R { psql "$(dsn appdb)" -At 2>&1; }; } 2>/dev/null
stale=0 replica=0
for ((i = 1; i <= N; i++)); do
    echo "UPDATE demo_ryw SET v = v + 1 WHERE id = 1;" >&"${W[1]}"
    read -r _ <&"${W[0]}"   # "UPDATE 1": the commit is acknowledged
    echo "SELECT v, pg_is_in_recovery() FROM demo_ryw WHERE id = 1;" >&"${R[1]}"
    IFS='|' read -r v on_replica <&"${R[0]}"
    [[ "$v" == "$i" ]] || stale=$((stale + 1))
    [[ "$on_replica" == "t" ]] && replica=$((replica + 1))
done
eval "exec ${W[1]}>&- ${R[1]}>&-"
echo "reads: $N   stale: $stale   served by a replica: $replica ($((100 * replica / N)) %)"

echo "== read-only: $N reads by a client that has not written"
for ((i = 1; i <= N; i++)); do echo "SELECT pg_is_in_recovery();"; done \
    | psql "$(dsn appdb)" -At | awk '{ n++; if ($1 == "t") replica++ }
    END { printf "reads: %d   served by a replica: %d (%.0f %%)\n", n, replica, 100 * replica / n }'

echo "== admin console (psql -p $PORT -U postgres lsnpool)"
psql "$(dsn lsnpool)" -c "SHOW ROUTING" -c "SHOW REPLICAS"
