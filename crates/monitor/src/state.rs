//! The shared, lock-free state of one cluster.
//!
//! Every client transaction reads it (to pick a replica), so the read side is plain atomic
//! loads: no lock, no allocation. The writers are one poller task per node plus the proxy's
//! own counters. A snapshot loads several atomics one after the other, so it is not one
//! consistent instant across fields; that is fine because every field is at most one poll
//! interval old anyway and the LSN rules only need each LSN on its own to be a lower bound.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use lsnpool_router::{Lsn, NodeId};
use tokio::sync::Notify;

use crate::clock;

/// One node's live values. Aligned to a cache line so the proxy bumping one replica's
/// counters does not invalidate the line the other replicas' readers are loading.
#[repr(align(64))]
#[derive(Debug)]
pub(crate) struct NodeState {
    pub(crate) addr: String,
    /// Last poll succeeded. Stored last (Release) on a good poll, so a reader that sees `true`
    /// (Acquire) also sees that poll's values.
    up: AtomicBool,
    /// Replicas: the last good poll said `pg_is_in_recovery()`.
    in_recovery: AtomicBool,
    /// Replicas: the last good poll said it is NOT in recovery, i.e. it was promoted (or is a
    /// primary listed as a replica). Kept apart from `!in_recovery` so "never polled yet" and
    /// "promoted" read differently.
    promoted: AtomicBool,
    /// Replicas: `pg_last_wal_replay_lsn()`; primary: `pg_current_wal_lsn()`.
    lsn: AtomicU64,
    /// Replicas: time lag in µs as of the last poll (see the poller for how it is bounded).
    lag_micros: AtomicU64,
    /// Replicas: how far behind it typically is while the primary writes (a moving average
    /// of the lag over polls that found it behind). Tells a follower that replays within a
    /// millisecond from one held back by `recovery_min_apply_delay`, even when both look
    /// caught up with an idle primary.
    typical_lag_micros: AtomicU64,
    /// `clock::monotonic_micros()` at the start of the last good poll; 0 = never.
    last_poll: AtomicU64,
    /// Transactions the proxy is running on this node right now ("least outstanding work").
    outstanding: AtomicU32,
    /// Reads the proxy sent to this node, for the admin console and metrics.
    reads_routed: AtomicU64,
    /// Signalled when the LSN advances or the node enters/leaves rotation; waiters in
    /// `wait_for_replay` sleep on it instead of polling.
    pub(crate) changed: Notify,
    /// Readers waiting for this node make its poller poll back to back.
    pub(crate) demand: crate::demand::Demand,
}

impl NodeState {
    fn new(addr: String) -> Self {
        NodeState {
            addr,
            up: AtomicBool::new(false),
            in_recovery: AtomicBool::new(false),
            promoted: AtomicBool::new(false),
            lsn: AtomicU64::new(0),
            lag_micros: AtomicU64::new(0),
            typical_lag_micros: AtomicU64::new(0),
            last_poll: AtomicU64::new(0),
            outstanding: AtomicU32::new(0),
            reads_routed: AtomicU64::new(0),
            changed: Notify::new(),
            demand: crate::demand::Demand::default(),
        }
    }

    pub(crate) fn lsn(&self) -> u64 {
        self.lsn.load(Ordering::Acquire)
    }

    /// Replica rotation rule: reachable, really a replica, and not seen promoted.
    pub(crate) fn in_rotation(&self) -> bool {
        self.up.load(Ordering::Acquire)
            && self.in_recovery.load(Ordering::Relaxed)
            && !self.promoted.load(Ordering::Relaxed)
    }
}

/// A replica's values at one moment, for the routing decision and the admin console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaSnapshot {
    pub node: NodeId,
    /// The last poll succeeded.
    pub up: bool,
    /// The last good poll said `pg_is_in_recovery()`.
    pub in_recovery: bool,
    /// The last good poll said it is no longer in recovery.
    pub promoted: bool,
    /// `up && in_recovery && !promoted`: may receive replica traffic at all.
    pub in_rotation: bool,
    pub replay_lsn: Lsn,
    /// Primary's current LSN − replay LSN, saturating at 0 (the two are polled separately, so
    /// the replica may momentarily look ahead of the primary).
    pub lag_bytes: u64,
    /// Time lag; 0 whenever `replay_lsn` ≥ the primary's current LSN.
    pub lag_micros: u64,
    /// Typical lag while the primary writes (see `NodeState::typical_lag_micros`).
    pub typical_lag_micros: u64,
    /// `monotonic_micros()` when the last good poll started; 0 = never. See `poll_age()`.
    pub last_poll_micros: u64,
    pub outstanding: u32,
    pub reads_routed: u64,
}

