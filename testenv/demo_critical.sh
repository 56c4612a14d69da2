#!/usr/bin/env bash
# `make demo-critical`: the operator controls of README "Critical paths", on an lsnpool of its
# own (port $PORT, default 6442; the topology from `make env-up`):
#   1. a query rule sends reads of `demo_accounts` to the primary (SHOW RULES counts its hits),
#      while other reads go to replicas;
#   2. the circuit breaker trips while clients queue for a saturated primary, and closes again
#      after the primary has been healthy for breaker_window (SHOW BREAKERS, the WARN lines);
#   3. DISABLE ROUTING sends everything to the primary at once; ENABLE ROUTING undoes it.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-6442}"
BIN=target/release/lsnpool
W=target/demo-critical
export PGPASSWORD=postgres
mkdir -p "$W"
[[ -x "$BIN" ]] || cargo build --release --bin lsnpool
testenv/pgenv.sh up >/dev/null

cat >"$W/pooler.toml" <<EOF
[pooler]
listen = "127.0.0.1:$PORT"
default_pool_size = 4
query_wait_timeout = "20s"
metrics_listen = ""
admin_users = ["postgres"]

[routing]
degrade = true
breaker_window = "2s"           # close after 2 s of a healthy primary
breaker_max_waiting = 2         # trip when more than 2 clients queue for the primary

[[users]]
name = "postgres"
password = "postgres"

[clusters.appdb]
primary = "127.0.0.1:55432"
replicas = ["127.0.0.1:55433", "127.0.0.1:55434"]
aliases = { app_primary = "strong" }

[[rules]]
name = "payments"
match = '(?i)^\\s*select\\b.*\\bfrom\\s+demo_accounts\\b'
consistency = "strong"
critical = true
EOF

"$BIN" --config "$W/pooler.toml" >"$W/lsnpool.log" 2>&1 &
POOLER=$!
trap 'kill $POOLER 2>/dev/null; wait $POOLER 2>/dev/null || true' EXIT
dsn() { echo "host=127.0.0.1 port=$PORT user=postgres dbname=$1 connect_timeout=5"; }
for _ in $(seq 50); do psql "$(dsn appdb)" -Atqc "SELECT 1" >/dev/null 2>&1 && break; sleep 0.2; done
admin() { psql "$(dsn lsnpool)" -c "$1"; }

psql "$(dsn app_primary)" -Atqc "CREATE TABLE IF NOT EXISTS demo_accounts (id int PRIMARY KEY, balance int);
    INSERT INTO demo_accounts VALUES (1, 100) ON CONFLICT DO NOTHING"
sleep 0.5

echo "== 1. rule 'payments': 20 reads of demo_accounts, 20 other reads (pg_is_in_recovery: t = a replica served it)"
for i in $(seq 20); do echo "SELECT pg_is_in_recovery() FROM demo_accounts WHERE id = 1;"; done \
    | psql "$(dsn appdb)" -At | sort | uniq -c | sed 's/^/   accounts reads served by replica? /'
for i in $(seq 20); do echo "SELECT pg_is_in_recovery();"; done \
    | psql "$(dsn appdb)" -At | sort | uniq -c | sed 's/^/   other reads served by replica?    /'
admin "SHOW RULES"

echo "== 2. breaker: 8 clients hold the primary's 4 connections for 3 s, so clients queue"
for i in $(seq 8); do psql "$(dsn app_primary)" -Atqc "SELECT pg_sleep(3)" >/dev/null & done
sleep 1.5
admin "SHOW BREAKERS"
wait $(jobs -p | grep -v "^$POOLER\$") 2>/dev/null || true
echo "   ... the sleepers are done; waiting breaker_window (2 s) of a healthy primary"
sleep 3
admin "SHOW BREAKERS"
grep -i "breaker" "$W/lsnpool.log" | sed 's/\x1b\[[0-9;]*m//g' | sed 's/^/   log: /' || true

echo "== 3. kill switch: DISABLE ROUTING appdb, 10 reads, ENABLE ROUTING appdb, 10 reads"
admin "DISABLE ROUTING appdb" >/dev/null
for i in $(seq 10); do echo "SELECT pg_is_in_recovery();"; done | psql "$(dsn appdb)" -At | sort | uniq -c | sed 's/^/   disabled: served by replica? /'
admin "ENABLE ROUTING appdb" >/dev/null
sleep 0.2
for i in $(seq 10); do echo "SELECT pg_is_in_recovery();"; done | psql "$(dsn appdb)" -At | sort | uniq -c | sed 's/^/   enabled:  served by replica? /'
