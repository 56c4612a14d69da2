//! Issue 3, LSN-aware read routing, against the real topology (primary 55432, r1 55433, r2
//! 55434 whose apply delay the tests set to 300 ms where it matters).
//!
//! Every test starts its own lsnpool, so `SHOW ROUTING` / `SHOW REPLICAS` counters are that
//! test's own. Tests that pause or stop replicas hold the topology exclusively and restore it on
//! drop; the others share it (see `routing_support`).
//!
//! Run: `cargo test --test routing -- --test-threads=4 --nocapture` (the numbers are printed).

mod common;
#[path = "routing_support/mod.rs"]
mod routing_support;

use common::*;
use routing_support::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One client's results in a read-your-writes loop.
#[derive(Default, Debug)]
struct Tally {
    reads: u64,
    on_replica: u64,
    stale: u64,
    examples: Vec<String>,
}

impl Tally {
    fn read(&mut self, expected: i64, got: i64, on_replica: bool, what: &str) {
        self.reads += 1;
        if on_replica {
            self.on_replica += 1;
        }
        if got != expected {
            self.stale += 1;
            if self.examples.len() < 5 {
                self.examples.push(format!("{what}: expected v={expected}, read v={got} (on_replica={on_replica})"));
            }
        }
    }
    fn merge(&mut self, o: Tally) {
        self.reads += o.reads;
        self.on_replica += o.on_replica;
        self.stale += o.stale;
        self.examples.extend(o.examples);
    }
}

fn pct(n: u64, d: u64) -> f64 {
    if d == 0 {
        0.0
    } else {
        100.0 * n as f64 / d as f64
    }
}

/// Runs `n` client tasks, each given its index and a connection; fails the test on any error.
async fn run_clients<F, Fut>(pooler: &Pooler, n: usize, dsn_extra: &str, f: F) -> Tally
where
    F: Fn(usize, Conn) -> Fut,
    Fut: std::future::Future<Output = Result<Tally, String>> + Send + 'static,
{
    let mut handles = Vec::new();
    for i in 0..n {
        let c = within(15.0, "login through lsnpool", pooler.connect_dsn(dsn_extra))
            .await
            .unwrap_or_else(|e| panic!("login: {}", db_message(&e)));
        handles.push(tokio::spawn(f(i, c)));
    }
    let mut total = Tally::default();
    let mut errors = Vec::new();
    for h in handles {
        match within(120.0, "client task", h).await {
            Ok(Ok(t)) => total.merge(t),
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(format!("task panicked: {e}")),
        }
    }
    assert!(errors.is_empty(), "client errors: {errors:#?}");
    total
}

fn parse_v(s: &Option<String>) -> Result<i64, String> {
    s.as_deref().and_then(|v| v.parse().ok()).ok_or_else(|| format!("bad v {s:?}"))
}

// ================================================================== 1. read-your-writes, simple

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_simple_protocol_and_replica_share() {
    const CLIENTS: usize = 16;
    const ITERS: i64 = 150;
    const READS: u64 = 200;
    let _topo = delayed_r2();
    let p = start_ready(PoolerOpts::new().pool_size(8)).await;
    let t = unique("rt_ryw_simple");
    counter_table(&t, 0..CLIENTS as i32).await;

    let t1 = t.clone();
    let writes = run_clients(&p, CLIENTS, "", move |i, c| {
        let t = t1.clone();
        async move {
            let mut tally = Tally::default();
            for n in 1..=ITERS {
                c.simple_query(&format!("UPDATE {t} SET v = v + 1 WHERE id = {i}"))
                    .await
                    .map_err(|e| format!("client {i} UPDATE #{n}: {}", db_message(&e)))?;
                let r = routing_support::one_row(&c, &format!("SELECT v, pg_is_in_recovery() FROM {t} WHERE id = {i}")).await?;
                tally.read(n, parse_v(&r[0])?, r[1].as_deref() == Some("t"), &format!("client {i} iteration {n}"));
            }
            Ok(tally)
        }
    })
    .await;
    println!(
        "read-your-writes (simple, {CLIENTS} clients x {ITERS}, r2 +300ms): {} reads, {} stale, {} on replicas ({:.1}%)",
        writes.reads,
        writes.stale,
        writes.on_replica,
        pct(writes.on_replica, writes.reads)
    );
    assert_eq!(writes.stale, 0, "stale reads after the client's own write: {:#?}", writes.examples);
    assert_eq!(writes.reads, CLIENTS as u64 * ITERS as u64);

    // Clients that have not written: their reads belong on the replicas.
    let t2 = t.clone();
    let reads = run_clients(&p, CLIENTS, "", move |i, c| {
        let t = t2.clone();
        async move {
            let mut tally = Tally::default();
            for _ in 0..READS {
                let r = routing_support::one_row(&c, &format!("SELECT v, pg_is_in_recovery() FROM {t} WHERE id = {i}")).await?;
                tally.read(ITERS, parse_v(&r[0])?, r[1].as_deref() == Some("t"), &format!("reader {i}"));
            }
            Ok(tally)
        }
    })
    .await;
    let share = pct(reads.on_replica, reads.reads);
    println!("read-only (fresh clients, {CLIENTS} x {READS}): {} reads, {} on replicas ({share:.1}%)", reads.reads, reads.on_replica);
    let a = admin(&p).await;
    println!("SHOW ROUTING appdb: {:?}", routing(&a, "appdb").await);
    assert!(share >= 80.0, "only {share:.1}% of reads by clients that never wrote went to replicas (want >= 80%)");
    drop_table(&t).await;
}

