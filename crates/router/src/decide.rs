//! The routing decision: one pure function of (what the transaction needs, the client's
//! LSNs, the replicas' last known state).

use crate::{ClientLsns, Consistency, Lsn, Need, NodeId, Outside, Route};
use std::time::Duration;

/// Whether a replica may serve reads at all: polled healthy (`polled_in_rotation`: up, in
/// recovery, not promoted) and no further behind than `max_replica_lag`. SHOW REPLICAS shows
/// the same test, so it never disagrees with the router.
pub fn in_rotation(polled_in_rotation: bool, lag: Duration, max_lag: Duration) -> bool {
    polled_in_rotation && lag <= max_lag
}

/// What a replica looked like at its last poll, as the router needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaView {
    pub node: NodeId,
    /// Up, still in recovery, answering polls.
    pub in_rotation: bool,
    pub replay_lsn: Lsn,
    /// Time lag behind the primary (0 when it has replayed everything).
    pub lag: Duration,
    /// Transactions running on it through this pooler now.
    pub outstanding: u32,
    /// How far behind it typically runs while the primary writes.
    pub typical_lag: Duration,
}

/// Why a transaction went to the primary. Counted per reason, shown in SHOW ROUTING.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrimaryReason {
    /// It writes, locks, calls a writing function, or is a read-write transaction.
    Write,
    /// Consistency level `strong` (e.g. the `app_primary` alias).
    Strong,
    /// A `/* lsnpool:primary */` hint.
    Hint,
    /// Replicas are up but none has replayed the LSN the client needs.
    LagFallback,
    /// No replica is in rotation (down, promoted, beyond max_replica_lag, or none configured).
    NoReplicaUp,
    /// The statement failed on a replica with 25006 and was retried here.
    Retry25006,
    /// Routing is switched off for the database (`DISABLE ROUTING`, `routing.enabled`).
    Disabled,
}

impl PrimaryReason {
    pub const ALL: [PrimaryReason; 7] = [
        PrimaryReason::Write,
        PrimaryReason::Strong,
        PrimaryReason::Hint,
        PrimaryReason::LagFallback,
        PrimaryReason::NoReplicaUp,
        PrimaryReason::Retry25006,
        PrimaryReason::Disabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PrimaryReason::Write => "write",
            PrimaryReason::Strong => "strong",
            PrimaryReason::Hint => "hint",
            PrimaryReason::LagFallback => "lag_fallback",
            PrimaryReason::NoReplicaUp => "no_replica_up",
            PrimaryReason::Retry25006 => "retry_25006",
            PrimaryReason::Disabled => "disabled",
        }
    }
}

/// How the database the client connected to routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoutingMode {
    /// The cluster's own name: reads to replicas when fresh enough, everything else to the
    /// primary.
    Automatic,
    /// A replica alias (e.g. `app_read`): every statement goes to a replica, so a write
    /// fails there with the server's own 25006; reads fall back to the primary only when no
    /// replica is fresh enough.
    ReplicaOnly,
}

/// What the router knows about the transaction about to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub mode: RoutingMode,
    pub consistency: Consistency,
    /// The transaction (its first statement or batch) must run on the primary.
    pub writes: bool,
    pub hint_primary: bool,
    /// What the client has seen (its commits, its reads, its sticky replica).
    pub lsns: ClientLsns,
    /// What the read must see beyond the client's own LSNs (newest commit, session key,
    /// statement token, primary position).
    pub outside: Outside,
    pub max_lag: Duration,
    /// Spreads clients over equally loaded replicas (e.g. the client's id): without it the
    /// first replica would win every tie and the others idle under light load.
    pub tiebreak: u32,
    /// A merely-behind replica that typically lags less than this is worth asking directly
    /// whether it has caught up (zero: never ask).
    pub probe_below: Duration,
    /// The operator's kill switch: every statement to the primary.
    pub routing_disabled: bool,
    /// A rule marked this path critical: never degraded to a staler replica.
    pub critical: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Replica(NodeId),
    /// `catch_up` is the freshest replica in rotation that is merely behind: a caller
    /// allowed to wait (`lsn_wait_timeout`) can wait for it to reach `needed`. `probe` is a
    /// behind replica that usually follows within `probe_below`: its polled LSN is probably
    /// just stale, and asking it directly costs one round trip instead of a primary read.
    /// `need` says which requirement set `needed` (counted per lag fallback).
    Primary { reason: PrimaryReason, catch_up: Option<NodeId>, needed: Lsn, need: Need, probe: Option<NodeId> },
}

impl Decision {
    pub fn route(self) -> Route {
        match self {
            Decision::Replica(n) => Route::Replica(n),
            Decision::Primary { .. } => Route::Primary,
        }
    }
}

