//! The admin console: `psql -p 6432 lsnpool` (or database `pgbouncer`), simple protocol only.
//! Column names and order follow PgBouncer's where PgBouncer has the command, so dashboards
//! and exporters written for it keep working.
//!
//! pgwire's server side is not used here: it wants to own the connection from its first
//! byte (startup, TLS refusal, authentication), which the shared login path has already done,
//! and the console needs nothing beyond RowDescription/DataRow/CommandComplete.

use crate::pooler::Pooler;
use crate::replicas;
use crate::stats::{DbStats, Totals};
use bytes::{Buf, BytesMut};
use lsnpool_protocol::backend::{self, PoolerError, TxStatus};
use lsnpool_protocol::frame::Frames;
use lsnpool_protocol::{frontend, sqlstate};
use lsnpool_router::PrimaryReason;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminAccess {
    /// `admin_users`: every command.
    Full,
    /// `stats_users`: SHOW commands only.
    StatsOnly,
}

/// Console commands are short; a bigger message is a mistake or an attack.
const MAX_ADMIN_MESSAGE: usize = 64 * 1024;

const HELP: &str = "SHOW HELP|VERSION|CONFIG|DATABASES|LISTS|USERS|POOLS|CLIENTS|SERVERS|STATS|STATS_TOTALS|STATS_AVERAGES|REPLICAS|ROUTING\n\
RELOAD\nPAUSE [db]\nRESUME [db]\nKILL db\nSHUTDOWN";

