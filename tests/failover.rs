//! Failover with a real promotion (issue 11, item 3), on a THROWAWAY copy of the topology
//! (its own data directory and ports; the shared one is never promoted or stopped): lsnpool
//! lists the nodes without roles, a steady read/write load runs, r1 is promoted with
//! `pg_ctl promote` and the old primary stopped with `pg_ctl stop -m immediate`. Writes must
//! succeed again through lsnpool within seconds, no acknowledged write on the new timeline may
//! be missed by a later read, and the old primary, started again as a primary, must be fenced.

mod common;

use common::*;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::SimpleQueryMessage;

/// A throwaway primary + r1 + r2 (`testenv/pgenv.sh` with `PGENV_DATA`/`PGENV_PORT_BASE`),
/// stopped and deleted when dropped, also when the test fails.
struct Throwaway {
    dir: PathBuf,
    base: u16,
}

impl Throwaway {
    fn up() -> Throwaway {
        let base = free_base();
        let dir = std::env::temp_dir().join(format!("lsnpool-failover-{}-{base}", std::process::id()));
        let env = Throwaway { dir, base };
        let out = env.pgenv(&["up"]);
        assert!(out.status.success(), "throwaway topology did not start: {}", String::from_utf8_lossy(&out.stderr));
        env
    }

    fn pgenv(&self, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(repo_root().join("testenv/pgenv.sh"))
            .args(args)
            .env("PGENV_DATA", &self.dir)
            .env("PGENV_PORT_BASE", self.base.to_string())
            .env_remove("R2_APPLY_DELAY")
            .env_remove("REDIS_PORT")
            .stdin(Stdio::null())
            .output()
            .expect("run testenv/pgenv.sh")
    }

