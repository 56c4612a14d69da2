//! The proxy's view of a cluster's live node state (kept by `lsnpool-monitor`).
//! TEMPORARY stub until the monitor crate lands.

use lsnpool_config::{ClusterConfig, Config, UserConfig};
use lsnpool_router::{Lsn, NodeId, ReplicaView};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
pub struct ClusterState {
    highest_commit: AtomicU64,
}

pub struct MonitorHandle;

pub fn start_monitor(_name: &str, _cl: &ClusterConfig, _login: Option<&UserConfig>, _config: &Config) -> (Arc<ClusterState>, MonitorHandle) {
    (Arc::default(), MonitorHandle)
}

pub fn views(_state: &ClusterState, out: &mut Vec<ReplicaView>) {
    out.clear();
}

pub fn global_commit(state: &ClusterState) -> Lsn {
    Lsn(state.highest_commit.load(Ordering::Acquire))
}

pub fn note_commit(state: &ClusterState, lsn: Lsn) {
    state.highest_commit.fetch_max(lsn.0, Ordering::AcqRel);
}

pub fn begin_read(_state: &ClusterState, _node: NodeId) {}
pub fn end_read(_state: &ClusterState, _node: NodeId) {}

pub async fn wait_for_replay(_state: &ClusterState, _node: NodeId, _lsn: Lsn, _timeout: Duration) -> bool {
    false
}

/// One node as SHOW REPLICAS shows it.
pub struct NodeRow {
    pub node: String,
    pub addr: String,
    pub role: &'static str,
    pub state: &'static str,
    pub lsn: Lsn,
    pub lag_bytes: u64,
    pub lag_ms: u64,
    pub last_poll_ms_ago: Option<u64>,
    pub reads_routed: u64,
    pub in_rotation: bool,
}

pub fn node_rows(_state: &ClusterState, _cl: &ClusterConfig) -> Vec<NodeRow> {
    Vec::new()
}
