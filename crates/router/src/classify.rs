//! Statement classification: may a replica run this SQL, and what does it do to the transaction?
//!
//! # Why a hand-written lexer and not a parser
//!
//! Checked before writing this (the numbers are from this machine):
//!
//! * `sqlparser` 0.64 (pure Rust), PostgreSQL dialect, release build: of ~100 valid PostgreSQL
//!   statements it rejected 18. Some are writes that would reach the primary anyway (`DO $$..$$`,
//!   `VACUUM ANALYZE t`, `CLUSTER`, `REINDEX`, `CHECKPOINT`, `PREPARE TRANSACTION`,
//!   `COMMIT PREPARED`, `SECURITY LABEL`, `REASSIGN OWNED`, `IMPORT FOREIGN SCHEMA`), but it also
//!   rejected reads and transaction control that must reach a replica: `TABLE t`, `SELECT 'a'
//!   <newline> 'b'`, `ROWS FROM (...)`, `GROUP BY DISTINCT`, `(t).*`, `BETWEEN SYMMETRIC`,
//!   `xmlelement(name foo)`, `OPERATOR(pg_catalog.+)`, `MOVE NEXT IN c`,
//!   `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY DEFERRABLE`, and the locking clauses
//!   `FOR NO KEY UPDATE` / `FOR KEY SHARE`. Each rejected read would go to the primary for
//!   nothing. It took 6.7 µs to parse the pgbench SELECT, 5.4 µs the pgbench UPDATE and 20 µs a
//!   three-line join, all allocating an AST. Dollar quotes, `::`, `@>`, `->>`, `$1`, MERGE, COPY,
//!   LOCK, `SET LOCAL` and `SHOW` were fine.
//! * `pg_query` (PostgreSQL's own grammar, via libpg_query) would accept exactly what the server
//!   accepts, but it builds PostgreSQL's parser from C, needs libclang (not installed here: one
//!   more system package for every developer and CI machine), and each call builds a parse tree
//!   in C, serialises it to protobuf and decodes it into Rust structs: tens of allocations and
//!   microseconds per statement. Not built here for that reason.
//! * The question asked of each statement is small: its first keyword, a few clauses (locking,
//!   INTO, data-modifying CTEs, EXPLAIN ANALYZE, COPY direction) and the names of called
//!   functions. A lexer that gets token boundaries exactly right (strings, E'' escapes, dollar
//!   quotes, quoted identifiers, nested comments; see `lexer.rs`) answers all of it. It never
//!   fails on valid SQL (there is no grammar to fall short of), never allocates, and classifies
//!   the pgbench SELECT in a few hundred nanoseconds (see the `speed` test, run with
//!   `cargo test -p lsnpool-router --release -- --ignored --nocapture speed`).
//!
//! What the lexer cannot see, it treats conservatively: an unrecognised statement, an
//! unterminated literal or a stray `)` is a [`StatementClass::Write`]. A read wrongly called a
//! write costs a trip to the primary; a write wrongly called a read fails on the replica with
//! SQLSTATE 25006 and the router retries it on the primary.
//!
//! `standard_conforming_strings = off` (backslash escapes in '...') changes where strings end.
//! Only a plain string containing a backslash can be affected; the text is then classified both
//! ways and the more conservative answer kept.
//!
//! # Benchmarking
//!
//! `classify` is a pure function of the text: `c.bench_function("classify", |b|
//! b.iter(|| classify(black_box("SELECT abalance FROM pgbench_accounts WHERE aid = $1"))))`.

mod directives;
mod keywords;
mod lexer;
mod statement;
#[cfg(test)]
mod tests;

use crate::Consistency;
use lexer::{Kind, Lexer};
pub use directives::{leading_directives, Directives};
use statement::{Out, Stmt};
use std::borrow::Cow;

