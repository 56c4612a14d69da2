//! What one client has seen of the WAL: the only place a client's LSN knowledge lives.
//!
//! The session feeds it what the relay learned (a commit's LSN, how far a read saw) and the
//! router asks it what a read needs under a consistency level. Commit tokens and session keys
//! (issue 10) are further sources of "what this client must see" and belong here too.

use crate::{Consistency, Lsn, NodeId};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientLsns {
    /// Read-your-writes: the newest commit this client made.
    commit: Lsn,
    /// Monotonic reads: a lower bound of what the client's reads have seen.
    read: Lsn,
    /// The replica the client read from last. Replicas only move forward, so reading there
    /// again is monotonic without knowing exactly how far the last read saw.
    sticky: Option<NodeId>,
}

impl ClientLsns {
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

    pub fn sticky(&self) -> Option<NodeId> {
        self.sticky
    }

    /// The LSN a replica must have replayed to serve this client's read under `level`;
    /// `global_commit` is the newest commit the pooler has seen from anyone.
    pub fn required(&self, level: Consistency, global_commit: Lsn) -> Lsn {
        match level {
            Consistency::ReadYourWrites => self.commit.max(self.read),
            Consistency::Global => global_commit.max(self.commit).max(self.read),
            Consistency::Strong | Consistency::Bounded | Consistency::Eventual => Lsn::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_require_what_they_promise() {
        let mut c = ClientLsns::default();
        c.learn_commit(Lsn(200));
        c.read_from(NodeId(1), Lsn(150));
        assert_eq!(c.required(Consistency::ReadYourWrites, Lsn(300)), Lsn(200));
        assert_eq!(c.required(Consistency::Global, Lsn(300)), Lsn(300));
        assert_eq!(c.required(Consistency::Global, Lsn(100)), Lsn(200));
        assert_eq!(c.required(Consistency::Bounded, Lsn(300)), Lsn::ZERO);
        assert_eq!(c.required(Consistency::Strong, Lsn(300)), Lsn::ZERO);
        assert_eq!(c.sticky(), Some(NodeId(1)));
    }

    #[test]
    fn never_moves_backwards() {
        let mut c = ClientLsns::default();
        c.learn_commit(Lsn(200));
        c.learn_commit(Lsn(100));
        c.learn_read(Lsn(400));
        c.read_from(NodeId(0), Lsn(300));
        assert_eq!(c.required(Consistency::ReadYourWrites, Lsn::ZERO), Lsn(400));
        assert_eq!(c.sticky(), Some(NodeId(0)));
    }
}
