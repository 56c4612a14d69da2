//! Where a client's next transaction runs: the whole choice, in one place.
//!
//! `router::decide` is the pure part (levels, hints, lag, stickiness, load). Around it, the
//! `ClientRouter` adds what needs I/O or time, as steps tried in order when `decide` falls
//! back to the primary for want of a fresh replica:
//! 1. the **probe**: ask a replica that usually follows closely whether it has replayed the
//!    needed LSN by now (its polled LSN is up to a poll interval old);
//! 2. the **catch-up wait**: wait up to `lsn_wait_timeout` for the freshest replica's polls;
//! 3. the operator's **controls** (controls.rs): a breaker that degrades reads, a read budget
//!    that may wait or refuse. Query rules and the kill switch enter the `Request` itself.
//!
//! It also owns what the client has seen (`ClientLsns`) and learns from each transaction.

use crate::batch::BatchInfo;
use crate::controls::{routing_disabled, spare_primary, Hold, Spare, Spared};
use crate::db_flags::DbFlags;
use crate::lease::{record_wait, Lease};
use crate::replicas::ClusterState;
use crate::stats::DbStats;
use crate::topology::{ClusterPools, Database};
use deadpool::managed::Object;
use lsnpool_config::{PoolMode, RoutingConfig};
use lsnpool_pool::ServerManager;
use lsnpool_protocol::backend::TxStatus;
use crate::causal::Causal;
use lsnpool_router::{decide, ClientLsns, Consistency, Decision, Hint, Lsn, Need, NodeId, Outside, PrimaryReason, ReplicaView, Request, Route, RoutingMode};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The chosen node, and what the session must remember of the choice.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub route: Route,
    /// The replica's polled replay LSN at decision time: a lower bound of what the read saw.
    replay_lsn: Lsn,
    /// A read sent to the primary for want of a fresh replica, under a monotonic level: the
    /// relay learns how far it saw, so the client's next read does not see less.
    pub capture_reads: bool,
}

impl Target {
    pub(crate) fn primary() -> Target {
        Target { route: Route::Primary, replay_lsn: Lsn::ZERO, capture_reads: false }
    }
}

/// A connection a probe borrowed and found fresh enough: the transaction runs on it.
pub type Probed = Object<ServerManager>;

/// What the router needs of the session's surroundings for one choice.
pub struct Surroundings<'a> {
    pub routing: &'a RoutingConfig,
    pub pool_mode: PoolMode,
    pub pools: &'a ClusterPools,
    /// Bounds the probe's round trip and a read's wait for the primary read budget.
    pub query_timeout: Duration,
    /// The kill switch (`DISABLE ROUTING`).
    pub switch: &'a DbFlags,
}

pub struct ClientRouter {
    /// The session's level: the database's, changed by `SET lsnpool.consistency`.
    pub consistency: Consistency,
    /// Session keys, tokens and the token store: what a read needs from outside the client.
    pub causal: Causal,
    lsns: ClientLsns,
    db: Arc<Database>,
    cluster: Arc<ClusterState>,
    /// Reused for every decision: no allocation per transaction.
    views: Vec<ReplicaView>,
    /// Spreads clients over equally loaded replicas.
    tiebreak: u32,
    /// What the controls left for the session with the last choice (`take_hold`). Boxed:
    /// idle clients pay one pointer.
    hold: Option<Box<Hold>>,
}

impl ClientRouter {
    pub fn new(db: Arc<Database>, cluster: Arc<ClusterState>, tiebreak: u32, causal: Causal) -> ClientRouter {
        ClientRouter { consistency: db.consistency, causal, lsns: ClientLsns::default(), db, cluster, views: Vec::new(), tiebreak, hold: None }
    }

    /// What the client has seen (SHOW lsnpool.min_lsn reads its token).
    pub fn lsns_mut(&mut self) -> &mut ClientLsns {
        &mut self.lsns
    }

    pub fn cluster(&self) -> &Arc<ClusterState> {
        &self.cluster
    }

