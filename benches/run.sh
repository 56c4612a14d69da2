#!/usr/bin/env bash
# benches/run.sh - `make bench`: lsnpool against a direct connection and PgBouncer, side by side.
#
#   benches/run.sh            full run (~15 min): 3 repetitions, longer runs
#   QUICK=1 benches/run.sh    quick run (~5 min): 1 repetition, short runs; the last line (CHECK) is
#                             the one to compare before and after a relay or routing change
#
# Builds release, brings the testenv topology up, installs Debian's pgbouncer when missing (as
# root), then measures, alternating the targets within each repetition:
#   - pgbench select-only simple / select-only prepared / tpcb-like simple at 1, 50, 500
#     clients against: direct to the primary, PgBouncer (transaction mode, pool 20), lsnpool
#     app_primary (everything to the primary), lsnpool appdb (LSN routing);
#   - the cost of commit-LSN capture (tpcb-like through lsnpool appdb, capture on vs off);
#   - read-after-write (benches/loadgen.rs raw) at r2 apply delays 0/10/50/300 ms, lsnpool vs a
#     naive split (writes to the primary, reads straight to r2);
#   - RSS of lsnpool and PgBouncer holding 10,000 idle logged-in clients;
#   - criterion micro-benchmarks (benches/micro.rs) with an allocation count.
# Writes benches/results/latest.md and benches/results/stale_vs_delay.png; logs, configs and raw
# numbers go to target/bench/.
#
# Overrides: BENCH_REPS, BENCH_T / BENCH_T1 (pgbench seconds; at 1 client), BENCH_MEM_N (idle
# clients), BENCH_SCALE, BENCH_PORT_BASE; BENCH_REPORT_ONLY=1 rewrites the report from the numbers
# of the last run (target/bench) without measuring.
#
# BENCH_ONLY="cross" (any of: pgbench capture raw cross memory micro instr) runs only those sections
# (after the build, topology and database steps) and writes the report to target/bench/partial.md,
# leaving benches/results/ alone: for checking one section without a full, CPU-hungry run.
# PGENV_DATA / PGENV_PORT_BASE point the run at a throwaway topology (testenv/README.md) and its
# Redis (port base + 947), so r2's apply delay is changed there and not on the shared one.
#
# Everything runs on its own ports (BENCH_PORT_BASE, default 16430 .. +16) and its own database
# (lsnbench, created on the primary and initialised with pgbench once), so tests running at the
# same time against appdb are not disturbed (r2's apply delay is shared, though: it is restored
# to 0 at the end). Every process started here is stopped on exit.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
PGENV="${PGENV:-$ROOT/testenv/pgenv.sh}"
W="$ROOT/target/bench"          # work dir: configs, logs, raw numbers
RES="$ROOT/benches/results"
QUICK="${QUICK:-0}"
[[ "$QUICK" == 0 || -z "$QUICK" ]] && QUICK=0 || QUICK=1

# ---------------------------------------------------------------- knobs
DB=lsnbench
SCALE="${BENCH_SCALE:-10}"
POOL=20
CLIENTS=(1 50 500)
# Run lengths are set by the time budget (full < 10 min, QUICK < 2 min on 2 CPUs): 3 x 33 pgbench
# runs leave about 4 s per run. BENCH_REPS / BENCH_T / BENCH_T1 override them.
if (( QUICK )); then
    REPS=1; T_MAIN=1; T_ONE=1; CAP_REPS=1; CAP_T=2; HOP_REPS=2; T_HOP=1
    RAW_SECONDS=1; CRIT=(--warm-up-time 0.1 --measurement-time 0.2 --sample-size 20 --nresamples 10000)
else
    REPS=3; T_MAIN=4; T_ONE=2; CAP_REPS=3; CAP_T=6; HOP_REPS=5; T_HOP=2
    RAW_SECONDS=4; CRIT=(--warm-up-time 0.3 --measurement-time 1)
fi
REPS="${BENCH_REPS:-$REPS}"; T_MAIN="${BENCH_T:-$T_MAIN}"; T_ONE="${BENCH_T1:-$T_ONE}"; T_HOP="${BENCH_T_HOP:-$T_HOP}"
MEM_N="${BENCH_MEM_N:-10000}"
RAW_CLIENTS=16; RAW_K=4; RAW_DELAYS=(0 10 50 300)

WORKLOADS=("select-only simple" "select-only prepared" "tpcb-like simple")
wl_args() {
    case "$1" in
        "select-only simple")   echo "-S -M simple" ;;
        "select-only prepared") echo "-S -M prepared" ;;
        "tpcb-like simple")     echo "-M simple" ;;
    esac
}
TARGETS=(direct pgbouncer lsnpool_primary lsnpool_appdb)
declare -A TNAME=([direct]="direct" [pgbouncer]="PgBouncer" [pgbouncer_unix]="PgBouncer, Unix socket" [lsnpool_unix]="lsnpool app_primary, Unix socket" [lsnpool_primary]="lsnpool app_primary" [lsnpool_appdb]="lsnpool appdb" [lsnpool_appdb_nocap]="lsnpool appdb, capture off" [lsnpool_appdb_cap]="lsnpool appdb, capture on")

PGB_TSV="$W/pgbench.tsv"; HOP_TSV="$W/hop.tsv"; UNIX_TSV="$W/unix.tsv"; INSTR_TSV="$W/instr.tsv"; CAP_TSV="$W/capture.tsv"; RAW_CSV="$W/raw.csv"; MICRO_TSV="$W/micro.tsv"
CROSS_CSV="$W/cross.csv"; LAT_TSV="$W/token_latency.tsv"
# r2 apply delays of the cross-connection rows; commits and read-backs per token-store latency run
if (( QUICK )); then CROSS_DELAYS=(0 300); LAT_N=300; else CROSS_DELAYS=(0 50 300); LAT_N=2000; fi
ONLY="${BENCH_ONLY:-}"
section() { [[ -z "$ONLY" || " $ONLY " == *" $1 "* ]]; }
CHART="$RES/stale_vs_delay.png"; [[ -n "$ONLY" ]] && CHART="$W/stale_vs_delay.png"
HOP_CHART="$RES/latency.png"; [[ -n "$ONLY" ]] && HOP_CHART="$W/latency.png"

BASE="${BENCH_PORT_BASE:-16430}"
LSN_PORT=$((BASE + 2))        # lsnpool, capture on (pgbench targets)
LSN_OFF_PORT=$((BASE + 3))    # lsnpool, capture off
LSN_CAP_PORT=$((BASE + 6))    # a fresh lsnpool, capture on, for the capture comparison
LSN_RAW_PORT=$((BASE + 4))    # lsnpool for read-after-write
LSN_MEM_PORT=$((BASE + 5))    # fresh lsnpool for the idle-clients memory test
PGB_PORT=$((BASE + 9))        # PgBouncer
PGB_MEM_PORT=$((BASE + 10))   # fresh PgBouncer for the memory test
LSN_UNIX_PORT=$((BASE + 7))   # lsnpool reaching the primary over its Unix socket
PGB_UNIX_PORT=$((BASE + 8))   # PgBouncer reaching the primary over its Unix socket
LSN_INSTR_PORT=$((BASE + 11)) # lsnpool under callgrind
PRIMARY="${PGENV_PORT_BASE:-55432}"; R1=$((PRIMARY + 1)); R2=$((PRIMARY + 2)); REDIS_PORT=$((PRIMARY + 947))

export PGPASSWORD=postgres PGUSER=postgres PGCONNECT_TIMEOUT=10
unset PGHOST PGPORT PGDATABASE PGHOSTADDR PGSERVICE PGOPTIONS PGSSLMODE || true

