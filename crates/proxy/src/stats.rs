//! Per-database counters: what SHOW STATS / SHOW ROUTING read and /metrics mirrors.
//! Plain atomics, bumped once per transaction, so the relay takes no lock for them.

use lsnpool_router::PrimaryReason;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct DbStats {
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
}

impl DbStats {
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
