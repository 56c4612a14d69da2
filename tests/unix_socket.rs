//! Servers reached over their Unix-domain sockets: a node whose host is a directory
//! (`/var/run/postgresql:5432`, as libpq and PgBouncer read it). Queries, reads on replicas
//! (the monitor polls them over the socket too), cancel requests and SHOW SERVERS.

mod common;

use common::*;
use std::time::Duration;
use tokio_postgres::NoTls;

/// The directory the testenv servers put their sockets in, as the primary reports it.
async fn socket_dir() -> String {
    let dirs = primary().await.simple_one("SHOW unix_socket_directories").await.expect("SHOW").unwrap_or_default();
    let dir = dirs.split(',').next().unwrap_or_default().trim().to_string();
    assert!(dir.starts_with('/'), "the primary listens on no socket directory: {dirs:?}");
    dir
}

fn over_sockets(dir: &str) -> PoolerOpts {
    let node = |port: u16| format!("\"{dir}:{port}\"");
    PoolerOpts::new()
        .pool_size(2)
        .nodes(&format!("[{}, {}, {}]", node(PRIMARY_PORT), node(55433), node(55434)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_and_replica_reads_go_over_the_socket() {
    let dir = socket_dir().await;
    let p = over_sockets(&dir).start();
    let w = p.connect_dsn("dbname=app_primary").await.expect("login to app_primary");
    // A backend reached over a Unix socket has no server address.
    let row = w.query_one("SELECT inet_server_addr() IS NULL, pg_is_in_recovery()", &[]).await.expect("query");
    assert!(row.get::<_, bool>(0), "app_primary's server connection is not a Unix socket");
    assert!(!row.get::<_, bool>(1), "app_primary must reach the primary");
    w.batch_execute("CREATE TEMP TABLE IF NOT EXISTS unix_t (v int); DROP TABLE unix_t").await.expect("DDL on the primary");

    // Reads on a replica: the monitor must have found the nodes' roles and LSNs over the sockets.
    let r = p.connect_dsn("dbname=app_read").await.expect("login to app_read");
    within(20.0, "a read served by a replica over its socket", async {
        loop {
            let row = r.query_one("SELECT inet_server_addr() IS NULL, pg_is_in_recovery()", &[]).await.expect("read");
            if row.get::<_, bool>(1) {
                assert!(row.get::<_, bool>(0), "the replica's server connection is not a Unix socket");
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;

    // SHOW SERVERS says `unix`, as PgBouncer does.
    let admin = Conn::connect(&p.dsn("postgres", "postgres", "dbname=pgbouncer")).await.expect("admin console");
    let rows = admin.client.simple_query("SHOW SERVERS").await.expect("SHOW SERVERS");
    let addrs: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get("addr").map(str::to_string),
            _ => None,
        })
        .collect();
    assert!(!addrs.is_empty() && addrs.iter().all(|a| a == "unix"), "SHOW SERVERS addr: {addrs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_a_backend_over_the_socket() {
    let dir = socket_dir().await;
    let p = over_sockets(&dir).start();
    let c = std::sync::Arc::new(p.connect_dsn("dbname=app_primary").await.expect("login"));
    let token = c.cancel_token();
    let runner = {
        let c = c.clone();
        tokio::spawn(async move { c.query("SELECT pg_sleep(30)", &[]).await })
    };
    // Running, on a backend reached over the socket (no client address).
    wait_for_backend("query = 'SELECT pg_sleep(30)' AND state = 'active' AND client_addr IS NULL").await;
    token.cancel_query(NoTls).await.expect("send cancel request");
    let r = within(5.0, "the cancelled query to end", runner).await.expect("join");
    let e = r.expect_err("pg_sleep(30) must be cancelled");
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"), "{}", db_message(&e));
    assert_eq!(c.query_one("SELECT 1::int", &[]).await.expect("after cancel").get::<_, i32>(0), 1);
}

/// `server_tls_mode = "require"` cannot be met on a socket (PostgreSQL offers no TLS there): the
/// node is used without it, as libpq does, and lsnpool says so at load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_node_under_required_tls_is_plain_and_says_so() {
    let dir = socket_dir().await;
    let p = over_sockets(&dir).set_str("server_tls_mode", "require").start();
    let c = p.connect_dsn("dbname=app_primary").await.expect("login");
    let row = c.query_one("SELECT inet_server_addr() IS NULL", &[]).await.expect("query over the socket");
    assert!(row.get::<_, bool>(0));
    let log = p.log();
    assert!(log.contains("where PostgreSQL offers no TLS"), "no warning in the log:\n{}", p.log_tail(20));
}

// ---- clients reaching lsnpool over its own socket (`pooler.unix_socket_dir`) ----

fn tls_file(name: &str) -> String {
    repo_root().join("testenv/data/tls").join(name).to_string_lossy().into_owned()
}

/// A pooler listening on a socket in a fresh directory, and that directory.
fn with_client_socket(opts: PoolerOpts) -> (Pooler, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = opts.set_str("unix_socket_dir", &dir.path().to_string_lossy()).start();
    (p, dir)
}

fn socket_dsn(p: &Pooler, dir: &tempfile::TempDir, user: &str, password: &str, dbname: &str) -> String {
    format!("host={} port={} user={user} password={password} dbname={dbname} connect_timeout=5", dir.path().display(), p.port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_log_in_over_lsnpools_socket() {
    let (p, dir) = with_client_socket(PoolerOpts::primary_only());
    assert!(dir.path().join(format!(".s.PGSQL.{}", p.port)).exists(), "no socket file");
    let c = Conn::connect(&socket_dsn(&p, &dir, "app", "app", "appdb")).await.expect("login over lsnpool's socket");
    assert_eq!(c.query_one("SELECT 41 + 1", &[]).await.expect("query").get::<_, i32>(0), 42);

    // SHOW CLIENTS names the socket client as PgBouncer does: addr unix, the socket's port.
    let admin = Conn::connect(&socket_dsn(&p, &dir, "postgres", "postgres", "pgbouncer")).await.expect("admin over the socket");
    let rows = admin.client.simple_query("SHOW CLIENTS").await.expect("SHOW CLIENTS");
    let unix_ports: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get("addr") == Some("unix") => r.get("port").map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(unix_ports, vec![p.port.to_string()], "SHOW CLIENTS: one socket client (the app; the console is not listed)");

    // A wrong password over the socket fails like over TCP.
    let e = Conn::connect(&socket_dsn(&p, &dir, "app", "wrong", "appdb")).await.err().expect("a wrong password must fail");
    assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "{}", db_message(&e));
}

/// libpq does no TLS on a socket whatever sslmode says; with `client_tls_mode = require`, a
/// socket client is local (PostgreSQL's `local`, not `hostssl`) and is let in, while a plain TCP
/// client is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_tls_lets_socket_clients_in() {
    let opts = PoolerOpts::primary_only()
        .set_str("client_tls_mode", "require")
        .set_str("client_tls_cert_file", &tls_file("server.crt"))
        .set_str("client_tls_key_file", &tls_file("server.key"));
    let (p, dir) = with_client_socket(opts);
    let conninfo = format!("host={} port={} user=app dbname=appdb sslmode=require", dir.path().display(), p.port);
    let out = run_psql(&conninfo, "app", &["-Atc", "SELECT 'over the socket'"], None).await;
    assert!(out.success(), "psql over the socket: {}", out.stderr);
    assert_eq!(out.stdout.trim(), "over the socket");
    let tcp = p.psql("app", "app", "sslmode=disable", &["-Atc", "SELECT 1"], None).await;
    assert!(!tcp.success() && tcp.stderr.contains("TLS connections only"), "plain TCP must still be refused: {}", tcp.stderr);
}

/// A socket file left by a killed lsnpool is replaced at start; one another lsnpool answers on
/// stops a second from starting, saying so. (The socket is named by the listen port, so the
/// second listens on 127.0.0.2 with the same port.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_is_replaced_and_a_live_one_is_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = PoolerOpts::primary_only().set_str("unix_socket_dir", &dir.path().to_string_lossy()).start();
    let port = first.port;
    let socket = dir.path().join(format!(".s.PGSQL.{port}"));
    let config = dir.path().join("pooler.toml");
    std::fs::copy(&first.config_path, &config).expect("keep the config");
    drop(first); // SIGKILL: the socket file stays behind
    assert!(socket.exists(), "the killed pooler's socket file should remain for this test");

    let spawn = |listen: Option<String>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lsnpool"));
        cmd.arg("--config").arg(&config).env("LSNPOOL_LOG", "info").stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        if let Some(l) = listen {
            cmd.env("LSNPOOL_POOLER__LISTEN", l);
        }
        cmd.spawn().expect("spawn lsnpool")
    };
    let mut second = spawn(None);
    let dsn = format!("host={} port={port} user=app password=app dbname=appdb connect_timeout=5", dir.path().display());
    let c = within(15.0, "login over the replaced socket", async {
        loop {
            if let Ok(c) = Conn::connect(&dsn).await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(c.query_one("SELECT 7", &[]).await.expect("query").get::<_, i32>(0), 7);

    let third = spawn(Some(format!("127.0.0.2:{port}")));
    let out = within(15.0, "the third lsnpool to give up", async { third.wait_with_output() }).await.expect("third's output");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("another process listens on"), "third: {:?} {said}", out.status);
    assert_eq!(c.query_one("SELECT 8", &[]).await.expect("the second still serves").get::<_, i32>(0), 8);
    let _ = second.kill();
    let _ = second.wait();
}
