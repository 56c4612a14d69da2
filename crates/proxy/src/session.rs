//! A logged-in client: idle between transactions (holding no server connection and no
//! buffers), then one transaction at a time on a server connection borrowed from a pool.

use crate::cancel::CancelSlot;
use crate::login::LoggedIn;
use crate::prepared::ClientStatements;
use crate::relay::{flush_now, peek_header, ClientIo, Outcome, Relay, SessionState};
use crate::topology::ClusterPools;
use bytes::{Buf, BytesMut};
use deadpool::managed::{Object, PoolError, TimeoutType};
use lsnpool_config::PoolMode;
use lsnpool_pool::ServerManager;
use lsnpool_protocol::backend::{self, PoolerError, TxStatus};
use lsnpool_protocol::frame::Frames;
use lsnpool_protocol::{frontend, sqlstate};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;

type Server = Object<ServerManager>;

const READ_CHUNK: usize = 8 * 1024;

pub struct Session {
    client: ClientIo,
    login: LoggedIn,
    pools: Arc<ClusterPools>,
    statements: ClientStatements,
    /// Session pool mode keeps its server connection between transactions.
    held: Option<Server>,
    /// A batch was refused with an error: drop the rest of it, up to its Sync.
    skip_until_sync: bool,
    peer: SocketAddr,
}

impl Session {
    pub fn new(stream: TcpStream, login: LoggedIn, pools: Arc<ClusterPools>, peer: SocketAddr) -> Session {
        let max_message_size = login.topology.config.pooler.max_message_size;
        Session {
            client: ClientIo { stream, rbuf: BytesMut::new(), wbuf: BytesMut::new(), max_message_size },
            login,
            pools,
            statements: ClientStatements::default(),
            held: None,
            skip_until_sync: false,
            peer,
        }
    }

    pub async fn run(mut self) {
        let why = self.serve().await;
        if let Some(server) = self.held.take() {
            self.end_server(server, true, TxStatus::Idle).await;
        }
        let _ = self.flush_client().await;
        tracing::info!(
            client = %self.peer, user = %self.login.user.name, database = %self.login.db.name,
            reason = why, "client disconnected"
        );
    }