/// The LSN a replica must have replayed to serve this request, and what set it.
pub fn required_lsn(req: &Request) -> (Lsn, Need) {
    req.lsns.required(req.consistency, &req.outside)
}

/// Chooses where the transaction runs. Never allocates; O(replicas).
pub fn decide(req: &Request, replicas: &[ReplicaView]) -> Decision {
    let primary = |reason| Decision::Primary { reason, catch_up: None, needed: Lsn::ZERO, need: Need::Own, probe: None };
    if req.routing_disabled {
        return primary(PrimaryReason::Disabled);
    }
    if req.hint_primary {
        return primary(PrimaryReason::Hint);
    }
    if req.consistency == Consistency::Strong {
        return primary(PrimaryReason::Strong);
    }
    if req.writes && req.mode == RoutingMode::Automatic {
        return primary(PrimaryReason::Write);
    }
    // A write on a replica alias only needs a replica to fail on, with the server's 25006.
    let (needed, need) = if req.writes { (Lsn::ZERO, Need::Own) } else { required_lsn(req) };
    let mut best: Option<&ReplicaView> = None;
    let mut freshest_behind: Option<&ReplicaView> = None;
    let mut probe: Option<&ReplicaView> = None;
    let mut any_in_rotation = false;
    let n = (replicas.len() as u32).max(1);
    for r in replicas {
        // max_replica_lag bounds every level but strong: too far behind is out for everyone.
        if !in_rotation(r.in_rotation, r.lag, req.max_lag) {
            continue;
        }
        any_in_rotation = true;
        if r.replay_lsn < needed {
            if freshest_behind.is_none_or(|f| r.replay_lsn > f.replay_lsn) {
                freshest_behind = Some(r);
            }
            if r.typical_lag < req.probe_below && probe.is_none_or(|p| r.outstanding < p.outstanding) {
                probe = Some(r);
            }
            continue;
        }
        if Some(r.node) == req.lsns.sticky() {
            return Decision::Replica(r.node);
        }
        let rank = |v: &ReplicaView| (v.outstanding, u32::from(v.node.0).wrapping_add(req.tiebreak) % n);
        if best.is_none_or(|b| rank(r) < rank(b)) {
            best = Some(r);
        }
    }
    match best {
        Some(r) => Decision::Replica(r.node),
        None if any_in_rotation => Decision::Primary {
            reason: PrimaryReason::LagFallback,
            catch_up: freshest_behind.map(|r| r.node),
            needed,
            need,
            probe: probe.map(|r| r.node),
        },
        None => primary(PrimaryReason::NoReplicaUp),
    }
}

