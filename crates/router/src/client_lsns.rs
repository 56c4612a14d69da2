//! What one client has seen of the WAL: the only place a client's LSN knowledge lives.
//!
//! The session feeds it what the relay learned (a commit's LSN, how far a read saw) and the
//! commit token the client presented (`SET lsnpool.min_lsn`); the router asks it what a read
//! needs under a consistency level, given what is known outside the client ([`Outside`]: the
//! newest commit anyone made, the session key's commit, a token on the statement, the
//! primary's position for `linearizable`).

use crate::{Consistency, Lsn, NodeId};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientLsns {
    /// Read-your-writes: the newest commit this client made.
    commit: Lsn,
    /// Monotonic reads: a lower bound of what the client's reads have seen.
    read: Lsn,
    /// A commit token presented for the session (`SET lsnpool.min_lsn`).
    token: Lsn,
    /// The replica the client read from last. Replicas only move forward, so reading there
    /// again is monotonic without knowing exactly how far the last read saw.
    sticky: Option<NodeId>,
    /// The cluster's failover epoch these LSNs were learned in (see `rebase`).
    epoch: u32,
}

/// What a read must see that the client did not learn itself, gathered per read by the
/// routing steps (a store lookup, a primary poll) before the pure decision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outside {
    /// The newest commit acknowledged through lsnpool (this instance's, or the token store's).
    pub global_commit: Lsn,
    /// The read carries a session key; its newest recorded commit (ZERO: none recorded).
    pub key_commit: Option<Lsn>,
    /// A token on the statement (`/* lsnpool:min_lsn=… */`).
    pub statement_token: Lsn,
    /// `linearizable`: the primary's WAL position as of the read's arrival.
    pub primary_now: Lsn,
}

/// Which requirement decided the LSN a read needs: why it fell back, when it did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Need {
    /// The client's own commit or last read.
    #[default]
    Own,
    SessionKey,
    Token,
    Global,
    Linearizable,
    /// The token store could not be asked: the requirement is unknown (decided by the caller).
    TokenStoreDown,
}

impl Need {
    pub const ALL: [Need; 6] = [Need::Own, Need::SessionKey, Need::Token, Need::Global, Need::Linearizable, Need::TokenStoreDown];

    pub fn as_str(self) -> &'static str {
        match self {
            Need::Own => "own",
            Need::SessionKey => "session_key",
            Need::Token => "token",
            Need::Global => "global",
            Need::Linearizable => "linearizable",
            Need::TokenStoreDown => "token_store_down",
        }
    }
}

impl ClientLsns {
    /// The failover epoch the LSNs belong to.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// A failover happened (`epoch` is the cluster's new one): LSNs learned on an older
    /// timeline are capped at `cap`, the new primary's position when it took over. What
    /// survived of the old timeline is at or below it (the new timeline forked there), so a
    /// replica of the new timeline that reached the capped LSN has everything the client could
    /// still see, and a read never waits for a position only the lost timeline had. The sticky
    /// replica is forgotten: the promoted node was one.
    pub fn rebase(&mut self, epoch: u32, cap: Lsn) {
        self.commit = self.commit.min(cap);
        self.read = self.read.min(cap);
        self.token = self.token.min(cap);
        self.sticky = None;
        self.epoch = epoch;
    }

    /// A commit of this client's, learned before the client saw it acknowledged.
    pub fn learn_commit(&mut self, lsn: Lsn) {
        self.commit = self.commit.max(lsn);
    }

    /// A read served by the primary in a replica's place saw data up to `lsn`.
    pub fn learn_read(&mut self, lsn: Lsn) {
        self.read = self.read.max(lsn);
    }

    /// A read served by `node`, whose polled replay LSN was `replay_lsn` when it was chosen.
    pub fn read_from(&mut self, node: NodeId, replay_lsn: Lsn) {
        self.learn_read(replay_lsn);
        self.sticky = Some(node);
    }

    /// `SET lsnpool.min_lsn`: every later read of the session sees at least `lsn`
    /// (`Lsn::ZERO` forgets the token: `RESET`).
    pub fn set_token(&mut self, lsn: Lsn) {
        self.token = lsn;
    }

    pub fn token(&self) -> Lsn {
        self.token
    }

    pub fn sticky(&self) -> Option<NodeId> {
        self.sticky
    }

