//! One task per node: connect, poll with one prepared query per interval, publish the result.
//!
//! The task owns its own tokio-postgres connection (never one of the proxy's pooled ones, so
//! a busy pool cannot starve the monitor and the monitor never disturbs a client session).
//! A failed or timed-out poll marks the node down at once, drops the connection and reconnects
//! with a capped exponential backoff; the first good poll after that puts the node back.

use std::sync::Arc;
use std::time::Duration;

use lsnpool_router::{Lsn, NodeId};
use metrics::Gauge;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, MissedTickBehavior};
use tokio_postgres::types::PgLsn;
use tokio_postgres::{Client, NoTls, Row, Statement};
use tracing::{debug, error, info, warn};

use crate::addr::split_host_port;
use crate::clock::monotonic_micros;
use crate::state::{Claim, ClusterState, NodeState};

/// Every node's poll, whatever its role: the roles are discovered, not configured. In recovery
/// it returns the replay LSN, the time lag and the timeline WAL is received on (else the last
/// restartpoint's: `pg_stat_wal_receiver` shows it only to privileged roles, and only while
/// streaming); not in recovery, the current WAL LSN and the timeline being written (the WAL
/// file name's first 8 hex digits: right from the moment of promotion, where
/// `pg_control_checkpoint()` waits for the next checkpoint).
///
/// The time lag is computed on the server, from the same clock that stamps replayed commits on
/// a single-host setup, and comes back as µs in an int8 so no timestamp type has to be
/// decoded. `clock_timestamp()` rather than `now()`: `now()` is the start of the statement,
/// which may be before a commit replayed during it (a negative lag). It is NULL until the
/// replica has replayed a commit since it started.
const POLL: &str = "SELECT r, \
     CASE WHEN r THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, \
     CASE WHEN r THEN (EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp()) * 1000000)::int8 END, \
     CASE WHEN r THEN COALESCE((SELECT received_tli FROM pg_stat_wal_receiver), \
                               (SELECT timeline_id FROM pg_control_checkpoint())) \
          ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int4 END \
     FROM pg_is_in_recovery() AS r";

const MIN_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// tokio-postgres' `Display` names only the kind ("error connecting to server", "db error");
/// the useful part ("Connection refused", the server's message) is in the source chain.
/// None of it contains the password: the server never echoes it and we never format `Config`.
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Connection settings shared by a cluster's pollers. Deliberately not `Debug`: it holds the
/// password, which must never reach a log.
pub(crate) struct ConnSettings {
    pub(crate) user: String,
    pub(crate) password: Option<String>,
    pub(crate) database: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) failover_detect: Duration,
}

impl ConnSettings {
    /// Long enough for a loaded server to answer a trivial query, short enough that a hung
    /// node leaves rotation quickly; 50 intervals so a slow poll interval is not cut short.
    /// Capped at half of `failover_detect`, so a hung primary is down (and another node may
    /// take over) within it.
    fn poll_timeout(&self) -> Duration {
        let cap = (self.failover_detect / 2).max(Duration::from_millis(100));
        Duration::from_secs(1).max(self.poll_interval.saturating_mul(50)).min(cap)
    }
}

pub(crate) struct Poller {
    pub(crate) state: Arc<ClusterState>,
    pub(crate) id: NodeId,
    pub(crate) settings: Arc<ConnSettings>,
}

/// A live monitoring connection. Dropping it stops the connection task too, so a hung socket
/// cannot outlive the poller that gave up on it.
struct Conn {
    client: Client,
    statement: Statement,
    _driver: AbortOnDrop,
}

/// Aborts the connection's driver task when dropped (also when a connect attempt times out
/// half-way and its future is dropped).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Per-task memory of what was last logged, so transitions are logged once, never per poll.
#[derive(Default)]
struct Logged {
    up: Option<bool>,
    promoted: bool,
    fenced: bool,
    /// The failover epoch in which this node was last logged as the primary.
    primary_epoch: Option<u32>,
}

