//! Cancel requests through lsnpool: of a running query, and of a client waiting for a server.

mod common;

use common::*;
use std::time::Duration;
use tokio_postgres::NoTls;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_running_query() {
    let p = PoolerOpts::primary_only().pool_size(2).start();
    let c = p.app().await;
    let token = c.cancel_token();
    let c = std::sync::Arc::new(c);
    let runner = {
        let c = c.clone();
        tokio::spawn(async move { c.query("SELECT pg_sleep(30)", &[]).await })
    };
    // Wait until the query is running on a server.
    wait_for_backend("query = 'SELECT pg_sleep(30)' AND state = 'active'").await;
    token.cancel_query(NoTls).await.expect("send cancel request");
    let r = within(5.0, "cancelled query to end", runner).await.unwrap();
    let e = r.expect_err("pg_sleep(30) must be cancelled");
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"), "{}", db_message(&e));
    // The client still works, and is not in a transaction.
    assert_eq!(c.query_one("SELECT 1::int", &[]).await.unwrap().get::<_, i32>(0), 1);
    assert_eq!(c.simple_one("SELECT now() = statement_timestamp()").await.unwrap().as_deref(), Some("t"));

    // Cancel inside an explicit transaction: the transaction is aborted, ROLLBACK recovers.
    c.batch_execute("BEGIN").await.unwrap();
    let runner = {
        let c = c.clone();
        tokio::spawn(async move { c.batch_execute("SELECT pg_sleep(30)").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel_query(NoTls).await.unwrap();
    let e = within(5.0, "cancelled query in a transaction", runner).await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"));
    let e = c.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("25P02"));
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(c.query_one("SELECT 2::int", &[]).await.unwrap().get::<_, i32>(0), 2);
}

/// A cancel for a client whose transaction has ended reaches nobody: in particular not the
/// client that now uses the same server connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_cancel_does_not_hit_another_client() {
    let p = PoolerOpts::primary_only().pool_size(1).start();
    let a = p.app().await;
    let a_token = a.cancel_token();
    a.query_one("SELECT 1", &[]).await.unwrap();
    let b = std::sync::Arc::new(p.app().await);
    let runner = {
        let b = b.clone();
        tokio::spawn(async move { b.query_one("SELECT pg_sleep(1.5)::text", &[]).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A is idle: its cancel must not cancel B's query on the (only) server connection.
    a_token.cancel_query(NoTls).await.unwrap();
    let r = within(10.0, "B's query", runner).await.unwrap();
    r.unwrap_or_else(|e| panic!("A's cancel hit B: {}", db_message(&e)));
    // A cancel with a wrong secret / unknown key does nothing either (nothing to observe but no crash).
    assert_eq!(a.query_one("SELECT 3::int", &[]).await.unwrap().get::<_, i32>(0), 3);
}

/// Pool size 1 held by A's open transaction; B waits for a server; cancelling B ends its wait
/// with 57014, and A is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_waiting_for_a_server() {
    let p = PoolerOpts::primary_only().pool_size(1).query_wait_timeout("30s").start();
    let a = p.app().await;
    a.batch_execute("BEGIN").await.unwrap();
    let a_pid: i32 = a.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);

    let b = std::sync::Arc::new(p.app().await);
    let token = b.cancel_token();
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.simple_query("SELECT 'b ran'").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "B must be waiting for the only server connection");
    // Cancel; repeat a few times in case the first one raced with B starting to wait.
    let mut waiter = waiter;
    let r = within(10.0, "B to be cancelled", async {
        loop {
            token.cancel_query(NoTls).await.unwrap();
            match tokio::time::timeout(Duration::from_millis(1000), &mut waiter).await {
                Ok(r) => break r.unwrap(),
                Err(_) => continue,
            }
        }
    })
    .await;
    let e = r.expect_err("B's query must fail when cancelled while waiting");
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"), "{}", db_message(&e));

    // A's transaction is intact.
    assert_eq!(a.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get::<_, i32>(0), a_pid);
    assert_eq!(a.simple_one("SELECT now() = statement_timestamp()").await.unwrap().as_deref(), Some("f"), "A is still in its transaction");
    a.batch_execute("COMMIT").await.unwrap();

    // B works again once the server is free.
    let msgs = within(10.0, "B after cancel", b.simple_query("SELECT 'b again'")).await.unwrap();
    assert!(msgs.iter().any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("b again"))));
}
