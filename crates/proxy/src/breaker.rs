//! The primary's circuit breaker, live: the pure `router::Breaker` behind a mutex only the
//! janitor takes, and an atomic the routing reads per transaction. Transitions are logged at
//! WARN and counted; degraded reads are counted here too.

use crate::pooler::Pooler;
use lsnpool_router::{Breaker, BreakerLimits, PrimaryLoad, Transition};
use metrics::{Counter, Gauge};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the janitor looks at the primaries' load.
pub const EVALUATE_EVERY: Duration = Duration::from_millis(200);

pub struct ClusterBreaker {
    cluster: String,
    machine: Mutex<Breaker>,
    open: AtomicBool,
    pub trips: AtomicU64,
    /// Reads a replica served in the primary's place (breaker or read budget).
    pub degraded: AtomicU64,
    open_gauge: Gauge,
    trips_counter: Counter,
    degraded_counter: Counter,
}

impl ClusterBreaker {
    pub fn new(cluster: &str) -> ClusterBreaker {
        let label = cluster.to_string();
        ClusterBreaker {
            cluster: label.clone(),
            machine: Mutex::new(Breaker::default()),
            open: AtomicBool::new(false),
            trips: AtomicU64::new(0),
            degraded: AtomicU64::new(0),
            open_gauge: metrics::gauge!("lsnpool_breaker_open", "cluster" => label.clone()),
            trips_counter: metrics::counter!("lsnpool_breaker_trips_total", "cluster" => label.clone()),
            degraded_counter: metrics::counter!("lsnpool_degraded_reads_total", "cluster" => label),
        }
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    pub fn count_degraded(&self) {
        self.degraded.fetch_add(1, Ordering::Relaxed);
        self.degraded_counter.increment(1);
    }

    fn observe(&self, now: Instant, load: PrimaryLoad, limits: &BreakerLimits) {
        let Ok(mut machine) = self.machine.lock() else { return };
        let Some(t) = machine.observe(now, load, limits) else { return };
        let open = machine.is_open();
        self.open.store(open, Ordering::Release);
        self.open_gauge.set(if open { 1.0 } else { 0.0 });
        match t {
            Transition::Tripped => {
                self.trips.fetch_add(1, Ordering::Relaxed);
                self.trips_counter.increment(1);
                tracing::warn!(
                    cluster = %self.cluster, waiting = load.waiting, max_wait_ms = load.max_wait.as_millis() as u64,
                    all_busy = load.all_busy, "primary overloaded: circuit breaker tripped, non-critical fallback reads go to replicas"
                );
            }
            Transition::Closed => {
                tracing::warn!(cluster = %self.cluster, healthy_for = ?limits.window, "primary healthy again: circuit breaker closed");
            }
        }
    }
}

/// The janitor's job: each cluster's primary load, summed over its users' pools, fed to its
/// breaker.
pub fn evaluate(pooler: &Pooler) {
    let topology = pooler.topology();
    let r = &topology.config.routing;
    let limits = BreakerLimits { window: r.breaker_window, max_waiting: r.breaker_max_waiting, max_wait: r.breaker_max_wait };
    let waits = pooler.clients.max_waits();
    let mut loads: HashMap<&str, PrimaryLoad> = HashMap::new();
    for ((cluster, user), pools) in topology.all_pools() {
        let status = pools.primary().status();
        let label = &pools.primary().manager().target().label;
        let load = loads.entry(&**cluster).or_default();
        load.waiting += status.waiting;
        load.all_busy |= status.size >= status.max_size && status.available == 0 && status.max_size > 0;
        if let Some(w) = waits.get(&(label.clone(), user.clone())) {
            load.max_wait = load.max_wait.max(*w);
        }
    }
    let now = Instant::now();
    for (cluster, controls) in topology.cluster_controls() {
        let load = loads.get(&**cluster).copied().unwrap_or_default();
        controls.breaker.observe(now, load, &limits);
    }
}
