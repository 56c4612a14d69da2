//! The admin console: `psql -p 6432 lsnpool` (or database `pgbouncer`), simple protocol only.
//! Here: the connection loop, access control, and the commands that change things; the SHOW
//! commands are in show.rs. Column names and order follow PgBouncer's where PgBouncer has the
//! command, so dashboards and exporters written for it keep working.
//!
//! pgwire's server side is not used here: it wants to own the connection from its first
//! byte (startup, TLS refusal, authentication), which the shared login path has already done,
//! and the console needs nothing beyond RowDescription/DataRow/CommandComplete.

mod controls;
mod show;
mod table;

use crate::pooler::Pooler;
use bytes::{Buf, BytesMut};
use lsnpool_protocol::backend::{self, PoolerError, TxStatus};
use lsnpool_protocol::frame::Frames;
use lsnpool_protocol::{frontend, sqlstate};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminAccess {
    /// `admin_users`: every command.
    Full,
    /// `stats_users`: SHOW commands only.
    StatsOnly,
}

/// Console commands are short; a bigger message is a mistake or an attack.
const MAX_ADMIN_MESSAGE: usize = 64 * 1024;

/// The commands besides SHOW, as SHOW HELP lists them after the SHOW commands.
const CONTROL_USAGE: &str = "RELOAD\nPAUSE [db]\nRESUME [db]\nDISABLE ROUTING [db]\nENABLE ROUTING [db]\nKILL db\nSHUTDOWN";

pub async fn serve(pooler: Arc<Pooler>, mut stream: lsnpool_net::Stream, mut buf: BytesMut, access: AdminAccess) {
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
        ("SHOW", Some(what)) if words.len() == 2 => match show::find(what) {
            Some(write) => write(pooler, out),
            None => unknown(cmd, out),
        },
        ("RELOAD", None) => reload(pooler, out),
        ("PAUSE", _) if words.len() <= 2 => pause(pooler, arg, out).await,
        ("RESUME", _) if words.len() <= 2 => resume(pooler, arg, out),
        ("KILL", Some(_)) if words.len() == 2 => kill(pooler, words[1], out),
        ("DISABLE" | "ENABLE", Some("ROUTING")) if words.len() <= 3 => {
            controls::switch_routing(pooler, first == "ENABLE", words.get(2).copied(), out)
        }
        ("SHUTDOWN", None) => {
            shutdown(pooler, out);
            return true;
        }
        _ => unknown(cmd, out),
    }
    false
}

fn reload(pooler: &Pooler, out: &mut BytesMut) {
    match pooler.reload() {
        Ok(()) => backend::command_complete(out, "RELOAD"),
        Err(e) => {
            let msg = format!("RELOAD failed, the old configuration stays in force: {e}");
            backend::error_response(out, &PoolerError::error(sqlstate::INVALID_PARAMETER_VALUE, &msg));
        }
    }
}

async fn pause(pooler: &Pooler, db: Option<&str>, out: &mut BytesMut) {
    pooler.pause(db);
    wait_until_idle(pooler, db).await;
    backend::command_complete(out, "PAUSE");
}

fn resume(pooler: &Pooler, db: Option<&str>, out: &mut BytesMut) {
    pooler.resume(db);
    backend::command_complete(out, "RESUME");
}

/// Asks every client of `db` to leave: idle ones at once, busy ones after their transaction.
fn kill(pooler: &Pooler, db: &str, out: &mut BytesMut) {
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

fn shutdown(pooler: &Pooler, out: &mut BytesMut) {
    pooler.begin_shutdown();
    backend::command_complete(out, "SHUTDOWN");
}

fn unknown(cmd: &str, out: &mut BytesMut) {
    let msg = format!("unknown admin console command: \"{cmd}\"");
    let e = PoolerError::error(sqlstate::SYNTAX_ERROR, &msg).with_hint("SHOW HELP lists the commands");
    backend::error_response(out, &e);
}

/// PAUSE returns once no server connection of the paused databases is lent out.
async fn wait_until_idle(pooler: &Pooler, db: Option<&str>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let topology = pooler.topology();
        let clusters: Vec<_> = match db {
            Some(d) => topology.databases.get(d).map(|x| vec![x.cluster.clone()]).unwrap_or_default(),
            None => topology.databases.values().map(|x| x.cluster.clone()).collect(),
        };
        let busy = topology.all_pools().filter(|((c, _), _)| clusters.contains(c)).any(|(_, p)| {
            p.nodes.iter().any(|pool| {
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
