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