impl ReplicaSnapshot {
    /// How old the polled values are; `None` if the node was never polled successfully.
    pub fn poll_age(&self) -> Option<std::time::Duration> {
        clock::age_of(self.last_poll_micros)
    }

    pub fn lag(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.lag_micros)
    }
}

/// The primary's values at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrimarySnapshot {
    pub up: bool,
    /// Last polled `pg_current_wal_lsn()`, raised by `note_commit_lsn` in between polls.
    pub current_lsn: Lsn,
    pub last_poll_micros: u64,
    pub outstanding: u32,
}

/// Shared state of one cluster: its primary and its replicas (`NodeId` = index in the
/// configured replica list). Create it with `spawn_monitor`, or `ClusterState::new` for a state
/// that nothing polls (every node stays down).
#[derive(Debug)]
pub struct ClusterState {
    name: String,
    primary: NodeState,
    replicas: Box<[NodeState]>,
    /// Highest commit LSN the proxy has seen from any client: the `global` consistency level.
    highest_commit_lsn: AtomicU64,
    /// Signalled with any replica's `changed`, for `wait_for_any_replay`.
    pub(crate) any_replica_changed: Notify,
    /// Recent primary polls (LSN, poll start µs), oldest first: a replica that has replayed a
    /// polled LSN is missing only what was written after that poll started, which bounds its
    /// time lag even while the primary never stands still long enough to be caught up with.
    primary_history: std::sync::Mutex<std::collections::VecDeque<(u64, u64)>>,
}

/// Primary polls remembered for lag estimates (2.5 s at the default 10 ms interval).
const PRIMARY_HISTORY: usize = 256;

/// Counts one transaction as outstanding on a node until dropped.
#[derive(Debug)]
#[must_use = "the transaction counts as outstanding only while the guard lives"]
pub struct OutstandingGuard<'a> {
    counter: &'a AtomicU32,
}

impl Drop for OutstandingGuard<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ClusterState {
    /// Replicas beyond `u16::MAX` cannot be named by a `NodeId` and are ignored.
    pub fn new(
        name: impl Into<String>,
        primary_addr: impl Into<String>,
        replica_addrs: &[String],
    ) -> Self {
        ClusterState {
            name: name.into(),
            primary: NodeState::new(primary_addr.into()),
            replicas: replica_addrs
                .iter()
                .take(usize::from(u16::MAX) + 1)
                .map(|a| NodeState::new(a.clone()))
                .collect(),
            highest_commit_lsn: AtomicU64::new(0),
            any_replica_changed: Notify::new(),
            primary_history: std::sync::Mutex::new(std::collections::VecDeque::with_capacity(PRIMARY_HISTORY)),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn primary_addr(&self) -> &str {
        &self.primary.addr
    }

    pub fn replica_count(&self) -> usize {
        self.replicas.len()
    }

    pub fn replica_addr(&self, node: NodeId) -> Option<&str> {
        self.replica(node).map(|n| n.addr.as_str())
    }

    pub(crate) fn replica(&self, node: NodeId) -> Option<&NodeState> {
        self.replicas.get(usize::from(node.0))
    }

    pub(crate) fn primary_node(&self) -> &NodeState {
        &self.primary
    }

    /// All replica ids, in configuration order.
    pub fn replica_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        // `new` caps the list at u16::MAX + 1 entries, so every index fits.
        (0..self.replicas.len()).filter_map(|i| u16::try_from(i).ok().map(NodeId))
    }

    /// Snapshots of all replicas, in configuration order.
    pub fn replicas(&self) -> impl Iterator<Item = ReplicaSnapshot> + '_ {
        self.replica_ids().map(|id| self.snapshot(id))
    }

    /// The primary's current WAL LSN as last polled (or raised by `note_commit_lsn`);
    /// `Lsn::ZERO` until the primary has been polled once.
    pub fn primary_current_lsn(&self) -> Lsn {
        Lsn(self.primary.lsn())
    }

    pub fn primary(&self) -> PrimarySnapshot {
        let up = self.primary.up.load(Ordering::Acquire);
        PrimarySnapshot {
            up,
            current_lsn: Lsn(self.primary.lsn()),
            last_poll_micros: self.primary.last_poll.load(Ordering::Relaxed),
            outstanding: self.primary.outstanding.load(Ordering::Relaxed),
        }
    }

