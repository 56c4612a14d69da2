//! Prepared-statement edge cases in transaction mode, driven with raw protocol messages.

mod common;

use common::raw::{first_error, rows0, tags, Fe, Raw};
use common::*;
use std::time::Duration;

fn err_code(msgs: &[raw::Msg]) -> String {
    first_error(msgs).and_then(|m| m.code()).unwrap_or_else(|| panic!("expected an ErrorResponse, got {msgs:?}"))
}

use common::raw;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_of_unknown_statement_errors_without_hanging() {
    let p = PoolerOpts::primary_only().pool_size(1).start();
    let mut c = Raw::login(p.port, "app", "app").await;

    // Describe + Sync.
    c.send_fe(Fe::new().describe_statement("no_such_stmt").sync()).await;
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "EZ", "{msgs:?}");
    assert_eq!(err_code(&msgs), "26000");
    assert!(msgs[0].message().unwrap().contains("no_such_stmt"), "{msgs:?}");
    assert_eq!(msgs[1].body, b"I");

    // Describe + Flush: the error arrives before any Sync, then Sync gets ReadyForQuery.
    c.send_fe(Fe::new().describe_statement("no_such_stmt_2").flush()).await;
    let m = c.recv().await;
    assert_eq!(m.tag, b'E', "{m:?}");
    assert_eq!(m.code().as_deref(), Some("26000"));
    c.send_fe(Fe::new().sync()).await;
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "Z", "{msgs:?}");

    // Describe of an unknown portal too.
    c.send_fe(Fe::new().describe_portal("no_such_portal").sync()).await;
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "EZ", "{msgs:?}");
    assert_eq!(err_code(&msgs), "34000");

    // Still usable.
    assert_eq!(rows0(&c.simple("SELECT 'alive'").await), vec!["alive"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_parse_in_pipeline_is_skipped_to_sync_and_forgotten() {
    let p = PoolerOpts::primary_only().pool_size(1).start();
    let mut c = Raw::login(p.port, "app", "app").await;
    let mut f = Fe::new();
    f.parse("bad_stmt", "SELEC 1 FROM nowhere", &[]).bind("", "bad_stmt", &[]).execute("", 0).sync();
    f.parse("good_stmt", "SELECT 42::int", &[]).bind("", "good_stmt", &[]).execute("", 0).sync();
    c.send_fe(&mut f).await;
    let first = c.until_ready().await;
    assert_eq!(tags(&first), "EZ", "the failed segment: {first:?}");
    assert_eq!(err_code(&first), "42601");
    let second = c.until_ready().await;
    assert_eq!(tags(&second), "12DCZ", "the good segment: {second:?}");
    assert_eq!(rows0(&second), vec!["42"]);

    // The bad name was never created.
    c.send_fe(Fe::new().bind("", "bad_stmt", &[]).execute("", 0).sync()).await;
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "EZ", "{msgs:?}");
    assert_eq!(err_code(&msgs), "26000");
    assert!(msgs[0].message().unwrap().contains("does not exist"), "{msgs:?}");
    c.send_fe(Fe::new().describe_statement("bad_stmt").sync()).await;
    assert_eq!(err_code(&c.until_ready().await), "26000");

    // The good one lives on, in later transactions.
    c.send_fe(Fe::new().bind("", "good_stmt", &[]).execute("", 0).sync()).await;
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "2DCZ", "{msgs:?}");
    assert_eq!(rows0(&msgs), vec!["42"]);

    // The failed name can be prepared for real afterwards.
    c.send_fe(Fe::new().parse("bad_stmt", "SELECT 'fixed'::text", &[]).bind("", "bad_stmt", &[]).execute("", 0).sync()).await;
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "12DCZ", "{msgs:?}");
    assert_eq!(rows0(&msgs), vec!["fixed"]);
}