pub async fn serve(pooler: Arc<Pooler>, mut stream: TcpStream, mut buf: BytesMut, access: AdminAccess) {
    let mut out = BytesMut::new();
    for (k, v) in [
        ("server_version", concat!(env!("CARGO_PKG_VERSION"), "/lsnpool")),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("TimeZone", "UTC"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", ""),
    ] {
        backend::parameter_status(&mut out, k, v);
    }
    backend::backend_key_data(&mut out, 0, 0);
    backend::ready_for_query(&mut out, TxStatus::Idle);
    if stream.write_all(&out).await.is_err() {
        return;
    }
    loop {
        out.clear();
        let mut consumed = 0;
        let mut close = false;
        let mut failed = false;
        for item in Frames::new(&buf, MAX_ADMIN_MESSAGE) {
            let Ok((h, frame)) = item else {
                failed = true;
                break;
            };
            consumed += h.frame_len;
            match h.tag {
                frontend::QUERY => {
                    let sql = frontend::parse_query(frame).unwrap_or_default();
                    let sql = String::from_utf8_lossy(sql);
                    close |= execute(&pooler, access, &sql, &mut out).await;
                    backend::ready_for_query(&mut out, TxStatus::Idle);
                }
                frontend::TERMINATE => close = true,
                frontend::SYNC => backend::ready_for_query(&mut out, TxStatus::Idle),
                frontend::FLUSH => {}
                _ => {
                    let e = PoolerError::error(sqlstate::FEATURE_NOT_SUPPORTED, "the lsnpool admin console accepts only simple queries")
                        .with_hint("use psql, or your driver's simple query mode");
                    backend::error_response(&mut out, &e);
                }
            }
            if close {
                break;
            }
        }
        if failed {
            let e = PoolerError::fatal(sqlstate::PROTOCOL_VIOLATION, "invalid or oversize message on the admin console");
            backend::error_response(&mut out, &e);
            close = true;
        }
        buf.advance(consumed.min(buf.len()));
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            return;
        }
        if close {
            return;
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Runs one console command; returns true when the connection should close.
async fn execute(pooler: &Arc<Pooler>, access: AdminAccess, sql: &str, out: &mut BytesMut) -> bool {
    let cmd = sql.trim().trim_end_matches(';').trim();
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let first = upper.first().map(String::as_str).unwrap_or("");
    if first.is_empty() {
        backend::empty_query_response(out);
        return false;
    }
    if first != "SHOW" && access == AdminAccess::StatsOnly {
        let e = PoolerError::error(sqlstate::INSUFFICIENT_PRIVILEGE, "stats_users may only run SHOW commands")
            .with_hint("add the user to pooler.admin_users");
        backend::error_response(out, &e);
        return false;
    }
    let arg = words.get(1).copied();
    match (first, upper.get(1).map(String::as_str)) {
        ("SHOW", Some(what)) if words.len() == 2 => match show(pooler, what, out) {
            true => {}
            false => unknown(cmd, out),
        },
        ("RELOAD", None) => match pooler.reload() {
            Ok(()) => backend::command_complete(out, "RELOAD"),
            Err(e) => {
                let msg = format!("RELOAD failed, the old configuration stays in force: {e}");
                backend::error_response(out, &PoolerError::error(sqlstate::INVALID_PARAMETER_VALUE, &msg));
            }
        },
        ("PAUSE", _) if words.len() <= 2 => {
            pooler.pause(arg);
            wait_until_idle(pooler, arg).await;
            backend::command_complete(out, "PAUSE");
        }
        ("RESUME", _) if words.len() <= 2 => {
            pooler.resume(arg);
            backend::command_complete(out, "RESUME");
        }
        ("KILL", Some(_)) if words.len() == 2 => {
            let db = words[1];
            let mut killed = 0;
            for c in pooler.clients.all() {
                if c.info.database.name == db {
                    c.kill();
                    killed += 1;
                }
            }
            tracing::info!(database = db, clients = killed, "KILL from the admin console");
            backend::command_complete(out, "KILL");
        }
        ("SHUTDOWN", None) => {
            pooler.begin_shutdown();
            backend::command_complete(out, "SHUTDOWN");
            return true;
        }
        _ => unknown(cmd, out),
    }
    false
}

fn unknown(cmd: &str, out: &mut BytesMut) {
    let msg = format!("unknown admin console command: \"{cmd}\"");
    let e = PoolerError::error(sqlstate::SYNTAX_ERROR, &msg).with_hint("SHOW HELP lists the commands");
    backend::error_response(out, &e);
}

/// PAUSE returns once no server connection of the paused databases is lent out.
async fn wait_until_idle(pooler: &Arc<Pooler>, db: Option<&str>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let topology = pooler.topology();
        let clusters: Vec<_> = match db {
            Some(d) => topology.databases.get(d).map(|x| vec![x.cluster.clone()]).unwrap_or_default(),
            None => topology.databases.values().map(|x| x.cluster.clone()).collect(),
        };
        let busy = topology.all_pools().filter(|((c, _), _)| clusters.contains(c)).any(|(_, p)| {
            std::iter::once(&p.primary).chain(p.replicas.iter()).any(|pool| {
                let s = pool.status();
                s.size > s.available
            })
        });
        if !busy || tokio::time::Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn table(out: &mut BytesMut, columns: &[&str], rows: &[Vec<String>]) {
    backend::row_description(out, columns);
    for r in rows {
        let values: Vec<Option<&str>> = r.iter().map(|v| Some(v.as_str())).collect();
        backend::data_row(out, &values);
    }
    backend::command_complete(out, "SHOW");
}

fn epoch_text(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // Civil date from days since the epoch (Howard Hinnant's algorithm): no chrono needed.
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Writes the answer to `SHOW what`; false for an unknown `what`.
fn show(pooler: &Arc<Pooler>, what: &str, out: &mut BytesMut) -> bool {
    let t = pooler.topology();
    let c = &t.config;
    match what {
        "HELP" => {
            let e = PoolerError { severity: "NOTICE", code: "00000", message: "Console usage", detail: Some(HELP), hint: None };
            backend::notice_response(out, &e);
            backend::command_complete(out, "SHOW");
        }
        "VERSION" => table(out, &["version"], &[vec![format!("lsnpool {}", env!("CARGO_PKG_VERSION"))]]),
        "CONFIG" => {
            let p = &c.pooler;
            let r = &c.routing;
            let d = lsnpool_config::PoolerConfig::default();
            let dr = lsnpool_config::RoutingConfig::default();
            let rows: Vec<Vec<String>> = [
                ("listen", p.listen.clone(), d.listen.clone(), "no"),
                ("pool_mode", p.pool_mode.as_str().to_string(), "transaction".into(), "yes"),
                ("auth_type", p.auth_type.as_str().to_string(), "scram-sha-256".into(), "yes"),
                ("default_pool_size", p.default_pool_size.to_string(), d.default_pool_size.to_string(), "yes"),
                ("min_pool_size", p.min_pool_size.to_string(), d.min_pool_size.to_string(), "yes"),
                ("max_client_conn", p.max_client_conn.to_string(), d.max_client_conn.to_string(), "yes"),
                ("query_wait_timeout", format!("{:?}", p.query_wait_timeout), format!("{:?}", d.query_wait_timeout), "yes"),
                ("client_login_timeout", format!("{:?}", p.client_login_timeout), format!("{:?}", d.client_login_timeout), "yes"),
                ("server_connect_timeout", format!("{:?}", p.server_connect_timeout), format!("{:?}", d.server_connect_timeout), "yes"),
                ("server_lifetime", format!("{:?}", p.server_lifetime), format!("{:?}", d.server_lifetime), "yes"),
                ("server_idle_timeout", format!("{:?}", p.server_idle_timeout), format!("{:?}", d.server_idle_timeout), "yes"),
                ("max_message_size", p.max_message_size.to_string(), d.max_message_size.to_string(), "yes"),
                ("max_prepared_statements", p.max_prepared_statements.to_string(), d.max_prepared_statements.to_string(), "yes"),
                ("admin_users", p.admin_users.join(","), d.admin_users.join(","), "yes"),
                ("stats_users", p.stats_users.join(","), String::new(), "yes"),
                ("metrics_listen", p.metrics_listen.clone(), d.metrics_listen.clone(), "no"),
                ("routing.consistency", r.consistency.to_string(), dr.consistency.to_string(), "yes"),
                ("routing.lsn_poll_interval", format!("{:?}", r.lsn_poll_interval), format!("{:?}", dr.lsn_poll_interval), "yes"),
                ("routing.max_replica_lag", format!("{:?}", r.max_replica_lag), format!("{:?}", dr.max_replica_lag), "yes"),
                ("routing.lsn_wait_timeout", format!("{:?}", r.lsn_wait_timeout), format!("{:?}", dr.lsn_wait_timeout), "yes"),
                ("routing.capture_commit_lsn", r.capture_commit_lsn.to_string(), dr.capture_commit_lsn.to_string(), "yes"),
            ]
            .into_iter()
            .map(|(k, v, def, ch)| vec![k.to_string(), v, def, ch.to_string()])
            .collect();
            table(out, &["key", "value", "default", "changeable"], &rows);
        }
        "DATABASES" => {
            let mut names: Vec<_> = t.databases.values().collect();
            names.sort_by(|a, b| a.name.cmp(&b.name));
            let clients = pooler.clients.all();
            let rows: Vec<Vec<String>> = names
                .iter()
                .filter_map(|db| {
                    let cl = c.clusters.get(&*db.cluster)?;
                    let (host, port) = cl.primary.rsplit_once(':').unwrap_or((cl.primary.as_str(), ""));
                    let current = clients.iter().filter(|x| x.info.database.name == db.name).count();
                    let routing = match db.mode {
                        lsnpool_router::RoutingMode::Automatic => "automatic",
                        lsnpool_router::RoutingMode::ReplicaOnly if db.consistency == lsnpool_router::Consistency::Strong => "primary",
                        lsnpool_router::RoutingMode::ReplicaOnly => "replicas",
                    };
                    Some(vec![
                        db.name.clone(),
                        host.to_string(),
                        port.to_string(),
                        cl.server_database(&db.cluster).to_string(),
                        String::new(),
                        cl.pool_size.unwrap_or(c.pooler.default_pool_size).to_string(),
                        c.pooler.min_pool_size.to_string(),
                        "0".into(),
                        c.pooler.server_lifetime.as_secs().to_string(),
                        c.pooler.pool_mode.as_str().to_string(),
                        "0".into(),
                        current.to_string(),
                        u8::from(pooler.is_paused(&db.name)).to_string(),
                        "0".into(),
                        db.consistency.to_string(),
                        routing.into(),
                        cl.replicas.len().to_string(),
                    ])
                })
                .collect();
            table(
                out,
                &[
                    "name", "host", "port", "database", "force_user", "pool_size", "min_pool_size", "reserve_pool",
                    "server_lifetime", "pool_mode", "max_connections", "current_connections", "paused", "disabled",
                    "consistency", "routing", "replicas",
                ],
                &rows,
            );
        }
        "LISTS" => {
            let clients = pooler.clients.all();
            let servers = lsnpool_pool::registry::servers();
            let active_clients = clients.iter().filter(|x| x.state() != crate::clients::ClientState::Idle).count();
            let active_servers = servers.iter().filter(|s| s.is_active()).count();
            let rows: Vec<Vec<String>> = [
                ("databases", t.databases.len()),
                ("users", t.users.len()),
                ("pools", t.all_pools().map(|(_, p)| 1 + p.replicas.len()).sum()),
                ("free_clients", 0),
                ("used_clients", clients.len()),
                ("login_clients", 0),
                ("free_servers", 0),
                ("used_servers", servers.len()),
                ("dns_names", 0),
                ("dns_zones", 0),
                ("dns_queries", 0),
                ("dns_pending", 0),
                ("active_clients", active_clients),
                ("active_servers", active_servers),
            ]
            .into_iter()
            .map(|(k, v)| vec![k.to_string(), v.to_string()])
            .collect();
            table(out, &["list", "items"], &rows);
        }
        "USERS" => {
            let mut rows: Vec<Vec<String>> =
                c.users.iter().map(|u| vec![u.name.clone(), c.pooler.pool_mode.as_str().to_string()]).collect();
            rows.sort();
            table(out, &["name", "pool_mode"], &rows);
        }
        "POOLS" => {
            let mut rows = Vec::new();
            let mut pools: Vec<_> = t.all_pools().collect();
            pools.sort_by(|a, b| a.0.cmp(b.0));
            let waits = pooler.clients.max_waits();
            for ((cluster, user), p) in pools {
                for (i, pool) in std::iter::once(&p.primary).chain(p.replicas.iter()).enumerate() {
                    let s = pool.status();
                    let active = s.size.saturating_sub(s.available);
                    let label = pool.manager().target().label.clone();
                    let maxwait = waits.get(&(label, user.clone())).copied().unwrap_or_default();
                    rows.push(vec![
                        cluster.to_string(),
                        user.clone(),
                        active.to_string(),
                        s.waiting.to_string(),
                        "0".into(),
                        "0".into(),
                        active.to_string(),
                        "0".into(),
                        "0".into(),
                        s.available.to_string(),
                        "0".into(),
                        "0".into(),
                        "0".into(),
                        maxwait.as_secs().to_string(),
                        maxwait.subsec_micros().to_string(),
                        c.pooler.pool_mode.as_str().to_string(),
                        pool.manager().target().label.to_string(),
                        if i == 0 { "primary".into() } else { "replica".into() },
                    ]);
                }
            }
            table(
                out,
                &[
                    "database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req", "sv_active",
                    "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login", "maxwait",
                    "maxwait_us", "pool_mode", "node", "role",
                ],
                &rows,
            );
        }
        "CLIENTS" => {
            let rows: Vec<Vec<String>> = pooler
                .clients
                .all()
                .iter()
                .map(|x| {
                    let state = match x.state() {
                        crate::clients::ClientState::Idle => "idle",
                        crate::clients::ClientState::Active => "active",
                        crate::clients::ClientState::Waiting => "waiting",
                    };
                    vec![
                        "C".into(),
                        x.info.user.name.clone(),
                        x.info.database.name.clone(),
                        state.into(),
                        x.info.addr.ip().to_string(),
                        x.info.addr.port().to_string(),
                        String::new(),
                        String::new(),
                        epoch_text(x.info.connected_at),
                        epoch_text(x.info.connected_at),
                        "0".into(),
                        "0".into(),
                        "0".into(),
                        format!("{:x}", x.pid),
                        String::new(),
                        x.pid.to_string(),
                        String::new(),
                        x.info.application_name.clone(),
                        "0".into(),
                    ]
                })
                .collect();
            table(
                out,
                &[
                    "type", "user", "database", "state", "addr", "port", "local_addr", "local_port", "connect_time",
                    "request_time", "wait", "wait_us", "close_needed", "ptr", "link", "remote_pid", "tls",
                    "application_name", "prepared_statements",
                ],
                &rows,
            );
        }
        "SERVERS" => {
            let rows: Vec<Vec<String>> = lsnpool_pool::registry::servers()
                .iter()
                .map(|s| {
                    let lent = s.lent_at_us();
                    let request = if lent == 0 { s.connected_at } else { SystemTime::UNIX_EPOCH + Duration::from_micros(lent) };
                    vec![
                        "S".into(),
                        s.user.clone(),
                        s.database.clone(),
                        if s.is_active() { "active".into() } else { "idle".into() },
                        s.addr.ip().to_string(),
                        s.addr.port().to_string(),
                        s.local_addr.map(|a| a.ip().to_string()).unwrap_or_default(),
                        s.local_addr.map(|a| a.port().to_string()).unwrap_or_default(),
                        epoch_text(s.connected_at),
                        epoch_text(request),
                        "0".into(),
                        "0".into(),
                        "0".into(),
                        format!("{:x}", s.id),
                        String::new(),
                        s.pid.to_string(),
                        String::new(),
                        String::new(),
                        "0".into(),
                        s.label.to_string(),
                    ]
                })
                .collect();
            table(
                out,
                &[
                    "type", "user", "database", "state", "addr", "port", "local_addr", "local_port", "connect_time",
                    "request_time", "wait", "wait_us", "close_needed", "ptr", "link", "remote_pid", "tls",
                    "application_name", "prepared_statements", "node",
                ],
                &rows,
            );
        }
        "STATS" | "STATS_TOTALS" | "STATS_AVERAGES" => show_stats(pooler, what, out),
        "REPLICAS" => {
            let mut rows = Vec::new();
            let mut clusters: Vec<_> = t.clusters().collect();
            clusters.sort_by(|a, b| a.0.cmp(b.0));
            for (name, rt) in clusters {
                let Some(cl) = c.clusters.get(&**name) else { continue };
                for r in replicas::node_rows(&rt.state, cl) {
                    rows.push(vec![
                        format!("{name}/{}", r.node),
                        r.addr,
                        r.role.into(),
                        r.state.into(),
                        r.lsn.to_string(),
                        r.lag_bytes.to_string(),
                        r.lag_ms.to_string(),
                        r.last_poll_ms_ago.map(|v| v.to_string()).unwrap_or_default(),
                        r.reads_routed.to_string(),
                        r.in_rotation.to_string(),
                    ]);
                }
            }
            table(
                out,
                &["node", "addr", "role", "state", "replay_lsn", "lag_bytes", "lag_ms", "last_poll_ms_ago", "reads_routed", "in_rotation"],
                &rows,
            );
        }
        "ROUTING" => {
            let mut dbs: Vec<_> = t.databases.values().collect();
            dbs.sort_by(|a, b| a.name.cmp(&b.name));
            let rows: Vec<Vec<String>> = dbs
                .iter()
                .map(|db| {
                    let s = &db.stats;
                    let waits = DbStats::get(&s.catchup_waits);
                    let mut row = vec![db.name.clone(), DbStats::get(&s.replica_reads).to_string()];
                    for r in PrimaryReason::ALL {
                        row.push(DbStats::get(s.primary(r)).to_string());
                    }
                    row.push(DbStats::get(&s.lsn_captured).to_string());
                    row.push(DbStats::get(&s.lsn_capture_round_trips).to_string());
                    row.push(waits.to_string());
                    row.push((DbStats::get(&s.catchup_wait_us) / waits.max(1)).to_string());
                    row.push(DbStats::get(&s.probe_hits).to_string());
                    row.push(DbStats::get(&s.probe_misses).to_string());
                    row
                })
                .collect();
            table(
                out,
                &[
                    "database", "replica_reads", "primary_write", "primary_strong", "primary_hint", "primary_lag_fallback",
                    "primary_no_replica_up", "primary_retry_25006", "lsn_captured", "lsn_capture_round_trips", "catchup_waits",
                    "avg_catchup_wait_us", "replica_probe_hits", "replica_probe_misses",
                ],
                &rows,
            );
        }
        _ => return false,
    }
    true
}

const TOTAL_COLUMNS: [&str; 11] = [
    "server_assignment_count", "xact_count", "query_count", "received", "sent", "xact_time", "query_time", "wait_time",
    "client_parse_count", "server_parse_count", "bind_count",
];

const AVERAGE_COLUMNS: [&str; 11] = [
    "server_assignment_count", "xact_count", "query_count", "recv", "sent", "xact_time", "query_time", "wait_time",
    "client_parse_count", "server_parse_count", "bind_count",
];

/// In TOTAL_COLUMNS order.
fn values(t: &Totals) -> [u64; 11] {
    [
        t.server_assignment_count,
        t.xact_count,
        t.query_count,
        t.received,
        t.sent,
        t.xact_time_us,
        t.query_time_us,
        t.wait_time_us,
        t.client_parse_count,
        t.server_parse_count,
        t.bind_count,
    ]
}

fn show_stats(pooler: &Arc<Pooler>, what: &str, out: &mut BytesMut) {
    let t = pooler.topology();
    let mut dbs: Vec<_> = t.databases.values().collect();
    dbs.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rows = Vec::new();
    for db in dbs {
        let totals = db.stats.totals();
        let avg = pooler.averages(&db.name);
        let mut row = vec![db.name.clone()];
        match what {
            "STATS" => {
                row.extend(values(&totals).iter().map(u64::to_string));
                row.push(DbStats::get(&db.stats.client_login_count).to_string());
                row.extend(values(&avg).iter().map(u64::to_string));
            }
            "STATS_TOTALS" => row.extend(values(&totals).iter().map(u64::to_string)),
            _ => row.extend(values(&avg).iter().map(u64::to_string)),
        }
        rows.push(row);
    }
    let mut columns: Vec<String> = vec!["database".into()];
    match what {
        "STATS" => {
            columns.extend(TOTAL_COLUMNS.iter().map(|c| format!("total_{c}")));
            columns.push("total_client_login_count".into());
            columns.extend(AVERAGE_COLUMNS.iter().map(|c| format!("avg_{c}")));
        }
        "STATS_TOTALS" => columns.extend(TOTAL_COLUMNS.iter().map(|c| stats_plain_name(c))),
        _ => columns.extend(AVERAGE_COLUMNS.iter().map(|c| stats_plain_name(c))),
    }
    let cols: Vec<&str> = columns.iter().map(String::as_str).collect();
    table(out, &cols, &rows);
}

/// STATS_TOTALS / STATS_AVERAGES say bytes_received/bytes_sent where STATS says received/sent
/// (total_) and recv/sent (avg_), as PgBouncer does.
fn stats_plain_name(c: &str) -> String {
    match c {
        "received" | "recv" => "bytes_received".into(),
        "sent" => "bytes_sent".into(),
        other => {
            let mut s = String::new();
            let _ = write!(s, "{other}");
            s
        }
    }
}
