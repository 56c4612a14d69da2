//! The operator's controls over routing, live: the kill switch (`DISABLE ROUTING`), and per
//! cluster the primary read budget and the circuit breaker. `spare_primary` is the routing
//! step they add after `decide` (and its probe and catch-up wait) chose the primary: degrade a
//! read while the breaker is open, or take a budget permit, waiting for one or for a replica.
//! What is decided is pure (`router::degraded`, `router::is_primary_read`); the waiting is here.

use crate::breaker::ClusterBreaker;
use crate::budget::{ReadBudget, ReadPermit};
use crate::lease::Refusal;
use crate::replicas::{self, ClusterState};
use crate::topology::Database;
use lsnpool_config::RoutingConfig;
use lsnpool_protocol::sqlstate;
use lsnpool_router::{decide, degraded, is_primary_read, Decision, NodeId, ReplicaView, Request};
use crate::db_flags::DbFlags;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What a cluster's primary is protected by; kept across RELOAD by cluster name.
pub struct ClusterControls {
    pub budget: Arc<ReadBudget>,
    pub breaker: ClusterBreaker,
    /// Reads that found the budget spent and waited.
    pub budget_waits: AtomicU64,
    /// Reads that waited a whole `query_wait_timeout` and were refused.
    pub budget_refusals: AtomicU64,
}

impl ClusterControls {
    pub fn new(cluster: &str) -> ClusterControls {
        ClusterControls {
            budget: Arc::new(ReadBudget::default()),
            breaker: ClusterBreaker::new(cluster),
            budget_waits: AtomicU64::new(0),
            budget_refusals: AtomicU64::new(0),
        }
    }
}

/// The kill switch: routing is off for `db` by config (`routing.enabled`), or by the
/// console's `DISABLE ROUTING` of its name, its cluster's name, or every database (`switch`
/// lives in the `Pooler`, so it survives RELOAD until `ENABLE ROUTING`).
pub fn routing_disabled(routing: &RoutingConfig, switch: &DbFlags, db: &Database) -> bool {
    !routing.enabled || switch.contains_any(&[&db.name, &db.cluster])
}

/// What the controls leave the session to do with the chosen route.
pub enum Hold {
    /// Keep this budget permit with the lease for the transaction.
    Permit(ReadPermit),
    /// Answer the batch with this error instead.
    Refuse(Refusal),
}

/// Where `spare_primary` sends a transaction `decide` gave to the primary.
pub enum Spared {
    Primary(Option<ReadPermit>),
    Replica { node: NodeId, degraded: bool },
    Refused(Refusal),
}

/// What `spare_primary` needs of its surroundings.
pub struct Spare<'a> {
    pub controls: &'a ClusterControls,
    pub cluster: &'a ClusterState,
    pub routing: &'a RoutingConfig,
    /// `query_wait_timeout`: the longest a read waits for the budget.
    pub wait: Duration,
}

/// The step after `decide` chose the primary for `req`:
/// 1. breaker open (and `routing.degrade`): a non-critical fallback read goes to the freshest
///    replica within `breaker_max_lag`;
/// 2. a read on a cluster with a budget takes a permit; when none is free it waits for one,
///    re-deciding as the replicas' polls come in (a replica that catches up serves it), up to
///    `wait`; then a non-critical fallback read is degraded if allowed, and the rest refused.
pub async fn spare_primary(s: &Spare<'_>, req: &Request, decision: Decision, views: &mut Vec<ReplicaView>) -> Spared {
    if s.routing.degrade && s.controls.breaker.is_open() {
        if let Some(node) = degraded(req, &decision, views, s.routing.breaker_max_lag) {
            return Spared::Replica { node, degraded: true };
        }
    }
    let budget = &s.controls.budget;
    if !budget.is_limited() || !is_primary_read(req, &decision) {
        return Spared::Primary(None);
    }
    if let Some(permit) = budget.try_acquire() {
        return Spared::Primary(Some(permit));
    }
    s.controls.budget_waits.fetch_add(1, Ordering::Relaxed);
    let deadline = Instant::now() + s.wait;
    let poll = s.routing.lsn_poll_interval.max(Duration::from_millis(1));
    // Made once: its place in the semaphore's queue is kept across the polls.
    let acquire = budget.acquire();
    tokio::pin!(acquire);
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::select! {
            permit = &mut acquire => return Spared::Primary(permit),
            _ = tokio::time::sleep_until((now + poll).min(deadline)) => {}
        }
        replicas::views(s.cluster, views);
        if let Decision::Replica(node) = decide(req, views) {
            return Spared::Replica { node, degraded: false };
        }
    }
    if s.routing.degrade {
        if let Some(node) = degraded(req, &decision, views, s.routing.breaker_max_lag) {
            return Spared::Replica { node, degraded: true };
        }
    }
    s.controls.budget_refusals.fetch_add(1, Ordering::Relaxed);
    let msg = format!(
        "primary_read_pool_size: all {} primary read slots stayed busy for query_wait_timeout ({:?})",
        budget.size(),
        s.wait
    );
    Spared::Refused(Refusal::new(
        sqlstate::QUERY_CANCELED,
        msg,
        Some("raise the cluster's primary_read_pool_size, or let non-critical reads degrade (routing.degrade)"),
    ))
}

/// A read a replica served in the primary's place, counted per database and per cluster.
pub fn count_degraded(db: &Database) {
    crate::stats::DbStats::add(&db.stats.degraded_reads, 1);
    db.controls.breaker.count_degraded();
}