/// After an error the server skips every message up to Sync, later Parses included: their
/// names must not exist afterwards, even when the pooler already has the same text prepared
/// on that server connection (so it does not forward the Parse as such).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parses_skipped_after_an_error_are_not_remembered() {
    let p = PoolerOpts::primary_only().pool_size(1).start();
    let mut c = Raw::login(p.port, "app", "app").await;
    // Warm up: the text "SELECT 7::int" prepared on the (only) server connection.
    c.send_fe(Fe::new().parse("warm", "SELECT 7::int", &[]).bind("", "warm", &[]).execute("", 0).sync()).await;
    assert_eq!(rows0(&c.until_ready().await), vec!["7"]);

    // Error first, then Parses of a known text and of a new text, all before one Sync.
    let mut f = Fe::new();
    f.parse("", "SELECT 1/g FROM generate_series(0, 0) g", &[]).bind("", "", &[]).execute("", 0);
    f.parse("skipped_known", "SELECT 7::int", &[]);
    f.parse("skipped_new", "SELECT 8::int", &[]);
    f.sync();
    c.send_fe(&mut f).await;
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "12EZ", "{msgs:?}");
    assert_eq!(err_code(&msgs), "22012");

    for name in ["skipped_known", "skipped_new"] {
        c.send_fe(Fe::new().bind("", name, &[]).execute("", 0).sync()).await;
        let msgs = c.until_ready().await;
        assert_eq!(
            tags(&msgs),
            "EZ",
            "statement {name:?} was skipped by the server after an error, so PostgreSQL would answer 26000; got {msgs:?}"
        );
        assert_eq!(err_code(&msgs), "26000");
    }
    // "warm" is untouched.
    c.send_fe(Fe::new().bind("", "warm", &[]).execute("", 0).sync()).await;
    assert_eq!(rows0(&c.until_ready().await), vec!["7"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_without_sync_gets_answers() {
    flush_without_sync(PoolerOpts::primary_only()).await;
}

/// Routed to a replica, the reads are held back for the 25006 retry until their first result:
/// a Flush must release them, or asyncpg waits forever (issue 14, item 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_without_sync_gets_answers_from_a_replica() {
    flush_without_sync(PoolerOpts::new()).await;
}

async fn flush_without_sync(opts: PoolerOpts) {
    let p = opts.pool_size(1).start();
    let mut c = Raw::login(p.port, "app", "app").await;
    // asyncpg's prepare: Parse + Describe + Flush, then it waits for the answers.
    c.send_fe(Fe::new().parse("apg_1", "SELECT $1::int + 1 AS x", &[]).describe_statement("apg_1").flush()).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(c.recv().await);
    }
    assert_eq!(tags(&got), "1tT", "{got:?}");
    // Then Bind/Execute + Flush, still without Sync.
    c.send_fe(Fe::new().bind("", "apg_1", &[Some(b"41")]).execute("", 0).flush()).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(c.recv().await);
    }
    assert_eq!(tags(&got), "2DC", "{got:?}");
    assert_eq!(rows0(&got), vec!["42"]);
    // Nothing else arrives until Sync.
    match c.read(Duration::from_millis(300)).await {
        raw::Read::Timeout => {}
        raw::Read::Msg(m) => panic!("unexpected message before Sync: {m:?}"),
        raw::Read::Eof => panic!("connection closed"),
    }
    c.send_fe(Fe::new().sync()).await;
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "Z", "{msgs:?}");

    // The statement follows the client into later transactions.
    c.send_fe(Fe::new().bind("", "apg_1", &[Some(b"1")]).execute("", 0).sync()).await;
    assert_eq!(rows0(&c.until_ready().await), vec!["2"]);

    // A Flush alone, with nothing outstanding, is harmless.
    c.send_fe(Fe::new().flush()).await;
    assert_eq!(rows0(&c.simple("SELECT 'ok'").await), vec!["ok"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_mib_parse_and_bind() {
    let p = PoolerOpts::primary_only().pool_size(2).start();
    let mut c = Raw::login(p.port, "app", "app").await;
    const N: usize = 3 * 1024 * 1024;
    let big = "x".repeat(N);

    // A 3 MiB query text in a named Parse.
    let sql = format!("SELECT length('{big}'::text)");
    c.send_fe(Fe::new().parse("big_text", &sql, &[]).bind("", "big_text", &[]).execute("", 0).sync()).await;
    let msgs = within(30.0, "3 MiB Parse", c.until_ready()).await;
    assert_eq!(tags(&msgs), "12DCZ", "{msgs:?}");
    assert_eq!(rows0(&msgs), vec![N.to_string()]);

    // A 3 MiB parameter in a Bind.
    let big_param = "y".repeat(N);
    c.send_fe(Fe::new().parse("big_param", "SELECT length($1::text), md5($1::text)", &[]).bind("", "big_param", &[Some(big_param.as_bytes())]).execute("", 0).sync()).await;
    let msgs = within(30.0, "3 MiB Bind", c.until_ready()).await;
    assert_eq!(tags(&msgs), "12DCZ", "{msgs:?}");
    let row = msgs.iter().find(|m| m.tag == b'D').unwrap().columns();
    assert_eq!(row[0].as_deref(), Some(N.to_string().as_bytes()));

    // 3 MiB back to the client in one DataRow.
    c.send_fe(Fe::new().bind("", "big_param", &[Some(big_param.as_bytes())]).execute("", 0).sync()).await;
    let msgs = within(30.0, "re-execute", c.until_ready()).await;
    assert_eq!(tags(&msgs), "2DCZ", "{msgs:?}");
    let echo = c.simple(&format!("SELECT repeat('z', {N})")).await;
    assert_eq!(echo.iter().find(|m| m.tag == b'D').unwrap().columns()[0].as_ref().unwrap().len(), N);

    // The big named statement moves to another server connection: hold the first one with
    // another client so the next transaction must use (and prepare on) the second.
    let other = p.app().await;
    other.batch_execute("BEGIN").await.unwrap();
    let other_pid = other.pid().await;
    c.send_fe(Fe::new().bind("", "big_text", &[]).execute("", 0).parse("", "SELECT pg_backend_pid()", &[]).bind("", "", &[]).execute("", 0).sync()).await;
    let msgs = within(30.0, "big statement on another connection", c.until_ready()).await;
    let rows = rows0(&msgs);
    assert_eq!(rows.len(), 2, "{msgs:?}");
    assert_eq!(rows[0], N.to_string());
    assert_ne!(rows[1], other_pid.to_string());
    other.batch_execute("COMMIT").await.unwrap();
}

/// DEALLOCATE ALL and DISCARD ALL from one client (sent as simple queries) forget that
/// client's statements only; another client sharing the server connection is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_all_and_discard_all_only_affect_the_issuing_client() {
    let p = PoolerOpts::primary_only().pool_size(1).start();
    let a = p.app().await;
    let st_a = a.prepare("SELECT 'a'::text || $1::int").await.unwrap();
    assert_eq!(a.query_one(&st_a, &[&1i32]).await.unwrap().get::<_, String>(0), "a1");

    let mut b = Raw::login(p.port, "app", "app").await;
    // B prepares the same text as A under its own name, and another.
    b.send_fe(Fe::new().parse("b_same", "SELECT 'a'::text || $1::int", &[]).parse("b_own", "SELECT 'b'::text", &[]).sync()).await;
    assert_eq!(tags(&b.until_ready().await), "11Z");

    for reset in ["DEALLOCATE ALL", "DISCARD ALL", "DEALLOCATE PREPARE ALL"] {
        let msgs = b.simple(reset).await;
        assert_eq!(tags(&msgs), "CZ", "{reset}: {msgs:?}");
        // A's statement still works (pool size 1: same server connection).
        let r = a.query_one(&st_a, &[&2i32]).await.unwrap_or_else(|e| panic!("A's statement after B's {reset}: {}", db_message(&e)));
        assert_eq!(r.get::<_, String>(0), "a2");
        // B's statements are gone, as PostgreSQL would have it.
        for name in ["b_same", "b_own"] {
            b.send_fe(Fe::new().bind("", name, &[Some(b"3")]).execute("", 0).sync()).await;
            let msgs = b.until_ready().await;
            assert_eq!(tags(&msgs), "EZ", "B's {name} after its {reset}: {msgs:?}");
            assert_eq!(err_code(&msgs), "26000");
        }
        // B prepares them again for the next round.
        b.send_fe(Fe::new().parse("b_same", "SELECT 'a'::text || $1::int", &[]).parse("b_own", "SELECT 'b'::text", &[]).sync()).await;
        assert_eq!(tags(&b.until_ready().await), "11Z");
        b.send_fe(Fe::new().bind("", "b_own", &[]).execute("", 0).sync()).await;
        assert_eq!(rows0(&b.until_ready().await), vec!["b"]);
    }
    // A new statement of A still prepares and runs.
    let st2 = a.prepare("SELECT 'again'::text").await.unwrap();
    assert_eq!(a.query_one(&st2, &[]).await.unwrap().get::<_, String>(0), "again");
}

/// The same, with DEALLOCATE ALL / DISCARD ALL sent through the extended protocol (as
/// tokio-postgres' `execute` does): the server drops every prepared statement of its session,
/// including those the pooler shares between clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_all_via_extended_protocol_does_not_break_other_clients() {
    let p = PoolerOpts::primary_only().pool_size(1).start();
    let a = p.app().await;
    let st_a = a.prepare("SELECT 'a'::text || $1::int").await.unwrap();
    assert_eq!(a.query_one(&st_a, &[&1i32]).await.unwrap().get::<_, String>(0), "a1");

    let b = p.app().await;
    for reset in ["DEALLOCATE ALL", "DISCARD ALL"] {
        b.execute(reset, &[]).await.unwrap_or_else(|e| panic!("B's {reset}: {}", db_message(&e)));
        let r = a.query_one(&st_a, &[&2i32]).await.unwrap_or_else(|e| panic!("A's statement after B's extended-protocol {reset}: {}", db_message(&e)));
        assert_eq!(r.get::<_, String>(0), "a2");
    }
}