    /// Chooses where the batch's transaction runs. `forced` sends it to the primary whatever
    /// it is (a replay after a replica refused a write). A probe that found its replica fresh
    /// returns the connection it asked on: the transaction must run there.
    pub async fn choose(&mut self, batch: &BatchInfo, forced: Option<PrimaryReason>, env: &Surroundings<'_>) -> (Target, Option<Probed>) {
        if let Some(reason) = forced {
            return (self.primary(reason), None);
        }
        if env.pool_mode == PoolMode::Session && self.db.mode == RoutingMode::Automatic {
            // A session keeps one server connection for all its statements: only the primary
            // can run them all.
            return (self.primary(PrimaryReason::Write), None);
        }
        // An operator's rule outranks the client's level and hints.
        let rule = batch.rule;
        let consistency = match (rule.and_then(|r| r.level()), batch.hint) {
            (Some(c), _) | (None, Some(Hint::Consistency(c))) => c,
            _ => self.consistency,
        };
        // Step 0: what the read must see from outside the client (token store, primary).
        // (Not for what goes to the primary anyway: a write, `strong`, a primary hint.)
        let reads = (!batch.writes || self.db.mode == RoutingMode::ReplicaOnly)
            && consistency != Consistency::Strong
            && batch.hint != Some(Hint::Primary);
        let outside = if reads { self.causal.outside(consistency, &self.cluster).await } else { Ok(Outside::default()) };
        let outside = match outside {
            Ok(o) => o,
            Err(need) => return (self.unknown_need(need, consistency), None),
        };
        // After a failover, what the client learned on the old timeline is capped (one atomic
        // load per read in the steady state).
        let epoch = self.cluster.epoch();
        if self.lsns.epoch() != epoch {
            self.lsns.rebase(epoch, self.cluster.rebase_lsn());
        }
        let request = Request {
            mode: self.db.mode,
            consistency,
            writes: batch.writes,
            hint_primary: batch.hint == Some(Hint::Primary),
            lsns: self.lsns,
            outside,
            // The most specific threshold wins: the rule's, the alias's or cluster's, the default.
            max_lag: rule.and_then(|r| r.max_lag).or(self.db.max_lag).unwrap_or(env.routing.max_replica_lag),
            tiebreak: self.tiebreak,
            probe_below: env.routing.probe_max_lag,
            routing_disabled: routing_disabled(env.routing, env.switch, &self.db),
            critical: rule.is_some_and(|r| r.critical),
        };
        crate::replicas::views(&self.cluster, &mut self.views);
        let mut decision = decide(&request, &self.views);
        // With a catch-up wait configured the probe is skipped: the wait's on-demand polls
        // serve every waiting read with one query each, where a probe costs each read a round
        // trip (measured: docs/ARCHITECTURE.md, "Read-your-writes across connections").
        let waits = !env.routing.lsn_wait_timeout.is_zero();
        if let (false, Decision::Primary { reason: PrimaryReason::LagFallback, probe: Some(node), needed, .. }) = (waits, decision) {
            if let Some((server, replay_lsn)) = self.probe(env, node, needed).await {
                DbStats::add(&self.db.stats.probe_hits, 1);
                return (self.replica(node, replay_lsn), Some(server));
            }
            DbStats::add(&self.db.stats.probe_misses, 1);
        }
        if let Decision::Primary { reason: PrimaryReason::LagFallback, catch_up: Some(node), needed, .. } = decision {
            if self.catch_up(node, needed, env.routing.lsn_wait_timeout).await {
                crate::replicas::views(&self.cluster, &mut self.views);
                decision = Decision::Replica(node);
            }
        }
        if let Decision::Primary { .. } = decision {
            let spare = Spare { controls: &self.db.controls, cluster: &self.cluster, routing: env.routing, wait: env.query_timeout };
            match spare_primary(&spare, &request, decision, &mut self.views).await {
                Spared::Primary(permit) => self.hold = permit.map(|p| Box::new(Hold::Permit(p))),
                Spared::Replica { node, degraded } => {
                    if degraded {
                        crate::controls::count_degraded(&self.db);
                    }
                    decision = Decision::Replica(node);
                }
                Spared::Refused(r) => self.hold = Some(Box::new(Hold::Refuse(r))),
            }
        }
        match decision {
            Decision::Replica(node) => {
                let replay_lsn = self.views.iter().find(|v| v.node == node).map_or(Lsn::ZERO, |v| v.replay_lsn);
                tracing::debug!(replica = node.0, %replay_lsn, "read routed to replica");
                (self.replica(node, replay_lsn), None)
            }
            Decision::Primary { reason, need, .. } => {
                tracing::debug!(reason = reason.as_str(), need = need.as_str(), "routed to primary");
                if reason == PrimaryReason::LagFallback {
                    self.db.stats.fallback(need);
                }
                let mut target = self.primary(reason);
                target.capture_reads = matches!(reason, PrimaryReason::LagFallback | PrimaryReason::NoReplicaUp) && monotonic(consistency);
                (target, None)
            }
        }
    }

