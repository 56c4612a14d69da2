//! Property tests ("fuzz_*") over the statement classifier and the leading-comment directives:
//! arbitrary bytes and SQL-shaped token soup never panic, and a statement's class does not
//! depend on what comments and blanks come before it. Case count: PROPTEST_CASES (`make fuzz`).
use lsnpool_router::{classify_bytes, deallocations, leading_directives, Classification, Deallocate, PoolerCommand, StatementClass};
use proptest::collection::vec;
use proptest::prelude::*;

/// Pieces of SQL that exercise the lexer's states: quotes of every kind (some left open),
/// dollar quotes, nested comments, directives, semicolons, pooler settings.
const TOKENS: &[&str] = &[
    "SELECT", "select", "UPDATE t SET a = 1", "INSERT INTO t VALUES (1)", "DELETE FROM t", "WITH w AS (", ")", "(",
    "BEGIN", "START TRANSACTION", "READ ONLY", "READ WRITE", "ISOLATION LEVEL SERIALIZABLE", "COMMIT", "ROLLBACK",
    "AND CHAIN", "PREPARE TRANSACTION 'x'", "SAVEPOINT s", "SET", "RESET", "SHOW", "LOCAL", "SESSION", "TRANSACTION",
    "lsnpool.consistency", "lsnpool.session_key", "lsnpool.min_lsn", "lsnpool.report_commit_lsn", "=", "TO", "'strong'",
    "'0/16B3748'", "'user:42'", "on", "DEALLOCATE", "ALL", "PREPARE p AS", "EXECUTE p", "DECLARE c CURSOR FOR",
    "WITH HOLD", "FOR UPDATE", "COPY t FROM STDIN", "COPY t TO STDOUT", "EXPLAIN", "ANALYZE", "nextval('s')", "now()",
    "INTO", "FROM", "t", ";", ";;", ",", "'", "''", "\"", "\"q\"", "E'\\''", "$$", "$$x$$", "$a$", "$a$ b $a$", "$1",
    "/*", "*/", "/* c */", "/* /* nested */ */", "--", "-- c\n", "\n", " ", "\t", "/* lsnpool:primary */",
    "/* lsnpool:session_key=user:1 */", "/* lsnpool:min_lsn=0/3000060 */", "/* lsnpool:min_lsn=zz */",
    "/* lsnpool:consistency=global */", "\u{e9}", "\u{0}", "\\", "U&'d\\0061t'", "B'01'", "X'ff'", "::int", "1e5", ".",
];

fn sql_soup() -> impl Strategy<Value = Vec<u8>> {
    vec(prop_oneof![9 => prop::sample::select(TOKENS).prop_map(|t| t.as_bytes().to_vec()), 1 => vec(any::<u8>(), 0..4)], 0..24)
        .prop_map(|parts| parts.join(&b' '))
}

/// Leading matter that must not change a statement's class: blanks and closed comments.
fn leading() -> impl Strategy<Value = String> {
    vec(prop::sample::select(&[" ", "\n", "\t", "/* c */", "/* /* n */ */", "-- c\n", "/* lsnpool:session_key=u:1 */"][..]), 0..6)
        .prop_map(|v| v.concat())
}

/// Byte ranges a classification hands out (a session key's value, a DEALLOCATE's name) lie
/// inside the text: the session slices the client's buffer with them.
fn ranges_inside(c: &Classification, sql: &[u8]) -> Result<(), TestCaseError> {
    if let StatementClass::Pooler(PoolerCommand::SetSessionKey { start, end }) = c.first {
        prop_assert!(start <= end && end as usize <= sql.len(), "session key {}..{} of {}", start, end, sql.len());
    }
    if let Some(Deallocate::Named { start, end }) = c.deallocate {
        prop_assert!(start <= end && end <= sql.len(), "deallocate {}..{} of {}", start, end, sql.len());
        let _ = Deallocate::Named { start, end }.name(sql);
    }
    if matches!(c.deallocate, Some(Deallocate::Several)) {
        let _ = deallocations(sql);
    }
    Ok(())
}

proptest! {
    #[test]
    fn fuzz_classify_arbitrary_bytes(bytes in vec(any::<u8>(), 0..256)) {
        let c = classify_bytes(&bytes);
        prop_assert_eq!(c, classify_bytes(&bytes), "deterministic");
        ranges_inside(&c, &bytes)?;
        let d = leading_directives(&bytes);
        if let Some((s, e)) = d.session_key {
            prop_assert!(s <= e && e as usize <= bytes.len());
        }
    }

    #[test]
    fn fuzz_classify_sql_soup(sql in sql_soup()) {
        let c = classify_bytes(&sql);
        // a write first statement is a write; a pooler command never counts as one
        if c.first.needs_primary() {
            prop_assert!(c.write, "{:?}: first {:?} but write = false", String::from_utf8_lossy(&sql), c.first);
        }
        prop_assert!(c.statements as usize <= sql.len());
        ranges_inside(&c, &sql)?;
        let d = leading_directives(&sql);
        if let Some((s, e)) = d.session_key {
            prop_assert!(s < e && e as usize <= sql.len());
            let key = &sql[s as usize..e as usize];
            prop_assert!(!key.iter().any(|b| b.is_ascii_whitespace()));
        }
    }

    #[test]
    fn fuzz_leading_comments_do_not_change_the_class(lead in leading(), stmt in prop::sample::select(&[
        "SELECT 1", "UPDATE t SET a = 1", "BEGIN READ ONLY", "BEGIN", "COMMIT", "SET lsnpool.consistency = 'strong'",
        "SELECT * FROM t FOR UPDATE", "WITH d AS (DELETE FROM t RETURNING 1) SELECT 1", "SHOW lsnpool.session_key",
    ][..])) {
        let plain = classify_bytes(stmt.as_bytes());
        let led = classify_bytes(format!("{lead}{stmt}").as_bytes());
        prop_assert_eq!(plain.first, led.first);
        prop_assert_eq!(plain.write, led.write);
        prop_assert_eq!(plain.statements, led.statements);
        prop_assert_eq!(stmt.starts_with("UPDATE") || stmt.contains("DELETE") || stmt.contains("FOR UPDATE") || stmt == "BEGIN", led.write);
    }
}