/// What one SQL statement (or a whole multi-statement simple Query) needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatementClass {
    /// SELECT / WITH / VALUES / TABLE / SHOW, EXPLAIN of a read, `COPY ... TO STDOUT`: a replica
    /// may run it.
    Read,
    /// DML, DDL, GRANT, VACUUM, LOCK, CALL, DO, COPY FROM, COPY TO a server file, locking reads
    /// (FOR UPDATE | SHARE | NO KEY UPDATE | KEY SHARE), SELECT INTO, data-modifying CTEs,
    /// writing functions, EXPLAIN of a write, PREPARE TRANSACTION, COMMIT/ROLLBACK PREPARED,
    /// anything unrecognised or malformed.
    Write,
    /// BEGIN / START TRANSACTION. `read_only` means a replica may run the transaction: READ ONLY
    /// was given, and not ISOLATION LEVEL SERIALIZABLE (a hot standby refuses serializable).
    Begin { read_only: bool },
    /// SET TRANSACTION READ ONLY / READ WRITE (and ISOLATION LEVEL SERIALIZABLE, which is
    /// `read_only: false`), `SET transaction_read_only = on|off`, and SET SESSION CHARACTERISTICS
    /// AS TRANSACTION READ ONLY / READ WRITE. Note the last one changes the session default, not
    /// only the current transaction. SET TRANSACTION that says nothing about access mode is
    /// [`StatementClass::TransactionNeutral`]; SET TRANSACTION SNAPSHOT is a write.
    SetTransaction { read_only: bool },
    /// COMMIT, END, COMMIT AND CHAIN (see [`Classification::chain`]). Not COMMIT PREPARED.
    Commit,
    /// ROLLBACK, ABORT, ROLLBACK AND CHAIN. Not ROLLBACK TO SAVEPOINT, not ROLLBACK PREPARED.
    Rollback,
    /// SAVEPOINT, RELEASE, ROLLBACK TO, SET LOCAL, SET CONSTRAINTS, SET TRANSACTION ISOLATION
    /// LEVEL (not serializable), DECLARE of a read (without HOLD), FETCH, MOVE, CLOSE: fine
    /// inside a read-only transaction on a replica.
    TransactionNeutral,
    /// SET / RESET (not LOCAL), DISCARD, DEALLOCATE, LISTEN, UNLISTEN, LOAD, PREPARE, EXECUTE,
    /// DECLARE ... WITH HOLD, SET SESSION AUTHORIZATION: session state; goes to the primary.
    Session,
    /// Answered by the pooler itself, never sent to a server.
    Pooler(PoolerCommand),
}

impl StatementClass {
    /// Must run on the primary: Write, Session, `Begin { read_only: false }`,
    /// `SetTransaction { read_only: false }`.
    pub fn needs_primary(self) -> bool {
        matches!(
            self,
            StatementClass::Write
                | StatementClass::Session
                | StatementClass::Begin { read_only: false }
                | StatementClass::SetTransaction { read_only: false }
        )
    }
}

/// The pooler's own settings commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolerCommand {
    /// `SET [SESSION|LOCAL] lsnpool.consistency {=|TO} 'level'` (quoted or not, `_` or `-`,
    /// any case). LOCAL is accepted and treated like SESSION: the pooler keeps no
    /// per-transaction level.
    SetConsistency(Consistency),
    /// `RESET lsnpool.consistency`, `SET lsnpool.consistency TO DEFAULT`.
    ResetConsistency,
    /// `SHOW lsnpool.consistency`.
    ShowConsistency,
    /// `SET lsnpool.consistency` with a missing or unknown value: answer with an error.
    InvalidConsistency,
    /// `SET lsnpool.session_key = 'user:42'`: the value is `sql[start..end]` (unquoted).
    SetSessionKey { start: u32, end: u32 },
    /// `SET lsnpool.report_commit_lsn = on|off`.
    SetReportCommitLsn(bool),
    /// `SET lsnpool.min_lsn = '0/16B3748'`: a commit token for the session's reads.
    SetMinLsn(crate::Lsn),
    /// `RESET` (or `SET … TO DEFAULT`) of one of the other lsnpool settings.
    Reset(LsnpoolSetting),
    /// `SHOW` of one of the other lsnpool settings.
    Show(LsnpoolSetting),
    /// `SET` of one of the other lsnpool settings with a missing or invalid value.
    Invalid(LsnpoolSetting),
}