struct Gauges {
    up: Gauge,
    fenced: Gauge,
    fenced_polls: metrics::Counter,
    lag_bytes: Option<Gauge>,
    lag_seconds: Option<Gauge>,
}

impl Gauges {
    /// Handles are registered once per task so a poll only stores into them (no key lookup).
    /// They bind to the recorder installed at this point: install it before `spawn_monitor`.
    fn new(cluster: &str, node: &str) -> Self {
        let labels = [("cluster", cluster.to_string()), ("node", node.to_string())];
        // Any node may be a replica (roles are discovered); a primary's lag reads 0.
        let replica = true;
        Gauges {
            up: metrics::gauge!("lsnpool_node_up", &labels),
            fenced: metrics::gauge!("lsnpool_node_fenced", &labels),
            fenced_polls: metrics::counter!("lsnpool_fenced_polls_total", &labels),
            lag_bytes: replica.then(|| metrics::gauge!("lsnpool_replica_lag_bytes", &labels)),
            lag_seconds: replica.then(|| metrics::gauge!("lsnpool_replica_lag_seconds", &labels)),
        }
    }
}

/// What a replica's poller remembers between polls to bound the time lag.
struct LagTracker {
    /// When this task started: the fallback bound when nothing better is known.
    started: u64,
    /// Start of the primary poll whose LSN this replica was last seen to have replayed.
    caught_up_at: Option<u64>,
}

impl Poller {
    fn node(&self) -> Option<&NodeState> {
        self.state.node(self.id)
    }

