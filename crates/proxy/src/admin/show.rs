//! The SHOW commands, one function each, looked up in a table as PgBouncer's admin.c
//! `show_map[]` does. Column names and order follow PgBouncer's where it has the command.

use super::table::{self, epoch_text, result_set};
use crate::pooler::Pooler;
use crate::replicas;
use crate::stats::{DbStats, Totals};
use crate::topology::{Database, Topology};
use bytes::BytesMut;
use lsnpool_protocol::backend::{self, PoolerError};
use lsnpool_router::{Consistency, Need, PrimaryReason, RoutingMode};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

type Show = fn(&Pooler, &mut BytesMut);

/// In SHOW HELP's order.
const SHOW: &[(&str, Show)] = &[
    ("HELP", help),
    ("VERSION", version),
    ("CONFIG", config),
    ("DATABASES", databases),
    ("LISTS", lists),
    ("USERS", users),
    ("POOLS", pools),
    ("CLIENTS", clients),
    ("SERVERS", servers),
    ("STATS", stats),
    ("STATS_TOTALS", stats_totals),
    ("STATS_AVERAGES", stats_averages),
    ("REPLICAS", replicas),
    ("ROUTING", routing),
    ("RULES", super::controls::rules),
    ("BREAKERS", super::controls::breakers),
];

/// The writer of `SHOW what` (`what` in upper case), if there is such a command.
pub fn find(what: &str) -> Option<Show> {
    SHOW.iter().find(|(name, _)| *name == what).map(|(_, show)| *show)
}

fn help(_: &Pooler, out: &mut BytesMut) {
    let names: Vec<&str> = SHOW.iter().map(|(name, _)| *name).collect();
    let usage = format!("SHOW {}\n{}", names.join("|"), super::CONTROL_USAGE);
    let e = PoolerError { severity: "NOTICE", code: "00000", message: "Console usage", detail: Some(&usage), hint: None };
    backend::notice_response(out, &e);
    backend::command_complete(out, "SHOW");
}

fn version(_: &Pooler, out: &mut BytesMut) {
    result_set!(out, [env!("CARGO_PKG_VERSION")], |v| { "version" => format!("lsnpool {v}") });
}