/// The lsnpool settings besides `lsnpool.consistency` (issue 10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LsnpoolSetting {
    SessionKey,
    ReportCommitLsn,
    MinLsn,
}

impl LsnpoolSetting {
    pub fn name(self) -> &'static str {
        match self {
            LsnpoolSetting::SessionKey => "lsnpool.session_key",
            LsnpoolSetting::ReportCommitLsn => "lsnpool.report_commit_lsn",
            LsnpoolSetting::MinLsn => "lsnpool.min_lsn",
        }
    }

    /// By the name after `lsnpool.`, ignoring case.
    pub(crate) fn by_suffix(s: &[u8]) -> Option<LsnpoolSetting> {
        [LsnpoolSetting::SessionKey, LsnpoolSetting::ReportCommitLsn, LsnpoolSetting::MinLsn]
            .into_iter()
            .find(|p| p.name().as_bytes()[b"lsnpool.".len()..].eq_ignore_ascii_case(s))
    }
}

impl PoolerCommand {
    /// The setting a SHOW returns (its column name), if this is a SHOW.
    pub fn shows(self) -> Option<&'static str> {
        match self {
            PoolerCommand::ShowConsistency => Some("lsnpool.consistency"),
            PoolerCommand::Show(p) => Some(p.name()),
            _ => None,
        }
    }
}

/// A routing hint from a comment before the first token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hint {
    /// `/* lsnpool:primary */` or `-- lsnpool:primary`.
    Primary,
    /// `/* lsnpool:consistency=eventual */`.
    Consistency(Consistency),
}

/// Prepared statements a simple Query drops (the pooler tracks them itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deallocate {
    /// DEALLOCATE [PREPARE] ALL or DISCARD ALL.
    All,
    /// One `DEALLOCATE [PREPARE] name`: `sql[start..end]` is the name as written (a word or a
    /// "quoted identifier"); [`Deallocate::name`] gives it as the server will see it.
    Named { start: usize, end: usize },
    /// More than one DEALLOCATE name: [`deallocations`] lists them.
    Several,
}

impl Deallocate {
    /// The statement name of [`Deallocate::Named`] as PostgreSQL resolves it: an unquoted name
    /// folded to lower case, a quoted one unquoted. None for the other variants and for a
    /// `U&"..."` name (its escapes are not decoded).
    pub fn name<'a>(&self, sql: &'a [u8]) -> Option<Cow<'a, [u8]>> {
        let Deallocate::Named { start, end } = *self else {
            return None;
        };
        let raw = sql.get(start..end)?;
        match raw.first() {
            Some(b'"') => {
                let inner = raw.get(1..raw.len().saturating_sub(1))?;
                if inner.windows(2).any(|w| w == b"\"\"") {
                    let mut out = Vec::with_capacity(inner.len());
                    let mut i = 0;
                    while let Some(&b) = inner.get(i) {
                        out.push(b);
                        i += if b == b'"' { 2 } else { 1 };
                    }
                    Some(Cow::Owned(out))
                } else {
                    Some(Cow::Borrowed(inner))
                }
            }
            Some(b'u' | b'U') if raw.get(1) == Some(&b'&') => None,
            _ if raw.iter().any(u8::is_ascii_uppercase) => Some(Cow::Owned(raw.to_ascii_lowercase())),
            _ => Some(Cow::Borrowed(raw)),
        }
    }
}

