//! Protocol fidelity through lsnpool with tokio-postgres: simple, extended and named prepared
//! statements, many clients sharing a small pool, errors in transactions, isolation.

mod common;

use common::*;
use std::collections::HashSet;
use std::sync::Arc;
use tokio_postgres::SimpleQueryMessage;

fn simple_rows(msgs: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect()),
            _ => None,
        })
        .collect()
}

fn command_counts(msgs: &[SimpleQueryMessage]) -> Vec<u64> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_with_several_statements() {
    let p = PoolerOpts::primary_only().pool_size(2).start();
    let c = p.app().await;
    let t = unique("lt_multi");
    let sql = format!(
        "CREATE TABLE {t} (id int primary key, v text); \
         INSERT INTO {t} VALUES (1, 'a'), (2, 'b'), (3, 'c'); \
         SELECT 1 AS one, 'two' AS two; \
         SELECT id, v FROM {t} ORDER BY id; \
         UPDATE {t} SET v = v || '!' WHERE id >= 2; \
         DROP TABLE {t}"
    );
    let msgs = within(20.0, "multi-statement simple query", c.simple_query(&sql)).await.expect("multi-statement query");
    let rows = simple_rows(&msgs);
    assert_eq!(
        rows,
        vec![
            vec![Some("1".into()), Some("two".into())],
            vec![Some("1".into()), Some("a".into())],
            vec![Some("2".into()), Some("b".into())],
            vec![Some("3".into()), Some("c".into())],
        ]
    );
    // CREATE, INSERT 3, SELECT 1, SELECT 3, UPDATE 2, DROP
    assert_eq!(command_counts(&msgs), vec![0, 3, 1, 3, 2, 0]);
    // The whole string ran as one implicit transaction, and the connection is usable after it.
    assert_eq!(c.simple_one("SELECT 'after'").await.unwrap().as_deref(), Some("after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_query_with_parameters() {
    let p = PoolerOpts::primary_only().pool_size(2).start();
    let c = p.app().await;
    let row = within(10.0, "extended query", c.query_one("SELECT $1::int + $2::int, upper($3::text), $4::text IS NULL, $5::bytea", &[&40i32, &2i32, &"hello", &None::<&str>, &vec![0u8, 1, 255]]))
        .await
        .expect("extended query");
    assert_eq!(row.get::<_, i32>(0), 42);
    assert_eq!(row.get::<_, String>(1), "HELLO");
    assert!(row.get::<_, bool>(2));
    assert_eq!(row.get::<_, Vec<u8>>(3), vec![0u8, 1, 255]);

    // Many rows through the extended protocol.
    let rows = c.query("SELECT g, md5(g::text) FROM generate_series(1, $1::int) g", &[&5000i32]).await.unwrap();
    assert_eq!(rows.len(), 5000);
    assert_eq!(rows[4999].get::<_, i32>(0), 5000);
    assert_eq!(rows[0].get::<_, String>(1), "c4ca4238a0b923820dcc509a6f75849b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_prepared_statement_used_many_times() {
    let p = PoolerOpts::primary_only().pool_size(2).start();
    let c = p.app().await;
    let st = c.prepare("SELECT $1::int * 2, $2::text || '-' || $1::int").await.expect("prepare");
    for i in 0..300i32 {
        let row = c.query_one(&st, &[&i, &"k"]).await.unwrap_or_else(|e| panic!("execution {i}: {}", db_message(&e)));
        assert_eq!(row.get::<_, i32>(0), i * 2);
        assert_eq!(row.get::<_, String>(1), format!("k-{i}"));
    }
    // And inside one explicit transaction.
    let mut c = c;
    let tx = c.transaction().await.unwrap();
    for i in 0..50i32 {
        let row = tx.query_one(&st, &[&i, &"t"]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i * 2);
    }
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_share_a_pool_of_three() {
    const CLIENTS: i32 = 50;
    const ROUNDS: i32 = 8;
    let p = Arc::new(PoolerOpts::primary_only().pool_size(3).query_wait_timeout("30s").start());
    let t = unique("lt_fifty");
    create_table(&t, "id int primary key, n int not null").await;
    primary().await.execute(&format!("INSERT INTO {t} SELECT g, 0 FROM generate_series(1, {CLIENTS}) g"), &[]).await.unwrap();

    let mut tasks = Vec::new();
    for id in 1..=CLIENTS {
        let p = p.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = p.app().await;
            let upd = c.prepare(&format!("UPDATE {t} SET n = n + 1 WHERE id = $1")).await.unwrap();
            let sel = c.prepare(&format!("SELECT n, pg_backend_pid() FROM {t} WHERE id = $1")).await.unwrap();
            for round in 1..=ROUNDS {
                let tx = c.transaction().await.unwrap();
                let pid_at_begin: i32 = tx.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
                assert_eq!(tx.execute(&upd, &[&id]).await.unwrap(), 1);
                let row = tx.query_one(&sel, &[&id]).await.unwrap();
                assert_eq!(row.get::<_, i32>(0), round, "client {id} round {round} sees its own update");
                // One transaction, one server connection.
                assert_eq!(row.get::<_, i32>(1), pid_at_begin, "client {id}: transaction moved between server connections");
                tx.commit().await.unwrap();
            }
            // Mix in simple-protocol transactions too.
            let msgs = c
                .simple_query(&format!("BEGIN; UPDATE {t} SET n = n + 100 WHERE id = {id}; SELECT n FROM {t} WHERE id = {id}; COMMIT"))
                .await
                .unwrap();
            assert_eq!(simple_rows(&msgs), vec![vec![Some((ROUNDS + 100).to_string())]]);
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        within(120.0, "client task", task).await.unwrap_or_else(|e| panic!("client task {i} failed: {e}"));
    }
    let rows = primary().await.query(&format!("SELECT id, n FROM {t} ORDER BY id"), &[]).await.unwrap();
    assert_eq!(rows.len(), CLIENTS as usize);
    for r in rows {
        assert_eq!(r.get::<_, i32>(1), ROUNDS + 100, "row {} has a wrong count", r.get::<_, i32>(0));
    }
    // Never more than pool_size server connections for this user.
    drop_table(&t).await;
}

/// A statement prepared while the client was on one server connection keeps working when a
/// later transaction of the client lands on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statement_follows_client_to_other_server_connections() {
    let p = Arc::new(PoolerOpts::primary_only().pool_size(2).query_wait_timeout("30s").start());
    let a = p.app().await;
    let st = a.prepare("SELECT pg_backend_pid(), $1::int + 1000").await.unwrap();
    let (pid0, v0): (i32, i32) = {
        let r = a.query_one(&st, &[&1i32]).await.unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(v0, 1001);

    // Background churn on the same pool, with its own prepared statements.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Churners that have run at least once: the loop below must not end before all have
    // (their SCRAM logins are slow in debug builds).
    let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut churners = Vec::new();
    for k in 0..3 {
        let p = p.clone();
        let stop = stop.clone();
        let running = running.clone();
        churners.push(tokio::spawn(async move {
            let c = p.app().await;
            let s = c.prepare("SELECT $1::int * 3").await.unwrap();
            let mut n = 0i32;
            while n == 0 || !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = c.query_one(&s, &[&(n + k)]).await.unwrap();
                assert_eq!(r.get::<_, i32>(0), (n + k) * 3);
                if n == 0 {
                    running.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                n += 1;
            }
            n
        }));
    }

    let b = p.app().await;
    let mut pids = HashSet::from([pid0]);
    // Until A's statement has run on both server connections (and at least 20 times).
    for i in 0..2000i32 {
        if i >= 20 && pids.len() >= 2 && running.load(std::sync::atomic::Ordering::Relaxed) == 3 {
            break;
        }
        // B holds a server connection for a while; A's next execution must run elsewhere.
        b.batch_execute("BEGIN").await.unwrap();
        let b_pid = b.pid().await;
        let r = a.query_one(&st, &[&i]).await.unwrap_or_else(|e| panic!("execution {i} of A's statement: {}", db_message(&e)));
        let a_pid: i32 = r.get(0);
        assert_eq!(r.get::<_, i32>(1), i + 1000);
        assert_ne!(a_pid, b_pid, "A ran on the server connection B holds in a transaction");
        pids.insert(a_pid);
        b.batch_execute("COMMIT").await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in churners {
        let n = within(30.0, "churner", c).await.unwrap();
        assert!(n > 0);
    }
    assert!(pids.len() >= 2, "A's statement always ran on the same server connection: {pids:?}");
}

/// tokio-postgres closes a statement when it is dropped; preparing and dropping repeatedly,
/// including the same text again, keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_dropped_and_prepared_again() {
    let p = PoolerOpts::primary_only().pool_size(1).start();
    let c = p.app().await;
    for i in 0..100i32 {
        let st = c.prepare("SELECT $1::int + 7").await.unwrap_or_else(|e| panic!("prepare {i}: {}", db_message(&e)));
        let r = c.query_one(&st, &[&i]).await.unwrap();
        assert_eq!(r.get::<_, i32>(0), i + 7);
        let other = c.prepare(&format!("SELECT $1::int + {i}")).await.unwrap();
        assert_eq!(c.query_one(&other, &[&1i32]).await.unwrap().get::<_, i32>(0), i + 1);
        drop(st);
        drop(other);
    }
    // Only statements still held by the client exist in the client's view: the closes went through.
    assert_eq!(c.query_one("SELECT 1::int", &[]).await.unwrap().get::<_, i32>(0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_inside_transaction_then_rollback() {
    let p = PoolerOpts::primary_only().pool_size(1).start();
    let t = unique("lt_err");
    create_table(&t, "id int primary key").await;
    let mut c = p.app().await;
    {
        let tx = c.transaction().await.unwrap();
        tx.execute(&format!("INSERT INTO {t} VALUES (1)"), &[]).await.unwrap();
        let e = tx.query_one("SELECT 1/0", &[]).await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("22012"), "{}", db_message(&e));
        let e = tx.query_one("SELECT 1", &[]).await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("25P02"), "aborted transaction: {}", db_message(&e));
        tx.rollback().await.unwrap();
    }
    // Simple protocol: error mid-transaction, then ROLLBACK.
    let e = c.batch_execute(&format!("BEGIN; INSERT INTO {t} VALUES (2); INSERT INTO {t} VALUES (2)")).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("23505"), "{}", db_message(&e));
    let e = c.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("25P02"));
    c.batch_execute("ROLLBACK").await.unwrap();

    // The connection works and is not in a transaction; nothing was committed.
    let n: i64 = c.query_one(&format!("SELECT count(*) FROM {t}"), &[]).await.unwrap().get(0);
    assert_eq!(n, 0);
    assert_eq!(c.simple_one("SELECT now() = statement_timestamp()").await.unwrap().as_deref(), Some("t"));
    c.execute(&format!("INSERT INTO {t} VALUES (3)"), &[]).await.unwrap();
    let n: i64 = primary().await.query_one(&format!("SELECT count(*) FROM {t}"), &[]).await.unwrap().get(0);
    assert_eq!(n, 1);

    // An error outside a transaction (autocommit) leaves the connection usable too.
    let e = c.query("SELECT * FROM no_such_table_anywhere", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42P01"));
    assert_eq!(c.query_one("SELECT 5::int", &[]).await.unwrap().get::<_, i32>(0), 5);
    drop_table(&t).await;
}

/// A client's open transaction is never visible to or shared with another client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_transactions_are_isolated_between_clients() {
    let p = PoolerOpts::primary_only().pool_size(3).start();
    let t = unique("lt_iso");
    create_table(&t, "id int primary key, who text").await;
    let a = p.app().await;
    let b = p.app().await;
    let c = p.app().await;

    a.batch_execute(&format!("BEGIN; INSERT INTO {t} VALUES (1, 'a')")).await.unwrap();
    let a_pid = a.pid().await;
    b.batch_execute(&format!("BEGIN; INSERT INTO {t} VALUES (2, 'b')")).await.unwrap();
    let b_pid = b.pid().await;
    assert_ne!(a_pid, b_pid, "two open transactions share a server connection");

    for _ in 0..10 {
        // C runs autocommit statements on the remaining connection, each in its own transaction.
        let n: i64 = c.query_one(&format!("SELECT count(*) FROM {t}"), &[]).await.unwrap().get(0);
        assert_eq!(n, 0, "C sees uncommitted rows");
        let c_pid = c.pid().await;
        assert!(c_pid != a_pid && c_pid != b_pid, "C ran on a connection held by an open transaction");
        assert_eq!(c.simple_one("SELECT now() = statement_timestamp()").await.unwrap().as_deref(), Some("t"));
    }
    // Each sees only its own row.
    let rows = a.query(&format!("SELECT who FROM {t}"), &[]).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>(), vec!["a"]);
    let rows = b.query(&format!("SELECT who FROM {t}"), &[]).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>(), vec!["b"]);
    assert_eq!(a.pid().await, a_pid);
    assert_eq!(b.pid().await, b_pid);

    a.batch_execute("COMMIT").await.unwrap();
    b.batch_execute("ROLLBACK").await.unwrap();
    let rows = c.query(&format!("SELECT who FROM {t} ORDER BY id"), &[]).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>(), vec!["a"]);

    // Session state set with SET LOCAL stays inside the transaction.
    a.batch_execute("BEGIN; SET LOCAL statement_timeout = '4321ms'").await.unwrap();
    assert_eq!(a.simple_one("SHOW statement_timeout").await.unwrap().as_deref(), Some("4321ms"));
    for _ in 0..5 {
        assert_ne!(c.simple_one("SHOW statement_timeout").await.unwrap().as_deref(), Some("4321ms"));
    }
    a.batch_execute("COMMIT").await.unwrap();
    drop_table(&t).await;
}
