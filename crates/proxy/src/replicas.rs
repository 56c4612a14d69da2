//! The proxy's view of a cluster's live node state, kept by `lsnpool-monitor`.

use lsnpool_config::{ClusterConfig, Config, UserConfig};
pub use lsnpool_monitor::{ClusterState, MonitorHandle};
use lsnpool_monitor::{spawn_monitor, MonitorParams};
use lsnpool_router::{Lsn, ReplicaView};
use std::time::Duration;

pub fn start_monitor(name: &str, cl: &ClusterConfig, login: Option<&UserConfig>, config: &Config) -> (std::sync::Arc<ClusterState>, MonitorHandle) {
    let mut params = MonitorParams::new(
        name,
        String::new(),
        Vec::new(),
        login.map(|u| u.name.clone()).unwrap_or_else(|| "postgres".into()),
        login.and_then(|u| u.password.clone()),
        cl.server_database(name),
    );
    let (specs, hint) = cl.node_specs();
    params.nodes = specs.into_iter().map(|s| s.addr).collect();
    params.primary_hint = hint;
    params.failover_detect = config.routing.failover_detect;
    params.poll_interval = config.routing.lsn_poll_interval;
    params.connect_timeout = config.pooler.server_connect_timeout;
    spawn_monitor(params)
}

/// Fills `out` with every replica's routing-relevant state (reusing its allocation).
pub fn views(state: &ClusterState, out: &mut Vec<ReplicaView>) {
    out.clear();
    out.extend(state.replicas().map(|r| ReplicaView {
        node: r.node,
        in_rotation: r.in_rotation,
        replay_lsn: r.replay_lsn,
        lag: r.lag(),
        outstanding: r.outstanding,
        typical_lag: Duration::from_micros(r.typical_lag_micros),
    }));
}

/// One node as SHOW REPLICAS shows it.
pub struct NodeRow {
    pub node: String,
    pub addr: String,
    /// `primary`, `replica`, `fenced` (claims to be a primary while another one is),
    /// `promoted` (not in recovery, not decided yet) or `unknown` (never polled).
    pub role: &'static str,
    pub state: &'static str,
    pub lsn: Lsn,
    pub lag_bytes: u64,
    pub lag_ms: u64,
    pub last_poll_ms_ago: Option<u64>,
    pub reads_routed: u64,
    pub in_rotation: bool,
    pub timeline: u32,
    pub fenced: bool,
}

/// Every listed node, the primary first. `max_lag` is `routing.max_replica_lag`: a replica
/// beyond it is out of rotation here as it is for the router.
pub fn node_rows(state: &ClusterState, cl: &ClusterConfig, max_lag: Duration) -> Vec<NodeRow> {
    let (specs, _) = cl.node_specs();
    let name = |id: lsnpool_router::NodeId| specs.get(usize::from(id.0)).map_or_else(|| format!("node{}", id.0), |s| s.name.clone());
    let p = state.primary();
    let age_ms = |micros: u64| lsnpool_monitor::age_of(micros).map(|d| d.as_millis() as u64);
    let mut rows = vec![NodeRow {
        node: name(p.node),
        addr: state.primary_addr().to_string(),
        role: "primary",
        state: if p.up { "up" } else { "down" },
        lsn: p.current_lsn,
        lag_bytes: 0,
        lag_ms: 0,
        last_poll_ms_ago: age_ms(p.last_poll_micros),
        reads_routed: 0,
        in_rotation: p.up,
        timeline: p.timeline,
        fenced: false,
    }];
    for r in state.replicas() {
        let role = match (r.last_poll_micros, r.fenced, r.promoted) {
            (0, _, _) => "unknown",
            (_, true, _) => "fenced",
            (_, false, true) => "promoted",
            _ => "replica",
        };
        rows.push(NodeRow {
            node: name(r.node),
            addr: state.node_addr(r.node).unwrap_or_default().to_string(),
            role,
            state: if r.up { "up" } else { "down" },
            lsn: r.replay_lsn,
            lag_bytes: r.lag_bytes,
            lag_ms: r.lag_micros / 1000,
            last_poll_ms_ago: age_ms(r.last_poll_micros),
            reads_routed: r.reads_routed,
            in_rotation: lsnpool_router::in_rotation(r.in_rotation, r.lag(), max_lag),
            timeline: r.timeline,
            fenced: r.fenced,
        });
    }
    rows
}