/// What a whole simple Query (one or more statements) needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classification {
    /// The class of the first statement (what opens the transaction). Read when there is none.
    /// A BEGIN followed in the same Query by SET TRANSACTION (before any other statement but
    /// SAVEPOINT-like ones) reports the transaction as the two together make it:
    /// `BEGIN; SET TRANSACTION READ ONLY` is `Begin { read_only: true }`.
    pub first: StatementClass,
    /// Some statement must run on the primary ([`StatementClass::needs_primary`]). Pooler
    /// commands do not count: they never reach a server.
    pub write: bool,
    /// Some statement ends the transaction: Commit, Rollback, or PREPARE TRANSACTION. Predicts
    /// the end of a transaction for LSN capture.
    pub ends_transaction: bool,
    /// A COMMIT/ROLLBACK ... AND CHAIN: the transaction ends but a new one starts at once, so
    /// ReadyForQuery will say 'T' although the commit happened.
    pub chain: bool,
    /// A read (or a cursor's query, or EXPLAIN ANALYZE's statement) calls a function not known
    /// to be read-only. The router may still try a replica: a write there fails with SQLSTATE
    /// 25006 and is retried on the primary. Only meaningful when `write` is false.
    pub calls_functions: bool,
    /// The number of non-empty statements.
    pub statements: u32,
    /// From a comment before the first token. `primary` wins over `consistency=`; an unknown
    /// level is ignored.
    pub hint: Option<Hint>,
    /// DEALLOCATE / DISCARD ALL anywhere in the query.
    pub deallocate: Option<Deallocate>,
}

impl Classification {
    const EMPTY: Classification = Classification {
        first: StatementClass::Read,
        write: false,
        ends_transaction: false,
        chain: false,
        calls_functions: false,
        statements: 0,
        hint: None,
        deallocate: None,
    };
}

/// Folds statements into a [`Classification`].
struct Acc {
    c: Classification,
    /// A statement other than the first needs the primary.
    rest_write: bool,
    /// The Query opened with BEGIN and nothing but transaction-neutral statements followed yet:
    /// a SET TRANSACTION now still shapes the transaction BEGIN opened.
    opening: Option<statement::TxModes>,
}

impl Acc {
    fn new() -> Acc {
        Acc {
            c: Classification::EMPTY,
            rest_write: false,
            opening: None,
        }
    }

    fn add(&mut self, out: &Out) {
        let c = &mut self.c;
        match (self.opening, out.class, out.tx_modes) {
            (_, _, _) if c.statements == 0 => {
                c.first = out.class;
                self.opening = if matches!(out.class, StatementClass::Begin { .. }) {
                    out.tx_modes
                } else {
                    None
                };
            }
            // `BEGIN; SET TRANSACTION READ ONLY; ...` is a read-only transaction.
            (Some(mut modes), StatementClass::SetTransaction { .. }, Some(set)) => {
                modes.read_only = set.read_only.or(modes.read_only);
                modes.needs_primary |= set.needs_primary;
                c.first = StatementClass::Begin {
                    read_only: modes.replica_ok(),
                };
                self.opening = Some(modes);
            }
            (Some(_), StatementClass::TransactionNeutral, _) => {}
            _ => {
                self.opening = None;
                self.rest_write |= out.class.needs_primary();
            }
        }
        c.statements = c.statements.saturating_add(1);
        c.ends_transaction |=
            out.ends_transaction || matches!(out.class, StatementClass::Commit | StatementClass::Rollback);
        c.chain |= out.chain;
        c.calls_functions |= out.calls_functions;
        c.deallocate = match (c.deallocate, out.deallocate) {
            (d, None) => d,
            (None, d) => d,
            (Some(Deallocate::All), _) | (_, Some(Deallocate::All)) => Some(Deallocate::All),
            (Some(_), Some(_)) => Some(Deallocate::Several),
        };
    }

    fn finish(self) -> Classification {
        Classification {
            write: self.rest_write || self.c.first.needs_primary(),
            ..self.c
        }
    }
}

/// Classifies the text of a simple Query (or of a Parse message).
pub fn classify(sql: &str) -> Classification {
    classify_bytes(sql.as_bytes())
}