log()  { printf '\n[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
note() { printf '[bench] %s\n' "$*" >&2; }
die()  { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

T_START=$(date +%s)
mkdir -p "$W" "$RES"
# BENCH_REPORT_ONLY=1 rewrites the report from the numbers of the last run in target/bench.
REPORT_ONLY="${BENCH_REPORT_ONLY:-}"
[[ -z "$REPORT_ONLY" ]] && rm -f "$W"/*.tsv "$W"/*.csv "$W"/*.txt "$W"/*.log "$W"/meta.env 2>/dev/null

# ---------------------------------------------------------------- process bookkeeping
PIDS=()          # every long-running process started here
PGB_TMP=""
DELAY_TOUCHED=0

stop_pid() {     # stop_pid PID: TERM, wait up to 5 s, then KILL
    local pid="$1" i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if (( DELAY_TOUCHED )); then "$PGENV" delay 0 >/dev/null 2>&1 || note "could not restore r2's apply delay to 0"; fi
    [[ -n "$PGB_TMP" && -d "$PGB_TMP" ]] && rm -rf "$PGB_TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {    # wait_port PORT PID NAME LOG: until something listens, or the process died
    local port="$1" pid="$2" name="$3" logf="$4" i
    for i in $(seq 150); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -20 "$logf" >&2
            die "$name exited at start (log: $logf)"
        fi
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    tail -20 "$logf" >&2
    die "$name is not listening on $port after 15 s (log: $logf)"
}

psql_p() { psql -h 127.0.0.1 -p "$PRIMARY" -U postgres -X -q -At -v ON_ERROR_STOP=1 "$@"; }

if [[ -z "$REPORT_ONLY" ]]; then
# ---------------------------------------------------------------- build
log "build (release)"
cargo build --release --bin lsnpool || die "cargo build failed"
GIT_COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
GIT_DIRTY="$(git -C "$ROOT" status --porcelain -- src crates Cargo.toml 2>/dev/null | head -1)"
[[ -n "$GIT_DIRTY" ]] && GIT_COMMIT="$GIT_COMMIT (with uncommitted changes in src/, crates/ or Cargo.toml)"
LSNPOOL="$ROOT/target/release/lsnpool"
ART="$(cargo bench --no-run --bench loadgen --bench micro --message-format=json-render-diagnostics 2>"$W/cargo-bench-build.log")" \
    || { tail -30 "$W/cargo-bench-build.log" >&2; die "building benches failed"; }
LOADGEN="$(grep -o '"executable":"[^"]*/loadgen-[^"]*"' <<<"$ART" | tail -1 | cut -d'"' -f4)"
MICRO="$(grep -o '"executable":"[^"]*/micro-[^"]*"' <<<"$ART" | tail -1 | cut -d'"' -f4)"
[[ -x "$LOADGEN" && -x "$MICRO" ]] || die "bench executables not found (loadgen='$LOADGEN' micro='$MICRO')"

# ---------------------------------------------------------------- topology, pgbouncer, limits
log "topology up"
"$PGENV" up || die "testenv/pgenv.sh up failed"
DELAY_TOUCHED=1
"$PGENV" delay 0 >/dev/null || die "cannot set r2's apply delay"

if ! command -v pgbouncer >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing pgbouncer (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y pgbouncer >"$W/apt.log" 2>&1 || { apt-get update >>"$W/apt.log" 2>&1; apt-get install -y pgbouncer >>"$W/apt.log" 2>&1; } \
            || note "apt-get install pgbouncer failed (see $W/apt.log)"
        # Debian's package may start its own service on 6432, which is lsnpool's default port.
        if command -v service >/dev/null 2>&1; then service pgbouncer stop >/dev/null 2>&1 || true; fi
    fi
fi
HAVE_PGB=0; command -v pgbouncer >/dev/null 2>&1 && HAVE_PGB=1
(( HAVE_PGB )) || note "pgbouncer is not installed: its columns will say so"

# 10,000 idle clients need > 10,000 descriptors in the pooler and in the load generator.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE="$(ulimit -n)"
note "open files limit: $NOFILE"

for p in "$LSN_PORT" "$LSN_OFF_PORT" "$LSN_CAP_PORT" "$LSN_RAW_PORT" "$LSN_MEM_PORT" "$PGB_PORT" "$PGB_MEM_PORT" "$LSN_UNIX_PORT" "$PGB_UNIX_PORT" "$LSN_INSTR_PORT"; do
    port_free "$p" || die "port $p is in use (another bench run? set BENCH_PORT_BASE)"
done

# ---------------------------------------------------------------- database
log "database $DB (pgbench scale $SCALE)"
psql_p -d postgres -c "SELECT 1" >/dev/null || die "cannot connect to the primary on $PRIMARY"
if [[ "$(psql_p -d postgres -c "SELECT count(*) FROM pg_database WHERE datname = '$DB'")" != 1 ]]; then
    psql_p -d postgres -c "CREATE DATABASE $DB" || die "CREATE DATABASE $DB failed"
fi
branches="$(psql_p -d "$DB" -c "SELECT count(*) FROM pgbench_branches" 2>/dev/null || echo 0)"
accounts="$(psql_p -d "$DB" -c "SELECT count(*) FROM pgbench_accounts" 2>/dev/null || echo 0)"
if [[ "$branches" != "$SCALE" || "$accounts" != "$((SCALE * 100000))" ]]; then
    note "pgbench -i -s $SCALE"
    timeout 600 pgbench -h 127.0.0.1 -p "$PRIMARY" -U postgres -i -s "$SCALE" -q "$DB" >"$W/pgbench-init.log" 2>&1 \
        || { tail "$W/pgbench-init.log" >&2; die "pgbench -i failed"; }
else
    psql_p -d "$DB" -c "TRUNCATE pgbench_history" -c "VACUUM pgbench_branches, pgbench_tellers, pgbench_history" \
        || note "vacuum failed (ignored)"
fi
psql_p -d "$DB" -c "CREATE TABLE IF NOT EXISTS bench_raw (id bigint PRIMARY KEY, v int NOT NULL)" -c "TRUNCATE bench_raw" \
    || die "cannot create bench_raw"

wait_replicas() {   # until r1 and r2 have replayed the primary's current LSN (60 s at most)
    local lsn i ok
    lsn="$(psql_p -d postgres -c "SELECT pg_current_wal_lsn()")"
    for i in $(seq 600); do
        ok=1
        for p in "$R1" "$R2"; do
            [[ "$(psql -h 127.0.0.1 -p "$p" -U postgres -X -At -d postgres -c "SELECT pg_last_wal_replay_lsn() >= '$lsn'" 2>/dev/null)" == t ]] || ok=0
        done
        (( ok )) && return 0
        sleep 0.1
    done
    note "replicas did not catch up with $lsn within 60 s"
}
wait_replicas

# ---------------------------------------------------------------- configs and starters
lsnpool_config() {  # lsnpool_config FILE PORT [extra cluster]
    local f="$1" port="$2" extra="${3:-}"
    cat >"$f" <<EOF
# written by benches/run.sh
[pooler]
listen = "127.0.0.1:$port"
pool_mode = "transaction"
auth_type = "md5"
default_pool_size = $POOL
min_pool_size = 0
max_client_conn = 20000
query_wait_timeout = "60s"
client_login_timeout = "60s"
server_connect_timeout = "5s"
admin_users = ["postgres"]
metrics_listen = ""

[routing]
consistency = "read-your-writes"
lsn_poll_interval = "10ms"
max_replica_lag = "10s"
lsn_wait_timeout = "0ms"

[[users]]
name = "postgres"
password = "postgres"

[clusters.appdb]
database = "$DB"
primary = "127.0.0.1:$PRIMARY"
replicas = ["127.0.0.1:$R1", "127.0.0.1:$R2"]
aliases = { app_primary = "strong" }
$extra
EOF
    "$LSNPOOL" --config "$f" --check >/dev/null || die "lsnpool rejects $f"
}

start_lsnpool() {   # start_lsnpool NAME CONFIG PORT [ENV=VAL...]; sets STARTED_PID
    local name="$1" cfg="$2" port="$3"; shift 3
    env LSNPOOL_LOG=warn "$@" "$LSNPOOL" --config "$cfg" >"$W/$name.log" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    wait_port "$port" "$STARTED_PID" "$name" "$W/$name.log"
}

# PgBouncer refuses to run as root: as root, setpriv runs it as postgres. setpriv execs, and the
# command is started directly (not through a function, which would fork a subshell), so $! is
# PgBouncer's own pid: the one to read VmRSS from and to stop.
PGB_AS=()
[[ "$(id -u)" == 0 ]] && PGB_AS=(setpriv --reuid=postgres --regid=postgres --init-groups --)

start_pgbouncer() { # start_pgbouncer NAME PORT [SERVER_HOST]; sets STARTED_PID (PgBouncer's own pid)
    local name="$1" port="$2" host="${3:-127.0.0.1}" dir ini
    if [[ -z "$PGB_TMP" ]]; then
        PGB_TMP="$(mktemp -d /tmp/lsnpool-bench-pgbouncer.XXXXXX)"
        [[ "$(id -u)" == 0 ]] && chown postgres: "$PGB_TMP"
        chmod 755 "$PGB_TMP"
    fi
    dir="$PGB_TMP"; ini="$dir/$name.ini"
    printf '"postgres" "postgres"\n' >"$dir/userlist.txt"
    cat >"$ini" <<EOF
; written by benches/run.sh
[databases]
appdb = host=$host port=$PRIMARY dbname=$DB

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = md5
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = $POOL
max_client_conn = 20000
max_db_connections = 0
query_wait_timeout = 60
ignore_startup_parameters = extra_float_digits,options
log_connections = 0
log_disconnections = 0
logfile = $dir/$name.log
pidfile = $dir/$name.pid
admin_users = postgres
EOF
    [[ "$(id -u)" == 0 ]] && chown -R postgres: "$dir"
    "${PGB_AS[@]}" pgbouncer "$ini" >"$W/$name.stdout" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    wait_port "$port" "$STARTED_PID" "$name" "$W/$name.stdout"
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
CLK_TCK="$(getconf CLK_TCK)"
# pooler_cpu_since PID TICKS: CPU seconds the pooler used since cpu_ticks said TICKS ("" for direct)
pooler_cpu_since() { [[ "$1" == - ]] || awk -v a="$2" -v b="$(cpu_ticks "$1")" -v h="$CLK_TCK" 'BEGIN { printf "%.3f", (b - a) / h }'; }
# missing_pooler TARGET PID: why a pooler target cannot run (its pooler did not start), or nothing
missing_pooler() { [[ "$2" == - && "$1" != direct ]] && echo "${TNAME[$1]} is not running (pgbouncer not installed, or no Unix socket)"; }
# children_cpu VAR: sets VAR to the CPU time (s) of this shell's reaped children; around one
# pgbench run, pgbench's own CPU. Called as a command, never inside $(...): `times` must run in
# this shell (a subshell starts with no children). Its second line is the children's user and
# system time.
children_cpu() {
    times >"$W/times.txt"
    printf -v "$1" '%s' "$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } printf "%.3f", t }' "$W/times.txt")"
}
# CPU time (s) the whole machine spent (user, nice, system, irq, softirq, steal): pooler, pgbench
# and PostgreSQL together.
machine_cpu() { awk -v h="$CLK_TCK" '/^cpu / { printf "%.3f", ($2 + $3 + $4 + $7 + $8 + $9) / h }' /proc/stat; }

if section pgbench; then
log "start lsnpool (:$LSN_PORT) and PgBouncer (:$PGB_PORT)"
lsnpool_config "$W/lsnpool.toml" "$LSN_PORT"
start_lsnpool lsnpool "$W/lsnpool.toml" "$LSN_PORT"; LSN_PID=$STARTED_PID
PGB_PID=""
if (( HAVE_PGB )); then start_pgbouncer pgbouncer "$PGB_PORT"; PGB_PID=$STARTED_PID; fi

# ---------------------------------------------------------------- pgbench matrix
target_conn() {     # port database pid-of-the-pooler
    case "$1" in
        direct)              echo "$PRIMARY $DB -" ;;
        pgbouncer)           echo "$PGB_PORT appdb ${PGB_PID:--}" ;;
        pgbouncer_unix)      echo "$PGB_UNIX_PORT appdb ${PGB_UNIX_PID:--}" ;;
        lsnpool_unix)        echo "$LSN_UNIX_PORT app_primary ${LSN_UNIX_PID:--}" ;;
        lsnpool_primary)     echo "$LSN_PORT app_primary $LSN_PID" ;;
        lsnpool_appdb)       echo "$LSN_PORT appdb $LSN_PID" ;;
        lsnpool_appdb_nocap) echo "$LSN_OFF_PORT appdb ${LSN_OFF_PID:--}" ;;
        lsnpool_appdb_cap)   echo "$LSN_CAP_PORT appdb ${LSN_CAP_PID:--}" ;;
    esac
}

printf 'workload\tclients\ttarget\trep\tstatus\ttps\txacts\tpooler_cpu_s\terror\tpgbench_cpu_s\tmachine_cpu_s\n' >"$PGB_TSV"

stall_dump() {  # stall_dump FILE PORT
    {
        echo "== $(date +%T) pg_stat_activity on the primary"
        psql_p -d postgres -P pager=off -c "SELECT pid, state, wait_event_type, wait_event, now() - xact_start AS xact_age, now() - state_change AS in_state, left(query, 60) AS query FROM pg_stat_activity WHERE datname = '$DB' ORDER BY xact_start NULLS LAST"
        if [[ "$2" != "$PRIMARY" ]]; then
            for cmd in "SHOW SERVERS" "SHOW CLIENTS" "SHOW POOLS"; do
                echo "== $cmd"
                psql -h 127.0.0.1 -p "$2" -U postgres -X -P pager=off -c "$cmd" pgbouncer 2>&1 | head -120
            done
        fi
    } >"$1" 2>&1
    note "a pgbench run is stuck: state written to $1"
}

