use super::*;
use crate::Consistency as L;
use PoolerCommand as P;
use StatementClass as C;

/// One statement of class `class`, nothing else.
fn one(class: StatementClass) -> Classification {
    Classification {
        first: class,
        write: class.needs_primary(),
        ends_transaction: matches!(class, C::Commit | C::Rollback),
        statements: 1,
        ..Classification::EMPTY
    }
}

const R: fn() -> Classification = || one(C::Read);
const W: fn() -> Classification = || one(C::Write);

trait Expect {
    fn calls(self) -> Self;
    fn hint(self, h: Hint) -> Self;
    fn chain(self) -> Self;
    fn ends(self) -> Self;
    fn dealloc(self, d: Deallocate) -> Self;
    fn stmts(self, n: u32) -> Self;
    fn writes(self) -> Self;
}

impl Expect for Classification {
    fn calls(self) -> Self {
        Classification {
            calls_functions: true,
            ..self
        }
    }
    fn hint(self, h: Hint) -> Self {
        Classification { hint: Some(h), ..self }
    }
    fn chain(self) -> Self {
        Classification { chain: true, ..self }
    }
    fn ends(self) -> Self {
        Classification {
            ends_transaction: true,
            ..self
        }
    }
    fn dealloc(self, d: Deallocate) -> Self {
        Classification {
            deallocate: Some(d),
            ..self
        }
    }
    fn stmts(self, n: u32) -> Self {
        Classification { statements: n, ..self }
    }
    fn writes(self) -> Self {
        Classification { write: true, ..self }
    }
}