/// Different clients: the same text under different names, and the same name for different
/// texts, on one shared server connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_text_and_same_name_across_clients() {
    let p = PoolerOpts::primary_only().pool_size(1).start();
    let mut a = Raw::login(p.port, "app", "app").await;
    let mut b = Raw::login(p.port, "app", "app").await;

    a.send_fe(Fe::new().parse("a_name", "SELECT 'shared text'::text, $1::int", &[]).parse("s1", "SELECT 'A'::text", &[]).sync()).await;
    assert_eq!(tags(&a.until_ready().await), "11Z");
    b.send_fe(Fe::new().parse("b_name", "SELECT 'shared text'::text, $1::int", &[]).parse("s1", "SELECT 'B'::text", &[]).sync()).await;
    assert_eq!(tags(&b.until_ready().await), "11Z");

    for i in 0..5 {
        let n = i.to_string();
        a.send_fe(Fe::new().bind("", "a_name", &[Some(n.as_bytes())]).execute("", 0).bind("", "s1", &[]).execute("", 0).sync()).await;
        let msgs = a.until_ready().await;
        assert_eq!(rows0(&msgs), vec!["shared text", "A"], "{msgs:?}");
        b.send_fe(Fe::new().bind("", "b_name", &[Some(n.as_bytes())]).execute("", 0).bind("", "s1", &[]).execute("", 0).sync()).await;
        let msgs = b.until_ready().await;
        assert_eq!(rows0(&msgs), vec!["shared text", "B"], "{msgs:?}");
    }
    // A closes its names; B's (same text, same name) keep working.
    a.send_fe(Fe::new().close_statement("a_name").close_statement("s1").sync()).await;
    assert_eq!(tags(&a.until_ready().await), "33Z");
    b.send_fe(Fe::new().bind("", "b_name", &[Some(b"9")]).execute("", 0).bind("", "s1", &[]).execute("", 0).sync()).await;
    assert_eq!(rows0(&b.until_ready().await), vec!["shared text", "B"]);
    a.send_fe(Fe::new().bind("", "s1", &[]).execute("", 0).sync()).await;
    assert_eq!(err_code(&a.until_ready().await), "26000");

    // Two names for the same text within one client; closing one leaves the other.
    a.send_fe(Fe::new().parse("twin1", "SELECT 'twin'::text", &[]).parse("twin2", "SELECT 'twin'::text", &[]).sync()).await;
    assert_eq!(tags(&a.until_ready().await), "11Z");
    a.send_fe(Fe::new().close_statement("twin1").bind("", "twin2", &[]).execute("", 0).sync()).await;
    let msgs = a.until_ready().await;
    assert_eq!(tags(&msgs), "32DCZ", "{msgs:?}");
}

