//! One connection to a PostgreSQL server: login, and the pooler's own short exchanges on it.

use crate::params::ParamSync;
use crate::registry::{register, Registered};
use crate::statements::StatementCache;
use bytes::{Bytes, BytesMut};
use lsnpool_auth::{md5_password_message, ScramClient};
use lsnpool_protocol::backend::{self, TxStatus};
use lsnpool_protocol::frame::Header;
use lsnpool_net::Stream;
use crate::ServerAddr;
use lsnpool_protocol::frontend;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// Server messages are trusted more than clients', but a broken server must not make us
/// buffer without bound either.
const MAX_SERVER_MESSAGE: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("server {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The server's own ErrorResponse during login (bad password, no such database…).
    #[error("server {addr} refused the login: {message} (SQLSTATE {code})")]
    Refused { addr: String, code: String, message: String },
    #[error("server {addr}: {0}", addr = .1)]
    Auth(String, String),
    #[error("server {addr} broke the protocol: {0}", addr = .1)]
    Protocol(String, String),
    #[error("server {addr} did not answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
}

impl ServerError {
    /// SQLSTATE to show a client whose request this failure stopped.
    pub fn sqlstate(&self) -> &str {
        match self {
            ServerError::Refused { code, .. } => code,
            ServerError::Auth(..) => lsnpool_protocol::sqlstate::INVALID_PASSWORD,
            _ => lsnpool_protocol::sqlstate::CONNECTION_FAILURE,
        }
    }
}

/// Where a CancelRequest for this connection's backend must go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerKey {
    pub addr: ServerAddr,
    pub pid: i32,
    pub secret: i32,
}

/// What the pooler's own query returned.
#[derive(Debug)]
pub struct InternalReply {
    pub status: TxStatus,
    /// First column of the first row, for one-value queries like `pg_current_wal_insert_lsn()`.
    pub value: Option<Bytes>,
    /// SQLSTATE and message of the first error.
    pub error: Option<(String, String)>,
}

pub struct ServerConn {
    pub stream: Stream,
    /// Bytes read from the server and not yet handled; empty whenever the connection is idle.
    pub buf: BytesMut,
    /// Bytes for the server, lent to whoever relays on this connection.
    pub wbuf: BytesMut,
    /// The relay's copy of a transaction's first client bytes (replayed elsewhere if this
    /// server turns out dead before reading them); kept here so no transaction allocates it.
    pub replay: BytesMut,
    pub key: ServerKey,
    pub label: Arc<str>,
    /// Client parameters currently applied on this session (see `params`).
    pub params: ParamSync,
    /// The client startup parameters this connection was opened with (session mode opens a
    /// connection with its client's, so `RESET` returns to them); `None`: the pool's own
    /// login. A `RESET ALL` or `DISCARD ALL` brings `params` back to these.
    pub startup: Option<ParamSync>,
    /// The ParameterStatus values the server reported at login: a session-mode client is
    /// greeted with exactly these.
    pub reported: Vec<(String, String)>,
    pub statements: StatementCache,
    /// Set by whoever saw this connection misbehave or left it mid-exchange: it must not be
    /// reused.
    pub broken: bool,
    /// NotificationResponses that arrived while the pooler ran a query of its own: they
    /// belong to the client that LISTENs on this connection, which gets them next.
    pub notifications: BytesMut,
    addr_text: Arc<str>,
    /// Listed in SHOW SERVERS while it lives.
    pub registered: Option<Registered>,
}

pub struct Login<'a> {
    pub tls: Option<&'a crate::manager::ServerTls>,
    pub addr: &'a str,
    pub user: &'a str,
    pub password: Option<&'a str>,
    pub database: &'a str,
    pub label: Arc<str>,
    /// Session parameters for the startup packet: a session-mode client's own; `None` for
    /// the pool's connections (which say `application_name=lsnpool`).
    pub startup: Option<&'a ParamSync>,
}

/// SSLRequest, then the TLS handshake if the server answers `S` (plain on `N`, unless TLS is
/// required).
async fn start_tls(mut stream: Stream, tls: &crate::manager::ServerTls, addr: &str) -> Result<Stream, ServerError> {
    let io = |source| ServerError::Io { addr: addr.to_string(), source };
    let mut req = BytesMut::new();
    frontend::ssl_request(&mut req);
    stream.write_all(&req).await.map_err(io)?;
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await.map_err(io)?;
    match answer[0] {
        b'S' => {
            let name = lsnpool_net::server_name(addr).map_err(|e| ServerError::Protocol(e, addr.to_string()))?;
            stream.connect_tls(tls.config.clone(), name).await.map_err(|e| ServerError::Auth(format!("TLS handshake failed: {e}"), addr.to_string()))
        }
        b'N' if !tls.required => Ok(stream),
        b'N' => Err(ServerError::Auth(format!("server does not accept TLS (server_tls_mode = {})", tls.mode), addr.to_string())),
        other => Err(ServerError::Protocol(format!("unexpected answer {other:#04x} to SSLRequest"), addr.to_string())),
    }
}