    /// Returns why the session ended.
    async fn serve(&mut self) -> &'static str {
        loop {
            if self.flush_client().await.is_err() {
                return "client write failed";
            }
            let header = match peek_header(&self.client.rbuf, self.client.max_message_size) {
                Err(e) => {
                    self.fatal(sqlstate::PROTOCOL_VIOLATION, &e.to_string());
                    return "protocol violation";
                }
                Ok(h) => h.filter(|h| self.client.rbuf.len() >= h.frame_len),
            };
            let Some(header) = header else {
                match self.read_idle().await {
                    Ok(0) | Err(_) => return "client closed the connection",
                    Ok(_) => continue,
                }
            };
            if self.skip_until_sync {
                self.skip_refused_batch();
                continue;
            }
            if self.held.is_none() {
                match header.tag {
                    frontend::TERMINATE => return "client sent Terminate",
                    frontend::SYNC => {
                        // Nothing is open: answer it ourselves rather than borrow a server.
                        self.client.rbuf.advance(header.frame_len);
                        backend::ready_for_query(&mut self.client.wbuf, TxStatus::Idle);
                        continue;
                    }
                    frontend::FLUSH => {
                        self.client.rbuf.advance(header.frame_len);
                        continue;
                    }
                    _ => {}
                }
            }
            match self.transaction().await {
                Ok(()) => {}
                Err(why) => return why,
            }
        }
    }

    /// Runs one transaction; `Err` ends the session.
    async fn transaction(&mut self) -> Result<(), &'static str> {
        let mut server = match self.held.take() {
            Some(s) => s,
            None => match self.checkout().await {
                Some(s) => s,
                None => return Ok(()),
            },
        };
        let slot = self.slot().clone();
        slot.set_server(Some(server.key));
        let started = Instant::now();
        let outcome = {
            let state = SessionState { statements: &mut self.statements, params: &mut self.login.params };
            let mut relay = Relay::new(&mut self.client, &mut server, state);
            let outcome = relay.run().await;
            record(&self.login.db.name, &relay.stats, started);
            outcome
        };
        slot.set_server(None);
        match outcome {
            Outcome::Done => {
                if self.login.topology.pool_mode() == PoolMode::Session {
                    self.held = Some(server);
                } else {
                    self.release(server).await;
                }
                Ok(())
            }
            Outcome::ClientGone { server_idle, status } => {
                self.end_server(server, server_idle, status).await;
                Err("client closed the connection mid-transaction")
            }
            Outcome::ServerLost => {
                tracing::warn!(client = %self.peer, node = %server.label, "server connection lost mid-transaction");
                discard(server);
                Err("server connection lost")
            }
            Outcome::ClientViolation => {
                discard(server);
                Err("protocol violation")
            }
        }
    }

    fn slot(&self) -> &Arc<CancelSlot> {
        &self.login.registration.slot
    }

    /// Borrows a server connection and brings its session parameters in line with the
    /// client's. On failure the client's batch is answered with an error and `None` returned.
    async fn checkout(&mut self) -> Option<Server> {
        let pool = &self.pools.primary;
        let wait_started = Instant::now();
        let got = {
            let cancelled = self.slot().waiting.notified();
            tokio::select! {
                r = pool.get() => Some(r),
                _ = cancelled => None,
            }
        };
        metrics::histogram!("lsnpool_server_wait_seconds").record(wait_started.elapsed().as_secs_f64());
        let label = pool.manager().target().label.clone();
        let mut server = match got {
            None => {
                self.refuse_batch(sqlstate::QUERY_CANCELED, "canceling statement due to user request", None);
                return None;
            }
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                let settings = pool.manager().settings();
                let (code, msg, hint) = match &e {
                    PoolError::Timeout(TimeoutType::Wait) => (
                        sqlstate::QUERY_CANCELED.to_string(),
                        format!("query_wait_timeout: no server connection to {label} became free within {:?}", settings.wait_timeout),
                        Some("raise pooler.query_wait_timeout or the pool size, or shorten transactions"),
                    ),
                    PoolError::Timeout(_) => (
                        sqlstate::CONNECTION_FAILURE.to_string(),
                        format!("could not connect to {label} within {:?}", settings.connect_timeout),
                        Some("check that the server is up; pooler.server_connect_timeout governs the wait"),
                    ),
                    PoolError::Backend(se) => (se.sqlstate().to_string(), format!("could not connect to {label}: {se}"), None),
                    _ => (sqlstate::ADMIN_SHUTDOWN.to_string(), format!("pool {label} is closed"), None),
                };
                tracing::warn!(client = %self.peer, node = %label, error = %e, "no server connection");
                self.refuse_batch(&code, &msg, hint);
                return None;
            }
        };
        if let Some(plan) = server.params.plan_towards(&self.login.params) {
            let timeout = self.login.topology.config.pooler.query_wait_timeout;
            match server.simple_query(&plan.sql, timeout).await {
                Ok(reply) => match reply.error {
                    None if reply.status == TxStatus::Idle => server.params = self.login.params.clone(),
                    None => {
                        discard(server);
                        self.refuse_batch(sqlstate::CONNECTION_FAILURE, "server left a transaction open while applying session parameters", None);
                        return None;
                    }
                    Some((code, message)) => {
                        let msg = format!("could not apply the session's startup parameters: {message}");
                        self.refuse_batch(&code, &msg, Some("fix the parameters in the connection string or options"));
                        return None;
                    }
                },
                Err(e) => {
                    discard(server);
                    self.refuse_batch(e.sqlstate(), &format!("server failed while applying session parameters: {e}"), None);
                    return None;
                }
            }
        }
        Some(server)
    }

    /// Returns a clean, idle server connection to its pool, closing statements over the cap.
    async fn release(&mut self, mut server: Server) {
        let cap = self.login.topology.config.pooler.max_prepared_statements;
        let evicted = server.statements.evict_over(cap);
        if !evicted.is_empty() {
            let mut req = BytesMut::new();
            for id in &evicted {
                let mut name = BytesMut::new();
                lsnpool_pool::statement_name(&mut name, *id);
                frontend::target(&mut req, frontend::CLOSE, b'S', &name);
            }
            frontend::sync(&mut req);
            let timeout = self.login.topology.config.pooler.query_wait_timeout;
            if server.run_internal(&req, 1, timeout).await.is_err() {
                discard(server);
                return;
            }
        }
        drop(server);
    }

    /// The client is gone (or the session ends): make the server reusable, or close it.
    async fn end_server(&mut self, mut server: Server, server_idle: bool, status: TxStatus) {
        if !server_idle {
            discard(server);
            return;
        }
        let timeout = self.login.topology.config.pooler.query_wait_timeout;
        let session_mode = self.login.topology.pool_mode() == PoolMode::Session;
        let reset = match (status, session_mode) {
            (TxStatus::Idle, false) => None,
            (TxStatus::Idle, true) => Some("DISCARD ALL"),
            (_, false) => Some("ROLLBACK"),
            (_, true) => Some("ROLLBACK; DISCARD ALL"),
        };
        if let Some(sql) = reset {
            match server.simple_query(sql, timeout).await {
                Ok(r) if r.error.is_none() && r.status == TxStatus::Idle => {
                    if sql.contains("DISCARD") {
                        server.statements.clear();
                        server.params = Default::default();
                    }
                }
                _ => {
                    discard(server);
                    return;
                }
            }
        }
        drop(server);
    }

    async fn read_idle(&mut self) -> io::Result<usize> {
        loop {
            self.client.stream.readable().await?;
            // Buffers are allocated only once the client has something to say.
            self.client.rbuf.reserve(READ_CHUNK);
            match self.client.stream.try_read_buf(&mut self.client.rbuf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    async fn flush_client(&mut self) -> io::Result<()> {
        while !self.client.wbuf.is_empty() {
            self.client.stream.writable().await?;
            flush_now(&self.client.stream, &mut self.client.wbuf)?;
        }
        if self.client.rbuf.is_empty() {
            // Idle clients hold no buffers: that is what keeps 10 000 of them cheap.
            self.client.rbuf = BytesMut::new();
            self.client.wbuf = BytesMut::new();
        }
        Ok(())
    }

    fn fatal(&mut self, code: &str, msg: &str) {
        backend::error_response(&mut self.client.wbuf, &PoolerError::fatal(code, msg));
    }

    /// Answers the client's pending batch with an error, as a server would: a simple Query
    /// gets ErrorResponse + ReadyForQuery; an extended batch is skipped up to its Sync.
    fn refuse_batch(&mut self, code: &str, msg: &str, hint: Option<&str>) {
        let mut e = PoolerError::error(code, msg);
        e.hint = hint;
        backend::error_response(&mut self.client.wbuf, &e);
        if self.client.rbuf.first() == Some(&frontend::QUERY) {
            if let Ok(Some(h)) = peek_header(&self.client.rbuf, self.client.max_message_size) {
                self.client.rbuf.advance(h.frame_len);
            }
            backend::ready_for_query(&mut self.client.wbuf, TxStatus::Idle);
        } else {
            self.skip_until_sync = true;
            self.skip_refused_batch();
        }
    }

    fn skip_refused_batch(&mut self) {
        let mut consumed = 0;
        let mut synced = false;
        for (h, _) in Frames::new(&self.client.rbuf, self.client.max_message_size).map_while(Result::ok) {
            consumed += h.frame_len;
            if h.tag == frontend::SYNC {
                synced = true;
                break;
            }
        }
        self.client.rbuf.advance(consumed);
        if synced {
            self.skip_until_sync = false;
            backend::ready_for_query(&mut self.client.wbuf, TxStatus::Idle);
        }
    }
}

/// Closes a server connection instead of returning it to the pool.
fn discard(server: Server) {
    let conn = Object::take(server);
    tracing::debug!(node = %conn.label, pid = conn.key.pid, "server connection closed");
}

fn record(db: &str, stats: &crate::relay::RelayStats, started: Instant) {
    let labels = [("database", db.to_string())];
    metrics::counter!("lsnpool_transactions_total", &labels).increment(1);
    metrics::counter!("lsnpool_queries_total", &labels).increment(stats.queries.max(1));
    metrics::counter!("lsnpool_bytes_received_total", &labels).increment(stats.bytes_from_client);
    metrics::counter!("lsnpool_bytes_sent_total", &labels).increment(stats.bytes_to_client);
    metrics::histogram!("lsnpool_transaction_seconds", &labels).record(started.elapsed().as_secs_f64());
    if let Some(code) = stats.first_error {
        let class = String::from_utf8_lossy(&code[..2]).into_owned();
        metrics::counter!("lsnpool_errors_total", "class" => class).increment(1);
    }
}

#[allow(dead_code)]
fn _assert_send(s: Session) -> impl std::future::Future<Output = ()> + Send {
    s.run()
}
