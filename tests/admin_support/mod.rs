//! Helpers for tests/admin.rs: admin-console clients (tokio-postgres with notices, psql
//! --csv), a tiny Prometheus text-format scraper/parser, and an lsnpool launcher of our own
//! for the tests that rewrite the config file, send signals or need the exit status (the
//! shared harness in tests/common keeps its child private).
#![allow(dead_code)]

use crate::common;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream as StdTcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_postgres::error::DbError;
use tokio_postgres::{AsyncMessage, Client, NoTls, SimpleQueryMessage};

pub const ADMIN_DBS: [&str; 2] = ["lsnpool", "pgbouncer"];
pub const R1: &str = "127.0.0.1:55433";
pub const R2: &str = "127.0.0.1:55434";

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

// ------------------------------------------------------------------ admin console client

/// A tokio-postgres client whose connection task keeps the notices it receives.
pub struct AdminConn {
    pub client: Client,
    pub notices: Arc<Mutex<Vec<DbError>>>,
    pub task: JoinHandle<()>,
}

impl std::ops::Deref for AdminConn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

pub fn dsn(port: u16, user: &str, password: &str, db: &str, extra: &str) -> String {
    format!("host=127.0.0.1 port={port} user={user} password={password} dbname={db} connect_timeout=5 {extra}")
}

pub async fn connect(port: u16, user: &str, password: &str, db: &str, extra: &str) -> Result<AdminConn, tokio_postgres::Error> {
    use futures_util::StreamExt;
    let (client, mut connection) = tokio_postgres::connect(&dsn(port, user, password, db, extra), NoTls).await?;
    let notices = Arc::new(Mutex::new(Vec::new()));
    let sink = notices.clone();
    let task = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notice(n)) => sink.lock().unwrap().push(n),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    Ok(AdminConn { client, notices, task })
}

/// The admin console as `postgres` (an admin user) on `db`; fails the test if login fails.
pub async fn admin(port: u16, db: &str) -> AdminConn {
    match common::within(15.0, "admin console login", connect(port, "postgres", "postgres", db, "")).await {
        Ok(c) => c,
        Err(e) => panic!("admin console login on database {db} failed: {}", common::db_message(&e)),
    }
}

/// One result set of the console.
#[derive(Debug, Clone)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Table {
    pub fn col(&self, name: &str) -> usize {
        self.columns.iter().position(|c| c == name).unwrap_or_else(|| panic!("no column {name:?} in {:?}", self.columns))
    }

    pub fn get<'a>(&self, row: &'a [Option<String>], name: &str) -> &'a str {
        row[self.col(name)].as_deref().unwrap_or("")
    }

    pub fn num(&self, row: &[Option<String>], name: &str) -> i64 {
        let v = self.get(row, name);
        v.parse().unwrap_or_else(|_| panic!("column {name} is not a number: {v:?} (row {row:?})"))
    }

    /// Rows whose `name` column equals `value`.
    pub fn rows_where(&self, name: &str, value: &str) -> Vec<&Vec<Option<String>>> {
        let i = self.col(name);
        self.rows.iter().filter(|r| r[i].as_deref() == Some(value)).collect()
    }

    pub fn row_where(&self, name: &str, value: &str) -> &Vec<Option<String>> {
        let rows = self.rows_where(name, value);
        assert_eq!(rows.len(), 1, "expected exactly one row with {name} = {value:?} in {self:#?}");
        rows[0]
    }
}

/// Runs one console command through the simple protocol and returns its (last) result set.
pub async fn show(c: &Client, sql: &str) -> Result<Table, tokio_postgres::Error> {
    let msgs = common::within(20.0, sql, c.simple_query(sql)).await?;
    let mut columns: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    for m in msgs {
        match m {
            SimpleQueryMessage::RowDescription(cols) => columns = Some(cols.iter().map(|c| c.name().to_string()).collect()),
            SimpleQueryMessage::Row(r) => {
                if columns.is_none() {
                    columns = Some(r.columns().iter().map(|c| c.name().to_string()).collect());
                }
                rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
            }
            _ => {}
        }
    }
    Ok(Table { columns: columns.unwrap_or_default(), rows })
}

pub async fn must_show(c: &Client, sql: &str) -> Table {
    match show(c, sql).await {
        Ok(t) => t,
        Err(e) => panic!("{sql}: {}", common::db_message(&e)),
    }
}

/// Runs a console command expected to fail; returns the server's error.
pub async fn must_fail(c: &Client, sql: &str) -> DbError {
    match common::within(20.0, sql, c.simple_query(sql)).await {
        Ok(m) => panic!("{sql}: expected an error, got {} messages", m.len()),
        Err(e) => match e.as_db_error() {
            Some(d) => d.clone(),
            None => panic!("{sql}: expected an ErrorResponse, got {e}"),
        },
    }
}

