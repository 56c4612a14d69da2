//! Connection life cycle: clients killed mid-transaction, session pool mode, servers
//! terminated under a client.

mod common;

use common::raw::{rows0, Raw};
use common::*;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Terminates a primary backend and waits until it is gone.
async fn terminate(pid: i32) {
    let direct = primary().await;
    let ok: bool = direct.query_one("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap().get(0);
    assert!(ok, "pg_terminate_backend({pid})");
    within(15.0, "terminated backend to go away", async {
        loop {
            let n: i64 = direct.query_one("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", &[&pid]).await.unwrap().get(0);
            if n == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Ends backends still running queries tagged with `marker` (cleanup for killed clients).
async fn terminate_marked(marker: &str) {
    let direct = primary().await;
    let _ = direct
        .execute(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%{marker}%' AND pid <> pg_backend_pid()"), &[])
        .await;
}

/// The next client on the (only) server connection sees a clean session: no open transaction,
/// nothing of the killed client's work.
async fn next_client_sees_clean_server(p: &Pooler, table: &str) {
    let mut b = Raw::login(p.port, "app", "app").await;
    let msgs = b.simple(&format!("SELECT count(*) FROM {table}")).await;
    assert_eq!(rows0(&msgs), vec!["0"], "the killed client's INSERT must not be visible: {msgs:?}");
    let msgs = b.simple("SELECT xact_start = query_start FROM pg_stat_activity WHERE pid = pg_backend_pid()").await;
    assert_eq!(rows0(&msgs), vec!["t"], "a fresh statement must run in its own transaction: {msgs:?}");
    let msgs = b.simple("BEGIN").await;
    assert!(
        !msgs.iter().any(|m| m.tag == b'N' || m.tag == b'E'),
        "BEGIN must not warn \"there is already a transaction in progress\": {msgs:?}"
    );
    assert_eq!(msgs.last().unwrap().body, b"T");
    let msgs = b.simple("ROLLBACK").await;
    assert_eq!(msgs.last().unwrap().body, b"I");
    // And the row can be inserted now (no lock left behind; session mode: same client, as
    // it holds the only server connection).
    let msgs = within(10.0, "insert after the killed client", b.simple(&format!("INSERT INTO {table} VALUES (1)"))).await;
    assert_eq!(raw::tags(&msgs), "CZ", "{msgs:?}");
    let _ = p;
}

/// Runs `pg_sleep(secs)` tagged with `marker` on `a` and, once the server runs it, drops the
/// client's socket: no Terminate, no CancelRequest.
async fn kill_during_sleep(a: Conn, secs: u32, marker: &str) {
    let abort = a.task.abort_handle();
    let a = std::sync::Arc::new(a);
    let a2 = a.clone();
    let sql = format!("SELECT pg_sleep({secs}) /* {marker} */");
    let running = tokio::spawn(async move { a2.batch_execute(&sql).await });
    wait_for_backend(&format!("query LIKE '%{marker}%' AND state = 'active' AND pid <> pg_backend_pid()")).await;
    abort.abort();
    let _ = within(10.0, "the killed client's request to end", running).await;
}

async fn killed_mid_transaction(mode: &str) {
    let p = PoolerOpts::primary_only().mode(mode).pool_size(1).start();
    let t = unique("lt_killed");
    create_table(&t, "id int primary key").await;

    // tokio-postgres client, connection dropped without Terminate while idle in transaction.
    let a = p.app().await;
    a.batch_execute(&format!("BEGIN; INSERT INTO {t} VALUES (1)")).await.unwrap();
    a.kill().await;
    next_client_sees_clean_server(&p, &t).await;
    primary().await.batch_execute(&format!("TRUNCATE {t}")).await.unwrap();

    // Dropped while a query of the transaction is still running on the server.
    let marker = unique("lt_mark");
    let a = p.app().await;
    a.batch_execute(&format!("BEGIN; INSERT INTO {t} VALUES (1)")).await.unwrap();
    kill_during_sleep(a, 20, &marker).await;
    let b = p.app().await;
    let n: i64 = within(15.0, "count after a client died mid-query", b.query_one(&format!("SELECT count(*) FROM {t}"), &[])).await.unwrap().get(0);
    assert_eq!(n, 0);
    assert_eq!(b.simple_one("SELECT xact_start = query_start FROM pg_stat_activity WHERE pid = pg_backend_pid()").await.unwrap().as_deref(), Some("t"));
    drop(b);
    terminate_marked(&marker).await;
    primary().await.batch_execute(&format!("TRUNCATE {t}")).await.unwrap();

    // psql killed (SIGKILL) while idle in transaction.
    let conninfo = format!("host=127.0.0.1 port={} user=app dbname={DB}", p.port);
    let mut cmd = psql_command(&conninfo, "app", &[]);
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn psql");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("BEGIN;\nINSERT INTO {t} VALUES (1);\n").as_bytes()).await.unwrap();
    stdin.flush().await.unwrap();
    wait_for_backend(&format!("state = 'idle in transaction' AND query LIKE 'INSERT INTO {t}%'")).await;
    child.kill().await.unwrap();
    drop(stdin);
    next_client_sees_clean_server(&p, &t).await;

    drop_table(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_killed_mid_transaction_transaction_mode() {
    killed_mid_transaction("transaction").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_killed_mid_transaction_session_mode() {
    killed_mid_transaction("session").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keeps_state_per_client_and_discards_it_after() {
    let p = PoolerOpts::primary_only().mode("session").pool_size(1).query_wait_timeout("10s").start();
    let schema = unique("lt_sp");
    let a = p.app().await;
    a.batch_execute(&format!("SET search_path = {schema}, public")).await.unwrap();
    a.batch_execute("PREPARE lt_plan(int) AS SELECT $1 + 41").await.unwrap();
    a.batch_execute("CREATE TEMP TABLE lt_temp AS SELECT 5 AS v").await.unwrap();
    a.batch_execute("SET lsnpooltest.session_var = 'kept'").await.unwrap();
    let pid = a.pid().await;
    for i in 0..5 {
        assert_eq!(a.simple_one("SHOW search_path").await.unwrap(), Some(format!("{schema}, public")), "round {i}");
        assert_eq!(a.simple_one("EXECUTE lt_plan(1)").await.unwrap().as_deref(), Some("42"));
        assert_eq!(a.simple_one("SELECT v FROM lt_temp").await.unwrap().as_deref(), Some("5"));
        assert_eq!(a.simple_one("SELECT current_setting('lsnpooltest.session_var')").await.unwrap().as_deref(), Some("kept"));
        assert_eq!(a.pid().await, pid, "session mode keeps one server connection per client");
        a.batch_execute("BEGIN; SELECT 1; COMMIT").await.unwrap();
    }
    drop(a);

    // The next client (pool size 1: the same server connection, after DISCARD ALL).
    let b = within(15.0, "second client", async {
        loop {
            let b = p.app().await;
            match tokio::time::timeout(Duration::from_secs(12), b.simple_one("SELECT 1")).await {
                Ok(Ok(_)) => break b,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    let b_pid = b.pid().await;
    eprintln!("server pid for A: {pid}, for B: {b_pid}");
    assert_eq!(b.simple_one("SHOW search_path").await.unwrap().as_deref(), Some("\"$user\", public"));
    let e = b.simple_one("EXECUTE lt_plan(1)").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("26000"), "A's PREPARE leaked: {}", db_message(&e));
    let e = b.simple_one("SELECT v FROM lt_temp").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42P01"), "A's temp table leaked: {}", db_message(&e));
    assert_eq!(b.simple_one("SELECT current_setting('lsnpooltest.session_var', true)").await.unwrap().unwrap_or_default(), "");
    assert_eq!(b.simple_one("SELECT count(*) FROM pg_prepared_statements WHERE name = 'lt_plan' OR statement LIKE '%lt_temp%'").await.unwrap().as_deref(), Some("0"));
}

/// A client's server connection (idle, between transactions) is terminated: the client's
/// next query must not hang, and new clients work right after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_terminated_between_transactions() {
    let p = PoolerOpts::primary_only().pool_size(1).start();
    let a = p.app().await;
    let st = a.prepare("SELECT $1::int + 1").await.unwrap();
    let pid = a.pid().await;
    terminate(pid).await;
    // Either an error or a retry on a fresh connection is fine; a hang is not.
    match within(15.0, "A's query after its server was terminated", a.query_one(&st, &[&1i32])).await {
        Ok(r) => assert_eq!(r.get::<_, i32>(0), 2),
        Err(e) => eprintln!("A's query failed (acceptable): {}", db_message(&e)),
    }
    let c = p.app().await;
    let r = within(15.0, "new client after server termination", c.query_one("SELECT pg_backend_pid(), 'fresh'::text", &[]))
        .await
        .unwrap_or_else(|e| panic!("a new client must work right after a server was terminated: {}", db_message(&e)));
    assert_ne!(r.get::<_, i32>(0), pid);
    assert_eq!(r.get::<_, String>(1), "fresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_terminated_inside_a_transaction() {
    let p = PoolerOpts::primary_only().pool_size(1).start();
    let a = p.app().await;
    a.batch_execute("BEGIN").await.unwrap();
    let pid = a.pid().await;
    terminate(pid).await;
    let r = within(15.0, "A's query after its server was terminated mid-transaction", a.query_one("SELECT 1", &[])).await;
    let e = r.expect_err("the transaction is gone: the client must get an error");
    eprintln!("A got: {}", db_message(&e));
    if let Some(code) = sqlstate(&e) {
        assert!(["57P01", "08006", "08003", "08000"].contains(&code.as_str()), "unexpected SQLSTATE: {}", db_message(&e));
    }
    let c = p.app().await;
    let r = within(15.0, "new client", c.query_one("SELECT 'fresh'::text", &[]))
        .await
        .unwrap_or_else(|e| panic!("a new client must work right after: {}", db_message(&e)));
    assert_eq!(r.get::<_, String>(0), "fresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_terminated_mid_query() {
    let p = PoolerOpts::primary_only().pool_size(1).start();
    let marker = unique("lt_term");
    let a = std::sync::Arc::new(p.app().await);
    let a2 = a.clone();
    let sql = format!("SELECT pg_sleep(20) /* {marker} */");
    let running = tokio::spawn(async move { a2.batch_execute(&sql).await });
    let pid = wait_for_backend(&format!("query LIKE '%{marker}%' AND state = 'active' AND pid <> pg_backend_pid()")).await;
    terminate(pid).await;
    let r = within(10.0, "the running query to fail", running).await.unwrap();
    let e = r.expect_err("terminated mid-query");
    eprintln!("A got: {}", db_message(&e));
    if let Some(code) = sqlstate(&e) {
        assert!(["57P01", "08006", "08003", "08000"].contains(&code.as_str()), "unexpected SQLSTATE: {}", db_message(&e));
    }
    let c = p.app().await;
    let r = within(15.0, "new client", c.query_one("SELECT 'fresh'::text", &[]))
        .await
        .unwrap_or_else(|e| panic!("a new client must work right after: {}", db_message(&e)));
    assert_eq!(r.get::<_, String>(0), "fresh");
}

/// A client that disconnects in the middle of COPY FROM STDIN: nothing is committed and the
/// next client gets a clean server connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_eof_mid_copy() {
    let p = PoolerOpts::primary_only().pool_size(1).start();
    let t = unique("lt_copyeof");
    create_table(&t, "id int primary key").await;
    let mut a = Raw::login(p.port, "app", "app").await;
    let mut f = raw::Fe::new();
    f.query(&format!("COPY {t} FROM STDIN"));
    a.send_fe(&mut f).await;
    let m = a.recv().await;
    assert_eq!(m.tag, b'G', "CopyInResponse expected: {m:?}");
    let mut data = Vec::new();
    for i in 0..100 {
        let row = format!("{i}\n");
        data.push(b'd');
        data.extend_from_slice(&((row.len() + 4) as i32).to_be_bytes());
        data.extend_from_slice(row.as_bytes());
    }
    a.send(&data).await;
    drop(a); // EOF mid-COPY, no CopyDone/CopyFail
    next_client_sees_clean_server(&p, &t).await;
    drop_table(&t).await;
}

/// A client killed while its statement runs, inside a transaction holding a row lock: lsnpool
/// cancels the statement, so the lock is free within seconds, not when `pg_sleep(30)` ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_clients_statement_is_cancelled_and_its_lock_freed() {
    let p = PoolerOpts::primary_only().pool_size(2).start();
    let t = unique("lt_lock");
    create_table(&t, "id int primary key, v int").await;
    primary().await.batch_execute(&format!("INSERT INTO {t} VALUES (1, 0)")).await.unwrap();
    let marker = unique("lt_cancel");
    let a = p.app().await;
    a.batch_execute(&format!("BEGIN; SELECT v FROM {t} WHERE id = 1 FOR UPDATE")).await.unwrap();
    kill_during_sleep(a, 30, &marker).await;
    let b = p.app().await;
    let started = std::time::Instant::now();
    let updated = within(8.0, "another client to take the row lock", b.execute(&format!("UPDATE {t} SET v = 1 WHERE id = 1"), &[]))
        .await
        .unwrap_or_else(|e| panic!("{}", db_message(&e)));
    assert_eq!(updated, 1);
    eprintln!("the lock was free after {:?}", started.elapsed());
    terminate_marked(&marker).await;
    drop_table(&t).await;
}
