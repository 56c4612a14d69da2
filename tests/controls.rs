//! Issue 12, operator controls for critical paths, against the real topology: query rules
//! (simple, extended, prepared; RELOAD; a bad regex), the kill switch under load, per-path
//! lag thresholds, the primary read budget under a read flood, and the circuit breaker.
//!
//! Which node served a read is told by `current_setting('port')`.

mod common;
#[path = "routing_support/mod.rs"]
mod routing_support;

use common::*;
use routing_support::*;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A rule sending statements that mention `marker` to the primary.
fn strong_rule(name: &str, marker: &str, critical: bool) -> String {
    format!("[[rules]]\nname = \"{name}\"\nmatch = '(?i)\\b{marker}\\b'\nconsistency = \"strong\"\ncritical = {critical}\n")
}

async fn rule_hits(a: &Conn, name: &str) -> u64 {
    let rules = show(a, "RULES").await;
    let row = rules.iter().find(|r| r.get("name").map(String::as_str) == Some(name));
    row.and_then(|r| r.get("hits")).and_then(|h| h.parse().ok()).unwrap_or_else(|| panic!("no rule {name} in {rules:?}"))
}

async fn breaker(a: &Conn) -> std::collections::BTreeMap<String, String> {
    show(a, "BREAKERS").await.into_iter().next().expect("a SHOW BREAKERS row")
}

async fn port(c: &Conn, sql: &str) -> u16 {
    let r = one_row(c, sql).await.unwrap_or_else(|e| panic!("{e}"));
    r[0].as_deref().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{sql}: {r:?}"))
}

async fn prepared_port(c: &Conn, st: &tokio_postgres::Statement) -> u16 {
    let row = c.query_one(st, &[]).await.unwrap_or_else(|e| panic!("prepared read: {}", db_message(&e)));
    let p: String = row.get(0);
    p.parse().expect("port")
}