# run_pgbench TSV WORKLOAD CLIENTS TARGET REP SECONDS
run_pgbench() {
    local tsv="$1" wl="$2" c="$3" tg="$4" rep="$5" secs="$6"
    local port db pid j out rc tps xacts err t0 cpu
    read -r port db pid <<<"$(target_conn "$tg")"
    local missing; missing="$(missing_pooler "$tg" "$pid")"
    if [[ -n "$missing" ]]; then
        printf '%s\t%s\t%s\t%s\tfail\t\t\t\t%s\n' "$wl" "$c" "$tg" "$rep" "$missing" >>"$tsv"
        return
    fi
    j=2; (( c < 2 )) && j=1
    out="$W/pgbench-${wl// /_}-c$c-$tg-r$rep.log"
    t0=0; [[ "$pid" != - ]] && t0="$(cpu_ticks "$pid")"
    local c0 c1 m0 ccpu mcpu
    children_cpu c0; m0="$(machine_cpu)"
    # shellcheck disable=SC2046
    timeout $((secs + 90)) pgbench -h 127.0.0.1 -p "$port" -U postgres $(wl_args "$wl") -n -c "$c" -j "$j" -T "$secs" "$db" >"$out" 2>&1 &
    local bench_pid=$!
    # A run that outlives its duration by 20 s is stuck: a watchdog records what every backend
    # and the pooler's connections are doing while it still is. (A watchdog, not a polling loop:
    # the CPU samples below are taken the moment pgbench ends.)
    ( sleep $((secs + 20)); kill -0 "$bench_pid" 2>/dev/null && stall_dump "$out.stall" "$port" ) &
    local watchdog=$!
    wait "$bench_pid"
    rc=$?
    children_cpu c1; mcpu="$(awk -v a="$m0" -v b="$(machine_cpu)" 'BEGIN { printf "%.3f", b - a }')"
    ccpu="$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.3f", b - a }')"
    kill "$watchdog" 2>/dev/null; wait "$watchdog" 2>/dev/null
    cpu="$(pooler_cpu_since "$pid" "$t0")"
    tps="$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$out" | head -1)"
    xacts="$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out" | head -1)"
    err="$(grep -m1 -E 'error|FATAL|ERROR|aborted' "$out" | tr '\t|' '  ' | cut -c1-220)"
    if (( rc == 0 )) && [[ -n "$tps" ]] && ! grep -q 'aborted' "$out"; then
        # pgbench can finish although some statements failed (e.g. a PQprepare it ignores):
        # the run counts, with its errors quoted.
        nerr="$(grep -c -E 'error|FATAL|ERROR' "$out")"
        (( nerr > 0 )) && err="$nerr error line(s) in its output, e.g. $err"
        printf '%s\t%s\t%s\t%s\tok\t%s\t%s\t%s\t%s\t%s\t%s\n' "$wl" "$c" "$tg" "$rep" "$tps" "$xacts" "$cpu" "$err" "$ccpu" "$mcpu" >>"$tsv"
        note "$(printf '%-22s c=%-3s %-22s rep %s: %10.0f tps' "$wl" "$c" "${TNAME[$tg]}" "$rep" "$tps")"
    else
        [[ -z "$err" ]] && err="pgbench exited with status $rc"
        (( rc == 124 )) && err="timed out; $err"
        printf '%s\t%s\t%s\t%s\tfail\t%s\t%s\t%s\t%s\n' "$wl" "$c" "$tg" "$rep" "$tps" "$xacts" "$cpu" "$err" >>"$tsv"
        note "$(printf '%-22s c=%-3s %-22s rep %s: FAILED: %s' "$wl" "$c" "${TNAME[$tg]}" "$rep" "$err")"
    fi
}

