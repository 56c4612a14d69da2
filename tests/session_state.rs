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
