//! Integration-test harness: the real testenv topology, one lsnpool process per test, and
//! small helpers for tokio-postgres, psql and a raw protocol client (`raw`).
#![allow(dead_code)]

pub mod raw;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

pub const PRIMARY_PORT: u16 = 55432;
pub const DB: &str = "appdb";

/// The source tree (where testenv/ and pooler.toml live).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Starts the topology once per test binary (`testenv/pgenv.sh up` is idempotent).
pub fn ensure_topology() {
    static UP: OnceLock<Result<(), String>> = OnceLock::new();
    let r = UP.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo_root().join("testenv/pgenv.sh"))
            .arg("up")
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run testenv/pgenv.sh: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "testenv/pgenv.sh up failed ({})\n--- stdout\n{}\n--- stderr\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = r {
        panic!("{e}");
    }
}

/// A unique identifier for tables, statement names, application names.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let r: u32 = rand::random::<u32>() % 1_000_000;
    format!("{prefix}_{}_{}_{r}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Awaits `fut`, failing the test if it takes longer than `secs`.
pub async fn within<T>(secs: f64, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs_f64(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs}s: {what}"),
    }
}

/// SQLSTATE of a tokio-postgres error, if the server (or pooler) sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_string())
}

pub fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} {}: {}", d.severity(), d.code().code(), d.message()),
        None => format!("{e}"),
    }
}

// ------------------------------------------------------------------ lsnpool process

/// Config for one lsnpool process; `[pooler]` values are raw TOML.
#[derive(Clone)]
pub struct PoolerOpts {
    pooler: BTreeMap<String, String>,
    users: Vec<(String, Option<String>, Option<usize>)>,
    env: Vec<(String, String)>,
    /// `[routing]` keys, raw TOML values.
    routing: BTreeMap<String, String>,
    /// List the streaming replicas in the cluster (on by default; `primary_only()` turns it
    /// off so all traffic goes to the primary, as the pooler-fidelity tests expect).
    replicas: bool,
    /// Raw TOML lines added to `[clusters.appdb]`, and raw TOML after it (`[[rules]]`).
    cluster_lines: Vec<String>,
    tail: String,
    /// Overrides the replica list (raw TOML array) when replicas are on.
    replica_list: Option<String>,
    /// Overrides the aliases (a raw TOML inline table).
    aliases: Option<String>,
    /// `nodes = …` (raw TOML array) in place of `primary` and `replicas`: roles discovered.
    nodes: Option<String>,
}