/// A read under automatic routing at the default level, nothing seen yet: the base of the
/// unit tests' requests.
#[cfg(test)]
pub(crate) fn test_request() -> Request {
    Request {
        mode: RoutingMode::Automatic,
        consistency: Consistency::ReadYourWrites,
        writes: false,
        hint_primary: false,
        lsns: ClientLsns::default(),
        outside: Outside::default(),
        max_lag: Duration::from_secs(10),
        tiebreak: 0,
        probe_below: Duration::ZERO,
        routing_disabled: false,
        critical: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_rotation_needs_a_healthy_poll_and_lag_within_the_limit() {
        let max = Duration::from_secs(10);
        assert!(in_rotation(true, max, max));
        assert!(!in_rotation(true, max + Duration::from_millis(1), max));
        assert!(!in_rotation(false, Duration::ZERO, max));
    }

    fn req() -> Request {
        test_request()
    }

    fn committed(lsn: u64) -> ClientLsns {
        let mut lsns = ClientLsns::default();
        lsns.learn_commit(Lsn(lsn));
        lsns
    }

    fn replica(n: u16, lsn: u64, outstanding: u32) -> ReplicaView {
        ReplicaView {
            node: NodeId(n),
            in_rotation: true,
            replay_lsn: Lsn(lsn),
            lag: Duration::ZERO,
            outstanding,
            typical_lag: Duration::from_millis(u64::from(n) * 100),
        }
    }

    fn reason(d: Decision) -> Option<PrimaryReason> {
        match d {
            Decision::Primary { reason, .. } => Some(reason),
            Decision::Replica(_) => None,
        }
    }

    #[test]
    fn writes_go_to_the_primary() {
        let d = decide(&Request { writes: true, ..req() }, &[replica(0, 100, 0)]);
        assert_eq!(reason(d), Some(PrimaryReason::Write));
    }

    #[test]
    fn reads_go_to_a_replica_that_has_the_clients_commit() {
        let r = Request { lsns: committed(150), ..req() };
        assert_eq!(decide(&r, &[replica(0, 100, 0), replica(1, 200, 5)]), Decision::Replica(NodeId(1)));
        assert_eq!(decide(&r, &[replica(0, 150, 0)]), Decision::Replica(NodeId(0)));
    }

    #[test]
    fn behind_replicas_fall_back_and_name_the_freshest_to_wait_for() {
        let r = Request { lsns: committed(300), ..req() };
        let d = decide(&r, &[replica(0, 100, 0), replica(1, 200, 0)]);
        assert_eq!(
            d,
            Decision::Primary {
                reason: PrimaryReason::LagFallback,
                catch_up: Some(NodeId(1)),
                needed: Lsn(300),
                need: Need::Own,
                probe: None
            }
        );
        // A fast follower (replica 0 typically lags 0 ms here) is worth asking directly.
        let d = decide(&Request { probe_below: Duration::from_millis(5), ..r }, &[replica(0, 100, 0), replica(1, 200, 0)]);
        assert!(matches!(d, Decision::Primary { probe: Some(NodeId(0)), .. }), "{d:?}");
    }

    #[test]
    fn monotonic_reads_never_go_back() {
        let mut lsns = ClientLsns::default();
        lsns.learn_read(Lsn(180));
        let r = Request { lsns, ..req() };
        assert_eq!(decide(&r, &[replica(0, 100, 0), replica(1, 200, 9)]), Decision::Replica(NodeId(1)));
    }

    #[test]
    fn least_outstanding_wins_and_sticky_beats_it() {
        let rs = [replica(0, 100, 3), replica(1, 100, 1), replica(2, 100, 2)];
        assert_eq!(decide(&req(), &rs), Decision::Replica(NodeId(1)));
        let mut lsns = ClientLsns::default();
        lsns.read_from(NodeId(2), Lsn(100));
        assert_eq!(decide(&Request { lsns, ..req() }, &rs), Decision::Replica(NodeId(2)));
    }

    #[test]
    fn ties_are_spread_by_the_tiebreak() {
        let rs = [replica(0, 100, 0), replica(1, 100, 0)];
        assert_eq!(decide(&Request { tiebreak: 0, ..req() }, &rs), Decision::Replica(NodeId(0)));
        assert_eq!(decide(&Request { tiebreak: 1, ..req() }, &rs), Decision::Replica(NodeId(1)));
    }

    #[test]
    fn down_promoted_and_too_laggy_replicas_are_out() {
        let mut down = replica(0, 500, 0);
        down.in_rotation = false;
        let mut laggy = replica(1, 500, 0);
        laggy.lag = Duration::from_secs(11);
        let d = decide(&Request { consistency: Consistency::Eventual, ..req() }, &[down, laggy]);
        assert_eq!(reason(d), Some(PrimaryReason::NoReplicaUp));
        assert_eq!(reason(decide(&req(), &[])), Some(PrimaryReason::NoReplicaUp));
    }

    #[test]
    fn levels() {
        let rs = [replica(0, 100, 0)];
        let outside = Outside { global_commit: Lsn(300), ..Outside::default() };
        let behind = Request { lsns: committed(200), outside, ..req() };
        assert_eq!(reason(decide(&Request { consistency: Consistency::Strong, ..req() }, &rs)), Some(PrimaryReason::Strong));
        assert_eq!(reason(decide(&behind, &rs)), Some(PrimaryReason::LagFallback));
        let global = Request { consistency: Consistency::Global, lsns: ClientLsns::default(), ..behind };
        assert_eq!(reason(decide(&global, &rs)), Some(PrimaryReason::LagFallback));
        assert_eq!(decide(&Request { consistency: Consistency::Bounded, ..behind }, &rs), Decision::Replica(NodeId(0)));
        assert_eq!(decide(&Request { consistency: Consistency::Eventual, ..behind }, &rs), Decision::Replica(NodeId(0)));
    }

    #[test]
    fn the_kill_switch_sends_everything_to_the_primary() {
        let off = Request { routing_disabled: true, ..req() };
        assert_eq!(reason(decide(&off, &[replica(0, 1, 0)])), Some(PrimaryReason::Disabled));
        let alias = Request { mode: RoutingMode::ReplicaOnly, consistency: Consistency::Eventual, ..off };
        assert_eq!(reason(decide(&alias, &[replica(0, 1, 0)])), Some(PrimaryReason::Disabled));
    }

    #[test]
    fn hints_and_replica_only_aliases() {
        assert_eq!(reason(decide(&Request { hint_primary: true, ..req() }, &[replica(0, 1, 0)])), Some(PrimaryReason::Hint));
        let alias = Request { mode: RoutingMode::ReplicaOnly, consistency: Consistency::Bounded, writes: true, ..req() };
        assert_eq!(decide(&alias, &[replica(0, 1, 0)]), Decision::Replica(NodeId(0)));
    }
}
