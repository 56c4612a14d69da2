//! deadpool `Manager` for server connections of one (cluster, user, node).

use crate::server::{Login, ServerConn, ServerError};
use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub type NodePool = managed::Pool<ServerManager>;

/// Where and as whom a pool's connections log in.
#[derive(Clone, Debug)]
pub struct ServerTarget {
    pub addr: String,
    pub database: String,
    pub user: String,
    pub password: Option<String>,
    /// For logs, metrics and the admin console, e.g. `appdb/primary`.
    pub label: Arc<str>,
    /// TLS to the server (`pooler.server_tls_mode`), if any.
    pub tls: Option<ServerTls>,
}

/// How a pool's connections use TLS.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// No plain connection when the server declines (require, verify-ca, verify-full).
    pub required: bool,
    /// The `server_tls_mode` this came from: RELOAD rebuilds pools whose mode changed.
    pub mode: &'static str,
    pub config: Arc<lsnpool_net::rustls::ClientConfig>,
}

#[derive(Clone, Copy, Debug)]
pub struct PoolSettings {
    pub max_size: usize,
    pub connect_timeout: Duration,
    pub lifetime: Duration,
    pub idle_timeout: Duration,
    pub wait_timeout: Duration,
}

pub struct ServerManager {
    target: ServerTarget,
    /// Changed in place by RELOAD: the pool (and its size limit) must survive a new timeout.
    settings: Mutex<PoolSettings>,
    /// ParameterStatus values of the newest login, shown to clients when they log in.
    reported: Mutex<Option<Arc<Vec<(String, String)>>>>,
}

impl ServerManager {
    pub fn new(target: ServerTarget, settings: PoolSettings) -> Self {
        ServerManager { target, settings: Mutex::new(settings), reported: Mutex::new(None) }
    }

    pub fn build_pool(self) -> Result<NodePool, managed::BuildError> {
        let s = self.settings();
        managed::Pool::builder(self)
            .max_size(s.max_size)
            .wait_timeout(Some(s.wait_timeout))
            .create_timeout(Some(s.connect_timeout))
            .runtime(deadpool::Runtime::Tokio1)
            // The connection used last is lent first (PgBouncer's default too): a client that
            // runs one transaction after another keeps meeting the same warm backend, and the
            // connections a quiet pool does not need age out under server_idle_timeout.
            // deadpool's default (FIFO) walked every client round all the pool's backends.
            .queue_mode(managed::QueueMode::Lifo)
            .build()
    }

    pub fn target(&self) -> &ServerTarget {
        &self.target
    }