impl ServerConn {
    /// Connects and logs in; returns the connection and the parameters the server reported.
    pub async fn connect(login: &Login<'_>) -> Result<(ServerConn, Vec<(String, String)>), ServerError> {
        let addr_text: Arc<str> = Arc::from(login.addr);
        let io = |source| ServerError::Io { addr: login.addr.to_string(), source };
        let (stream, peer) = match ServerAddr::unix_of(login.addr) {
            // No TLS on a Unix socket (PostgreSQL does not offer it; libpq ignores sslmode there).
            Some(unix) => {
                let path = unix.socket_path().unwrap_or_default();
                let stream = UnixStream::connect(&path).await.map_err(|source| ServerError::Io { addr: unix.to_string(), source })?;
                (Stream::from(stream), unix)
            }
            None => {
                let stream = TcpStream::connect(login.addr).await.map_err(io)?;
                stream.set_nodelay(true).map_err(io)?;
                let peer = ServerAddr::Tcp(stream.peer_addr().map_err(io)?);
                let stream = match login.tls {
                    Some(tls) => start_tls(stream.into(), tls, login.addr).await?,
                    None => stream.into(),
                };
                (stream, peer)
            }
        };
        let mut conn = ServerConn {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            wbuf: BytesMut::new(),
            replay: BytesMut::new(),
            key: ServerKey { addr: peer.clone(), pid: 0, secret: 0 },
            label: login.label.clone(),
            params: login.startup.cloned().unwrap_or_default(),
            startup: login.startup.cloned(),
            reported: Vec::new(),
            statements: StatementCache::default(),
            broken: false,
            notifications: BytesMut::new(),
            addr_text,
            registered: None,
        };
        let reported = conn.login(login).await?;
        conn.reported.clone_from(&reported);
        let local = conn.stream.local_addr().ok();
        conn.registered = Some(register(login.label.clone(), login.user, login.database, peer, local, conn.key.pid));
        Ok((conn, reported))
    }

    fn io_err(&self, source: std::io::Error) -> ServerError {
        ServerError::Io { addr: self.addr_text.to_string(), source }
    }

    fn protocol_err(&self, what: impl Into<String>) -> ServerError {
        ServerError::Protocol(what.into(), self.addr_text.to_string())
    }

    async fn login(&mut self, login: &Login<'_>) -> Result<Vec<(String, String)>, ServerError> {
        let mut out = BytesMut::new();
        let mut params = vec![("user", login.user), ("database", login.database)];
        match login.startup {
            Some(client) => params.extend(client.iter()),
            None => params.push(("application_name", "lsnpool")),
        }
        frontend::startup(&mut out, &params);
        self.write(&out).await?;
        let mut scram: Option<ScramClient> = None;
        let mut reported = Vec::new();
        loop {
            let frame = self.read_frame().await?;
            match frame[0] {
                backend::AUTHENTICATION => {
                    let (code, data) = backend::parse_authentication(&frame)
                        .ok_or_else(|| self.protocol_err("short Authentication message"))?;
                    out.clear();
                    match code {
                        0 => {}
                        3 => frontend::password(&mut out, self.password(login)?.as_bytes()),
                        5 => {
                            let salt: [u8; 4] = data
                                .get(..4)
                                .and_then(|s| s.try_into().ok())
                                .ok_or_else(|| self.protocol_err("md5 request without salt"))?;
                            let hashed = md5_password_message(login.user, self.password(login)?, salt);
                            frontend::password(&mut out, hashed.as_bytes());
                        }
                        10 => {
                            if !data.split(|&b| b == 0).any(|m| m == b"SCRAM-SHA-256") {
                                return Err(ServerError::Auth(
                                    "server offers no SASL mechanism lsnpool supports (SCRAM-SHA-256)".into(),
                                    self.addr_text.to_string(),
                                ));
                            }
                            let mut client = ScramClient::new(self.password(login)?);
                            frontend::sasl_initial_response(&mut out, "SCRAM-SHA-256", &client.client_first());
                            scram = Some(client);
                        }
                        11 => {
                            let client = scram.as_mut().ok_or_else(|| self.protocol_err("SASLContinue before SASL"))?;
                            let reply = client.server_first(data).map_err(|e| ServerError::Auth(e.to_string(), self.addr_text.to_string()))?;
                            frontend::sasl_response(&mut out, &reply);
                        }
                        12 => {
                            let client = scram.as_mut().ok_or_else(|| self.protocol_err("SASLFinal before SASL"))?;
                            client.server_final(data).map_err(|e| ServerError::Auth(e.to_string(), self.addr_text.to_string()))?;
                        }
                        other => {
                            return Err(ServerError::Auth(
                                format!("server asks for authentication method {other}, which lsnpool does not support"),
                                self.addr_text.to_string(),
                            ))
                        }
                    }
                    if !out.is_empty() {
                        self.write(&out).await?;
                    }
                }
                backend::ERROR_RESPONSE => {
                    let f = backend::parse_error_fields(&frame);
                    return Err(ServerError::Refused {
                        addr: self.addr_text.to_string(),
                        code: String::from_utf8_lossy(f.code).into_owned(),
                        message: String::from_utf8_lossy(f.message).into_owned(),
                    });
                }
                backend::PARAMETER_STATUS => {
                    if let Some((k, v)) = backend::parse_parameter_status(&frame) {
                        reported.push((String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned()));
                    }
                }
                backend::BACKEND_KEY_DATA => {
                    let (pid, secret) =
                        backend::parse_backend_key_data(&frame).ok_or_else(|| self.protocol_err("short BackendKeyData"))?;
                    self.key.pid = pid;
                    self.key.secret = secret;
                }
                backend::READY_FOR_QUERY => return Ok(reported),
                _ => {} // NoticeResponse, NegotiateProtocolVersion: nothing to do
            }
        }
    }

