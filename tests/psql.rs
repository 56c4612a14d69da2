//! psql through lsnpool: multi-statement strings, \copy both ways, notices, and startup
//! parameters (application_name, options) applied on every server connection.

mod common;

use common::*;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_multi_statement() {
    let p = PoolerOpts::primary_only().pool_size(2).start();
    let out = p.psql("app", "app", "", &["-qAt", "-c", "select 1; select 2"], None).await.must_succeed();
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), vec!["1", "2"], "{out:?}");

    // Several -c in one session, with a transaction spanning them.
    let t = unique("lt_psql_multi");
    let out = p
        .psql(
            "app",
            "app",
            "",
            &[
                "-qAt",
                "-c",
                &format!("create table {t} (id int); insert into {t} values (1), (2)"),
                "-c",
                &format!("begin; insert into {t} values (3); select count(*) from {t}"),
                "-c",
                &format!("rollback; select count(*) from {t}; drop table {t}"),
            ],
            None,
        )
        .await
        .must_succeed();
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), vec!["3", "2"], "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_copy_round_trip() {
    let p = PoolerOpts::primary_only().pool_size(2).start();
    let t = unique("lt_copy");
    create_table(&t, "id int primary key, name text, note text").await;
    const ROWS: usize = 3000;
    let mut data = String::new();
    for i in 1..=ROWS {
        let note = if i % 7 == 0 { "\\N".to_string() } else { format!("tab\\there {i} é ✓") };
        data.push_str(&format!("{i}\tname-{i}\t{note}\n"));
    }
    let out = p
        .psql("app", "app", "", &["-c", &format!("\\copy {t} from stdin")], Some(data.clone().into_bytes()))
        .await
        .must_succeed();
    assert!(out.stdout.contains(&format!("COPY {ROWS}")), "{out:?}");

    let c = p.app().await;
    let n: i64 = c.query_one(&format!("SELECT count(*) FROM {t}"), &[]).await.unwrap().get(0);
    assert_eq!(n, ROWS as i64);
    let nulls: i64 = c.query_one(&format!("SELECT count(*) FROM {t} WHERE note IS NULL"), &[]).await.unwrap().get(0);
    assert_eq!(nulls, (ROWS / 7) as i64);

    let out = p
        .psql("app", "app", "", &["-c", &format!("\\copy (select * from {t} order by id) to stdout")], None)
        .await
        .must_succeed();
    assert_eq!(out.stdout, data, "COPY TO STDOUT returns exactly what COPY FROM STDIN loaded");

    // Plain COPY ... TO STDOUT (not \copy) too.
    let out = p
        .psql("app", "app", "", &["-c", &format!("copy (select id from {t} where id <= 3 order by id) to stdout")], None)
        .await
        .must_succeed();
    assert_eq!(out.stdout, "1\n2\n3\n");

    // A failing COPY FROM (duplicate key) leaves nothing half-done and the pooler usable.
    let out = p.psql("app", "app", "", &["-c", &format!("\\copy {t} from stdin")], Some(b"5\tdup\tx\n".to_vec())).await;
    assert!(!out.success(), "duplicate key must fail: {out:?}");
    assert!(out.stderr.contains("duplicate key"), "{out:?}");
    let n: i64 = c.query_one(&format!("SELECT count(*) FROM {t}"), &[]).await.unwrap().get(0);
    assert_eq!(n, ROWS as i64);
    drop_table(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_notice_passthrough() {
    let p = PoolerOpts::primary_only().pool_size(1).start();
    let out = p
        .psql(
            "app",
            "app",
            "",
            &["-c", "DO $$ BEGIN RAISE NOTICE 'hello from the server'; RAISE WARNING 'careful %', 42; END $$", "-c", "select 'after'"],
            None,
        )
        .await
        .must_succeed();
    assert!(out.stderr.contains("NOTICE:  hello from the server"), "{out:?}");
    assert!(out.stderr.contains("WARNING:  careful 42"), "{out:?}");
    assert!(out.stdout.contains("after"), "{out:?}");
}

/// application_name and options from the connection string are in force on every server
/// connection the client's transactions run on, while other clients with other settings
/// churn the same small pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_follow_the_client() {
    let p = Arc::new(PoolerOpts::primary_only().pool_size(2).query_wait_timeout("30s").start());

    let mut tasks = Vec::new();
    for k in 0..4 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let app = unique(&format!("lt_app{k}"));
            let timeout_ms = 1001 + k; // not a whole second: SHOW would say "1s"
            let c = p
                .connect_dsn(&format!("application_name={app} options='-c statement_timeout={timeout_ms}'"))
                .await
                .unwrap_or_else(|e| panic!("connect: {}", db_message(&e)));
            let mut pids = std::collections::HashSet::new();
            for i in 0..25 {
                let r = c
                    .query_one("SELECT current_setting('application_name'), current_setting('statement_timeout'), pg_backend_pid()", &[])
                    .await
                    .unwrap();
                assert_eq!(r.get::<_, String>(0), app, "client {k} round {i}: application_name");
                assert_eq!(r.get::<_, String>(1), format!("{timeout_ms}ms"), "client {k} round {i}: statement_timeout");
                pids.insert(r.get::<_, i32>(2));
                // Simple protocol too.
                assert_eq!(c.simple_one("SHOW application_name").await.unwrap(), Some(app.clone()));
                if i % 5 == 0 {
                    // Hold a connection in a transaction now and then so others must use the other one.
                    c.batch_execute("BEGIN; SELECT pg_sleep(0.01)").await.unwrap();
                    assert_eq!(c.simple_one("SHOW statement_timeout").await.unwrap(), Some(format!("{timeout_ms}ms")));
                    c.batch_execute("COMMIT").await.unwrap();
                }
            }
            pids.len()
        }));
    }
    let mut max_pids = 0;
    for t in tasks {
        max_pids = max_pids.max(within(60.0, "client task", t).await.unwrap());
    }
    assert!(max_pids >= 2, "no client ever moved between server connections; the test proves nothing");

    // psql with the same kind of connection string.
    let out = p
        .psql("app", "app", "application_name=psql_lt options='-c statement_timeout=1234'", &["-qAt", "-c", "SHOW statement_timeout", "-c", "SELECT current_setting('application_name')"], None)
        .await
        .must_succeed();
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), vec!["1234ms", "psql_lt"], "{out:?}");

    // A client without those settings does not inherit them from a previous user of the connection.
    let plain = p.app().await;
    for _ in 0..5 {
        let r = plain.query_one("SELECT current_setting('application_name'), current_setting('statement_timeout')", &[]).await.unwrap();
        assert!(!r.get::<_, String>(0).starts_with("lt_app") && r.get::<_, String>(0) != "psql_lt", "inherited application_name {:?}", r.get::<_, String>(0));
        assert_eq!(r.get::<_, String>(1), "0", "inherited statement_timeout");
    }
}