    /// One replica's values. An id outside the replica list reads as a node that is down and
    /// out of rotation, so a stale id can never attract traffic.
    pub fn snapshot(&self, node: NodeId) -> ReplicaSnapshot {
        let Some(n) = self.replica(node) else {
            return ReplicaSnapshot {
                node,
                up: false,
                in_recovery: false,
                promoted: false,
                in_rotation: false,
                replay_lsn: Lsn::ZERO,
                lag_bytes: 0,
                lag_micros: 0,
                typical_lag_micros: 0,
                last_poll_micros: 0,
                outstanding: 0,
                reads_routed: 0,
            };
        };
        let up = n.up.load(Ordering::Acquire);
        let in_recovery = n.in_recovery.load(Ordering::Relaxed);
        let promoted = n.promoted.load(Ordering::Relaxed);
        let replay = n.lsn();
        let primary = self.primary.lsn();
        // Lag is derived here rather than stored: the primary's LSN moves between replica
        // polls, and deriving keeps bytes and "caught up" consistent with the freshest value.
        let caught_up = replay >= primary;
        ReplicaSnapshot {
            node,
            up,
            in_recovery,
            promoted,
            in_rotation: up && in_recovery && !promoted,
            replay_lsn: Lsn(replay),
            lag_bytes: primary.saturating_sub(replay),
            // The idle-primary trap: with no new commits, pg_last_xact_replay_timestamp() is as
            // old as the last commit, though the replica has replayed everything there is.
            lag_micros: if caught_up {
                0
            } else {
                n.lag_micros.load(Ordering::Relaxed)
            },
            typical_lag_micros: n.typical_lag_micros.load(Ordering::Relaxed),
            last_poll_micros: n.last_poll.load(Ordering::Relaxed),
            outstanding: n.outstanding.load(Ordering::Relaxed),
            reads_routed: n.reads_routed.load(Ordering::Relaxed),
        }
    }

    /// Highest commit LSN seen from any client (`global` consistency).
    pub fn highest_commit_lsn(&self) -> Lsn {
        Lsn(self.highest_commit_lsn.load(Ordering::Acquire))
    }

    /// The proxy learned a commit LSN. Raises `highest_commit_lsn`, and the primary's current
    /// LSN too: a commit LSN is a lower bound of it, and a fresher primary LSN keeps replicas
    /// from looking caught up (lag 0) when they are not.
    pub fn note_commit_lsn(&self, lsn: Lsn) {
        self.highest_commit_lsn.fetch_max(lsn.0, Ordering::AcqRel);
        self.primary.lsn.fetch_max(lsn.0, Ordering::AcqRel);
    }

    /// The proxy asked a replica directly (`SELECT pg_last_wal_replay_lsn()` on a checked-out
    /// connection) and learned it has replayed at least `lsn`. Raises the replay LSN (never
    /// lowers it; the next poll stores the truth) and wakes waiters.
    pub fn note_replay_lsn(&self, node: NodeId, lsn: Lsn) {
        if let Some(n) = self.replica(node) {
            if n.lsn.fetch_max(lsn.0, Ordering::AcqRel) < lsn.0 {
                self.signal(n);
            }
        }
    }