log "pgbench: ${#WORKLOADS[@]} workloads x clients ${CLIENTS[*]} x ${#TARGETS[@]} targets x $REPS rep(s), ${T_MAIN}s runs (${T_ONE}s at 1 client)"
case_no=0
for rep in $(seq "$REPS"); do
    for wl in "${WORKLOADS[@]}"; do
        for c in "${CLIENTS[@]}"; do
            secs=$T_MAIN; (( c == 1 )) && secs=$T_ONE
            # rotate the order of the targets from case to case
            n=${#TARGETS[@]}
            for i in $(seq 0 $((n - 1))); do
                tg="${TARGETS[$(( (i + case_no) % n ))]}"
                run_pgbench "$PGB_TSV" "$wl" "$c" "$tg" "$rep" "$secs"
            done
            case_no=$((case_no + 1))
        done
    done
done

# ---------------------------------------------------------------- latency (issue 13), part of the pgbench section
# Per-transaction latency from pgbench's own log (--log: one line per transaction, its time in
# µs), select-only simple and prepared at 1 and 8 clients, the four targets (six at 1 client,
# with the Unix-socket instances) alternated within each repetition. "Added latency" = a
# target's percentile minus direct's in the same repetition.
HOP_CLIENTS=(1 8)
# Both poolers again, reaching the primary over its Unix socket (a server on the pooler's host
# can be reached that way by either), for the 1-client latency runs and the TCP-vs-socket round
# below; started only now, so their monitor polls are not running during the matrix above.
SOCKDIR="$(psql_p -d postgres -c "SHOW unix_socket_directories" | cut -d, -f1 | tr -d ' ')"
LSN_UNIX_PID=""; PGB_UNIX_PID=""
if [[ "$SOCKDIR" == /* ]]; then
    lsnpool_config "$W/lsnpool-unix.toml" "$LSN_UNIX_PORT"
    sed -i -e "s|^primary = .*|primary = \"$SOCKDIR:$PRIMARY\"|" -e "s|^replicas = .*|replicas = [\"$SOCKDIR:$R1\", \"$SOCKDIR:$R2\"]|" "$W/lsnpool-unix.toml"
    start_lsnpool lsnpool-unix "$W/lsnpool-unix.toml" "$LSN_UNIX_PORT"; LSN_UNIX_PID=$STARTED_PID
    if (( HAVE_PGB )); then start_pgbouncer pgbouncer-unix "$PGB_UNIX_PORT" "$SOCKDIR"; PGB_UNIX_PID=$STARTED_PID; fi
else
    note "the primary has no Unix socket directory: the Unix-socket rows are skipped"
fi
HOP_WORKLOADS=("select-only simple" "select-only prepared")
printf 'workload\tclients\ttarget\trep\tstatus\tp50_us\tp99_us\tp999_us\txacts\tpooler_cpu_s\terror\n' >"$HOP_TSV"
# run_hop WORKLOAD CLIENTS TARGET REP SECONDS
run_hop() {
    local wl="$1" c="$2" tg="$3" rep="$4" secs="$5"
    local port db pid out pre rc t0 cpu pct
    read -r port db pid <<<"$(target_conn "$tg")"
    local missing; missing="$(missing_pooler "$tg" "$pid")"
    if [[ -n "$missing" ]]; then
        printf '%s\t%s\t%s\t%s\tfail\t\t\t\t\t\t%s\n' "$wl" "$c" "$tg" "$rep" "$missing" >>"$HOP_TSV"
        return
    fi
    pre="$W/lat/${wl// /_}-c$c-$tg-r$rep"; out="$pre.out"
    mkdir -p "$W/lat"; rm -f "$pre".log*
    t0=0; [[ "$pid" != - ]] && t0="$(cpu_ticks "$pid")"
    # shellcheck disable=SC2046
    timeout $((secs + 60)) pgbench -h 127.0.0.1 -p "$port" -U postgres $(wl_args "$wl") -n -c "$c" -j 1 -T "$secs" \
        --log --log-prefix="$pre.log" "$db" >"$out" 2>&1
    rc=$?
    cpu="$(pooler_cpu_since "$pid" "$t0")"
    # Column 3 of pgbench's per-transaction log is the transaction's latency in µs.
    pct="$(cat "$pre".log* 2>/dev/null | awk '{print $3}' | sort -n | awk '
        { v[NR] = $1 }
        END { if (NR == 0) { print "- - - 0"; exit }
              i50 = int(0.5 * NR); i99 = int(0.99 * NR); i999 = int(0.999 * NR)
              if (i50 < 1) i50 = 1; if (i99 < 1) i99 = 1; if (i999 < 1) i999 = 1
              print v[i50], v[i99], v[i999], NR }')"
    rm -f "$pre".log*
    local p50 p99 p999 n err
    read -r p50 p99 p999 n <<<"$pct"
    err="$(grep -m1 -E 'error|FATAL|ERROR|aborted' "$out" | tr '\t|' '  ' | cut -c1-220)"
    if (( rc == 0 )) && (( n > 0 )) && ! grep -q 'aborted' "$out"; then
        printf '%s\t%s\t%s\t%s\tok\t%s\t%s\t%s\t%s\t%s\t%s\n' "$wl" "$c" "$tg" "$rep" "$p50" "$p99" "$p999" "$n" "$cpu" "$err" >>"$HOP_TSV"
        note "$(printf '%-22s c=%-3s %-22s rep %s: p50 %6s µs p99 %6s µs' "$wl" "$c" "${TNAME[$tg]}" "$rep" "$p50" "$p99")"
    else
        [[ -z "$err" ]] && err="pgbench exited with status $rc"
        printf '%s\t%s\t%s\t%s\tfail\t\t\t\t\t%s\t%s\n' "$wl" "$c" "$tg" "$rep" "$cpu" "$err" >>"$HOP_TSV"
        note "$(printf '%-22s c=%-3s %-22s rep %s: FAILED: %s' "$wl" "$c" "${TNAME[$tg]}" "$rep" "$err")"
    fi
}
log "latency: ${#HOP_WORKLOADS[@]} workloads x clients ${HOP_CLIENTS[*]} x ${#TARGETS[@]} targets x $HOP_REPS rep(s), ${T_HOP}s runs"
case_no=0
for rep in $(seq "$HOP_REPS"); do
    for wl in "${HOP_WORKLOADS[@]}"; do
        for c in "${HOP_CLIENTS[@]}"; do
            tl=("${TARGETS[@]}"); (( c == 1 )) && tl+=(pgbouncer_unix lsnpool_unix)
            n=${#tl[@]}
            for i in $(seq 0 $((n - 1))); do
                run_hop "$wl" "$c" "${tl[$(( (i + case_no) % n ))]}" "$rep" "$T_HOP"
            done
            case_no=$((case_no + 1))
        done
    done
done

"$LOADGEN" latency-chart --tsv "$HOP_TSV" --out "$HOP_CHART" >&2 || note "latency chart failed"

# ---------------------------------------------------------------- TCP vs Unix socket to the server
# Pooler CPU per transaction at 50 clients with each pooler reaching the primary over TCP and over
# its Unix socket, alternated within each repetition (the pgbench matrix above has only TCP).
UNIX_TARGETS=(pgbouncer lsnpool_primary pgbouncer_unix lsnpool_unix)
log "TCP vs Unix socket: select-only simple, 50 clients, ${#UNIX_TARGETS[@]} targets x $REPS rep(s), ${T_MAIN}s runs"
printf 'workload\tclients\ttarget\trep\tstatus\ttps\txacts\tpooler_cpu_s\terror\tpgbench_cpu_s\tmachine_cpu_s\n' >"$UNIX_TSV"
for rep in $(seq "$REPS"); do
    n=${#UNIX_TARGETS[@]}
    for i in $(seq 0 $((n - 1))); do
        run_pgbench "$UNIX_TSV" "select-only simple" 50 "${UNIX_TARGETS[$(( (i + rep) % n ))]}" "$rep" "$T_MAIN"
    done
done
[[ -n "${LSN_UNIX_PID:-}" ]] && stop_pid "$LSN_UNIX_PID"
[[ -n "${PGB_UNIX_PID:-}" ]] && stop_pid "$PGB_UNIX_PID"
fi

# ---------------------------------------------------------------- commit-LSN capture cost
if section capture; then
log "commit-LSN capture: tpcb-like simple, 50 clients, lsnpool appdb, on vs off, $CAP_REPS rep(s)"
lsnpool_config "$W/lsnpool-nocap.toml" "$LSN_OFF_PORT"
start_lsnpool lsnpool-nocap "$W/lsnpool-nocap.toml" "$LSN_OFF_PORT" LSNPOOL_ROUTING__CAPTURE_COMMIT_LSN=false; LSN_OFF_PID=$STARTED_PID
# Both sides fresh and alike but for the setting (the matrix's instance has served 500-client
# runs, which would make it the odd one out).
lsnpool_config "$W/lsnpool-cap.toml" "$LSN_CAP_PORT"
start_lsnpool lsnpool-cap "$W/lsnpool-cap.toml" "$LSN_CAP_PORT"; LSN_CAP_PID=$STARTED_PID
printf 'workload\tclients\ttarget\trep\tstatus\ttps\txacts\tpooler_cpu_s\terror\tpgbench_cpu_s\tmachine_cpu_s\n' >"$CAP_TSV"
for rep in $(seq "$CAP_REPS"); do
    if (( rep % 2 )); then order=(lsnpool_appdb_cap lsnpool_appdb_nocap); else order=(lsnpool_appdb_nocap lsnpool_appdb_cap); fi
    for tg in "${order[@]}"; do run_pgbench "$CAP_TSV" "tpcb-like simple" 50 "$tg" "$rep" "$CAP_T"; done
done
stop_pid "$LSN_OFF_PID"
stop_pid "$LSN_CAP_PID"

fi

# The throughput instances are done: stop them so they do not poll or hold memory meanwhile.
[[ -n "${LSN_PID:-}" ]] && stop_pid "$LSN_PID"
[[ -n "${PGB_PID:-}" ]] && stop_pid "$PGB_PID"

# ---------------------------------------------------------------- read-after-write
url() { echo "host=127.0.0.1 port=$1 user=postgres password=postgres dbname=$2"; }
if section raw; then
log "read-after-write: $RAW_CLIENTS clients, k=$RAW_K, ${RAW_SECONDS}s per point, r2 apply delay ${RAW_DELAYS[*]} ms"
lsnpool_config "$W/lsnpool-raw.toml" "$LSN_RAW_PORT" "
[clusters.appdb_r2]
database = \"$DB\"
primary = \"127.0.0.1:$PRIMARY\"
replicas = [\"127.0.0.1:$R2\"]"
start_lsnpool lsnpool-raw "$W/lsnpool-raw.toml" "$LSN_RAW_PORT"; RAW_PID=$STARTED_PID
raw_run() {  # raw_run DELAY LABEL args...
    local d="$1" label="$2"; shift 2
    timeout $((RAW_SECONDS + 60)) "$LOADGEN" raw --label "$label" --delay-ms "$d" --clients "$RAW_CLIENTS" --k "$RAW_K" \
        --seconds "$RAW_SECONDS" --setup "$(url $PRIMARY $DB)" --csv "$RAW_CSV" "$@" 2>>"$W/raw.log" | tee -a "$W/raw.log" >&2 \
        || note "read-after-write $label at ${d}ms failed (see $W/raw.log)"
}
for d in "${RAW_DELAYS[@]}"; do
    "$PGENV" delay "${d}ms" >/dev/null || note "could not set r2's delay to ${d}ms"
    sleep 1
    raw_run "$d" "naive split (reads on r2)" --write "$(url $PRIMARY $DB)" --read "$(url $R2 $DB)"
    raw_run "$d" "lsnpool (r1 + r2)" --write "$(url "$LSN_RAW_PORT" appdb)"
    raw_run "$d" "lsnpool (r2 only)" --write "$(url "$LSN_RAW_PORT" appdb_r2)"
done
"$PGENV" delay 0 >/dev/null || note "could not restore r2's delay to 0"
stop_pid "$RAW_PID"
"$LOADGEN" chart --csv "$RAW_CSV" --out "$CHART" >&2 || note "chart failed"
fi

# ---------------------------------------------------------------- read-after-write across connections
# Cross-connection (issue 10): each writer writes on one connection and reads back on another,
# beside 6 read-only clients, per level, at r2 apply delays ${CROSS_DELAYS[*]} ms. Two more
# instances sharing Redis (when testenv's Redis answers) read back what the other wrote. Then
# the token store's own cost: commit and read-back latency, one client, embedded vs Redis.
if section cross; then
log "read-after-write across connections: 6 writers + 6 readers, ${RAW_SECONDS}s per row, r2 apply delay ${CROSS_DELAYS[*]} ms; token store latency ($LAT_N commits)"
rm -f "$CROSS_CSV" "$LAT_TSV"
cross_run() {  # cross_run DELAY LABEL args...
    local d="$1" label="$2"; shift 2
    timeout $((RAW_SECONDS + 60)) "$LOADGEN" raw --label "$label" --delay-ms "$d" --clients 6 --readers 6 --k "$RAW_K" \
        --seconds "$RAW_SECONDS" --setup "$(url $PRIMARY $DB)" --csv "$CROSS_CSV" "$@" 2>>"$W/raw.log" | tee -a "$W/raw.log" >&2 \
        || note "cross-connection $label at ${d}ms failed (see $W/raw.log)"
}
lat_run() {  # lat_run LABEL args...
    local label="$1"; shift
    timeout 300 "$LOADGEN" latency --label "$label" --n "$LAT_N" --setup "$(url $PRIMARY $DB)" --tsv "$LAT_TSV" "$@" 2>>"$W/raw.log" \
        | tee -a "$W/raw.log" >&2 || note "token store latency $label failed (see $W/raw.log)"
}
# An instance on the shipped routing defaults (global, lsn_wait_timeout 20ms).
CROSS_PORT=$((LSN_RAW_PORT + 10))
lsnpool_config "$W/lsnpool-cross.toml" "$CROSS_PORT"
start_lsnpool lsnpool-cross "$W/lsnpool-cross.toml" "$CROSS_PORT" LSNPOOL_ROUTING__CONSISTENCY=global LSNPOOL_ROUTING__LSN_WAIT_TIMEOUT=20ms
CROSS_PID=$STARTED_PID
LSNU="$(url "$CROSS_PORT" appdb)"
REDIS_PIDS=()
if command -v redis-cli >/dev/null && redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    for i in 1 2; do
        lsnpool_config "$W/lsnpool-redis$i.toml" $((CROSS_PORT + i))
        start_lsnpool "lsnpool-redis$i" "$W/lsnpool-redis$i.toml" $((CROSS_PORT + i)) \
            LSNPOOL_ROUTING__TOKEN_STORE="redis://127.0.0.1:$REDIS_PORT" LSNPOOL_ROUTING__CONSISTENCY=global LSNPOOL_ROUTING__LSN_WAIT_TIMEOUT=20ms
        REDIS_PIDS+=("$STARTED_PID")
    done
    R1U="$(url $((CROSS_PORT + 1)) appdb)"; R2U="$(url $((CROSS_PORT + 2)) appdb)"
    # A Redis without lsnpool's data settles for max_replica_lag (10 s), reads on the primary:
    # wait until a read through the second instance reaches a replica.
    for _ in $(seq 150); do
        [[ "$(psql -h 127.0.0.1 -p $((CROSS_PORT + 2)) -U postgres -X -At -d appdb -c "SELECT pg_is_in_recovery()" 2>/dev/null)" == t ]] && break
        sleep 0.1
    done
else
    note "no Redis on 127.0.0.1:$REDIS_PORT (testenv/pgenv.sh up starts one): the Redis rows are skipped"
fi
for d in "${CROSS_DELAYS[@]}"; do
    "$PGENV" delay "${d}ms" >/dev/null || note "could not set r2's delay to ${d}ms"
    sleep 1
    cross_run "$d" "naive split (reads on r2)" --write "$(url $PRIMARY $DB)" --read "$(url $R2 $DB)"
    cross_run "$d" "primary only (strong)" --write "$LSNU" --read "$LSNU" --level strong
    cross_run "$d" "read-your-writes" --write "$LSNU" --read "$LSNU" --level read-your-writes
    cross_run "$d" "global (default)" --write "$LSNU" --read "$LSNU"
    cross_run "$d" "session key (embedded)" --write "$LSNU" --read "$LSNU" --level session --keyed 1
    cross_run "$d" "linearizable" --write "$LSNU" --read "$LSNU" --level linearizable
    if (( ${#REDIS_PIDS[@]} )); then
        cross_run "$d" "session key (Redis; 2 instances)" --write "$R1U" --read "$R2U" --level session --keyed 1
        cross_run "$d" "global (Redis; 2 instances)" --write "$R1U" --read "$R2U"
    fi
done
"$PGENV" delay 0 >/dev/null || note "could not restore r2's delay to 0"
sleep 1
lat_run "global, embedded" --write "$LSNU" --read "$LSNU"
lat_run "session key, embedded" --write "$LSNU" --read "$LSNU" --level session --keyed 1
if (( ${#REDIS_PIDS[@]} )); then
    lat_run "global, Redis" --write "$R1U" --read "$R2U"
    lat_run "session key, Redis" --write "$R1U" --read "$R2U" --level session --keyed 1
fi
stop_pid "$CROSS_PID"
for pid in "${REDIS_PIDS[@]}"; do stop_pid "$pid"; done
fi

# ---------------------------------------------------------------- memory per idle client
if section memory; then
log "memory: $MEM_N idle clients on a fresh lsnpool and a fresh PgBouncer"
mem_run() {  # mem_run NAME PORT DB PID
    local name="$1" port="$2" db="$3" pid="$4"
    timeout 300 "$LOADGEN" idle --url "$(url "$port" "$db")" --n "$MEM_N" --pid "$pid" --concurrency 64 --out "$W/mem-$name.txt" >&2 \
        || { note "idle-clients run against $name failed"; echo "requested=$MEM_N reached=0 failed=$MEM_N first_error=loadgen_failed" >"$W/mem-$name.txt"; }
}
lsnpool_config "$W/lsnpool-mem.toml" "$LSN_MEM_PORT"
start_lsnpool lsnpool-mem "$W/lsnpool-mem.toml" "$LSN_MEM_PORT"; MEM_PID=$STARTED_PID
mem_run lsnpool "$LSN_MEM_PORT" appdb "$MEM_PID"
stop_pid "$MEM_PID"
if (( HAVE_PGB )); then
    start_pgbouncer pgbouncer-mem "$PGB_MEM_PORT"; PGBM_PID=$STARTED_PID
    mem_run pgbouncer "$PGB_MEM_PORT" appdb "$PGBM_PID"
    stop_pid "$PGBM_PID"
fi
[[ -n "$PGB_TMP" ]] && cp "$PGB_TMP"/*.log "$W/" 2>/dev/null

fi

# ---------------------------------------------------------------- instructions per transaction
# callgrind counts instructions, not time: the same count on every run of the same build, whatever
# else the machine is doing. The number to compare before and after a relay or routing change
# when the timed lines are within their noise. lsnpool runs under valgrind on its own port; the
# counters are zeroed after a warm-up and dumped after INSTR_N select-only transactions at 1
# client through app_primary. The monitor polls every second there (its polls are off the
# transaction's path, and at 10 ms they would be a tenth of the count).
INSTR_N=2000
if section instr; then
printf 'workload\tinstructions_per_xact\txacts\terror\n' >"$INSTR_TSV"
if command -v valgrind >/dev/null 2>&1 && command -v callgrind_control >/dev/null 2>&1; then
    log "instructions per transaction: lsnpool under callgrind, 1 client, $INSTR_N transactions per workload"
    lsnpool_config "$W/lsnpool-instr.toml" "$LSN_INSTR_PORT"
    sed -i 's/^lsn_poll_interval = .*/lsn_poll_interval = "1s"/' "$W/lsnpool-instr.toml"
    rm -f "$W"/callgrind.*
    LSNPOOL_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$W/callgrind.%p" "$LSNPOOL" --config "$W/lsnpool-instr.toml" >"$W/lsnpool-instr.log" 2>&1 &
    INSTR_PID=$!; PIDS+=("$INSTR_PID")
    wait_port "$LSN_INSTR_PORT" "$INSTR_PID" lsnpool-instr "$W/lsnpool-instr.log"
    part=0
    for wl in "select-only simple" "select-only prepared"; do
        # shellcheck disable=SC2046
        timeout 300 pgbench -h 127.0.0.1 -p "$LSN_INSTR_PORT" -U postgres $(wl_args "$wl") -n -c 1 -j 1 -t 300 app_primary >/dev/null 2>&1
        callgrind_control -z "$INSTR_PID" >/dev/null 2>&1
        out="$W/instr-${wl// /_}.log"
        # shellcheck disable=SC2046
        timeout 300 pgbench -h 127.0.0.1 -p "$LSN_INSTR_PORT" -U postgres $(wl_args "$wl") -n -c 1 -j 1 -t "$INSTR_N" app_primary >"$out" 2>&1
        # Each dump is the next part file: .1, .2; a dump that failed leaves no count, not the last one.
        callgrind_control -d "$INSTR_PID" >/dev/null 2>&1 && part=$((part + 1))
        dump="$W/callgrind.$INSTR_PID.$part"
        ir=""; [[ $part -gt 0 && -s "$dump" ]] && ir="$(awk '/^summary:/ { print $2 }' "$dump")"
        [[ $part -gt 0 ]] && rm -f "$W/callgrind.$INSTR_PID.$((part - 1))" 2>/dev/null
        xacts="$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out" | head -1)"
        if [[ -n "$ir" && "${xacts:-0}" -gt 0 ]]; then
            printf '%s\t%s\t%s\t\n' "$wl" "$((ir / xacts))" "$xacts" >>"$INSTR_TSV"
            note "$(printf '%-22s %8d instructions per transaction (callgrind)' "$wl" "$((ir / xacts))")"
        else
            printf '%s\t\t\t%s\n' "$wl" "no count: $(grep -m1 -E 'error|FATAL' "$out" | tr '\t|' '  ' | cut -c1-200)" >>"$INSTR_TSV"
        fi
    done
    stop_pid "$INSTR_PID"
else
    printf '%s\t\t\t%s\n' "select-only simple" "valgrind is not installed" >>"$INSTR_TSV"
    note "valgrind is not installed: no instruction counts (apt-get install valgrind)"
fi
fi

# ---------------------------------------------------------------- micro-benchmarks
if section micro; then
log "criterion micro-benchmarks"
BENCH_ALLOC_OUT="$W/allocs.txt" timeout 600 "$MICRO" --bench --discard-baseline "${CRIT[@]}" >"$W/micro.txt" 2>"$W/micro.stderr" \
    || note "micro-benchmarks failed (see $W/micro.stderr)"

fi

ELAPSED=$(( $(date +%s) - T_START ))
PG_VER="$(psql_p -d postgres -c "SHOW server_version" 2>/dev/null)"
PGBENCH_VER="$(pgbench --version 2>/dev/null)"
PGB_VER="$( (( HAVE_PGB )) && pgbouncer --version 2>/dev/null | head -1 || echo "not installed")"
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"
RUN_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')"
declare -p QUICK REPS T_MAIN T_ONE HOP_REPS T_HOP CAP_REPS CAP_T RAW_SECONDS MEM_N NOFILE HAVE_PGB ELAPSED \
    PG_VER PGBENCH_VER PGB_VER GIT_COMMIT LOAD_END RUN_DATE ONLY >"$W/meta.env"
else
    [[ -s "$W/meta.env" ]] || die "no $W/meta.env: run benches/run.sh first"
    # shellcheck disable=SC1091
    source "$W/meta.env"
fi

# ================================================================= report
log "report"
# a partial run (BENCH_ONLY) leaves the other sections' files absent: empty tables, no noise
for f in "$PGB_TSV" "$HOP_TSV" "$UNIX_TSV" "$CAP_TSV" "$RAW_CSV" "$MICRO_TSV" "$INSTR_TSV"; do [[ -e "$f" ]] || : >"$f"; done
# instr_count WORKLOAD -> lsnpool's instructions per transaction, or –
instr_count() { awk -F'\t' -v wl="$1" 'NR > 1 && $1 == wl && $2 != "" { print $2; f = 1 } END { if (!f) print "–" }' "$INSTR_TSV"; }

# stats TSV WORKLOAD CLIENTS TARGET -> "median min max n_ok n_failed first_error"
stats() {
    awk -F'\t' -v wl="$2" -v c="$3" -v tg="$4" '
        NR > 1 && $1 == wl && $2 == c && $3 == tg {
            if ($5 == "ok") { v[n++] = $6; if (warn == "") warn = $9 } else { nf++; if (err == "") err = $9 }
        }
        END {
            if (n == 0) { printf "- - - 0 %d %s\n", nf, (err == "" ? "not run" : err); exit }
            for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
            med = (n % 2) ? v[int(n / 2)] : (v[n / 2 - 1] + v[n / 2]) / 2
            printf "%.0f %.0f %.0f %d %d %s\n", med, v[0], v[n - 1], n, nf, (err == "" ? warn : err)
        }' "$1"
}
median() { local s; s="$(stats "$@")"; echo "${s%% *}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "–"; else printf "%.2f", a / b }'; }
fmt_cell() {  # "median (min–max)", or "FAIL: error"; runs that failed are counted and quoted
    local med min max n nf err
    read -r med min max n nf err <<<"$(stats "$@")"
    if (( n == 0 )); then printf '**FAIL**: `%s`' "${err:-no result}"
    elif (( n > 1 )); then printf '%s (%s–%s)' "$med" "$min" "$max"
    else printf '%s' "$med"; fi
    if (( n > 0 && nf > 0 )); then printf ' — %d of %d runs **failed**: `%s`' "$nf" $((n + nf)) "$err"
    elif (( n > 0 )) && [[ -n "$err" ]]; then printf ' — with errors: `%s`' "$err"; fi
}
# The median of v[0..n), an awk function for the helpers below.
AWK_MEDIAN='function median(v, n,   i, j, t) {
    for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return (n % 2) ? v[int(n / 2)] : (v[n / 2 - 1] + v[n / 2]) / 2
}'
# cpu_per_xact TSV WORKLOAD CLIENTS TARGET XACTS_COLUMN CPU_COLUMN -> pooler CPU per transaction
# (µs), median over runs
cpu_per_xact() {
    awk -F'\t' -v wl="$2" -v c="$3" -v tg="$4" -v xc="$5" -v cc="$6" "$AWK_MEDIAN"'
        NR > 1 && $1 == wl && $2 == c && $3 == tg && $5 == "ok" && $xc > 0 && $cc != "" { v[n++] = 1e6 * $cc / $xc }
        END { if (n == 0) print "–"; else printf "%.1f", median(v, n) }' "$1"
}
cpu_us() { cpu_per_xact "$@" 7 8; }    # pgbench.tsv, capture.tsv
client_cpu_us() { cpu_per_xact "$@" 7 10; }   # pgbench's own CPU (pgbench.tsv)
machine_cpu_us() { cpu_per_xact "$@" 7 11; }  # the whole machine's (pgbench.tsv)
hop_cpu() { cpu_per_xact "$@" 9 10; }  # hop.tsv
# hop_pct TSV WORKLOAD CLIENTS TARGET COLUMN -> median over runs of a latency column (µs)
hop_pct() {
    awk -F'\t' -v wl="$2" -v c="$3" -v tg="$4" -v col="$5" "$AWK_MEDIAN"'
        NR > 1 && $1 == wl && $2 == c && $3 == tg && $5 == "ok" { v[n++] = $col }
        END { if (n == 0) print "–"; else printf "%.0f", median(v, n) }' "$1"
}
# hop_added TSV WORKLOAD CLIENTS TARGET COLUMN -> median over repetitions of (target − direct), µs
hop_added() {
    awk -F'\t' -v wl="$2" -v c="$3" -v tg="$4" -v col="$5" "$AWK_MEDIAN"'
        NR > 1 && $1 == wl && $2 == c && $5 == "ok" && $3 == "direct" { d[$4] = $col }
        NR > 1 && $1 == wl && $2 == c && $5 == "ok" && $3 == tg { x[$4] = $col }
        END {
            for (r in x) if (r in d) v[n++] = x[r] - d[r]
            if (n == 0) print "–"; else printf "%.0f", median(v, n)
        }' "$1"
}
le() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "–" || a == "" || b == "–" || b == "") print "-"; else print (a <= b) ? 1 : 0 }'; }
kv() { sed -n "s/.*\b$2=\([^ ]*\).*/\1/p" "$1" 2>/dev/null | head -1; }
first_error_of() { sed -n 's/.*first_error=//p' "$1" 2>/dev/null | head -1; }

