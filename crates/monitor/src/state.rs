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
    /// The last good poll said it is NOT in recovery: it is the primary, was promoted, or is
    /// an old primary that came back (fenced). Kept apart from `!in_recovery` so "never
    /// polled yet" and "not in recovery" read differently.
    promoted: AtomicBool,
    /// Claims to be a primary while another node is the cluster's primary: never used.
    fenced: AtomicBool,
    /// A poll or connect has failed at least once (a hinted primary that is down at start
    /// gets no grace period).
    seen_down: AtomicBool,
    /// The WAL timeline the node is on (a primary: the one it writes; a replica: the one it
    /// receives, else its last restartpoint's); 0 = not known yet.
    timeline: AtomicU32,
    /// In recovery: `pg_last_wal_replay_lsn()`; not in recovery: `pg_current_wal_lsn()`.
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
            fenced: AtomicBool::new(false),
            seen_down: AtomicBool::new(false),
            timeline: AtomicU32::new(0),
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

    pub(crate) fn timeline(&self) -> u32 {
        self.timeline.load(Ordering::Relaxed)
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
    /// It claims to be a primary while another node is the primary: never used.
    pub fenced: bool,
    /// Its WAL timeline (0: not known yet).
    pub timeline: u32,
    /// `up && in_recovery` and on the cluster's timeline: may receive replica traffic at all.
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
    /// Which listed node is the primary now.
    pub node: NodeId,
    pub up: bool,
    /// Last polled `pg_current_wal_lsn()`, raised by `note_commit_lsn` in between polls.
    pub current_lsn: Lsn,
    pub last_poll_micros: u64,
    pub outstanding: u32,
    /// The timeline it writes (0: not known yet).
    pub timeline: u32,
}

/// What a poll of a node that is not in recovery decided about it (`claim_primary`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// It is the cluster's primary (it was, or it just took over from a primary that had
    /// answered as one: a failover).
    Primary { took_over_from: Option<NodeId> },
    /// Another node is the primary: it is not used.
    Fenced,
    /// Nothing decided yet: the configured primary has not been polled once.
    Pending,
}

/// Which node is the primary, and the knowledge that goes with it. Written only by pollers
/// (under `ClusterState::election`), read lock-free by everyone.
#[derive(Debug)]
struct Leader {
    /// Index of the primary in `nodes`.
    node: AtomicU32,
    /// The cluster's timeline: the primary's, never lowered (0: not known yet).
    timeline: AtomicU32,
    /// Bumped at each takeover. Clients' LSN knowledge is stamped with it (`ClientLsns`).
    epoch: AtomicU32,
    /// The primary has answered a poll as a primary (not in recovery) at least once: a node
    /// taking over from one that never did is the primary being found, not a failover.
    confirmed: AtomicBool,
    /// The new primary's WAL position when it took over. Whatever survived of the old timeline
    /// is at or below it, so knowledge from an older epoch is capped here (`rebase_lsn`).
    rebase_lsn: AtomicU64,
}

/// Shared state of one cluster: its listed nodes, which of them is the primary now, and the
/// newest commit seen. `NodeId(i)` is `nodes[i]`. Create it with `spawn_monitor`, or
/// `ClusterState::new` / `with_nodes` for a state that nothing polls (every node stays down).
#[derive(Debug)]
pub struct ClusterState {
    name: String,
    nodes: Box<[NodeState]>,
    leader: Leader,
    /// Serialises primary decisions (pollers only, at most one per poll of a non-recovering
    /// node): two pollers seeing two primaries must not both take over.
    election: std::sync::Mutex<()>,
    /// How long the configured primary gets to answer its first poll before another node that
    /// is not in recovery may take over; also bounds a hung primary's poll.
    failover_detect: std::time::Duration,
    /// `monotonic_micros()` when this state was made.
    created: u64,
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

/// Default `failover_detect`.
pub const DEFAULT_FAILOVER_DETECT: std::time::Duration = std::time::Duration::from_secs(2);

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
    /// A primary and its replicas with fixed roles as a hint: `NodeId(i)` is `replica_addrs[i]`,
    /// the primary comes after them. Replicas beyond `u16::MAX` are ignored.
    pub fn new(
        name: impl Into<String>,
        primary_addr: impl Into<String>,
        replica_addrs: &[String],
    ) -> Self {
        let mut nodes: Vec<String> = replica_addrs.iter().take(usize::from(u16::MAX)).cloned().collect();
        let hint = nodes.len();
        nodes.push(primary_addr.into());
        Self::with_nodes(name, &nodes, hint, DEFAULT_FAILOVER_DETECT)
    }