    /// The LSN a replica must have replayed to serve this client's read under `level`, and
    /// which requirement set it. Tokens and keys are explicit asks: honoured at every level.
    pub fn required(&self, level: Consistency, outside: &Outside) -> (Lsn, Need) {
        let mut best = (Lsn::ZERO, Need::Own);
        let mut need = |lsn: Lsn, why: Need| {
            if lsn > best.0 {
                best = (lsn, why);
            }
        };
        let own = self.commit.max(self.read);
        match level {
            Consistency::Strong | Consistency::Bounded | Consistency::Eventual => {}
            Consistency::ReadYourWrites => need(own, Need::Own),
            Consistency::Session if outside.key_commit.is_some() => need(own, Need::Own),
            Consistency::Session | Consistency::Global => {
                need(own, Need::Own);
                need(outside.global_commit, Need::Global);
            }
            Consistency::Linearizable => {
                need(own, Need::Own);
                need(outside.global_commit, Need::Global);
                need(outside.primary_now, Need::Linearizable);
            }
        }
        need(outside.key_commit.unwrap_or(Lsn::ZERO), Need::SessionKey);
        need(self.token.max(outside.statement_token), Need::Token);
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(lsn: u64) -> Outside {
        Outside { global_commit: Lsn(lsn), ..Outside::default() }
    }

    #[test]
    fn levels_require_what_they_promise() {
        let mut c = ClientLsns::default();
        c.learn_commit(Lsn(200));
        c.read_from(NodeId(1), Lsn(150));
        assert_eq!(c.required(Consistency::ReadYourWrites, &global(300)), (Lsn(200), Need::Own));
        assert_eq!(c.required(Consistency::Global, &global(300)), (Lsn(300), Need::Global));
        assert_eq!(c.required(Consistency::Global, &global(100)), (Lsn(200), Need::Own));
        assert_eq!(c.required(Consistency::Bounded, &global(300)).0, Lsn::ZERO);
        assert_eq!(c.required(Consistency::Strong, &global(300)).0, Lsn::ZERO);
        let lin = Outside { primary_now: Lsn(400), ..global(300) };
        assert_eq!(c.required(Consistency::Linearizable, &lin), (Lsn(400), Need::Linearizable));
        assert_eq!(c.sticky(), Some(NodeId(1)));
    }

    #[test]
    fn session_keys_and_tokens() {
        let c = ClientLsns::default();
        // A keyed read under `session` needs its key, not everyone's newest commit.
        let keyed = Outside { key_commit: Some(Lsn(120)), ..global(300) };
        assert_eq!(c.required(Consistency::Session, &keyed), (Lsn(120), Need::SessionKey));
        // Unkeyed: as `global`.
        assert_eq!(c.required(Consistency::Session, &global(300)), (Lsn(300), Need::Global));
        // A token is honoured at any level.
        let mut t = ClientLsns::default();
        t.set_token(Lsn(500));
        assert_eq!(t.required(Consistency::Eventual, &global(300)), (Lsn(500), Need::Token));
        let st = Outside { statement_token: Lsn(700), ..global(300) };
        assert_eq!(c.required(Consistency::ReadYourWrites, &st), (Lsn(700), Need::Token));
        t.set_token(Lsn::ZERO);
        assert_eq!(t.token(), Lsn::ZERO);
    }

    #[test]
    fn never_moves_backwards() {
        let mut c = ClientLsns::default();
        c.learn_commit(Lsn(200));
        c.learn_commit(Lsn(100));
        c.learn_read(Lsn(400));
        c.read_from(NodeId(0), Lsn(300));
        assert_eq!(c.required(Consistency::ReadYourWrites, &Outside::default()).0, Lsn(400));
        assert_eq!(c.sticky(), Some(NodeId(0)));
    }

    #[test]
    fn a_failover_caps_what_was_learned_on_the_old_timeline() {
        let mut c = ClientLsns::default();
        c.learn_commit(Lsn(500));
        c.read_from(NodeId(1), Lsn(300));
        c.set_token(Lsn(900));
        c.rebase(1, Lsn(400));
        assert_eq!(c.epoch(), 1);
        assert_eq!(c.sticky(), None);
        assert_eq!(c.token(), Lsn(400));
        let (need, _) = c.required(Consistency::ReadYourWrites, &Outside::default());
        assert_eq!(need, Lsn(400), "capped at the new primary's position, never above");
        // Below the cap nothing changes: that part of the old timeline is the new one's too.
        let mut low = ClientLsns::default();
        low.learn_commit(Lsn(200));
        low.rebase(1, Lsn(400));
        assert_eq!(low.required(Consistency::ReadYourWrites, &Outside::default()).0, Lsn(200));
    }
}
