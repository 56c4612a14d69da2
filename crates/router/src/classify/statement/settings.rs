//! Settings: SET, RESET and SHOW. Most are session state; `lsnpool.consistency` is answered by
//! the pooler, and `transaction_read_only` / `transaction_isolation` act like SET TRANSACTION.

use crate::classify::keywords::Kw;
use crate::classify::lexer::Kind;
use crate::classify::{parse_consistency, LsnpoolSetting, PoolerCommand};
use super::cursor::{is_name, unquote, Stmt};
use super::transaction::{set_transaction, transaction_modes, TxModes};
use super::{Out, StatementClass, WRITE};

/// The parameter names the classifier treats specially.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Param {
    /// `lsnpool.consistency`: answered by the pooler.
    LsnpoolConsistency,
    /// The pooler's other settings (`lsnpool.session_key`, …).
    Lsnpool(LsnpoolSetting),
    /// `transaction_read_only`: the same as SET TRANSACTION READ ONLY / READ WRITE.
    TransactionReadOnly,
    /// `transaction_isolation`: matters only when SERIALIZABLE.
    TransactionIsolation,
    Other,
}

/// Reads a (possibly qualified, possibly quoted) parameter name. GUC names ignore case.
fn param_name(st: &mut Stmt<'_, '_>) -> Param {
    let Some(first) = st.next() else { return Param::Other };
    if !is_name(first) {
        return Param::Other;
    }
    let first_text = unquote(st.text(first), first.kind);
    if !st.eat(Kind::Dot) {
        let quoted_lsnpool = first.kind == Kind::QuotedIdent
            && first_text.get(..b"lsnpool.".len()).is_some_and(|p| p.eq_ignore_ascii_case(b"lsnpool."));
        let suffix = first_text.get(b"lsnpool.".len()..).unwrap_or_default();
        return if quoted_lsnpool && suffix.eq_ignore_ascii_case(b"consistency") {
            Param::LsnpoolConsistency
        } else if let Some(p) = LsnpoolSetting::by_suffix(suffix).filter(|_| quoted_lsnpool) {
            Param::Lsnpool(p)
        } else if first_text.eq_ignore_ascii_case(b"transaction_read_only") {
            Param::TransactionReadOnly
        } else if first_text.eq_ignore_ascii_case(b"transaction_isolation") {
            Param::TransactionIsolation
        } else {
            Param::Other
        };
    }
    let Some(second) = st.next() else { return Param::Other };
    if !(is_name(second) && first_text.eq_ignore_ascii_case(b"lsnpool") && st.peek_kind() != Some(Kind::Dot)) {
        return Param::Other;
    }
    let suffix = unquote(st.text(second), second.kind);
    if suffix.eq_ignore_ascii_case(b"consistency") {
        Param::LsnpoolConsistency
    } else {
        LsnpoolSetting::by_suffix(suffix).map_or(Param::Other, Param::Lsnpool)
    }
}

/// The value of `SET name {TO|=} value`: one token's unquoted text, or the raw text of several
/// (so an unquoted `read-your-writes` reads as written). None if there is no value.
struct Value<'a> {
    text: &'a [u8],
    is_default: bool,
}

fn set_value<'a>(st: &mut Stmt<'_, 'a>) -> Option<Value<'a>> {
    let op = st.next()?;
    if !(st.text(op) == b"=" || st.kw(op) == Some(Kw::To)) {
        return None;
    }
    let first = st.next()?;
    let mut last = first;
    while let Some(t) = st.next() {
        last = t;
    }
    if first == last {
        let text = unquote(st.text(first), first.kind);
        let is_default = st.kw(first) == Some(Kw::Default);
        return Some(Value { text, is_default });
    }
    let text = st.span(first, last);
    Some(Value {
        text,
        is_default: false,
    })
}