    fn password<'a>(&self, login: &Login<'a>) -> Result<&'a str, ServerError> {
        login.password.ok_or_else(|| {
            ServerError::Auth(
                format!("server asks for a password but user \"{}\" has none in the config", login.user),
                self.addr_text.to_string(),
            )
        })
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), ServerError> {
        let r = self.stream.write_all(bytes).await;
        r.map_err(|e| self.io_err(e))
    }

    /// Reads one whole message (slow path: login and the pooler's own queries).
    async fn read_frame(&mut self) -> Result<BytesMut, ServerError> {
        loop {
            let parsed = Header::parse(&self.buf, MAX_SERVER_MESSAGE);
            match parsed {
                Err(e) => return Err(self.protocol_err(e.to_string())),
                Ok(Some(h)) if self.buf.len() >= h.frame_len => return Ok(self.buf.split_to(h.frame_len)),
                _ => {}
            }
            let n = self.stream.read_buf(&mut self.buf).await;
            match n {
                Ok(0) => return Err(self.io_err(std::io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(e) => return Err(self.io_err(e)),
            }
        }
    }

    /// Sends the pooler's own request (one or more messages ending in `ready_count`
    /// ReadyForQuery answers) and reads the answers, within `timeout`. On any failure the
    /// connection is marked broken.
    pub async fn run_internal(&mut self, request: &[u8], ready_count: usize, timeout: Duration) -> Result<InternalReply, ServerError> {
        let r = tokio::time::timeout(timeout, self.exchange(request, ready_count)).await;
        match r {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => {
                self.broken = true;
                Err(e)
            }
            Err(_) => {
                self.broken = true;
                Err(ServerError::Timeout { addr: self.addr_text.to_string(), timeout })
            }
        }
    }

    async fn exchange(&mut self, request: &[u8], mut ready_count: usize) -> Result<InternalReply, ServerError> {
        self.write(request).await?;
        let mut reply = InternalReply { status: TxStatus::Idle, value: None, error: None };
        while ready_count > 0 {
            let frame = self.read_frame().await?.freeze();
            match frame[0] {
                backend::READY_FOR_QUERY => {
                    reply.status = backend::parse_ready_for_query(&frame)
                        .ok_or_else(|| self.protocol_err("bad ReadyForQuery"))?;
                    ready_count -= 1;
                }
                backend::DATA_ROW if reply.value.is_none() => {
                    if let Some(Some(v)) = backend::first_column(&frame) {
                        reply.value = Some(frame.slice_ref(v));
                    }
                }
                backend::NOTIFICATION_RESPONSE => self.notifications.extend_from_slice(&frame),
                backend::ERROR_RESPONSE if reply.error.is_none() => {
                    let f = backend::parse_error_fields(&frame);
                    reply.error = Some((
                        String::from_utf8_lossy(f.code).into_owned(),
                        String::from_utf8_lossy(f.message).into_owned(),
                    ));
                }
                _ => {}
            }
        }
        Ok(reply)
    }

    /// The parameter record a `RESET ALL` or `DISCARD ALL` leaves: the startup values.
    pub fn startup_params(&self) -> ParamSync {
        self.startup.clone().unwrap_or_default()
    }

    /// Convenience for a simple query.
    pub async fn simple_query(&mut self, sql: &str, timeout: Duration) -> Result<InternalReply, ServerError> {
        let mut out = BytesMut::new();
        frontend::query(&mut out, sql);
        self.run_internal(&out, 1, timeout).await
    }

    /// A closed or chatty idle socket (the server went away, or sent a FATAL while idle)
    /// can't be lent out.
    pub fn looks_alive(&self) -> bool {
        self.stream.is_silent()
    }

    pub fn addr(&self) -> &str {
        &self.addr_text
    }

    /// Marks the connection lent out or back in the pool, for SHOW SERVERS / SHOW POOLS.
    pub fn set_active(&self, active: bool) {
        if let Some(r) = &self.registered {
            r.0.set_active(active);
        }
    }
}
