//! A server connection lent to one client.
//!
//! A `Lease` is borrowed from a node's pool, brought in line with the client's session
//! parameters, and given back clean with [`Lease::release`] or [`Lease::end`]. Dropping a
//! lease any other way closes its connection: a server whose state nobody vouched for never
//! goes back to the pool, whatever path (an error, an early return, a panic) got us here.
//! PgDog's `backend/pool/guard.rs` is the model.

use crate::clients::{ClientSlot, ClientState};
use crate::pooler::Pooler;
use crate::stats::DbStats;
use crate::topology::Database;
use bytes::BytesMut;
use deadpool::managed::{Object, PoolError, TimeoutType};
use lsnpool_pool::{NodePool, ParamSync, ServerConn, ServerError, ServerManager};
use lsnpool_protocol::backend::TxStatus;
use lsnpool_protocol::{frontend, sqlstate};
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Pooled = Object<ServerManager>;

pub struct Lease {
    /// `None` only once given back or closed.
    server: Option<Pooled>,
    /// A primary read's place in its cluster's read budget, held as long as the connection.
    read_permit: Option<crate::budget::ReadPermit>,
}

/// Why a batch got no server (or could not be prepared on it), as PostgreSQL would say it.
#[derive(Debug)]
pub struct Refusal {
    pub code: String,
    pub message: String,
    pub hint: Option<&'static str>,
    /// The server connection failed before any of the client's bytes were sent to it: the
    /// caller may take another.
    pub server_died: bool,
}

impl Refusal {
    pub(crate) fn new(code: &str, message: String, hint: Option<&'static str>) -> Refusal {
        Refusal { code: code.to_string(), message, hint, server_died: false }
    }

    pub fn cancelled() -> Refusal {
        Refusal::new(sqlstate::QUERY_CANCELED, "canceling statement due to user request".into(), None)
    }

    fn from_pool(e: &PoolError<ServerError>, pool: &NodePool) -> Refusal {
        let label = &pool.manager().target().label;
        let settings = pool.manager().settings();
        match e {
            PoolError::Timeout(TimeoutType::Wait) => Refusal::new(
                sqlstate::QUERY_CANCELED,
                format!("query_wait_timeout: no server connection to {label} became free within {:?}", settings.wait_timeout),
                Some("raise pooler.query_wait_timeout or the pool size, or shorten transactions"),
            ),
            PoolError::Timeout(_) => Refusal::new(
                sqlstate::CONNECTION_FAILURE,
                format!("could not connect to {label} within {:?}", settings.connect_timeout),
                Some("check that the server is up; pooler.server_connect_timeout governs the wait"),
            ),
            PoolError::Backend(se) => Refusal::new(se.sqlstate(), format!("could not connect to {label}: {se}"), None),
            _ => Refusal::new(sqlstate::ADMIN_SHUTDOWN, format!("pool {label} is closed"), None),
        }
    }
}

/// Who borrows, for the waits and states the admin console and metrics show.
pub struct Borrower<'a> {
    pub slot: &'a Arc<ClientSlot>,
    pub db: &'a Database,
}

impl Lease {
    /// Waits for a connection of `pool` (first, while PAUSE holds the database named in
    /// `pause`, for RESUME), for at most the pool's `query_wait_timeout`; a cancel request ends
    /// the wait. `pause: None` is for the pooler's own work, which PAUSE does not hold.
    pub async fn checkout(pool: &NodePool, pause: Option<(&Pooler, &str)>, who: &Borrower<'_>) -> Result<Lease, Refusal> {
        // An idle connection, taken at once: no wait to show, no timer, no cancel to watch.
        // This is the common case, and every transaction pays for what it does.
        if !pause.is_some_and(|(pooler, db)| pooler.is_paused(db)) {
            if let Some(server) = Self::idle_now(pool) {
                record_wait(who.db, Duration::ZERO);
                return Ok(Lease::lent(server, who));
            }
        }
        Box::pin(Self::wait_for(pool, pause, who)).await
    }