    fn pgenv_ok(&self, args: &[&str]) {
        let out = self.pgenv(args);
        assert!(out.status.success(), "pgenv.sh {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn port(&self, node: usize) -> u16 {
        self.base + node as u16
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        // `down` only: `clean` would also remove the socket directory the shared topology uses.
        let out = self.pgenv(&["down"]);
        if !out.status.success() {
            eprintln!("failover test: stopping the throwaway topology failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three consecutive free ports (and the Redis port pgenv.sh derives, base + 947).
fn free_base() -> u16 {
    for _ in 0..200 {
        let base = 20000 + (rand::random::<u16>() % 30000);
        let ports = [base, base + 1, base + 2, base + 947];
        if ports.iter().all(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok()) {
            return base;
        }
    }
    panic!("no free port range for the throwaway topology");
}

/// What a write reports about where it committed.
const WRITE: &str = "INSERT INTO failover_t (id) VALUES ($1) RETURNING inet_server_port(), \
     ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int4";

#[derive(Default)]
struct Tally {
    acked: AtomicU64,
    errors: AtomicU64,
    /// A read-back missed a write acknowledged on the new timeline, or one that started before
    /// the failover did (must stay 0).
    stale: AtomicU64,
    /// A read-back that started after the promotion missed a write acknowledged on the old
    /// timeline: lost with asynchronous replication (expected, reported).
    lost_old_timeline: AtomicU64,
    /// Set just before the promotion.
    failing_over: AtomicBool,
    /// (acknowledged at, port, timeline) of every write.
    writes: Mutex<Vec<(Instant, i32, i32)>>,
}

async fn reconnect(p_port: u16) -> Option<Conn> {
    let dsn = format!("host=127.0.0.1 port={p_port} user=app password=app dbname={DB} connect_timeout=5");
    tokio::time::timeout(Duration::from_secs(5), Conn::connect(&dsn)).await.ok()?.ok()
}

/// Writes on one connection and reads each write back at once on another, until `stop`.
async fn writer(p_port: u16, id0: i64, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let (mut w, mut r) = (None::<Conn>, None::<Conn>);
    let mut id = id0;
    while !stop.load(Ordering::Relaxed) {
        if w.as_ref().is_none_or(|c| c.is_closed()) {
            w = reconnect(p_port).await;
        }
        if r.as_ref().is_none_or(|c| c.is_closed()) {
            r = reconnect(p_port).await;
        }
        let (Some(wc), Some(rc)) = (&w, &r) else {
            tally.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        id += 1;
        let row = match tokio::time::timeout(Duration::from_secs(10), wc.query_one(WRITE, &[&id])).await {
            Ok(Ok(row)) => row,
            _ => {
                tally.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let (port, timeline): (i32, i32) = (row.get(0), row.get(1));
        tally.acked.fetch_add(1, Ordering::Relaxed);
        tally.writes.lock().unwrap().push((Instant::now(), port, timeline));
        let before_failover = !tally.failing_over.load(Ordering::SeqCst);
        let seen = match tokio::time::timeout(Duration::from_secs(10), rc.query_one("SELECT count(*) FROM failover_t WHERE id = $1", &[&id])).await {
            Ok(Ok(row)) => row.get::<_, i64>(0),
            _ => {
                tally.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        if seen == 0 {
            if timeline >= 2 || before_failover {
                tally.stale.fetch_add(1, Ordering::Relaxed);
            } else {
                tally.lost_old_timeline.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// SHOW REPLICAS rows, keyed by column.
async fn show_replicas(admin: &Conn) -> Vec<std::collections::BTreeMap<String, String>> {
    let msgs = admin.simple_query("SHOW REPLICAS").await.expect("SHOW REPLICAS");
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns().iter().enumerate().map(|(i, c)| (c.name().to_string(), r.get(i).unwrap_or("").to_string())).collect(),
            ),
            _ => None,
        })
        .collect()
}

async fn node_row(admin: &Conn, port: u16) -> std::collections::BTreeMap<String, String> {
    let addr = format!("127.0.0.1:{port}");
    let rows = show_replicas(admin).await;
    rows.iter().find(|r| r.get("addr") == Some(&addr)).cloned().unwrap_or_else(|| panic!("SHOW REPLICAS has no row for {addr}: {rows:?}"))
}

/// Polls SHOW REPLICAS until `pred` holds for the row of `port`; panics after `limit`.
async fn wait_row(admin: &Conn, port: u16, limit: Duration, what: &str, pred: impl Fn(&std::collections::BTreeMap<String, String>) -> bool) {
    let t0 = Instant::now();
    loop {
        let row = node_row(admin, port).await;
        if pred(&row) {
            return;
        }
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}; row: {row:?}\n{:?}", show_replicas(admin).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The order an operator or a tool runs the two steps in.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Order {
    /// Promote r1 while the old primary still runs, then stop the old one (a switchover, or a
    /// tool that fences after promoting): r1's newer timeline wins at once.
    PromoteThenStop,
    /// The old primary dies first, then r1 is promoted (the usual failover): writes fail until
    /// the promotion, then move.
    StopThenPromote,
}

/// One throwaway topology at a time: two at once would only slow each other down.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_then_stop_moves_writes_and_fences_the_old_primary() {
    let _one = ONE_AT_A_TIME.lock().await;
    failover(Order::PromoteThenStop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_then_promote_moves_writes_and_fences_the_old_primary() {
    let _one = ONE_AT_A_TIME.lock().await;
    failover(Order::StopThenPromote).await;
}

async fn failover(order: Order) {
    let env = Throwaway::up();
    let (p0, p1, p2) = (env.port(0), env.port(1), env.port(2));
    let pooler = PoolerOpts::new()
        .nodes(&format!("[\"127.0.0.1:{p0}\", \"127.0.0.1:{p1}\", \"127.0.0.1:{p2}\"]"))
        .routing("consistency", "global")
        .routing("lsn_wait_timeout", "20ms")
        .routing("failover_detect", "2s")
        .pool_size(8)
        .start();
    let admin = Conn::connect(&format!("host=127.0.0.1 port={} user=postgres password=postgres dbname=lsnpool connect_timeout=5", pooler.port))
        .await
        .expect("admin console");
    let direct = Conn::connect(&format!("host=127.0.0.1 port={p0} user=postgres password=postgres dbname={DB} connect_timeout=5")).await.expect("old primary");
    direct.batch_execute("CREATE TABLE failover_t (id bigint PRIMARY KEY); GRANT ALL ON failover_t TO app").await.expect("create table");
    drop(direct);
    // The monitor found the roles: the first node is the primary, both others replicas.
    wait_row(&admin, p0, Duration::from_secs(10), "first node primary", |r| r["role"] == "primary" && r["state"] == "up").await;
    for p in [p1, p2] {
        wait_row(&admin, p, Duration::from_secs(10), "replica in rotation", |r| r["role"] == "replica" && r["in_rotation"] == "true").await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let writers: Vec<_> = (0..3)
        .map(|i| tokio::spawn(writer(pooler.port, (i + 1) * 1_000_000_000, stop.clone(), tally.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = tally.acked.load(Ordering::Relaxed);
    assert!(before > 0, "no write succeeded before the failover (errors: {})", tally.errors.load(Ordering::Relaxed));

    // The failover, in the order under test. `stopped` is when the cluster had a new primary
    // (the promotion's end, or the stop's start): the time the writes take to move counts from there.
    tally.failing_over.store(true, Ordering::SeqCst);
    let stopped = match order {
        Order::PromoteThenStop => {
            env.pgenv_ok(&["promote", "r1"]);
            let at = Instant::now();
            env.pgenv_ok(&["stop", "primary", "immediate"]);
            at
        }
        Order::StopThenPromote => {
            env.pgenv_ok(&["stop", "primary", "immediate"]);
            tokio::time::sleep(Duration::from_millis(500)).await;
            env.pgenv_ok(&["promote", "r1"]);
            Instant::now()
        }
    };
    // Writes move to r1 (timeline 2) through the same lsnpool, within seconds.
    let moved = loop {
        let first = tally.writes.lock().unwrap().iter().find(|(at, port, tl)| *at > stopped && *port == i32::from(p1) && *tl >= 2).map(|w| w.0);
        if let Some(at) = first {
            break at.duration_since(stopped);
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(15),
            "writes did not reach the promoted r1 within 15 s\n--- lsnpool log\n{}",
            pooler.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("{order:?}: writes on the new primary {moved:?} after it was promoted");
    assert!(moved < Duration::from_secs(6), "writes moved only after {moved:?}");
    wait_row(&admin, p1, Duration::from_secs(5), "r1 primary on timeline 2", |r| r["role"] == "primary" && r["timeline"] == "2").await;
    // r2 still follows the dead timeline: out of rotation, reads use the new primary.
    wait_row(&admin, p2, Duration::from_secs(5), "r2 out of rotation", |r| r["in_rotation"] == "false" && r["timeline"] == "1").await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The old primary comes back still claiming to be a primary: fenced, writes stay on r1.
    env.pgenv_ok(&["start", "primary"]);
    wait_row(&admin, p0, Duration::from_secs(10), "old primary fenced", |r| r["role"] == "fenced" && r["fenced"] == "true" && r["in_rotation"] == "false")
        .await;
    let fenced_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        within(30.0, "writers to stop", w).await.expect("writer task");
    }

    let writes = tally.writes.lock().unwrap().clone();
    let after_fence: Vec<_> = writes.iter().filter(|(at, _, _)| *at > fenced_at).collect();
    assert!(!after_fence.is_empty(), "no write succeeded after the old primary came back");
    let strays = after_fence.iter().filter(|(_, port, _)| *port != i32::from(p1)).count();
    let stale = tally.stale.load(Ordering::Relaxed);
    eprintln!(
        "{order:?}: acked {} (before failover {before}), errors {}, stale {stale}, lost on the old timeline {}, after fencing {} writes ({strays} elsewhere)",
        tally.acked.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed),
        tally.lost_old_timeline.load(Ordering::Relaxed),
        after_fence.len()
    );
    assert_eq!(strays, 0, "writes reached a node other than the new primary after fencing");
    assert_eq!(stale, 0, "a read missed a write acknowledged on the new timeline");
    let log = pooler.log();
    assert!(!log.contains("panicked"), "lsnpool panicked:\n{}", pooler.log_tail(60));
    assert!(log.contains("FAILOVER") && log.contains("FENCED"), "failover and fencing are logged loudly:\n{}", pooler.log_tail(60));
    let mut pooler = pooler;
    assert!(pooler.is_running(), "lsnpool exited");
}