impl Default for PoolerOpts {
    fn default() -> Self {
        Self::new()
    }
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl PoolerOpts {
    pub fn new() -> Self {
        let mut pooler = BTreeMap::new();
        for (k, v) in [
            ("pool_mode", toml_str("transaction")),
            ("auth_type", toml_str("scram-sha-256")),
            ("default_pool_size", "4".to_string()),
            ("min_pool_size", "0".to_string()),
            ("max_client_conn", "1000".to_string()),
            ("query_wait_timeout", toml_str("5s")),
            ("client_login_timeout", toml_str("10s")),
            ("server_connect_timeout", toml_str("5s")),
            ("server_lifetime", toml_str("1h")),
            ("server_idle_timeout", toml_str("10m")),
            ("max_message_size", "67108864".to_string()),
            ("max_prepared_statements", "1000".to_string()),
            ("admin_users", "[\"postgres\"]".to_string()),
            ("stats_users", "[]".to_string()),
            ("metrics_listen", toml_str("")),
        ] {
            pooler.insert(k.to_string(), v);
        }
        let users = vec![
            ("postgres".to_string(), Some("postgres".to_string()), None),
            ("app".to_string(), Some("app".to_string()), None),
            ("md5user".to_string(), Some("md5user".to_string()), None),
        ];
        let mut routing = BTreeMap::new();
        for (k, v) in [("consistency", "\"read-your-writes\""), ("lsn_poll_interval", "\"10ms\""), ("max_replica_lag", "\"10s\""), ("lsn_wait_timeout", "\"0ms\"")] {
            routing.insert(k.to_string(), v.to_string());
        }
        PoolerOpts { pooler, users, env: Vec::new(), replicas: true, routing, cluster_lines: Vec::new(), tail: String::new(), replica_list: None, aliases: None, nodes: None }
    }

    /// Sets a `[pooler]` key to a raw TOML value (`"3"`, `"\"session\""`, `"[]"`).
    pub fn set(mut self, key: &str, toml_value: &str) -> Self {
        self.pooler.insert(key.to_string(), toml_value.to_string());
        self
    }

    /// Sets a `[pooler]` key to a string value.
    pub fn set_str(self, key: &str, value: &str) -> Self {
        self.set(key, &toml_str(value))
    }

    /// Sets a `[routing]` key to a string value.
    pub fn routing(mut self, key: &str, value: &str) -> Self {
        self.routing.insert(key.to_string(), toml_str(value));
        self
    }

    /// Leaves a `[routing]` key at lsnpool's default.
    pub fn routing_default(mut self, key: &str) -> Self {
        self.routing.remove(key);
        self
    }

    pub fn pool_size(self, n: usize) -> Self {
        self.set("default_pool_size", &n.to_string())
    }

    pub fn mode(self, mode: &str) -> Self {
        self.set_str("pool_mode", mode)
    }

    pub fn auth(self, auth_type: &str) -> Self {
        self.set_str("auth_type", auth_type)
    }

    pub fn query_wait_timeout(self, t: &str) -> Self {
        self.set_str("query_wait_timeout", t)
    }

    /// The cluster without its replicas: every transaction runs on the primary, so tests of
    /// pooling and protocol fidelity are not subject to replica lag or routing.
    pub fn primary_only() -> Self {
        let mut o = Self::new();
        o.replicas = false;
        o
    }

    pub fn with_replicas(mut self) -> Self {
        self.replicas = true;
        self
    }

    /// Sets a `[routing]` key to a raw TOML value.
    pub fn routing_raw(mut self, key: &str, toml_value: &str) -> Self {
        self.routing.insert(key.to_string(), toml_value.to_string());
        self
    }

    /// Adds a raw TOML line to `[clusters.appdb]` (e.g. `primary_read_pool_size = 2`).
    pub fn cluster_line(mut self, line: &str) -> Self {
        self.cluster_lines.push(line.to_string());
        self
    }

    /// Appends raw TOML after the cluster (e.g. a `[[rules]]` table).
    pub fn tail(mut self, toml: &str) -> Self {
        self.tail.push_str(toml);
        self.tail.push('\n');
        self
    }

    /// The cluster's replicas, as a raw TOML array (e.g. `["127.0.0.1:55434"]`).
    pub fn replica_list(mut self, toml_array: &str) -> Self {
        self.replica_list = Some(toml_array.to_string());
        self
    }

    /// Lists the cluster's nodes without roles (raw TOML array), replacing `primary` and
    /// `replicas`: the monitor finds the primary.
    pub fn nodes(mut self, toml_array: &str) -> Self {
        self.nodes = Some(toml_array.to_string());
        self
    }

    /// The cluster's aliases, as a raw TOML inline table.
    pub fn aliases(mut self, toml_table: &str) -> Self {
        self.aliases = Some(toml_table.to_string());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    fn render(&self, listen: &str) -> String {
        let mut s = String::from("[pooler]\n");
        s.push_str(&format!("listen = {}\n", toml_str(listen)));
        for (k, v) in &self.pooler {
            s.push_str(&format!("{k} = {v}\n"));
        }
        s.push_str("\n[routing]\n");
        for (k, v) in &self.routing {
            s.push_str(&format!("{k} = {v}\n"));
        }
        for (name, pw, size) in &self.users {
            s.push_str(&format!("\n[[users]]\nname = {}\n", toml_str(name)));
            if let Some(pw) = pw {
                s.push_str(&format!("password = {}\n", toml_str(pw)));
            }
            if let Some(n) = size {
                s.push_str(&format!("pool_size = {n}\n"));
            }
        }
        let all = "[\"127.0.0.1:55433\", \"127.0.0.1:55434\"]";
        let replicas = if self.replicas { self.replica_list.as_deref().unwrap_or(all) } else { "[]" };
        let aliases = self.aliases.as_deref().unwrap_or("{ app_primary = \"strong\", app_read = \"bounded\" }");
        let members = match &self.nodes {
            Some(nodes) => format!("nodes = {nodes}"),
            None => format!("primary = \"127.0.0.1:{PRIMARY_PORT}\"\nreplicas = {replicas}"),
        };
        s.push_str(&format!("\n[clusters.appdb]\ndatabase = \"appdb\"\n{members}\naliases = {aliases}\n"));
        for line in &self.cluster_lines {
            s.push_str(line);
            s.push('\n');
        }
        s.push_str(&self.tail);
        s
    }

    /// Ensures the topology, then starts lsnpool on a free port and waits until it accepts.
    pub fn start(self) -> Pooler {
        ensure_topology();
        let dir = tempfile::Builder::new().prefix("lsnpool-test-").tempdir().expect("tempdir");
        let mut last_err = String::new();
        for attempt in 0..5 {
            let port = free_port();
            let listen = format!("127.0.0.1:{port}");
            let config_path = dir.path().join("pooler.toml");
            std::fs::write(&config_path, self.render(&listen)).expect("write config");
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
            for (k, v) in &self.env {
                cmd.env(k, v);
            }
            let child = cmd
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log"))
                .stderr(log)
                .spawn()
                .expect("spawn lsnpool");
            let mut p = Pooler { child: Some(child), port, log_path, config_path, _dir: None };
            match p.wait_ready(Duration::from_secs(15)) {
                Ok(()) => {
                    p._dir = Some(dir);
                    return p;
                }
                Err(e) => {
                    last_err = format!("{e}\n--- lsnpool log\n{}", p.log_tail(40));
                    p.stop();
                }
            }
        }
        panic!("lsnpool did not start: {last_err}");
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// A running lsnpool; killed on drop (its log tail is printed if the test is failing).
pub struct Pooler {
    child: Option<Child>,
    pub port: u16,
    pub log_path: PathBuf,
    pub config_path: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Pooler {
    /// The pooler's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts lsnpool with the default test config.
    pub fn start() -> Pooler {
        PoolerOpts::new().start()
    }

    /// Starts lsnpool with the cluster's primary only.
    pub fn start_primary_only() -> Pooler {
        PoolerOpts::primary_only().start()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("lsnpool exited early with {status}"));
                }
            }
            if StdTcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("lsnpool did not accept on port {} within {limit:?}", self.port));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Rewrites the config file from `opts` (same listen address), for a RELOAD.
    pub fn rewrite_config(&self, opts: &PoolerOpts) {
        std::fs::write(&self.config_path, opts.render(&format!("127.0.0.1:{}", self.port))).expect("rewrite config");
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// libpq connection string for this pooler.
    pub fn dsn(&self, user: &str, password: &str, extra: &str) -> String {
        format!("host=127.0.0.1 port={} user={user} password={password} dbname={DB} connect_timeout=5 {extra}", self.port)
    }

    pub async fn connect_as(&self, user: &str, password: &str) -> Result<Conn, tokio_postgres::Error> {
        Conn::connect(&self.dsn(user, password, "")).await
    }

    pub async fn connect_dsn(&self, extra: &str) -> Result<Conn, tokio_postgres::Error> {
        Conn::connect(&self.dsn("app", "app", extra)).await
    }

    /// A tokio-postgres client as `app` through the pooler; fails the test if login fails.
    pub async fn app(&self) -> Conn {
        match within(15.0, "login through lsnpool", self.connect_as("app", "app")).await {
            Ok(c) => c,
            Err(e) => panic!("login through lsnpool failed: {}\n--- lsnpool log\n{}", db_message(&e), self.log_tail(30)),
        }
    }

    pub async fn superuser(&self) -> Conn {
        match within(15.0, "login through lsnpool", self.connect_as("postgres", "postgres")).await {
            Ok(c) => c,
            Err(e) => panic!("login through lsnpool failed: {}", db_message(&e)),
        }
    }

    /// Runs psql against the pooler: `conninfo_extra` is appended to the connection string.
    pub async fn psql(&self, user: &str, password: &str, conninfo_extra: &str, args: &[&str], stdin: Option<Vec<u8>>) -> PsqlOutput {
        let conninfo = format!("host=127.0.0.1 port={} user={user} dbname={DB} {conninfo_extra}", self.port);
        run_psql(&conninfo, password, args, stdin).await
    }
}

impl Drop for Pooler {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- lsnpool log tail ({}):\n{}\n--- end of lsnpool log", self.log_path.display(), self.log_tail(60));
        }
    }
}

// ------------------------------------------------------------------ tokio-postgres

/// A tokio-postgres client with its connection task.
pub struct Conn {
    pub client: Client,
    pub task: JoinHandle<()>,
}

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl Conn {
    pub async fn connect(dsn: &str) -> Result<Conn, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(dsn, NoTls).await?;
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn { client, task })
    }

    /// Drops the TCP connection abruptly: no Terminate message.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
        drop(self.client);
    }

    /// First column of the first row of a simple query, as text.
    pub async fn simple_one(&self, sql: &str) -> Result<Option<String>, tokio_postgres::Error> {
        let msgs = self.client.simple_query(sql).await?;
        for m in msgs {
            if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                return Ok(r.get(0).map(str::to_string));
            }
        }
        Ok(None)
    }

    pub async fn pid(&self) -> i32 {
        self.client.query_one("SELECT pg_backend_pid()", &[]).await.expect("pg_backend_pid").get(0)
    }
}

