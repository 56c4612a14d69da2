//! From TCP accept to ReadyForQuery: SSLRequest (answered `S` when TLS is configured, the
//! handshake then done by the listener), GSS refusal, cancel requests, protocol version
//! negotiation, database and user lookup, client authentication, the greeting.

use crate::admin::AdminAccess;
use crate::clients::{ClientAddr, ClientInfo, Registration};
use crate::lease::{Borrower, Lease, Refusal};
use crate::client_params::{reported_to_client, session_params};
use crate::pooler::{ClientGuard, Pooler};
use crate::topology::{ClientSecret, Database, Topology, User};
use bytes::{Buf, BytesMut};
use lsnpool_auth::{md5_salt, verify_md5_response, ScramServer};
use lsnpool_config::{PoolMode, ADMIN_DATABASES};
use lsnpool_router::RoutingMode;
use lsnpool_pool::ParamSync;
use lsnpool_protocol::backend::{self, PoolerError, TxStatus};
use lsnpool_protocol::frame::{read_cstr, read_i32, Header, HEADER_LEN};
use lsnpool_protocol::sqlstate;
use lsnpool_protocol::startup::{self, Startup, StartupPacket};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use lsnpool_net::Stream;

/// Password and SASL messages are tiny; anything bigger during login is an attack or a bug.
const MAX_AUTH_MESSAGE: usize = 8 * 1024;

pub enum Accepted {
    Session(Box<LoggedIn>),
    Admin { user: String, access: AdminAccess },
    /// Cancel request served, or the client was refused (it has been told why).
    Done,
    /// The client asked for TLS and was told `S`: the handshake comes next, then login again.
    StartTls(Arc<lsnpool_net::rustls::ServerConfig>),
}