/// The same client name reused after Close, with a different text each time; and Parse of a
/// name that already exists fails like PostgreSQL (42P05).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_name_reused_after_close() {
    let p = PoolerOpts::primary_only().pool_size(2).start();
    let mut c = Raw::login(p.port, "app", "app").await;
    for i in 0..20 {
        let sql = format!("SELECT {i}::int AS round");
        c.send_fe(Fe::new().parse("reused", &sql, &[]).bind("", "reused", &[]).execute("", 0).sync()).await;
        let msgs = c.until_ready().await;
        assert_eq!(tags(&msgs), "12DCZ", "round {i}: {msgs:?}");
        assert_eq!(rows0(&msgs), vec![i.to_string()]);
        // In a separate transaction: close it.
        c.send_fe(Fe::new().close_statement("reused").sync()).await;
        assert_eq!(tags(&c.until_ready().await), "3Z");
    }
    // Close + Parse + Bind of the same name in one pipeline.
    c.send_fe(Fe::new().parse("cp", "SELECT 'one'::text", &[]).sync()).await;
    assert_eq!(tags(&c.until_ready().await), "1Z");
    c.send_fe(Fe::new().close_statement("cp").parse("cp", "SELECT 'two'::text", &[]).bind("", "cp", &[]).execute("", 0).sync()).await;
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "312DCZ", "{msgs:?}");
    assert_eq!(rows0(&msgs), vec!["two"]);
}

/// Parse of a name that already exists fails like PostgreSQL (42P05) and keeps the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_of_an_existing_name_fails_like_postgres() {
    let p = PoolerOpts::primary_only().pool_size(2).start();
    let mut c = Raw::login(p.port, "app", "app").await;
    c.send_fe(Fe::new().parse("dup", "SELECT 'first'::text", &[]).sync()).await;
    assert_eq!(tags(&c.until_ready().await), "1Z");
    c.send_fe(Fe::new().parse("dup", "SELECT 'second'::text", &[]).sync()).await;
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "EZ", "Parse of an existing name: {msgs:?}");
    assert_eq!(err_code(&msgs), "42P05");
    c.send_fe(Fe::new().bind("", "dup", &[]).execute("", 0).sync()).await;
    let msgs = c.until_ready().await;
    assert_eq!(rows0(&msgs), vec!["first"], "the existing statement must be kept: {msgs:?}");
}

