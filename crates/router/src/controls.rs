//! What the operator's controls decide around `decide`, kept pure so it is unit-tested like
//! the decision itself: which reads the primary read budget counts, and where a read goes
//! when the primary must be spared (breaker open, budget spent). The kill switch and the
//! rules enter `Request` directly (`routing_disabled`, `consistency`, `max_lag`, `critical`).

use crate::{Decision, NodeId, PrimaryReason, ReplicaView, Request};
use std::time::Duration;

/// A read the primary serves: it counts against the cluster's `primary_read_pool_size`.
/// Writes never do (the budget exists so they always find a connection), nor does anything
/// while routing is disabled (the kill switch undoes every control).
pub fn is_primary_read(req: &Request, decision: &Decision) -> bool {
    match decision {
        Decision::Replica(_) => false,
        Decision::Primary { reason, .. } => {
            !req.writes
                && matches!(reason, PrimaryReason::Strong | PrimaryReason::Hint | PrimaryReason::LagFallback | PrimaryReason::NoReplicaUp)
        }
    }
}

/// The replica a read that falls back to the primary may use instead when the primary must
/// be spared: the least lagging one in rotation within `max_lag` (then the freshest, then the
/// least busy). `None` for writes, critical paths, reads sent to the primary on purpose
/// (`strong`, hints) and while routing is disabled: those are never degraded.
pub fn degraded(req: &Request, decision: &Decision, replicas: &[ReplicaView], max_lag: Duration) -> Option<NodeId> {
    let falls_back = matches!(decision, Decision::Primary { reason: PrimaryReason::LagFallback | PrimaryReason::NoReplicaUp, .. });
    if !falls_back || req.writes || req.critical || req.routing_disabled {
        return None;
    }
    replicas
        .iter()
        .filter(|r| r.in_rotation && r.lag <= max_lag)
        .min_by_key(|r| (r.lag, std::cmp::Reverse(r.replay_lsn), r.outstanding))
        .map(|r| r.node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decide, ClientLsns, Consistency, Lsn};

    /// A read after the client's commit at LSN 1000.
    fn req() -> Request {
        let mut lsns = ClientLsns::default();
        lsns.learn_commit(Lsn(1000));
        Request { lsns, ..crate::decide::test_request() }
    }

    fn replica(n: u16, lsn: u64, lag_ms: u64) -> ReplicaView {
        ReplicaView {
            node: NodeId(n),
            in_rotation: true,
            replay_lsn: Lsn(lsn),
            lag: Duration::from_millis(lag_ms),
            outstanding: 0,
            typical_lag: Duration::ZERO,
        }
    }

    const ONE_SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_fallback_read_degrades_to_the_least_lagging_replica_within_the_bound() {
        let rs = [replica(0, 500, 800), replica(1, 900, 200), replica(2, 990, 1500)];
        let d = decide(&req(), &rs);
        assert!(matches!(d, Decision::Primary { reason: PrimaryReason::LagFallback, .. }), "{d:?}");
        assert_eq!(degraded(&req(), &d, &rs, ONE_SEC), Some(NodeId(1)));
        assert_eq!(degraded(&req(), &d, &rs, Duration::from_millis(100)), None, "none within 100ms");
    }

    #[test]
    fn critical_writes_strong_and_disabled_are_never_degraded() {
        let rs = [replica(0, 500, 10)];
        let d = decide(&req(), &rs);
        assert_eq!(degraded(&Request { critical: true, ..req() }, &d, &rs, ONE_SEC), None);
        let strong = Request { consistency: Consistency::Strong, ..req() };
        assert_eq!(degraded(&strong, &decide(&strong, &rs), &rs, ONE_SEC), None);
        let write = Request { writes: true, ..req() };
        assert_eq!(degraded(&write, &decide(&write, &rs), &rs, ONE_SEC), None);
        let off = Request { routing_disabled: true, ..req() };
        assert_eq!(degraded(&off, &decide(&off, &rs), &rs, ONE_SEC), None);
    }

    #[test]
    fn no_replica_in_rotation_degrades_to_one_beyond_the_paths_own_lag() {
        let rs = [replica(0, 1000, 600)];
        let tight = Request { max_lag: Duration::from_millis(250), consistency: Consistency::Bounded, ..req() };
        let d = decide(&tight, &rs);
        assert!(matches!(d, Decision::Primary { reason: PrimaryReason::NoReplicaUp, .. }), "{d:?}");
        assert_eq!(degraded(&tight, &d, &rs, ONE_SEC), Some(NodeId(0)));
    }

    #[test]
    fn the_budget_counts_primary_reads_only() {
        let rs = [replica(0, 500, 0)];
        assert!(is_primary_read(&req(), &decide(&req(), &rs)), "a lag fallback");
        let strong = Request { consistency: Consistency::Strong, ..req() };
        assert!(is_primary_read(&strong, &decide(&strong, &rs)));
        let write = Request { writes: true, ..req() };
        assert!(!is_primary_read(&write, &decide(&write, &rs)));
        let off = Request { routing_disabled: true, ..req() };
        assert!(!is_primary_read(&off, &decide(&off, &rs)));
        let fresh = Request { lsns: ClientLsns::default(), ..req() };
        assert!(!is_primary_read(&fresh, &decide(&fresh, &rs)), "a replica read");
    }
}
