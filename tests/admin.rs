//! Issue 4: the admin console (every command through psql and tokio-postgres, on databases
//! `lsnpool` and `pgbouncer`), counters after known traffic, access control, RELOAD and
//! SIGHUP live (pool size, a new replica, a broken file), PAUSE/RESUME, KILL, SHUTDOWN and
//! SIGTERM with a transaction in flight, and the Prometheus endpoint.

mod common;
#[path = "admin_support/mod.rs"]
mod admin_support;

use admin_support::*;
use common::{create_table, drop_table, primary, unique, within, PoolerOpts};
use std::time::Duration;

// ------------------------------------------------------------------ expected columns

const STATS: [&str; 24] = [
    "database",
    "total_server_assignment_count",
    "total_xact_count",
    "total_query_count",
    "total_received",
    "total_sent",
    "total_xact_time",
    "total_query_time",
    "total_wait_time",
    "total_client_parse_count",
    "total_server_parse_count",
    "total_bind_count",
    "total_client_login_count",
    "avg_server_assignment_count",
    "avg_xact_count",
    "avg_query_count",
    "avg_recv",
    "avg_sent",
    "avg_xact_time",
    "avg_query_time",
    "avg_wait_time",
    "avg_client_parse_count",
    "avg_server_parse_count",
    "avg_bind_count",
];

/// PgBouncer's SHOW STATS_TOTALS / SHOW STATS_AVERAGES (no prefix, bytes_ for traffic).
const STATS_PLAIN: [&str; 12] = [
    "database",
    "server_assignment_count",
    "xact_count",
    "query_count",
    "bytes_received",
    "bytes_sent",
    "xact_time",
    "query_time",
    "wait_time",
    "client_parse_count",
    "server_parse_count",
    "bind_count",
];

const POOLS: [&str; 18] = [
    "database",
    "user",
    "cl_active",
    "cl_waiting",
    "cl_active_cancel_req",
    "cl_waiting_cancel_req",
    "sv_active",
    "sv_active_cancel",
    "sv_being_canceled",
    "sv_idle",
    "sv_used",
    "sv_tested",
    "sv_login",
    "maxwait",
    "maxwait_us",
    "pool_mode",
    "node",
    "role",
];

const REPLICAS: [&str; 12] = [
    "node", "addr", "role", "state", "replay_lsn", "lag_bytes", "lag_ms", "last_poll_ms_ago", "reads_routed", "in_rotation", "timeline", "fenced",
];

/// How a command's columns are checked: exactly, or as an ordered subsequence (the commands
/// whose full column list issue 4 leaves to PgBouncer's versions).
enum Cols {
    Exact(&'static [&'static str]),
    Contains(&'static [&'static str]),
    /// SHOW HELP: a NOTICE, no result set.
    Notice,
}

fn commands() -> Vec<(&'static str, Cols)> {
    vec![
        ("SHOW HELP", Cols::Notice),
        ("SHOW VERSION", Cols::Exact(&["version"])),
        ("SHOW CONFIG", Cols::Exact(&["key", "value", "default", "changeable"])),
        (
            "SHOW DATABASES",
            Cols::Contains(&[
                "name",
                "host",
                "port",
                "database",
                "force_user",
                "pool_size",
                "min_pool_size",
                "reserve_pool",
                "pool_mode",
                "max_connections",
                "current_connections",
                "paused",
                "disabled",
            ]),
        ),
        ("SHOW LISTS", Cols::Exact(&["list", "items"])),
        ("SHOW USERS", Cols::Contains(&["name", "pool_mode"])),
        ("SHOW STATS", Cols::Exact(&STATS)),
        ("SHOW STATS_TOTALS", Cols::Exact(&STATS_PLAIN)),
        ("SHOW STATS_AVERAGES", Cols::Exact(&STATS_PLAIN)),
        ("SHOW POOLS", Cols::Exact(&POOLS)),
        (
            "SHOW CLIENTS",
            Cols::Contains(&[
                "type", "user", "database", "state", "addr", "port", "local_addr", "local_port", "connect_time", "request_time",
                "wait", "wait_us", "close_needed", "ptr", "link", "remote_pid", "tls", "application_name",
            ]),
        ),
        (
            "SHOW SERVERS",
            Cols::Contains(&[
                "type", "user", "database", "state", "addr", "port", "local_addr", "local_port", "connect_time", "request_time",
                "wait", "wait_us", "close_needed", "ptr", "link", "remote_pid", "tls", "node",
            ]),
        ),
        ("SHOW REPLICAS", Cols::Exact(&REPLICAS)),
        (
            "SHOW ROUTING",
            Cols::Contains(&[
                "database",
                "replica_reads",
                "primary_write",
                "primary_strong",
                "primary_hint",
                "primary_lag_fallback",
                "primary_no_replica_up",
                "primary_retry_25006",
                "lsn_captured",
                "avg_catchup_wait_us",
            ]),
        ),
    ]
}