/// A pipeline whose Sync arrives late: the server connection stays with the client until the
/// Sync is answered, and another client waits rather than sharing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_with_late_sync() {
    let p = PoolerOpts::primary_only().pool_size(1).query_wait_timeout("10s").start();
    let mut a = Raw::login(p.port, "app", "app").await;
    a.send_fe(Fe::new().parse("late", "SELECT pg_backend_pid(), $1::text", &[]).bind("", "late", &[Some(b"one")]).execute("", 0)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Another client tries to run meanwhile: it must wait for A's Sync.
    let b = p.app().await;
    let b_query = tokio::spawn(async move {
        let r = b.query_one("SELECT pg_backend_pid()", &[]).await;
        (b, r)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.send_fe(Fe::new().bind("", "late", &[Some(b"two")]).execute("", 0)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!b_query.is_finished(), "B ran on the server connection while A's pipeline was open");
    a.send_fe(Fe::new().sync()).await;
    let msgs = a.until_ready().await;
    assert_eq!(tags(&msgs), "12DC2DCZ", "{msgs:?}");
    let rows: Vec<_> = msgs.iter().filter(|m| m.tag == b'D').map(|m| m.columns()).collect();
    assert_eq!(rows[0][1].as_deref(), Some(&b"one"[..]));
    assert_eq!(rows[1][1].as_deref(), Some(&b"two"[..]));
    assert_eq!(rows[0][0], rows[1][0], "one pipeline, one server connection");
    let (_b, r) = within(10.0, "B after A's Sync", b_query).await.unwrap();
    r.unwrap_or_else(|e| panic!("B: {}", db_message(&e)));
}

/// More statements than max_prepared_statements: server-side entries get evicted between
/// transactions, yet every client statement keeps working, also all in one pipeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_cache_eviction_is_transparent() {
    let p = PoolerOpts::primary_only().pool_size(1).set("max_prepared_statements", "2").start();
    let mut c = Raw::login(p.port, "app", "app").await;
    let mut f = Fe::new();
    for i in 0..6 {
        f.parse(&format!("ev{i}"), &format!("SELECT {i}::int + $1::int"), &[]);
    }
    f.sync();
    c.send_fe(&mut f).await;
    assert_eq!(tags(&c.until_ready().await), "111111Z");
    for round in 0..3 {
        // All six in one pipeline.
        let mut f = Fe::new();
        for i in 0..6 {
            f.bind("", &format!("ev{i}"), &[Some(b"100")]).execute("", 0);
        }
        f.sync();
        c.send_fe(&mut f).await;
        let msgs = c.until_ready().await;
        assert_eq!(rows0(&msgs), (100..106).map(|v: i32| v.to_string()).collect::<Vec<_>>(), "round {round}: {msgs:?}");
        // And one per transaction, in reverse order.
        for i in (0..6).rev() {
            c.send_fe(Fe::new().bind("", &format!("ev{i}"), &[Some(b"1")]).execute("", 0).sync()).await;
            let msgs = c.until_ready().await;
            assert_eq!(rows0(&msgs), vec![(i + 1).to_string()], "round {round}, ev{i}: {msgs:?}");
        }
        // Another client churns the cache in between.
        let o = p.app().await;
        for k in 0..4 {
            let st = o.prepare(&format!("SELECT {k}::int * $1::int")).await.unwrap();
            assert_eq!(o.query_one(&st, &[&2i32]).await.unwrap().get::<_, i32>(0), k * 2);
        }
    }
}

/// A Close skipped by the server (it follows an error before Sync) did not close anything:
/// the statement must still be usable afterwards, as with PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_skipped_after_an_error_keeps_the_statement() {
    let p = PoolerOpts::primary_only().pool_size(1).start();
    let mut c = Raw::login(p.port, "app", "app").await;
    c.send_fe(Fe::new().parse("kept", "SELECT 'kept'::text", &[]).sync()).await;
    assert_eq!(tags(&c.until_ready().await), "1Z");
    let mut f = Fe::new();
    f.parse("", "SELECT 1/g FROM generate_series(0, 0) g", &[]).bind("", "", &[]).execute("", 0);
    f.close_statement("kept");
    f.sync();
    c.send_fe(&mut f).await;
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "12EZ", "{msgs:?}");
    c.send_fe(Fe::new().bind("", "kept", &[]).execute("", 0).sync()).await;
    let msgs = c.until_ready().await;
    assert_eq!(rows0(&msgs), vec!["kept"], "the Close was skipped by the server, so \"kept\" still exists in PostgreSQL: {msgs:?}");
}

/// DEALLOCATE ALL / DISCARD ALL in simple queries that do not start with those words (after
/// another statement, after a comment) drop the server's statements just the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_all_not_at_the_start_of_a_query_does_not_break_other_clients() {
    let p = PoolerOpts::primary_only().pool_size(1).start();
    let a = p.app().await;
    let st_a = a.prepare("SELECT 'a'::text || $1::int").await.unwrap();
    assert_eq!(a.query_one(&st_a, &[&1i32]).await.unwrap().get::<_, String>(0), "a1");
    let b = p.app().await;
    for reset in ["SELECT 1; DEALLOCATE ALL", "/* app */ DEALLOCATE ALL", "/* app */ DISCARD ALL", "  -- note\nDISCARD ALL"] {
        b.batch_execute(reset).await.unwrap_or_else(|e| panic!("B's {reset:?}: {}", db_message(&e)));
        let r = a.query_one(&st_a, &[&2i32]).await.unwrap_or_else(|e| panic!("A's statement after B's {reset:?}: {}", db_message(&e)));
        assert_eq!(r.get::<_, String>(0), "a2");
    }
}