fn config(pooler: &Pooler, out: &mut BytesMut) {
    let t = pooler.topology();
    let (p, r) = (&t.config.pooler, &t.config.routing);
    let d = lsnpool_config::PoolerConfig::default();
    let dr = lsnpool_config::RoutingConfig::default();
    let dur = |v: Duration, def: Duration| (format!("{v:?}"), format!("{def:?}"));
    let settings: [(&str, (String, String), &str); 36] = [
        ("listen", (p.listen.clone(), d.listen.clone()), "no"),
        ("pool_mode", (p.pool_mode.as_str().to_string(), "transaction".into()), "yes"),
        ("auth_type", (p.auth_type.as_str().to_string(), "scram-sha-256".into()), "yes"),
        ("default_pool_size", (p.default_pool_size.to_string(), d.default_pool_size.to_string()), "yes"),
        ("min_pool_size", (p.min_pool_size.to_string(), d.min_pool_size.to_string()), "yes"),
        ("max_client_conn", (p.max_client_conn.to_string(), d.max_client_conn.to_string()), "yes"),
        ("query_wait_timeout", dur(p.query_wait_timeout, d.query_wait_timeout), "yes"),
        ("client_login_timeout", dur(p.client_login_timeout, d.client_login_timeout), "yes"),
        ("server_connect_timeout", dur(p.server_connect_timeout, d.server_connect_timeout), "yes"),
        ("server_lifetime", dur(p.server_lifetime, d.server_lifetime), "yes"),
        ("server_idle_timeout", dur(p.server_idle_timeout, d.server_idle_timeout), "yes"),
        ("auth_failure_delay", dur(p.auth_failure_delay, d.auth_failure_delay), "yes"),
        ("client_tls_mode", (p.client_tls_mode.as_str().to_string(), d.client_tls_mode.as_str().to_string()), "yes"),
        ("client_tls_cert_file", (p.client_tls_cert_file.clone(), String::new()), "yes"),
        ("client_tls_key_file", (p.client_tls_key_file.clone(), String::new()), "yes"),
        ("server_tls_mode", (p.server_tls_mode.as_str().to_string(), d.server_tls_mode.as_str().to_string()), "yes"),
        ("server_tls_ca_file", (p.server_tls_ca_file.clone(), String::new()), "yes"),
        ("max_message_size", (p.max_message_size.to_string(), d.max_message_size.to_string()), "yes"),
        ("max_prepared_statements", (p.max_prepared_statements.to_string(), d.max_prepared_statements.to_string()), "yes"),
        ("admin_users", (p.admin_users.join(","), d.admin_users.join(",")), "yes"),
        ("stats_users", (p.stats_users.join(","), String::new()), "yes"),
        ("metrics_listen", (p.metrics_listen.clone(), d.metrics_listen.clone()), "no"),
        ("routing.consistency", (r.consistency.to_string(), dr.consistency.to_string()), "yes"),
        ("routing.lsn_poll_interval", dur(r.lsn_poll_interval, dr.lsn_poll_interval), "yes"),
        ("routing.max_replica_lag", dur(r.max_replica_lag, dr.max_replica_lag), "yes"),
        ("routing.lsn_wait_timeout", dur(r.lsn_wait_timeout, dr.lsn_wait_timeout), "yes"),
        ("routing.capture_commit_lsn", (r.capture_commit_lsn.to_string(), dr.capture_commit_lsn.to_string()), "yes"),
        ("routing.enabled", (r.enabled.to_string(), dr.enabled.to_string()), "yes"),
        ("routing.degrade", (r.degrade.to_string(), dr.degrade.to_string()), "yes"),
        ("routing.breaker_window", dur(r.breaker_window, dr.breaker_window), "yes"),
        ("routing.breaker_max_lag", dur(r.breaker_max_lag, dr.breaker_max_lag), "yes"),
        ("routing.breaker_max_waiting", (r.breaker_max_waiting.to_string(), dr.breaker_max_waiting.to_string()), "yes"),
        ("routing.breaker_max_wait", dur(r.breaker_max_wait, dr.breaker_max_wait), "yes"),
        // The store is chosen at start; keys' TTL and the deadline go with it.
        ("routing.token_store", (r.token_store.clone(), dr.token_store.clone()), "no"),
        ("routing.session_key_ttl", dur(r.session_key_ttl, dr.session_key_ttl), "no"),
        ("routing.token_store_timeout", dur(r.token_store_timeout, dr.token_store_timeout), "no"),
    ];
    result_set!(out, settings, |(key, (value, default), changeable)| {
        "key" => key,
        "value" => value,
        "default" => default,
        "changeable" => changeable,
    });
}

fn databases(pooler: &Pooler, out: &mut BytesMut) {
    let t = pooler.topology();
    let c = &t.config;
    let clients = pooler.clients.all();
    let rows = by_name(&t).into_iter().filter_map(|db| Some((db, c.clusters.get(&*db.cluster)?)));
    result_set!(out, rows, |(db, cl)|
        // The primary as the monitor found it (failover moves it), else as configured.
        let state = t.cluster_state(&db.cluster);
        let primary = state.as_ref().map_or_else(|| cl.primary.clone(), |s| s.primary_addr().to_string());
        let (host, port) = primary.rsplit_once(':').map_or((primary.clone(), String::new()), |(h, p)| (h.to_string(), p.to_string()));
        let replica_count = state.as_ref().map_or(cl.replicas.len(), |s| s.replica_count());
    {
        "name" => db.name,
        "host" => host,
        "port" => port,
        "database" => cl.server_database(&db.cluster),
        "force_user" => "",
        "pool_size" => cl.pool_size.unwrap_or(c.pooler.default_pool_size),
        "min_pool_size" => c.pooler.min_pool_size,
        "reserve_pool" => 0,
        "server_lifetime" => c.pooler.server_lifetime.as_secs(),
        "pool_mode" => c.pooler.pool_mode.as_str(),
        "max_connections" => 0,
        "current_connections" => clients.iter().filter(|x| x.info.database.name == db.name).count(),
        "paused" => u8::from(pooler.is_paused(&db.name)),
        "disabled" => 0,
        "consistency" => db.consistency,
        "routing" => routing_name(db),
        "replicas" => replica_count,
        "routing_disabled" => u8::from(crate::controls::routing_disabled(&c.routing, &pooler.switch, db)),
    });
}