    /// What the controls left with the last choice: a budget permit for the lease to hold, or
    /// a refusal to answer the batch with.
    pub fn take_hold(&mut self) -> Option<Hold> {
        self.hold.take().map(|h| *h)
    }

    /// Step 1: asks a replica that usually follows closely whether it has replayed `needed`.
    /// Only an idle pooled connection is used: a probe that had to wait would cost more than
    /// the primary read it tries to save.
    async fn probe(&self, env: &Surroundings<'_>, node: NodeId, needed: Lsn) -> Option<(Probed, Lsn)> {
        let pool = env.pools.node(node)?;
        let asked = Instant::now();
        let mut server = Lease::try_checkout(pool).await?;
        let reply = server.simple_query("SELECT pg_catalog.pg_last_wal_replay_lsn()", env.query_timeout).await;
        let lsn = match reply {
            Ok(r) if r.error.is_none() && r.status == TxStatus::Idle => r.value.as_deref().and_then(Lsn::from_text),
            _ => None,
        };
        let Some(lsn) = lsn else {
            drop(Object::take(server)); // state unknown: closed, not pooled
            return None;
        };
        // What one client learned helps every client: the monitor's view moves too.
        self.cluster.note_replay_lsn(node, lsn);
        tracing::debug!(replica = node.0, %lsn, %needed, "asked a replica for its replay LSN");
        if lsn < needed {
            return None;
        }
        // The probe borrowed the connection: its wait counts like a checkout's.
        record_wait(&self.db, asked.elapsed());
        Some((server, lsn))
    }

    /// Step 2: waits for the freshest behind replica to reach `needed`, up to `wait`.
    async fn catch_up(&self, node: NodeId, needed: Lsn, wait: Duration) -> bool {
        if wait.is_zero() {
            return false;
        }
        let t0 = Instant::now();
        let caught_up = self.cluster.wait_for_replay(node, needed, wait).await;
        let waited = t0.elapsed();
        DbStats::add(&self.db.stats.catchup_waits, 1);
        DbStats::add(&self.db.stats.catchup_wait_us, waited.as_micros() as u64);
        self.db.stats.metrics.catchup_wait_seconds.record(waited.as_secs_f64());
        caught_up
    }

    /// A read whose requirement could not be learned: the primary, which sees everything;
    /// counted as a lag fallback of that requirement.
    fn unknown_need(&self, need: Need, consistency: Consistency) -> Target {
        tracing::debug!(need = need.as_str(), "requirement unknown; routed to primary");
        self.db.stats.fallback(need);
        let mut target = self.primary(PrimaryReason::LagFallback);
        target.capture_reads = monotonic(consistency);
        target
    }

    fn primary(&self, reason: PrimaryReason) -> Target {
        DbStats::add(self.db.stats.primary(reason), 1);
        self.db.stats.metrics.routed_primary(reason).increment(1);
        Target::primary()
    }

    fn replica(&self, node: NodeId, replay_lsn: Lsn) -> Target {
        DbStats::add(&self.db.stats.replica_reads, 1);
        self.db.stats.metrics.routed_replica.increment(1);
        Target { route: Route::Replica(node), replay_lsn, capture_reads: false }
    }

    /// The transaction on `target` ended: a replica read is a lower bound of what the client
    /// saw, and its replica becomes the sticky one.
    pub fn served(&mut self, target: &Target) {
        if let Route::Replica(node) = target.route {
            self.lsns.read_from(node, target.replay_lsn);
        }
    }

    /// A commit of this client's. Published for the `global` level too (the relay publishes
    /// before the client's ReadyForQuery; publishing again is idempotent).
    pub fn learn_commit(&mut self, lsn: Lsn) {
        tracing::debug!(%lsn, "commit LSN learned");
        self.lsns.learn_commit(lsn);
        self.cluster.note_commit_lsn(lsn);
        DbStats::add(&self.db.stats.lsn_captured, 1);
    }

    /// How far a read the primary served in a replica's place saw.
    pub fn learn_read(&mut self, lsn: Lsn) {
        self.lsns.learn_read(lsn);
    }
}

/// Levels whose reads never go back: a read the primary serves in a replica's place records
/// how far it saw.
fn monotonic(level: Consistency) -> bool {
    !matches!(level, Consistency::Strong | Consistency::Bounded | Consistency::Eventual)
}