/// Drivers such as JDBC and libpq's PQexecParams send even SET through the extended protocol
/// (Parse/Bind/Describe/Execute/Sync of the unnamed statement). lsnpool answers
/// `lsnpool.consistency` there as it does in a simple Query, instead of letting the server
/// accept it as a meaningless placeholder setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistency_commands_in_the_extended_protocol_are_answered_by_the_pooler() {
    let p = PoolerOpts::primary_only().pool_size(1).start();
    let mut c = Raw::login(p.port, "app", "app").await;

    // libpq's shape: Parse, Bind, Describe portal, Execute, Sync.
    c.send_fe(Fe::new().parse("", "SET lsnpool.consistency = 'strong'", &[]).bind("", "", &[]).describe_portal("").execute("", 0).sync()).await;
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "12nCZ", "{msgs:?}");
    assert_eq!(msgs[3].body, b"SET\0", "{msgs:?}");

    // SHOW in both protocols sees it; with a Describe the row is described first.
    c.send_fe(Fe::new().parse("", "SHOW lsnpool.consistency", &[]).bind("", "", &[]).describe_portal("").execute("", 0).sync()).await;
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "12TDCZ", "{msgs:?}");
    assert_eq!(rows0(&msgs), vec!["strong".to_string()]);
    c.send_fe(Fe::new().query("SHOW lsnpool.consistency")).await;
    assert_eq!(rows0(&c.until_ready().await), vec!["strong".to_string()]);

    // Other shapes (here Describe before Bind) are refused: a server would take the setting
    // as a placeholder and ignore it. The connection stays usable.
    c.send_fe(Fe::new().parse("", "RESET lsnpool.consistency", &[]).describe_statement("").bind("", "", &[]).execute("", 0).sync()).await;
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "EZ", "{msgs:?}");
    assert_eq!(err_code(&msgs), "0A000");

    // A batch split across TCP segments is still answered by the pooler: it waits for the Sync.
    let mut batch = Fe::new();
    batch.parse("", "SET lsnpool.consistency = 'eventual'", &[]).bind("", "", &[]).describe_portal("").execute("", 0).sync();
    let (head, tail) = batch.0.split_at(batch.0.len() - 12);
    c.send_fe(&mut Fe(head.to_vec())).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.send_fe(&mut Fe(tail.to_vec())).await;
    assert_eq!(tags(&c.until_ready().await), "12nCZ");
    c.send_fe(Fe::new().query("SHOW lsnpool.consistency")).await;
    assert_eq!(rows0(&c.until_ready().await), vec!["eventual".to_string()]);
    // Describe of the statement adds its (empty) ParameterDescription; without a Describe
    // there is no RowDescription.
    c.send_fe(Fe::new().parse("", "RESET lsnpool.consistency", &[]).bind("", "", &[]).describe_statement("").execute("", 0).sync()).await;
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "12tnCZ", "{msgs:?}");
    c.send_fe(Fe::new().parse("", "SHOW lsnpool.consistency", &[]).bind("", "", &[]).execute("", 0).sync()).await;
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "12DCZ", "{msgs:?}");
    assert_eq!(rows0(&msgs), vec!["read-your-writes".to_string()], "RESET went back to the database's level");

    // A bad value is the same error as in a simple Query, at Execute.
    c.send_fe(Fe::new().parse("", "SET lsnpool.consistency = 'sometimes'", &[]).bind("", "", &[]).describe_portal("").execute("", 0).sync()).await;
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "12nEZ", "{msgs:?}");
    assert_eq!(err_code(&msgs), "22023");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_deallocate_of_a_protocol_statement_works_in_every_state() {
    let p = PoolerOpts::primary_only().pool_size(2).start();
    let mut c = Raw::login(p.port, "app", "app").await;
    let mut f = Fe::new();
    f.parse("p1", "SELECT 1", &[]).parse("P2", "SELECT 2", &[]).parse("p3", "SELECT 3", &[]).sync();
    c.send_fe(&mut f).await;
    assert_eq!(tags(&c.until_ready().await), "111Z");

    // Inside a transaction: the server knows only the pooler's names; the pooler answers.
    assert_eq!(tags(&c.simple("BEGIN").await), "CZ");
    let d = c.simple("DEALLOCATE p1").await;
    assert_eq!(format!("{d:?}"), "[C(DEALLOCATE), Z(T)]");
    let d = c.simple("deallocate prepare \"P2\"").await;
    assert_eq!(format!("{d:?}"), "[C(DEALLOCATE), Z(T)]");
    // Gone for the client: a Bind fails as it would directly.
    let mut f = Fe::new();
    f.bind("", "p1", &[]).execute("", 0).sync();
    c.send_fe(&mut f).await;
    let r = c.until_ready().await;
    assert_eq!(err_code(&r), "26000", "{r:?}");
    // In a failed transaction DEALLOCATE fails as it would directly, and p3 stays.
    let r = c.simple("DEALLOCATE p3").await;
    assert_eq!(err_code(&r), "25P02", "{r:?}");
    assert_eq!(tags(&c.simple("ROLLBACK").await), "CZ");
    let mut f = Fe::new();
    f.bind("", "p3", &[]).execute("", 0).sync();
    c.send_fe(&mut f).await;
    assert_eq!(rows0(&c.until_ready().await), vec!["3"]);
    // Outside a transaction too; then the name can be prepared again.
    assert_eq!(format!("{:?}", c.simple("DEALLOCATE p3").await), "[C(DEALLOCATE), Z(I)]");
    let mut f = Fe::new();
    f.parse("p3", "SELECT 33", &[]).bind("", "p3", &[]).execute("", 0).sync();
    c.send_fe(&mut f).await;
    assert_eq!(rows0(&c.until_ready().await), vec!["33"]);
    // A name the client never prepared is the server's to refuse.
    let r = c.simple("DEALLOCATE nope").await;
    assert_eq!(err_code(&r), "26000", "{r:?}");
}