// ================================================================== 2. extended protocol, BEGIN/COMMIT, functions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_extended_protocol_prepared() {
    const CLIENTS: usize = 8;
    const ITERS: i64 = 150;
    let _topo = delayed_r2();
    let p = start_ready(PoolerOpts::new().pool_size(8)).await;
    let t = unique("rt_ryw_ext");
    counter_table(&t, 0..CLIENTS as i32).await;
    let tt = t.clone();
    let tally = run_clients(&p, CLIENTS, "", move |i, c| {
        let t = tt.clone();
        async move {
            let id = i as i32;
            let upd = c.prepare(&format!("UPDATE {t} SET v = v + 1 WHERE id = $1")).await.map_err(|e| db_message(&e))?;
            let sel = c.prepare(&format!("SELECT v, pg_is_in_recovery() FROM {t} WHERE id = $1")).await.map_err(|e| db_message(&e))?;
            let mut tally = Tally::default();
            for n in 1..=ITERS {
                let k = c.execute(&upd, &[&id]).await.map_err(|e| format!("client {i} UPDATE #{n}: {}", db_message(&e)))?;
                if k != 1 {
                    return Err(format!("client {i} UPDATE #{n} touched {k} rows"));
                }
                let row = c.query_one(&sel, &[&id]).await.map_err(|e| format!("client {i} SELECT #{n}: {}", db_message(&e)))?;
                tally.read(n, i64::from(row.get::<_, i32>(0)), row.get(1), &format!("client {i} iteration {n}"));
            }
            Ok(tally)
        }
    })
    .await;
    println!(
        "read-your-writes (extended/prepared, {CLIENTS} x {ITERS}): {} reads, {} stale, {} on replicas ({:.1}%)",
        tally.reads,
        tally.stale,
        tally.on_replica,
        pct(tally.on_replica, tally.reads)
    );
    assert_eq!(tally.stale, 0, "stale reads: {:#?}", tally.examples);
    drop_table(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_explicit_transactions() {
    const CLIENTS: usize = 8;
    const ITERS: i64 = 90;
    let _topo = delayed_r2();
    let p = start_ready(PoolerOpts::new().pool_size(8)).await;
    let t = unique("rt_ryw_txn");
    counter_table(&t, 0..CLIENTS as i32).await;
    let tt = t.clone();
    let tally = run_clients(&p, CLIENTS, "", move |i, mut c| {
        let t = tt.clone();
        async move {
            let id = i as i32;
            let upd_sql = format!("UPDATE {t} SET v = v + 1 WHERE id = $1");
            let mut tally = Tally::default();
            for n in 1..=ITERS {
                let err = |e: tokio_postgres::Error| format!("client {i} write #{n}: {}", db_message(&e));
                match n % 3 {
                    // tokio-postgres' Transaction: BEGIN, extended-protocol UPDATE, COMMIT.
                    0 => {
                        let tx = c.client.transaction().await.map_err(err)?;
                        tx.execute(upd_sql.as_str(), &[&id]).await.map_err(err)?;
                        tx.commit().await.map_err(err)?;
                    }
                    // One simple Query per statement.
                    1 => {
                        c.simple_query("BEGIN").await.map_err(err)?;
                        c.simple_query(&format!("UPDATE {t} SET v = v + 1 WHERE id = {i}")).await.map_err(err)?;
                        c.simple_query("COMMIT").await.map_err(err)?;
                    }
                    // The whole transaction in one simple Query.
                    _ => {
                        c.simple_query(&format!("BEGIN; UPDATE {t} SET v = v + 1 WHERE id = {i}; COMMIT")).await.map_err(err)?;
                    }
                }
                let r = routing_support::one_row(&c, &format!("SELECT v, pg_is_in_recovery() FROM {t} WHERE id = {i}")).await?;
                tally.read(n, parse_v(&r[0])?, r[1].as_deref() == Some("t"), &format!("client {i} iteration {n} (style {})", n % 3));
            }
            Ok(tally)
        }
    })
    .await;
    println!(
        "read-your-writes (BEGIN..COMMIT writes, {CLIENTS} x {ITERS}): {} reads, {} stale, {} on replicas ({:.1}%)",
        tally.reads,
        tally.stale,
        tally.on_replica,
        pct(tally.on_replica, tally.reads)
    );
    assert_eq!(tally.stale, 0, "stale reads after COMMIT: {:#?}", tally.examples);
    let a = admin(&p).await;
    let r = routing(&a, "appdb").await;
    println!("SHOW ROUTING appdb: {r:?}");
    assert!(r["lsn_captured"] >= CLIENTS as u64 * ITERS as u64, "every committed write should have its LSN captured: {r:?}");
    drop_table(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_inside_function_called_by_select_is_retried_on_primary() {
    const CLIENTS: usize = 6;
    const ITERS: i64 = 60;
    let _topo = delayed_r2();
    let p = start_ready(PoolerOpts::new().pool_size(8)).await;
    let t = unique("rt_fn");
    counter_table(&t, 0..CLIENTS as i32).await;
    let f = format!("bump_{}", t);
    {
        let pc = direct(PRIMARY).await;
        pc.batch_execute(&format!(
            "CREATE FUNCTION {f}(id int) RETURNS int LANGUAGE sql AS $$ UPDATE {t} SET v = v + 1 WHERE id = $1 RETURNING v $$"
        ))
        .await
        .expect("create function");
        wait_replicas_caught_up().await;
    }
    let a = admin(&p).await;
    let before = routing(&a, "appdb").await;
    let (tt, ff) = (t.clone(), f.clone());
    let tally = run_clients(&p, CLIENTS, "", move |i, c| {
        let (t, f) = (tt.clone(), ff.clone());
        async move {
            let id = i as i32;
            let bump = c.prepare(&format!("SELECT {f}($1)")).await.map_err(|e| db_message(&e))?;
            let mut tally = Tally::default();
            for n in 1..=ITERS {
                // Alternate the simple and the extended protocol for the writing SELECT.
                let got = if n % 2 == 0 {
                    let r = routing_support::one_row(&c, &format!("SELECT {f}({i})")).await.map_err(|e| format!("client {i} #{n}: {e}"))?;
                    parse_v(&r[0])?
                } else {
                    let row = c.query_one(&bump, &[&id]).await.map_err(|e| format!("client {i} #{n} (prepared): {}", db_message(&e)))?;
                    i64::from(row.get::<_, i32>(0))
                };
                if got != n {
                    return Err(format!("client {i} #{n}: {f}() returned {got}, want {n}"));
                }
                let r = routing_support::one_row(&c, &format!("SELECT v, pg_is_in_recovery() FROM {t} WHERE id = {i}")).await?;
                tally.read(n, parse_v(&r[0])?, r[1].as_deref() == Some("t"), &format!("client {i} iteration {n}"));
            }
            Ok(tally)
        }
    })
    .await;
    let after = routing(&a, "appdb").await;
    let retries = after["primary_retry_25006"] - before["primary_retry_25006"];
    println!(
        "write in function ({CLIENTS} x {ITERS}): {} reads, {} stale, {} on replicas; primary_retry_25006 +{retries}; routing {after:?}",
        tally.reads, tally.stale, tally.on_replica
    );
    assert_eq!(tally.stale, 0, "stale reads: {:#?}", tally.examples);
    assert!(retries >= 1, "no SELECT of the writing function was retried after 25006 (SHOW ROUTING {after:?})");
    // Every writing SELECT's commit LSN was learned (else the read after it could be stale).
    let direct_check = direct(PRIMARY).await;
    let sum: i64 = direct_check.query_one(&format!("SELECT sum(v)::int8 FROM {t}"), &[]).await.unwrap().get(0);
    assert_eq!(sum, CLIENTS as i64 * ITERS, "each bump ran exactly once (no double execution on retry)");
    let _ = direct_check.batch_execute(&format!("DROP FUNCTION IF EXISTS {f}(int)")).await;
    drop_table(&t).await;
}

// ================================================================== 3. monotonic reads

/// Keeps incrementing row `id` of `table` directly on the primary until `stop`.
fn spawn_writer(table: String, id: i32, stop: Arc<AtomicBool>, pause_ms: u64) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let c = direct(PRIMARY).await;
        let st = c.prepare(&format!("UPDATE {table} SET v = v + 1 WHERE id = $1")).await.expect("prepare writer");
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            c.execute(&st, &[&id]).await.expect("writer UPDATE");
            n += 1;
            if pause_ms > 0 {
                tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            }
        }
        n
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monotonic_reads_never_go_back() {
    const READERS: usize = 3;
    const READS: usize = 300;
    let _topo = delayed_r2();
    let p = start_ready(PoolerOpts::new().pool_size(8)).await;
    let t = unique("rt_mono");
    counter_table(&t, [1]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(t.clone(), 1, stop.clone(), 1);
    tokio::time::sleep(Duration::from_millis(400)).await; // r2 is now ~300 ms behind
    let mut handles = Vec::new();
    for r in 0..READERS {
        let c = p.app().await;
        let t = t.clone();
        handles.push(tokio::spawn(async move {
            let mut last = (-1i64, 0u16);
            let mut ports = Ports::default();
            let mut back = Vec::new();
            for k in 0..READS {
                let row = routing_support::one_row(&c, &format!("SELECT v, current_setting('port') FROM {t} WHERE id = 1")).await?;
                let v = parse_v(&row[0])?;
                let port: u16 = row[1].as_deref().and_then(|s| s.parse().ok()).unwrap_or(0);
                ports.add(port);
                if v < last.0 {
                    back.push(format!("reader {r} read #{k}: v={v} on {} after v={} on {}", node_name(port), last.0, node_name(last.1)));
                }
                last = (last.0.max(v), port);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok::<_, String>((ports, back))
        }));
    }
    let mut ports = Ports::default();
    let mut back = Vec::new();
    for h in handles {
        let (pp, b) = within(120.0, "reader", h).await.expect("reader task").expect("reader");
        ports.merge(&pp);
        back.extend(b);
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    println!("monotonic (readers never write, r2 +300ms): {writes} writes; reads by node: {ports}; went back {} times", back.len());
    assert!(back.is_empty(), "a reader saw an older value after a newer one: {back:#?}");
    assert!(ports.replicas() > 0, "no read went to a replica ({ports}): the test proves nothing");
    drop_table(&t).await;
}

/// A client whose read fell back to the primary (its replicas had not replayed its own write
/// yet) saw the newest data there; its later reads must not show older data from a replica that
/// has replayed its write but not what the primary read showed. r1 is paused so the only
/// replica is r2, 300 ms behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monotonic_reads_across_primary_fallback() {
    const ROUNDS: usize = 4;
    const READS_PER_ROUND: usize = 60;
    let mut topo = exclusive();
    let p = start_ready(PoolerOpts::new().pool_size(8)).await;
    let t = unique("rt_mono_fb");
    counter_table(&t, [1, 2]).await;
    topo.pause("r1");
    topo.set_r2_delay("300ms");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(t.clone(), 1, stop.clone(), 2);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let c = p.app().await;
    let mut ports = Ports::default();
    let mut back = Vec::new();
    let mut last = (-1i64, 0u16);
    for round in 0..ROUNDS {
        // The reader writes its own row: its next reads need a replica that has replayed it.
        c.simple_query(&format!("UPDATE {t} SET v = v + 1 WHERE id = 2")).await.expect("reader's own write");
        for k in 0..READS_PER_ROUND {
            let row = routing_support::one_row(&c, &format!("SELECT v, current_setting('port') FROM {t} WHERE id = 1")).await.expect("read");
            let v = parse_v(&row[0]).unwrap();
            let port: u16 = row[1].as_deref().and_then(|s| s.parse().ok()).unwrap_or(0);
            ports.add(port);
            if v < last.0 && back.len() < 10 {
                back.push(format!("round {round} read #{k}: v={v} on {} after v={} on {}", node_name(port), last.0, node_name(last.1)));
            }
            last = (last.0.max(v), port);
            tokio::time::sleep(Duration::from_millis(8)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    println!("monotonic across primary fallback (r1 paused, r2 +300ms): {writes} writes; reads by node: {ports}; went back: {back:#?}");
    assert!(back.is_empty(), "reads went back in time after a read served by the primary: {back:#?}");
    drop(c);
    drop(p);
    drop(topo);
    drop_table(&t).await;
}

// ================================================================== 4. paused, stopped, all down

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_replica_gets_no_read_that_needs_newer_data() {
    let mut topo = exclusive();
    let p = start_ready(PoolerOpts::new().pool_size(8)).await;
    let t = unique("rt_paused");
    counter_table(&t, [1]).await;
    topo.pause("r2");
    let r2 = direct(R2).await;
    let paused_at: String = r2.query_one("SELECT pg_last_wal_replay_lsn()::text", &[]).await.unwrap().get(0);
    let c = p.app().await;
    let mut ports = Ports::default();
    let mut bad = Vec::new();
    for n in 1..=100i64 {
        c.simple_query(&format!("UPDATE {t} SET v = v + 1 WHERE id = 1")).await.expect("write");
        let r = routing_support::one_row(&c, &format!("SELECT v, current_setting('port') FROM {t} WHERE id = 1")).await.expect("read");
        let (v, port) = (parse_v(&r[0]).unwrap(), r[1].as_deref().and_then(|s| s.parse::<u16>().ok()).unwrap_or(0));
        ports.add(port);
        if port == R2 || v != n {
            bad.push(format!("iteration {n}: v={v} from {}", node_name(port)));
        }
    }
    // A client that needs nothing newer may still read from the paused replica (it is in
    // rotation): with r1 busy, least-outstanding routing sends a fresh client there. The writing
    // client, with r1 just as busy, must not go there.
    let (holder, held) = hold_replica(&p).await;
    assert_eq!(held, R1, "the held read-only transaction should run on r1");
    let fresh = p.app().await;
    let fresh_port = port_of(&fresh, "").await.unwrap();
    let busy_port = port_of(&c, "").await;
    holder.simple_query("COMMIT").await.unwrap();
    println!("with r1 busy: a fresh client read on {}, the writer on {busy_port:?}", node_name(fresh_port));
    assert_eq!(fresh_port, R2, "control: a client needing no newer data should use the paused replica while r1 is busy");
    assert_ne!(busy_port, Ok(R2), "the writer's read went to the replica paused before its write");
    // No more writes: later reads may use a replica, but never the paused one.
    let mut later = Ports::default();
    for _ in 0..100 {
        let r = routing_support::one_row(&c, &format!("SELECT v, current_setting('port') FROM {t} WHERE id = 1")).await.expect("read");
        let port = r[1].as_deref().and_then(|s| s.parse::<u16>().ok()).unwrap_or(0);
        later.add(port);
        if port == R2 || parse_v(&r[0]).unwrap() != 100 {
            bad.push(format!("later read: {r:?}"));
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let still: String = r2.query_one("SELECT pg_last_wal_replay_lsn()::text", &[]).await.unwrap().get(0);
    println!("paused r2 at {paused_at} (still {still}): read-after-write by node: {ports}; later reads by node: {later}");
    assert!(bad.is_empty(), "reads needing data newer than the paused replica were served wrongly: {bad:#?}");
    assert!(later.get(R1) > 0, "the client's later reads never reached r1 ({later}); replicas unused");
    drop(topo);
    drop_table(&t).await;
}

/// Concurrent fresh clients each doing `reads` reads; returns where they ran and any errors.
async fn burst_of_reads(p: &Pooler, clients: usize, reads: usize, dsn_extra: &str) -> (Ports, Vec<String>) {
    let mut handles = Vec::new();
    for i in 0..clients {
        let c = p.connect_dsn(dsn_extra).await.unwrap_or_else(|e| panic!("login: {}", db_message(&e)));
        handles.push(tokio::spawn(async move {
            let mut ports = Ports::default();
            let mut errs = Vec::new();
            for k in 0..reads {
                match port_of(&c, "").await {
                    Ok(port) => ports.add(port),
                    Err(e) => errs.push(format!("client {i} read {k}: {e}")),
                }
            }
            (ports, errs)
        }));
    }
    let mut ports = Ports::default();
    let mut errs = Vec::new();
    for h in handles {
        let (pp, e) = within(60.0, "reads", h).await.expect("read task");
        ports.merge(&pp);
        errs.extend(e);
    }
    (ports, errs)
}

/// Opens a read-only transaction (on a replica) and keeps it open: while it lives, that
/// replica has one outstanding transaction, so least-outstanding routing sends fresh clients'
/// reads to the other replica. Returns the connection and the replica's port.
async fn hold_replica(p: &Pooler) -> (Conn, u16) {
    // Ties between idle replicas are broken per client, so a given client may start on either
    // replica: open clients until one's read-only transaction is held on r1.
    let mut last = None;
    for _ in 0..40 {
        let c = p.app().await;
        c.simple_query("BEGIN READ ONLY").await.expect("BEGIN READ ONLY");
        let port = port_of(&c, "").await.expect("read in the held transaction");
        if port == R1 {
            return (c, port);
        }
        c.simple_query("COMMIT").await.expect("COMMIT");
        last = Some((c, port));
    }
    last.expect("at least one attempt")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_replica_leaves_rotation_and_rejoins() {
    let mut topo = exclusive();
    let p = start_ready(PoolerOpts::new().pool_size(4)).await;
    let a = admin(&p).await;
    // Warm up: pooled server connections to both replicas (those to r2 die with it). With one
    // replica busy, fresh clients' reads go to the other.
    let (holder, held) = hold_replica(&p).await;
    let (warm, errs) = burst_of_reads(&p, 8, 20, "").await;
    holder.simple_query("COMMIT").await.unwrap();
    println!("warm-up reads by node: {warm} (a read-only transaction held on {})", node_name(held));
    assert!(errs.is_empty(), "{errs:#?}");
    assert!(warm.get(R2) > 0 || held == R2, "least outstanding: reads never went to r2 while r1 was busy ({warm})");

    topo.stop("r2");
    let left = wait_rotation(&a, R2, false, Duration::from_secs(5)).await;
    let row = replica_row(&a, R2).await;
    println!("r2 stopped: out of rotation after {left:?}; SHOW REPLICAS r2: {row:?}");
    assert!(left.is_some(), "r2 still in rotation 5 s after it stopped: {row:?}");
    assert_eq!(row.get("state").map(String::as_str), Some("down"), "{row:?}");
    let (holder, held) = hold_replica(&p).await;
    let (down, errs) = burst_of_reads(&p, 8, 20, "").await;
    holder.simple_query("COMMIT").await.unwrap();
    println!("reads with r2 down by node: {down} (a read-only transaction held on {})", node_name(held));
    assert!(errs.is_empty(), "reads failed while r2 was down: {errs:#?}");
    assert_eq!(held, R1);
    assert_eq!(down.get(R2), 0);
    assert!(down.get(R1) > 0, "no read used r1 while r2 was down ({down})");

    topo.restart_all();
    let back = wait_rotation(&a, R2, true, Duration::from_secs(15)).await;
    println!("r2 restarted: back in rotation after {back:?}");
    assert!(back.is_some(), "r2 not back in rotation 15 s after restart: {:?}", replica_row(&a, R2).await);
    // Reads succeed (no dead pooled connection to the old r2 reaches a client), and r2 serves
    // reads again once r1 is the busier replica.
    let (holder, held) = hold_replica(&p).await;
    let (after, errs) = burst_of_reads(&p, 8, 20, "").await;
    holder.simple_query("COMMIT").await.unwrap();
    println!("reads after r2 rejoined by node: {after} (a read-only transaction held on {})", node_name(held));
    assert!(errs.is_empty(), "reads failed after r2 rejoined: {errs:#?}");
    assert!(
        after.get(R2) > 0 || held == R2,
        "r2 rejoined the rotation but served no read ({after}); SHOW REPLICAS: {:#?}",
        show(&a, "REPLICAS").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_down_reads_succeed_on_primary() {
    let mut topo = exclusive();
    let p = start_ready(PoolerOpts::new().pool_size(4)).await;
    let a = admin(&p).await;
    let before = routing(&a, "appdb").await;
    topo.stop("r2");
    topo.stop("r1");
    for port in [R1, R2] {
        assert!(wait_rotation(&a, port, false, Duration::from_secs(5)).await.is_some(), "{port} still in rotation after stop");
    }
    let c = p.app().await;
    let mut ports = Ports::default();
    for k in 0..20 {
        let r = port_of(&c, "").await.unwrap_or_else(|e| panic!("read {k} with every replica down: {e}"));
        ports.add(r);
    }
    // The replica-only alias falls back to the primary for reads too.
    let ro = p.connect_dsn("dbname=app_read").await.expect("login app_read");
    let mut alias = Ports::default();
    for k in 0..5 {
        alias.add(port_of(&ro, "").await.unwrap_or_else(|e| panic!("app_read read {k} with every replica down: {e}")));
    }
    let after = routing(&a, "appdb").await;
    let no_up = after["primary_no_replica_up"] - before["primary_no_replica_up"];
    println!("every replica down: appdb reads by node {ports}, app_read reads by node {alias}; primary_no_replica_up +{no_up}");
    assert_eq!(ports.get(PRIMARY), 20, "reads with no replica up must run on the primary ({ports})");
    assert_eq!(alias.get(PRIMARY), 5, "app_read reads with no replica up must run on the primary ({alias})");
    assert!(no_up >= 20, "SHOW ROUTING primary_no_replica_up grew by {no_up}, want >= 20: {after:?}");
    topo.restart_all();
    for port in [R1, R2] {
        assert!(wait_rotation(&a, port, true, Duration::from_secs(15)).await.is_some(), "{port} not back in rotation");
    }
}

// ================================================================== 5. levels, aliases, hints

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_route_as_configured() {
    let _topo = shared();
    let p = start_ready(PoolerOpts::new()).await;
    let t = unique("rt_alias");
    counter_table(&t, [1]).await;

    let strong = p.connect_dsn("dbname=app_primary").await.expect("login app_primary");
    assert_eq!(strong.simple_one("SHOW lsnpool.consistency").await.unwrap().as_deref(), Some("strong"));
    let mut ports = Ports::default();
    for _ in 0..10 {
        ports.add(port_of(&strong, "").await.unwrap());
    }
    assert_eq!(ports.get(PRIMARY), 10, "app_primary reads must all run on the primary ({ports})");
    strong.simple_query(&format!("UPDATE {t} SET v = v + 1 WHERE id = 1")).await.expect("write through app_primary");

    let ro = p.connect_dsn("dbname=app_read").await.expect("login app_read");
    assert_eq!(ro.simple_one("SHOW lsnpool.consistency").await.unwrap().as_deref(), Some("bounded"));
    let mut rports = Ports::default();
    for _ in 0..10 {
        rports.add(port_of(&ro, "").await.unwrap());
    }
    let e = ro.simple_query(&format!("INSERT INTO {t} VALUES (99, 0)")).await.expect_err("a write through app_read must fail");
    let e2 = ro.execute(&format!("UPDATE {t} SET v = 0 WHERE id = 1"), &[]).await.expect_err("extended write through app_read must fail");
    // The connection stays usable.
    let after = port_of(&ro, "").await.expect("read after the refused write");
    println!("app_primary reads: {ports}; app_read reads: {rports}; app_read write: {}; then read on {}", db_message(&e), node_name(after));
    assert_eq!(rports.replicas(), 10, "app_read reads must run on replicas ({rports})");
    assert_eq!(sqlstate(&e).as_deref(), Some("25006"), "{}", db_message(&e));
    assert_eq!(sqlstate(&e2).as_deref(), Some("25006"), "{}", db_message(&e2));
    let pc = direct(PRIMARY).await;
    let n: i64 = pc.query_one(&format!("SELECT count(*) FROM {t} WHERE id = 99"), &[]).await.unwrap().get(0);
    assert_eq!(n, 0, "the write through app_read reached the primary");
    let v: i32 = pc.query_one(&format!("SELECT v FROM {t} WHERE id = 1"), &[]).await.unwrap().get(0);
    assert_eq!(v, 1, "the write through app_primary did not happen, or app_read's UPDATE did");
    drop_table(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_levels_and_local_commands() {
    let _topo = shared();
    let p = start_ready(PoolerOpts::new()).await;
    let a = admin(&p).await;
    let t = unique("rt_levels");
    counter_table(&t, [1]).await;
    let c = p.app().await;

    // Answered by lsnpool: a server would say "unrecognized configuration parameter" to SHOW,
    // and accept any value for a dotted name; and no server transaction is counted.
    let xacts = |rows: Vec<std::collections::BTreeMap<String, String>>| -> u64 {
        rows.iter().find(|r| r.get("database").map(String::as_str) == Some("appdb")).and_then(|r| r.get("xact_count")?.parse().ok()).unwrap_or(0)
    };
    let x0 = xacts(show(&a, "STATS_TOTALS").await);
    assert_eq!(c.simple_one("SHOW lsnpool.consistency").await.unwrap().as_deref(), Some("read-your-writes"));
    c.simple_query("SET lsnpool.consistency = 'eventual'").await.expect("SET eventual");
    assert_eq!(c.simple_one("SHOW lsnpool.consistency").await.unwrap().as_deref(), Some("eventual"));
    c.simple_query("SET lsnpool.consistency TO global").await.expect("SET TO global");
    assert_eq!(c.simple_one("SHOW lsnpool.consistency").await.unwrap().as_deref(), Some("global"));
    c.simple_query("RESET lsnpool.consistency").await.expect("RESET");
    assert_eq!(c.simple_one("SHOW lsnpool.consistency").await.unwrap().as_deref(), Some("read-your-writes"));
    let e = c.simple_query("SET lsnpool.consistency = 'fast'").await.expect_err("bad level must fail");
    assert_eq!(sqlstate(&e).as_deref(), Some("22023"), "{}", db_message(&e));
    assert_eq!(c.simple_one("SHOW lsnpool.consistency").await.unwrap().as_deref(), Some("read-your-writes"), "a bad SET must not change the level");
    let x1 = xacts(show(&a, "STATS_TOTALS").await);
    assert_eq!(x1, x0, "SET/SHOW/RESET lsnpool.consistency reached a server ({x0} -> {x1} transactions)");

    // strong: every read on the primary.
    c.simple_query("SET lsnpool.consistency = 'strong'").await.unwrap();
    let mut strong = Ports::default();
    for _ in 0..10 {
        strong.add(port_of(&c, "").await.unwrap());
    }
    assert_eq!(strong.get(PRIMARY), 10, "strong reads must run on the primary ({strong})");

    // eventual: a read right after a write may use a replica (staleness allowed).
    c.simple_query("SET lsnpool.consistency = 'eventual'").await.unwrap();
    let mut eventual = Ports::default();
    for _ in 0..20 {
        c.simple_query(&format!("UPDATE {t} SET v = v + 1 WHERE id = 1")).await.unwrap();
        eventual.add(port_of(&c, "").await.unwrap());
    }
    // read-your-writes (after RESET): the same pattern mostly falls back to the primary, and
    // is never stale.
    c.simple_query("RESET lsnpool.consistency").await.unwrap();
    let mut ryw = Tally::default();
    for n in 21..=40 {
        c.simple_query(&format!("UPDATE {t} SET v = v + 1 WHERE id = 1")).await.unwrap();
        let r = routing_support::one_row(&c, &format!("SELECT v, pg_is_in_recovery() FROM {t} WHERE id = 1")).await.unwrap();
        ryw.read(n, parse_v(&r[0]).unwrap(), r[1].as_deref() == Some("t"), "ryw");
    }
    println!("strong: {strong}; eventual right after writes: {eventual}; read-your-writes: {} of 20 on replicas, {} stale", ryw.on_replica, ryw.stale);
    assert!(eventual.replicas() >= 16, "eventual reads right after a write should use replicas ({eventual})");
    assert_eq!(ryw.stale, 0, "{:?}", ryw.examples);
    drop_table(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_override_routing_per_statement() {
    let _topo = shared();
    let p = start_ready(PoolerOpts::new()).await;
    let a = admin(&p).await;
    let t = unique("rt_hints");
    counter_table(&t, [1]).await;
    let c = p.app().await;
    let mut hinted = Ports::default();
    for _ in 0..10 {
        hinted.add(port_of(&c, "/* lsnpool:primary */ ").await.unwrap());
    }
    let mut plain = Ports::default();
    for _ in 0..10 {
        plain.add(port_of(&c, "").await.unwrap());
    }
    let mut eventual = Ports::default();
    for _ in 0..20 {
        c.simple_query(&format!("UPDATE {t} SET v = v + 1 WHERE id = 1")).await.unwrap();
        eventual.add(port_of(&c, "/* lsnpool:consistency=eventual */ ").await.unwrap());
    }
    let r = routing(&a, "appdb").await;
    println!("hint primary: {hinted}; plain reads: {plain}; eventual hint right after writes: {eventual}; routing {r:?}");
    assert_eq!(hinted.get(PRIMARY), 10, "/* lsnpool:primary */ reads must run on the primary ({hinted})");
    assert!(plain.replicas() >= 8, "unhinted reads of a client that never wrote should use replicas ({plain})");
    assert!(eventual.replicas() >= 16, "/* lsnpool:consistency=eventual */ reads right after a write should use replicas ({eventual})");
    assert_eq!(r["primary_hint"], 10, "{r:?}");
    drop_table(&t).await;
}

/// `global`: a client that never wrote reads, right after another client's write returned, the
/// value that write committed. lsnpool must have made the writer's commit LSN the global one
/// before the writer's ReadyForQuery left, or the reader can be routed to a replica that has
/// not replayed it (the race is narrow: this loop has many chances to hit it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_level_sees_other_clients_writes() {
    const ITERS: i64 = 500;
    let _topo = delayed_r2();
    let p = start_ready(PoolerOpts::new()).await;
    let t = unique("rt_global");
    counter_table(&t, [1]).await;
    let writer = p.app().await;
    let reader = p.app().await;
    reader.simple_query("SET lsnpool.consistency = 'global'").await.unwrap();
    // Other clients keep lsnpool's threads and the CPUs busy, as in production: the writer's
    // session may then be descheduled between answering the writer and recording its LSN.
    let stop = Arc::new(AtomicBool::new(false));
    let mut noise = Vec::new();
    for _ in 0..4 {
        let c = p.app().await;
        c.simple_query("SET lsnpool.consistency = 'eventual'").await.unwrap();
        let stop = stop.clone();
        noise.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if c.simple_query("SELECT count(*) FROM pg_class").await.is_err() {
                    break;
                }
            }
        }));
    }
    let mut tally = Tally::default();
    for n in 1..=ITERS {
        // Let r1 replay and be polled, so the reader's decision hinges only on the writer's
        // newest commit being known to lsnpool by the time the writer has its ReadyForQuery.
        tokio::time::sleep(Duration::from_millis(10)).await;
        writer.simple_query(&format!("UPDATE {t} SET v = v + 1 WHERE id = 1")).await.unwrap();
        let r = routing_support::one_row(&reader, &format!("SELECT v, pg_is_in_recovery() FROM {t} WHERE id = 1")).await.unwrap();
        tally.read(n, parse_v(&r[0]).unwrap(), r[1].as_deref() == Some("t"), &format!("iteration {n}"));
    }
    stop.store(true, Ordering::Relaxed);
    for h in noise {
        let _ = h.await;
    }
    println!("global (reader never wrote, r2 +300ms): {} reads, {} stale, {} on replicas", tally.reads, tally.stale, tally.on_replica);
    assert_eq!(tally.stale, 0, "a global read missed another client's committed write: {:#?}", tally.examples);
    drop_table(&t).await;
}

/// Bounded reads (session level and the `app_read` alias) from `p` while a read-only transaction
/// keeps r1 busy, so least-outstanding routing would pick r2 if r2 were eligible. Returns where
/// they ran and the reads served by r2 while it was ≥ 250 ms behind.
async fn bounded_reads_with_r1_busy(p: &Pooler, reads: usize) -> (Ports, Vec<String>) {
    let (holder, held) = hold_replica(p).await;
    assert_eq!(held, R1, "the held read-only transaction should run on r1 (the first eligible replica)");
    // The replica's own view of its lag at the moment it served the read.
    let sql = "SELECT current_setting('port'), \
               coalesce((extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) * 1000)::int, -1)";
    let bounded = p.app().await;
    bounded.simple_query("SET lsnpool.consistency = 'bounded'").await.unwrap();
    let alias = p.connect_dsn("dbname=app_read").await.expect("login app_read");
    let mut ports = Ports::default();
    let mut bad = Vec::new();
    for k in 0..reads {
        let c = if k % 2 == 0 { &bounded } else { &alias };
        let r = routing_support::one_row(c, sql).await.unwrap();
        let port: u16 = r[0].as_deref().and_then(|s| s.parse().ok()).unwrap_or(0);
        let lag_ms: i64 = r[1].as_deref().and_then(|s| s.parse().ok()).unwrap_or(-1);
        ports.add(port);
        // Polls are 10 ms apart: a replica that served a read while ≥ 250 ms behind was beyond
        // a 100 ms max_replica_lag at the poll the decision used.
        if port == R2 && lag_ms >= 250 {
            bad.push(format!("read {k} ({}) on r2 while it was {lag_ms} ms behind", if k % 2 == 0 { "SET bounded" } else { "app_read" }));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    holder.simple_query("COMMIT").await.unwrap();
    (ports, bad)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_excludes_replicas_beyond_max_replica_lag() {
    let _topo = delayed_r2();
    let t = unique("rt_bounded");
    counter_table(&t, [1]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(t.clone(), 1, stop.clone(), 3);
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Control: with the default max_replica_lag (10 s) r2, ~300 ms behind, takes the reads.
    let control = start_ready(PoolerOpts::new()).await;
    let (cports, _) = bounded_reads_with_r1_busy(&control, 40).await;
    drop(control);

    // Not `start_ready`: r2 is polled healthy but beyond max_replica_lag, so out of rotation.
    let p = PoolerOpts::new().env("LSNPOOL_ROUTING__MAX_REPLICA_LAG", "100ms").with_replicas().start();
    let a = admin(&p).await;
    assert!(wait_rotation(&a, R1, true, Duration::from_secs(15)).await.is_some(), "r1 must come into rotation");
    let r2row = within(15.0, "r2 polled up and behind", async {
        loop {
            let row = replica_row(&a, R2).await;
            let lag: u64 = row.get("lag_ms").and_then(|v| v.parse().ok()).unwrap_or(0);
            if row.get("state").map(String::as_str) == Some("up") && lag > 100 {
                break row;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let r2lag: u64 = r2row.get("lag_ms").and_then(|v| v.parse().ok()).unwrap_or(0);
    // SHOW REPLICAS agrees with the router: beyond max_replica_lag is out of rotation.
    assert_eq!(r2row.get("in_rotation").map(String::as_str), Some("false"), "SHOW REPLICAS must show r2 out of rotation beyond max_replica_lag: {r2row:?}");
    let (ports, bad) = bounded_reads_with_r1_busy(&p, 150).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    println!(
        "bounded, r2 +300ms, r1 busy: max_replica_lag=10s -> reads by node {cports}; max_replica_lag=100ms -> {ports}; SHOW REPLICAS r2 {r2row:?}"
    );
    assert!(r2lag > 100, "precondition: r2 should lag ~300 ms while the writer runs ({r2row:?})");
    assert!(cports.get(R2) > 0, "control: with max_replica_lag=10s bounded reads should use r2 while r1 is busy ({cports})");
    assert!(bad.is_empty(), "bounded reads used a replica beyond max_replica_lag: {bad:#?}");
    assert!(ports.get(R1) > 0, "bounded reads never used r1 ({ports})");
    drop_table(&t).await;
}

// ================================================================== 6. transactions stay on one node

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_stay_on_one_node() {
    let _topo = shared();
    let p = start_ready(PoolerOpts::new()).await;
    let t = unique("rt_txn");
    counter_table(&t, [1]).await;
    let c = p.app().await;

    let where_sql = "SELECT current_setting('port'), pg_backend_pid(), now()::text";
    for round in 0..3 {
        // Read-only transaction, one statement per message. It starts on r2 (r1 is kept busy);
        // between its statements r1 becomes idle, so a per-statement re-route would move it.
        let (holder, held) = hold_replica(&p).await;
        assert_eq!(held, R1);
        c.simple_query("BEGIN READ ONLY").await.unwrap();
        let first = routing_support::one_row(&c, where_sql).await.unwrap();
        holder.simple_query("COMMIT").await.unwrap();
        drop(holder);
        let second = routing_support::one_row(&c, where_sql).await.unwrap();
        let v = routing_support::one_row(&c, &format!("SELECT v FROM {t} WHERE id = 1")).await.unwrap();
        c.simple_query("COMMIT").await.unwrap();
        assert_eq!(first, second, "round {round}: the read-only transaction moved (port, backend pid, transaction start)");
        assert_eq!(first[0].as_deref(), Some("55434"), "round {round}: read-only transaction should start on r2 while r1 is busy: {first:?}");
        assert_eq!(v[0].as_deref(), Some("0"));
        // The same in one simple Query.
        let msgs = c.simple_query("BEGIN READ ONLY; SELECT current_setting('port'); SELECT current_setting('port'); COMMIT").await.unwrap();
        let r = rows(&msgs);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], r[1], "one-query read-only transaction moved: {r:?}");
        assert_ne!(r[0][0].as_deref(), Some("55432"), "a read-only transaction ran on the primary");
    }

    // START TRANSACTION READ ONLY via tokio-postgres' builder (extended protocol inside).
    let mut cc = p.app().await;
    {
        let tx = cc.client.build_transaction().read_only(true).start().await.expect("read-only transaction");
        let a: String = tx.query_one("SELECT current_setting('port')", &[]).await.unwrap().get(0);
        let b: String = tx.query_one("SELECT current_setting('port')", &[]).await.unwrap().get(0);
        tx.commit().await.unwrap();
        assert_eq!(a, b, "read-only transaction (builder) moved");
        assert_ne!(a, PRIMARY.to_string(), "read-only transaction (builder) ran on the primary");
    }

    // A read-write transaction that starts with a read: the primary throughout, and it commits.
    c.simple_query("BEGIN").await.unwrap();
    let a = port_of(&c, "").await.unwrap();
    c.simple_query(&format!("INSERT INTO {t} VALUES (2, 7)")).await.expect("INSERT inside BEGIN");
    let b = port_of(&c, "").await.unwrap();
    c.simple_query("COMMIT").await.expect("COMMIT");
    assert_eq!((a, b), (PRIMARY, PRIMARY), "read-write transaction ran on {a} then {b}");
    let msgs = c.simple_query(&format!("BEGIN; SELECT current_setting('port'); INSERT INTO {t} VALUES (3, 8); SELECT current_setting('port'); COMMIT")).await.expect("one-query read-write transaction");
    let r = rows(&msgs);
    assert_eq!(r, vec![vec![Some(PRIMARY.to_string())], vec![Some(PRIMARY.to_string())]]);
    // ... and the client reads its rows back at once.
    let n = routing_support::one_row(&c, &format!("SELECT count(*) FROM {t} WHERE id IN (2, 3)")).await.unwrap();
    assert_eq!(n[0].as_deref(), Some("2"), "rows committed in transactions not visible to their writer");

    // A write inside a declared read-only transaction is the client's own error (no retry).
    c.simple_query("BEGIN READ ONLY").await.unwrap();
    let e = c.simple_query(&format!("INSERT INTO {t} VALUES (4, 0)")).await.expect_err("write in READ ONLY transaction");
    assert_eq!(sqlstate(&e).as_deref(), Some("25006"), "{}", db_message(&e));
    c.simple_query("ROLLBACK").await.expect("ROLLBACK");
    assert!(port_of(&c, "").await.is_ok(), "client unusable after its read-only transaction failed");
    drop_table(&t).await;
}

/// The commit-LSN query is prepared once per server connection. If it disappears behind the
/// pooler's back (a client DEALLOCATEs it by name), the next commit's LSN is still learned, by a
/// separate query, and the statement is prepared afresh for the commit after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_lsn_is_learned_when_the_capture_statement_was_dropped() {
    let _topo = shared();
    // One server connection per node: every primary transaction below shares one session.
    let p = start_ready(PoolerOpts::new().pool_size(1)).await;
    let a = admin(&p).await;
    let t = unique("rt_capture_drop");
    counter_table(&t, [1]).await;
    let c = p.app().await;
    c.simple_query(&format!("UPDATE {t} SET v = v + 1 WHERE id = 1")).await.unwrap();
    let name = one_row(&c, "/* lsnpool:primary */ SELECT name FROM pg_prepared_statements WHERE statement LIKE '%pg_current_wal_insert_lsn%'")
        .await
        .unwrap()[0]
        .clone()
        .expect("the capture statement is prepared on the primary connection");
    // The session updates its counters after answering: a read first lets it finish.
    one_row(&c, "SELECT 1").await.unwrap();
    let before = routing(&a, "appdb").await;
    // DEALLOCATE counts as a write, so its own capture finds the statement gone.
    c.simple_query(&format!("/* lsnpool:primary */ DEALLOCATE \"{name}\"")).await.expect("a transaction whose capture fails still succeeds");
    for _ in 0..2 {
        c.simple_query(&format!("UPDATE {t} SET v = v + 1 WHERE id = 1")).await.unwrap();
    }
    one_row(&c, "SELECT 1").await.unwrap();
    let after = routing(&a, "appdb").await;
    let d = |k: &str| after[k] - before[k];
    assert_eq!(d("lsn_captured"), 3, "every commit's LSN learned: {after:?}");
    assert_eq!(d("lsn_capture_round_trips"), 1, "only the commit that found the statement gone needed a separate query");
    // Read-your-writes still holds on whichever node serves the read.
    let v = one_row(&c, &format!("SELECT v FROM {t} WHERE id = 1")).await.unwrap();
    assert_eq!(v[0].as_deref(), Some("3"));
    drop_table(&t).await;
}

/// Statements dropped and a transaction chained in one Query: the commit LSN query must not
/// run (and fail) inside the chained transaction, nor Bind a statement the DEALLOCATE ALL just
/// dropped; the client's transaction goes on untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_all_and_commit_and_chain_leave_the_transaction_intact() {
    let _topo = shared();
    let p = start_ready(PoolerOpts::new().pool_size(1)).await;
    let t = unique("rt_chain");
    counter_table(&t, [1]).await;
    let c = p.app().await;
    let bump = format!("UPDATE {t} SET v = v + 1 WHERE id = 1");
    c.simple_query(&bump).await.unwrap(); // the capture statement now exists on the connection
    c.simple_query(&format!("BEGIN; {bump}")).await.unwrap();
    c.simple_query("DEALLOCATE ALL; COMMIT AND CHAIN").await.expect("DEALLOCATE ALL; COMMIT AND CHAIN");
    c.simple_query(&bump).await.expect("the chained transaction must still be usable");
    c.simple_query("COMMIT").await.expect("COMMIT of the chained transaction");
    c.simple_query(&bump).await.expect("a transaction after the chain");
    let v = one_row(&c, &format!("SELECT v FROM {t} WHERE id = 1")).await.unwrap();
    assert_eq!(v[0].as_deref(), Some("4"), "every update committed and is visible to its writer");
    drop_table(&t).await;
}

// ================================================================== 7. SHOW ROUTING / SHOW REPLICAS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_routing_and_replicas_count_the_traffic() {
    const WRITES: u64 = 7;
    const READS: u64 = 25;
    const HINTED: u64 = 3;
    const STRONG: u64 = 4;
    let _topo = shared();
    let p = start_ready(PoolerOpts::new()).await;
    let a = admin(&p).await;
    let t = unique("rt_counts");
    counter_table(&t, [1]).await;
    let before = routing(&a, "appdb").await;
    let reps_before = show(&a, "REPLICAS").await;

    let w = p.app().await;
    for _ in 0..WRITES {
        w.simple_query(&format!("UPDATE {t} SET v = v + 1 WHERE id = 1")).await.unwrap();
    }
    let r = p.app().await;
    let mut ports = Ports::default();
    for _ in 0..READS {
        ports.add(port_of(&r, "").await.unwrap());
    }
    for _ in 0..HINTED {
        port_of(&r, "/* lsnpool:primary */ ").await.unwrap();
    }
    let s = p.connect_dsn("dbname=app_primary").await.unwrap();
    for _ in 0..STRONG {
        port_of(&s, "").await.unwrap();
    }

    let after = routing(&a, "appdb").await;
    let strong = routing(&a, "app_primary").await;
    let reps_after = show(&a, "REPLICAS").await;
    let d = |k: &str| after[k] - before[k];
    println!("reads by node: {ports}\nSHOW ROUTING appdb before {before:?}\nafter {after:?}\napp_primary {strong:?}\nSHOW REPLICAS {reps_after:?}");
    assert_eq!(d("primary_write"), WRITES, "primary_write");
    assert_eq!(d("lsn_captured"), WRITES, "lsn_captured");
    assert_eq!(d("primary_hint"), HINTED, "primary_hint");
    assert_eq!(d("primary_retry_25006"), 0);
    assert_eq!(d("replica_reads") + d("primary_lag_fallback") + d("primary_no_replica_up"), READS, "every unhinted read is counted once");
    assert_eq!(d("replica_reads"), ports.replicas(), "replica_reads matches where the reads ran ({ports})");
    assert!(strong["primary_strong"] >= STRONG, "app_primary primary_strong: {strong:?}");

    let routed = |rows: &Vec<std::collections::BTreeMap<String, String>>| -> u64 {
        rows.iter().filter(|r| r.get("role").map(String::as_str) == Some("replica")).filter_map(|r| r.get("reads_routed")?.parse::<u64>().ok()).sum()
    };
    assert_eq!(routed(&reps_after) - routed(&reps_before), ports.replicas(), "SHOW REPLICAS reads_routed");
    for port in [R1, R2] {
        let row = replica_row(&a, port).await;
        assert_eq!(row.get("role").map(String::as_str), Some("replica"), "{row:?}");
        assert_eq!(row.get("state").map(String::as_str), Some("up"), "{row:?}");
        assert_eq!(row.get("in_rotation").map(String::as_str), Some("true"), "{row:?}");
        assert!(row.get("replay_lsn").is_some_and(|l| l.contains('/')), "{row:?}");
    }
    let primary_row = replica_row(&a, PRIMARY).await;
    assert_eq!(primary_row.get("role").map(String::as_str), Some("primary"), "{primary_row:?}");
    drop_table(&t).await;
}

