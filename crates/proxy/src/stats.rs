//! Per-database counters: what SHOW STATS / SHOW ROUTING read and /metrics mirrors.
//! Plain atomics, bumped once per transaction, so the relay takes no lock for them.

use lsnpool_router::{Need, PrimaryReason};
use metrics::{Counter, Histogram};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Prometheus handles of one database, registered once so a transaction records its metrics
/// without building label sets or looking names up.
pub struct DbMetrics {
    pub transactions_primary: Counter,
    pub transactions_replica: Counter,
    pub queries_primary: Counter,
    pub queries_replica: Counter,
    pub bytes_received: Counter,
    pub bytes_sent: Counter,
    pub transaction_seconds: Histogram,
    pub server_wait_seconds: Histogram,
    pub catchup_wait_seconds: Histogram,
    pub routed_replica: Counter,
    routed_primary: [Counter; PrimaryReason::ALL.len()],
    /// Lag fallbacks by the requirement that was not met (or could not be learned).
    fallbacks: [Counter; Need::ALL.len()],
}

impl DbMetrics {
    pub fn new(database: &str) -> DbMetrics {
        let db = database.to_string();
        let by_route = |name: &'static str, route: &'static str| metrics::counter!(name, "database" => db.clone(), "route" => route);
        DbMetrics {
            transactions_primary: by_route("lsnpool_transactions_total", "primary"),
            transactions_replica: by_route("lsnpool_transactions_total", "replica"),
            queries_primary: by_route("lsnpool_queries_total", "primary"),
            queries_replica: by_route("lsnpool_queries_total", "replica"),
            bytes_received: metrics::counter!("lsnpool_bytes_received_total", "database" => db.clone()),
            bytes_sent: metrics::counter!("lsnpool_bytes_sent_total", "database" => db.clone()),
            transaction_seconds: metrics::histogram!("lsnpool_transaction_seconds", "database" => db.clone()),
            server_wait_seconds: metrics::histogram!("lsnpool_server_wait_seconds", "database" => db.clone()),
            catchup_wait_seconds: metrics::histogram!("lsnpool_catchup_wait_seconds", "database" => db.clone()),
            routed_replica: metrics::counter!("lsnpool_routing_decisions_total", "database" => db.clone(), "route" => "replica", "reason" => "read"),
            routed_primary: PrimaryReason::ALL.map(|r| {
                metrics::counter!("lsnpool_routing_decisions_total", "database" => db.clone(), "route" => "primary", "reason" => r.as_str())
            }),
            fallbacks: Need::ALL.map(|n| metrics::counter!("lsnpool_lag_fallbacks_total", "database" => db.clone(), "need" => n.as_str())),
        }
    }

    pub fn routed_primary(&self, reason: PrimaryReason) -> &Counter {
        &self.routed_primary[reason as usize]
    }
}

pub struct DbStats {
    pub metrics: DbMetrics,
    pub server_assignment_count: AtomicU64,
    pub xact_count: AtomicU64,
    pub query_count: AtomicU64,
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub xact_time_us: AtomicU64,
    pub query_time_us: AtomicU64,
    pub wait_time_us: AtomicU64,
    pub client_parse_count: AtomicU64,
    pub server_parse_count: AtomicU64,
    pub bind_count: AtomicU64,
    pub client_login_count: AtomicU64,
    pub replica_reads: AtomicU64,
    primary_by_reason: [AtomicU64; PrimaryReason::ALL.len()],
    pub lsn_captured: AtomicU64,
    pub lsn_capture_round_trips: AtomicU64,
    pub catchup_waits: AtomicU64,
    pub catchup_wait_us: AtomicU64,
    /// Replicas asked directly for their replay LSN: fresh enough, or not.
    pub probe_hits: AtomicU64,
    pub probe_misses: AtomicU64,
    /// Reads a staler replica served because the primary was spared (breaker, read budget).
    pub degraded_reads: AtomicU64,
    /// Lag fallbacks by the requirement behind them (own commit, session key, token, global,
    /// linearizable, token store down).
    fallback_by_need: [AtomicU64; Need::ALL.len()],
}

