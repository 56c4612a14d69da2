//! Prepared statements: PREPARE creates one (PREPARE TRANSACTION is something else), DEALLOCATE
//! and DISCARD ALL drop them; the pooler tracks which.

use crate::classify::keywords::Kw;
use crate::classify::lexer::Kind;
use super::cursor::{is_name, Stmt};
use super::{Deallocate, Out, StatementClass, WRITE};

/// `PREPARE TRANSACTION 'gid'` ends the transaction (a write); `PREPARE name AS stmt` creates
/// session state.
pub(super) fn prepare(st: &mut Stmt<'_, '_>) -> Out {
    let (a, b) = st.peek2();
    if a.kind == Kind::Word && st.text(a).eq_ignore_ascii_case(b"transaction") && b.kind == Kind::Str {
        return Out {
            ends_transaction: true,
            ..WRITE
        };
    }
    Out::class(StatementClass::Session)
}

/// `DISCARD ALL` drops every prepared statement too.
pub(super) fn discard(st: &mut Stmt<'_, '_>) -> Out {
    let all = st.eat_kw(Kw::All) && st.peek().is_none();
    Out {
        deallocate: all.then_some(Deallocate::All),
        ..Out::class(StatementClass::Session)
    }
}

/// `DEALLOCATE [PREPARE] name|ALL`.
pub(super) fn deallocate(st: &mut Stmt<'_, '_>) -> Out {
    let mut target = st.next();
    // `DEALLOCATE prepare` deallocates a statement named "prepare".
    if let Some(t) = target {
        if st.kw(t) == Some(Kw::Prepare) && st.peek().is_some() {
            target = st.next();
        }
    }
    let deallocate = match target {
        Some(t) if st.kw(t) == Some(Kw::All) => Some(Deallocate::All),
        Some(t) if is_name(t) => Some(Deallocate::Named {
            start: t.start as usize,
            end: t.end as usize,
        }),
        _ => None,
    };
    Out {
        deallocate,
        ..Out::class(StatementClass::Session)
    }
}
