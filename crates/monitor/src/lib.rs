//! Live state of every node of a cluster: up/down, recovery state, replay LSN, lag.
//!
//! `spawn_monitor` starts one poller task per node (each with its own connection) that
//! publishes into a shared [`ClusterState`]; the proxy reads that state lock-free on every
//! transaction and bumps its per-replica counters. See DESIGN.md, "Replica state".

mod addr;
mod clock;
mod demand;
mod poller;
mod state;
mod wait;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lsnpool_router::NodeId;
use tokio::task::JoinHandle;

pub use clock::{age_of, monotonic_micros};
pub use state::{Claim, ClusterState, OutstandingGuard, PrimarySnapshot, ReplicaSnapshot, DEFAULT_FAILOVER_DETECT};

use poller::{ConnSettings, Poller};

/// DESIGN.md's `lsn_poll_interval` default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(10);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What to monitor and how to log in. `Debug` redacts the password.
#[derive(Clone)]
pub struct MonitorParams {
    /// For logs and metric labels.
    pub cluster: String,
    /// `host:port` each; `NodeId(i)` is `nodes[i]`. Roles are discovered by polling.
    pub nodes: Vec<String>,
    /// The node writes go to until a poll says another one is the primary.
    pub primary_hint: usize,
    /// A hung primary is declared down within this, and a configured primary that never
    /// answered loses its claim after it (see `ClusterState::claim_primary`).
    pub failover_detect: Duration,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    pub poll_interval: Duration,
    pub connect_timeout: Duration,
}

impl MonitorParams {
    /// Params with the default poll interval and connect timeout, for a primary and its
    /// replicas (`NodeId(i)` is `replicas[i]`; the primary comes after them).
    pub fn new(
        cluster: impl Into<String>,
        primary: impl Into<String>,
        replicas: Vec<String>,
        user: impl Into<String>,
        password: Option<String>,
        database: impl Into<String>,
    ) -> Self {
        let mut nodes = replicas;
        let primary_hint = nodes.len();
        nodes.push(primary.into());
        MonitorParams {
            cluster: cluster.into(),
            nodes,
            primary_hint,
            failover_detect: DEFAULT_FAILOVER_DETECT,
            user: user.into(),
            password,
            database: database.into(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

impl fmt::Debug for MonitorParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MonitorParams")
            .field("cluster", &self.cluster)
            .field("nodes", &self.nodes)
            .field("primary_hint", &self.primary_hint)
            .field("failover_detect", &self.failover_detect)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .field("poll_interval", &self.poll_interval)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// Owns a cluster's poller tasks; dropping it (or `shutdown`) stops them and closes their
/// connections, so RELOAD can replace a cluster's monitor by dropping the old handle. The
/// `ClusterState` stays readable afterwards but is no longer updated.
#[derive(Debug)]
pub struct MonitorHandle {
    tasks: Vec<JoinHandle<()>>,
}

impl MonitorHandle {
    /// Stops the pollers and waits until they are gone.
    pub async fn shutdown(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            // An aborted task reports `Cancelled`: that is the expected outcome here.
            let _ = t.await;
        }
    }
}

impl Drop for MonitorHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts monitoring a cluster: one task per node, polling every `poll_interval`. Every node
/// starts down and joins rotation after its first good poll. Must be called inside a tokio
/// runtime; install the metrics recorder first (the gauges bind to it here).
pub fn spawn_monitor(params: MonitorParams) -> (Arc<ClusterState>, MonitorHandle) {
    let default_if_zero = |d: Duration, default: Duration| if d.is_zero() { default } else { d };
    let state = Arc::new(ClusterState::with_nodes(
        params.cluster.clone(),
        &params.nodes,
        params.primary_hint,
        default_if_zero(params.failover_detect, DEFAULT_FAILOVER_DETECT),
    ));
    metrics::describe_gauge!(
        "lsnpool_node_up",
        "1 if the monitor's last poll of the node succeeded"
    );
    metrics::describe_gauge!(
        "lsnpool_replica_lag_bytes",
        metrics::Unit::Bytes,
        "primary's current WAL LSN minus the replica's replay LSN"
    );
    metrics::describe_gauge!(
        "lsnpool_replica_lag_seconds",
        metrics::Unit::Seconds,
        "replica time lag; 0 when it has replayed the primary's current LSN"
    );
    let settings = Arc::new(ConnSettings {
        user: params.user,
        password: params.password,
        database: params.database,
        // Zero would make tokio's interval panic and every connect time out at once; config
        // validation rejects it, this only keeps a programming error from doing harm.
        poll_interval: default_if_zero(params.poll_interval, DEFAULT_POLL_INTERVAL),
        connect_timeout: default_if_zero(params.connect_timeout, DEFAULT_CONNECT_TIMEOUT),
        failover_detect: state.failover_detect(),
    });
    let ids: Vec<NodeId> = state.node_ids().collect();
    let tasks = ids
        .into_iter()
        .map(|id| {
            tokio::spawn(
                Poller {
                    state: state.clone(),
                    id,
                    settings: settings.clone(),
                }
                .run(),
            )
        })
        .collect();
    (state, MonitorHandle { tasks })
}

/// Convenience for callers holding a replica index from configuration.
pub fn node_id(index: usize) -> Option<NodeId> {
    u16::try_from(index).ok().map(NodeId)
}