/// psql -X --csv -c `sql` against the console; returns (header columns, full output).
pub async fn psql_csv(port: u16, user: &str, password: &str, db: &str, sql: &str) -> common::PsqlOutput {
    let conninfo = format!("host=127.0.0.1 port={port} user={user} dbname={db}");
    common::run_psql(&conninfo, password, &["--csv", "-c", sql], None).await
}

pub fn csv_header(out: &str) -> Vec<String> {
    out.lines().next().unwrap_or("").split(',').map(|s| s.trim_matches('"').to_string()).collect()
}

/// Polls `f` until it returns Some, or panics with `what` after `secs`.
pub async fn eventually<T, F, Fut>(secs: f64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) => {
                if Instant::now() > deadline {
                    panic!("{what}: not true within {secs}s; last: {last}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Removes ANSI colour escapes (tracing's fmt layer writes them to the log file too).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for n in chars.by_ref() {
                    if n.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

// ------------------------------------------------------------------ Prometheus

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// GET /metrics over a plain TCP connection (HTTP/1.0: the server closes when done).
pub async fn scrape(addr: SocketAddr) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await.map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .map_err(|_| "scrape timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("not an HTTP response: {text:?}"))?;
    if !head.starts_with("HTTP/1.") || !head.lines().next().unwrap_or("").contains(" 200") {
        return Err(format!("unexpected HTTP status: {head}"));
    }
    Ok(body.to_string())
}

/// Parses the text exposition format's sample lines (comments and blank lines skipped).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name_labels, value) = match line.rfind(' ') {
            Some(i) => (&line[..i], line[i + 1..].trim()),
            None => panic!("bad metrics line: {line:?}"),
        };
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad sample value in {line:?}")),
        };
        let (name, labels) = match name_labels.find('{') {
            None => (name_labels.to_string(), BTreeMap::new()),
            Some(i) => {
                let inner = name_labels[i + 1..].strip_suffix('}').unwrap_or_else(|| panic!("bad labels in {line:?}"));
                (name_labels[..i].to_string(), parse_labels(inner, line))
            }
        };
        out.push(Sample { name, labels, value });
    }
    out
}

fn parse_labels(inner: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let eq = rest.find('=').unwrap_or_else(|| panic!("bad label in {line:?}"));
        let key = rest[..eq].trim().to_string();
        let after = &rest[eq + 1..];
        assert!(after.starts_with('"'), "bad label value in {line:?}");
        let mut value = String::new();
        let mut chars = after[1..].char_indices();
        let mut end = None;
        while let Some((i, ch)) = chars.next() {
            match ch {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(match n {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.unwrap_or_else(|| panic!("unterminated label value in {line:?}"));
        labels.insert(key, value);
        rest = after[1 + end..].trim_start_matches(',').trim_start();
    }
    labels
}

/// `# TYPE name type` lines.
pub fn metric_types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' ').map(|(n, t)| (n.to_string(), t.trim().to_string())))
        .collect()
}

pub fn samples<'a>(all: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    all.iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .collect()
}

pub fn sum(all: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(all, name, labels).iter().map(|s| s.value).sum()
}

// ------------------------------------------------------------------ own launcher

/// What our own lsnpool config contains (rendered like tests/common's, but replicas,
/// pool size and routing are ours to change, and it can be rewritten for RELOAD).
#[derive(Clone)]
pub struct Cfg {
    pub pool_size: usize,
    pub replicas: Vec<String>,
    pub query_wait_timeout: String,
    pub lsn_wait_timeout: String,
    pub metrics_listen: String,
    pub stats_users: Vec<String>,
    /// More [[users]] (name, password) besides postgres and app.
    pub extra_users: Vec<(String, String)>,
}

impl Default for Cfg {
    fn default() -> Self {
        Cfg {
            pool_size: 4,
            replicas: vec![R1.to_string(), R2.to_string()],
            query_wait_timeout: "5s".into(),
            lsn_wait_timeout: "0ms".into(),
            metrics_listen: String::new(),
            stats_users: Vec::new(),
            extra_users: Vec::new(),
        }
    }
}

fn list(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", items.join(", "))
}