    /// Listed nodes whose roles the monitor discovers; `primary_hint` is the node writes go to
    /// until a poll says otherwise. Nodes beyond `u16::MAX + 1` are ignored.
    pub fn with_nodes(
        name: impl Into<String>,
        node_addrs: &[String],
        primary_hint: usize,
        failover_detect: std::time::Duration,
    ) -> Self {
        let nodes: Box<[NodeState]> = node_addrs
            .iter()
            .take(usize::from(u16::MAX) + 1)
            .map(|a| NodeState::new(a.clone()))
            .collect();
        let nodes = if nodes.is_empty() { vec![NodeState::new(String::new())].into_boxed_slice() } else { nodes };
        let hint = primary_hint.min(nodes.len() - 1);
        ClusterState {
            name: name.into(),
            nodes,
            leader: Leader {
                node: AtomicU32::new(hint as u32),
                timeline: AtomicU32::new(0),
                epoch: AtomicU32::new(0),
                confirmed: AtomicBool::new(false),
                rebase_lsn: AtomicU64::new(0),
            },
            election: std::sync::Mutex::new(()),
            failover_detect,
            created: clock::monotonic_micros(),
            highest_commit_lsn: AtomicU64::new(0),
            any_replica_changed: Notify::new(),
            primary_history: std::sync::Mutex::new(std::collections::VecDeque::with_capacity(PRIMARY_HISTORY)),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn failover_detect(&self) -> std::time::Duration {
        self.failover_detect
    }

    /// Which node is the primary now (one atomic load).
    pub fn primary_id(&self) -> NodeId {
        NodeId(self.leader.node.load(Ordering::Acquire) as u16)
    }

    pub fn primary_addr(&self) -> &str {
        &self.primary_node().addr
    }

    /// The cluster's timeline as last seen on its primary (0: not known yet).
    pub fn timeline(&self) -> u32 {
        self.leader.timeline.load(Ordering::Acquire)
    }

    /// Bumped at each takeover (0: the first primary). Read before `rebase_lsn`.
    pub fn epoch(&self) -> u32 {
        self.leader.epoch.load(Ordering::Acquire)
    }

    /// The cap for LSN knowledge from an epoch before the current one (see `Leader`).
    pub fn rebase_lsn(&self) -> Lsn {
        Lsn(self.leader.rebase_lsn.load(Ordering::Acquire))
    }

    /// Every listed node: the primary and the replicas.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Nodes that are not the primary right now.
    pub fn replica_count(&self) -> usize {
        self.nodes.len() - 1
    }

    pub fn node_addr(&self, node: NodeId) -> Option<&str> {
        self.node(node).map(|n| n.addr.as_str())
    }

    pub fn replica_addr(&self, node: NodeId) -> Option<&str> {
        self.node_addr(node)
    }

    pub(crate) fn node(&self, node: NodeId) -> Option<&NodeState> {
        self.nodes.get(usize::from(node.0))
    }

    /// A node that is not the primary right now.
    pub(crate) fn replica(&self, node: NodeId) -> Option<&NodeState> {
        (node != self.primary_id()).then(|| self.node(node)).flatten()
    }

    pub(crate) fn primary_node(&self) -> &NodeState {
        let i = self.leader.node.load(Ordering::Acquire) as usize;
        // `with_nodes` keeps the index within the list; the fallback only guards that.
        self.nodes.get(i).unwrap_or(&self.nodes[0])
    }

    /// Every listed node's id, in configuration order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..self.nodes.len()).filter_map(|i| u16::try_from(i).ok().map(NodeId))
    }

    /// The ids of the nodes that are not the primary right now, in configuration order.
    pub fn replica_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        let primary = self.primary_id();
        self.node_ids().filter(move |id| *id != primary)
    }