fn table() -> Vec<(&'static str, Classification)> {
    let ro = |read_only| one(C::Begin { read_only });
    let set_tx = |read_only| one(C::SetTransaction { read_only });
    let pooler = |p| one(C::Pooler(p));
    vec![
        // --- reads, and keywords where the server would not see one
        ("SELECT 1", R()),
        ("select * from t where id = $1", R()),
        ("  \n\t SeLeCt 1", R()),
        ("SELECT 'insert'", R()),
        ("/* update */ SELECT 1", R()),
        ("SELECT \"delete\" FROM t", R()),
        ("SELECT update_count FROM t", R()),
        ("SELECT t.update, t.\"insert\" FROM t", R()),
        ("SELECT $$ DELETE FROM t $$", R()),
        ("SELECT $fn$ ; DROP TABLE t; $fn$", R()),
        ("SELECT E'it\\'s; DELETE'", R()),
        ("SELECT 'it''s; DELETE'", R()),
        ("SELECT U&'d\\0061t; DELETE', B'101', X'1F'", R()),
        ("SELECT -- DELETE FROM t\n 1", R()),
        ("SELECT /* nested /* DELETE */ still; */ 1", R()),
        ("SELECT 'a'\n'b'", R()),
        ("SELECT * FROM t WHERE c = 'a;b'; ", R()),
        ("SELECT x::int, y::numeric(10,2), z::character varying(10) FROM t", R()),
        ("SELECT CAST(x AS numeric(10,2)) FROM t", R()),
        ("SELECT data->>'name', tags @> ARRAY['a'], j #>> '{a}' FROM t", R()),
        ("SELECT count(*), max(x), coalesce(a, b), now(), lower(s) FROM t", R()),
        ("SELECT * FROM t WHERE x IN (1, 2) AND EXISTS (SELECT 1) AND y = ANY($1::int[])", R()),
        ("SELECT count(*) FILTER (WHERE x > 1) OVER (PARTITION BY y) FROM t", R()),
        ("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) FROM t", R()),
        ("SELECT extract(epoch FROM now()), substring(s FROM 1 FOR 3) FROM t", R()),
        ("SELECT x FROM t WHERE ts > now() - interval '1 day' ORDER BY x LIMIT 10 OFFSET 5", R()),
        ("SELECT * FROM generate_series(1, 3) g(n)", R()),
        ("SELECT * FROM generate_series(1, 3) WITH ORDINALITY AS g(n, i)", R()),
        ("SELECT * FROM t1 JOIN LATERAL (SELECT * FROM t2 LIMIT 1) s ON true", R()),
        ("SELECT * FROM t TABLESAMPLE SYSTEM (10) REPEATABLE (42)", R()),
        ("SELECT x FROM t WHERE (a, b) IN (SELECT a, b FROM u)", R()),
        ("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), pg_catalog.lower('A')", R()),
        ("SELECT jsonb_build_object('a', 1), row_to_json(t) FROM t", R()),
        ("SELECT 1 AS update, 2 AS \"for\" FROM t", R()),
        ("DECLARE c CURSOR FOR SELECT * FROM t FOR READ ONLY", one(C::TransactionNeutral)),
        ("SELECT a$b, $1$2 FROM t", R()),
        ("SELECT 'a' || $$b$$ || $x$c$X$ $x$ FROM t", R()),
        ("SELECT 1 /* ; */ ; SELECT 2 -- ;", R().stmts(2)),
        ("SELECT my_func(1)", R().calls()),
        ("SELECT public.lower(x) FROM t", R().calls()),
        ("SELECT \"MyFunc\"(x) FROM t", R().calls()),
        ("WITH x AS (SELECT 1) SELECT * FROM x", R()),
        ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 9) SELECT * FROM r", R()),
        ("WITH a AS MATERIALIZED (SELECT 1), b(x) AS NOT MATERIALIZED (SELECT 2) SELECT * FROM a, b", R()),
        (
            "WITH RECURSIVE s(id) AS (SELECT 1) SEARCH DEPTH FIRST BY id SET o CYCLE id SET c USING p, t(y) AS (SELECT 2) SELECT 1",
            R(),
        ),
        ("SELECT * FROM (WITH x(a) AS (SELECT 1) SELECT a FROM x) s", R()),
        ("VALUES (1), (2)", R()),
        ("TABLE t", R()),
        ("(SELECT 1) UNION (SELECT 2)", R()),
        ("SHOW search_path", R()),
        ("SHOW ALL", R()),
        ("EXPLAIN SELECT * FROM t", R()),
        ("EXPLAIN ANALYZE VERBOSE SELECT * FROM t", R()),
        ("EXPLAIN (ANALYZE, BUFFERS) SELECT 1", R()),
        ("EXPLAIN SELECT my_func()", R()),
        ("EXPLAIN ANALYZE SELECT my_func()", R().calls()),
        ("COPY t TO STDOUT", R()),
        ("COPY BINARY t TO STDOUT", R()),
        ("EXPLAIN (FORMAT JSON, COSTS off) SELECT 1", R()),
        ("WITH x AS (SELECT 1) (SELECT * FROM x)", R()),
        ("COPY public.t (a, b) TO STDOUT WITH (FORMAT csv)", R()),
        ("COPY (SELECT * FROM t WHERE x > 1) TO STDOUT", R()),
        // --- writes
        ("INSERT INTO t VALUES (1)", W()),
        ("update t set x = 1", W()),
        ("DELETE FROM t", W()),
        ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", W()),
        ("SELECT * FROM t FOR UPDATE", W()),
        ("SELECT * FROM t FOR SHARE", W()),
        ("SELECT * FROM t WHERE id = 1 FOR NO KEY UPDATE", W()),
        ("SELECT * FROM t FOR KEY SHARE", W()),
        ("SELECT * FROM t FOR UPDATE OF t SKIP LOCKED", W()),
        ("SELECT * FROM (SELECT * FROM t FOR UPDATE) s", W()),
        ("SELECT * INTO newtable FROM t", W()),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", W()),
        ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", W()),
        ("SELECT * FROM (WITH d AS (UPDATE t SET x = 1 RETURNING *) SELECT * FROM d) s", W()),
        ("EXPLAIN ANALYZE UPDATE t SET x = 1", W()),
        ("EXPLAIN (ANALYZE) DELETE FROM t", W()),
        ("EXPLAIN (ANALYZE false) UPDATE t SET x = 1", W()),
        ("EXPLAIN SELECT nextval('s')", W()),
        ("EXPLAIN EXECUTE p(1)", W()),
        ("EXPLAIN ANALYZE WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", W()),
        ("WITH x AS (SELECT 1) SELECT * FROM x FOR UPDATE", W()),
        ("SELECT * FROM t WHERE path = 'C:\\'", R().writes()),
        ("COPY t FROM STDIN", W()),
        ("COPY t (a) FROM STDIN WITH (FORMAT csv)", W()),
        ("COPY t TO '/tmp/t.csv'", W()),
        ("COPY t TO PROGRAM 'gzip > /tmp/t.gz'", W()),
        ("COPY (DELETE FROM t RETURNING *) TO STDOUT", W()),
        ("SELECT nextval('seq')", W()),
        ("SELECT pg_catalog.setval('s', 1)", W()),
        ("SELECT currval('s')", W()),
        ("SELECT pg_advisory_lock(1)", W()),
        ("SELECT pg_try_advisory_xact_lock_shared(1)", W()),
        ("SELECT pg_advisory_unlock_all()", W()),
        ("SELECT txid_current()", W()),
        ("SELECT pg_current_wal_lsn()", W()),
        ("SELECT set_config('a.b', 'c', false)", W()),
        ("SELECT pg_notify('c', 'x')", W()),
        ("SELECT lo_import('/tmp/x')", W()),
        ("SELECT pg_stat_reset_shared('io')", W()),
        ("SELECT dblink_exec('dbname=x', 'DELETE FROM t')", W()),
        ("SELECT * FROM t WHERE id IN (SELECT NEXTVAL('s'))", W()),
        ("VALUES (nextval('s'))", W()),
        ("SELECT (1) nextval('s')", W()),
        ("SELECT x::mytype(3), CAST(y AS myschema.mytype(2)) FROM t", R()),
        ("CREATE TABLE t (id int)", W()),
        ("ALTER TABLE t ADD c int", W()),
        ("DROP TABLE t", W()),
        ("TRUNCATE t", W()),
        ("GRANT SELECT ON t TO u", W()),
        ("REVOKE ALL ON t FROM u", W()),
        ("COMMENT ON TABLE t IS 'x'", W()),
        ("VACUUM (VERBOSE, ANALYZE) t", W()),
        ("ANALYZE t", W()),
        ("CLUSTER t USING i", W()),
        ("REINDEX TABLE t", W()),
        ("REFRESH MATERIALIZED VIEW CONCURRENTLY mv", W()),
        ("CHECKPOINT", W()),
        ("LOCK TABLE t IN ACCESS SHARE MODE", W()),
        ("CALL p(1)", W()),
        ("DO $$ BEGIN PERFORM 1; END $$", W()),
        ("NOTIFY c, 'x'", W()),
        ("IMPORT FOREIGN SCHEMA s FROM SERVER f INTO l", W()),
        ("SECURITY LABEL ON TABLE t IS 'x'", W()),
        ("REASSIGN OWNED BY a TO b", W()),
        ("PREPARE TRANSACTION 'gid'", W().ends()),
        ("COMMIT PREPARED 'gid'", W()),
        ("ROLLBACK PREPARED 'gid'", W()),
        ("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END", W()),
        ("CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql; SELECT 1", W().stmts(2)),
        // --- anything unknown or malformed
        ("FROBNICATE t", W()),
        ("42", W()),
        ("SELECT 'unterminated", W()),
        ("SELECT 1 /* unterminated", W()),
        ("SELECT \"unterminated", W()),
        ("SELECT $$unterminated", W()),
        ("SELECT 1)", W()),
        ("SELECT (1", W()),
        ("SELECT 1; SELECT 'unterminated; SELECT 2", R().writes().stmts(2)),
        ("WITH x AS SELECT 1", W()),
        ("COPY (SELECT 1 TO STDOUT", W()),
        // --- transactions
        ("BEGIN", ro(false)),
        ("begin read only", ro(true)),
        ("BEGIN WORK READ ONLY", ro(true)),
        ("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", ro(true)),
        ("BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY DEFERRABLE", ro(true)),
        ("BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE", ro(false)),
        ("BEGIN READ ONLY, READ WRITE", ro(false)),
        ("START TRANSACTION READ ONLY", ro(true)),
        ("START TRANSACTION READ WRITE", ro(false)),
        ("COMMIT", one(C::Commit)),
        ("END", one(C::Commit)),
        ("commit work", one(C::Commit)),
        ("COMMIT AND CHAIN", one(C::Commit).chain()),
        ("COMMIT AND NO CHAIN", one(C::Commit)),
        ("ROLLBACK", one(C::Rollback)),
        ("ABORT", one(C::Rollback)),
        ("ROLLBACK AND CHAIN", one(C::Rollback).chain()),
        ("ROLLBACK TO SAVEPOINT s", one(C::TransactionNeutral)),
        ("ROLLBACK WORK TO s", one(C::TransactionNeutral)),
        ("SAVEPOINT s", one(C::TransactionNeutral)),
        ("RELEASE SAVEPOINT s", one(C::TransactionNeutral)),
        ("SET TRANSACTION READ ONLY", set_tx(true)),
        ("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ WRITE", set_tx(false)),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", set_tx(false)),
        ("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", one(C::TransactionNeutral)),
        ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", set_tx(true)),
        ("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED", one(C::Session)),
        ("SET TRANSACTION SNAPSHOT '00000003-0000001B-1'", W()),
        ("SET transaction_read_only = on", set_tx(true)),
        ("SET LOCAL transaction_read_only TO off", set_tx(false)),
        ("SET LOCAL statement_timeout = '5s'", one(C::TransactionNeutral)),
        ("SET CONSTRAINTS ALL DEFERRED", one(C::TransactionNeutral)),
        ("DECLARE c CURSOR FOR SELECT * FROM t", one(C::TransactionNeutral)),
        ("DECLARE c BINARY NO SCROLL CURSOR WITHOUT HOLD FOR SELECT my_func()", one(C::TransactionNeutral).calls()),
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", one(C::Session)),
        ("DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE", W()),
        ("FETCH 10 FROM c", one(C::TransactionNeutral)),
        ("MOVE NEXT IN c", one(C::TransactionNeutral)),
        ("CLOSE c", one(C::TransactionNeutral)),
        // --- session state
        ("SET search_path = a, b", one(C::Session)),
        ("SET SESSION statement_timeout TO 0", one(C::Session)),
        ("SET TIME ZONE 'UTC'", one(C::Session)),
        ("SET SESSION AUTHORIZATION u", one(C::Session)),
        ("SET lsnpool.other = 1", one(C::Session)),
        ("RESET ALL", one(C::Session)),
        ("DISCARD ALL", one(C::Session).dealloc(Deallocate::All)),
        ("DISCARD PLANS", one(C::Session)),
        ("DEALLOCATE ALL", one(C::Session).dealloc(Deallocate::All)),
        ("deallocate prepare all", one(C::Session).dealloc(Deallocate::All)),
        ("DEALLOCATE stmt1", one(C::Session).dealloc(Deallocate::Named { start: 11, end: 16 })),
        ("DEALLOCATE PREPARE \"S 1\"", one(C::Session).dealloc(Deallocate::Named { start: 19, end: 24 })),
        ("LISTEN c", one(C::Session)),
        ("UNLISTEN *", one(C::Session)),
        ("LOAD 'auto_explain'", one(C::Session)),
        ("PREPARE p(int) AS SELECT $1", one(C::Session)),
        ("EXECUTE p(1)", one(C::Session)),
        // --- the pooler's own commands
        ("SET lsnpool.consistency = 'eventual'", pooler(P::SetConsistency(L::Eventual))),
        ("SET lsnpool.consistency TO eventual", pooler(P::SetConsistency(L::Eventual))),
        ("set session LSNPOOL.Consistency to 'READ_YOUR_WRITES'", pooler(P::SetConsistency(L::ReadYourWrites))),
        ("SET lsnpool.consistency = read-your-writes", pooler(P::SetConsistency(L::ReadYourWrites))),
        ("SET \"lsnpool.consistency\" = strong", pooler(P::SetConsistency(L::Strong))),
        ("SET LOCAL lsnpool.consistency = global", pooler(P::SetConsistency(L::Global))),
        ("SET lsnpool.consistency = 'fast'", pooler(P::InvalidConsistency)),
        ("SET lsnpool.consistency = 'eventual', 'strong'", pooler(P::InvalidConsistency)),
        ("SET lsnpool.consistency", pooler(P::InvalidConsistency)),
        ("SET lsnpool.consistency TO DEFAULT", pooler(P::ResetConsistency)),
        ("RESET lsnpool.consistency", pooler(P::ResetConsistency)),
        ("SHOW lsnpool.consistency", pooler(P::ShowConsistency)),
        ("show LSNPOOL.CONSISTENCY;", pooler(P::ShowConsistency)),
        ("SET lsnpool.session_key = 'user:42'", pooler(P::SetSessionKey { start: 27, end: 34 })),
        ("RESET lsnpool.session_key", pooler(P::Reset(crate::LsnpoolSetting::SessionKey))),
        ("SHOW lsnpool.session_key", pooler(P::Show(crate::LsnpoolSetting::SessionKey))),
        ("SET lsnpool.report_commit_lsn = on", pooler(P::SetReportCommitLsn(true))),
        ("SET lsnpool.report_commit_lsn TO maybe", pooler(P::Invalid(crate::LsnpoolSetting::ReportCommitLsn))),
        ("SET lsnpool.min_lsn = '0/16B3748'", pooler(P::SetMinLsn(crate::Lsn(0x16B3748)))),
        ("SET lsnpool.min_lsn = 'x'", pooler(P::Invalid(crate::LsnpoolSetting::MinLsn))),
        ("SET lsnpool.other = 1", one(C::Session)),
        // --- hints: only comments before the first token count
        ("/* lsnpool:primary */ SELECT 1", R().hint(Hint::Primary)),
        ("-- lsnpool:primary\nSELECT 1", R().hint(Hint::Primary)),
        ("/* lsnpool:consistency=eventual */ SELECT 1", R().hint(Hint::Consistency(L::Eventual))),
        ("/* app:x, LSNPOOL:consistency = bounded */ SELECT 1", R().hint(Hint::Consistency(L::Bounded))),
        ("/* lsnpool:consistency=eventual */ -- lsnpool:primary\n SELECT 1", R().hint(Hint::Primary)),
        ("SELECT 1 /* lsnpool:primary */", R()),
        ("/* lsnpool:consistency=fast */ SELECT 1", R()),
        ("/* lsnpool:primaryx */ SELECT 1", R()),
        ("/*lsnpool:primary*/SELECT 1", R().hint(Hint::Primary)),
        ("/* lsnpool:primary */ UPDATE t SET x = 1", W().hint(Hint::Primary)),
        // --- several statements and empty queries
        ("BEGIN; UPDATE t SET x=1; COMMIT;", ro(false).ends().stmts(3)),
        ("BEGIN READ ONLY; SELECT 1; COMMIT", ro(true).ends().stmts(3)),
        ("SELECT 1; SELECT 2", R().stmts(2)),
        ("SELECT 1; DELETE FROM t", R().writes().stmts(2)),
        ("SELECT my_func(); SELECT 2", R().calls().stmts(2)),
        ("COMMIT; BEGIN", one(C::Commit).writes().stmts(2)),
        ("BEGIN; SET TRANSACTION READ ONLY; SELECT 1", ro(true).stmts(3)),
        ("BEGIN ISOLATION LEVEL SERIALIZABLE; SET TRANSACTION READ ONLY; SELECT 1", ro(false).stmts(3)),
        ("BEGIN READ ONLY; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", ro(false).stmts(2)),
        ("BEGIN READ ONLY; SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; SELECT 1", ro(true).stmts(3)),
        ("BEGIN; SELECT 1; SET TRANSACTION READ ONLY", ro(false).stmts(3)),
        ("BEGIN; SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", ro(false).stmts(2)),
        ("DEALLOCATE a; DEALLOCATE b", one(C::Session).dealloc(Deallocate::Several).stmts(2)),
        ("DEALLOCATE a; DISCARD ALL", one(C::Session).dealloc(Deallocate::All).stmts(2)),
        ("SET lsnpool.consistency = strong; SELECT 1", pooler(P::SetConsistency(L::Strong)).stmts(2)),
        ("", Classification::EMPTY),
        (" ;; ; ", Classification::EMPTY),
        ("/* only a comment */", Classification::EMPTY),
        ("-- lsnpool:primary", Classification::EMPTY.hint(Hint::Primary)),
    ]
}