// ================================================================== 1. query rules

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_route_matching_statements_in_every_protocol_and_others_as_before() {
    let _topo = shared();
    let p = start_ready(PoolerOpts::new().tail(&strong_rule("payments", "rule_accounts", true))).await;
    let a = admin(&p).await;
    let c = p.app().await;

    // Simple protocol: the rule's statement to the primary, another read to a replica.
    assert_eq!(port(&c, "SELECT current_setting('port') AS rule_accounts").await, PRIMARY);
    assert_ne!(port(&c, "SELECT current_setting('port') AS other").await, PRIMARY, "a read no rule matches stays on replicas");
    // Extended, unnamed statement (Parse/Bind/Execute in one batch).
    let rows = c.query_typed("SELECT current_setting('port') AS rule_accounts", &[]).await.expect("query_typed");
    assert_eq!(rows[0].get::<_, String>(0), PRIMARY.to_string());
    // Prepared once, executed three times: the cached rule routes every Execute.
    let st = c.prepare("SELECT current_setting('port') AS rule_accounts").await.expect("prepare");
    for _ in 0..3 {
        assert_eq!(prepared_port(&c, &st).await, PRIMARY);
    }
    let other = c.prepare("SELECT current_setting('port') AS other").await.expect("prepare");
    assert_ne!(prepared_port(&c, &other).await, PRIMARY);

    // The prepare's own Parse/Describe batch ran where the rule says too.
    assert_eq!(rule_hits(&a, "payments").await, 6, "1 simple + 1 unnamed + 1 prepare + 3 executions");
    let r = routing(&a, "appdb").await;
    assert!(r["primary_strong"] >= 5, "{r:?}");
    let metrics_rules = show(&a, "RULES").await;
    assert_eq!(metrics_rules[0].get("critical").map(String::as_str), Some("true"), "{metrics_rules:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_with_a_new_rule_applies_to_the_next_transaction_and_a_bad_regex_keeps_the_old() {
    let _topo = shared();
    let opts = PoolerOpts::new();
    let p = start_ready(opts.clone()).await;
    let a = admin(&p).await;
    let c = p.app().await;
    let st = c.prepare("SELECT current_setting('port') AS reload_marker").await.expect("prepare");
    assert_ne!(prepared_port(&c, &st).await, PRIMARY, "no rule yet: a replica");

    let with_rule = opts.clone().tail(&strong_rule("late", "reload_marker", false));
    p.rewrite_config(&with_rule);
    a.simple_query("RELOAD").await.expect("RELOAD");
    // Same client, same prepared statement: its cached rule is from the old set.
    assert_eq!(prepared_port(&c, &st).await, PRIMARY, "the new rule routes the next transaction");
    assert_eq!(port(&c, "SELECT current_setting('port') AS reload_marker").await, PRIMARY);

    let broken = opts.tail("[[rules]]\nname = \"broken\"\nmatch = 'select ('\nconsistency = \"strong\"\n");
    p.rewrite_config(&broken);
    let e = a.simple_query("RELOAD").await.expect_err("a bad regex fails RELOAD");
    let msg = db_message(&e);
    assert!(msg.contains("broken") && msg.contains("rules[0].match") && msg.contains("regex"), "{msg}");
    assert_eq!(prepared_port(&c, &st).await, PRIMARY, "the old rules stay in force");
    assert_eq!(rule_hits(&a, "late").await, 3);
}

// ================================================================== 4. kill switch

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_and_enable_routing_under_load_without_a_client_error() {
    const CLIENTS: usize = 6;
    let _topo = shared();
    let opts = PoolerOpts::new().pool_size(4);
    let p = start_ready(opts.clone()).await;
    let a = admin(&p).await;
    // 0: routing on; 1: disabled (DISABLE ROUTING returned); 2: enabled again; 3: a switch
    // is under way (reads overlapping it prove nothing and are not kept).
    let phase = Arc::new(AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let c = p.app().await;
        let (phase, stop) = (phase.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen: Vec<(u8, u16)> = Vec::new();
            while !stop.load(Ordering::Acquire) {
                let before = phase.load(Ordering::Acquire);
                let port = port_of(&c, "").await?;
                if phase.load(Ordering::Acquire) == before && before != 3 {
                    seen.push((before, port));
                }
            }
            Ok::<_, String>(seen)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    phase.store(3, Ordering::Release);
    a.simple_query("DISABLE ROUTING appdb").await.expect("DISABLE ROUTING");
    phase.store(1, Ordering::Release);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dbs = show(&a, "DATABASES").await;
    let appdb = dbs.iter().find(|r| r.get("name").map(String::as_str) == Some("appdb")).expect("appdb row");
    assert_eq!(appdb.get("routing_disabled").map(String::as_str), Some("1"), "{appdb:?}");
    // RELOAD does not undo it.
    a.simple_query("RELOAD").await.expect("RELOAD");
    tokio::time::sleep(Duration::from_millis(300)).await;
    phase.store(3, Ordering::Release);
    a.simple_query("ENABLE ROUTING appdb").await.expect("ENABLE ROUTING");
    phase.store(2, Ordering::Release);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Release);

    let mut by_phase = [Ports::default(), Ports::default(), Ports::default(), Ports::default()];
    for t in tasks {
        let seen = within(30.0, "client", t).await.expect("task").unwrap_or_else(|e| panic!("client error: {e}"));
        for (ph, port) in seen {
            by_phase[usize::from(ph)].add(port);
        }
    }
    println!("before: {}; disabled: {}; enabled again: {}", by_phase[0], by_phase[1], by_phase[2]);
    assert!(by_phase[1].total() > 0 && by_phase[1].replicas() == 0, "disabled: every read on the primary: {}", by_phase[1]);
    assert!(by_phase[0].replicas() > 0 && by_phase[2].replicas() > 0, "routing on: reads on replicas");
    assert!(routing(&a, "appdb").await["primary_disabled"] > 0);
    let e = a.simple_query("DISABLE ROUTING nosuchdb").await.expect_err("unknown database");
    assert!(db_message(&e).contains("nosuchdb"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_enabled_false_in_the_config_sends_everything_to_the_primary() {
    let _topo = shared();
    let p = PoolerOpts::new().routing_raw("enabled", "false").start();
    let c = p.app().await;
    for _ in 0..5 {
        assert_eq!(port_of(&c, "").await.expect("read"), PRIMARY);
    }
    let a = admin(&p).await;
    let dbs = show(&a, "DATABASES").await;
    assert!(dbs.iter().all(|r| r.get("routing_disabled").map(String::as_str) == Some("1")), "{dbs:?}");
}

// ================================================================== 5. per-path lag

/// r2 alone, replaying 300 ms late, kept behind by a writer straight to the primary.
fn lagging_r2_opts() -> PoolerOpts {
    PoolerOpts::new().replica_list("[\"127.0.0.1:55434\"]").routing_raw("probe_max_lag", "\"0ms\"")
}

async fn wait_r2_in_rotation(p: &Pooler) -> Conn {
    let a = admin(p).await;
    assert!(wait_rotation(&a, R2, true, Duration::from_secs(15)).await.is_some(), "r2 not in rotation");
    a
}

/// r2 at its 300 ms apply delay (shared with other such tests) and a fresh counter table.
async fn delayed_table(prefix: &str, rows: i32) -> (Delayed, String) {
    let topo = delayed_r2();
    let t = unique(prefix);
    counter_table(&t, 0..rows).await;
    (topo, t)
}

fn spawn_primary_writer(table: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let c = direct(PRIMARY).await;
        while !stop.load(Ordering::Acquire) {
            let _ = c.simple_query(&format!("UPDATE {table} SET v = v + 1 WHERE id = 0")).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_and_a_rule_keep_their_own_lag_threshold() {
    let (_topo, t) = delayed_table("ctl_lag", 1).await;
    let opts = lagging_r2_opts()
        .aliases("{ app_read = \"bounded\", inv_read = { consistency = \"bounded\", max_replica_lag = \"100ms\" } }")
        .tail(&format!("[[rules]]\nname = \"inventory\"\nmatch = 'inventory_marker'\nmax_replica_lag = \"100ms\"\n"));
    let p = opts.start();
    let a = wait_r2_in_rotation(&p).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_primary_writer(t.clone(), stop.clone());
    // Wait until r2 is seen lagging past 100 ms (its apply delay is 300 ms).
    let t0 = Instant::now();
    while replica_row(&a, R2).await.get("lag_ms").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) < 150 {
        assert!(t0.elapsed() < Duration::from_secs(10), "r2 never lagged: {:?}", replica_row(&a, R2).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let read = Conn::connect(&p.dsn("app", "app", "").replace("dbname=appdb", "dbname=app_read")).await.expect("app_read");
    let inv = Conn::connect(&p.dsn("app", "app", "").replace("dbname=appdb", "dbname=inv_read")).await.expect("inv_read");
    let mut ports = (Ports::default(), Ports::default(), Ports::default());
    for _ in 0..20 {
        ports.0.add(port_of(&read, "").await.expect("app_read"));
        ports.1.add(port_of(&inv, "").await.expect("inv_read"));
        ports.2.add(port_of(&read, "/* inventory_marker */ ").await.expect("rule"));
    }
    stop.store(true, Ordering::Release);
    let _ = writer.await;
    println!("app_read (10s): {}; inv_read (100ms): {}; inventory rule (100ms): {}", ports.0, ports.1, ports.2);
    // A poll can catch r2 between two of the writer's commits looking caught up (lag 0):
    // a few reads may go there; without the path's own threshold they all would.
    assert_eq!(ports.0.get(R2), 20, "the cluster's 10 s threshold keeps r2");
    assert!(ports.1.get(PRIMARY) >= 15, "the alias's 100 ms threshold excludes r2: {}", ports.1);
    assert!(ports.2.get(PRIMARY) >= 15, "the rule's 100 ms threshold excludes r2: {}", ports.2);
    drop_table(&t).await;
}

// ================================================================== 2. primary read budget

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_read_budget_keeps_writes_flowing_under_a_read_flood() {
    const READERS: usize = 50;
    let _topo = shared();
    let t = unique("ctl_budget");
    counter_table(&t, 0..1).await;
    let opts = PoolerOpts::new()
        .pool_size(4)
        .query_wait_timeout("1s")
        .cluster_line("primary_read_pool_size = 2")
        .tail(&strong_rule("flood", "flood_marker", true));
    let p = start_ready(opts).await;
    let a = admin(&p).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let c = p.app().await;
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            let (mut ok, mut refused) = (0u64, 0u64);
            while !stop.load(Ordering::Acquire) {
                match c.simple_query("SELECT pg_sleep(0.2) AS flood_marker").await {
                    Ok(_) => ok += 1,
                    Err(e) if sqlstate(&e).as_deref() == Some("57014") => refused += 1,
                    Err(e) => return Err(db_message(&e)),
                }
            }
            Ok((ok, refused))
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // the flood is on
    let w = p.app().await;
    let mut max_active = 0;
    for i in 0..10 {
        w.simple_query(&format!("UPDATE {t} SET v = v + 1 WHERE id = 0"))
            .await
            .unwrap_or_else(|e| panic!("write #{i} during the read flood: {}", db_message(&e)));
        let b = show(&a, "BREAKERS").await;
        max_active = max_active.max(b[0].get("primary_reads_active").and_then(|v| v.parse().ok()).unwrap_or(0u64));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Release);
    let (mut ok, mut refused) = (0, 0);
    for r in readers {
        let (o, f) = within(30.0, "reader", r).await.expect("task").unwrap_or_else(|e| panic!("reader error: {e}"));
        ok += o;
        refused += f;
    }
    let b = show(&a, "BREAKERS").await;
    println!("reads served {ok}, refused by the budget {refused}; max reads on the primary {max_active}; {b:?}");
    assert!(max_active <= 2, "reads held {max_active} primary connections, budget 2");
    assert!(b[0]["budget_waits"].parse::<u64>().unwrap_or(0) > 0, "{b:?}");
    drop_table(&t).await;
}

// ================================================================== 3. circuit breaker

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_trips_under_a_saturated_primary_degrades_non_critical_reads_and_closes() {
    let (_topo, t) = delayed_table("ctl_breaker", 4).await;
    let opts = lagging_r2_opts()
        .pool_size(2)
        .query_wait_timeout("20s")
        .routing_raw("degrade", "true")
        .routing_raw("breaker_window", "\"1s\"")
        .routing_raw("breaker_max_waiting", "1")
        .routing_raw("breaker_max_lag", "\"60s\"")
        .tail("[[rules]]\nname = \"checkout\"\nmatch = 'critical_marker'\nconsistency = \"read-your-writes\"\ncritical = true\n");
    let p = opts.start();
    let a = wait_r2_in_rotation(&p).await;

    // Saturate app's primary pool (2 connections held in open transactions, 2 clients queued).
    let mut holders = Vec::new();
    for i in 0..2 {
        let c = p.app().await;
        c.simple_query(&format!("BEGIN; UPDATE {t} SET v = v + 1 WHERE id = {i}")).await.expect("hold");
        holders.push(c);
    }
    let mut queued = Vec::new();
    for i in 2..4 {
        let c = p.app().await;
        let sql = format!("UPDATE {t} SET v = v + 1 WHERE id = {i}");
        queued.push(tokio::spawn(async move { c.simple_query(&sql).await.map(|_| ()).map_err(|e| db_message(&e)) }));
    }
    let t0 = Instant::now();
    while breaker(&a).await["state"] != "open" {
        assert!(t0.elapsed() < Duration::from_secs(10), "the breaker never tripped: {:?}", breaker(&a).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // user postgres has its own pool: its writes go through; its reads right after fall back
    // (r2 replays 300 ms late), and the breaker sends the non-critical one to r2.
    let s = p.superuser().await;
    s.simple_query(&format!("INSERT INTO {t} VALUES (100, 0)")).await.expect("write");
    assert_eq!(port_of(&s, "").await.expect("read"), R2, "a non-critical fallback read is degraded to r2");
    s.simple_query(&format!("INSERT INTO {t} VALUES (101, 0)")).await.expect("write");
    assert_eq!(port_of(&s, "/* critical_marker */ ").await.expect("read"), PRIMARY, "a critical read is never degraded");
    let r = routing(&a, "appdb").await;
    assert_eq!(r["degraded_reads"], 1, "{r:?}");

    // Release the primary: the queued writes finish, and after a healthy window it closes.
    for c in &holders {
        c.simple_query("COMMIT").await.expect("commit");
    }
    for q in queued {
        within(20.0, "queued write", q).await.expect("task").unwrap_or_else(|e| panic!("queued write: {e}"));
    }
    let t0 = Instant::now();
    while breaker(&a).await["state"] != "closed" {
        assert!(t0.elapsed() < Duration::from_secs(10), "the breaker never closed: {:?}", breaker(&a).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = breaker(&a).await;
    assert_eq!((b["trips"].as_str(), b["degraded_reads"].as_str()), ("1", "1"), "{b:?}");
    let log = p.log();
    assert!(log.contains("circuit breaker tripped") && log.contains("circuit breaker closed"), "WARN per transition");
    drop_table(&t).await;
}