/// The pid of a primary backend matching `cond` (SQL over pg_stat_activity), once there is one:
/// for a test that must act while a statement runs.
pub async fn wait_for_backend(cond: &str) -> i32 {
    let direct = primary().await;
    within(15.0, &format!("a backend with {cond}"), async {
        loop {
            let rows = direct.query(&format!("SELECT pid FROM pg_stat_activity WHERE {cond}"), &[]).await.unwrap();
            if let Some(r) = rows.first() {
                return r.get::<_, i32>(0);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Directly to the primary as the superuser (not through lsnpool).
pub async fn primary() -> Conn {
    ensure_topology();
    let dsn = format!("host=127.0.0.1 port={PRIMARY_PORT} user=postgres password=postgres dbname={DB} connect_timeout=5");
    match within(15.0, "connect to primary", Conn::connect(&dsn)).await {
        Ok(c) => c,
        Err(e) => panic!("cannot connect to the primary directly: {}", db_message(&e)),
    }
}

/// Creates a table `name` (dropping any leftover) directly on the primary, owned by `app`.
pub async fn create_table(name: &str, columns: &str) {
    let p = primary().await;
    p.batch_execute(&format!("DROP TABLE IF EXISTS {name}; CREATE TABLE {name} ({columns}); ALTER TABLE {name} OWNER TO app;"))
        .await
        .expect("create test table");
}

pub async fn drop_table(name: &str) {
    let p = primary().await;
    let _ = p.batch_execute(&format!("DROP TABLE IF EXISTS {name}")).await;
}

// ------------------------------------------------------------------ psql

#[derive(Debug)]
pub struct PsqlOutput {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl PsqlOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }
    pub fn must_succeed(self) -> Self {
        assert!(self.success(), "psql failed ({}):\nstdout:\n{}\nstderr:\n{}", self.status, self.stdout, self.stderr);
        self
    }
}

pub fn psql_command(conninfo: &str, password: &str, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("psql");
    for (k, _) in std::env::vars() {
        if k.starts_with("PG") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "5")
        .arg("-X")
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .arg("-d")
        .arg(conninfo)
        .args(args)
        .kill_on_drop(true);
    cmd
}

pub async fn run_psql(conninfo: &str, password: &str, args: &[&str], stdin: Option<Vec<u8>>) -> PsqlOutput {
    use tokio::io::AsyncWriteExt;
    let mut cmd = psql_command(conninfo, password, args);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn psql");
    if let Some(data) = stdin {
        let mut si = child.stdin.take().unwrap();
        tokio::spawn(async move {
            let _ = si.write_all(&data).await;
            let _ = si.shutdown().await;
        });
    }
    let out = within(60.0, &format!("psql {args:?}"), child.wait_with_output()).await.expect("psql output");
    PsqlOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Path helper for tools.
pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// Writes to a file (tests that need a data file for psql).
pub fn write_file(p: &Path, data: &[u8]) {
    let mut f = std::fs::File::create(p).expect("create file");
    f.write_all(data).expect("write file");
}
