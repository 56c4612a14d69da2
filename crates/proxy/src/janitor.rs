//! Periodic upkeep, after PgBouncer's janitor.c: pool maintenance, the gauges read from the
//! registries, and the stats period behind SHOW STATS' averages.

use crate::clients::ClientState;
use crate::pooler::Pooler;
use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{interval_at, Instant};

/// PgBouncer's stats_period: how often SHOW STATS' avg_ columns are recomputed.
pub const STATS_PERIOD: Duration = Duration::from_secs(15);

/// Starts every periodic job; each stops when the pooler is dropped.
pub fn spawn_janitor(pooler: &Arc<Pooler>) {
    // The first period's averages need a full period of traffic behind them.
    every(pooler, STATS_PERIOD, STATS_PERIOD, close_stats_period);
    let mut seen_nodes = HashSet::new();
    every(pooler, Duration::ZERO, Duration::from_secs(1), move |p| set_gauges(p, &mut seen_nodes));
    every(pooler, Duration::ZERO, Duration::from_secs(1), pool_upkeep);
    every(pooler, Duration::ZERO, crate::breaker::EVALUATE_EVERY, |p| {
        crate::breaker::evaluate(p);
        ControlFlow::Continue(())
    });
}

/// Runs `job` after `first`, then every `period`, until the pooler is gone or `job` says stop.
/// The task holds the pooler only while a job runs, so dropping it ends the task.
fn every<F>(pooler: &Arc<Pooler>, first: Duration, period: Duration, mut job: F)
where
    F: FnMut(&Pooler) -> ControlFlow<()> + Send + 'static,
{
    let weak = Arc::downgrade(pooler);
    tokio::spawn(async move {
        let mut tick = interval_at(Instant::now() + first, period);
        loop {
            tick.tick().await;
            let Some(pooler) = weak.upgrade() else { return };
            if job(&pooler).is_break() {
                return;
            }
        }
    });
}

fn close_stats_period(pooler: &Pooler) -> ControlFlow<()> {
    let topology = pooler.topology();
    let now = topology.databases.iter().map(|(name, db)| (name, db.stats.totals()));
    pooler.stats_periods.close(now, STATS_PERIOD);
    ControlFlow::Continue(())
}

/// Sets the gauges of clients by state and server connections by node and state from the
/// registries (cheaper than moving gauges on every transaction). `seen_nodes` remembers every
/// node ever reported, so a node whose connections all closed is set back to zero.
fn set_gauges(pooler: &Pooler, seen_nodes: &mut HashSet<String>) -> ControlFlow<()> {
    let mut by_state = [0u64; ClientState::ALL.len()];
    for c in pooler.clients.all() {
        by_state[c.state() as usize] += 1;
    }
    for (state, n) in ClientState::ALL.iter().zip(by_state) {
        metrics::gauge!("lsnpool_clients_by_state", "state" => state.as_str()).set(n as f64);
    }
    let mut servers: HashMap<(String, bool), u64> = HashMap::new();
    for s in lsnpool_pool::registry::servers() {
        *servers.entry((s.label.to_string(), s.is_active())).or_default() += 1;
        seen_nodes.insert(s.label.to_string());
    }
    let mut maxwait: HashMap<String, f64> = HashMap::new();
    for ((node, _user), waited) in pooler.clients.max_waits() {
        let e = maxwait.entry(node.to_string()).or_default();
        *e = e.max(waited.as_secs_f64());
    }
    // A node clients queue for may have no connection at all (it is down).
    seen_nodes.extend(maxwait.keys().cloned());
    for node in seen_nodes.iter() {
        // PgBouncer's maxwait: how long the oldest waiting client has waited.
        let w = maxwait.get(node.as_str()).copied().unwrap_or(0.0);
        metrics::gauge!("lsnpool_pool_maxwait_seconds", "node" => node.clone()).set(w);
        for active in [false, true] {
            let n = servers.get(&(node.clone(), active)).copied().unwrap_or(0);
            let state = if active { "active" } else { "idle" };
            metrics::gauge!("lsnpool_server_connections", "node" => node.clone(), "state" => state).set(n as f64);
        }
    }
    ControlFlow::Continue(())
}

/// Closes server connections idle past server_idle_timeout or older than server_lifetime
/// (those nobody checks out would otherwise live forever), and opens connections up to
/// min_pool_size, so the first clients after a quiet spell do not pay for logins.
fn pool_upkeep(pooler: &Pooler) -> ControlFlow<()> {
    if pooler.is_shutting_down() {
        return ControlFlow::Break(());
    }
    let topology = pooler.topology();
    let p = &topology.config.pooler;
    let (idle, lifetime, min) = (p.server_idle_timeout, p.server_lifetime, p.min_pool_size);
    for (_, pools) in topology.all_pools() {
        for (id, pool) in pools.nodes_with_ids() {
            if pools.retired(id) {
                // An old primary (down, or back and fenced): nothing may reach it; its idle
                // connections are closed now, not at server_idle_timeout.
                pool.retain(|_, _| false);
                continue;
            }
            pool.retain(|_, m| m.last_used() < idle && m.age() < lifetime);
            let status = pool.status();
            let missing = min.min(status.max_size).saturating_sub(status.size);
            if missing > 0 {
                let pool = pool.clone();
                // Idle connections are handed out first: borrow those too so the rest must
                // be opened.
                let borrow = missing + status.available;
                tokio::spawn(async move {
                    let mut conns = Vec::with_capacity(borrow);
                    for _ in 0..borrow {
                        match pool.get().await {
                            Ok(c) => conns.push(c),
                            Err(_) => break, // logged by the manager; retried next tick
                        }
                    }
                });
            }
        }
    }
    ControlFlow::Continue(())
}