/// psycopg's test_change_type / test_change_type_savepoint: a type dropped (or created in a
/// rolled-back savepoint) and created again; a statement on it prepared again after that must
/// not reach the server statement planned with the old type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_on_a_recreated_type_are_prepared_afresh() {
    // One server connection: every statement below meets the ones prepared before it.
    let p = PoolerOpts::primary_only().pool_size(1).start();
    let ty = unique("prep_ty");
    let sql = format!("SELECT $1::{ty}::text");
    let bind_run = |name: &'static str, v: &'static str| {
        let mut f = Fe::new();
        f.bind("", name, &[Some(v.as_bytes())]).execute("", 0).sync();
        f
    };

    // In a savepoint, rolled back, then created again in the same transaction.
    let mut c = Raw::login(p.port, "app", "app").await;
    assert!(!tags(&c.simple(&format!("BEGIN; SAVEPOINT s; CREATE TYPE {ty} AS ENUM ('foo')")).await).contains('E'));
    let mut f = Fe::new();
    f.parse("a", &sql, &[]).sync();
    c.send_fe(&mut f).await;
    assert_eq!(tags(&c.until_ready().await), "1Z");
    c.send_fe(&mut bind_run("a", "foo")).await;
    assert_eq!(rows0(&c.until_ready().await), vec!["foo"]);
    let r = c.simple(&format!("ROLLBACK TO SAVEPOINT s; CREATE TYPE {ty} AS ENUM ('foo', 'bar')")).await;
    assert!(!tags(&r).contains('E'), "{r:?}");
    let mut f = Fe::new();
    f.parse("b", &sql, &[]).sync();
    c.send_fe(&mut f).await;
    assert_eq!(tags(&c.until_ready().await), "1Z");
    c.send_fe(&mut bind_run("b", "bar")).await;
    let r = c.until_ready().await;
    assert_eq!(rows0(&r), vec!["bar"], "the statement prepared after the rollback: {r:?}");
    assert_eq!(tags(&c.simple("COMMIT").await), "CZ");

    // Dropped and created again, committed; another client prepares the same text.
    let mut d = Raw::login(p.port, "app", "app").await;
    let r = d.simple(&format!("DROP TYPE {ty}; CREATE TYPE {ty} AS ENUM ('baz')")).await;
    assert!(!tags(&r).contains('E'), "{r:?}");
    let mut f = Fe::new();
    f.parse("c", &sql, &[]).sync();
    d.send_fe(&mut f).await;
    assert_eq!(tags(&d.until_ready().await), "1Z");
    d.send_fe(&mut bind_run("c", "baz")).await;
    let r = d.until_ready().await;
    assert_eq!(rows0(&r), vec!["baz"], "another client after DROP/CREATE: {r:?}");
    d.simple(&format!("DROP TYPE {ty}")).await;
}

