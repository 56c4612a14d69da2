//! Statements that wrap a query (EXPLAIN, COPY, DECLARE), classified by it, and CREATE, a write
//! whose only question is where it ends.

use crate::classify::keywords::Kw;
use crate::classify::lexer::Kind;
use super::cursor::{is_name, unquote, Stmt};
use super::settings::is_false;
use super::{statement, Out, StatementClass, WRITE};

/// `EXPLAIN [ANALYZE] [VERBOSE] stmt` / `EXPLAIN (option [value], ...) stmt`: a read if the
/// statement is one. Without ANALYZE nothing runs, so its function calls do not count.
pub(super) fn explain(st: &mut Stmt<'_, '_>, level: u8) -> Out {
    let mut analyze = false;
    if st.eat(Kind::LParen) {
        analyze = explain_options(st);
        if !st.eat(Kind::RParen) {
            return WRITE;
        }
    } else {
        loop {
            match st.peek_kw() {
                Some(Kw::Analyze | Kw::Analyse) => analyze = true,
                Some(Kw::Verbose) => {}
                _ => break,
            }
            st.next();
        }
    }
    let inner = statement(st, level + 1);
    if inner.class != StatementClass::Read {
        return WRITE;
    }
    Out {
        calls_functions: analyze && inner.calls_functions,
        ..Out::class(StatementClass::Read)
    }
}

/// The options up to the closing `)` (left unconsumed): is ANALYZE on?
fn explain_options(st: &mut Stmt<'_, '_>) -> bool {
    let mut analyze = false;
    let mut opts = st.nested();
    while let Some(name) = opts.next() {
        let is_analyze = matches!(opts.kw(name), Some(Kw::Analyze | Kw::Analyse));
        let mut on = true;
        while let Some(t) = opts.next() {
            if t.kind == Kind::Comma && !opts.unclosed() {
                break;
            }
            on &= !is_false(unquote(opts.text(t), t.kind));
        }
        analyze |= is_analyze && on;
    }
    analyze
}

/// `COPY table [(cols)] TO STDOUT` and `COPY (query) TO STDOUT` read; `COPY ... FROM` writes,
/// and so does `COPY ... TO 'file'|PROGRAM` (a file on the server that runs it).
pub(super) fn copy(st: &mut Stmt<'_, '_>, level: u8) -> Out {
    let mut out = Out::class(StatementClass::Read);
    if st.eat(Kind::LParen) {
        let inner = st.sub_statement(level);
        if !st.eat(Kind::RParen) || inner.class != StatementClass::Read {
            return WRITE;
        }
        out.calls_functions = inner.calls_functions;
    } else {
        st.eat_kw(Kw::Binary); // pre-7.3 syntax, still accepted
        if !skip_qualified_name(st) {
            return WRITE;
        }
        if st.peek_kind() == Some(Kind::LParen) {
            st.skip_group();
        }
    }
    if st.eat_kw(Kw::To) && st.eat_kw(Kw::Stdout) {
        out
    } else {
        WRITE
    }
}

fn skip_qualified_name(st: &mut Stmt<'_, '_>) -> bool {
    if !st.next().is_some_and(is_name) {
        return false;
    }
    while st.eat(Kind::Dot) {
        if !st.next().is_some_and(is_name) {
            return false;
        }
    }
    true
}

/// `DECLARE name [BINARY] [ASENSITIVE|INSENSITIVE] [[NO] SCROLL] CURSOR [WITH|WITHOUT HOLD] FOR
/// query`. A cursor WITH HOLD outlives its transaction: session state.
pub(super) fn declare(st: &mut Stmt<'_, '_>, level: u8) -> Out {
    if !st.next().is_some_and(is_name) {
        return WRITE;
    }
    loop {
        match st.next() {
            Some(t) if st.kw(t) == Some(Kw::Cursor) => break,
            Some(_) => {}
            None => return WRITE,
        }
    }
    let mut hold = false;
    if st.eat_kw(Kw::With) {
        hold = st.eat_kw(Kw::Hold);
    } else if st.eat_kw(Kw::Without) {
        st.eat_kw(Kw::Hold);
    }
    if !st.eat_kw(Kw::For) {
        return WRITE;
    }
    let inner = statement(st, level + 1);
    if inner.class != StatementClass::Read {
        return WRITE;
    }
    let class = if hold {
        StatementClass::Session
    } else {
        StatementClass::TransactionNeutral
    };
    Out {
        calls_functions: inner.calls_functions,
        ..Out::class(class)
    }
}

/// CREATE: a write. Only its extent needs care: a `CREATE [OR REPLACE] FUNCTION|PROCEDURE` with
/// a `BEGIN ATOMIC ... END` body has `;` inside. psql's heuristic: count BEGIN (and CASE inside
/// one) against END, outside parentheses.
pub(super) fn create(st: &mut Stmt<'_, '_>) -> Out {
    if st.eat_kw(Kw::Or) {
        st.eat_kw(Kw::Replace);
    }
    if !matches!(st.peek_kw(), Some(Kw::Function | Kw::Procedure)) {
        return WRITE;
    }
    let mut blocks = 0u32;
    loop {
        match st.next() {
            Some(t) if !st.unclosed() => match st.kw(t) {
                Some(Kw::Begin) => blocks += 1,
                Some(Kw::Case) if blocks > 0 => blocks += 1,
                Some(Kw::End) => blocks = blocks.saturating_sub(1),
                _ => {}
            },
            Some(_) => {}
            None if blocks > 0 && st.step_over_semi() => {}
            None => return WRITE,
        }
    }
}