impl Cfg {
    pub fn render(&self, listen: &str) -> String {
        let mut users = String::new();
        for (name, pw) in &self.extra_users {
            users.push_str(&format!("\n[[users]]\nname = \"{name}\"\npassword = \"{pw}\"\n"));
        }
        format!(
            r#"[pooler]
listen = "{listen}"
pool_mode = "transaction"
auth_type = "scram-sha-256"
default_pool_size = {pool_size}
min_pool_size = 0
max_client_conn = 1000
query_wait_timeout = "{qwt}"
client_login_timeout = "10s"
server_connect_timeout = "5s"
server_lifetime = "1h"
server_idle_timeout = "10m"
admin_users = ["postgres"]
stats_users = {stats_users}
metrics_listen = "{metrics}"

[routing]
consistency = "read-your-writes"
lsn_poll_interval = "10ms"
max_replica_lag = "10s"
lsn_wait_timeout = "{lwt}"

[[users]]
name = "postgres"
password = "postgres"

[[users]]
name = "app"
password = "app"
{users}
[clusters.appdb]
database = "appdb"
primary = "127.0.0.1:{primary}"
replicas = {replicas}
aliases = {{ app_primary = "strong", app_read = "bounded" }}
"#,
            pool_size = self.pool_size,
            qwt = self.query_wait_timeout,
            stats_users = list(&self.stats_users),
            metrics = self.metrics_listen,
            lwt = self.lsn_wait_timeout,
            primary = common::PRIMARY_PORT,
            replicas = list(&self.replicas),
            users = users,
        )
    }
}

/// An lsnpool process we started ourselves; killed on drop.
pub struct Proc {
    child: Option<Child>,
    pub port: u16,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    pub fn start(cfg: &Cfg) -> Proc {
        common::ensure_topology();
        let dir = tempfile::Builder::new().prefix("lsnpool-admin-test-").tempdir().expect("tempdir");
        let config_path = dir.path().join("pooler.toml");
        let mut last = String::new();
        for attempt in 0..5 {
            let port = free_port();
            std::fs::write(&config_path, cfg.render(&format!("127.0.0.1:{port}"))).expect("write config");
            let log_path = dir.path().join(format!("lsnpool-{attempt}.log"));
            let log = std::fs::File::create(&log_path).expect("create log");
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_lsnpool"));
            cmd.arg("--config").arg(&config_path);
            for (k, _) in std::env::vars() {
                if k.starts_with("LSNPOOL_") {
                    cmd.env_remove(&k);
                }
            }
            cmd.env("LSNPOOL_LOG", "info");
            let child = cmd
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log"))
                .stderr(log)
                .spawn()
                .expect("spawn lsnpool");
            let mut p = Proc { child: Some(child), port, config_path: config_path.clone(), log_path, _dir: tempfile::tempdir().unwrap() };
            let deadline = Instant::now() + Duration::from_secs(15);
            let ok = loop {
                if p.try_status().is_some() {
                    break false;
                }
                if StdTcpStream::connect_timeout(&p.addr(), Duration::from_millis(200)).is_ok() {
                    break true;
                }
                if Instant::now() > deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(25));
            };
            if ok {
                p._dir = dir;
                return p;
            }
            last = p.log_tail(40);
            p.kill();
        }
        panic!("lsnpool did not start:\n{last}");
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("process handle").id()
    }

    /// Rewrites the config file (same listen port).
    pub fn rewrite(&self, cfg: &Cfg) {
        self.write_raw(&cfg.render(&format!("127.0.0.1:{}", self.port)));
    }

    pub fn write_raw(&self, text: &str) {
        std::fs::write(&self.config_path, text).expect("rewrite config");
    }

    /// Sends a signal (HUP, TERM, INT) with kill(1).
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill").arg("-s").arg(sig).arg(self.pid().to_string()).status().expect("run kill");
        assert!(st.success(), "kill -s {sig} {} failed", self.pid());
    }

    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for the process to exit; None if it is still running after `secs`.
    pub async fn wait_exit(&mut self, secs: f64) -> Option<ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn connect(&self, user: &str, password: &str, db: &str, extra: &str) -> Result<AdminConn, tokio_postgres::Error> {
        connect(self.port, user, password, db, extra).await
    }

    /// A client as `app` on `db`; fails the test if login fails.
    pub async fn app(&self, db: &str) -> AdminConn {
        match common::within(15.0, "app login", self.connect("app", "app", db, "")).await {
            Ok(c) => c,
            Err(e) => panic!("app login on {db} failed: {}\n--- log\n{}", common::db_message(&e), self.log_tail(30)),
        }
    }

    pub async fn admin(&self) -> AdminConn {
        admin(self.port, "lsnpool").await
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- lsnpool log tail ({}):\n{}\n--- end of lsnpool log", self.log_path.display(), self.log_tail(60));
        }
    }
}