pub struct LoggedIn {
    pub topology: Arc<Topology>,
    pub db: Arc<Database>,
    pub user: Arc<User>,
    pub params: ParamSync,
    pub registration: Registration,
    /// `lsnpool.report_commit_lsn` was on in the startup packet (or its `options`).
    pub report_commit_lsn: bool,
    /// Session mode: the client's server connection, taken at login (its BackendKeyData is
    /// the client's).
    /// Boxed: the session keeps `LoggedIn` for its life, and inline an absent lease would
    /// cost every idle client its 400-odd bytes.
    pub server: Option<Box<Lease>>,
    /// Holds the client's place under max_client_conn for as long as the session lives.
    pub _guard: ClientGuard,
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("client i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("client closed the connection during login")]
    Eof,
}

pub async fn login(stream: &mut Stream, buf: &mut BytesMut, pooler: &Arc<Pooler>, peer: ClientAddr) -> Result<Accepted, LoginError> {
    let startup = loop {
        let packet = read_startup_packet(stream, buf).await?;
        let packet = match packet {
            Ok(p) => p,
            Err(msg) => return refuse(stream, sqlstate::PROTOCOL_VIOLATION, &msg, None).await,
        };
        match packet {
            // No TLS on a Unix socket, as PostgreSQL does: the client goes on in plain text.
            StartupPacket::SslRequest => match pooler.topology().client_tls.clone().filter(|_| !stream.is_tls() && !peer.is_unix()) {
                Some(config) => {
                    if !buf.is_empty() {
                        // Bytes sent in plain text behind the SSLRequest would pass for
                        // bytes sent under TLS (CVE-2021-23214): refuse, as PostgreSQL does.
                        return refuse(stream, sqlstate::PROTOCOL_VIOLATION, "received unencrypted data after SSL request", None).await;
                    }
                    stream.write_all(b"S").await?;
                    return Ok(Accepted::StartTls(config));
                }
                // 'N' tells the client to go on in plain text.
                None => stream.write_all(b"N").await?,
            },
            // No GSS encryption: 'N' tells the client to go on in plain text.
            StartupPacket::GssEncRequest => stream.write_all(b"N").await?,
            StartupPacket::Cancel { pid, secret } => {
                crate::cancel::handle(&pooler.clients, pid, secret, pooler.topology().config.pooler.server_connect_timeout).await;
                return Ok(Accepted::Done);
            }
            StartupPacket::Startup(s) => break s,
        }
    };
    // A socket client is on this host (PostgreSQL's `local`, which `hostssl` does not cover).
    if pooler.topology().config.pooler.client_tls_mode == lsnpool_config::ClientTlsMode::Require && !stream.is_tls() && !peer.is_unix() {
        let msg = "lsnpool accepts TLS connections only (client_tls_mode = require)";
        return refuse(stream, sqlstate::INVALID_AUTHORIZATION, msg, Some("connect with sslmode=require or stronger")).await;
    }
    let mut out = BytesMut::new();
    negotiate_version(&startup, &mut out);

    let Some(user_name) = startup.param("user").filter(|u| !u.is_empty()) else {
        return refuse(stream, sqlstate::INVALID_AUTHORIZATION, "no user name specified in startup packet", None).await;
    };
    let db_name = startup.param("database").filter(|d| !d.is_empty()).unwrap_or(user_name);
    if startup.param("replication").is_some_and(|r| r != "false" && r != "0" && r != "off") {
        return refuse(stream, sqlstate::FEATURE_NOT_SUPPORTED, "lsnpool does not pool replication connections", Some("connect to the server directly for replication")).await;
    }
    let topology = pooler.topology();
    let user = topology.users.get(user_name).cloned();
    let trust = topology.config.pooler.auth_type == lsnpool_config::AuthType::Trust;
    if user.is_none() && trust {
        // No password is asked under trust, so there is no exchange to hide the answer in.
        let msg = format!("user \"{user_name}\" is not configured in lsnpool");
        return refuse(stream, sqlstate::INVALID_AUTHORIZATION, &msg, Some("add a [[users]] entry for it to pooler.toml")).await;
    }
    // An unknown user goes through the same exchange as a known one and fails the same way:
    // which users exist is not given away.
    let user = match user {
        Some(user) if authenticate(stream, buf, &mut out, Some(&user), user_name, &topology, pooler).await? => user,
        known => {
            if known.is_none() {
                authenticate(stream, buf, &mut out, None, user_name, &topology, pooler).await?;
                tracing::info!(client = %peer, user = user_name, "login as a user that is not configured");
            }
            pooler.auth_guard.delay_failure(peer.ip_key(), topology.config.pooler.auth_failure_delay).await;
            let msg = format!("password authentication failed for user \"{user_name}\"");
            return refuse(stream, sqlstate::INVALID_PASSWORD, &msg, None).await;
        }
    };

    if ADMIN_DATABASES.contains(&db_name) {
        let p = &topology.config.pooler;
        let access = if p.admin_users.iter().any(|u| u == user_name) {
            AdminAccess::Full
        } else if p.stats_users.iter().any(|u| u == user_name) {
            AdminAccess::StatsOnly
        } else {
            let msg = format!("user \"{user_name}\" may not use the admin console");
            return refuse_after(stream, out, sqlstate::INSUFFICIENT_PRIVILEGE, &msg, Some("add the user to pooler.admin_users or pooler.stats_users")).await;
        };
        stream.write_all(&out).await?;
        return Ok(Accepted::Admin { user: user_name.to_string(), access });
    }
    let Some(db) = topology.databases.get(db_name).cloned() else {
        let mut names: Vec<&str> = topology.databases.keys().map(String::as_str).collect();
        names.sort_unstable();
        let msg = format!("database \"{db_name}\" does not exist in lsnpool");
        let hint = format!("configured databases: {}", names.join(", "));
        return refuse_after(stream, out, sqlstate::INVALID_CATALOG_NAME, &msg, Some(&hint)).await;
    };
    let Some(guard) = pooler.admit_client(topology.config.pooler.max_client_conn) else {
        let msg = format!("no more connections allowed (max_client_conn = {})", topology.config.pooler.max_client_conn);
        return refuse_after(stream, out, sqlstate::TOO_MANY_CONNECTIONS, &msg, Some("raise pooler.max_client_conn or close idle clients")).await;
    };
    let params = match session_params(&startup) {
        Ok(p) => p,
        Err(msg) => {
            return refuse_after(stream, out, sqlstate::INVALID_PARAMETER_VALUE, &msg, None).await;
        }
    };
    let Some(pools) = topology.pools(&db.cluster, &user.name) else {
        return refuse_after(stream, out, sqlstate::INVALID_CATALOG_NAME, "no pool for this database and user", None).await;
    };
    let server_params = match pools.primary().manager().reported_params() {
        Some(p) => p,
        // The first client of a pool waits for one login to learn what the server reports.
        None => match pools.primary().get().await {
            Ok(conn) => {
                drop(conn);
                pools.primary().manager().reported_params().unwrap_or_default()
            }
            Err(e) => {
                    let msg = format!("could not connect to the primary of \"{}\": {e}", db.cluster);
                return refuse_after(stream, out, sqlstate::CANNOT_CONNECT_NOW, &msg, None).await;
            }
        },
    };
    let mut registration = pooler.clients.register(ClientInfo {
        user: user.clone(),
        database: db.clone(),
        addr: peer,
        application_name: params.get("application_name").unwrap_or_default().to_string(),
        connected_at: std::time::SystemTime::now(),
    });
    let mut greeting = reported_to_client(&server_params, &params);
    let mut server = None;
    if topology.pool_mode() == PoolMode::Session && db.mode != RoutingMode::ReplicaOnly {
        // Session mode is a direct connection through a pool: the client's own server
        // session, opened with its startup parameters, greeted as that server greets it.
        let who = Borrower { slot: &registration.slot, db: &db };
        match session_server(pooler, &pools, &who, &params).await {
            Ok(lease) => {
                greeting.clone_from(&lease.reported);
                registration.use_server_key(lease.key.pid, lease.key.secret);
                server = Some(Box::new(lease));
            }
            Err(r) => return refuse_after(stream, out, &r.code, &r.message, r.hint).await,
        }
    }
    for (k, v) in greeting {
        backend::parameter_status(&mut out, &k, &v);
    }
    let (pid, secret) = registration.key();
    backend::backend_key_data(&mut out, pid, secret);
    backend::ready_for_query(&mut out, TxStatus::Idle);
    if let Err(e) = stream.write_all(&out).await {
        return Err(e.into());
    }
    let report_commit_lsn = crate::client_params::reports_commit_lsn(&startup);
    Ok(Accepted::Session(Box::new(LoggedIn { topology, db, user, params, registration, report_commit_lsn, server, _guard: guard })))
}

/// Session mode: the client's server connection, taken at login, opened with the client's
/// startup parameters (a pooled one opened with the very same is reused as it is).
async fn session_server(pooler: &Pooler, pools: &crate::topology::ClusterPools, who: &Borrower<'_>, params: &ParamSync) -> Result<Lease, Refusal> {
    let mut lease = Lease::checkout(pools.primary(), Some((pooler, &who.db.name)), who).await?;
    match lease.open_for_session(pools.primary(), params).await {
        Ok(()) => Ok(lease),
        // A value the server refuses at login is refused as the server would refuse it.
        Err(e) => Err(Refusal::new(e.sqlstate(), format!("could not open a server session: {e}"), None)),
    }
}

/// Protocol 3.2 and `_pq_.` options are not spoken here: NegotiateProtocolVersion says 3.0.
fn negotiate_version(startup: &Startup, out: &mut BytesMut) {
    let unknown: Vec<&str> = startup.params.iter().map(|(k, _)| k.as_str()).filter(|k| k.starts_with("_pq_.")).collect();
    if startup.minor > 0 || !unknown.is_empty() {
        // The newest version we speak, as PostgreSQL sends it: 3.0 (196608), not a bare minor.
        backend::negotiate_protocol_version(out, lsnpool_protocol::startup::PROTOCOL_3_0, &unknown);
    }
}

/// Runs the exchange `user`'s secret calls for; `None` (a user that does not exist) runs the
/// same exchange against a decoy and fails it.
async fn authenticate(
    stream: &mut Stream,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    user: Option<&User>,
    name: &str,
    topology: &Topology,
    pooler: &Pooler,
) -> Result<bool, LoginError> {
    let auth_type = topology.config.pooler.auth_type;
    let ok = match user.map(|u| &u.client_secret) {
        Some(None) => true,
        Some(Some(_)) if auth_type == lsnpool_config::AuthType::Trust => true,
        Some(Some(ClientSecret::Md5(secret))) => {
            let (salt, frame) = md5_exchange(stream, buf, out).await?;
            let mut pos = HEADER_LEN;
            let response = read_cstr(&frame, &mut pos).unwrap_or_default();
            verify_md5_response(secret, name, salt, response)
        }
        Some(Some(ClientSecret::Scram(verifier))) => scram_exchange(stream, buf, out, verifier).await?,
        None if auth_type == lsnpool_config::AuthType::Md5 => {
            md5_exchange(stream, buf, out).await?;
            false
        }
        None => {
            scram_exchange(stream, buf, out, &pooler.auth_guard.decoy_scram(name)).await?;
            false
        }
    };
    if ok {
        backend::auth_ok(out);
    }
    Ok(ok)
}

/// Asks for an md5 password; returns the salt and the client's PasswordMessage.
async fn md5_exchange(stream: &mut Stream, buf: &mut BytesMut, out: &mut BytesMut) -> Result<([u8; 4], BytesMut), LoginError> {
    let salt = md5_salt();
    backend::auth_md5(out, salt);
    stream.write_all(out).await?;
    out.clear();
    Ok((salt, read_auth_message(stream, buf).await?))
}

/// A SCRAM-SHA-256 exchange against `verifier`; leaves SASLFinal in `out` when it succeeds.
async fn scram_exchange(stream: &mut Stream, buf: &mut BytesMut, out: &mut BytesMut, verifier: &lsnpool_auth::ScramVerifier) -> Result<bool, LoginError> {
    backend::auth_sasl(out, &["SCRAM-SHA-256"]);
    stream.write_all(out).await?;
    out.clear();
    let mut server = ScramServer::new(verifier);
    let frame = read_auth_message(stream, buf).await?;
    let mut pos = HEADER_LEN;
    let mechanism = read_cstr(&frame, &mut pos).unwrap_or_default();
    let len = read_i32(&frame, &mut pos).unwrap_or(-1);
    let data = frame.get(pos..).unwrap_or_default();
    if mechanism != b"SCRAM-SHA-256" || len < 0 || len as usize != data.len() {
        return Ok(false);
    }
    let Ok(first) = server.client_first(data) else { return Ok(false) };
    backend::auth_sasl_continue(out, &first);
    stream.write_all(out).await?;
    out.clear();
    let frame = read_auth_message(stream, buf).await?;
    match server.client_final(&frame[HEADER_LEN..]) {
        Ok(fin) => {
            backend::auth_sasl_final(out, &fin);
            Ok(true)
        }
        Err(_) => Ok(false),
    }
}

/// Reads one 'p' message during authentication.
async fn read_auth_message(stream: &mut Stream, buf: &mut BytesMut) -> Result<BytesMut, LoginError> {
    loop {
        match Header::parse(buf, MAX_AUTH_MESSAGE) {
            Ok(Some(h)) if buf.len() >= h.frame_len => {
                if h.tag != lsnpool_protocol::frontend::PASSWORD {
                    // Anything else here ends the login, as PostgreSQL does.
                    return Err(LoginError::Eof);
                }
                return Ok(buf.split_to(h.frame_len));
            }
            Ok(_) => {}
            Err(_) => return Err(LoginError::Eof),
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(LoginError::Eof);
        }
    }
}

async fn read_startup_packet(stream: &mut Stream, buf: &mut BytesMut) -> Result<Result<StartupPacket, String>, LoginError> {
    loop {
        match startup::packet_len(buf) {
            Err(e) => return Ok(Err(e.to_string())),
            Ok(Some(len)) if buf.len() >= len => {
                let packet = buf.split_to(len);
                return Ok(startup::parse(&packet).map_err(|e| e.to_string()));
            }
            Ok(_) => {}
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(LoginError::Eof);
        }
    }
}

async fn refuse(stream: &mut Stream, code: &str, msg: &str, hint: Option<&str>) -> Result<Accepted, LoginError> {
    refuse_after(stream, BytesMut::new(), code, msg, hint).await
}

/// Sends what was queued (e.g. NegotiateProtocolVersion), then a FATAL error.
async fn refuse_after(stream: &mut Stream, mut out: BytesMut, code: &str, msg: &str, hint: Option<&str>) -> Result<Accepted, LoginError> {
    tracing::info!(sqlstate = code, reason = msg, "client refused");
    metrics::counter!("lsnpool_client_login_failures_total", "sqlstate" => code.to_string()).increment(1);
    let mut e = PoolerError::fatal(code, msg);
    e.hint = hint;
    backend::error_response(&mut out, &e);
    stream.write_all(&out).await?;
    let _ = stream.shutdown().await;
    // Don't let the rest of a garbage packet look like a protocol message.
    let _ = out.remaining();
    Ok(Accepted::Done)
}
