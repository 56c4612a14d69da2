//! Helpers for `tests/causal.rs`: tallies of read-backs, background read-only clients, the
//! commit token in a raw reply, and a throwaway `redis-server` of the test's own.
#![allow(dead_code)]

use crate::common::{self, raw::Msg, Conn, Pooler};
use crate::routing_support::{admin, one_row, routing};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Read-backs: how many, how many on replicas, how many stale.
#[derive(Default, Debug)]
pub struct Tally {
    pub reads: u64,
    pub on_replica: u64,
    pub stale: u64,
    pub examples: Vec<String>,
}

impl Tally {
    /// A read that must see at least `expected` (0: anything).
    pub fn read(&mut self, expected: i64, got: i64, on_replica: bool, what: &str) {
        self.reads += 1;
        self.on_replica += u64::from(on_replica);
        if got < expected {
            self.stale += 1;
            if self.examples.len() < 5 {
                self.examples.push(format!("{what}: expected v>={expected}, read v={got} (on_replica={on_replica})"));
            }
        }
    }

    pub fn merge(&mut self, o: Tally) {
        self.reads += o.reads;
        self.on_replica += o.on_replica;
        self.stale += o.stale;
        self.examples.extend(o.examples);
    }
}

pub fn pct(n: u64, d: u64) -> f64 {
    if d == 0 {
        0.0
    } else {
        100.0 * n as f64 / d as f64
    }
}

/// `v` of row `id` and whether a replica answered.
pub async fn read_v(c: &Conn, prefix: &str, table: &str, id: i32) -> Result<(i64, bool), String> {
    let r = one_row(c, &format!("{prefix}SELECT v, pg_is_in_recovery() FROM {table} WHERE id = {id}")).await?;
    let v = r[0].as_deref().and_then(|v| v.parse().ok()).ok_or_else(|| format!("bad v {r:?}"))?;
    Ok((v, r[1].as_deref() == Some("t")))
}

pub async fn show_level(c: &Conn) -> String {
    one_row(c, "SHOW lsnpool.consistency").await.ok().and_then(|r| r[0].clone()).unwrap_or_default()
}

/// Joins client tasks; fails the test on any error.
pub async fn collect(handles: Vec<tokio::task::JoinHandle<Result<Tally, String>>>) -> Tally {
    let mut total = Tally::default();
    let mut errors = Vec::new();
    for h in handles {
        match common::within(120.0, "client task", h).await {
            Ok(Ok(t)) => total.merge(t),
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(format!("task panicked: {e}")),
        }
    }
    assert!(errors.is_empty(), "client errors: {errors:#?}");
    total
}

/// Read-only clients reading row 0 of `table` until stopped.
pub struct Readers {
    stop: Arc<AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<Result<Tally, String>>>,
}

pub async fn spawn_readers(p: &Pooler, n: usize, table: &str, prefix: &str) -> Readers {
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for _ in 0..n {
        let c = p.app().await;
        let (stop, table, prefix) = (stop.clone(), table.to_string(), prefix.to_string());
        handles.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while !stop.load(Ordering::Relaxed) {
                let (v, rep) = read_v(&c, &prefix, &table, 0).await?;
                tally.read(0, v, rep, "reader");
            }
            Ok(tally)
        }));
    }
    Readers { stop, handles }
}

impl Readers {
    pub async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        collect(self.handles).await
    }
}

/// The `lsnpool.commit_lsn` ParameterStatus among `msgs`.
pub fn commit_lsn(msgs: &[Msg]) -> Option<String> {
    msgs.iter().filter(|m| m.tag == b'S').find_map(|m| {
        let mut parts = m.body.split(|b| *b == 0);
        let name = parts.next()?;
        let value = parts.next()?;
        (name == b"lsnpool.commit_lsn").then(|| String::from_utf8_lossy(value).into_owned())
    })
}

/// A `redis-server` of this test's own, on a free port, without persistence. Stopped on drop.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port");
        let mut r = RedisServer { port, child: None };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, empty: no persistence) and waits until it accepts connections.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package) must be installed");
        self.child = Some(child);
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(10), "redis-server did not start on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until a fresh store's settling window (after it was found empty) is over: a keyed
/// read then stays off the store-down path.
pub async fn wait_store_settled(p: &Pooler) {
    let a = admin(p).await;
    let c = p.app().await;
    c.simple_query("SET lsnpool.session_key = 'probe'").await.unwrap();
    let t0 = Instant::now();
    loop {
        let before = routing(&a, common::DB).await.get("fallback_token_store_down").copied().unwrap_or(0);
        one_row(&c, "SELECT 1").await.unwrap();
        let after = routing(&a, common::DB).await.get("fallback_token_store_down").copied().unwrap_or(0);
        if after == before {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "the token store never settled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