# micro: name -> ns (median estimate), from criterion's "time: [lo mid hi]" lines
awk '
    /^(frames|classify|decide)\// { name = $1 }
    /time:/ && !/%/ {
        line = $0; sub(/.*time: *\[/, "", line); sub(/\].*/, "", line)
        split(line, f, " ")
        mult["ps"] = 0.001; mult["ns"] = 1; mult["µs"] = 1000; mult["us"] = 1000; mult["ms"] = 1e6; mult["s"] = 1e9
        printf "%s\t%.2f\t%.2f\t%.2f\n", name, f[1] * mult[f[2]], f[3] * mult[f[4]], f[5] * mult[f[6]]
    }' "$W/micro.txt" >"$MICRO_TSV" 2>/dev/null

# ---- machine
CPU_MODEL="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
MEM_TOTAL="$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"

OUT="$RES/latest.md"
[[ -n "$ONLY" ]] && OUT="$W/partial.md"
{
echo "# lsnpool benchmark results"
echo
echo "Produced by \`make bench$( (( QUICK )) && echo " QUICK=1")\` (benches/run.sh) in ${ELAPSED} s. Do not edit by hand; re-run to refresh."
echo
echo "| | |"
echo "|---|---|"
echo "| date | $RUN_DATE |"
[[ -n "${ONLY:-}" ]] && echo "| sections | only $ONLY (BENCH_ONLY): the other tables are empty |"
echo "| mode | $( (( QUICK )) && echo "QUICK: 1 run per case, ${T_MAIN} s runs (${T_ONE} s at 1 client)" || echo "full: $REPS runs per case (median, min–max), ${T_MAIN} s runs (${T_ONE} s at 1 client)") |"
echo "| machine | $(nproc) CPUs ($CPU_MODEL), $MEM_TOTAL RAM, $(uname -sr); load average at the end: $LOAD_END |"
echo "| PostgreSQL | $PG_VER (primary + 2 streaming replicas on the same machine), $PGBENCH_VER |"
echo "| PgBouncer | $PGB_VER |"
echo "| lsnpool | $GIT_COMMIT, release build |"
echo
echo "Setup: PostgreSQL, the pooler and pgbench share the machine's CPUs, so every cycle a pooler spends is one the"
echo "database does not get. Pool size $POOL server connections per node for both poolers (transaction mode,"
echo "clients authenticate with md5). pgbench scale $SCALE in its own database \`$DB\`, \`-n -j 2\` (\`-j 1\` at 1 client)."
echo "Targets: **direct** = the primary itself (max_connections 300); **PgBouncer** = to the primary;"
echo "**lsnpool app_primary** = the \`strong\` alias, everything to the primary (like PgBouncer);"
echo "**lsnpool appdb** = LSN routing (reads to r1/r2 when fresh enough, so select-only load is spread over three"
echo "PostgreSQL servers on the same CPUs). The machine is shared with other work: numbers are noisy; the targets"
echo "are alternated within each repetition to share the noise."
echo

echo "## Targets (issue 5)"
echo
echo "| target | measured | result |"
echo "|---|---|---|"
target_row() {  # target_row TEXT VALUE OK(1/0/-)
    local res="SHORT"; [[ "$3" == 1 ]] && res="PASS"; [[ "$3" == - ]] && res="n/a"
    echo "| $1 | $2 | $res |"
}
ge() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "–" || a == "") print "-"; else print (a >= b) ? 1 : 0 }'; }
SS="select-only simple"; SP="select-only prepared"; TP="tpcb-like simple"
d_ss=$(median "$PGB_TSV" "$SS" 50 direct); b_ss=$(median "$PGB_TSV" "$SS" 50 pgbouncer)
d_sp=$(median "$PGB_TSV" "$SP" 50 direct)
# The CPU budget a pooler has for 1.2× PgBouncer: with the CPUs saturated, tps × (work outside
# the pooler + pooler CPU) = all CPU time, and PgBouncer's run gives the work outside it.
NCPU="$(nproc)"
budget_for() {  # budget_for FACTOR TPS CPU_US: pooler µs per transaction allowed for FACTOR× TPS
    awk -v f="$1" -v t="$2" -v u="$3" -v n="$NCPU" 'BEGIN { if (t == "–" || u == "–" || t == "") { print "–"; exit }
        outside = n * 1e6 / t - u; printf "%.1f", n * 1e6 / (f * t) - outside }'
}
b_ss_cpu=$(cpu_us "$PGB_TSV" "$SS" 50 pgbouncer); budget_ss=$(budget_for 1.2 "$b_ss" "$b_ss_cpu")
b_sp=$(median "$PGB_TSV" "$SP" 50 pgbouncer)
for tg in lsnpool_primary lsnpool_appdb; do
    l=$(median "$PGB_TSV" "$SS" 50 "$tg"); r=$(ratio "$l" "$b_ss")
    target_row "select-only simple, 50 clients, ${TNAME[$tg]} ≥ 1.2× PgBouncer" "$r× ($l vs $b_ss tps); 1.2× leaves the pooler $budget_ss µs of CPU per transaction, PgBouncer used $b_ss_cpu, lsnpool $(cpu_us "$PGB_TSV" "$SS" 50 "$tg")" "$(ge "$r" 1.2)"
    r=$(ratio "$l" "$d_ss")
    target_row "select-only simple, 50 clients, ${TNAME[$tg]} ≥ 0.9× direct" "$r× ($l vs $d_ss tps); PgBouncer $(ratio "$b_ss" "$d_ss")×" "$(ge "$r" 0.9)"
