//! TLS: clients to lsnpool (psql with sslmode=require and verify-full, tokio-postgres over
//! rustls), certificates read again by RELOAD, and lsnpool to the servers with verify-full.
//! The certificates are testenv's (`testenv/data/tls`: a CA, and a server certificate for
//! `localhost` and 127.0.0.1).

mod common;

use common::*;
use std::path::PathBuf;

fn tls_file(name: &str) -> String {
    let p: PathBuf = repo_root().join("testenv/data/tls").join(name);
    p.to_string_lossy().into_owned()
}

fn tls_pooler(mode: &str) -> PoolerOpts {
    PoolerOpts::primary_only()
        .pool_size(2)
        .set_str("client_tls_mode", mode)
        .set_str("client_tls_cert_file", &tls_file("server.crt"))
        .set_str("client_tls_key_file", &tls_file("server.key"))
}

/// What psql says about its connection (`\conninfo`), after a query that must work.
async fn psql_conninfo(p: &Pooler, conninfo: &str) -> PsqlOutput {
    p.psql("app", "app", conninfo, &["-qAt", "-c", "select 'through lsnpool'", "-c", "\\conninfo"], None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_tokio_postgres_over_tls() {
    ensure_topology();
    let p = tls_pooler("require").start();
    let out = psql_conninfo(&p, "sslmode=require").await.must_succeed();
    assert!(out.stdout.contains("through lsnpool"), "{out:?}");
    assert!(out.stdout.contains("SSL"), "psql must say the connection is encrypted: {out:?}");
    let ca = tls_file("ca.crt");
    let out = psql_conninfo(&p, &format!("sslmode=verify-full sslrootcert={ca}")).await.must_succeed();
    assert!(out.stdout.contains("through lsnpool") && out.stdout.contains("SSL"), "{out:?}");
    // require: a client that does not ask for TLS is refused.
    let out = psql_conninfo(&p, "sslmode=disable").await;
    assert!(!out.success() && out.stderr.contains("TLS connections only"), "{out:?}");

    // A driver: tokio-postgres over rustls, verifying lsnpool's certificate, a few
    // transactions including a large result (many TLS records each way).
    let mut roots = lsnpool_net::rustls::RootCertStore::empty();
    let pem = std::fs::read(&ca).expect("read the CA");
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.expect("PEM certificate")).expect("CA certificate");
    }
    let config = lsnpool_net::rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(config);
    let dsn = format!("host=localhost port={} user=app password=app dbname={DB} sslmode=require connect_timeout=5", p.port);
    let (client, connection) = within(15.0, "tokio-postgres over TLS", tokio_postgres::connect(&dsn, tls)).await.unwrap_or_else(|e| panic!("{}", db_message(&e)));
    let task = tokio::spawn(connection);
    for i in 0..20i32 {
        let row = client.query_one("SELECT $1::int + 1", &[&i]).await.unwrap_or_else(|e| panic!("{}", db_message(&e)));
        assert_eq!(row.get::<_, i32>(0), i + 1);
    }
    let rows = client.query("SELECT g, repeat('x', 200) FROM generate_series(1, 5000) g", &[]).await.unwrap();
    assert_eq!(rows.len(), 5000);
    let big = "y".repeat(300_000);
    let back: String = client.query_one("SELECT $1::text", &[&big]).await.unwrap().get(0);
    assert_eq!(back.len(), big.len());
    drop(client);
    let _ = task.await;
}

/// `prefer` answers SSLRequest with `S` but lets plain clients in; RELOAD reads the
/// certificate files again (turning TLS on without a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_turned_on_by_reload() {
    let p = PoolerOpts::primary_only().pool_size(2).start();
    let out = psql_conninfo(&p, "sslmode=require").await;
    assert!(!out.success(), "TLS is off: sslmode=require must fail: {out:?}");
    let plain = psql_conninfo(&p, "sslmode=disable").await.must_succeed();
    assert!(!plain.stdout.contains("SSL"), "{plain:?}");

    let config = std::fs::read_to_string(&p.config_path).expect("read config");
    let keys = format!(
        "[pooler]\nclient_tls_mode = \"prefer\"\nclient_tls_cert_file = \"{}\"\nclient_tls_key_file = \"{}\"\n",
        tls_file("server.crt"),
        tls_file("server.key")
    );
    std::fs::write(&p.config_path, config.replacen("[pooler]\n", &keys, 1)).expect("write config");
    let admin = within(15.0, "admin console", Conn::connect(&format!("host=127.0.0.1 port={} user=postgres password=postgres dbname=lsnpool", p.port)))
        .await
        .expect("admin login");
    admin.simple_query("RELOAD").await.unwrap_or_else(|e| panic!("RELOAD: {}", db_message(&e)));
    let out = psql_conninfo(&p, &format!("sslmode=verify-full sslrootcert={}", tls_file("ca.crt"))).await.must_succeed();
    assert!(out.stdout.contains("SSL"), "{out:?}");
    // prefer still lets plain clients in.
    psql_conninfo(&p, "sslmode=disable").await.must_succeed();
}

/// lsnpool to the servers over TLS, checking their certificate against testenv's CA and the
/// address's host (verify-full): the server says the session is encrypted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connections_verify_full() {
    let p = PoolerOpts::primary_only()
        .pool_size(2)
        .set_str("server_tls_mode", "verify-full")
        .set_str("server_tls_ca_file", &tls_file("ca.crt"))
        .start();
    let c = p.app().await;
    let ssl = c.simple_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").await.unwrap_or_else(|e| panic!("{}", db_message(&e)));
    assert_eq!(ssl.as_deref(), Some("t"), "the server connection must be TLS");
    let rows = c.query("SELECT g FROM generate_series(1, 20000) g", &[]).await.unwrap();
    assert_eq!(rows.len(), 20000);

    // And a certificate that does not lead to the CA is refused: the server's own
    // certificate is not a CA.
    let p = PoolerOpts::primary_only()
        .pool_size(1)
        .set_str("server_tls_mode", "verify-full")
        .set_str("server_tls_ca_file", &tls_file("server.crt"))
        .start();
    let r = within(15.0, "a login through an unverifiable server", p.connect_as("app", "app")).await;
    let msg = match r {
        Ok(c) => c.simple_one("SELECT 1").await.err().map(|e| db_message(&e)).unwrap_or_default(),
        Err(e) => db_message(&e),
    };
    assert!(msg.contains("TLS") || msg.contains("certificate"), "the server's certificate must not be accepted: {msg:?}");
}
