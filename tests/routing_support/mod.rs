//! Helpers for `tests/routing.rs`: shared-topology locking with restore-on-drop guards, direct
//! connections to each node, replica pause/stop, and the admin console (`SHOW ROUTING`,
//! `SHOW REPLICAS`).
#![allow(dead_code)]

use crate::common::{self, Conn, Pooler, PoolerOpts};
use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tokio_postgres::SimpleQueryMessage;

pub const PRIMARY: u16 = common::PRIMARY_PORT;
pub const R1: u16 = 55433;
pub const R2: u16 = 55434;

pub fn node_name(port: u16) -> &'static str {
    match port {
        PRIMARY => "primary",
        R1 => "r1",
        R2 => "r2",
        _ => "?",
    }
}

// ------------------------------------------------------------------ shared-state locking
//
// The servers are shared by every test process on this machine (this file may run in two
// `cargo test` processes at once, e.g. yours and `make test`), so the locks are advisory file
// locks (flock), which also work between threads of one process (each guard opens its own
// file description):
// - `TOPOLOGY_LOCK`: shared = "no replica is stopped or paused while I run"; exclusive = a test
//   that stops or pauses replicas.
// - `DELAY_LOCK`: shared by the tests that want r2 at a 300 ms apply delay; the last one out
//   (the one that can take it exclusively) sets the delay back to 0.

const TOPOLOGY_LOCK: &str = "lsnpool-topology.lock";
const DELAY_LOCK: &str = "lsnpool-r2-delay.lock";

/// An flock(2) lock held by a `flock(1)` child process (util-linux) for as long as this value
/// lives: `std::fs::File::lock` would need Rust 1.89 (the workspace's MSRV is 1.85) and the
/// libc crate is no dependency of the tests. If the test process dies, the child's stdin closes,
/// `cat` exits and the lock is released.
pub struct FileLock {
    child: std::process::Child,
}

impl FileLock {
    /// Blocks until the lock is held; with `wait = false` returns None when it is taken.
    fn acquire(name: &str, shared: bool, wait: bool) -> Option<FileLock> {
        use std::io::BufRead;
        let path = std::env::temp_dir().join(name);
        let mut cmd = Command::new("flock");
        cmd.arg(if shared { "--shared" } else { "--exclusive" });
        if !wait {
            cmd.arg("--nonblock");
        }
        let mut child = cmd
            .arg(&path)
            .arg("-c")
            .arg("echo locked; exec cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run flock(1) (util-linux) to lock {}: {e}", path.display()));
        let mut line = String::new();
        let stdout = child.stdout.take().expect("flock stdout");
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        if line.trim() == "locked" {
            Some(FileLock { child })
        } else {
            drop(child.stdin.take());
            let _ = child.wait();
            assert!(!wait, "flock {} failed", path.display());
            None
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // cat sees EOF, flock exits, the lock is released
        let _ = self.child.wait();
    }
}

fn pgenv(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(common::repo_root().join("testenv/pgenv.sh"))
        .args(args)
        .current_dir(common::repo_root())
        .stdin(Stdio::null())
        .output()
        .expect("run testenv/pgenv.sh")
}