    pub fn settings(&self) -> PoolSettings {
        match self.settings.lock() {
            Ok(s) => *s,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// RELOAD: new timeouts apply to the next checkout, connect and recycle.
    pub fn set_settings(&self, settings: PoolSettings) {
        if let Ok(mut s) = self.settings.lock() {
            *s = settings;
        }
    }

    /// The wait/connect limits of a checkout under the current settings.
    pub fn timeouts(&self) -> managed::Timeouts {
        let s = self.settings();
        managed::Timeouts { wait: Some(s.wait_timeout), create: Some(s.connect_timeout), recycle: None }
    }

    /// Parameters the server reported at its last login, if a login has happened.
    pub fn reported_params(&self) -> Option<Arc<Vec<(String, String)>>> {
        self.reported.lock().ok().and_then(|g| g.clone())
    }
}

impl ServerManager {
    /// Replaces `conn` (a pooled connection, keeping its place in the pool) with a new login
    /// whose startup packet carries `startup`: a session-mode client's startup parameters
    /// become the server session's defaults, so `RESET x` returns to the client's value, as
    /// on a direct connection. The old connection is closed.
    pub async fn reopen(&self, conn: &mut ServerConn, startup: &crate::ParamSync) -> Result<(), ServerError> {
        let t = &self.target;
        let login = self.login(Some(startup));
        let timeout = self.settings().connect_timeout;
        let r = tokio::time::timeout(timeout, ServerConn::connect(&login)).await;
        let (new, _) = match r {
            Ok(r) => r?,
            Err(_) => return Err(ServerError::Timeout { addr: t.addr.clone(), timeout }),
        };
        metrics::counter!("lsnpool_server_connections_opened_total", "node" => t.label.to_string()).increment(1);
        tracing::debug!(node = %t.label, old = conn.key.pid, pid = new.key.pid, "server connection reopened with a session's startup parameters");
        *conn = new;
        Ok(())
    }
}

impl managed::Manager for ServerManager {
    /// Boxed: the pooled object is moved on every checkout (into the lease, back to the
    /// pool); a pointer moves cheaper than the ~400-byte connection.
    type Type = Box<ServerConn>;
    type Error = ServerError;

    async fn create(&self) -> Result<Box<ServerConn>, ServerError> {
        // Boxed: inline, the login's state (TCP, TLS, SCRAM: ~6 KB) would sit inside every
        // checkout's future, and every transaction would copy it around, though a connection
        // is opened rarely.
        Box::pin(self.open()).await.map(Box::new)
    }

    async fn recycle(&self, conn: &mut Box<ServerConn>, m: &Metrics) -> RecycleResult<ServerError> {
        self.check_idle(conn, m)
    }
}

impl ServerManager {
    /// How this pool's connections log in; `startup` is a session-mode client's parameters.
    fn login<'a>(&'a self, startup: Option<&'a crate::ParamSync>) -> Login<'a> {
        let t = &self.target;
        Login {
            addr: &t.addr,
            user: &t.user,
            password: t.password.as_deref(),
            database: &t.database,
            label: t.label.clone(),
            tls: t.tls.as_ref(),
            startup,
        }
    }

    async fn open(&self) -> Result<ServerConn, ServerError> {
        let t = &self.target;
        let login = self.login(None);
        let (conn, reported) = ServerConn::connect(&login).await.inspect_err(|e| {
            tracing::warn!(node = %t.label, error = %e, "server connection failed");
            metrics::counter!("lsnpool_server_connect_errors_total", "node" => t.label.to_string()).increment(1);
        })?;
        if let Ok(mut g) = self.reported.lock() {
            *g = Some(Arc::new(reported));
        }
        metrics::counter!("lsnpool_server_connections_opened_total", "node" => t.label.to_string()).increment(1);
        tracing::debug!(node = %t.label, pid = conn.key.pid, "server connection opened");
        Ok(conn)
    }

    /// Whether an idle connection may be lent. Synchronous, so a checkout needs no recycle
    /// timeout (and no timer) for it.
    fn check_idle(&self, conn: &mut ServerConn, m: &Metrics) -> RecycleResult<ServerError> {
        if conn.broken {
            return Err(RecycleError::message("connection was left unusable"));
        }
        let settings = self.settings();
        // One clock read for both ages (Metrics::age and last_used read the clock each).
        let now = std::time::Instant::now();
        if now.saturating_duration_since(m.created) > settings.lifetime {
            return Err(RecycleError::message("server_lifetime reached"));
        }
        if now.saturating_duration_since(m.recycled.unwrap_or(m.created)) > settings.idle_timeout {
            return Err(RecycleError::message("server_idle_timeout reached"));
        }
        // Every checkout looks, because it is free: the check reads tokio's readiness flags
        // and makes a syscall only when the event loop saw the socket turn readable, which an
        // idle server connection does only to say FATAL or EOF. A server that dies after this
        // look is caught by the relay's replay rule (docs/ARCHITECTURE.md, "Dead servers").
        if !conn.buf.is_empty() || !conn.looks_alive() {
            tracing::debug!(node = %conn.label, pid = conn.key.pid, "idle server connection closed or spoke; not lent");
            return Err(RecycleError::message("server closed the connection or sent data while idle"));
        }
        Ok(())
    }
}