    /// Snapshots of all nodes but the primary, in configuration order.
    pub fn replicas(&self) -> impl Iterator<Item = ReplicaSnapshot> + '_ {
        self.replica_ids().map(|id| self.snapshot(id))
    }

    /// The primary's current WAL LSN as last polled (or raised by `note_commit_lsn`);
    /// `Lsn::ZERO` until the primary has been polled once.
    pub fn primary_current_lsn(&self) -> Lsn {
        Lsn(self.primary_node().lsn())
    }

    pub fn primary(&self) -> PrimarySnapshot {
        let node = self.primary_id();
        let n = self.primary_node();
        let up = n.up.load(Ordering::Acquire);
        PrimarySnapshot {
            node,
            up,
            current_lsn: Lsn(n.lsn()),
            last_poll_micros: n.last_poll.load(Ordering::Relaxed),
            outstanding: n.outstanding.load(Ordering::Relaxed),
            timeline: n.timeline(),
        }
    }

    /// Replica rotation rule: reachable, really a replica, and on the cluster's timeline (a
    /// replica still on an old primary's timeline may hold writes the new one never had).
    pub(crate) fn in_rotation(&self, n: &NodeState) -> bool {
        let cluster = self.timeline();
        n.up.load(Ordering::Acquire)
            && n.in_recovery.load(Ordering::Relaxed)
            && (cluster == 0 || n.timeline() >= cluster)
    }

    /// One node's values. An id outside the list reads as a node that is down and out of
    /// rotation, so a stale id can never attract traffic; so does the primary.
    pub fn snapshot(&self, node: NodeId) -> ReplicaSnapshot {
        let Some(n) = self.node(node) else {
            return ReplicaSnapshot {
                node,
                up: false,
                in_recovery: false,
                promoted: false,
                fenced: false,
                timeline: 0,
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
        let primary = self.primary_node().lsn();
        // Lag is derived here rather than stored: the primary's LSN moves between replica
        // polls, and deriving keeps bytes and "caught up" consistent with the freshest value.
        let caught_up = replay >= primary;
        ReplicaSnapshot {
            node,
            up,
            in_recovery,
            promoted,
            fenced: n.fenced.load(Ordering::Relaxed),
            timeline: n.timeline(),
            in_rotation: self.in_rotation(n),
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
        self.primary_node().lsn.fetch_max(lsn.0, Ordering::AcqRel);
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
    /// `None` for an id outside the list.
    pub fn begin_read(&self, node: NodeId) -> Option<OutstandingGuard<'_>> {
        let n = self.node(node)?;
        n.reads_routed.fetch_add(1, Ordering::Relaxed);
        n.outstanding.fetch_add(1, Ordering::Relaxed);
        Some(OutstandingGuard {
            counter: &n.outstanding,
        })
    }

    /// Counts a transaction as outstanding on the primary until the guard drops.
    pub fn begin_primary(&self) -> OutstandingGuard<'_> {
        let n = self.primary_node();
        n.outstanding.fetch_add(1, Ordering::Relaxed);
        OutstandingGuard {
            counter: &n.outstanding,
        }
    }

    fn signal(&self, n: &NodeState) {
        n.changed.notify_waiters();
        self.any_replica_changed.notify_waiters();
    }

    // ------------------------------------------------------------------ writers (pollers)

    /// A poll or connect failed: out of rotation at once. Returns whether it was up.
    pub(crate) fn mark_down(&self, n: &NodeState) -> bool {
        n.seen_down.store(true, Ordering::Relaxed);
        let was_up = n.up.swap(false, Ordering::AcqRel);
        if was_up {
            // Waiters on this node give up now instead of at their timeout.
            self.signal(n);
        }
        was_up
    }

    /// A good poll said node `id` is not in recovery, on `timeline`, at `lsn`. Decides whether
    /// it is the primary. The rule (docs/ARCHITECTURE.md, "Failover"): a node on an older
    /// timeline than the cluster's is fenced (an old primary started again); one on a newer
    /// timeline takes over (it was promoted after the primary's timeline began); on the same
    /// timeline the primary stays the primary while it answers as one, and another node takes
    /// over only when it does not (down, back in recovery, or a hinted primary that never
    /// answered within `failover_detect` of start). Everything else is fenced.
    pub(crate) fn claim_primary(&self, id: NodeId, timeline: u32, lsn: u64) -> Claim {
        let Some(n) = self.node(id) else { return Claim::Fenced };
        // Pollers only; a poisoned lock still serialises (the guarded data is `()`).
        let _elected = self.election.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.primary_id();
        let cluster_tl = self.timeline();
        if current == id {
            n.fenced.store(false, Ordering::Relaxed);
            self.leader.confirmed.store(true, Ordering::Relaxed);
            if timeline > cluster_tl {
                self.leader.timeline.store(timeline, Ordering::Release);
            }
            return Claim::Primary { took_over_from: None };
        }
        let p = self.primary_node();
        let primary_answers = p.up.load(Ordering::Acquire) && !p.in_recovery.load(Ordering::Relaxed) && p.promoted.load(Ordering::Relaxed);
        let never_polled = p.last_poll.load(Ordering::Relaxed) == 0 && !p.seen_down.load(Ordering::Relaxed);
        let stale = cluster_tl != 0 && timeline != 0 && timeline < cluster_tl;
        let newer = cluster_tl != 0 && timeline > cluster_tl;
        if stale || (primary_answers && !newer) {
            n.fenced.store(true, Ordering::Relaxed);
            return Claim::Fenced;
        }
        if !newer && never_polled && self.epoch() == 0 {
            let waited = clock::monotonic_micros().saturating_sub(self.created);
            if u128::from(waited) < self.failover_detect.as_micros() {
                return Claim::Pending;
            }
        }
        // Take over. The cap first, then the epoch (readers load the epoch, then the cap).
        self.leader.rebase_lsn.store(lsn, Ordering::Release);
        self.highest_commit_lsn.fetch_min(lsn, Ordering::AcqRel);
        if let Ok(mut h) = self.primary_history.lock() {
            h.clear();
        }
        n.lsn.store(lsn, Ordering::Release);
        n.fenced.store(false, Ordering::Relaxed);
        self.leader.timeline.store(timeline.max(cluster_tl), Ordering::Release);
        self.leader.node.store(u32::from(id.0), Ordering::Release);
        self.leader.epoch.fetch_add(1, Ordering::AcqRel);
        let was_confirmed = self.leader.confirmed.swap(true, Ordering::Relaxed);
        // Waiters on any node re-check: rotation changed with the timeline.
        for n in self.nodes.iter() {
            n.changed.notify_waiters();
        }
        self.any_replica_changed.notify_waiters();
        Claim::Primary { took_over_from: was_confirmed.then_some(current) }
    }

    /// A good poll of the primary (after `claim_primary` said so). Returns whether it was up.
    pub(crate) fn record_primary_poll(&self, n: &NodeState, current_lsn: u64, timeline: u32, poll_started: u64) -> bool {
        // A plain store, not fetch_max: a primary rebuilt from a backup really is behind, and a
        // commit LSN noted between the poll's start and now is restored by the next poll.
        n.lsn.store(current_lsn, Ordering::Release);
        n.in_recovery.store(false, Ordering::Relaxed);
        n.promoted.store(true, Ordering::Relaxed);
        n.timeline.store(timeline, Ordering::Relaxed);
        n.last_poll.store(poll_started, Ordering::Relaxed);
        if let Ok(mut h) = self.primary_history.lock() {
            if h.len() == PRIMARY_HISTORY {
                h.pop_front();
            }
            h.push_back((current_lsn, poll_started));
        }
        n.up.swap(true, Ordering::AcqRel)
    }

    /// A good poll of a node that is not in recovery and not the primary (fenced or pending):
    /// shown by the console, never used.
    pub(crate) fn record_other_primary_poll(&self, n: &NodeState, current_lsn: u64, timeline: u32, poll_started: u64) {
        let was_in_rotation = self.in_rotation(n);
        n.lsn.store(current_lsn, Ordering::Release);
        n.in_recovery.store(false, Ordering::Relaxed);
        n.promoted.store(true, Ordering::Relaxed);
        n.timeline.store(timeline, Ordering::Relaxed);
        n.last_poll.store(poll_started, Ordering::Relaxed);
        n.up.store(true, Ordering::Release);
        if was_in_rotation {
            self.signal(n);
        }
    }

    /// Start of the newest remembered primary poll whose LSN `replay_lsn` has reached.
    pub(crate) fn primary_poll_reached(&self, replay_lsn: u64) -> Option<u64> {
        let h = self.primary_history.lock().ok()?;
        h.iter().rev().find(|(lsn, _)| *lsn <= replay_lsn).map(|(_, at)| *at)
    }

    /// A good poll of a node in recovery; wakes waiters if the LSN advanced or rotation changed.
    #[cfg(test)]
    pub(crate) fn record_replica_poll(
        &self,
        n: &NodeState,
        in_recovery: bool,
        replay_lsn: u64,
        lag_micros: u64,
        poll_started: u64,
    ) {
        self.record_replica_poll_on(n, in_recovery, replay_lsn, lag_micros, 0, poll_started)
    }

    /// As `record_replica_poll`, with the replica's timeline (0: unknown, kept as it was).
    pub(crate) fn record_replica_poll_on(
        &self,
        n: &NodeState,
        in_recovery: bool,
        replay_lsn: u64,
        lag_micros: u64,
        timeline: u32,
        poll_started: u64,
    ) {
        let was_in_rotation = self.in_rotation(n);
        if lag_micros > 0 {
            // 1/8 weight: a few polls move it, one odd poll does not.
            let old = n.typical_lag_micros.load(Ordering::Relaxed);
            let new = if old == 0 { lag_micros } else { old - old / 8 + lag_micros / 8 };
            n.typical_lag_micros.store(new, Ordering::Relaxed);
        }
        n.in_recovery.store(in_recovery, Ordering::Relaxed);
        n.promoted.store(!in_recovery, Ordering::Relaxed);
        n.fenced.store(false, Ordering::Relaxed);
        if timeline != 0 {
            n.timeline.store(timeline, Ordering::Relaxed);
        }
        n.lag_micros.store(lag_micros, Ordering::Relaxed);
        n.last_poll.store(poll_started, Ordering::Relaxed);
        // Plain store: a rebuilt replica really can go backwards; `note_replay_lsn` values are
        // lower bounds the poll supersedes.
        let old_lsn = n.lsn.swap(replay_lsn, Ordering::AcqRel);
        n.up.store(true, Ordering::Release);
        if replay_lsn > old_lsn || self.in_rotation(n) != was_in_rotation {
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
        s.record_primary_poll(s.primary_node(), 1000, 1, 1);
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
        s.record_primary_poll(s.primary_node(), 100, 1, 1_000);
        s.record_primary_poll(s.primary_node(), 200, 1, 2_000);
        s.record_primary_poll(s.primary_node(), 300, 1, 3_000);
        assert_eq!(s.primary_poll_reached(250), Some(2_000));
        assert_eq!(s.primary_poll_reached(300), Some(3_000));
        assert_eq!(s.primary_poll_reached(50), None);
    }

    fn nodes(n: usize) -> ClusterState {
        let addrs: Vec<String> = (0..n).map(|i| format!("n{i}:1")).collect();
        ClusterState::with_nodes("c", &addrs, 0, std::time::Duration::from_secs(60))
    }

    #[test]
    fn a_node_takes_over_only_when_the_primary_stops_answering() {
        let s = nodes(3);
        let (n0, n1) = (s.node(NodeId(0)).unwrap(), s.node(NodeId(1)).unwrap());
        assert_eq!(s.claim_primary(NodeId(0), 1, 100), Claim::Primary { took_over_from: None });
        s.record_primary_poll(n0, 100, 1, 1);
        s.record_replica_poll_on(n1, true, 100, 0, 1, 1);
        s.note_commit_lsn(Lsn(150));
        assert!(s.snapshot(NodeId(1)).in_rotation);
        // A second primary on the same timeline while the primary answers: fenced.
        assert_eq!(s.claim_primary(NodeId(1), 1, 120), Claim::Fenced);
        assert!(s.snapshot(NodeId(1)).fenced);
        assert_eq!(s.primary_id(), NodeId(0));
        // The primary stops answering and the node was promoted (timeline 2): it takes over,
        // knowledge is capped.
        s.mark_down(n0);
        assert_eq!(s.claim_primary(NodeId(1), 2, 120), Claim::Primary { took_over_from: Some(NodeId(0)) });
        assert_eq!((s.primary_id(), s.timeline(), s.epoch(), s.rebase_lsn()), (NodeId(1), 2, 1, Lsn(120)));
        assert_eq!(s.highest_commit_lsn(), Lsn(120));
        assert!(!s.snapshot(NodeId(1)).fenced);
        assert!(s.replica_ids().all(|id| id != NodeId(1)));
        // The old primary comes back still claiming: fenced, whatever the new one does.
        assert_eq!(s.claim_primary(NodeId(0), 1, 500), Claim::Fenced);
        s.mark_down(n1);
        assert_eq!(s.claim_primary(NodeId(0), 1, 500), Claim::Fenced);
        assert_eq!(s.primary_id(), NodeId(1));
    }

    #[test]
    fn a_newer_timeline_wins_even_while_the_old_primary_answers() {
        let s = nodes(2);
        assert_eq!(s.claim_primary(NodeId(0), 1, 100), Claim::Primary { took_over_from: None });
        s.record_primary_poll(s.node(NodeId(0)).unwrap(), 100, 1, 1);
        assert_eq!(s.claim_primary(NodeId(1), 2, 110), Claim::Primary { took_over_from: Some(NodeId(0)) });
        // The old primary, still up on timeline 1, is fenced at its next poll.
        assert_eq!(s.claim_primary(NodeId(0), 1, 130), Claim::Fenced);
        assert_eq!(s.primary_id(), NodeId(1));
    }

    #[test]
    fn a_restart_finds_the_newest_timeline_whatever_the_hint() {
        // lsnpool restarted: the hinted node is the old primary, started again on timeline 1.
        let s = nodes(2);
        assert_eq!(s.claim_primary(NodeId(0), 1, 500), Claim::Primary { took_over_from: None });
        s.record_primary_poll(s.node(NodeId(0)).unwrap(), 500, 1, 1);
        assert!(matches!(s.claim_primary(NodeId(1), 2, 120), Claim::Primary { .. }));
        assert_eq!(s.claim_primary(NodeId(0), 1, 500), Claim::Fenced);
    }

    #[test]
    fn replicas_on_an_older_timeline_leave_rotation() {
        let s = nodes(3);
        let (n1, n2) = (s.node(NodeId(1)).unwrap(), s.node(NodeId(2)).unwrap());
        s.record_primary_poll(s.node(NodeId(0)).unwrap(), 100, 1, 1);
        assert_eq!(s.claim_primary(NodeId(0), 1, 100), Claim::Primary { took_over_from: None });
        s.record_replica_poll_on(n2, true, 100, 0, 1, 1);
        assert!(s.snapshot(NodeId(2)).in_rotation);
        s.mark_down(s.node(NodeId(0)).unwrap());
        assert!(matches!(s.claim_primary(NodeId(1), 2, 110), Claim::Primary { .. }));
        s.record_primary_poll(n1, 110, 2, 2);
        assert!(!s.snapshot(NodeId(2)).in_rotation, "still on timeline 1");
        s.record_replica_poll_on(n2, true, 110, 0, 2, 3);
        assert!(s.snapshot(NodeId(2)).in_rotation, "follows timeline 2");
    }

    #[test]
    fn the_configured_primary_gets_failover_detect_to_answer_first() {
        let s = nodes(2);
        assert_eq!(s.claim_primary(NodeId(1), 1, 100), Claim::Pending);
        // Down at start: no grace.
        s.mark_down(s.node(NodeId(0)).unwrap());
        assert!(matches!(s.claim_primary(NodeId(1), 1, 100), Claim::Primary { .. }));
        let quick = ClusterState::with_nodes("c", &["a:1".to_string(), "b:1".to_string()], 0, std::time::Duration::ZERO);
        assert_eq!(quick.claim_primary(NodeId(1), 1, 100), Claim::Primary { took_over_from: None }, "found, not a failover");
        assert_eq!(quick.primary_id(), NodeId(1));
    }
}
