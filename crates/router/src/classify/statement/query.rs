//! Queries: SELECT, VALUES, TABLE, a parenthesised query and WITH. They are scanned to their end
//! for what makes a query write (a locking clause, `INTO`, a data-modifying CTE, a writing
//! function) and for calls to functions not known to be read-only.

use crate::classify::keywords::{function_kind, FunctionKind, Kw};
use crate::classify::lexer::{Kind, Token};
use super::cursor::{is_name, unquote, Stmt};
use super::{statement, Out, StatementClass, MAX_NESTING, WRITE};

/// What came before the current token, as far as telling a function call apart matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Prev {
    /// `::`: a type name follows (`x::numeric(10,2)`).
    Cast,
    /// `AS`: an alias or a type follows (`AS t(a, b)`, `CAST(x AS numeric(10,2))`).
    As,
    /// `)`: only an alias with a column list can follow (`generate_series(1,3) g(n)`).
    RParen,
    LParen,
    /// `.`: a field name, never a keyword.
    Dot,
    Other,
}

#[derive(Default)]
struct Scan {
    write: bool,
    calls_functions: bool,
}

impl Scan {
    fn add(&mut self, out: Out) {
        self.calls_functions |= out.calls_functions;
        if out.class != StatementClass::Read {
            self.write = true;
        }
    }

    fn out(&self) -> Out {
        let class = if self.write {
            StatementClass::Write
        } else {
            StatementClass::Read
        };
        Out {
            calls_functions: self.calls_functions,
            ..Out::class(class)
        }
    }
}

/// SELECT / VALUES / TABLE / `(`: scans the rest of the query.
pub(super) fn query(st: &mut Stmt<'_, '_>, level: u8, prev: Prev) -> Out {
    let mut scan = Scan::default();
    scan_query(st, &mut scan, prev, level);
    scan.out()
}

fn scan_query(st: &mut Stmt<'_, '_>, scan: &mut Scan, mut prev: Prev, level: u8) {
    while let Some(t) = st.next() {
        prev = match t.kind {
            Kind::Word | Kind::QuotedIdent => query_word(st, t, prev, scan, level),
            Kind::Cast => Prev::Cast,
            Kind::LParen => Prev::LParen,
            Kind::RParen => Prev::RParen,
            Kind::Dot => Prev::Dot,
            _ => Prev::Other,
        };
    }
}

/// A word inside a query: a keyword that makes it write, or a (qualified) name that may be a
/// function call.
fn query_word(st: &mut Stmt<'_, '_>, first: Token, ctx: Prev, scan: &mut Scan, level: u8) -> Prev {
    if ctx == Prev::Dot {
        return Prev::Other; // `t.update`: a column
    }
    // After AS a keyword is an alias (`SELECT 1 AS update`); only the call check below applies.
    let kw = if ctx == Prev::As { None } else { st.kw(first) };
    match kw {
        // INSERT/UPDATE/DELETE/MERGE inside a query: a data-modifying CTE or a subquery that
        // is not a plain SELECT. INTO: SELECT ... INTO creates a table.
        Some(Kw::Insert | Kw::Update | Kw::Delete | Kw::Merge | Kw::Into) => {
            scan.write = true;
            return Prev::Other;
        }
        // FOR UPDATE / FOR SHARE / FOR NO KEY UPDATE / FOR KEY SHARE: row locks need the primary.
        Some(Kw::For) => {
            if matches!(st.peek_kw(), Some(Kw::Update | Kw::Share | Kw::No | Kw::Key)) {
                scan.write = true;
            }
            return Prev::Other;
        }
        Some(Kw::As) => return Prev::As,
        // `(WITH x AS (...) SELECT ...)`: a nested WITH, parsed like a top-level one so that
        // its CTE names are not taken for function calls.
        Some(Kw::With) if ctx == Prev::LParen => {
            let out = with_query_nested(st, level);
            scan.add(out);
            return Prev::Other;
        }
        _ => {}
    }
    let mut qualifier = None;
    let mut name = first;
    while st.peek_kind() == Some(Kind::Dot) {
        let (_, after) = st.peek2();
        if !is_name(after) {
            break; // `t.*`
        }
        st.next();
        qualifier = Some(name);
        match st.next() {
            Some(part) => name = part,
            None => break,
        }
    }
    if st.peek_kind() == Some(Kind::LParen) {
        // After `::`, `AS` or `)` a name before `(` is a type (`numeric(10,2)`) or an alias with
        // a column list (`g(n)`), not a call; a writing function's name still counts.
        let type_or_alias = matches!(ctx, Prev::Cast | Prev::As | Prev::RParen);
        function_call(st, qualifier, name, type_or_alias, scan);
    }
    Prev::Other
}

/// `WITH` just after a `(`: the nested query ends at the matching `)`.
fn with_query_nested(st: &mut Stmt<'_, '_>, level: u8) -> Out {
    if level > MAX_NESTING {
        return WRITE;
    }
    let mut inner = st.nested();
    let out = with_query(&mut inner, level + 1);
    inner.skip_rest();
    out
}

fn function_call(st: &Stmt<'_, '_>, qualifier: Option<Token>, name: Token, type_or_alias: bool, scan: &mut Scan) {
    let folded = name.kind == Kind::Word;
    let text = unquote(st.text(name), name.kind);
    let builtin_scope = match qualifier {
        None => true,
        Some(q) => unquote(st.text(q), q.kind).eq_ignore_ascii_case(b"pg_catalog"),
    };
    match function_kind(text, folded, builtin_scope) {
        FunctionKind::Writes => scan.write = true,
        FunctionKind::Unknown if !type_or_alias => scan.calls_functions = true,
        FunctionKind::Unknown | FunctionKind::NotAFunction | FunctionKind::ReadOnly => {}
    }
}

/// `WITH [RECURSIVE] name [(cols)] AS [[NOT] MATERIALIZED] (stmt) [SEARCH ...] [CYCLE ...], ...
/// main_stmt`: a read only if every CTE and the main statement are reads.
pub(super) fn with_query(st: &mut Stmt<'_, '_>, level: u8) -> Out {
    let mut scan = Scan::default();
    st.eat_kw(Kw::Recursive);
    loop {
        if !st.next().is_some_and(is_name) {
            return WRITE;
        }
        if st.peek_kind() == Some(Kind::LParen) {
            st.skip_group();
        }
        if !st.eat_kw(Kw::As) {
            return WRITE;
        }
        st.eat_kw(Kw::Not);
        st.eat_kw(Kw::Materialized);
        if !st.eat(Kind::LParen) {
            return WRITE;
        }
        let cte = st.sub_statement(level);
        if !st.eat(Kind::RParen) {
            return WRITE;
        }
        scan.add(cte);
        // SEARCH {BREADTH|DEPTH} FIRST BY a, b SET col / CYCLE a, b SET col [TO v DEFAULT d] USING col
        if st.eat_kw(Kw::Search) {
            skip_past(st, Kw::Set);
            st.next();
        }
        if st.eat_kw(Kw::Cycle) {
            skip_past(st, Kw::Using);
            st.next();
        }
        if !st.eat(Kind::Comma) {
            break;
        }
    }
    scan.add(statement(st, level + 1));
    scan.out()
}

fn skip_past(st: &mut Stmt<'_, '_>, kw: Kw) {
    while let Some(t) = st.next() {
        if st.kw(t) == Some(kw) {
            return;
        }
    }
}