impl DbStats {
    pub fn new(database: &str) -> DbStats {
        DbStats {
            metrics: DbMetrics::new(database),
            server_assignment_count: AtomicU64::new(0),
            xact_count: AtomicU64::new(0),
            query_count: AtomicU64::new(0),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            xact_time_us: AtomicU64::new(0),
            query_time_us: AtomicU64::new(0),
            wait_time_us: AtomicU64::new(0),
            client_parse_count: AtomicU64::new(0),
            server_parse_count: AtomicU64::new(0),
            bind_count: AtomicU64::new(0),
            client_login_count: AtomicU64::new(0),
            replica_reads: AtomicU64::new(0),
            primary_by_reason: Default::default(),
            lsn_captured: AtomicU64::new(0),
            lsn_capture_round_trips: AtomicU64::new(0),
            catchup_waits: AtomicU64::new(0),
            catchup_wait_us: AtomicU64::new(0),
            probe_hits: AtomicU64::new(0),
            probe_misses: AtomicU64::new(0),
            degraded_reads: AtomicU64::new(0),
            fallback_by_need: Default::default(),
        }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn primary(&self, reason: PrimaryReason) -> &AtomicU64 {
        &self.primary_by_reason[reason as usize]
    }

    /// Counts a lag fallback under the requirement behind it.
    pub fn fallback(&self, need: Need) {
        Self::add(&self.fallback_by_need[need as usize], 1);
        self.metrics.fallbacks[need as usize].increment(1);
    }

    pub fn fallbacks(&self, need: Need) -> u64 {
        Self::get(&self.fallback_by_need[need as usize])
    }
}

impl DbStats {
    pub fn totals(&self) -> Totals {
        Totals {
            server_assignment_count: Self::get(&self.server_assignment_count),
            xact_count: Self::get(&self.xact_count),
            query_count: Self::get(&self.query_count),
            received: Self::get(&self.received),
            sent: Self::get(&self.sent),
            xact_time_us: Self::get(&self.xact_time_us),
            query_time_us: Self::get(&self.query_time_us),
            wait_time_us: Self::get(&self.wait_time_us),
            client_parse_count: Self::get(&self.client_parse_count),
            server_parse_count: Self::get(&self.server_parse_count),
            bind_count: Self::get(&self.bind_count),
        }
    }
}

/// The counters SHOW STATS reports for a database: since start (totals), or over the last
/// stats period (averages).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub server_assignment_count: u64,
    pub xact_count: u64,
    pub query_count: u64,
    pub received: u64,
    pub sent: u64,
    pub xact_time_us: u64,
    pub query_time_us: u64,
    pub wait_time_us: u64,
    pub client_parse_count: u64,
    pub server_parse_count: u64,
    pub bind_count: u64,
}

/// PgBouncer's averages over the last stats period, in the same fields: counts and bytes
/// per second, times per transaction / query / assignment, in µs.
pub type Averages = Totals;

impl Totals {
    /// The averages between two snapshots of `DbStats::totals()` taken `period` apart.
    pub fn between(before: &Totals, after: &Totals, period: Duration) -> Averages {
        let secs = period.as_secs().max(1);
        let delta = |f: fn(&Totals) -> u64| f(after).saturating_sub(f(before));
        let per_sec = |f: fn(&Totals) -> u64| delta(f) / secs;
        let per = |num: fn(&Totals) -> u64, den: fn(&Totals) -> u64| delta(num) / delta(den).max(1);
        Averages {
            server_assignment_count: per_sec(|t| t.server_assignment_count),
            xact_count: per_sec(|t| t.xact_count),
            query_count: per_sec(|t| t.query_count),
            received: per_sec(|t| t.received),
            sent: per_sec(|t| t.sent),
            xact_time_us: per(|t| t.xact_time_us, |t| t.xact_count),
            query_time_us: per(|t| t.query_time_us, |t| t.query_count),
            wait_time_us: per(|t| t.wait_time_us, |t| t.server_assignment_count),
            client_parse_count: per_sec(|t| t.client_parse_count),
            server_parse_count: per_sec(|t| t.server_parse_count),
            bind_count: per_sec(|t| t.bind_count),
        }
    }
}

