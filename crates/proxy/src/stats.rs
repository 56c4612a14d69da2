//! Per-database counters: what SHOW STATS / SHOW ROUTING read and /metrics mirrors.
//! Plain atomics, bumped once per transaction, so the relay takes no lock for them.

use lsnpool_router::PrimaryReason;
use metrics::{Counter, Histogram};
use std::sync::atomic::{AtomicU64, Ordering};

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
}

impl DbStats {
    /// The totals in SHOW STATS_TOTALS order.
    pub fn totals(&self) -> [u64; 11] {
        [
            Self::get(&self.server_assignment_count),
            Self::get(&self.xact_count),
            Self::get(&self.query_count),
            Self::get(&self.received),
            Self::get(&self.sent),
            Self::get(&self.xact_time_us),
            Self::get(&self.query_time_us),
            Self::get(&self.wait_time_us),
            Self::get(&self.client_parse_count),
            Self::get(&self.server_parse_count),
            Self::get(&self.bind_count),
        ]
    }
}

/// PgBouncer's averages over the last stats period: counts and bytes per second, times per
/// transaction / query / assignment, in µs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Averages {
    values: [u64; 11],
}

impl Averages {
    pub const COLUMNS: [&'static str; 11] = [
        "server_assignment_count", "xact_count", "query_count", "recv", "sent", "xact_time", "query_time", "wait_time",
        "client_parse_count", "server_parse_count", "bind_count",
    ];

    pub fn values(&self) -> [u64; 11] {
        self.values
    }

    /// From two snapshots of `totals()` taken `period` apart.
    pub fn between(before: &[u64; 11], after: &[u64; 11], period: std::time::Duration) -> Averages {
        let d: Vec<u64> = after.iter().zip(before).map(|(a, b)| a.saturating_sub(*b)).collect();
        let secs = period.as_secs().max(1);
        let per_sec = |i: usize| d[i] / secs;
        let per = |num: usize, den: usize| d[num] / d[den].max(1);
        Averages {
            values: [
                per_sec(0),
                per_sec(1),
                per_sec(2),
                per_sec(3),
                per_sec(4),
                per(5, 1),
                per(6, 2),
                per(7, 0),
                per_sec(8),
                per_sec(9),
                per_sec(10),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn averages_are_rates_and_means() {
        let before = [0; 11];
        let after = [10, 20, 40, 2000, 4000, 200_000, 400_000, 1000, 60, 20, 100];
        let a = Averages::between(&before, &after, Duration::from_secs(10)).values();
        assert_eq!(a[1], 2); // xacts per second
        assert_eq!(a[3], 200); // bytes received per second
        assert_eq!(a[5], 10_000); // µs per transaction
        assert_eq!(a[6], 10_000); // µs per query
        assert_eq!(a[7], 100); // µs waited per assignment
    }
}