    /// Counts a read transaction on `node` as outstanding (and routed) until the guard drops.
    /// `None` for an id outside the replica list.
    pub fn begin_read(&self, node: NodeId) -> Option<OutstandingGuard<'_>> {
        let n = self.replica(node)?;
        n.reads_routed.fetch_add(1, Ordering::Relaxed);
        n.outstanding.fetch_add(1, Ordering::Relaxed);
        Some(OutstandingGuard {
            counter: &n.outstanding,
        })
    }

    /// Counts a transaction as outstanding on the primary until the guard drops.
    pub fn begin_primary(&self) -> OutstandingGuard<'_> {
        self.primary.outstanding.fetch_add(1, Ordering::Relaxed);
        OutstandingGuard {
            counter: &self.primary.outstanding,
        }
    }

    fn signal(&self, n: &NodeState) {
        n.changed.notify_waiters();
        self.any_replica_changed.notify_waiters();
    }

    // ------------------------------------------------------------------ writers (pollers)

    /// A poll or connect failed: out of rotation at once. Returns whether it was up.
    pub(crate) fn mark_down(&self, n: &NodeState) -> bool {
        let was_up = n.up.swap(false, Ordering::AcqRel);
        if was_up {
            // Waiters on this node give up now instead of at their timeout.
            self.signal(n);
        }
        was_up
    }

    /// A good primary poll. Returns whether it was up before.
    pub(crate) fn record_primary_poll(&self, current_lsn: u64, poll_started: u64) -> bool {
        let n = &self.primary;
        // A plain store, not fetch_max: a primary rebuilt from a backup really is behind, and a
        // commit LSN noted between the poll's start and now is restored by the next poll.
        n.lsn.store(current_lsn, Ordering::Release);
        n.in_recovery.store(false, Ordering::Relaxed);
        n.last_poll.store(poll_started, Ordering::Relaxed);
        if let Ok(mut h) = self.primary_history.lock() {
            if h.len() == PRIMARY_HISTORY {
                h.pop_front();
            }
            h.push_back((current_lsn, poll_started));
        }
        n.up.swap(true, Ordering::AcqRel)
    }

    /// Start of the newest remembered primary poll whose LSN `replay_lsn` has reached.
    pub(crate) fn primary_poll_reached(&self, replay_lsn: u64) -> Option<u64> {
        let h = self.primary_history.lock().ok()?;
        h.iter().rev().find(|(lsn, _)| *lsn <= replay_lsn).map(|(_, at)| *at)
    }

    /// A good replica poll; wakes waiters if the LSN advanced or rotation changed.
    pub(crate) fn record_replica_poll(
        &self,
        n: &NodeState,
        in_recovery: bool,
        replay_lsn: u64,
        lag_micros: u64,
        poll_started: u64,
    ) {
        let was_in_rotation = n.in_rotation();
        if lag_micros > 0 {
            // 1/8 weight: a few polls move it, one odd poll does not.
            let old = n.typical_lag_micros.load(Ordering::Relaxed);
            let new = if old == 0 { lag_micros } else { old - old / 8 + lag_micros / 8 };
            n.typical_lag_micros.store(new, Ordering::Relaxed);
        }
        n.in_recovery.store(in_recovery, Ordering::Relaxed);
        n.promoted.store(!in_recovery, Ordering::Relaxed);
        n.lag_micros.store(lag_micros, Ordering::Relaxed);
        n.last_poll.store(poll_started, Ordering::Relaxed);
        // Plain store: a rebuilt replica really can go backwards; `note_replay_lsn` values are
        // lower bounds the poll supersedes.
        let old_lsn = n.lsn.swap(replay_lsn, Ordering::AcqRel);
        n.up.store(true, Ordering::Release);
        if replay_lsn > old_lsn || n.in_rotation() != was_in_rotation {
            self.signal(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ClusterState {
        ClusterState::new("c", "p:1", &["r0:1".to_string(), "r1:1".to_string()])
    }

    #[test]
    fn new_state_is_down_and_out_of_rotation() {
        let s = state();
        assert_eq!(s.replica_count(), 2);
        assert!(s.replicas().all(|r| !r.up && !r.in_rotation));
        assert!(!s.primary().up);
        let ghost = s.snapshot(NodeId(7));
        assert!(!ghost.in_rotation);
        assert!(s.begin_read(NodeId(7)).is_none());
    }

    #[test]
    fn rotation_requires_up_recovery_and_no_promotion() {
        let s = state();
        let r0 = s.replica(NodeId(0)).unwrap();
        s.record_replica_poll(r0, true, 100, 0, 1);
        assert!(s.snapshot(NodeId(0)).in_rotation);
        s.mark_down(r0);
        assert!(!s.snapshot(NodeId(0)).in_rotation);
        s.record_replica_poll(r0, false, 100, 0, 2);
        let snap = s.snapshot(NodeId(0));
        assert!(snap.up && snap.promoted && !snap.in_rotation);
    }

    #[test]
    fn lag_is_zero_when_caught_up_and_bytes_saturate() {
        let s = state();
        let r0 = s.replica(NodeId(0)).unwrap();
        s.record_primary_poll(1000, 1);
        s.record_replica_poll(r0, true, 1000, 5_000_000, 1);
        let snap = s.snapshot(NodeId(0));
        assert_eq!((snap.lag_bytes, snap.lag_micros), (0, 0));
        s.note_commit_lsn(Lsn(1500));
        let snap = s.snapshot(NodeId(0));
        assert_eq!((snap.lag_bytes, snap.lag_micros), (500, 5_000_000));
        s.record_replica_poll(r0, true, 2000, 0, 2);
        assert_eq!(s.snapshot(NodeId(0)).lag_bytes, 0);
        assert_eq!(s.highest_commit_lsn(), Lsn(1500));
    }

    #[test]
    fn outstanding_guard_counts() {
        let s = state();
        {
            let _a = s.begin_read(NodeId(1));
            let _b = s.begin_read(NodeId(1));
            assert_eq!(s.snapshot(NodeId(1)).outstanding, 2);
        }
        let snap = s.snapshot(NodeId(1));
        assert_eq!((snap.outstanding, snap.reads_routed), (0, 2));
        let g = s.begin_primary();
        assert_eq!(s.primary().outstanding, 1);
        drop(g);
        assert_eq!(s.primary().outstanding, 0);
    }

    #[test]
    fn primary_history_bounds_lag_by_the_newest_poll_reached() {
        let s = ClusterState::new("c", "p:1", &["r:2".to_string()]);
        s.record_primary_poll(100, 1_000);
        s.record_primary_poll(200, 2_000);
        s.record_primary_poll(300, 3_000);
        assert_eq!(s.primary_poll_reached(250), Some(2_000));
        assert_eq!(s.primary_poll_reached(300), Some(3_000));
        assert_eq!(s.primary_poll_reached(50), None);
    }
}
