//! pgbench through lsnpool in all three query modes, zero failed transactions.
//! pgbench's tables are shared, so every pgbench run in this file holds one mutex.

mod common;

use common::*;
use std::process::Stdio;
use std::sync::Mutex;

static PGBENCH: Mutex<()> = Mutex::new(());

fn pgbench_cmd(port: u16, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("pgbench");
    for (k, _) in std::env::vars() {
        if k.starts_with("PG") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("PGPASSWORD", "postgres")
        .env("PGCONNECT_TIMEOUT", "5")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(args)
        .arg(DB)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn run_pgbench(port: u16, args: &[&str]) -> (bool, String) {
    let out = within(120.0, &format!("pgbench {args:?}"), pgbench_cmd(port, args).output()).await.expect("run pgbench");
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// (processed, expected) from "number of transactions actually processed: N/M".
fn processed(out: &str) -> Option<(u64, u64)> {
    let line = out.lines().find(|l| l.starts_with("number of transactions actually processed:"))?;
    let v = line.split(':').nth(1)?.trim();
    let (a, b) = v.split_once('/')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

fn failed(out: &str) -> Option<u64> {
    let line = out.lines().find(|l| l.starts_with("number of failed transactions:"))?;
    line.split(':').nth(1)?.split_whitespace().next()?.parse().ok()
}

async fn init_pgbench() {
    let (ok, out) = run_pgbench(PRIMARY_PORT, &["-i", "-s", "1", "-q"]).await;
    assert!(ok, "pgbench -i against the primary failed:\n{out}");
}

async fn history_count() -> i64 {
    primary().await.query_one("SELECT count(*) FROM pgbench_history", &[]).await.unwrap().get(0)
}

fn check_run(mode: &str, ok: bool, out: &str, expected: u64, p: &Pooler) {
    assert!(ok, "pgbench -M {mode} exited with failure:\n{out}\n--- lsnpool log\n{}", p.log_tail(30));
    assert_eq!(processed(out), Some((expected, expected)), "pgbench -M {mode}: transactions processed\n{out}");
    assert_eq!(failed(out), Some(0), "pgbench -M {mode}: failed transactions\n{out}");
    assert!(!out.contains("ERROR") && !out.contains("FATAL"), "pgbench -M {mode} reported errors:\n{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_tpcb_all_query_modes() {
    let _guard = PGBENCH.lock().unwrap_or_else(|e| e.into_inner());
    let p = PoolerOpts::primary_only().pool_size(4).query_wait_timeout("60s").start();
    init_pgbench().await;
    let mut history = history_count().await;
    assert_eq!(history, 0);
    for mode in ["simple", "extended", "prepared"] {
        // One pgbench thread per client: pgbench prepares with a blocking PQprepare, which
        // must not stall other clients' open transactions (that case has its own test below).
        let (ok, out) = run_pgbench(p.port, &["-M", mode, "-c", "8", "-j", "8", "-t", "200", "-n"]).await;
        check_run(mode, ok, &out, 1600, &p);
        // Every committed transaction wrote one history row.
        let now = history_count().await;
        assert_eq!(now - history, 1600, "pgbench -M {mode}: rows added to pgbench_history");
        history = now;
    }
    // The balances stay consistent: the sum of deltas in history equals the sum over accounts.
    let r = primary()
        .await
        .query_one("SELECT (SELECT sum(delta) FROM pgbench_history)::bigint, (SELECT sum(abalance) FROM pgbench_accounts)::bigint, (SELECT sum(bbalance) FROM pgbench_branches)::bigint", &[])
        .await
        .unwrap();
    let (h, a, b): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
    assert_eq!(h, a, "history vs accounts");
    assert_eq!(h, b, "history vs branches");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_select_only_prepared_20_clients_pool_4() {
    let _guard = PGBENCH.lock().unwrap_or_else(|e| e.into_inner());
    let p = PoolerOpts::primary_only().pool_size(4).query_wait_timeout("60s").start();
    init_pgbench().await;
    let (ok, out) = run_pgbench(p.port, &["-S", "-M", "prepared", "-c", "20", "-j", "2", "-t", "200", "-n"]).await;
    check_run("prepared -S", ok, &out, 4000, &p);
}

/// `pooler.worker_threads` picks one event loop on a 2-CPU machine (CI's): the multi-thread
/// runtime, where a session's socket may be served by any worker, keeps its own run here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_tpcb_on_several_worker_threads() {
    let _guard = PGBENCH.lock().unwrap_or_else(|e| e.into_inner());
    let p = PoolerOpts::primary_only().pool_size(4).set("worker_threads", "3").query_wait_timeout("60s").start();
    init_pgbench().await;
    let pid = p.pid().expect("lsnpool runs");
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0);
    assert!(threads >= 4, "worker_threads = 3 should give a main thread and 3 workers, found {threads} threads");
    let history = history_count().await;
    let (ok, out) = run_pgbench(p.port, &["-M", "simple", "-c", "16", "-j", "2", "-t", "100", "-n"]).await;
    check_run("simple, 3 worker threads", ok, &out, 1600, &p);
    assert_eq!(history_count().await - history, 1600, "rows added to pgbench_history");
}

/// pgbench prepares each statement with a blocking PQprepare (Parse + Sync) the first time a
/// client runs it, while other clients of the same pgbench thread may sit in open
/// transactions holding every pooled server connection. Against PostgreSQL this never
/// blocks; through a transaction pooler the prepare must not wait for a server connection
/// that only the blocked thread can give back (deadlock until query_wait_timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_with_clients_sharing_a_thread() {
    let _guard = PGBENCH.lock().unwrap_or_else(|e| e.into_inner());
    let p = PoolerOpts::primary_only().pool_size(2).query_wait_timeout("3s").start();
    init_pgbench().await;
    let (ok, out) = run_pgbench(p.port, &["-M", "prepared", "-c", "4", "-j", "1", "-t", "50", "-n"]).await;
    check_run("prepared -c 4 -j 1, pool 2", ok, &out, 200, &p);
}
