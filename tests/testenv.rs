//! The test environment's extra services: Redis on 127.0.0.1:56379 and TLS on the
//! PostgreSQL nodes with testenv's own CA (testenv/data/tls/ca.crt).
mod common;

use common::{ensure_topology, repo_root, run_psql, within};
use std::process::{Command, Stdio};

#[test]
fn redis_answers_ping() {
    ensure_topology();
    let out = Command::new("timeout")
        .args(["5", "redis-cli", "-h", "127.0.0.1", "-p", "56379", "ping"])
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli (testenv/pgenv.sh up installs redis-server, which brings it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim() == "PONG",
        "redis-cli ping: {} stdout={stdout:?} stderr={:?}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn postgres_nodes_accept_verified_tls_and_plain() {
    ensure_topology();
    let ca = repo_root().join("testenv/data/tls/ca.crt");
    assert!(ca.exists(), "{} missing", ca.display());
    let ca = ca.to_str().unwrap();
    for (port, host) in [(55432, "127.0.0.1"), (55433, "localhost"), (55434, "127.0.0.1")] {
        // verify-full: the certificate chains to testenv's CA and names the host (SAN)
        let tls = format!("host={host} port={port} user=postgres dbname=postgres sslmode=verify-full sslrootcert={ca}");
        let out = within(30.0, "psql over TLS", run_psql(&tls, "postgres", &["-At", "-c", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"], None))
            .await
            .must_succeed();
        assert_eq!(out.stdout.trim(), "t", "port {port}: not a TLS connection");
        // plain connections keep working
        let plain = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=disable");
        let out = within(30.0, "psql plain", run_psql(&plain, "postgres", &["-At", "-c", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"], None))
            .await
            .must_succeed();
        assert_eq!(out.stdout.trim(), "f", "port {port}: sslmode=disable gave TLS");
    }
}