/// How SHOW DATABASES names what a database routes to.
fn routing_name(db: &Database) -> &'static str {
    match db.mode {
        RoutingMode::Automatic => "automatic",
        RoutingMode::ReplicaOnly if db.consistency == Consistency::Strong => "primary",
        RoutingMode::ReplicaOnly => "replicas",
    }
}

fn lists(pooler: &Pooler, out: &mut BytesMut) {
    let t = pooler.topology();
    let clients = pooler.clients.all();
    let servers = lsnpool_pool::registry::servers();
    let counts: [(&str, usize); 14] = [
        ("databases", t.databases.len()),
        ("users", t.users.len()),
        ("pools", t.all_pools().map(|(_, p)| p.nodes.len()).sum()),
        ("free_clients", 0),
        ("used_clients", clients.len()),
        ("login_clients", 0),
        ("free_servers", 0),
        ("used_servers", servers.len()),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
        ("active_clients", clients.iter().filter(|x| x.state() != crate::clients::ClientState::Idle).count()),
        ("active_servers", servers.iter().filter(|s| s.is_active()).count()),
    ];
    result_set!(out, counts, |(list, items)| { "list" => list, "items" => items });
}

fn users(pooler: &Pooler, out: &mut BytesMut) {
    let t = pooler.topology();
    let mut names: Vec<&str> = t.config.users.iter().map(|u| u.name.as_str()).collect();
    names.sort();
    result_set!(out, names, |name| { "name" => name, "pool_mode" => t.config.pooler.pool_mode.as_str() });
}

fn pools(pooler: &Pooler, out: &mut BytesMut) {
    let t = pooler.topology();
    let mut by_key: Vec<_> = t.all_pools().collect();
    by_key.sort_by(|a, b| a.0.cmp(b.0));
    let rows = by_key.into_iter().flat_map(|((cluster, user), p)| {
        // The primary's pool first, as before roles were discovered.
        let primary = p.primary_id();
        let mut nodes: Vec<_> = p.nodes_with_ids().map(move |(id, pool)| (cluster, user, id == primary, pool)).collect();
        nodes.sort_by_key(|n| !n.2);
        nodes
    });
    let waits = pooler.clients.max_waits();
    result_set!(out, rows, |(cluster, user, is_primary, pool)|
        let s = pool.status();
        let active = s.size.saturating_sub(s.available);
        let label = pool.manager().target().label.clone();
        let maxwait = waits.get(&(label.clone(), user.clone())).copied().unwrap_or_default();
    {
        "database" => cluster,
        "user" => user,
        "cl_active" => active,
        "cl_waiting" => s.waiting,
        "cl_active_cancel_req" => 0,
        "cl_waiting_cancel_req" => 0,
        "sv_active" => active,
        "sv_active_cancel" => 0,
        "sv_being_canceled" => 0,
        "sv_idle" => s.available,
        "sv_used" => 0,
        "sv_tested" => 0,
        "sv_login" => 0,
        "maxwait" => maxwait.as_secs(),
        "maxwait_us" => maxwait.subsec_micros(),
        "pool_mode" => t.config.pooler.pool_mode.as_str(),
        "node" => label,
        "role" => if is_primary { "primary" } else { "replica" },
    });
}

