//! Transaction control: BEGIN / START TRANSACTION, COMMIT / END, ROLLBACK / ABORT, and the
//! transaction modes they and SET TRANSACTION give.

use crate::classify::keywords::Kw;
use super::cursor::Stmt;
use super::{Out, StatementClass, WRITE};

/// Transaction modes as far as routing cares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TxModes {
    /// READ ONLY (true) or READ WRITE (false), if given.
    pub read_only: Option<bool>,
    /// ISOLATION LEVEL SERIALIZABLE, or a snapshot import: needs the primary.
    pub needs_primary: bool,
}

#[derive(Default)]
pub(super) struct Modes {
    /// READ ONLY (true) or READ WRITE (false), the last one given.
    read_only: Option<bool>,
    /// ISOLATION LEVEL SERIALIZABLE: a hot standby refuses it ("cannot use serializable mode in
    /// a hot standby"), so such a transaction needs the primary even when READ ONLY.
    serializable: bool,
    /// SET TRANSACTION SNAPSHOT: a snapshot exported on one server cannot be imported on another.
    snapshot: bool,
}

pub(super) fn transaction_modes(st: &mut Stmt<'_, '_>) -> Modes {
    let mut m = Modes::default();
    while let Some(t) = st.next() {
        match st.kw(t) {
            Some(Kw::Read) => match st.peek_kw() {
                Some(Kw::Only) => m.read_only = Some(true),
                Some(Kw::Write) => m.read_only = Some(false),
                _ => {}
            },
            Some(Kw::Serializable) => m.serializable = true,
            Some(Kw::Snapshot) => m.snapshot = true,
            _ => {}
        }
    }
    m
}

impl Modes {
    pub(super) fn tx(&self) -> TxModes {
        TxModes {
            read_only: self.read_only,
            needs_primary: self.serializable || self.snapshot,
        }
    }
}

impl TxModes {
    /// A transaction with these modes may run on a replica.
    pub fn replica_ok(&self) -> bool {
        self.read_only == Some(true) && !self.needs_primary
    }
}

/// SET TRANSACTION / SET SESSION CHARACTERISTICS AS TRANSACTION; `otherwise` when the modes say
/// nothing about read-only-ness.
pub(super) fn set_transaction(m: &Modes, otherwise: StatementClass) -> StatementClass {
    if m.snapshot {
        StatementClass::Write
    } else if m.serializable {
        StatementClass::SetTransaction { read_only: false }
    } else if let Some(read_only) = m.read_only {
        StatementClass::SetTransaction { read_only }
    } else {
        otherwise
    }
}

/// `BEGIN [WORK|TRANSACTION] [modes]`, `START TRANSACTION [modes]`.
pub(super) fn begin(st: &mut Stmt<'_, '_>) -> Out {
    if !st.eat_kw(Kw::Work) {
        st.eat_kw(Kw::Transaction);
    }
    let modes = transaction_modes(st).tx();
    Out::with_modes(
        StatementClass::Begin {
            read_only: modes.replica_ok(),
        },
        modes,
    )
}

/// `COMMIT|END [WORK|TRANSACTION] [AND [NO] CHAIN]`; `COMMIT PREPARED 'gid'` is a write.
pub(super) fn commit(st: &mut Stmt<'_, '_>, prepared_allowed: bool) -> Out {
    if prepared_allowed && st.peek_kw() == Some(Kw::Prepared) {
        return WRITE;
    }
    if !st.eat_kw(Kw::Work) {
        st.eat_kw(Kw::Transaction);
    }
    Out {
        chain: and_chain(st),
        ..Out::class(StatementClass::Commit)
    }
}

/// `ROLLBACK|ABORT [WORK|TRANSACTION] [AND [NO] CHAIN]`; `ROLLBACK [WORK] TO [SAVEPOINT] s` keeps
/// the transaction; `ROLLBACK PREPARED 'gid'` is a write.
pub(super) fn rollback(st: &mut Stmt<'_, '_>, prepared_allowed: bool) -> Out {
    if prepared_allowed && st.peek_kw() == Some(Kw::Prepared) {
        return WRITE;
    }
    if !st.eat_kw(Kw::Work) {
        st.eat_kw(Kw::Transaction);
    }
    if st.peek_kw() == Some(Kw::To) {
        return Out::class(StatementClass::TransactionNeutral);
    }
    Out {
        chain: and_chain(st),
        ..Out::class(StatementClass::Rollback)
    }
}

fn and_chain(st: &mut Stmt<'_, '_>) -> bool {
    st.eat_kw(Kw::And) && !st.eat_kw(Kw::No) && st.peek_kw() == Some(Kw::Chain)
}