/// Per database: the totals at the start of the current stats period, and the averages of
/// the last complete one.
#[derive(Default)]
pub struct StatsPeriods {
    by_db: Mutex<HashMap<String, (Totals, Averages)>>,
}

impl StatsPeriods {
    /// The averages of `db`'s last complete period (zero before the first one ends).
    pub fn averages(&self, db: &str) -> Averages {
        self.by_db.lock().ok().and_then(|m| m.get(db).map(|(_, a)| *a)).unwrap_or_default()
    }

    /// Ends the current period: `now` holds each database's totals, `period` after the last call.
    pub fn close<'a>(&self, now: impl Iterator<Item = (&'a String, Totals)>, period: Duration) {
        let Ok(mut m) = self.by_db.lock() else { return };
        for (name, totals) in now {
            let entry = m.entry(name.clone()).or_insert((totals, Averages::default()));
            entry.1 = Averages::between(&entry.0, &totals, period);
            entry.0 = totals;
        }
    }
}

/// Counts one relayed transaction in the database's totals and metrics.
pub fn record_transaction(db: &crate::topology::Database, stats: &crate::relay::RelayStats, started: std::time::Instant, route: lsnpool_router::Route) {
    let elapsed_us = started.elapsed().as_micros() as u64;
    let s = &db.stats;
    DbStats::add(&s.xact_count, 1);
    DbStats::add(&s.query_count, stats.queries.max(1));
    DbStats::add(&s.received, stats.bytes_from_client);
    DbStats::add(&s.sent, stats.bytes_to_client);
    DbStats::add(&s.xact_time_us, elapsed_us);
    DbStats::add(&s.query_time_us, elapsed_us);
    DbStats::add(&s.client_parse_count, stats.client_parses);
    DbStats::add(&s.server_parse_count, stats.server_parses);
    DbStats::add(&s.bind_count, stats.binds);
    let m = &s.metrics;
    let (xacts, queries) = match route {
        lsnpool_router::Route::Primary => (&m.transactions_primary, &m.queries_primary),
        lsnpool_router::Route::Replica(_) => (&m.transactions_replica, &m.queries_replica),
    };
    xacts.increment(1);
    queries.increment(stats.queries.max(1));
    m.bytes_received.increment(stats.bytes_from_client);
    m.bytes_sent.increment(stats.bytes_to_client);
    m.transaction_seconds.record(elapsed_us as f64 / 1e6);
    if let Some(code) = stats.first_error {
        let class = String::from_utf8_lossy(&code[..2]).into_owned();
        metrics::counter!("lsnpool_errors_total", "class" => class).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_are_rates_and_means() {
        let before = Totals::default();
        let after = Totals {
            server_assignment_count: 10,
            xact_count: 20,
            query_count: 40,
            received: 2000,
            sent: 4000,
            xact_time_us: 200_000,
            query_time_us: 400_000,
            wait_time_us: 1000,
            client_parse_count: 60,
            server_parse_count: 20,
            bind_count: 100,
        };
        let a = Averages::between(&before, &after, Duration::from_secs(10));
        assert_eq!(a.xact_count, 2); // xacts per second
        assert_eq!(a.received, 200); // bytes received per second
        assert_eq!(a.xact_time_us, 10_000); // µs per transaction
        assert_eq!(a.query_time_us, 10_000); // µs per query
        assert_eq!(a.wait_time_us, 100); // µs waited per assignment
    }
}