fn clients(pooler: &Pooler, out: &mut BytesMut) {
    result_set!(out, pooler.clients.all(), |x| {
        "type" => "C",
        "user" => x.info.user.name,
        "database" => x.info.database.name,
        "state" => x.state().as_str(),
        "addr" => x.info.addr.host_text(),
        "port" => x.info.addr.port(),
        "local_addr" => "",
        "local_port" => "",
        "connect_time" => epoch_text(x.info.connected_at),
        "request_time" => epoch_text(x.info.connected_at),
        "wait" => 0,
        "wait_us" => 0,
        "close_needed" => 0,
        "ptr" => format!("{:x}", x.pid),
        "link" => "",
        "remote_pid" => x.pid,
        "tls" => "",
        "application_name" => x.info.application_name,
        "prepared_statements" => 0,
    });
}

fn servers(_: &Pooler, out: &mut BytesMut) {
    result_set!(out, lsnpool_pool::registry::servers(), |s|
        let lent = s.lent_at_us();
        let request = if lent == 0 { s.connected_at } else { SystemTime::UNIX_EPOCH + Duration::from_micros(lent) };
    {
        "type" => "S",
        "user" => s.user,
        "database" => s.database,
        "state" => if s.is_active() { "active" } else { "idle" },
        "addr" => s.addr.host_text(),
        "port" => s.addr.port(),
        "local_addr" => s.local_addr.map(|a| a.ip().to_string()).unwrap_or_default(),
        "local_port" => s.local_addr.map(|a| a.port().to_string()).unwrap_or_default(),
        "connect_time" => epoch_text(s.connected_at),
        "request_time" => epoch_text(request),
        "wait" => 0,
        "wait_us" => 0,
        "close_needed" => 0,
        "ptr" => format!("{:x}", s.id),
        "link" => "",
        "remote_pid" => s.pid,
        "tls" => "",
        "application_name" => "",
        "prepared_statements" => 0,
        "node" => s.label,
    });
}

fn replicas(pooler: &Pooler, out: &mut BytesMut) {
    let t = pooler.topology();
    let mut clusters: Vec<_> = t.clusters().collect();
    clusters.sort_by(|a, b| a.0.cmp(b.0));
    let rows = clusters.into_iter().flat_map(|(name, rt)| {
        let nodes = t.config.clusters.get(&**name).map(|cl| replicas::node_rows(&rt.state, cl, t.config.routing.max_replica_lag)).unwrap_or_default();
        nodes.into_iter().map(move |r| (name, r))
    });
    result_set!(out, rows, |(name, r)| {
        "node" => format!("{name}/{}", r.node),
        "addr" => r.addr,
        "role" => r.role,
        "state" => r.state,
        "replay_lsn" => r.lsn,
        "lag_bytes" => r.lag_bytes,
        "lag_ms" => r.lag_ms,
        "last_poll_ms_ago" => r.last_poll_ms_ago.map(|v| v.to_string()).unwrap_or_default(),
        "reads_routed" => r.reads_routed,
        "in_rotation" => r.in_rotation,
        "timeline" => r.timeline,
        "fenced" => r.fenced,
    });
}

fn routing(pooler: &Pooler, out: &mut BytesMut) {
    let t = pooler.topology();
    let get = DbStats::get;
    result_set!(out, by_name(&t), |db|
        let s = &db.stats;
        let waits = get(&s.catchup_waits);
    {
        "database" => db.name,
        "replica_reads" => get(&s.replica_reads),
        "primary_write" => get(s.primary(PrimaryReason::Write)),
        "primary_strong" => get(s.primary(PrimaryReason::Strong)),
        "primary_hint" => get(s.primary(PrimaryReason::Hint)),
        "primary_lag_fallback" => get(s.primary(PrimaryReason::LagFallback)),
        "primary_no_replica_up" => get(s.primary(PrimaryReason::NoReplicaUp)),
        "primary_retry_25006" => get(s.primary(PrimaryReason::Retry25006)),
        "lsn_captured" => get(&s.lsn_captured),
        "lsn_capture_round_trips" => get(&s.lsn_capture_round_trips),
        "catchup_waits" => waits,
        "avg_catchup_wait_us" => get(&s.catchup_wait_us) / waits.max(1),
        "replica_probe_hits" => get(&s.probe_hits),
        "replica_probe_misses" => get(&s.probe_misses),
        "primary_disabled" => get(s.primary(PrimaryReason::Disabled)),
        "degraded_reads" => get(&s.degraded_reads),
        "fallback_own" => s.fallbacks(Need::Own),
        "fallback_session_key" => s.fallbacks(Need::SessionKey),
        "fallback_token" => s.fallbacks(Need::Token),
        "fallback_global" => s.fallbacks(Need::Global),
        "fallback_linearizable" => s.fallbacks(Need::Linearizable),
        "fallback_token_store_down" => s.fallbacks(Need::TokenStoreDown),
    });
}