    /// An idle connection if the pool has one, taken without waiting. deadpool has no
    /// synchronous get; with an idle connection and no wait allowed its `timeout_get`
    /// completes in its first poll, so it is polled once here, on this stack frame: awaited,
    /// its ~1.7 KB future would be part of every transaction's future and copied with it.
    /// Anything else (the idle one proved dead and a new one must be opened) is left to the
    /// slow path.
    fn idle_now(pool: &NodePool) -> Option<Pooled> {
        if pool.status().available == 0 {
            return None;
        }
        let mut now = pool.manager().timeouts();
        now.wait = Some(Duration::ZERO);
        let get = std::pin::pin!(pool.timeout_get(&now));
        match get.poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
            std::task::Poll::Ready(Ok(server)) => Some(server),
            _ => None,
        }
    }

    /// The slow way: queued behind other clients, a PAUSE, or a connection being opened.
    async fn wait_for(pool: &NodePool, pause: Option<(&Pooler, &str)>, who: &Borrower<'_>) -> Result<Lease, Refusal> {
        let started = Instant::now();
        let label = pool.manager().target().label.clone();
        who.slot.start_wait(label.clone());
        let got = {
            let cancelled = who.slot.waiting.notified();
            let get = async {
                if let Some((pooler, db)) = pause {
                    pooler.wait_unpaused(db).await;
                }
                pool.timeout_get(&pool.manager().timeouts()).await
            };
            tokio::select! {
                r = get => Some(r),
                _ = cancelled => None,
            }
        };
        who.slot.end_wait(ClientState::Idle);
        record_wait(who.db, started.elapsed());
        match got {
            None => Err(Refusal::cancelled()),
            Some(Ok(server)) => Ok(Lease::lent(server, who)),
            Some(Err(e)) => {
                tracing::warn!(node = %label, error = %e, "no server connection");
                Err(Refusal::from_pool(&e, pool))
            }
        }
    }

    /// An idle connection right now, or `None`: for a probe that must not queue.
    pub async fn try_checkout(pool: &NodePool) -> Option<Pooled> {
        if pool.status().available == 0 {
            return None;
        }
        let mut timeouts = pool.manager().timeouts();
        timeouts.wait = Some(Duration::ZERO);
        pool.timeout_get(&timeouts).await.ok()
    }

    /// Lends a connection already borrowed (by a probe) to the client.
    pub fn lent(server: Pooled, who: &Borrower<'_>) -> Lease {
        DbStats::add(&who.db.stats.server_assignment_count, 1);
        server.set_active(true);
        who.slot.set_state(ClientState::Active);
        Lease { server: Some(server), read_permit: None }
    }

    /// Keeps a read budget permit until the connection is given back or closed.
    pub fn holding(mut self, permit: Option<crate::budget::ReadPermit>) -> Lease {
        self.read_permit = permit;
        self
    }

    /// Brings the server's session parameters in line with the client's. On failure the lease
    /// is given back or closed, as the server's state allows.
    pub async fn sync_params(self, params: &ParamSync, timeout: Duration) -> Result<Lease, Refusal> {
        match self.params.plan_towards(params) {
            None => Ok(self),
            // Boxed: most checkouts find the parameters equal, and the query's state would
            // otherwise be part of every transaction's future.
            Some(plan) => Box::pin(self.apply_params(plan, params, timeout)).await,
        }
    }

    async fn apply_params(mut self, plan: lsnpool_pool::ParamSyncPlan, params: &ParamSync, timeout: Duration) -> Result<Lease, Refusal> {
        match self.simple_query(&plan.sql, timeout).await {
            Ok(reply) => match reply.error {
                None if reply.status == TxStatus::Idle => {
                    self.params = params.clone();
                    Ok(self)
                }
                None => Err(Refusal::new(
                    sqlstate::CONNECTION_FAILURE,
                    "server left a transaction open while applying session parameters".into(),
                    None,
                )),
                Some((code, message)) => {
                    // The server refused a value; it is idle and clean.
                    self.give_back();
                    let msg = format!("could not apply the session's startup parameters: {message}");
                    Err(Refusal::new(&code, msg, Some("fix the parameters in the connection string or options")))
                }
            },
            Err(e) => {
                let mut r = Refusal::new(e.sqlstate(), format!("server failed while applying session parameters: {e}"), None);
                r.server_died = true;
                Err(r)
            }
        }
    }

    /// After a transaction that may have changed the session (a SET, RESET, set_config...):
    /// what the server session now holds beyond its startup state. It becomes this
    /// connection's record, so the next borrower's `sync_params` undoes it; the caller makes it
    /// the client's too. `None` (the connection's state is unknown): close it.
    pub async fn read_session(&mut self, login_user: &str, timeout: Duration) -> Option<ParamSync> {
        let reply = self.simple_query(&ParamSync::session_query(login_user), timeout).await.ok()?;
        if reply.error.is_some() || reply.status != TxStatus::Idle {
            return None;
        }
        let session = ParamSync::from_session_text(reply.value.as_deref().unwrap_or_default())?;
        self.params = session.clone();
        Some(session)
    }

    /// Whether the server session holds what outlives a transaction and cannot follow the
    /// client to another connection: channels it listens on, WITH HOLD cursors, SQL-level
    /// prepared statements, session advisory locks, temporary tables. `None`: the connection's
    /// state is unknown (close it).
    pub async fn holds_session_objects(&mut self, timeout: Duration) -> Option<bool> {
        const SQL: &str = "SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.pg_listening_channels()) \
            + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_cursors WHERE is_holdable) \
            + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_prepared_statements WHERE from_sql) \
            + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()) \
            + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class WHERE relpersistence = 't' AND relnamespace = pg_catalog.pg_my_temp_schema())";
        let reply = self.simple_query(SQL, timeout).await.ok()?;
        if reply.error.is_some() || reply.status != TxStatus::Idle {
            return None;
        }
        Some(reply.value.as_deref().is_some_and(|v| v != b"0"))
    }

    /// Gives a clean, idle connection back to its pool, first closing the statements over
    /// `max_prepared_statements` (only between transactions, so none a client uses is lost).
    pub async fn release(mut self, slot: &ClientSlot, max_prepared: usize, timeout: Duration) {
        slot.set_state(ClientState::Idle);
        self.notifications.clear();
        let evicted = self.statements.evict_over(max_prepared);
        if !evicted.is_empty() {
            let mut req = BytesMut::new();
            for id in &evicted {
                let mut name = BytesMut::new();
                lsnpool_pool::statement_name(&mut name, *id);
                frontend::target(&mut req, frontend::CLOSE, b'S', &name);
            }
            frontend::sync(&mut req);
            if self.run_internal(&req, 1, timeout).await.is_err() {
                return; // dropped: closed
            }
        }
        self.give_back();
    }

    /// The client is gone or its session ends: roll back what it left open, reset a session
    /// mode connection, and give the connection back; close it if any of that is not
    /// possible. `server_idle` says the server is at a message boundary with nothing
    /// outstanding.
    pub async fn end(mut self, server_idle: bool, status: TxStatus, session_mode: bool, timeout: Duration) {
        if !server_idle {
            // A statement may still be running for nobody, holding its locks until it ends:
            // cancel it, then close the connection (the backend rolls back when it reads EOF).
            crate::cancel::cancel_backend(self.key.clone(), timeout).await;
            return;
        }
        let reset = match (status, session_mode) {
            (TxStatus::Idle, false) => None,
            (TxStatus::Idle, true) => Some("DISCARD ALL"),
            (_, false) => Some("ROLLBACK"),
            (_, true) => Some("ROLLBACK; DISCARD ALL"),
        };
        if let Some(sql) = reset {
            match self.simple_query(sql, timeout).await {
                Ok(r) if r.error.is_none() && r.status == TxStatus::Idle => {
                    if sql.contains("DISCARD") {
                        self.statements.clear();
                        self.params = self.startup_params();
                    }
                }
                _ => return,
            }
        }
        self.give_back();
    }

    /// Session mode: makes this the connection a client with `startup` parameters would
    /// have opened itself, reopening it with them unless it was opened with the very same
    /// (then `RESET` returns to the client's startup values). `Err`: the connection is gone.
    pub async fn open_for_session(&mut self, pool: &NodePool, startup: &ParamSync) -> Result<(), lsnpool_pool::ServerError> {
        if self.startup.as_ref() == Some(startup) {
            return Ok(());
        }
        let Some(server) = self.server.as_mut() else { return Ok(()) };
        server.set_active(false);
        let r = pool.manager().reopen(server, startup).await;
        server.set_active(true);
        r
    }

    /// Closes the connection instead of giving it back.
    pub fn discard(self) {}

    fn give_back(&mut self) {
        if let Some(server) = self.server.take() {
            server.set_active(false);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.set_active(false);
            let conn = Object::take(server);
            tracing::debug!(node = %conn.label, pid = conn.key.pid, "server connection closed");
        }
    }
}

impl Deref for Lease {
    type Target = ServerConn;
    fn deref(&self) -> &ServerConn {
        // Invariant: `server` is `Some` until the lease is consumed.
        self.server.as_deref().map(|conn| &**conn).unwrap_or_else(|| unreachable!("lease used after it was given back"))
    }
}

impl DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut ServerConn {
        self.server.as_deref_mut().map(|conn| &mut **conn).unwrap_or_else(|| unreachable!("lease used after it was given back"))
    }
}

/// A wait for a server connection, counted like PgBouncer's `wait_time`.
pub fn record_wait(db: &Database, waited: Duration) {
    db.stats.metrics.server_wait_seconds.record(waited.as_secs_f64());
    DbStats::add(&db.stats.wait_time_us, waited.as_micros() as u64);
}