done
for tg in lsnpool_primary lsnpool_appdb; do
    l=$(median "$PGB_TSV" "$SP" 50 "$tg"); r=$(ratio "$l" "$d_sp")
    target_row "select-only prepared, 50 clients, ${TNAME[$tg]} ≥ 0.9× direct" "$r× ($l vs $d_sp tps); PgBouncer $(ratio "$b_sp" "$d_sp")×" "$(ge "$r" 0.9)"
done
for wl in "${WORKLOADS[@]}"; do
    pa=$(median "$PGB_TSV" "$wl" 500 pgbouncer); pb=$(median "$PGB_TSV" "$wl" 50 pgbouncer)
    for tg in lsnpool_primary lsnpool_appdb; do
        a=$(median "$PGB_TSV" "$wl" 500 "$tg"); b=$(median "$PGB_TSV" "$wl" 50 "$tg"); r=$(ratio "$a" "$b")
        target_row "$wl, ${TNAME[$tg]}: 500 clients through pool $POOL within 10 % of 50 clients" "$r× ($a vs $b tps); PgBouncer $(ratio "$pa" "$pb")×" "$(ge "$r" 0.9)"
    done
done
on=$(median "$CAP_TSV" "$TP" 50 lsnpool_appdb_cap); off=$(median "$CAP_TSV" "$TP" 50 lsnpool_appdb_nocap); r=$(ratio "$on" "$off")
read -r _ on_min on_max _ <<<"$(stats "$CAP_TSV" "$TP" 50 lsnpool_appdb_cap)"; read -r _ off_min off_max _ <<<"$(stats "$CAP_TSV" "$TP" 50 lsnpool_appdb_nocap)"
target_row "tpcb-like, 50 clients, lsnpool appdb: capture on ≥ 0.95× capture off" "$r× ($on vs $off tps; runs: on $on_min–$on_max, off $off_min–$off_max; pooler CPU $(cpu_us "$CAP_TSV" "$TP" 50 lsnpool_appdb_cap) vs $(cpu_us "$CAP_TSV" "$TP" 50 lsnpool_appdb_nocap) µs per transaction)" "$(ge "$r" 0.95)"
bpc=$(kv "$W/mem-lsnpool.txt" bytes_per_client); reached=$(kv "$W/mem-lsnpool.txt" reached)
ok=-; [[ -n "$bpc" && "${reached:-0}" -gt 0 ]] && ok=$(awk -v b="$bpc" 'BEGIN { print (b <= 2048) ? 1 : 0 }')
target_row "≤ 2 KiB RSS per idle client (lsnpool)" "${bpc:-–} bytes/client (${reached:-0} clients)" "$ok"
dmax=$(awk -F'\t' '$1 ~ /^decide\// { if ($3 > m) m = $3 } END { if (m == "") print "–"; else printf "%.1f", m }' "$MICRO_TSV")
ok=-; [[ "$dmax" != – ]] && ok=$(awk -v d="$dmax" 'BEGIN { print (d < 1000) ? 1 : 0 }')
target_row "routing decision < 1 µs (slowest decide case)" "$dmax ns" "$ok"
echo
echo "## Targets (issue 13: latency)"
echo
echo "The last column says why a SHORT line falls short; the profiles behind it are in"
echo "[analysis.md](analysis.md) (written by hand)."
echo
echo "| target | measured | result | why, when short |"
echo "|---|---|---|---|"
target_row_why() {  # target_row_why TEXT VALUE OK(1/0/-) WHY: WHY is shown only on a SHORT line
    local res="SHORT" why="$4"; [[ "$3" == 1 ]] && res="PASS"; [[ "$3" == - ]] && res="n/a"
    [[ "$res" != SHORT ]] && why=""
    echo "| $1 | $2 | $res | $why |"
}
WHY_HOP="the forward path: lsnpool reads every statement (classification, routing, the lease) before it writes to the server, PgBouncer copies bytes; at a few µs the spread between runs of the direct baseline decides the rest"
WHY_APPDB="as through app_primary (in analysis.md's profile lsnpool's own work per transaction is within 3 % of it: instructions, syscalls), and the read runs on a replica that shares the two CPUs with the primary"
for wl in "$SS" "$SP"; do
    for tg in lsnpool_primary lsnpool_appdb; do
        al=$(hop_added "$HOP_TSV" "$wl" 1 "$tg" 6); ab=$(hop_added "$HOP_TSV" "$wl" 1 pgbouncer 6)
        lim=$(awk -v b="$ab" 'BEGIN { if (b == "–") print "–"; else printf "%.0f", 0.8 * b }')
        why=$WHY_HOP; [[ "$tg" == lsnpool_appdb ]] && why=$WHY_APPDB
        target_row_why "$wl, 1 client, ${TNAME[$tg]}: added p50 latency ≤ 0.8× PgBouncer's" "+$al µs vs PgBouncer +$ab µs ($(ratio "$al" "$ab")×; p50 direct $(hop_pct "$HOP_TSV" "$wl" 1 direct 6) µs)" "$(le "$al" "$lim")" "$why"
    done