fn stats(pooler: &Pooler, out: &mut BytesMut) {
    stats_table(pooler, out, &[Part::Totals("total_"), Part::Logins, Part::Averages("avg_")]);
}

fn stats_totals(pooler: &Pooler, out: &mut BytesMut) {
    stats_table(pooler, out, &[Part::Totals("")]);
}

fn stats_averages(pooler: &Pooler, out: &mut BytesMut) {
    stats_table(pooler, out, &[Part::Averages("")]);
}

/// A run of SHOW STATS columns after the database name; the str is the columns' prefix.
#[derive(Clone, Copy)]
enum Part {
    Totals(&'static str),
    Logins,
    Averages(&'static str),
}

impl Part {
    fn columns(self) -> Vec<String> {
        match self {
            Part::Totals(prefix) | Part::Averages(prefix) => {
                let avg = matches!(self, Part::Averages(_));
                counters(&Totals::default()).iter().map(|(name, _)| stats_name(prefix, name, avg)).collect()
            }
            Part::Logins => vec!["total_client_login_count".into()],
        }
    }

    fn values(self, pooler: &Pooler, db: &Database) -> Vec<u64> {
        match self {
            Part::Totals(_) => counters(&db.stats.totals()).iter().map(|(_, v)| *v).collect(),
            Part::Logins => vec![DbStats::get(&db.stats.client_login_count)],
            Part::Averages(_) => counters(&pooler.averages(&db.name)).iter().map(|(_, v)| *v).collect(),
        }
    }
}

fn stats_table(pooler: &Pooler, out: &mut BytesMut, parts: &[Part]) {
    let t = pooler.topology();
    let columns: Vec<String> = std::iter::once("database".to_string()).chain(parts.iter().flat_map(|p| p.columns())).collect();
    let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
    let rows = by_name(&t).into_iter().map(|db| {
        let values = parts.iter().flat_map(|p| p.values(pooler, db));
        std::iter::once(db.name.clone()).chain(values.map(|v| v.to_string())).collect()
    });
    table::dynamic(out, &columns, rows);
}

/// The counters of SHOW STATS_TOTALS and SHOW STATS_AVERAGES, each beside its column name.
fn counters(t: &Totals) -> [(&'static str, u64); 11] {
    [
        ("server_assignment_count", t.server_assignment_count),
        ("xact_count", t.xact_count),
        ("query_count", t.query_count),
        ("bytes_received", t.received),
        ("bytes_sent", t.sent),
        ("xact_time", t.xact_time_us),
        ("query_time", t.query_time_us),
        ("wait_time", t.wait_time_us),
        ("client_parse_count", t.client_parse_count),
        ("server_parse_count", t.server_parse_count),
        ("bind_count", t.bind_count),
    ]
}

/// SHOW STATS says total_received/total_sent and avg_recv/avg_sent where STATS_TOTALS and
/// STATS_AVERAGES say bytes_received/bytes_sent, as PgBouncer does.
fn stats_name(prefix: &str, name: &str, average: bool) -> String {
    let name = match (prefix, name) {
        ("", _) => name,
        (_, "bytes_received") if average => "recv",
        (_, "bytes_received") => "received",
        (_, "bytes_sent") => "sent",
        _ => name,
    };
    format!("{prefix}{name}")
}

fn by_name(t: &Topology) -> Vec<&Arc<Database>> {
    let mut dbs: Vec<_> = t.databases.values().collect();
    dbs.sort_by(|a, b| a.name.cmp(&b.name));
    dbs
}
