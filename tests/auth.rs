//! Client authentication and refusals: SQLSTATEs a PostgreSQL user recognises.

mod common;

use common::*;
use std::time::Duration;

async fn login_error(p: &Pooler, user: &str, password: &str, db: &str) -> tokio_postgres::Error {
    let dsn = format!("host=127.0.0.1 port={} user={user} password={password} dbname={db} connect_timeout=5", p.port);
    match within(15.0, "login attempt", Conn::connect(&dsn)).await {
        Ok(_) => panic!("login as {user}/{password} to {db} must fail"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_refusals_carry_postgres_sqlstates() {
    let p = PoolerOpts::primary_only().pool_size(2).start();
    let e = login_error(&p, "app", "wrong", DB).await;
    assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "bad password: {}", db_message(&e));
    let e = login_error(&p, "nobody_here", "x", DB).await;
    assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "unknown user: {}", db_message(&e));
    assert_eq!(db_message(&e), "FATAL 28P01: password authentication failed for user \"nobody_here\"");
    let e = login_error(&p, "app", "app", "no_such_db").await;
    assert_eq!(sqlstate(&e).as_deref(), Some("3D000"), "unknown database: {}", db_message(&e));
    // And the good login works, for both users with server-side SCRAM and md5.
    let c = p.app().await;
    assert_eq!(c.simple_one("SELECT current_user").await.unwrap().as_deref(), Some("app"));
    let m = within(15.0, "md5user login", p.connect_as("md5user", "md5user")).await.unwrap_or_else(|e| panic!("md5user: {}", db_message(&e)));
    assert_eq!(m.simple_one("SELECT current_user").await.unwrap().as_deref(), Some("md5user"));
    let e = login_error(&p, "md5user", "nope", DB).await;
    assert_eq!(sqlstate(&e).as_deref(), Some("28P01"));

    // psql sees the same.
    let out = p.psql("app", "wrong", "", &["-c", "select 1"], None).await;
    assert!(!out.success());
    assert!(out.stderr.contains("password authentication failed"), "{out:?}");
    let out = p.psql("app", "app", "", &["-qAt", "-c", "select current_user"], None).await.must_succeed();
    assert_eq!(out.stdout.trim(), "app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_client_auth() {
    let p = PoolerOpts::primary_only().auth("md5").pool_size(2).start();
    for (user, pw) in [("app", "app"), ("md5user", "md5user"), ("postgres", "postgres")] {
        let c = within(15.0, "md5 login", p.connect_as(user, pw)).await.unwrap_or_else(|e| panic!("{user}: {}", db_message(&e)));
        assert_eq!(c.simple_one("SELECT current_user").await.unwrap().as_deref(), Some(user));
        let out = p.psql(user, pw, "", &["-qAt", "-c", "select current_user"], None).await.must_succeed();
        assert_eq!(out.stdout.trim(), user);
    }
    let e = login_error(&p, "app", "wrong", DB).await;
    assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "{}", db_message(&e));
    let out = p.psql("md5user", "wrong", "", &["-c", "select 1"], None).await;
    assert!(!out.success() && out.stderr.contains("password authentication failed"), "{out:?}");
    // The raw client sees an md5 request (R code 5).
    let mut r = raw::Raw::connect(p.port).await;
    r.send(&raw::startup_packet(raw::PROTOCOL_3_0, &[("user", "app"), ("database", DB)])).await;
    let m = r.recv().await;
    assert_eq!(m.tag, b'R');
    assert_eq!(i32::from_be_bytes(m.body[..4].try_into().unwrap()), 5, "AuthenticationMD5Password expected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_client_auth() {
    let p = PoolerOpts::primary_only().auth("trust").pool_size(2).start();
    // Any password, or none, is accepted for configured users.
    let c = within(15.0, "trust login", Conn::connect(&format!("host=127.0.0.1 port={} user=app dbname={DB}", p.port)))
        .await
        .unwrap_or_else(|e| panic!("{}", db_message(&e)));
    assert_eq!(c.simple_one("SELECT current_user").await.unwrap().as_deref(), Some("app"));
    let c = within(15.0, "trust login", p.connect_as("md5user", "whatever")).await.unwrap_or_else(|e| panic!("{}", db_message(&e)));
    assert_eq!(c.simple_one("SELECT current_user").await.unwrap().as_deref(), Some("md5user"));
    // Unknown users and databases are still refused.
    let e = login_error(&p, "nobody_here", "x", DB).await;
    assert_eq!(sqlstate(&e).as_deref(), Some("28000"));
    let e = login_error(&p, "app", "x", "no_such_db").await;
    assert_eq!(sqlstate(&e).as_deref(), Some("3D000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_refuses_the_extra_client() {
    let p = PoolerOpts::primary_only().set("max_client_conn", "2").pool_size(2).start();
    let a = p.app().await;
    let b = p.app().await;
    let e = login_error(&p, "app", "app", DB).await;
    assert_eq!(sqlstate(&e).as_deref(), Some("53300"), "{}", db_message(&e));
    assert!(db_message(&e).contains("max_client_conn"), "{}", db_message(&e));
    // The two admitted clients keep working.
    a.simple_one("SELECT 1").await.unwrap();
    b.simple_one("SELECT 1").await.unwrap();
    // A place frees up when a client leaves.
    drop(b);
    let c = within(10.0, "a free place", async {
        loop {
            match p.connect_as("app", "app").await {
                Ok(c) => break c,
                Err(e) if sqlstate(&e).as_deref() == Some("53300") => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("{}", db_message(&e)),
            }
        }
    })
    .await;
    assert_eq!(c.simple_one("SELECT 'third'").await.unwrap().as_deref(), Some("third"));
    // Failed logins do not use up places.
    for _ in 0..3 {
        let _ = login_error(&p, "app", "wrong", DB).await;
    }
    drop(c);
    drop(a);
    within(10.0, "two places again", async {
        loop {
            let x = p.connect_as("app", "app").await;
            let y = p.connect_as("app", "app").await;
            if let (Ok(x), Ok(y)) = (&x, &y) {
                x.simple_one("SELECT 1").await.unwrap();
                y.simple_one("SELECT 1").await.unwrap();
                break;
            }
            drop((x, y));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_wait_timeout_gives_57014_and_client_recovers() {
    let p = PoolerOpts::primary_only().pool_size(1).query_wait_timeout("500ms").start();
    let a = p.app().await;
    a.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let b = p.app().await;

    // Simple protocol.
    let e = within(10.0, "B's query to time out", b.simple_query("SELECT 'b'")).await.expect_err("no server is free");
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"), "{}", db_message(&e));
    assert!(db_message(&e).contains("query_wait_timeout"), "{}", db_message(&e));
    // Extended protocol.
    let e = within(10.0, "B's prepare to time out", b.query_one("SELECT $1::int", &[&1i32])).await.expect_err("no server is free");
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"), "{}", db_message(&e));
    assert!(db_message(&e).contains("query_wait_timeout"), "{}", db_message(&e));

    // A is unaffected and still inside its transaction.
    assert_eq!(a.simple_one("SELECT now() = statement_timestamp()").await.unwrap().as_deref(), Some("f"));
    a.batch_execute("COMMIT").await.unwrap();

    // B keeps working.
    assert_eq!(b.simple_one("SELECT 'b ok'").await.unwrap().as_deref(), Some("b ok"));
    assert_eq!(b.query_one("SELECT $1::int", &[&7i32]).await.unwrap().get::<_, i32>(0), 7);
}

/// The salt of the SCRAM exchange lsnpool offers `user` (the server-first message's `s=`).
async fn scram_salt(p: &Pooler, user: &str) -> String {
    let mut r = raw::Raw::connect(p.port).await;
    r.send(&raw::startup_packet(raw::PROTOCOL_3_0, &[("user", user), ("database", DB)])).await;
    let m = r.recv().await;
    assert_eq!((m.tag, i32::from_be_bytes(m.body[..4].try_into().unwrap())), (b'R', 10), "{user}: SASL expected: {m:?}");
    let first = b"n,,n=,r=abcdefghijklmnopqrstuvwx";
    let mut msg = vec![b'p', 0, 0, 0, 0];
    msg.extend_from_slice(b"SCRAM-SHA-256\0");
    msg.extend_from_slice(&(first.len() as i32).to_be_bytes());
    msg.extend_from_slice(first);
    let len = (msg.len() - 1) as i32;
    msg[1..5].copy_from_slice(&len.to_be_bytes());
    r.send(&msg).await;
    let m = r.recv().await;
    assert_eq!((m.tag, i32::from_be_bytes(m.body[..4].try_into().unwrap())), (b'R', 11), "{user}: SASLContinue expected: {m:?}");
    let text = String::from_utf8_lossy(&m.body[4..]).into_owned();
    let salt = text.split(',').find_map(|f| f.strip_prefix("s=")).unwrap_or_default().to_string();
    assert!(text.contains(",i=4096"), "{user}: {text}");
    salt
}

/// An unknown user gets the exchange a known one gets, with a salt that is stable per name
/// (as a real user's is), and the same 28P01 a wrong password gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_look_like_wrong_passwords() {
    let p = PoolerOpts::primary_only().pool_size(1).set_str("auth_failure_delay", "0ms").start();
    let ghost = scram_salt(&p, "nobody_here").await;
    assert!(!ghost.is_empty());
    assert_eq!(scram_salt(&p, "nobody_here").await, ghost, "a decoy salt must not change between probes");
    assert_ne!(scram_salt(&p, "nobody_else").await, ghost);
    let wrong = login_error(&p, "app", "wrong", DB).await;
    let unknown = login_error(&p, "nobody_here", "wrong", DB).await;
    assert_eq!(db_message(&wrong).replace("\"app\"", "\"nobody_here\""), db_message(&unknown));
    let out = p.psql("nobody_here", "x", "", &["-c", "select 1"], None).await;
    assert!(!out.success() && out.stderr.contains("password authentication failed for user \"nobody_here\""), "{out:?}");

    // md5: the same md5 request, the same failure.
    let p = PoolerOpts::primary_only().auth("md5").pool_size(1).set_str("auth_failure_delay", "0ms").start();
    let mut r = raw::Raw::connect(p.port).await;
    r.send(&raw::startup_packet(raw::PROTOCOL_3_0, &[("user", "nobody_here"), ("database", DB)])).await;
    let m = r.recv().await;
    assert_eq!((m.tag, i32::from_be_bytes(m.body[..4].try_into().unwrap())), (b'R', 5), "md5 request expected: {m:?}");
    let e = login_error(&p, "nobody_here", "x", DB).await;
    assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "{}", db_message(&e));
}

/// Failed logins from one address are answered one per `auth_failure_delay`; a good login
/// from the same address meanwhile is not held up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_rate_limited_per_address() {
    let p = std::sync::Arc::new(PoolerOpts::primary_only().pool_size(1).set_str("auth_failure_delay", "1s").start());
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    for _ in 0..3 {
        let p = p.clone();
        failures.push(tokio::spawn(async move {
            let e = login_error(&p, "app", "wrong", DB).await;
            assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "{}", db_message(&e));
            started.elapsed()
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let good_started = std::time::Instant::now();
    let c = p.app().await;
    let good = good_started.elapsed();
    c.simple_one("SELECT 1").await.unwrap();
    let mut took = Vec::new();
    for f in failures {
        took.push(within(20.0, "a failed login", f).await.expect("failure task"));
    }
    took.sort();
    eprintln!("failures answered after {took:?}; the good login took {good:?}");
    for (i, t) in took.iter().enumerate() {
        assert!(*t >= Duration::from_millis(950 * (i as u64 + 1)), "failure {i} answered after {t:?}: {took:?}");
    }
    assert!(good + Duration::from_secs(1) < took[2], "the good login waited behind the failures: {good:?} vs {took:?}");
}