done
for tg in lsnpool_primary lsnpool_appdb; do
    l=$(hop_pct "$HOP_TSV" "$SS" 8 "$tg" 7); b=$(hop_pct "$HOP_TSV" "$SS" 8 pgbouncer 7)
    why="the p99 of ${T_HOP} s runs is a handful of slow transactions: scheduling on 2 shared CPUs"; [[ "$tg" == lsnpool_appdb ]] && why=$WHY_APPDB
    target_row_why "select-only simple, 8 clients, ${TNAME[$tg]}: p99 ≤ PgBouncer's" "$l µs vs $b µs (direct $(hop_pct "$HOP_TSV" "$SS" 8 direct 7) µs)" "$(le "$l" "$b")" "$why"
done
lc=$(cpu_us "$PGB_TSV" "$SS" 50 lsnpool_primary)
lim=$(awk -v b="$b_ss_cpu" 'BEGIN { if (b == "–") print "–"; else printf "%.2f", 0.9 * b }')
target_row_why "select-only simple, 50 clients, lsnpool app_primary: pooler CPU per transaction ≤ 0.9× PgBouncer's" "$lc µs vs $b_ss_cpu µs ($(ratio "$lc" "$b_ss_cpu")×)" "$(le "$lc" "$lim")" \
    "most of both poolers' CPU is the kernel's (loopback TCP, wake-ups: ≈ 90 % of PgBouncer's in analysis.md's profile); 0.9× would need lsnpool's user space, which classifies and routes every statement, under ≈ 1 µs per transaction"
a=$(median "$PGB_TSV" "$SS" 500 lsnpool_primary); b=$(median "$PGB_TSV" "$SS" 50 lsnpool_primary); r=$(ratio "$a" "$b")
target_row_why "select-only simple, lsnpool app_primary: 500 clients through pool $POOL ≥ 0.95× of 50 clients" "$r× ($a vs $b tps); PgBouncer $(ratio "$(median "$PGB_TSV" "$SS" 500 pgbouncer)" "$b_ss")×" "$(ge "$r" 0.95)" \
    "the CPUs are saturated and every part costs more per transaction with 500 sockets: pgbench $(client_cpu_us "$PGB_TSV" "$SS" 50 lsnpool_primary) → $(client_cpu_us "$PGB_TSV" "$SS" 500 lsnpool_primary) µs, lsnpool $(cpu_us "$PGB_TSV" "$SS" 50 lsnpool_primary) → $(cpu_us "$PGB_TSV" "$SS" 500 lsnpool_primary) µs, the whole machine $(machine_cpu_us "$PGB_TSV" "$SS" 50 lsnpool_primary) → $(machine_cpu_us "$PGB_TSV" "$SS" 500 lsnpool_primary) µs (table below); callgrind (analysis.md): lsnpool's instructions per transaction rise 3.5 %, the rest is cache and kernel"
# The same targets with both poolers reaching the primary over its Unix socket.
for wl in "$SS" "$SP"; do
    al=$(hop_added "$HOP_TSV" "$wl" 1 lsnpool_unix 6); ab=$(hop_added "$HOP_TSV" "$wl" 1 pgbouncer_unix 6)
    lim=$(awk -v b="$ab" 'BEGIN { if (b == "–") print "–"; else printf "%.0f", 0.8 * b }')
    target_row_why "$wl, 1 client, both poolers over the server's Unix socket: lsnpool's added p50 latency ≤ 0.8× PgBouncer's" "+$al µs vs PgBouncer +$ab µs ($(ratio "$al" "$ab")×)" "$(le "$al" "$lim")" "$WHY_HOP"
done
lc=$(cpu_us "$UNIX_TSV" "$SS" 50 lsnpool_unix); bc=$(cpu_us "$UNIX_TSV" "$SS" 50 pgbouncer_unix)
lim=$(awk -v b="$bc" 'BEGIN { if (b == "–") print "–"; else printf "%.2f", 0.9 * b }')
target_row_why "select-only simple, 50 clients, both poolers over the server's Unix socket: lsnpool's CPU per transaction ≤ 0.9× PgBouncer's" "$lc µs vs $bc µs ($(ratio "$lc" "$bc")×)" "$(le "$lc" "$lim")" \
    "as over TCP: the kernel's share is common to both, and lsnpool's user space (classification, routing) is larger"
l=$(median "$PGB_TSV" "$SS" 50 lsnpool_primary); r=$(ratio "$l" "$b_ss")
target_row_why "select-only simple, 50 clients, lsnpool app_primary: throughput ≥ 1.0× PgBouncer" "$r× ($l vs $b_ss tps)" "$(ge "$r" 1.0)" "at saturation tps follows CPU per transaction: the pooler's and the runs' min–max are in the tables below"
echo

echo "## pgbench"
echo
echo "tps (higher is better)$( (( REPS > 1 )) && echo ": median of $REPS runs (min–max)"). A target that cannot serve a case shows its error."
for wl in "${WORKLOADS[@]}"; do
    echo
    echo "### $wl (\`pgbench $(wl_args "$wl")\`)"
    echo
    echo "| clients | direct | PgBouncer | lsnpool app_primary | lsnpool appdb | app_primary / direct | app_primary / PgBouncer | appdb / direct | appdb / PgBouncer |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for c in "${CLIENTS[@]}"; do
        d=$(median "$PGB_TSV" "$wl" "$c" direct); b=$(median "$PGB_TSV" "$wl" "$c" pgbouncer)
        p=$(median "$PGB_TSV" "$wl" "$c" lsnpool_primary); a=$(median "$PGB_TSV" "$wl" "$c" lsnpool_appdb)
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$c" \
            "$(fmt_cell "$PGB_TSV" "$wl" "$c" direct)" "$(fmt_cell "$PGB_TSV" "$wl" "$c" pgbouncer)" \
            "$(fmt_cell "$PGB_TSV" "$wl" "$c" lsnpool_primary)" "$(fmt_cell "$PGB_TSV" "$wl" "$c" lsnpool_appdb)" \
            "$(ratio "$p" "$d")" "$(ratio "$p" "$b")" "$(ratio "$a" "$d")" "$(ratio "$a" "$b")"
    done
done
echo
echo "### Pooler CPU per transaction"
echo
echo "CPU time (user + system) the pooler process used during the run, divided by the transactions pgbench"
echo "completed: what each transaction costs in the pooler (median, µs)."
echo
echo "| workload | clients | PgBouncer | lsnpool app_primary | lsnpool appdb |"
echo "|---|---:|---:|---:|---:|"
for wl in "${WORKLOADS[@]}"; do
    for c in "${CLIENTS[@]}"; do
        echo "| $wl | $c | $(cpu_us "$PGB_TSV" "$wl" $c pgbouncer) | $(cpu_us "$PGB_TSV" "$wl" $c lsnpool_primary) | $(cpu_us "$PGB_TSV" "$wl" $c lsnpool_appdb) |"
    done
done
echo

echo "### The server over TCP or over its Unix socket"
echo
echo "Both poolers can reach a server on their own host over its Unix-domain socket (lsnpool: a node"
echo "address \`/socket/dir:port\`; PgBouncer: \`host=/socket/dir\`). select-only simple; added p50 at"
echo "1 client from the latency runs below, tps and pooler CPU at 50 clients from runs alternating the"
echo "four (median of $REPS)."
echo
echo "| target | added p50, 1 client, simple (µs) | added p50, 1 client, prepared (µs) | tps, 50 clients | pooler CPU / transaction, 50 clients (µs) |"
echo "|---|---:|---:|---:|---:|"
for tg in pgbouncer pgbouncer_unix lsnpool_primary lsnpool_unix; do
    echo "| ${TNAME[$tg]}$([[ $tg == pgbouncer || $tg == lsnpool_primary ]] && echo ", TCP") | +$(hop_added "$HOP_TSV" "$SS" 1 "$tg" 6) | +$(hop_added "$HOP_TSV" "$SP" 1 "$tg" 6) | $(median "$UNIX_TSV" "$SS" 50 "$tg") | $(cpu_us "$UNIX_TSV" "$SS" 50 "$tg") |"
done
echo

echo "### Where the CPU goes, 50 and 500 clients"
echo
echo "select-only simple, per transaction (median, µs): pgbench's own CPU (the load generator shares the CPUs),"
echo "the pooler's, and the rest of the machine's (PostgreSQL, and kernel work not charged to either)."
echo "With the CPUs saturated, tps follows the total: what rises from 50 to 500 clients is what the"
echo "500-client line loses."
echo
echo "| target | clients | tps | pgbench | pooler | rest | total |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for tg in pgbouncer lsnpool_primary lsnpool_appdb; do
    for c in 50 500; do
        pc=$(client_cpu_us "$PGB_TSV" "$SS" $c "$tg"); po=$(cpu_us "$PGB_TSV" "$SS" $c "$tg"); mc=$(machine_cpu_us "$PGB_TSV" "$SS" $c "$tg")
        rest=$(awk -v m="$mc" -v a="$pc" -v b="$po" 'BEGIN { if (m == "–" || a == "–" || b == "–") print "–"; else printf "%.1f", m - a - b }')
        echo "| ${TNAME[$tg]} | $c | $(median "$PGB_TSV" "$SS" $c "$tg") | $pc | $po | $rest | $mc |"
    done
done
echo

