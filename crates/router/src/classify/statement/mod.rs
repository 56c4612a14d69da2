//! Classifies one statement from its tokens.
//!
//! Most statements are decided by their first keyword, which [`statement`] dispatches on. Queries
//! (SELECT, WITH, VALUES, TABLE and the queries inside EXPLAIN, COPY and DECLARE) are scanned to
//! their end for what makes a query write: a locking clause, `INTO`, a data-modifying CTE, a
//! writing function. The default for anything not recognised is [`StatementClass::Write`].
//!
//! - `cursor`: [`Stmt`], a statement's view of the token stream, shared by all the others;
//! - `query`: SELECT, VALUES, TABLE and WITH, scanned for writes and function calls;
//! - `transaction`: BEGIN, COMMIT, ROLLBACK and transaction modes;
//! - `settings`: SET, RESET and SHOW, and the parameters the pooler answers or watches;
//! - `utility`: EXPLAIN, COPY and DECLARE, which wrap a query, and CREATE, whose extent needs care;
//! - `prepared`: PREPARE, DEALLOCATE and DISCARD, which create or drop prepared statements.

mod cursor;
mod prepared;
mod query;
mod settings;
mod transaction;
mod utility;

use super::keywords::Kw;
use super::lexer::{Kind, Token};
use super::{Deallocate, StatementClass};
pub(crate) use cursor::Stmt;
pub(crate) use transaction::TxModes;

use prepared::{deallocate, discard, prepare};
use query::{query, with_query, Prev};
use settings::{reset, set, show};
use transaction::{begin, commit, rollback};
use utility::{copy, create, declare, explain};

/// Sub-statements nest (EXPLAIN, DECLARE, COPY (query), CTEs). Deeper than this is not real SQL:
/// the statement is a write, and the recursion cannot exhaust the stack.
const MAX_NESTING: u8 = 24;

/// What one statement needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Out {
    pub class: StatementClass,
    pub calls_functions: bool,
    pub deallocate: Option<Deallocate>,
    /// COMMIT/ROLLBACK AND CHAIN.
    pub chain: bool,
    /// Ends the transaction without being a Commit or Rollback (PREPARE TRANSACTION).
    pub ends_transaction: bool,
    /// The modes a BEGIN or SET TRANSACTION gave the current transaction, so that a SET
    /// TRANSACTION right after BEGIN in the same Query can be folded into it.
    pub tx_modes: Option<TxModes>,
}

impl Out {
    fn class(class: StatementClass) -> Out {
        Out {
            class,
            calls_functions: false,
            deallocate: None,
            chain: false,
            ends_transaction: false,
            tx_modes: None,
        }
    }

    fn with_modes(class: StatementClass, modes: TxModes) -> Out {
        Out {
            tx_modes: Some(modes),
            ..Out::class(class)
        }
    }
}

const WRITE: Out = Out {
    class: StatementClass::Write,
    calls_functions: false,
    deallocate: None,
    chain: false,
    ends_transaction: false,
    tx_modes: None,
};

/// Classifies the statement at the start of `st` and consumes it.
pub(crate) fn statement(st: &mut Stmt<'_, '_>, level: u8) -> Out {
    let Some(first) = st.next() else {
        return WRITE; // an empty sub-statement, e.g. `EXPLAIN;`
    };
    if level > MAX_NESTING {
        st.skip_rest();
        return WRITE;
    }
    let out = match first.kind {
        Kind::LParen => query(st, level, Prev::LParen),
        Kind::Word => by_keyword(st, first, level),
        _ => WRITE,
    };
    st.skip_rest();
    out
}

fn by_keyword(st: &mut Stmt<'_, '_>, first: Token, level: u8) -> Out {
    use StatementClass as C;
    let Some(kw) = st.kw(first) else { return WRITE };
    match kw {
        Kw::Select | Kw::Values | Kw::Table => query(st, level, Prev::Other),
        Kw::With => with_query(st, level),
        Kw::Show => show(st),
        Kw::Explain => explain(st, level),
        Kw::Copy => copy(st, level),
        Kw::Begin => begin(st),
        Kw::Start if st.eat_kw(Kw::Transaction) => begin(st),
        Kw::Commit => commit(st, true),
        Kw::End => commit(st, false),
        Kw::Rollback => rollback(st, true),
        Kw::Abort => rollback(st, false),
        // Cursors live and die with the transaction, wherever it runs.
        Kw::Savepoint | Kw::Release | Kw::Fetch | Kw::Move | Kw::Close => Out::class(C::TransactionNeutral),
        Kw::Set => set(st),
        Kw::Reset => Out::class(reset(st)),
        Kw::Discard => discard(st),
        Kw::Deallocate => deallocate(st),
        Kw::Listen | Kw::Unlisten | Kw::Load | Kw::Execute => Out::class(C::Session),
        Kw::Prepare => prepare(st),
        Kw::Declare => declare(st, level),
        Kw::Create => create(st),
        _ => WRITE,
    }
}
