//! Transaction mode: a client's session-level settings follow it from one server connection to
//! the next, and never reach another client (issue 14, item 1).

mod common;

use common::*;

/// Pool of one: every client borrows the very server connection the previous one used.
fn one_connection() -> Pooler {
    PoolerOpts::primary_only().pool_size(1).start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_outside_a_transaction_does_not_reach_other_clients() {
    let p = one_connection();
    let t = unique("ss_ro");
    create_table(&t, "id int").await;
    let a = p.app().await;
    a.batch_execute("SET default_transaction_read_only = on").await.expect("SET");
    a.batch_execute("SET statement_timeout = '1234ms'").await.expect("SET");
    for i in 0..20 {
        let b = p.app().await;
        b.batch_execute(&format!("INSERT INTO {t} VALUES ({i})"))
            .await
            .unwrap_or_else(|e| panic!("client {i} got another client's read-only session: {}", db_message(&e)));
        assert_eq!(b.simple_one("SHOW statement_timeout").await.unwrap().as_deref(), Some("0"), "client {i}");
    }
    // ...while the client that set them keeps them, on whatever connection it gets.
    assert_eq!(a.simple_one("SHOW statement_timeout").await.unwrap().as_deref(), Some("1234ms"));
    let err = a.batch_execute(&format!("INSERT INTO {t} VALUES (99)")).await.expect_err("read-only session");
    assert_eq!(sqlstate(&err).as_deref(), Some("25006"));
    drop_table(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_path_sticks_for_its_client_across_other_clients_transactions() {
    let p = one_connection();
    let schema = unique("ss_schema");
    let setup = primary().await;
    setup
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema} AUTHORIZATION app; \
             CREATE TABLE {schema}.only_here (v int); INSERT INTO {schema}.only_here VALUES (7); \
             ALTER TABLE {schema}.only_here OWNER TO app"
        ))
        .await
        .expect("schema");
    let a = p.app().await;
    a.batch_execute(&format!("SET search_path = {schema}, public")).await.expect("SET search_path");
    let b = p.app().await;
    assert!(b.simple_one("SELECT v FROM only_here").await.is_err(), "search_path leaked to another client");
    assert_eq!(a.simple_one("SELECT v FROM only_here").await.expect("own search_path").as_deref(), Some("7"));
    // Through the extended protocol and set_config too.
    a.query_one("SELECT set_config('work_mem', '7MB', false)", &[]).await.expect("set_config");
    assert_eq!(b.simple_one("SHOW work_mem").await.unwrap().as_deref(), Some("4MB"));
    assert_eq!(a.simple_one("SHOW work_mem").await.unwrap().as_deref(), Some("7MB"));
    // RESET ALL undoes the client's own settings, and only its own.
    a.batch_execute("RESET ALL").await.expect("RESET ALL");
    assert!(a.simple_one("SELECT v FROM only_here").await.is_err(), "RESET ALL kept the search_path");
    let _ = setup.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_is_never_lent_to_another_client() {
    let p = one_connection();
    let role = unique("ss_role");
    let setup = primary().await;
    setup.batch_execute(&format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role} NOLOGIN; GRANT {role} TO postgres")).await.expect("role");
    let a = p.superuser().await;
    a.batch_execute(&format!("SET ROLE {role}")).await.expect("SET ROLE");
    let b = p.superuser().await;
    assert_eq!(b.simple_one("SELECT current_user").await.unwrap().as_deref(), Some("postgres"));
    assert_eq!(a.simple_one("SELECT current_user").await.unwrap().as_deref(), Some(role.as_str()));
    a.batch_execute("RESET ROLE").await.expect("RESET ROLE");
    assert_eq!(a.simple_one("SELECT current_user").await.unwrap().as_deref(), Some("postgres"));
    drop((a, b));
    let _ = setup.batch_execute(&format!("DROP ROLE IF EXISTS {role}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_set_is_forgotten_and_set_local_never_counts() {
    let p = one_connection();
    let a = p.app().await;
    a.batch_execute("BEGIN; SET statement_timeout = '777ms'; ROLLBACK").await.expect("rolled back SET");
    a.batch_execute("BEGIN; SET LOCAL statement_timeout = '888ms'; COMMIT").await.expect("SET LOCAL");
    let b = p.app().await;
    assert_eq!(b.simple_one("SHOW statement_timeout").await.unwrap().as_deref(), Some("0"));
    assert_eq!(a.simple_one("SHOW statement_timeout").await.unwrap().as_deref(), Some("0"));
    // A SET that failed changes nothing.
    assert!(a.batch_execute("SET statement_timeout = 'soon'").await.is_err());
    assert_eq!(a.simple_one("SHOW statement_timeout").await.unwrap().as_deref(), Some("0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_after_a_set_leaves_a_clean_connection() {
    let p = one_connection();
    let a = p.app().await;
    a.batch_execute("SET statement_timeout = '4321ms'").await.expect("SET");
    a.kill().await;
    let b = p.app().await;
    assert_eq!(b.simple_one("SHOW statement_timeout").await.unwrap().as_deref(), Some("0"));
}

// ------------------------------------------------------------------ pinned sessions

use common::raw::{Raw, Read};
use std::time::Duration;

/// LISTEN in transaction mode: the client keeps its server connection (pinned) and gets its
/// notifications while idle; UNLISTEN gives the connection back (issue 14, items 2 and 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_pins_the_connection_and_notifications_arrive_while_idle() {
    let p = PoolerOpts::primary_only().pool_size(1).query_wait_timeout("1s").start();
    let chan = unique("ss_chan");
    let mut a = Raw::login(p.port, "app", "app").await;
    a.simple(&format!("LISTEN {chan}")).await;
    primary().await.batch_execute(&format!("NOTIFY {chan}, 'hello'")).await.expect("NOTIFY");
    match a.read(Duration::from_secs(5)).await {
        Read::Msg(m) => {
            assert_eq!(m.tag, b'A', "expected a NotificationResponse, got {m:?}");
            assert!(String::from_utf8_lossy(&m.body).contains("hello"), "{m:?}");
        }
        Read::Timeout => panic!("no notification while idle"),
        Read::Eof => panic!("the listener's connection was closed"),
    }
    // The one server connection is the listener's: another client waits, and times out.
    let b = p.app().await;
    let err = b.simple_one("SELECT 1").await.expect_err("the pinned connection was lent");
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"));
    a.simple("UNLISTEN *").await;
    assert_eq!(b.simple_one("SELECT 'unpinned'").await.unwrap().as_deref(), Some("unpinned"));
}

/// WITH HOLD cursors, temporary tables, SQL-level prepared statements and advisory locks stay
/// usable across transactions, even where routing would send a read to a replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_objects_follow_their_client_across_transactions() {
    let p = PoolerOpts::new().pool_size(2).start();
    let a = p.app().await;
    a.batch_execute("DECLARE ss_c CURSOR WITH HOLD FOR SELECT g FROM generate_series(1, 5) g").await.expect("DECLARE");
    assert_eq!(a.simple_one("FETCH 2 FROM ss_c").await.unwrap().as_deref(), Some("1"));
    assert_eq!(a.simple_one("FETCH 1 FROM ss_c").await.unwrap().as_deref(), Some("3"));
    a.batch_execute("CLOSE ss_c").await.expect("CLOSE");

    a.batch_execute("CREATE TEMP TABLE ss_t (v int); INSERT INTO ss_t VALUES (7)").await.expect("temp table");
    assert_eq!(a.simple_one("SELECT v FROM ss_t").await.unwrap().as_deref(), Some("7"));
    a.batch_execute("DISCARD TEMP").await.expect("DISCARD TEMP");

    a.batch_execute("PREPARE ss_p AS SELECT 40 + 2").await.expect("PREPARE");
    assert_eq!(a.simple_one("EXECUTE ss_p").await.unwrap().as_deref(), Some("42"));
    a.batch_execute("DEALLOCATE ss_p").await.expect("DEALLOCATE");

    let key = 4_200_000 + i64::from(rand::random::<u16>());
    a.simple_one(&format!("SELECT pg_advisory_lock({key})")).await.expect("lock");
    let b = p.app().await;
    assert_eq!(b.simple_one(&format!("SELECT pg_try_advisory_lock({key})")).await.unwrap().as_deref(), Some("f"));
    a.simple_one(&format!("SELECT pg_advisory_unlock({key})")).await.expect("unlock");
    assert_eq!(b.simple_one(&format!("SELECT pg_try_advisory_lock({key})")).await.unwrap().as_deref(), Some("t"));
    b.simple_one(&format!("SELECT pg_advisory_unlock({key})")).await.expect("unlock");
}
