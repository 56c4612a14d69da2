//! Read-your-writes beyond one connection (issue 10): what a read must see besides the
//! client's own LSNs, and recording a commit where other connections and instances find it.
//!
//! A client carries a session key (`SET lsnpool.session_key`, or a statement's
//! `/* lsnpool:session_key=… */`) and may present commit tokens (`lsnpool.min_lsn`); a
//! commit under a key is recorded in the token store before the client sees it. Before each
//! read the routing step [`Causal::outside`] gathers what the pure decision needs: the
//! newest commit (this instance's, or the shared store's), the key's commit, the statement's
//! token, and for `linearizable` the primary's current position (one primary poll shared by
//! every read that arrived before it was sent: `ClusterState::fresh_primary_lsn`).

use crate::token_store::TokenStore;
use lsnpool_monitor::ClusterState;
use lsnpool_router::{Consistency, Lsn, Need, Outside};
use std::sync::Arc;
use std::time::Duration;

/// How long a `linearizable` read waits for the primary's position before reading on the
/// primary itself (the poller's own timeout is at least a second).
const PRIMARY_LSN_WAIT: Duration = Duration::from_secs(1);

pub struct Causal {
    /// `SET lsnpool.session_key`.
    pub session_key: Option<Box<str>>,
    /// `SET lsnpool.report_commit_lsn = on`: a ParameterStatus after each commit.
    pub report_commit_lsn: bool,
    /// The key of the current transaction's first statement (its leading comment).
    statement_key: Option<Box<str>>,
    /// The token of the current transaction's first statement.
    statement_token: Lsn,
    store: Arc<TokenStore>,
}

impl Causal {
    pub fn new(store: Arc<TokenStore>, report_commit_lsn: bool) -> Causal {
        Causal { session_key: None, report_commit_lsn, statement_key: None, statement_token: Lsn::ZERO, store }
    }

    /// The directives of the transaction about to run (from its first statement's comment).
    pub fn for_statement(&mut self, key: Option<&[u8]>, token: Option<Lsn>) {
        self.statement_key = key.map(|k| String::from_utf8_lossy(k).into());
        self.statement_token = token.unwrap_or(Lsn::ZERO);
    }

    /// The key this transaction runs under: its statement's, else the session's.
    pub fn key(&self) -> Option<&str> {
        self.statement_key.as_deref().or(self.session_key.as_deref())
    }

    /// The routing step before the decision: what the read must see from outside the
    /// client. `Err` names the requirement that could not be learned (the store is down, the
    /// primary's position is unknown): the read then goes to the primary.
    pub async fn outside(&self, level: Consistency, cluster: &ClusterState) -> Result<Outside, Need> {
        let key = self.key();
        let wants_global = match level {
            Consistency::Global | Consistency::Linearizable => true,
            Consistency::Session => key.is_none(),
            _ => false,
        };
        let mut outside = Outside {
            global_commit: cluster.highest_commit_lsn(),
            statement_token: self.statement_token,
            ..Outside::default()
        };
        if key.is_some() || (wants_global && self.store.is_shared()) {
            let found = self.store.lookup(cluster.name(), key, wants_global).await.map_err(|_| Need::TokenStoreDown)?;
            outside.global_commit = outside.global_commit.max(found.global);
            outside.key_commit = found.key;
        }
        if level == Consistency::Linearizable {
            outside.primary_now = cluster.fresh_primary_lsn(PRIMARY_LSN_WAIT).await.ok_or(Need::Linearizable)?;
        }
        Ok(outside)
    }

    /// The session must hold the client's ReadyForQuery after a commit until
    /// [`Causal::record_commit`] has run: there is a key to record, or a shared store.
    pub fn defers_commit(&self) -> bool {
        self.key().is_some() || self.store.is_shared()
    }

    /// Records a commit under the transaction's key (and, in a shared store, as the cluster's
    /// newest). A store that is down loses nothing that matters for this instance (its own
    /// `highest_commit_lsn` has it); other instances' keyed and global reads then use the
    /// primary, since they cannot reach the store either, or settle after it lost its data.
    pub async fn record_commit(&self, cluster: &str, lsn: Lsn) {
        if !self.defers_commit() {
            return;
        }
        if self.store.record(cluster, self.key(), lsn).await.is_err() {
            metrics::counter!("lsnpool_token_store_unrecorded_commits_total").increment(1);
            tracing::debug!(%lsn, "commit not recorded in the token store");
        }
    }
}