    /// For logs: what the node is to the cluster right now.
    fn role_name(&self) -> &'static str {
        if self.state.primary_id() == self.id { "primary" } else { "replica" }
    }

    pub(crate) async fn run(self) {
        let Some(node) = self.node() else { return };
        let addr = node.addr.clone();
        let cluster = self.state.name().to_string();
        let gauges = Gauges::new(&cluster, &addr);
        gauges.up.set(0.0);
        let Some((host, port)) = split_host_port(&addr) else {
            error!(cluster = %cluster, node = %addr, role = self.role_name(),
                "not a host:port address; this node is never monitored and stays out of rotation");
            return;
        };
        let mut config = tokio_postgres::Config::new();
        config
            .host(host)
            .port(port)
            .user(&self.settings.user)
            .dbname(&self.settings.database)
            .application_name("lsnpool-monitor")
            .connect_timeout(self.settings.connect_timeout);
        if let Some(pw) = &self.settings.password {
            config.password(pw);
        }

        let mut logged = Logged::default();
        let mut lag = LagTracker {
            started: monotonic_micros(),
            caught_up_at: None,
        };
        let mut backoff = MIN_BACKOFF;
        loop {
            let (reason, polled_ok) =
                match timeout(self.settings.connect_timeout, self.connect(&config)).await {
                    Ok(Ok(conn)) => {
                        self.poll_loop(&conn, node, &gauges, &mut logged, &mut lag)
                            .await
                    }
                    Ok(Err(e)) => (format!("connect failed: {}", describe(&e)), false),
                    Err(_) => (
                        format!(
                            "connect timed out after {:?}",
                            self.settings.connect_timeout
                        ),
                        false,
                    ),
                };
            // Out of rotation before anything else (the connection is already dropped).
            self.state.mark_down(node);
            gauges.up.set(0.0);
            if logged.up != Some(false) {
                warn!(cluster = %cluster, node = %addr, role = self.role_name(), error = %reason,
                    "node is DOWN: out of rotation until a poll succeeds");
                logged.up = Some(false);
            } else {
                debug!(cluster = %cluster, node = %addr, error = %reason, "node still down");
            }
            // A connection that worked for a while earns a fast reconnect; repeated failures
            // back off so a dead node costs little.
            if polled_ok {
                backoff = MIN_BACKOFF;
            }
            sleep(backoff).await;
            backoff = backoff.saturating_mul(2).min(MAX_BACKOFF);
        }
    }

    async fn connect(
        &self,
        config: &tokio_postgres::Config,
    ) -> Result<Conn, tokio_postgres::Error> {
        let (client, connection) = config.connect(NoTls).await?;
        let driver = AbortOnDrop(tokio::spawn(async move {
            // The error also surfaces as a failed poll, which is where it is logged.
            if let Err(e) = connection.await {
                debug!(error = %e, "monitor connection ended");
            }
        }));
        // Prepared once per connection: each poll is then a Bind/Execute of a known plan.
        let statement = client.prepare(POLL).await?;
        Ok(Conn {
            client,
            statement,
            _driver: driver,
        })
    }

    /// Polls until a poll fails; returns why, and whether any poll succeeded.
    async fn poll_loop(
        &self,
        conn: &Conn,
        node: &NodeState,
        gauges: &Gauges,
        logged: &mut Logged,
        lag: &mut LagTracker,
    ) -> (String, bool) {
        let poll_timeout = self.settings.poll_timeout();
        let mut ticker = tokio::time::interval(self.settings.poll_interval);
        // After a slow poll, keep the interval between polls rather than firing a burst.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut polled_ok = false;
        loop {
            // Someone waiting for a fresh value: poll again at once (see `demand`).
            if !node.demand.wanted() {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = node.demand.woken() => {}
                }
            }
            let number = node.demand.start_poll();
            let started = monotonic_micros();
            let row = match timeout(poll_timeout, conn.client.query_one(&conn.statement, &[])).await
            {
                Ok(Ok(row)) => row,
                Ok(Err(e)) => return (format!("poll failed: {}", describe(&e)), polled_ok),
                Err(_) => return (format!("poll timed out after {poll_timeout:?}"), polled_ok),
            };
            let applied = match row.try_get::<_, bool>(0) {
                Ok(true) => self.apply_replica(self.id, node, &row, started, gauges, logged, lag),
                Ok(false) => self.apply_not_in_recovery(node, &row, started, gauges, logged),
                Err(e) => Err(e),
            };
            if let Err(e) = applied {
                return (
                    format!("unexpected poll result: {}", describe(&e)),
                    polled_ok,
                );
            }
            node.demand.finish_poll(number);
            polled_ok = true;
            gauges.up.set(1.0);
            if logged.up != Some(true) {
                info!(cluster = %self.state.name(), node = %node.addr, role = self.role_name(), "node is up");
                logged.up = Some(true);
            }
        }
    }

    /// A node that is not in recovery: the primary, one taking over, or one to fence.
    fn apply_not_in_recovery(
        &self,
        node: &NodeState,
        row: &Row,
        started: u64,
        gauges: &Gauges,
        logged: &mut Logged,
    ) -> Result<(), tokio_postgres::Error> {
        let lsn = u64::from(row.try_get::<_, PgLsn>(1)?);
        let timeline = row.try_get::<_, Option<i32>>(3)?.map_or(0, |t| u32::try_from(t).unwrap_or(0));
        let cluster = self.state.name();
        match self.state.claim_primary(self.id, timeline, lsn) {
            Claim::Primary { took_over_from } => {
                self.state.record_primary_poll(node, lsn, timeline, started);
                if logged.primary_epoch != Some(self.state.epoch()) && took_over_from.is_none() {
                    info!(cluster = %cluster, node = %node.addr, timeline, "primary found: {} is not in recovery", node.addr);
                }
                logged.primary_epoch = Some(self.state.epoch());
                if let Some(old) = took_over_from {
                    error!(cluster = %cluster, node = %node.addr, old_primary = %self.state.node_addr(old).unwrap_or_default(),
                        timeline, lsn = %Lsn(lsn), epoch = self.state.epoch(),
                        "FAILOVER: {} is the primary now (not in recovery, timeline {timeline}); writes go to it; \
                         the old primary is fenced if it comes back as a primary", node.addr);
                    metrics::counter!("lsnpool_failovers_total", "cluster" => cluster.to_string()).increment(1);
                }
                if logged.fenced {
                    logged.fenced = false;
                    gauges.fenced.set(0.0);
                }
            }
            Claim::Fenced => {
                self.state.record_other_primary_poll(node, lsn, timeline, started);
                gauges.fenced_polls.increment(1);
                if !logged.fenced {
                    error!(cluster = %cluster, node = %node.addr, timeline, cluster_timeline = self.state.timeline(),
                        primary = %self.state.primary_addr(),
                        "FENCED: {} claims to be a primary (not in recovery) while {} is the cluster's primary; \
                         it gets NO traffic (rebuild it as a replica, e.g. with pg_rewind)", node.addr, self.state.primary_addr());
                    logged.fenced = true;
                    gauges.fenced.set(1.0);
                }
            }
            Claim::Pending => self.state.record_other_primary_poll(node, lsn, timeline, started),
        }
        if let Some(g) = &gauges.lag_bytes {
            g.set(0.0);
        }
        if let Some(g) = &gauges.lag_seconds {
            g.set(0.0);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_replica(
        &self,
        id: NodeId,
        node: &NodeState,
        row: &Row,
        started: u64,
        gauges: &Gauges,
        logged: &mut Logged,
        lag: &mut LagTracker,
    ) -> Result<(), tokio_postgres::Error> {
        let in_recovery: bool = row.try_get(0)?;
        let replay = row.try_get::<_, Option<PgLsn>>(1)?.map_or(0, u64::from);
        let sql_lag = row.try_get::<_, Option<i64>>(2)?;
        let timeline = row.try_get::<_, Option<i32>>(3)?.map_or(0, |t| u32::try_from(t).unwrap_or(0));

        let primary = self.state.primary();
        let now = monotonic_micros();
        let time_lag = if primary.current_lsn.0 != 0 && replay >= primary.current_lsn.0 {
            lag.caught_up_at = Some(primary.last_poll_micros);
            0
        } else {
            // Two upper bounds of the age of the oldest change not replayed yet; take the
            // tighter. (1) now − last replayed commit's timestamp: everything unreplayed was
            // committed after it; but after an idle spell that commit is arbitrarily old, so
            // the first new write would show minutes of "lag" (the idle-primary trap again).
            // (2) now − the primary poll whose LSN the replica was last seen to have reached:
            // everything unreplayed was written after that poll started.
            let by_timestamp = sql_lag.map(|us| u64::try_from(us).unwrap_or(0));
            if let Some(at) = self.state.primary_poll_reached(replay) {
                lag.caught_up_at = Some(lag.caught_up_at.map_or(at, |c| c.max(at)));
            }
            let by_catch_up = lag.caught_up_at.map(|t| now.saturating_sub(t));
            match (by_timestamp, by_catch_up) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                // Never seen caught up and no commit replayed yet: at least as long as we
                // have been watching, as far as we can tell.
                (None, None) => now.saturating_sub(lag.started),
            }
        };

        self.state
            .record_replica_poll_on(node, in_recovery, replay, time_lag, timeline, started);
        if logged.fenced {
            info!(cluster = %self.state.name(), node = %node.addr, "fenced node is in recovery now: a replica again");
            logged.fenced = false;
            gauges.fenced.set(0.0);
        }
        let behind = self.state.timeline() != 0 && timeline < self.state.timeline();
        if behind && !logged.promoted {
            warn!(cluster = %self.state.name(), node = %node.addr, timeline, cluster_timeline = self.state.timeline(),
                "replica is on an older timeline than the primary: out of rotation until it follows the new primary");
            logged.promoted = true;
        } else if !behind && logged.promoted {
            info!(cluster = %self.state.name(), node = %node.addr, timeline, "replica follows the cluster's timeline: back in rotation");
            logged.promoted = false;
        }

        let snap = self.state.snapshot(id);
        let _ = in_recovery;
        if let Some(g) = &gauges.lag_bytes {
            g.set(snap.lag_bytes as f64);
        }
        if let Some(g) = &gauges.lag_seconds {
            g.set(snap.lag_micros as f64 / 1e6);
        }
        Ok(())
    }
}