/// [`classify`] for text that may not be UTF-8 (a client_encoding other than UTF8). Every byte
/// >= 0x80 is taken for a letter, as the server's lexer does.
pub fn classify_bytes(sql: &[u8]) -> Classification {
    if sql.len() >= lexer::MAX_LEN {
        return Classification {
            first: StatementClass::Write,
            write: true,
            statements: 1,
            ..Classification::EMPTY
        };
    }
    let (mut c, ambiguous) = classify_with(sql, false);
    if ambiguous {
        // Some '...' held a backslash: under standard_conforming_strings = off it may end
        // elsewhere. Keep whichever reading needs more.
        let (legacy, _) = classify_with(sql, true);
        if legacy != c {
            c.write |= legacy.write;
            c.ends_transaction |= legacy.ends_transaction;
            c.chain |= legacy.chain;
            c.calls_functions |= legacy.calls_functions;
        }
    }
    c.hint = leading_hint(sql);
    c
}

fn classify_with(sql: &[u8], legacy_strings: bool) -> (Classification, bool) {
    let mut lx = Lexer::new(sql, legacy_strings);
    let mut acc = Acc::new();
    while let Some(out) = next_statement(&mut lx) {
        acc.add(&out);
    }
    (acc.finish(), lx.saw_plain_backslash)
}

/// Classifies the next non-empty statement and consumes it with its `;`.
fn next_statement(lx: &mut Lexer<'_>) -> Option<Out> {
    loop {
        match lx.peek().kind {
            Kind::Semi => {
                lx.next();
            }
            Kind::Eof => return None,
            _ => break,
        }
    }
    let mut st = Stmt::top(lx);
    let mut out = statement::statement(&mut st, 0);
    st.skip_rest();
    // A stray `)` or an unclosed `(`: the server rejects it.
    let malformed = st.malformed || st.unclosed();
    // The terminator: `;`, the end, or an unterminated literal (after which all is Eof).
    lx.next();
    if malformed || lx.failed {
        out.class = StatementClass::Write;
    }
    Some(out)
}

/// Every DEALLOCATE / DISCARD ALL in `sql`, in order (for [`Deallocate::Several`]).
pub fn deallocations(sql: &[u8]) -> impl Iterator<Item = Deallocate> + '_ {
    let mut lx = Lexer::new(sql.get(..lexer::MAX_LEN).unwrap_or(sql), false);
    std::iter::from_fn(move || next_statement(&mut lx)).filter_map(|out| out.deallocate)
}

/// The hint in the comments before the first token, if any.
fn leading_hint(sql: &[u8]) -> Option<Hint> {
    let mut hint = None;
    lexer::for_each_leading_comment(sql, |body| {
        let mut rest = body;
        while let Some(at) = find_ignore_case(rest, b"lsnpool:") {
            rest = rest.get(at + b"lsnpool:".len()..).unwrap_or(&[]);
            match (hint, parse_hint(rest)) {
                (_, Some(Hint::Primary)) => hint = Some(Hint::Primary),
                (None, Some(h)) => hint = Some(h),
                _ => {}
            }
        }
    });
    hint
}

/// `primary` or `consistency=level` at the start of `s`.
fn parse_hint(s: &[u8]) -> Option<Hint> {
    let word = hint_word(s);
    if word.eq_ignore_ascii_case(b"primary") {
        return Some(Hint::Primary);
    }
    if !word.eq_ignore_ascii_case(b"consistency") {
        return None;
    }
    let rest = s
        .get(word.len()..)?
        .trim_ascii_start()
        .strip_prefix(b"=")?
        .trim_ascii_start();
    parse_consistency(hint_word(rest)).map(Hint::Consistency)
}

fn hint_word(s: &[u8]) -> &[u8] {
    let end = s
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-'))
        .unwrap_or(s.len());
    s.get(..end).unwrap_or(&[])
}

fn find_ignore_case(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w.eq_ignore_ascii_case(needle))
}

/// A consistency level by name, ignoring case and surrounding blanks, `_` standing for `-`.
/// (Consistency's FromStr allocates; this is the hot path's version.)
pub(crate) fn parse_consistency(v: &[u8]) -> Option<Consistency> {
    let v = v.trim_ascii();
    Consistency::ALL.into_iter().find(|c| {
        let name = c.as_str().as_bytes();
        name.len() == v.len()
            && name
                .iter()
                .zip(v)
                .all(|(&n, &b)| n == b.to_ascii_lowercase() || (n == b'-' && b == b'_'))
    })
}