/// What a client reads, in a form to compare between PostgreSQL and lsnpool: each message's
/// tag, with the SQLSTATE of an error, the status of a ReadyForQuery and the values of a row.
/// ParameterStatus and notices are left out.
/// The chunks are sent 200 ms apart, so the server's error can come before the rest is sent.
async fn transcript(port: u16, chunks: &[Vec<u8>]) -> Vec<String> {
    let mut r = Raw::login(port, "app", "app").await;
    for (i, chunk) in chunks.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        r.send(chunk).await;
    }
    let mut out = Vec::new();
    let mut probe_row = false;
    loop {
        let m = match r.read(Duration::from_secs(10)).await {
            raw::Read::Msg(m) => m,
            raw::Read::Eof => panic!("port {port}: closed; got {out:?}"),
            raw::Read::Timeout => panic!("port {port}: no answer within 10s (hang?); got {out:?}"),
        };
        match m.tag {
            b'S' | b'N' => continue,
            b'E' => out.push(format!("E{}", m.code().unwrap_or_default())),
            b'Z' => out.push(format!("Z{}", String::from_utf8_lossy(&m.body))),
            b'D' => {
                let cols: Vec<String> = m.columns().iter().map(|c| c.as_deref().map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default()).collect();
                probe_row |= cols.first().is_some_and(|c| c == "alive");
                out.push(format!("D{}", cols.join(",")));
            }
            t => out.push((t as char).to_string()),
        }
        if m.tag == b'Z' && probe_row {
            return out;
        }
    }
}

/// PostgreSQL, after an error in an extended-protocol message, skips every message up to the
/// next Sync, simple Queries and FunctionCalls too (they get no ReadyForQuery); a Query's own
/// error skips nothing. lsnpool must answer exactly as PostgreSQL does for such batches, with
/// and without its LSN capture and renamed statements in the window, and give the server
/// connection back clean. The pipelines end with a probe Query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_behind_a_failed_unsynced_batch_are_skipped_like_postgres() {
    // Transaction mode on the primary, with reads routed to replicas (the 25006 guard is up),
    // and session mode (statements passed through).
    for opts in [PoolerOpts::primary_only(), PoolerOpts::new(), PoolerOpts::primary_only().mode("session")] {
        skipped_like_postgres(opts.pool_size(1).start()).await;
    }
}

async fn skipped_like_postgres(p: Pooler) {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("Bind fails, Query, Sync", Fe::new().bind("", "no_such", &[]).query("SELECT 1").sync().take()),
        (
            "Execute fails, two Queries, Sync",
            Fe::new().parse("", "SELECT 1/0", &[]).bind("", "", &[]).execute("", 0).query("SELECT 2").query("SELECT 3").sync().take(),
        ),
        (
            "the Query fails itself: nothing skipped",
            Fe::new().parse("", "SELECT 1", &[]).bind("", "", &[]).execute("", 0).query("SELECT 1/0").query("SELECT 4").sync().take(),
        ),
        ("a Query with a function (its LSN capture waits for the Sync)", Fe::new().bind("", "no_such", &[]).query("SELECT now() IS NOT NULL").sync().take()),
        ("Flush between", Fe::new().bind("", "no_such", &[]).flush().query("SELECT 5").sync().take()),
        (
            "extended messages after a good Query, then a failing one",
            Fe::new().parse("", "SELECT 6", &[]).bind("", "", &[]).execute("", 0).query("SELECT 7").bind("", "no_such", &[]).query("SELECT 8").sync().take(),
        ),
        (
            "named statements around the error",
            Fe::new()
                .parse("s1", "SELECT $1::int", &[])
                .bind("", "s1", &[Some(b"x")])
                .parse("s2", "SELECT 2", &[])
                .query("SELECT 9")
                .sync()
                .bind("", "s1", &[Some(b"10")])
                .execute("", 0)
                .sync()
                .describe_statement("s2")
                .sync()
                .take(),
        ),
        (
            "in a transaction block",
            Fe::new().query("BEGIN").bind("", "no_such", &[]).query("SELECT 11").sync().query("ROLLBACK").take(),
        ),
        ("no error", Fe::new().parse("", "SELECT 12", &[]).bind("", "", &[]).execute("", 0).query("SELECT 13").sync().take()),
    ];
    let mut cases: Vec<(&str, Vec<Vec<u8>>)> = cases.into_iter().map(|(what, bytes)| (what, vec![bytes])).collect();
    // The error reaches lsnpool before the Queries behind it are sent.
    cases.push(("error, then a Query, then the Sync", vec![Fe::new().bind("", "no_such", &[]).flush().take(), Fe::new().query("SELECT 14").take(), Fe::new().sync().take()]));
    cases.push(("Query behind the error, then another, then the Sync", vec![Fe::new().bind("", "no_such", &[]).query("SELECT 15").take(), Fe::new().query("SELECT 16").sync().take()]));
    for (what, mut chunks) in cases {
        if let Some(last) = chunks.last_mut() {
            last.extend_from_slice(&Fe::new().query("SELECT 'alive'").take());
        }
        let direct = transcript(PRIMARY_PORT, &chunks).await;
        let pooled = transcript(p.port, &chunks).await;
        assert_eq!(pooled, direct, "{what}: lsnpool (left) vs PostgreSQL (right)\n{}", p.log_tail(20));
        // The one server connection went back clean.
        let c = p.app().await;
        let got = c.simple_one("SELECT 'clean'").await;
        assert_eq!(got.map_err(|e| db_message(&e)), Ok(Some("clean".to_string())), "after {what}");
    }
}