fn check_columns(what: &str, got: &[String], expected: &Cols) {
    match expected {
        Cols::Exact(cols) => assert_eq!(got, *cols, "{what}: columns differ from issue 4 / PgBouncer"),
        Cols::Contains(cols) => {
            let mut it = got.iter();
            for c in *cols {
                assert!(it.any(|g| g == c), "{what}: column {c:?} missing or out of order in {got:?}");
            }
        }
        Cols::Notice => {}
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Waits until the monitor has every expected node up and in rotation.
async fn replicas_up(adm: &AdminConn, expected_addrs: &[&str]) -> Table {
    eventually(15.0, "SHOW REPLICAS: every node up and in rotation", || async {
        let t = show(adm, "SHOW REPLICAS").await.map_err(|e| e.to_string())?;
        let rows: Vec<_> = t.rows.iter().filter(|r| t.get(r, "node").starts_with("appdb/")).collect();
        let addrs: Vec<&str> = rows.iter().map(|r| t.get(r, "addr")).collect();
        if rows.len() != expected_addrs.len() || !expected_addrs.iter().all(|a| addrs.contains(a)) {
            return Err(format!("nodes {addrs:?}, expected {expected_addrs:?}"));
        }
        // Routable: up, in rotation, and not too far behind (max_replica_lag is 10s).
        let routable = |r: &&Vec<Option<String>>| {
            t.get(r, "state") == "up" && t.get(r, "in_rotation") == "true" && t.get(r, "lag_ms").parse::<u64>().is_ok_and(|ms| ms < 5000)
        };
        if rows.iter().all(routable) {
            Ok(t.clone())
        } else {
            Err(format!("{t:?}"))
        }
    })
    .await
}

fn stats_row(t: &Table, db: &str) -> Vec<Option<String>> {
    t.row_where("database", db).clone()
}

// ------------------------------------------------------------------ every command

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_answers_with_the_documented_columns_on_both_admin_databases() {
    let p = PoolerOpts::new().start();
    // Some traffic so that CLIENTS/SERVERS have rows.
    let app = p.app().await;
    app.simple_query("SELECT 1").await.expect("SELECT 1 through lsnpool");
    for db in ADMIN_DBS {
        let adm = admin(p.port, db).await;
        for (cmd, cols) in commands() {
            // tokio-postgres, simple protocol
            adm.notices.lock().unwrap().clear();
            let t = must_show(&adm, cmd).await;
            match &cols {
                Cols::Notice => {
                    assert!(t.rows.is_empty(), "{db}: {cmd} returned rows: {t:?}");
                    let notices = adm.notices.lock().unwrap().clone();
                    let text: String = notices.iter().map(|n| format!("{} {}\n", n.message(), n.detail().unwrap_or(""))).collect();
                    for word in ["SHOW", "STATS", "POOLS", "REPLICAS", "ROUTING", "RELOAD", "PAUSE", "RESUME", "KILL", "SHUTDOWN"] {
                        assert!(text.contains(word), "{db}: SHOW HELP's notice does not mention {word}: {text:?}");
                    }
                }
                _ => check_columns(&format!("{db}: {cmd} (tokio-postgres)"), &t.columns, &cols),
            }

            // psql
            let out = psql_csv(p.port, "postgres", "postgres", db, cmd).await;
            assert!(out.success(), "{db}: psql -c {cmd:?} failed: {out:?}");
            match &cols {
                Cols::Notice => assert!(out.stderr.contains("REPLICAS") && out.stderr.contains("RELOAD"), "{db}: psql SHOW HELP: {out:?}"),
                _ => {
                    let header = csv_header(&out.stdout);
                    check_columns(&format!("{db}: {cmd} (psql)"), &header, &cols);
                    assert_eq!(header, t.columns, "{db}: {cmd}: psql and tokio-postgres see different columns");
                }
            }
        }

        // Contents that must be there whatever else is.
        let v = must_show(&adm, "SHOW VERSION").await;
        assert!(v.rows.len() == 1 && v.get(&v.rows[0], "version").contains("lsnpool"), "{v:?}");
        let dbs = must_show(&adm, "SHOW DATABASES").await;
        for name in ["appdb", "app_primary", "app_read"] {
            let r = dbs.row_where("name", name);
            assert_eq!(dbs.get(r, "pool_size"), "4", "{name}: {dbs:?}");
            assert_eq!(dbs.get(r, "port"), "55432", "{name}: {dbs:?}");
            assert_eq!(dbs.get(r, "paused"), "0", "{name}: {dbs:?}");
        }
        let cfg = must_show(&adm, "SHOW CONFIG").await;
        assert_eq!(cfg.get(cfg.row_where("key", "default_pool_size"), "value"), "4", "{cfg:?}");
        let users = must_show(&adm, "SHOW USERS").await;
        users.row_where("name", "app");
        users.row_where("name", "postgres");
        let lists = must_show(&adm, "SHOW LISTS").await;
        for r in &lists.rows {
            lists.num(r, "items");
        }
        assert!(lists.num(lists.row_where("list", "databases"), "items") >= 3, "{lists:?}");
        let stats = must_show(&adm, "SHOW STATS").await;
        for name in ["appdb", "app_primary", "app_read"] {
            stats.row_where("database", name);
        }
        for r in &stats.rows {
            for c in &STATS[1..] {
                stats.num(r, c);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_case_insensitive_and_accept_a_trailing_semicolon() {
    let p = PoolerOpts::new().start();
    let adm = admin(p.port, "pgbouncer").await;
    for (sql, expected) in [
        ("show stats", &STATS[..]),
        ("Show Stats;", &STATS[..]),
        ("  sHoW   pools ;  ", &POOLS[..]),
        ("show replicas;", &REPLICAS[..]),
        ("SHOW STATS_TOTALS;", &STATS_PLAIN[..]),
    ] {
        let t = must_show(&adm, sql).await;
        assert_eq!(t.columns, s(expected), "{sql:?}");
        let out = psql_csv(p.port, "postgres", "postgres", "lsnpool", sql).await;
        assert!(out.success(), "psql {sql:?}: {out:?}");
        assert_eq!(csv_header(&out.stdout), s(expected), "psql {sql:?}");
    }
    // Lower-case control commands too.
    let r = adm.simple_query("reload;").await;
    assert!(r.is_ok(), "reload; {:?}", r.err().map(|e| common::db_message(&e)));
    adm.simple_query("pause appdb;").await.expect("pause appdb;");
    let dbs = must_show(&adm, "show databases").await;
    assert_eq!(dbs.get(dbs.row_where("name", "appdb"), "paused"), "1");
    adm.simple_query("Resume appdb").await.expect("Resume appdb");
    let dbs = must_show(&adm, "show databases;").await;
    assert_eq!(dbs.get(dbs.row_where("name", "appdb"), "paused"), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_command_is_an_error_that_points_to_show_help() {
    let p = PoolerOpts::new().start();
    for db in ADMIN_DBS {
        let adm = admin(p.port, db).await;
        for sql in ["SHOW NONSENSE", "FROBNICATE", "SELECT 1", "SHOW", "KILL", "SHOW STATS extra"] {
            let e = must_fail(&adm, sql).await;
            let text = format!("{} {}", e.message(), e.hint().unwrap_or(""));
            assert!(text.contains("SHOW HELP"), "{db}: {sql:?}: error does not mention SHOW HELP: {text:?}");
            // The console stays usable after an error.
            must_show(&adm, "SHOW VERSION").await;
        }
        let out = psql_csv(p.port, "postgres", "postgres", db, "SHOW NONSENSE").await;
        assert!(!out.success(), "psql SHOW NONSENSE succeeded: {out:?}");
        assert!(out.stderr.contains("SHOW HELP"), "psql stderr: {out:?}");
    }
}

// ------------------------------------------------------------------ counters

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_after_known_traffic() {
    let p = PoolerOpts::new().pool_size(4).with_replicas().start();
    let table = unique("adm_counters");
    create_table(&table, "id int").await;
    let adm = admin(p.port, "lsnpool").await;
    replicas_up(&adm, &["127.0.0.1:55432", R1, R2]).await;

    let before = must_show(&adm, "SHOW STATS").await;
    let b = stats_row(&before, "appdb");
    let num = |t: &Table, r: &[Option<String>], c: &str| t.num(r, c);

    const READS: i64 = 10;
    const WRITES: i64 = 5;
    let app_name = unique("adm_app");
    let reader = within(15.0, "reader login", connect(p.port, "app", "app", "appdb", &format!("application_name={app_name}")))
        .await
        .expect("reader login");
    let writer = p.app().await;
    let mut reads = 0i64;
    for i in 0..READS {
        reader.simple_query(&format!("SELECT {i}")).await.expect("read");
        reads += 1;
    }
    // A replica may leave rotation for a moment on a loaded machine (its reads then go to
    // the primary, which is correct): read on until one read has been served by a replica.
    while reads < READS + 30 {
        let t = must_show(&adm, "SHOW ROUTING").await;
        if t.num(t.row_where("database", "appdb"), "replica_reads") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        reader.simple_query("SELECT 'again'").await.expect("read");
        reads += 1;
    }
    for i in 0..WRITES {
        writer.simple_query(&format!("BEGIN; INSERT INTO {table} VALUES ({i})")).await.expect("begin+insert");
        writer.simple_query(&format!("SELECT count(*) FROM {table}")).await.expect("select in txn");
        writer.simple_query("COMMIT").await.expect("commit");
    }
    let k = reads + WRITES;

    // SHOW STATS: exact transaction count, and the other totals moved.
    let after = eventually(5.0, "SHOW STATS total_xact_count grows by k", || async {
        let t = show(&adm, "SHOW STATS").await.map_err(|e| e.to_string())?;
        let r = stats_row(&t, "appdb");
        let d = t.num(&r, "total_xact_count") - num(&before, &b, "total_xact_count");
        if d >= k {
            Ok(t)
        } else {
            Err(format!("delta {d} < {k}"))
        }
    })
    .await;
    let a = stats_row(&after, "appdb");
    let delta = |c: &str| num(&after, &a, c) - num(&before, &b, c);
    assert_eq!(delta("total_xact_count"), k, "total_xact_count counts each transaction once: {after:?}");
    assert!(delta("total_query_count") >= k + 2 * WRITES, "total_query_count: {}", delta("total_query_count"));
    assert!(delta("total_received") > 0 && delta("total_sent") > 0, "bytes: {after:?}");
    assert!(delta("total_xact_time") > 0 && delta("total_query_time") > 0, "times: {after:?}");
    assert!(delta("total_server_assignment_count") >= k, "assignments: {after:?}");
    assert!(delta("total_client_login_count") >= 2, "logins: {after:?}");
    let totals = must_show(&adm, "SHOW STATS_TOTALS").await;
    let tr = stats_row(&totals, "appdb");
    assert!(totals.num(&tr, "xact_count") >= num(&after, &a, "total_xact_count"), "{totals:?}");
    assert!(totals.num(&tr, "bytes_received") >= num(&after, &a, "total_received"), "{totals:?}");

    // SHOW CLIENTS: our reader, with its user, database and application_name.
    let clients = must_show(&adm, "SHOW CLIENTS").await;
    let r = clients.row_where("application_name", &app_name);
    assert_eq!(clients.get(r, "type"), "C");
    assert_eq!(clients.get(r, "user"), "app");
    assert_eq!(clients.get(r, "database"), "appdb");
    assert_eq!(clients.get(r, "state"), "idle");
    assert_eq!(clients.get(r, "addr"), "127.0.0.1");
    assert_eq!(clients.rows_where("database", "appdb").len(), 2, "reader and writer: {clients:?}");

    // SHOW SERVERS: server connections labelled with their node.
    let servers = must_show(&adm, "SHOW SERVERS").await;
    let ours: Vec<_> = servers.rows.iter().filter(|r| servers.get(r, "user") == "app").collect();
    let nodes: Vec<&str> = ours.iter().map(|r| servers.get(r, "node")).collect();
    assert!(nodes.contains(&"appdb/primary"), "no primary server connection: {servers:?}");
    if !nodes.iter().any(|n| n.starts_with("appdb/replica")) {
        let routing = must_show(&adm, "SHOW ROUTING").await;
        let reps = must_show(&adm, "SHOW REPLICAS").await;
        panic!(
            "{reads} reads from a client that never wrote found no replica server connection.\nSERVERS {servers:?}\nROUTING {routing:?}\nREPLICAS {reps:?}"
        );
    }
    for r in &ours {
        assert_eq!(servers.get(r, "type"), "S");
        assert_eq!(servers.get(r, "database"), "appdb");
        let port = servers.get(r, "port");
        let expected = match servers.get(r, "node") {
            "appdb/primary" => "55432",
            n => {
                assert!(n.starts_with("appdb/replica"), "unexpected node label {n:?}");
                if port == "55433" { "55433" } else { "55434" }
            }
        };
        assert_eq!(port, expected, "{r:?}");
        assert_ne!(servers.get(r, "remote_pid"), "0", "{r:?}");
    }

    // SHOW POOLS: idle after the traffic, one active while a transaction is open.
    let pools = must_show(&adm, "SHOW POOLS").await;
    let prim: Vec<_> = pools
        .rows
        .iter()
        .filter(|r| pools.get(r, "database") == "appdb" && pools.get(r, "user") == "app" && pools.get(r, "node") == "appdb/primary")
        .collect();
    assert_eq!(prim.len(), 1, "{pools:?}");
    assert_eq!(pools.get(prim[0], "role"), "primary");
    assert_eq!(pools.get(prim[0], "pool_mode"), "transaction");
    assert_eq!(pools.num(prim[0], "sv_active"), 0, "{pools:?}");
    assert!(pools.num(prim[0], "sv_idle") >= 1, "{pools:?}");
    let replica_rows: Vec<_> =
        pools.rows.iter().filter(|r| pools.get(r, "user") == "app" && pools.get(r, "role") == "replica").collect();
    assert_eq!(replica_rows.len(), 2, "{pools:?}");
    for r in &pools.rows {
        assert!(pools.num(r, "sv_active") + pools.num(r, "sv_idle") <= 4, "more servers than pool_size: {r:?}");
    }
    writer.simple_query(&format!("BEGIN; INSERT INTO {table} VALUES (100)")).await.expect("begin");
    let pools = eventually(3.0, "SHOW POOLS: one active primary server", || async {
        let t = show(&adm, "SHOW POOLS").await.map_err(|e| e.to_string())?;
        let r = t
            .rows
            .iter()
            .find(|r| t.get(r, "database") == "appdb" && t.get(r, "user") == "app" && t.get(r, "node") == "appdb/primary")
            .cloned()
            .ok_or("no row")?;
        if t.num(&r, "sv_active") == 1 {
            Ok((t, r))
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;
    assert!(pools.0.num(&pools.1, "cl_active") >= 1, "{:?}", pools.1);
    let clients = must_show(&adm, "SHOW CLIENTS").await;
    let states: Vec<&str> = clients.rows_where("database", "appdb").iter().map(|r| clients.get(r, "state")).collect();
    assert!(states.contains(&"active"), "the writer is in a transaction: {clients:?}");
    writer.simple_query("COMMIT").await.expect("commit");

    // SHOW REPLICAS and SHOW ROUTING: the reads went to replicas, the writes to the primary.
    let reps = must_show(&adm, "SHOW REPLICAS").await;
    assert_eq!(reps.rows.len(), 3, "{reps:?}");
    let primary_row = reps.row_where("role", "primary");
    assert_eq!(reps.get(primary_row, "node"), "appdb/primary");
    assert_eq!(reps.get(primary_row, "addr"), "127.0.0.1:55432");
    let routed: i64 = reps.rows_where("role", "replica").iter().map(|r| reps.num(r, "reads_routed")).sum();
    for r in reps.rows_where("role", "replica") {
        reps.num(r, "lag_bytes");
        reps.num(r, "lag_ms");
        reps.num(r, "last_poll_ms_ago");
    }
    let routing = must_show(&adm, "SHOW ROUTING").await;
    let rr = routing.row_where("database", "appdb");
    let n = |c: &str| routing.num(rr, c);
    let replica_reads = n("replica_reads");
    assert!(replica_reads >= 1, "no read went to a replica: {routing:?}");
    assert_eq!(routed, replica_reads, "SHOW REPLICAS reads_routed vs SHOW ROUTING replica_reads: {reps:?} {routing:?}");
    // Every transaction is one routing decision: the reads went to a replica or, with a
    // replica out of rotation, to the primary for that reason; the writes to the primary.
    assert_eq!(
        replica_reads + n("primary_no_replica_up") + n("primary_lag_fallback"),
        reads,
        "the {reads} reads: {routing:?}"
    );
    assert_eq!(n("primary_write"), WRITES + 1, "the write transactions: {routing:?}");
    assert_eq!(n("primary_strong") + n("primary_hint") + n("primary_retry_25006"), 0, "{routing:?}");
    assert!(n("lsn_captured") >= WRITES, "commit LSNs captured: {routing:?}");
    drop_table(&table).await;
}

// ------------------------------------------------------------------ access

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_outside_admin_and_stats_users_is_refused_with_42501() {
    let p = PoolerOpts::new().start();
    for db in ADMIN_DBS {
        match connect(p.port, "app", "app", db, "").await {
            Ok(c) => {
                let r = c.simple_query("SHOW STATS").await;
                panic!("app logged in to the admin console ({db}); SHOW STATS gave {:?}", r.map(|m| m.len()).map_err(|e| common::db_message(&e)));
            }
            Err(e) => assert_eq!(common::sqlstate(&e).as_deref(), Some("42501"), "{db}: {}", common::db_message(&e)),
        }
        let out = psql_csv(p.port, "app", "app", db, "SHOW STATS").await;
        assert!(!out.success(), "psql as app on {db} succeeded: {out:?}");
        // A wrong password for an admin is a password failure, not a privilege one.
        let e = connect(p.port, "postgres", "wrong", db, "").await.err().expect("wrong password accepted");
        assert_eq!(common::sqlstate(&e).as_deref(), Some("28P01"), "{}", common::db_message(&e));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_users_may_show_but_not_control() {
    let p = PoolerOpts::new().set("stats_users", "[\"app\"]").start();
    let c = within(15.0, "stats user login", connect(p.port, "app", "app", "lsnpool", "")).await.expect("stats user login");
    assert_eq!(must_show(&c, "SHOW STATS").await.columns, s(&STATS));
    assert_eq!(must_show(&c, "show pools;").await.columns, s(&POOLS));
    must_show(&c, "SHOW REPLICAS").await;
    must_show(&c, "SHOW CONFIG").await;
    for sql in ["RELOAD", "reload;", "PAUSE appdb", "PAUSE", "RESUME appdb", "KILL appdb", "SHUTDOWN"] {
        let e = must_fail(&c, sql).await;
        assert_eq!(e.code().code(), "42501", "{sql}: {} ", e.message());
    }
    let out = psql_csv(p.port, "app", "app", "pgbouncer", "SHOW POOLS").await;
    assert!(out.success(), "{out:?}");
    assert_eq!(csv_header(&out.stdout), s(&POOLS));
    let out = psql_csv(p.port, "app", "app", "pgbouncer", "RELOAD").await;
    assert!(!out.success(), "psql RELOAD as a stats user succeeded: {out:?}");
    // None of the refused commands took effect.
    let adm = admin(p.port, "lsnpool").await;
    let dbs = must_show(&adm, "SHOW DATABASES").await;
    assert_eq!(dbs.get(dbs.row_where("name", "appdb"), "paused"), "0");
    let app = p.app().await;
    assert_eq!(app.simple_one("SELECT 7").await.unwrap().as_deref(), Some("7"));
}

// ------------------------------------------------------------------ RELOAD / SIGHUP

/// Opens `n` concurrent transactions on the primary (database app_primary): the first on
/// `existing`, the others on new clients. Fails unless all of them get a server at once.
async fn hold_transactions(p: &Proc, existing: &AdminConn, n: usize) -> Vec<AdminConn> {
    let mut extra = Vec::new();
    for _ in 1..n {
        extra.push(p.app("app_primary").await);
    }
    let mut ok = 0;
    let mut errors = Vec::new();
    for c in std::iter::once(existing).chain(extra.iter()) {
        match tokio::time::timeout(Duration::from_secs(2), c.simple_query("BEGIN; SELECT 1")).await {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(e)) => errors.push(common::db_message(&e)),
            Err(_) => errors.push("no server within 2s".into()),
        }
    }
    assert_eq!(ok, n, "only {ok} of {n} concurrent transactions got a server (pool size not applied?): {errors:?}");
    extra
}

async fn pool_row(adm: &AdminConn, node: &str) -> (Table, Vec<Option<String>>) {
    let t = must_show(adm, "SHOW POOLS").await;
    let r = t
        .rows
        .iter()
        .find(|r| t.get(r, "database") == "appdb" && t.get(r, "user") == "app" && t.get(r, "node") == node)
        .cloned()
        .unwrap_or_else(|| panic!("no SHOW POOLS row for appdb/app/{node}: {t:?}"));
    (t, r)
}

async fn pool_size_is(adm: &AdminConn, n: usize) {
    let n = n.to_string();
    eventually(5.0, &format!("SHOW DATABASES pool_size = {n}"), || async {
        let t = show(adm, "SHOW DATABASES").await.map_err(|e| e.to_string())?;
        let sizes: Vec<&str> = ["appdb", "app_primary", "app_read"].iter().map(|d| t.get(t.row_where("name", d), "pool_size")).collect();
        let cfg = show(adm, "SHOW CONFIG").await.map_err(|e| e.to_string())?;
        let def = cfg.get(cfg.row_where("key", "default_pool_size"), "value").to_string();
        if sizes.iter().all(|s| *s == n) && def == n {
            Ok(())
        } else {
            Err(format!("pool_size {sizes:?}, default_pool_size {def}"))
        }
    })
    .await
}

async fn reload_pool_size(by_signal: bool) {
    let mut cfg = Cfg { pool_size: 2, query_wait_timeout: "3s".into(), ..Cfg::default() };
    let p = Proc::start(&cfg);
    let adm = p.admin().await;
    let a = p.app("app_primary").await;
    a.simple_query("SELECT 1").await.expect("SELECT 1 before reload");
    let watcher = p.app("appdb").await;
    pool_size_is(&adm, 2).await;

    cfg.pool_size = 3;
    p.rewrite(&cfg);
    if by_signal {
        p.signal("HUP");
    } else {
        adm.simple_query("RELOAD").await.map_err(|e| common::db_message(&e)).expect("RELOAD");
    }
    pool_size_is(&adm, 3).await;
    let extra = hold_transactions(&p, &a, 3).await;
    let (t, r) = pool_row(&adm, "appdb/primary").await;
    assert_eq!(t.num(&r, "sv_active"), 3, "{r:?}");
    for c in std::iter::once(&a).chain(extra.iter()) {
        c.simple_query("COMMIT").await.expect("COMMIT");
    }

    // Shrinking works too: with 2, a third concurrent transaction waits.
    cfg.pool_size = 2;
    p.rewrite(&cfg);
    if by_signal {
        p.signal("HUP");
    } else {
        adm.simple_query("reload").await.map_err(|e| common::db_message(&e)).expect("RELOAD");
    }
    pool_size_is(&adm, 2).await;
    let b = p.app("app_primary").await;
    let c = p.app("app_primary").await;
    b.simple_query("BEGIN; SELECT 1").await.expect("b begin");
    c.simple_query("BEGIN; SELECT 1").await.expect("c begin");
    let third = tokio::time::timeout(Duration::from_millis(800), a.simple_query("SELECT 1")).await;
    assert!(third.is_err(), "a third transaction got a server with pool_size = 2: {third:?}");
    b.simple_query("COMMIT").await.expect("b commit");
    c.simple_query("COMMIT").await.expect("c commit");

    // The clients that were connected before every reload are still there and working.
    assert_eq!(a.simple_query("SELECT 1").await.map(|m| !m.is_empty()).map_err(|e| common::db_message(&e)), Ok(true));
    let wv = watcher.simple_query("SELECT 2").await;
    assert!(wv.is_ok(), "client from before the reload broke: {:?}", wv.err().map(|e| common::db_message(&e)));
    assert!(p.log().contains("configuration reloaded"), "no reload log line:\n{}", p.log_tail(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_command_changes_pool_size_without_dropping_clients() {
    reload_pool_size(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_changes_pool_size_without_dropping_clients() {
    reload_pool_size(true).await;
}

/// A RELOAD that changes a timeout must not let one (database, user) pool hold more than
/// pool_size server connections: clients from before the reload and after it share the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_of_a_timeout_keeps_one_pool_size_limit_for_old_and_new_clients() {
    let mut cfg = Cfg { pool_size: 1, query_wait_timeout: "3s".into(), ..Cfg::default() };
    let p = Proc::start(&cfg);
    let adm = p.admin().await;
    let before = p.app("app_primary").await;
    before.simple_query("SELECT 1").await.expect("SELECT 1");

    cfg.query_wait_timeout = "2s".into();
    p.rewrite(&cfg);
    adm.simple_query("RELOAD").await.map_err(|e| common::db_message(&e)).expect("RELOAD");

    before.simple_query("BEGIN; SELECT 1").await.expect("old client begins");
    let after = p.app("app_primary").await;
    let r = tokio::time::timeout(Duration::from_millis(800), after.simple_query("BEGIN; SELECT 1")).await;
    let servers = must_show(&adm, "SHOW SERVERS").await;
    let ours = servers.rows.iter().filter(|r| servers.get(r, "user") == "app" && servers.get(r, "node") == "appdb/primary").count();
    assert!(
        r.is_err(),
        "with default_pool_size = 1, a client logged in after RELOAD got a second primary server connection while a client from \
         before RELOAD holds one ({ours} app server connections to appdb/primary in SHOW SERVERS)"
    );
    assert!(ours <= 1, "{ours} app server connections to appdb/primary with pool_size 1: {servers:?}");
    let _ = before.simple_query("COMMIT").await;
}

/// Opens `n` new clients, each holding a `BEGIN READ ONLY` transaction at once, and returns the
/// server port each transaction ran on (then commits them all).
async fn held_read_ports(p: &Proc, n: usize) -> Vec<String> {
    let mut clients = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..n {
        let c = p.app("appdb").await;
        let msgs = c.client.simple_query("BEGIN READ ONLY; SELECT inet_server_port()").await;
        let msgs = msgs.unwrap_or_else(|e| panic!("read transaction: {}", common::db_message(&e)));
        let port = msgs
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .expect("a port");
        ports.push(port);
        clients.push(c);
    }
    for c in &clients {
        c.simple_query("COMMIT").await.expect("commit");
    }
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_a_replica_live_and_reads_reach_it() {
    let mut cfg = Cfg { replicas: vec![R1.to_string()], ..Cfg::default() };
    let p = Proc::start(&cfg);
    let adm = p.admin().await;
    let reps = replicas_up(&adm, &["127.0.0.1:55432", R1]).await;
    assert_eq!(reps.rows.len(), 2, "{reps:?}");
    let old = p.app("appdb").await;
    old.simple_query("SELECT 1").await.expect("read before reload");

    cfg.replicas = vec![R1.to_string(), R2.to_string()];
    p.rewrite(&cfg);
    adm.simple_query("RELOAD").await.map_err(|e| common::db_message(&e)).expect("RELOAD");
    let reps = replicas_up(&adm, &["127.0.0.1:55432", R1, R2]).await;
    let new_row = reps.row_where("addr", R2);
    assert_eq!(reps.get(new_row, "role"), "replica");
    let dbs = must_show(&adm, "SHOW DATABASES").await;
    assert_eq!(dbs.get(dbs.row_where("name", "appdb"), "replicas"), "2", "{dbs:?}");

    // New clients: concurrent read transactions (BEGIN READ ONLY: a plain BEGIN goes to the
    // primary) spread over the replicas by outstanding work, so one of them lands on the new
    // node. A few rounds, as a replica may briefly leave rotation on a loaded machine.
    let mut seen = Vec::new();
    for _ in 0..5 {
        let ports = held_read_ports(&p, 3).await;
        seen.push(ports.clone());
        if ports.iter().any(|p| p == "55434") {
            break;
        }
    }
    if !seen.iter().flatten().any(|p| p == "55434") {
        let routing = must_show(&adm, "SHOW ROUTING").await;
        let reps = must_show(&adm, "SHOW REPLICAS").await;
        panic!("no read reached the added replica 55434: {seen:?}\nROUTING {routing:?}\nREPLICAS {reps:?}");
    }
    let reps = must_show(&adm, "SHOW REPLICAS").await;
    assert!(reps.num(reps.row_where("addr", R2), "reads_routed") >= 1, "{reps:?}");
    let (_, r) = pool_row(&adm, "appdb/replica1").await;
    assert_eq!(r[POOLS.iter().position(|c| *c == "role").unwrap()].as_deref(), Some("replica"));

    // The client from before the reload is still connected and working.
    let r = old.simple_query("SELECT 1").await;
    assert!(r.is_ok(), "client from before the reload broke: {:?}", r.err().map(|e| common::db_message(&e)));

    // Removing a replica: it leaves SHOW REPLICAS and new clients stop reading from it.
    cfg.replicas = vec![R2.to_string()];
    p.rewrite(&cfg);
    adm.simple_query("RELOAD").await.map_err(|e| common::db_message(&e)).expect("RELOAD");
    replicas_up(&adm, &["127.0.0.1:55432", R2]).await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        let ports = held_read_ports(&p, 3).await;
        seen.push(ports.clone());
        assert!(!ports.iter().any(|p| p == "55433"), "a read went to the removed replica 55433: {seen:?}");
        if ports.iter().any(|p| p == "55434") {
            break;
        }
    }
    if !seen.iter().flatten().any(|p| p == "55434") {
        let routing = must_show(&adm, "SHOW ROUTING").await;
        let reps = must_show(&adm, "SHOW REPLICAS").await;
        panic!("no read reached the remaining replica 55434: {seen:?}\nROUTING {routing:?}\nREPLICAS {reps:?}");
    }
    let r = old.simple_query("SELECT 1").await;
    assert!(r.is_ok(), "client from before the second reload broke: {:?}", r.err().map(|e| common::db_message(&e)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_timeouts_and_users() {
    let mut cfg = Cfg { pool_size: 1, query_wait_timeout: "20s".into(), ..Cfg::default() };
    let p = Proc::start(&cfg);
    let adm = p.admin().await;
    let e = p.connect("md5user", "md5user", "appdb", "").await.err().expect("md5user is not configured yet");
    // An unknown user fails like a wrong password: which users exist is not given away.
    assert_eq!(common::sqlstate(&e).as_deref(), Some("28P01"), "{}", common::db_message(&e));

    cfg.query_wait_timeout = "1s".into();
    cfg.extra_users = vec![("md5user".into(), "md5user".into())];
    p.rewrite(&cfg);
    adm.simple_query("RELOAD").await.map_err(|e| common::db_message(&e)).expect("RELOAD");
    let conf = must_show(&adm, "SHOW CONFIG").await;
    let qwt = conf.get(conf.row_where("key", "query_wait_timeout"), "value").to_string();
    assert_eq!(qwt, "1s", "SHOW CONFIG query_wait_timeout after RELOAD");
    let users = must_show(&adm, "SHOW USERS").await;
    users.row_where("name", "md5user");

    // The new user logs in and works.
    let m = within(15.0, "md5user login", p.connect("md5user", "md5user", "appdb", "")).await;
    let m = m.unwrap_or_else(|e| panic!("md5user after RELOAD: {}", common::db_message(&e)));
    m.simple_query("SELECT 1").await.expect("md5user query");

    // The new wait timeout applies: with pool_size 1 held, the next client gives up after ~1s.
    let holder = p.app("app_primary").await;
    holder.simple_query("BEGIN; SELECT 1").await.expect("holder");
    let waiter = p.app("app_primary").await;
    let t0 = std::time::Instant::now();
    let r = within(15.0, "waiting for a server", waiter.simple_query("SELECT 1")).await;
    let waited = t0.elapsed();
    assert!(r.is_err(), "got a server although the only one is held");
    assert!(waited < Duration::from_secs(4), "waited {waited:?}: the reloaded query_wait_timeout (1s) was not applied");
    holder.simple_query("COMMIT").await.expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_on_reload_is_an_error_and_the_old_config_stays() {
    let mut cfg = Cfg { pool_size: 3, ..Cfg::default() };
    let mut p = Proc::start(&cfg);
    let adm = p.admin().await;
    let before = p.app("appdb").await;
    before.simple_query("SELECT 1").await.expect("SELECT 1");

    for (what, text) in [
        ("syntax error", "[pooler\nlisten = ".to_string()),
        ("unknown key", format!("{}\n[bogus]\nx = 1\n", cfg.render(&format!("127.0.0.1:{}", p.port)))),
        (
            "bad value",
            cfg.render(&format!("127.0.0.1:{}", p.port)).replace("default_pool_size = 3", "default_pool_size = \"seven\""),
        ),
    ] {
        p.write_raw(&text);
        let e = must_fail(&adm, "RELOAD").await;
        assert!(!e.message().is_empty(), "{what}");
        pool_size_is(&adm, 3).await;
        p.signal("HUP");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(p.try_status().is_none(), "{what}: lsnpool exited after SIGHUP with a broken config:\n{}", p.log_tail(20));
        pool_size_is(&adm, 3).await;
        let r = before.simple_query("SELECT 1").await;
        assert!(r.is_ok(), "{what}: existing client broke: {:?}", r.err().map(|e| common::db_message(&e)));
        let fresh = p.app("appdb").await;
        fresh.simple_query("SELECT 1").await.expect("new client after failed reload");
    }
    // A good file reloads again.
    cfg.pool_size = 5;
    p.rewrite(&cfg);
    adm.simple_query("RELOAD").await.map_err(|e| common::db_message(&e)).expect("RELOAD");
    pool_size_is(&adm, 5).await;
}

// ------------------------------------------------------------------ PAUSE / RESUME / KILL

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_blocks_new_queries_until_resume() {
    let p = PoolerOpts::new().start();
    let adm = admin(p.port, "lsnpool").await;

    // PAUSE waits for the transaction in flight to end before it returns.
    let busy = p.app().await;
    busy.simple_query("BEGIN; SELECT 1").await.expect("begin");
    {
        let pause = adm.simple_query("PAUSE appdb");
        tokio::pin!(pause);
        let early = tokio::time::timeout(Duration::from_millis(600), &mut pause).await;
        assert!(early.is_err(), "PAUSE returned while a transaction was in flight: {:?}", early.map(|r| r.map(|m| m.len()).map_err(|e| common::db_message(&e))));
        busy.simple_query("COMMIT").await.expect("commit while PAUSE waits");
        within(5.0, "PAUSE after the transaction ended", &mut pause).await.map_err(|e| common::db_message(&e)).expect("PAUSE appdb");
    }
    adm.simple_query("RESUME appdb").await.expect("RESUME appdb");
    busy.simple_query("SELECT 1").await.expect("query after RESUME");

    for (pause, resume) in [("PAUSE appdb", "RESUME appdb"), ("PAUSE", "RESUME")] {
        let c = p.app().await;
        c.simple_query("SELECT 1").await.expect("SELECT 1 before pause");
        within(10.0, pause, adm.simple_query(pause)).await.map_err(|e| common::db_message(&e)).expect(pause);
        let dbs = must_show(&adm, "SHOW DATABASES").await;
        assert_eq!(dbs.get(dbs.row_where("name", "appdb"), "paused"), "1", "{pause}: {dbs:?}");

        let q = tokio::spawn(async move {
            let r = c.simple_one("SELECT 42").await;
            (r, c)
        });
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(!q.is_finished(), "{pause}: a query on appdb completed while paused: {:?}", q.await.ok().map(|x| x.0));
        within(5.0, resume, adm.simple_query(resume)).await.map_err(|e| common::db_message(&e)).expect(resume);
        let (r, _c) = within(5.0, "the paused query after RESUME", q).await.expect("join");
        assert_eq!(r.map_err(|e| common::db_message(&e)).expect("query after RESUME").as_deref(), Some("42"));
        let dbs = must_show(&adm, "SHOW DATABASES").await;
        assert_eq!(dbs.get(dbs.row_where("name", "appdb"), "paused"), "0");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_disconnects_the_databases_idle_clients_and_no_others() {
    let p = PoolerOpts::new().start();
    let adm = admin(p.port, "lsnpool").await;
    let v1 = p.app().await;
    let v2 = p.app().await;
    let survivor = within(15.0, "app_primary login", connect(p.port, "app", "app", "app_primary", "")).await.expect("login");
    for c in [&v1.client, &v2.client, &survivor.client] {
        c.simple_query("SELECT 1").await.expect("SELECT 1");
    }
    adm.simple_query("KILL appdb").await.map_err(|e| common::db_message(&e)).expect("KILL appdb");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (name, c) in [("v1", &v1), ("v2", &v2)] {
        let r = within(5.0, "query after KILL", c.simple_query("SELECT 1")).await;
        assert!(r.is_err(), "{name}: an idle appdb client survived KILL appdb");
    }
    let r = survivor.simple_query("SELECT 1").await;
    assert!(r.is_ok(), "app_primary client was killed by KILL appdb: {:?}", r.err().map(|e| common::db_message(&e)));
    let clients = must_show(&adm, "SHOW CLIENTS").await;
    assert!(clients.rows_where("database", "appdb").is_empty(), "appdb clients left after KILL: {clients:?}");
    assert_eq!(clients.rows_where("database", "app_primary").len(), 1, "{clients:?}");
}

// ------------------------------------------------------------------ SHUTDOWN / SIGTERM

async fn shutdown_with_transaction_in_flight(by_signal: bool) {
    let table = unique("adm_shutdown");
    create_table(&table, "id int").await;
    let mut p = Proc::start(&Cfg::default());
    let a = p.app("appdb").await;
    a.simple_query(&format!("BEGIN; INSERT INTO {table} VALUES (1)")).await.expect("begin");
    let idle = p.app("appdb").await;
    idle.simple_query("SELECT 1").await.expect("idle client");
    let adm = p.admin().await;

    if by_signal {
        p.signal("TERM");
    } else {
        let r = adm.simple_query("SHUTDOWN").await;
        assert!(r.is_ok(), "SHUTDOWN: {:?}", r.err().map(|e| common::db_message(&e)));
    }

    // New connections are refused.
    let port = p.port;
    eventually(3.0, "new connections refused after shutdown", || async {
        match connect(port, "app", "app", "appdb", "").await {
            Ok(c) => {
                drop(c);
                Err("a new client logged in".to_string())
            }
            Err(_) => Ok(()),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(p.try_status().is_none(), "lsnpool exited with a transaction in flight: {:?}\n{}", p.try_status(), p.log_tail(20));

    // The transaction in flight finishes normally.
    a.simple_query(&format!("INSERT INTO {table} VALUES (2)")).await.map_err(|e| common::db_message(&e)).expect("insert during shutdown");
    a.simple_query("COMMIT").await.map_err(|e| common::db_message(&e)).expect("COMMIT during shutdown");
    let status = p.wait_exit(10.0).await;
    let status = status.unwrap_or_else(|| panic!("lsnpool still running 10s after the last transaction ended:\n{}", p.log_tail(20)));
    assert_eq!(status.code(), Some(0), "exit status {status:?}\n{}", p.log_tail(20));

    let n: i64 = primary().await.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0);
    assert_eq!(n, 2, "the in-flight transaction was not committed");
    assert!(idle.simple_query("SELECT 1").await.is_err(), "the idle client still works after exit");
    drop_table(&table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_transaction_in_flight_commit_then_exits_0() {
    shutdown_with_transaction_in_flight(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_transaction_in_flight_commit_then_exits_0() {
    shutdown_with_transaction_in_flight(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigint_exits_at_once() {
    let mut p = Proc::start(&Cfg::default());
    let a = p.app("appdb").await;
    a.simple_query("BEGIN; SELECT 1").await.expect("begin");
    p.signal("INT");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(p.try_status().is_none(), "one SIGINT with a transaction in flight must wait for it:\n{}", p.log_tail(20));
    p.signal("INT");
    let status = p.wait_exit(3.0).await;
    assert!(status.is_some(), "still running 3s after the second SIGINT:\n{}", p.log_tail(20));
    assert!(a.simple_query("COMMIT").await.is_err(), "the transaction survived an immediate shutdown");
}

// ------------------------------------------------------------------ logs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_logs_name_the_client_and_never_a_secret() {
    let p = PoolerOpts::new().with_replicas().env("LSNPOOL_LOG", "debug").start();
    let adm = admin(p.port, "lsnpool").await;
    replicas_up(&adm, &["127.0.0.1:55432", R1, R2]).await;
    let secret_param = unique("param_secret");
    let secret_password = unique("pw_secret");
    let c = p.app().await;
    let v: String = c.query_one("SELECT $1::text", &[&secret_param]).await.expect("param query").get(0);
    assert_eq!(v, secret_param);
    c.simple_query("SELECT 1").await.expect("read");
    assert!(connect(p.port, "app", &secret_password, "appdb", "").await.is_err(), "wrong password accepted");
    c.kill().await;
    let log = eventually(5.0, "a 'client disconnected' line", || async {
        let log = strip_ansi(&p.log());
        if log.lines().any(|l| l.contains("INFO") && l.contains("client disconnected")) {
            Ok(log)
        } else {
            Err("none yet".to_string())
        }
    })
    .await;
    let opened: Vec<&str> = log.lines().filter(|l| l.contains("INFO") && l.contains("client connected")).collect();
    assert!(
        opened.iter().any(|l| l.contains("client=127.0.0.1:") && l.contains("user=app") && l.contains("database=appdb")),
        "no INFO connection line with client address, user and database:\n{opened:?}"
    );
    let closed: Vec<&str> = log.lines().filter(|l| l.contains("INFO") && l.contains("client disconnected")).collect();
    assert!(
        closed.iter().any(|l| l.contains("client=127.0.0.1:") && l.contains("user=app") && l.contains("database=appdb")),
        "no INFO disconnection line with client address, user and database:\n{closed:?}"
    );
    assert!(
        log.lines().any(|l| l.contains("DEBUG") && l.to_ascii_lowercase().contains("rout")),
        "no DEBUG routing decision in the log"
    );
    assert!(!log.contains(&secret_param), "a query parameter was logged");
    assert!(!log.contains(&secret_password), "a password was logged");
}

/// A client queued behind a full pool shows in SHOW POOLS as cl_waiting with PgBouncer's
/// maxwait / maxwait_us (seconds and the microseconds beyond them), and in /metrics as
/// lsnpool_pool_maxwait_seconds; both fall back to 0 once it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_pools_maxwait_counts_a_queued_clients_wait() {
    let metrics_port = free_port();
    let cfg = Cfg { pool_size: 1, query_wait_timeout: "20s".into(), metrics_listen: format!("127.0.0.1:{metrics_port}"), ..Cfg::default() };
    let p = Proc::start(&cfg);
    let maddr: std::net::SocketAddr = ([127, 0, 0, 1], metrics_port).into();
    let adm = p.admin().await;
    let holder = p.app("app_primary").await;
    holder.simple_query("BEGIN; SELECT 1").await.expect("the transaction holding the only connection");
    let queued = p.app("app_primary").await;
    let q = tokio::spawn(async move { (queued.simple_query("SELECT 1").await.map(|_| ()).map_err(|e| common::db_message(&e)), queued) });

    let waited_us = |t: &Table, r: &[Option<String>]| t.num(r, "maxwait") * 1_000_000 + t.num(r, "maxwait_us");
    let (t, row) = eventually(10.0, "SHOW POOLS: one client waiting for more than 1.2 s", || async {
        let (t, row) = pool_row(&adm, "appdb/primary").await;
        if t.num(&row, "cl_waiting") == 1 && waited_us(&t, &row) > 1_200_000 {
            Ok((t, row))
        } else {
            Err(format!("cl_waiting {} maxwait {} maxwait_us {}", t.get(&row, "cl_waiting"), t.get(&row, "maxwait"), t.get(&row, "maxwait_us")))
        }
    })
    .await;
    assert!(t.num(&row, "maxwait_us") < 1_000_000, "maxwait_us holds only the part below a second: {row:?}");
    let (_, replica) = pool_row(&adm, "appdb/replica0").await;
    assert_eq!(waited_us(&t, &replica), 0, "nobody waits for the replica: {replica:?}");
    eventually(5.0, "/metrics lsnpool_pool_maxwait_seconds{node=appdb/primary} above 1 s", || async {
        let all = parse_metrics(&scrape(maddr).await?);
        let w = sum(&all, "lsnpool_pool_maxwait_seconds", &[("node", "appdb/primary")]);
        if w > 1.0 { Ok(()) } else { Err(format!("maxwait gauge {w}")) }
    })
    .await;

    holder.simple_query("COMMIT").await.expect("commit");
    let (r, _queued) = within(5.0, "the queued query once the connection is free", q).await.expect("join");
    r.expect("the queued query");
    let (t, row) = pool_row(&adm, "appdb/primary").await;
    assert_eq!((t.num(&row, "cl_waiting"), waited_us(&t, &row)), (0, 0), "no wait left: {row:?}");
}

// ------------------------------------------------------------------ /metrics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_exposes_the_documented_names_with_the_consoles_numbers() {
    let metrics_port = free_port();
    let cfg = Cfg { metrics_listen: format!("127.0.0.1:{metrics_port}"), lsn_wait_timeout: "1s".into(), ..Cfg::default() };
    let p = Proc::start(&cfg);
    let maddr: std::net::SocketAddr = ([127, 0, 0, 1], metrics_port).into();
    let adm = p.admin().await;
    replicas_up(&adm, &["127.0.0.1:55432", R1, R2]).await;
    let table = unique("adm_metrics");
    create_table(&table, "id int").await;

    let reader = p.app("appdb").await;
    let writer = p.app("appdb").await;
    for i in 0..10 {
        reader.simple_query(&format!("SELECT {i}")).await.expect("read");
    }
    // As in counters_move_after_known_traffic: read on until a replica has served one.
    for _ in 0..30 {
        let t = must_show(&adm, "SHOW ROUTING").await;
        if t.num(t.row_where("database", "appdb"), "replica_reads") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        reader.simple_query("SELECT 'again'").await.expect("read");
    }
    for i in 0..5 {
        writer.simple_query(&format!("BEGIN; INSERT INTO {table} VALUES ({i}); COMMIT")).await.expect("write");
        // Read-your-writes right after the commit: served by a replica that caught up (maybe
        // after a wait) or by the primary.
        writer.simple_query(&format!("SELECT count(*) FROM {table}")).await.expect("read after write");
    }
    assert!(writer.simple_query("SELECT 1/0").await.is_err(), "1/0 succeeded");
    assert!(connect(p.port, "app", "wrong", "appdb", "").await.is_err(), "wrong password accepted");
    let strong = p.app("app_primary").await;
    strong.simple_query("SELECT 1").await.expect("strong read");

    // Scrape until the 1 s gauges have caught up and the totals match the console's.
    let (text, all) = eventually(10.0, "/metrics agrees with SHOW STATS / SHOW ROUTING / SHOW SERVERS", || async {
        let text = scrape(maddr).await?;
        let all = parse_metrics(&text);
        let st = show(&adm, "SHOW STATS").await.map_err(|e| e.to_string())?;
        let sr = stats_row(&st, "appdb");
        let ro = show(&adm, "SHOW ROUTING").await.map_err(|e| e.to_string())?;
        let rr = ro.row_where("database", "appdb").clone();
        let sv = show(&adm, "SHOW SERVERS").await.map_err(|e| e.to_string())?;
        let db = [("database", "appdb")];
        let checks = [
            ("lsnpool_transactions_total", sum(&all, "lsnpool_transactions_total", &db), st.num(&sr, "total_xact_count") as f64),
            ("lsnpool_queries_total", sum(&all, "lsnpool_queries_total", &db), st.num(&sr, "total_query_count") as f64),
            ("lsnpool_bytes_received_total", sum(&all, "lsnpool_bytes_received_total", &db), st.num(&sr, "total_received") as f64),
            ("lsnpool_bytes_sent_total", sum(&all, "lsnpool_bytes_sent_total", &db), st.num(&sr, "total_sent") as f64),
            (
                "lsnpool_routing_decisions_total{route=replica}",
                sum(&all, "lsnpool_routing_decisions_total", &[("database", "appdb"), ("route", "replica")]),
                ro.num(&rr, "replica_reads") as f64,
            ),
            (
                "lsnpool_routing_decisions_total{reason=write}",
                sum(&all, "lsnpool_routing_decisions_total", &[("database", "appdb"), ("reason", "write")]),
                ro.num(&rr, "primary_write") as f64,
            ),
            (
                "lsnpool_routing_decisions_total{reason=lag_fallback}",
                sum(&all, "lsnpool_routing_decisions_total", &[("database", "appdb"), ("reason", "lag_fallback")]),
                ro.num(&rr, "primary_lag_fallback") as f64,
            ),
            (
                "lsnpool_routing_decisions_total{database=app_primary,reason=strong}",
                sum(&all, "lsnpool_routing_decisions_total", &[("database", "app_primary"), ("reason", "strong")]),
                ro.num(ro.row_where("database", "app_primary"), "primary_strong") as f64,
            ),
            (
                "lsnpool_server_connections",
                sum(&all, "lsnpool_server_connections", &[]),
                sv.rows.len() as f64,
            ),
            ("lsnpool_clients", sum(&all, "lsnpool_clients", &[]), 3.0),
            ("lsnpool_clients_by_state", sum(&all, "lsnpool_clients_by_state", &[]), 3.0),
        ];
        let bad: Vec<String> = checks.iter().filter(|(_, m, c)| m != c).map(|(n, m, c)| format!("{n}: metrics {m} vs console {c}")).collect();
        if bad.is_empty() {
            Ok((text, all))
        } else {
            Err(bad.join("; "))
        }
    })
    .await;

    let types = metric_types(&text);
    let ty = |n: &str| types.get(n).map(String::as_str).unwrap_or("");
    let has = |n: &str, labels: &[(&str, &str)]| !samples(&all, n, labels).is_empty();
    let appdb = [("database", "appdb")];

    // Counters, with the labels the README documents.
    for (name, labels) in [
        ("lsnpool_transactions_total", vec![("database", "appdb"), ("route", "primary")]),
        ("lsnpool_transactions_total", vec![("database", "appdb"), ("route", "replica")]),
        ("lsnpool_queries_total", vec![("database", "appdb"), ("route", "primary")]),
        ("lsnpool_queries_total", vec![("database", "appdb"), ("route", "replica")]),
        ("lsnpool_routing_decisions_total", vec![("database", "appdb"), ("route", "replica"), ("reason", "read")]),
        ("lsnpool_routing_decisions_total", vec![("database", "appdb"), ("route", "primary"), ("reason", "write")]),
        ("lsnpool_bytes_received_total", vec![("database", "appdb")]),
        ("lsnpool_bytes_sent_total", vec![("database", "appdb")]),
        ("lsnpool_server_connections_opened_total", vec![("node", "appdb/primary")]),
        ("lsnpool_errors_total", vec![("class", "22")]),
        ("lsnpool_client_login_failures_total", vec![("sqlstate", "28P01")]),
    ] {
        assert_eq!(ty(name), "counter", "# TYPE of {name}");
        let v = sum(&all, name, &labels);
        assert!(v >= 1.0, "{name}{labels:?} = {v} after traffic\n{text}");
    }
    for reason in ["write", "strong", "hint", "lag_fallback", "no_replica_up", "retry_25006"] {
        assert!(has("lsnpool_routing_decisions_total", &[("database", "appdb"), ("route", "primary"), ("reason", reason)]), "reason {reason} missing");
    }
    assert!(sum(&all, "lsnpool_transactions_total", &appdb) >= 16.0);

    // Gauges.
    for name in ["lsnpool_clients", "lsnpool_clients_by_state", "lsnpool_server_connections", "lsnpool_node_up", "lsnpool_replica_lag_bytes", "lsnpool_replica_lag_seconds"] {
        assert_eq!(ty(name), "gauge", "# TYPE of {name}");
    }
    for state in ["idle", "active", "waiting"] {
        assert!(has("lsnpool_clients_by_state", &[("state", state)]), "lsnpool_clients_by_state{{state={state}}} missing");
    }
    assert!(has("lsnpool_server_connections", &[("node", "appdb/primary"), ("state", "idle")]), "server connections by node/state");
    for node in ["127.0.0.1:55432", R1, R2] {
        let up = sum(&all, "lsnpool_node_up", &[("cluster", "appdb"), ("node", node)]);
        assert_eq!(up, 1.0, "lsnpool_node_up{{node={node}}}");
    }
    for node in [R1, R2] {
        for name in ["lsnpool_replica_lag_bytes", "lsnpool_replica_lag_seconds"] {
            let v = samples(&all, name, &[("cluster", "appdb"), ("node", node)]);
            assert_eq!(v.len(), 1, "{name}{{node={node}}}: {v:?}");
            assert!(v[0].value >= 0.0 && v[0].value.is_finite(), "{name}{{node={node}}} = {}", v[0].value);
        }
    }

    // Histograms (the exporter renders them as summaries unless buckets are configured).
    for name in ["lsnpool_server_wait_seconds", "lsnpool_transaction_seconds", "lsnpool_catchup_wait_seconds"] {
        assert!(matches!(ty(name), "summary" | "histogram"), "# TYPE of {name}: {:?}", ty(name));
    }
    let xacts = sum(&all, "lsnpool_transactions_total", &appdb);
    assert_eq!(sum(&all, "lsnpool_transaction_seconds_count", &appdb), xacts, "one transaction_seconds sample per transaction");
    assert!(sum(&all, "lsnpool_server_wait_seconds_count", &appdb) >= xacts, "one server wait per assignment");
    let ro = must_show(&adm, "SHOW ROUTING").await;
    let waits = ro.num(ro.row_where("database", "appdb"), "catchup_waits") as f64;
    assert_eq!(sum(&all, "lsnpool_catchup_wait_seconds_count", &appdb), waits, "catch-up waits: metrics vs SHOW ROUTING");
    drop_table(&table).await;
}
