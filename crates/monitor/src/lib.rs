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
pub use state::{ClusterState, OutstandingGuard, PrimarySnapshot, ReplicaSnapshot};

use poller::{ConnSettings, Poller, Role};

/// DESIGN.md's `lsn_poll_interval` default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(10);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What to monitor and how to log in. `Debug` redacts the password.
#[derive(Clone)]
pub struct MonitorParams {
    /// For logs and metric labels.
    pub cluster: String,
    /// `host:port`.
    pub primary: String,
    /// `host:port` each; `NodeId(i)` is `replicas[i]`.
    pub replicas: Vec<String>,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    pub poll_interval: Duration,
    pub connect_timeout: Duration,
}

impl MonitorParams {
    /// Params with the default poll interval and connect timeout.
    pub fn new(
        cluster: impl Into<String>,
        primary: impl Into<String>,
        replicas: Vec<String>,
        user: impl Into<String>,
        password: Option<String>,
        database: impl Into<String>,
    ) -> Self {
        MonitorParams {
            cluster: cluster.into(),
            primary: primary.into(),
            replicas,
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
            .field("primary", &self.primary)
            .field("replicas", &self.replicas)
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
    let state = Arc::new(ClusterState::new(
        params.cluster.clone(),
        params.primary.clone(),
        &params.replicas,
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
    let default_if_zero = |d: Duration, default: Duration| if d.is_zero() { default } else { d };
    let settings = Arc::new(ConnSettings {
        user: params.user,
        password: params.password,
        database: params.database,
        // Zero would make tokio's interval panic and every connect time out at once; config
        // validation rejects it, this only keeps a programming error from doing harm.
        poll_interval: default_if_zero(params.poll_interval, DEFAULT_POLL_INTERVAL),
        connect_timeout: default_if_zero(params.connect_timeout, DEFAULT_CONNECT_TIMEOUT),
    });
    let roles = std::iter::once(Role::Primary).chain(state.replica_ids().map(Role::Replica));
    let tasks = roles
        .map(|role| {
            tokio::spawn(
                Poller {
                    state: state.clone(),
                    role,
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