/// `SET [SESSION|LOCAL] ...`.
pub(super) fn set(st: &mut Stmt<'_, '_>) -> Out {
    use StatementClass as C;
    let mut local = false;
    match st.peek_kw() {
        Some(Kw::Session) => {
            st.next();
            match st.peek_kw() {
                // SET SESSION CHARACTERISTICS AS TRANSACTION modes: the session's default, so
                // it is not folded into a preceding BEGIN (no tx_modes).
                Some(Kw::Characteristics) => {
                    st.next();
                    let modes = transaction_modes(st);
                    return Out::class(set_transaction(&modes, C::Session));
                }
                Some(Kw::Authorization) => return Out::class(C::Session),
                _ => {}
            }
        }
        Some(Kw::Local) => {
            st.next();
            local = true;
        }
        _ => {}
    }
    match st.peek_kw() {
        Some(Kw::Transaction) => {
            st.next();
            let modes = transaction_modes(st);
            return Out::with_modes(set_transaction(&modes, C::TransactionNeutral), modes.tx());
        }
        Some(Kw::Constraints) => return Out::class(C::TransactionNeutral),
        _ => {}
    }
    match param_name(st) {
        // SET LOCAL lsnpool.consistency is answered like SET: the pooler has no per-transaction
        // level (see PoolerCommand::SetConsistency).
        Param::LsnpoolConsistency => Out::class(C::Pooler(match set_value(st) {
            None => PoolerCommand::InvalidConsistency,
            Some(v) if v.is_default => PoolerCommand::ResetConsistency,
            Some(v) => {
                parse_consistency(v.text).map_or(PoolerCommand::InvalidConsistency, PoolerCommand::SetConsistency)
            }
        })),
        Param::Lsnpool(p) => {
            let src = st.src();
            Out::class(C::Pooler(set_lsnpool(p, set_value(st), src)))
        }
        Param::TransactionReadOnly => match set_value(st).map(|v| bool_value(v.text)) {
            Some(Some(read_only)) => Out::with_modes(
                C::SetTransaction { read_only },
                TxModes {
                    read_only: Some(read_only),
                    needs_primary: false,
                },
            ),
            _ => WRITE,
        },
        Param::TransactionIsolation => match set_value(st) {
            Some(v) if v.text.eq_ignore_ascii_case(b"serializable") => Out::with_modes(
                C::SetTransaction { read_only: false },
                TxModes {
                    read_only: None,
                    needs_primary: true,
                },
            ),
            _ => Out::class(C::TransactionNeutral),
        },
        Param::Other if local => Out::class(C::TransactionNeutral),
        Param::Other => Out::class(C::Session),
    }
}

fn bool_value(v: &[u8]) -> Option<bool> {
    if [&b"on"[..], b"true", b"yes", b"1"]
        .iter()
        .any(|t| v.eq_ignore_ascii_case(t))
    {
        Some(true)
    } else if is_false(v) {
        Some(false)
    } else {
        None
    }
}

/// A boolean value that means off, in a SET or an EXPLAIN option.
pub(super) fn is_false(v: &[u8]) -> bool {
    [&b"false"[..], b"off", b"0", b"no"]
        .iter()
        .any(|f| v.eq_ignore_ascii_case(f))
}

/// `SET lsnpool.<p> = value`; a key's value is named by its place in `src`.
fn set_lsnpool(p: LsnpoolSetting, v: Option<Value<'_>>, src: &[u8]) -> PoolerCommand {
    let Some(v) = v else { return PoolerCommand::Invalid(p) };
    if v.is_default {
        return PoolerCommand::Reset(p);
    }
    match p {
        LsnpoolSetting::SessionKey => {
            let start = (v.text.as_ptr() as usize).wrapping_sub(src.as_ptr() as usize);
            match (u32::try_from(start), u32::try_from(start + v.text.len())) {
                (Ok(start), Ok(end)) if !v.text.is_empty() && start as usize <= src.len() => PoolerCommand::SetSessionKey { start, end },
                _ => PoolerCommand::Invalid(p),
            }
        }
        LsnpoolSetting::ReportCommitLsn => bool_value(v.text).map_or(PoolerCommand::Invalid(p), PoolerCommand::SetReportCommitLsn),
        LsnpoolSetting::MinLsn => crate::Lsn::from_text(v.text.trim_ascii()).map_or(PoolerCommand::Invalid(p), PoolerCommand::SetMinLsn),
    }
}

/// `SHOW name`: a read, except `SHOW lsnpool.*`.
pub(super) fn show(st: &mut Stmt<'_, '_>) -> Out {
    match param_name(st) {
        Param::LsnpoolConsistency if st.peek().is_none() => return Out::class(StatementClass::Pooler(PoolerCommand::ShowConsistency)),
        Param::Lsnpool(p) if st.peek().is_none() => return Out::class(StatementClass::Pooler(PoolerCommand::Show(p))),
        _ => {}
    }
    Out::class(StatementClass::Read)
}

/// `RESET name|ALL`: session state, except `RESET lsnpool.*`.
pub(super) fn reset(st: &mut Stmt<'_, '_>) -> StatementClass {
    match param_name(st) {
        Param::LsnpoolConsistency if st.peek().is_none() => return StatementClass::Pooler(PoolerCommand::ResetConsistency),
        Param::Lsnpool(p) if st.peek().is_none() => return StatementClass::Pooler(PoolerCommand::Reset(p)),
        _ => {}
    }
    StatementClass::Session
}