#[test]
fn classifies_the_table() {
    let table = table();
    assert!(table.len() >= 80);
    let mut failures = Vec::new();
    for (sql, want) in &table {
        let got = classify(sql);
        if got != *want {
            failures.push(format!("{sql:?}\n   want {want:?}\n    got {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} wrong:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );
}

#[test]
fn legacy_string_escapes_are_considered() {
    // With standard_conforming_strings = on this is one string and a read; with it off, the
    // string ends earlier and a DELETE follows. Either way: a write.
    assert!(classify("SELECT 'x\\' ' ; DELETE FROM t; SELECT '").write);
    assert!(classify("SELECT 'a\\'; DELETE FROM t; --'").write);
    // A backslash that means the same either way changes nothing.
    assert_eq!(classify("SELECT * FROM t WHERE s ~ '\\d+'"), one(C::Read));
}

#[test]
fn deallocate_names_as_the_server_sees_them() {
    let name = |sql: &str| {
        let c = classify(sql);
        c.deallocate
            .and_then(|d| d.name(sql.as_bytes()).map(|n| String::from_utf8_lossy(&n).into_owned()))
    };
    assert_eq!(name("DEALLOCATE Foo").as_deref(), Some("foo"));
    assert_eq!(name("DEALLOCATE \"My\"\"Stmt\"").as_deref(), Some("My\"Stmt"));
    assert_eq!(name("DEALLOCATE PREPARE _pg3_0").as_deref(), Some("_pg3_0"));
    assert_eq!(name("DEALLOCATE prepare").as_deref(), Some("prepare"));
    assert_eq!(name("DEALLOCATE ALL"), None);
    let sql = b"DEALLOCATE a; SELECT 1; DEALLOCATE \"B\"";
    let names: Vec<_> = deallocations(sql)
        .filter_map(|d| d.name(sql).map(|n| n.into_owned()))
        .collect();
    assert_eq!(names, [b"a".to_vec(), b"B".to_vec()]);
}

#[test]
fn non_utf8_text() {
    assert_eq!(classify_bytes(b"SELECT \xff\xfe FROM t"), one(C::Read));
    assert!(classify_bytes(b"SELECT '\xff'; UPDATE \xe9t SET x = 1").write);
}

// ---------------------------------------------------------------------------------------------
// Robustness: nothing may panic, overflow the stack or loop forever.

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut buf = Vec::new();
    for _ in 0..20_000 {
        buf.clear();
        for _ in 0..rng.below(64) {
            buf.push(rng.next() as u8);
        }
        let _ = classify_bytes(&buf);
        let _ = deallocations(&buf).count();
    }
}

#[test]
fn random_sql_fragments_never_panic() {
    const FRAGMENTS: &[&str] = &[
        "SELECT ",
        "WITH ",
        "x ",
        "AS ",
        "(",
        ")",
        "(",
        ")",
        ";",
        ",",
        ".",
        "'",
        "''",
        "E'\\'",
        "\"",
        "$$",
        "$a$",
        "$1",
        "--",
        "\n",
        "/*",
        "*/",
        "::",
        "FOR ",
        "UPDATE ",
        "INTO ",
        "EXPLAIN ",
        "ANALYZE ",
        "COPY ",
        "TO ",
        "STDOUT ",
        "DECLARE ",
        "CURSOR ",
        "BEGIN ",
        "ATOMIC ",
        "END ",
        "CASE ",
        "CREATE ",
        "FUNCTION ",
        "SET ",
        "lsnpool",
        ".",
        "consistency",
        "= ",
        "DEALLOCATE ",
        "PREPARE ",
        "f(",
        "nextval(",
        "SEARCH ",
        "CYCLE ",
        "USING ",
        "ROLLBACK ",
        "AND ",
        "CHAIN ",
        "U&'",
        "\\",
        "1.5e",
        "0x",
        "\u{e9}",
    ];
    let mut rng = XorShift(42);
    let mut sql = String::new();
    for _ in 0..20_000 {
        sql.clear();
        for _ in 0..rng.below(24) {
            sql.push_str(FRAGMENTS[rng.below(FRAGMENTS.len())]);
        }
        let _ = classify(&sql);
    }
}

#[test]
fn truncations_and_corruptions_of_the_table_never_panic() {
    let mut rng = XorShift(7);
    for (sql, _) in table() {
        let bytes = sql.as_bytes();
        for end in 0..=bytes.len() {
            let _ = classify_bytes(&bytes[..end]);
            let _ = classify_bytes(&bytes[end..]);
        }
        let mut corrupt = bytes.to_vec();
        for _ in 0..32 {
            if corrupt.is_empty() {
                break;
            }
            let i = rng.below(corrupt.len());
            corrupt[i] = b"'\"$();/*-\\\x80"[rng.below(11)];
            let _ = classify_bytes(&corrupt);
        }
    }
}

#[test]
fn deep_nesting_is_bounded() {
    for unit in [
        "(",
        "COPY (",
        "EXPLAIN ",
        "(WITH x AS (",
        "DECLARE c CURSOR FOR ",
        "WITH x AS (SELECT 1) ",
    ] {
        let sql = unit.repeat(20_000);
        assert!(classify(&sql).write, "{unit}");
    }
    assert!(classify(&"/*".repeat(50_000)).write);
}

// ---------------------------------------------------------------------------------------------
// The hot path does not allocate.

mod alloc_counter {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        pub static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    }

    pub struct Counting;

    // SAFETY: defers to System; only counts.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
            // SAFETY: the caller upholds GlobalAlloc::alloc's contract.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: the caller upholds GlobalAlloc::dealloc's contract.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;
}

#[test]
fn classify_does_not_allocate() {
    let table = table();
    let before = alloc_counter::ALLOCATIONS.with(|n| n.get());
    for (sql, _) in &table {
        std::hint::black_box(classify(std::hint::black_box(sql)));
    }
    let after = alloc_counter::ALLOCATIONS.with(|n| n.get());
    assert_eq!(after - before, 0, "classify allocated");
}

/// `cargo test -p lsnpool-router --release -- --ignored --nocapture speed`
#[test]
#[ignore = "timing; run in release"]
fn speed() {
    const STATEMENTS: &[&str] = &[
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
        "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
        "SELECT u.id, u.name, o.total FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = $1 \
         AND o.created_at > now() - interval '7 days' ORDER BY o.created_at DESC LIMIT 20",
        "BEGIN; UPDATE t SET x = 1 WHERE id = 7; COMMIT;",
        "/* lsnpool:consistency=eventual */ SELECT count(*) FROM t WHERE tags @> ARRAY['a'] AND x = ANY($1)",
    ];
    for sql in STATEMENTS {
        let n = 1_000_000u32;
        let t = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(classify(std::hint::black_box(sql)));
        }
        println!("{:>7.0} ns  {sql}", t.elapsed().as_nanos() as f64 / f64::from(n));
    }
}