echo "## Latency"
echo
echo "Per-transaction latency from pgbench's own log (\`--log\`, one line per transaction), \`-j 1\`, ${T_HOP} s runs,"
echo "$HOP_REPS run(s) per case (median of the runs' percentiles). **Added** = the target's percentile minus direct's in"
echo "the same repetition (what the pooler's hop costs), median over repetitions. Chart: [latency.png](latency.png)."
for wl in "${HOP_WORKLOADS[@]}"; do
    echo
    echo "### $wl (\`pgbench $(wl_args "$wl")\`)"
    echo
    echo "| clients | target | p50 (µs) | p99 (µs) | p99.9 (µs) | added p50 | added p99 | pooler CPU / transaction (µs) |"
    echo "|---:|---|---:|---:|---:|---:|---:|---:|"
    for c in "${HOP_CLIENTS[@]}"; do
        for tg in "${TARGETS[@]}"; do
            if [[ "$(hop_pct "$HOP_TSV" "$wl" "$c" "$tg" 6)" == – ]]; then
                e="$(awk -F'\t' -v wl="$wl" -v c="$c" -v tg="$tg" 'NR > 1 && $1 == wl && $2 == c && $3 == tg && $5 == "fail" { print $11; exit }' "$HOP_TSV")"
                echo "| $c | ${TNAME[$tg]} | **FAIL**: \`${e:-not run}\` | | | | | |"
                continue
            fi
            ap="–"; a9="–"
            if [[ "$tg" != direct ]]; then ap="+$(hop_added "$HOP_TSV" "$wl" "$c" "$tg" 6)"; a9="+$(hop_added "$HOP_TSV" "$wl" "$c" "$tg" 7)"; fi
            echo "| $c | ${TNAME[$tg]} | $(hop_pct "$HOP_TSV" "$wl" "$c" "$tg" 6) | $(hop_pct "$HOP_TSV" "$wl" "$c" "$tg" 7) | $(hop_pct "$HOP_TSV" "$wl" "$c" "$tg" 8) | $ap | $a9 | $(hop_cpu "$HOP_TSV" "$wl" "$c" "$tg") |"
        done
    done
done
echo
echo "## Commit-LSN capture"
echo
echo "tpcb-like \`-M simple\`, 50 clients, through two fresh lsnpool instances (appdb) alike but for this setting, ${CAP_T} s runs, alternated, $CAP_REPS run(s) each; capture off with"
echo "\`LSNPOOL_ROUTING__CAPTURE_COMMIT_LSN=false\` (then reads after writes have no LSN to go by)."
echo
echo "| capture | tps | lsnpool CPU / transaction (µs) |"
echo "|---|---:|---:|"
echo "| on | $(fmt_cell "$CAP_TSV" "$TP" 50 lsnpool_appdb_cap) | $(cpu_us "$CAP_TSV" "$TP" 50 lsnpool_appdb_cap) |"
echo "| off | $(fmt_cell "$CAP_TSV" "$TP" 50 lsnpool_appdb_nocap) | $(cpu_us "$CAP_TSV" "$TP" 50 lsnpool_appdb_nocap) |"
echo "| on / off | $(ratio "$on" "$off") | |"
echo

echo "## Read-after-write"
echo
echo "\`loadgen raw\` (benches/loadgen.rs): $RAW_CLIENTS clients, each looping \"INSERT a row; read it back at once; then $RAW_K"
echo "independent reads (pgbench_accounts by random aid)\", prepared statements, ${RAW_SECONDS} s per point. Every read"
echo "returns \`pg_is_in_recovery()\`. **naive split**: writes on a connection to the primary, reads on a connection"
echo "straight to r2; **lsnpool**: one connection to lsnpool (read-your-writes), with replicas r1 and r2, or r2 only."
echo "r2's \`recovery_min_apply_delay\` is set to each delay in turn; r1 has none."
echo
echo "![stale reads and replica share against apply delay](stale_vs_delay.png)"
echo
echo "| r2 apply delay | target | loops/s | stale read-backs | reads on replicas | errors |"
echo "|---:|---|---:|---:|---:|---|"
if [[ -s "$RAW_CSV" ]]; then
    awk -F',' 'NR > 1 {
        err = ($14 > 0) ? $14 " (`" $15 "`)" : "0"
        printf "| %s ms | %s | %.0f | %.2f %% (%s / %s) | %.1f %% | %s |\n", $2, $1, $7, $10, $9, $8, $13, err
    }' "$RAW_CSV"
fi
echo

echo "## Read-after-write across connections (issue 10)"
echo
echo "\`loadgen raw --read <same pooler> --readers 6\`: 6 writers each INSERT on one connection and read the row back at once on"
echo "another (an application's pool), then $RAW_K more reads; 6 more clients only read. ${RAW_SECONDS} s per row, at each r2 apply"
echo "delay. The lsnpool rows run on one instance with the shipped defaults (\`global\`, \`lsn_wait_timeout\` 20 ms) and set"
echo "\`lsnpool.consistency\` as named; **session key** rows give each writer a key on both its connections. **Redis; 2"
echo "instances**: written through one lsnpool, read back through another, sharing a Redis token store."
echo
echo "| r2 apply delay | level / target | stale read-backs | reads on replicas (read-only clients) | reads/s | errors |"
echo "|---:|---|---:|---:|---:|---|"
if [[ -s "$CROSS_CSV" ]]; then
    awk -F',' 'NR > 1 {
        err = ($14 > 0) ? $14 " (`" $15 "`)" : "0"
        printf "| %s ms | %s | %.2f %% (%s / %s) | %.1f %% | %.0f | %s |\n", $2, $1, $10, $9, $8, $17, $16, err
    }' "$CROSS_CSV"
fi
echo
echo "### What the token store adds"
echo
echo "\`loadgen latency\`: one client, $LAT_N times: an INSERT (autocommit) on one connection, then its read-back on"
echo "another, r2 without delay. A commit under \`global\` or a session key is written to the store before its"
echo "ReadyForQuery; a keyed or global read asks the store first. Redis rows write through one instance and read"
echo "through another; **added** is the Redis row minus the embedded row of the same level."
echo
echo "| level, store | commit p50 | commit p99 | read-back p50 | read-back p99 | stale |"
echo "|---|---:|---:|---:|---:|---:|"
if [[ -s "$LAT_TSV" ]]; then
    awk -F'\t' 'NR > 1 {
        printf "| %s | %d µs | %d µs | %d µs | %d µs | %s |\n", $1, $3, $4, $5, $6, $7
        split($1, p, ", "); row[p[2], p[1]] = $0; lvl[p[1]] = 1
    }
    END {
        for (l in lvl) if ((("embedded", l) in row) && (("Redis", l) in row)) {
            split(row["embedded", l], e, "\t"); split(row["Redis", l], r, "\t")
            printf "| **%s: added by Redis** | %+d µs | %+d µs | %+d µs | %+d µs | |\n", l, r[3] - e[3], r[4] - e[4], r[5] - e[5], r[6] - e[6]
        }
    }' "$LAT_TSV"
fi
echo

echo "## Memory per idle client"
echo
echo "A fresh pooler; one client logs in and runs \`SELECT 1\` (so the server pool exists), then the baseline VmRSS"
echo "(/proc/PID/status) is read; then \`loadgen idle\` opens $MEM_N client connections (md5 login, then idle) and"
echo "VmRSS is read again 2 s after the last one logged in. Open files limit in this run: $NOFILE."
echo
echo "| pooler | clients held | baseline RSS | RSS with clients | bytes per idle client | login time | note |"
echo "|---|---:|---:|---:|---:|---:|---|"
for name in lsnpool pgbouncer; do
    f="$W/mem-$name.txt"
    if [[ -s "$f" ]]; then
        fe="$(first_error_of "$f")"; failed="$(kv "$f" failed)"
        note_txt=""; [[ "${failed:-0}" != 0 ]] && note_txt="${failed} failed: \`${fe}\`"
        echo "| $name | $(kv "$f" reached) / $(kv "$f" requested) | $(kv "$f" baseline_kib) KiB | $(kv "$f" with_clients_kib) KiB | **$(kv "$f" bytes_per_client)** | $(kv "$f" connect_s) s | $note_txt |"
    else
        echo "| $name | – | – | – | – | – | not run |"
    fi
done
echo

echo "## Instructions per transaction"
echo
echo "lsnpool under \`valgrind --tool=callgrind\`, $INSTR_N transactions at 1 client through app_primary after a"
echo "warm-up, user-space instructions per transaction (the whole process; the monitor polls once a"
echo "second there). Unlike every timed number above, this one does not move with the machine's load:"
echo "it is the line to compare before and after a relay or routing change."
echo
echo "| workload | instructions per transaction |"
echo "|---|---:|"
for wl in "select-only simple" "select-only prepared"; do
    e="$(awk -F'\t' -v wl="$wl" 'NR > 1 && $1 == wl && $4 != "" { print $4; exit }' "$INSTR_TSV")"
    echo "| $wl | $(instr_count "$wl")${e:+ ($e)} |"
done
echo

echo "## Micro-benchmarks"
echo
echo "criterion (benches/micro.rs), time per call: estimate [95 % interval]. Allocations per call counted by a"
echo "counting global allocator over 10,000 calls."
echo
echo "| benchmark | ns per call | allocations per call |"
echo "|---|---:|---:|"
if [[ -s "$MICRO_TSV" ]]; then
    while IFS=$'\t' read -r name lo mid hi; do
        al="$(awk -v n="$name" '$1 == "ALLOC" && $2 == n { print $3 }' "$W/allocs.txt" 2>/dev/null)"
        if [[ "$name" == frames/* ]]; then
            nf="$(awk '$1 == "FRAMES" { print $2 }' "$W/allocs.txt" 2>/dev/null)"
            name="$name: a buffer of ${nf:-?} typical server reply frames$( [[ -n "$nf" ]] && awk -v m="$mid" -v n="$nf" 'BEGIN { printf ", %.1f ns per frame", m / n }')"
        fi
        echo "| $name | $mid [$lo–$hi] | ${al:-–} |"
    done <"$MICRO_TSV"
else
    echo "| (micro-benchmarks did not run: see target/bench/micro.stderr) | | |"
fi
echo
echo "Raw numbers, logs and the configs used: \`target/bench/\` (not committed)."
} >"$OUT"

note "wrote $OUT in ${ELAPSED} s"

# The line to read before submitting a change to the relay or the routing path.
if section instr; then
    echo "CHECK: instructions per transaction (callgrind, 1 client, app_primary): simple $(instr_count "$SS"), prepared $(instr_count "$SP")"
fi
if section pgbench; then
    al=$(hop_added "$HOP_TSV" "$SS" 1 lsnpool_primary 6); ab=$(hop_added "$HOP_TSV" "$SS" 1 pgbouncer 6)
    alp=$(hop_added "$HOP_TSV" "$SP" 1 lsnpool_primary 6); abp=$(hop_added "$HOP_TSV" "$SP" 1 pgbouncer 6)
    echo "CHECK: added p50 latency at 1 client (app_primary vs PgBouncer): simple +$al vs +$ab µs ($(ratio "$al" "$ab")×), prepared +$alp vs +$abp µs ($(ratio "$alp" "$abp")×); 50 clients select-only simple tps app_primary/PgBouncer $(ratio "$(median "$PGB_TSV" "$SS" 50 lsnpool_primary)" "$b_ss")×, pooler CPU $(cpu_us "$PGB_TSV" "$SS" 50 lsnpool_primary) vs $b_ss_cpu µs per transaction"
fi
