//! The console's side of the operator controls: `SHOW RULES`, `SHOW BREAKERS`, and the kill
//! switch `DISABLE ROUTING [db]` / `ENABLE ROUTING [db]`.

use super::table::result_set;
use crate::pooler::Pooler;
use bytes::BytesMut;
use lsnpool_protocol::backend::{self, PoolerError};
use lsnpool_protocol::sqlstate;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Each rule in the order it is tried, with what it does and how often it matched.
pub fn rules(pooler: &Pooler, out: &mut BytesMut) {
    let t = pooler.topology();
    let ms = |d: Option<Duration>| d.map(|d| d.as_millis().to_string()).unwrap_or_default();
    result_set!(out, t.rules.rows(), |(rule, hits)| {
        "name" => rule.name,
        "database" => rule.database.as_deref().unwrap_or(""),
        "user" => rule.user.as_deref().unwrap_or(""),
        "match" => rule.pattern,
        "consistency" => rule.action.level().map(|c| c.as_str()).unwrap_or(""),
        "max_replica_lag_ms" => ms(rule.action.max_lag),
        "critical" => rule.action.critical,
        "hits" => hits,
    });
}

/// Per cluster: the breaker's state and counters, and the primary read budget's use.
pub fn breakers(pooler: &Pooler, out: &mut BytesMut) {
    let t = pooler.topology();
    let mut clusters: Vec<_> = t.cluster_controls().collect();
    clusters.sort_by(|a, b| a.0.cmp(b.0));
    result_set!(out, clusters, |(cluster, c)|
        let size = c.budget.size();
    {
        "cluster" => cluster,
        "state" => if c.breaker.is_open() { "open" } else { "closed" },
        "trips" => c.breaker.trips.load(Ordering::Relaxed),
        "degraded_reads" => c.breaker.degraded.load(Ordering::Relaxed),
        "primary_read_pool_size" => if size == 0 { "unlimited".to_string() } else { size.to_string() },
        "primary_reads_active" => c.budget.in_use(),
        "budget_waits" => c.budget_waits.load(Ordering::Relaxed),
        "budget_refusals" => c.budget_refusals.load(Ordering::Relaxed),
    });
}

/// `DISABLE ROUTING [db]`: every statement of `db` (every database without one) goes to the
/// primary from each client's next transaction on; `ENABLE ROUTING [db]` undoes it.
pub fn switch_routing(pooler: &Pooler, enable: bool, db: Option<&str>, out: &mut BytesMut) {
    if let Some(name) = db {
        let t = pooler.topology();
        if !t.databases.contains_key(name) {
            let msg = format!("no database named \"{name}\"");
            let e = PoolerError::error(sqlstate::INVALID_PARAMETER_VALUE, &msg).with_hint("SHOW DATABASES lists them");
            backend::error_response(out, &e);
            return;
        }
    }
    let what = db.unwrap_or("all databases");
    if enable {
        pooler.switch.clear(db);
        tracing::warn!(database = what, "ENABLE ROUTING from the admin console: reads go to replicas again");
        backend::command_complete(out, "ENABLE");
    } else {
        pooler.switch.set(db);
        tracing::warn!(database = what, "DISABLE ROUTING from the admin console: every statement goes to the primary");
        backend::command_complete(out, "DISABLE");
    }
}