fn pgenv_ok(args: &[&str]) -> String {
    let out = pgenv(args);
    assert!(
        out.status.success(),
        "testenv/pgenv.sh {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs one SQL statement on a node through `pgenv.sh psql` (unix socket, superuser);
/// usable from `Drop` (no async runtime needed). Returns stdout, or None on failure.
pub fn node_sql(node: &str, sql: &str) -> Option<String> {
    let out = pgenv(&["psql", node, "-XAtqc", sql]);
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The topology is up (`testenv/pgenv.sh up`, once per test binary). Replay paused by someone
/// else is left alone: it may be another process's test (ours resume what they pause).
fn init_once() {
    common::ensure_topology();
}

/// Held by tests that only need a healthy topology (any r2 delay).
pub struct Shared {
    _lock: FileLock,
}

pub fn shared() -> Shared {
    init_once();
    Shared { _lock: FileLock::acquire(TOPOLOGY_LOCK, true, true).expect("shared topology lock") }
}

/// A healthy topology with r2 replaying 300 ms late, shared with other such tests; the last one
/// to finish sets the delay back to 0.
pub struct Delayed {
    delay: Option<FileLock>,
    _s: Shared,
}

pub fn delayed_r2() -> Delayed {
    let s = shared();
    let lock = FileLock::acquire(DELAY_LOCK, true, true).expect("shared delay lock");
    pgenv_ok(&["delay", "300ms"]); // a no-op when another holder already set it
    Delayed { delay: Some(lock), _s: s }
}

impl Drop for Delayed {
    fn drop(&mut self) {
        drop(self.delay.take());
        // Last one out: nobody else holds the delay lock, and nobody can take it until we
        // have reset the delay.
        if let Some(_last) = FileLock::acquire(DELAY_LOCK, false, false) {
            let _ = pgenv(&["delay", "0"]);
        }
    }
}

/// Exclusive use of the topology: may pause, stop or delay replicas; everything is restored on
/// drop, even when the test fails.
pub struct Exclusive {
    _lock: FileLock,
    paused: Vec<&'static str>,
    stopped: bool,
    delayed: bool,
}

pub fn exclusive() -> Exclusive {
    init_once();
    let lock = FileLock::acquire(TOPOLOGY_LOCK, false, true).expect("exclusive topology lock");
    Exclusive { _lock: lock, paused: Vec::new(), stopped: false, delayed: false }
}

impl Exclusive {
    /// Pauses WAL replay on `node` ("r1"/"r2") and waits until it is paused.
    pub fn pause(&mut self, node: &'static str) {
        self.paused.push(node);
        node_sql(node, "SELECT pg_wal_replay_pause()").unwrap_or_else(|| panic!("cannot pause replay on {node}"));
        let t0 = Instant::now();
        loop {
            if node_sql(node, "SELECT pg_get_wal_replay_pause_state()").as_deref() == Some("paused") {
                return;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "{node} did not reach the paused state");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn set_r2_delay(&mut self, d: &str) {
        self.delayed = true;
        pgenv_ok(&["delay", d]);
    }

    /// `pg_ctl stop -m fast` on a replica ("r1"/"r2"), as the pgenv.sh script would run it.
    pub fn stop(&mut self, node: &'static str) {
        self.stopped = true;
        let script = r#"set -e
BIN="${PG_BINDIR:-}"
if [ -z "$BIN" ] || [ ! -x "$BIN/pg_ctl" ]; then BIN="$(pg_config --bindir 2>/dev/null || true)"; fi
if [ -z "$BIN" ] || [ ! -x "$BIN/pg_ctl" ]; then BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -t/ -k5,5Vr | head -n1)"; fi
D="$(readlink -f "$1")"
if [ "$(id -u)" = 0 ]; then
  cd / && exec runuser -u "${PGENV_OS_USER:-postgres}" -- "$BIN/pg_ctl" -D "$D" -m fast -w -t 60 stop
else
  exec "$BIN/pg_ctl" -D "$D" -m fast -w -t 60 stop
fi"#;
        let out = Command::new("bash")
            .arg("-c")
            .arg(script)
            .arg("bash")
            .arg(common::repo_root().join("testenv/data").join(node))
            .stdin(Stdio::null())
            .output()
            .expect("run pg_ctl stop");
        assert!(
            out.status.success(),
            "pg_ctl stop {node} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `testenv/pgenv.sh up`: restarts stopped nodes (and sets r2's delay to 0).
    pub fn restart_all(&mut self) {
        pgenv_ok(&["up"]);
        self.stopped = false;
        self.delayed = false;
    }
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        if self.stopped {
            let out = pgenv(&["up"]);
            if !out.status.success() {
                eprintln!("routing tests: restoring the topology failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        for n in self.paused.drain(..) {
            let _ = node_sql(n, "SELECT pg_wal_replay_resume()");
        }
        if self.delayed || self.stopped {
            let _ = pgenv(&["delay", "0"]);
        }
    }
}

// ------------------------------------------------------------------ nodes and data

/// Directly to one node (not through lsnpool) as the superuser, database appdb.
pub async fn direct(port: u16) -> Conn {
    let dsn = format!("host=127.0.0.1 port={port} user=postgres password=postgres dbname={} connect_timeout=5", common::DB);
    match common::within(15.0, "connect directly", Conn::connect(&dsn)).await {
        Ok(c) => c,
        Err(e) => panic!("cannot connect to 127.0.0.1:{port}: {}", common::db_message(&e)),
    }
}

/// Waits until every replica that is up has replayed the primary's current WAL position (so
/// tables just created on the primary exist everywhere). Paused or stopped replicas are skipped.
pub async fn wait_replicas_caught_up() {
    let p = direct(PRIMARY).await;
    let target: String = p.query_one("SELECT pg_current_wal_lsn()::text", &[]).await.unwrap().get(0);
    for port in [R1, R2] {
        let dsn = format!("host=127.0.0.1 port={port} user=postgres password=postgres dbname={} connect_timeout=5", common::DB);
        let Ok(c) = Conn::connect(&dsn).await else { continue };
        let t0 = Instant::now();
        loop {
            let row = c
                .query_one(
                    "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn, pg_get_wal_replay_pause_state() <> 'not paused'",
                    &[&target],
                )
                .await
                .expect("replay position");
            let (done, paused): (bool, bool) = (row.get(0), row.get(1));
            if done || paused {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "replica {port} did not reach {target}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A table `name (id int primary key, v int not null)` owned by `app`, with rows `ids` at 0,
/// visible on every running replica.
pub async fn counter_table(name: &str, ids: impl IntoIterator<Item = i32>) {
    common::create_table(name, "id int PRIMARY KEY, v int NOT NULL").await;
    let p = direct(PRIMARY).await;
    let ids: Vec<i32> = ids.into_iter().collect();
    p.execute(&format!("INSERT INTO {name} SELECT unnest($1::int[]), 0"), &[&ids]).await.expect("insert rows");
    wait_replicas_caught_up().await;
}

// ------------------------------------------------------------------ simple-query helpers

pub fn rows(msgs: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect()),
            _ => None,
        })
        .collect()
}

/// Rows as column-name → value maps.
pub fn named_rows(msgs: &[SimpleQueryMessage]) -> Vec<BTreeMap<String, String>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_string(), r.get(i).unwrap_or("").to_string()))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The single row of a simple query, or an error describing what came back.
pub async fn one_row(c: &Conn, sql: &str) -> Result<Vec<Option<String>>, String> {
    let msgs = c.simple_query(sql).await.map_err(|e| format!("{sql}: {}", common::db_message(&e)))?;
    let mut r = rows(&msgs);
    if r.len() != 1 {
        return Err(format!("{sql}: expected one row, got {r:?}"));
    }
    Ok(r.remove(0))
}

/// Which node served a one-statement read: `SELECT current_setting('port')` as a number.
pub async fn port_of(c: &Conn, sql_prefix: &str) -> Result<u16, String> {
    let sql = format!("{sql_prefix}SELECT current_setting('port')");
    let r = one_row(c, &sql).await?;
    r[0].as_deref().and_then(|p| p.parse().ok()).ok_or_else(|| format!("{sql}: bad port {r:?}"))
}

// ------------------------------------------------------------------ lsnpool with the admin console

/// The admin console of `pooler` (database `lsnpool`, user postgres).
pub async fn admin(pooler: &Pooler) -> Conn {
    let dsn = format!("host=127.0.0.1 port={} user=postgres password=postgres dbname=lsnpool connect_timeout=5", pooler.port);
    match common::within(15.0, "admin console login", Conn::connect(&dsn)).await {
        Ok(c) => c,
        Err(e) => panic!("admin console login failed: {}", common::db_message(&e)),
    }
}

pub async fn show(admin: &Conn, what: &str) -> Vec<BTreeMap<String, String>> {
    let msgs = admin.simple_query(&format!("SHOW {what}")).await.unwrap_or_else(|e| panic!("SHOW {what}: {}", common::db_message(&e)));
    named_rows(&msgs)
}

/// `SHOW ROUTING` counters of one database name, as numbers.
pub async fn routing(admin: &Conn, db: &str) -> BTreeMap<String, u64> {
    let all = show(admin, "ROUTING").await;
    let row = all
        .iter()
        .find(|r| r.get("database").map(String::as_str) == Some(db))
        .unwrap_or_else(|| panic!("SHOW ROUTING has no row for {db}: {all:?}"));
    row.iter().filter_map(|(k, v)| v.parse::<u64>().ok().map(|n| (k.clone(), n))).collect()
}

/// The `SHOW REPLICAS` row of the node at `port`.
pub async fn replica_row(admin: &Conn, port: u16) -> BTreeMap<String, String> {
    let all = show(admin, "REPLICAS").await;
    let addr = format!("127.0.0.1:{port}");
    match all.iter().find(|r| r.get("addr") == Some(&addr)) {
        Some(r) => r.clone(),
        None => panic!("SHOW REPLICAS has no row for {addr}: {all:?}"),
    }
}

pub async fn in_rotation(admin: &Conn, port: u16) -> bool {
    replica_row(admin, port).await.get("in_rotation").map(String::as_str) == Some("true")
}

/// Polls SHOW REPLICAS until the replica at `port` is (or is not) in rotation; returns how long
/// it took, or None after `limit`.
pub async fn wait_rotation(admin: &Conn, port: u16, want: bool, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    loop {
        if in_rotation(admin, port).await == want {
            return Some(t0.elapsed());
        }
        if t0.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts lsnpool with both replicas in its cluster and waits until its monitor has both replicas in rotation (right after start
/// nothing has been polled yet and every read would go to the primary).
pub async fn start_ready(opts: PoolerOpts) -> Pooler {
    let p = opts.with_replicas().start();
    {
        let a = admin(&p).await;
        for port in [R1, R2] {
            if wait_rotation(&a, port, true, Duration::from_secs(15)).await.is_none() {
                panic!("replica {port} not in rotation 15 s after lsnpool started: {:?}", show(&a, "REPLICAS").await);
            }
        }
    }
    p
}

/// Tally of which node served a series of reads.
#[derive(Default, Debug, Clone)]
pub struct Ports {
    pub by_port: BTreeMap<u16, u64>,
}

impl Ports {
    pub fn add(&mut self, port: u16) {
        *self.by_port.entry(port).or_default() += 1;
    }
    pub fn merge(&mut self, o: &Ports) {
        for (p, n) in &o.by_port {
            *self.by_port.entry(*p).or_default() += n;
        }
    }
    pub fn get(&self, port: u16) -> u64 {
        self.by_port.get(&port).copied().unwrap_or(0)
    }
    pub fn total(&self) -> u64 {
        self.by_port.values().sum()
    }
    pub fn replicas(&self) -> u64 {
        self.get(R1) + self.get(R2)
    }
}

impl std::fmt::Display for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.by_port.iter().map(|(p, n)| format!("{}={n}", node_name(*p))).collect();
        write!(f, "{}", parts.join(" "))
    }
}
