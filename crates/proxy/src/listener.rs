//! Accepting clients: one tokio task per connection, a login deadline, the client cap.

use crate::cancel::CancelRegistry;
use crate::login::{login, Accepted};
use crate::session::Session;
use crate::topology::Topology;
use bytes::BytesMut;
use lsnpool_protocol::backend::{self, PoolerError};
use lsnpool_protocol::sqlstate;
use crate::stats::Averages;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::Notify;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// Everything sessions share.
pub struct Pooler {
    topology: RwLock<Arc<Topology>>,
    pub cancels: Arc<CancelRegistry>,
    clients: AtomicUsize,
    /// Where RELOAD re-reads the configuration from.
    config_path: PathBuf,
    shutting_down: AtomicBool,
    /// Wakes the listener and idle sessions when shutdown starts.
    pub shutdown: Notify,
    /// Database names under PAUSE (`*` for all); the atomic keeps the common case lock-free.
    paused: Mutex<HashSet<String>>,
    any_paused: AtomicBool,
    resumed: Notify,
    pub started_at: std::time::SystemTime,
    /// Per database: totals at the start of the current stats period, and the averages of
    /// the last complete one.
    averages: Mutex<HashMap<String, ([u64; 11], Averages)>>,
}

/// PgBouncer's stats_period: how often SHOW STATS' avg_ columns are recomputed.
pub const STATS_PERIOD: std::time::Duration = std::time::Duration::from_secs(15);

/// One admitted client; gives its place back when dropped.
pub struct ClientGuard(Arc<Pooler>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("lsnpool_clients").decrement(1.0);
    }
}

impl Pooler {
    pub fn new(topology: Topology, config_path: PathBuf) -> Arc<Pooler> {
        Arc::new(Pooler {
            topology: RwLock::new(Arc::new(topology)),
            cancels: Arc::new(CancelRegistry::default()),
            clients: AtomicUsize::new(0),
            config_path,
            shutting_down: AtomicBool::new(false),
            shutdown: Notify::new(),
            paused: Mutex::new(HashSet::new()),
            any_paused: AtomicBool::new(false),
            resumed: Notify::new(),
            started_at: std::time::SystemTime::now(),
            averages: Mutex::new(HashMap::new()),
        })
    }

    pub fn averages(&self, db: &str) -> Averages {
        self.averages.lock().ok().and_then(|m| m.get(db).map(|(_, a)| *a)).unwrap_or_default()
    }

    /// Every second, sets the gauges of clients by state and server connections by node and
    /// state from the registries (cheaper than moving gauges on every transaction).
    pub fn spawn_gauges(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            let mut seen_nodes: HashSet<String> = HashSet::new();
            loop {
                tick.tick().await;
                let Some(pooler) = weak.upgrade() else { return };
                let mut by_state = [0u64; 3];
                for c in pooler.cancels.clients() {
                    by_state[c.state() as usize] += 1;
                }
                for (state, n) in ["idle", "active", "waiting"].iter().zip(by_state) {
                    metrics::gauge!("lsnpool_clients_by_state", "state" => *state).set(n as f64);
                }
                let mut servers: HashMap<(String, bool), u64> = HashMap::new();
                for s in lsnpool_pool::registry::servers() {
                    *servers.entry((s.label.to_string(), s.is_active())).or_default() += 1;
                    seen_nodes.insert(s.label.to_string());
                }
                let mut maxwait: HashMap<String, f64> = HashMap::new();
                for ((node, _user), waited) in pooler.cancels.max_waits() {
                    let e = maxwait.entry(node.to_string()).or_default();
                    *e = e.max(waited.as_secs_f64());
                }
                // A node clients queue for may have no connection at all (it is down).
                seen_nodes.extend(maxwait.keys().cloned());
                for node in &seen_nodes {
                    // PgBouncer's maxwait: how long the oldest waiting client has waited.
                    let w = maxwait.get(node.as_str()).copied().unwrap_or(0.0);
                    metrics::gauge!("lsnpool_pool_maxwait_seconds", "node" => node.clone()).set(w);
                    for active in [false, true] {
                        let n = servers.get(&(node.clone(), active)).copied().unwrap_or(0);
                        let state = if active { "active" } else { "idle" };
                        metrics::gauge!("lsnpool_server_connections", "node" => node.clone(), "state" => state).set(n as f64);
                    }
                }
            }
        });
    }

    /// Pool upkeep every second: close server connections idle past server_idle_timeout or
    /// older than server_lifetime (those nobody checks out would otherwise live forever), and
    /// open connections up to min_pool_size, so the first clients after a quiet spell do not
    /// pay for logins.
    pub fn spawn_pool_maintenance(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(pooler) = weak.upgrade() else { return };
                if pooler.is_shutting_down() {
                    return;
                }
                let topology = pooler.topology();
                let p = &topology.config.pooler;
                let (idle, lifetime, min) = (p.server_idle_timeout, p.server_lifetime, p.min_pool_size);
                for (_, pools) in topology.all_pools() {
                    for pool in std::iter::once(&pools.primary).chain(pools.replicas.iter()) {
                        pool.retain(|_, m| m.last_used() < idle && m.age() < lifetime);
                        let status = pool.status();
                        let missing = min.min(status.max_size).saturating_sub(status.size);
                        if missing > 0 {
                            let pool = pool.clone();
                            // Idle connections are handed out first: borrow those too so the
                            // rest must be opened.
                            let borrow = missing + status.available;
                            tokio::spawn(async move {
                                let mut conns = Vec::with_capacity(borrow);
                                for _ in 0..borrow {
                                    match pool.get().await {
                                        Ok(c) => conns.push(c),
                                        Err(_) => break, // logged by the manager; retried next tick
                                    }
                                }
                            });
                        }
                    }
                }
            }
        });
    }

    /// Recomputes the averages every STATS_PERIOD, for as long as the pooler lives.
    pub fn spawn_stats_period(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(STATS_PERIOD);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(pooler) = weak.upgrade() else { return };
                let topology = pooler.topology();
                let lock = pooler.averages.lock();
                if let Ok(mut m) = lock {
                    for (name, db) in &topology.databases {
                        let now = db.stats.totals();
                        let entry = m.entry(name.clone()).or_insert((now, Averages::default()));
                        entry.1 = Averages::between(&entry.0, &now, STATS_PERIOD);
                        entry.0 = now;
                    }
                }
            }
        });
    }

    /// Re-reads the config file and swaps in a topology built from it. Pools and monitors
    /// whose settings did not change are kept (resized if needed), so no client is dropped;
    /// sessions pick the new topology up at their next login.
    pub fn reload(&self) -> Result<(), String> {
        let config = lsnpool_config::load(&self.config_path).map_err(|e| e.to_string())?;
        let old = self.topology();
        let new = Topology::build_reusing(Arc::new(config), Some(&old)).map_err(|e| e.to_string())?;
        match self.topology.write() {
            Ok(mut t) => *t = Arc::new(new),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(new),
        }
        tracing::info!(path = %self.config_path.display(), "configuration reloaded");
        Ok(())
    }

    /// Stops accepting clients; idle sessions close now, busy ones after their transaction.
    pub fn begin_shutdown(&self) {
        if !self.shutting_down.swap(true, Ordering::AcqRel) {
            tracing::info!(clients = self.client_count(), "shutdown: no new clients; waiting for transactions to finish");
        }
        self.shutdown.notify_waiters();
        for c in self.cancels.clients() {
            c.wake.notify_waiters();
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    pub fn pause(&self, db: Option<&str>) {
        if let Ok(mut p) = self.paused.lock() {
            p.insert(db.unwrap_or("*").to_string());
            self.any_paused.store(true, Ordering::Release);
        }
    }

    pub fn resume(&self, db: Option<&str>) {
        if let Ok(mut p) = self.paused.lock() {
            match db {
                Some(d) => {
                    p.remove(d);
                }
                None => p.clear(),
            }
            self.any_paused.store(!p.is_empty(), Ordering::Release);
        }
        self.resumed.notify_waiters();
    }

    pub fn is_paused(&self, db: &str) -> bool {
        if !self.any_paused.load(Ordering::Acquire) {
            return false;
        }
        self.paused.lock().map(|p| p.contains("*") || p.contains(db)).unwrap_or(false)
    }

    /// Waits while `db` is paused (new transactions queue, as in PgBouncer).
    pub async fn wait_unpaused(&self, db: &str) {
        while self.is_paused(db) {
            let resumed = self.resumed.notified();
            if !self.is_paused(db) {
                break;
            }
            resumed.await;
        }
    }

    /// The current topology; a session keeps the one it logged in with.
    pub fn topology(&self) -> Arc<Topology> {
        match self.topology.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn client_count(&self) -> usize {
        self.clients.load(Ordering::Acquire)
    }

    pub(crate) fn admit_client(self: &Arc<Self>, max: usize) -> Option<ClientGuard> {
        let before = self.clients.fetch_add(1, Ordering::AcqRel);
        if before >= max {
            self.clients.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        metrics::gauge!("lsnpool_clients").increment(1.0);
        Some(ClientGuard(self.clone()))
    }
}

/// Accepts clients until shutdown begins.
pub async fn serve(pooler: Arc<Pooler>, listener: TcpListener) -> std::io::Result<()> {
    loop {
        let accepted = {
            let shutdown = pooler.shutdown.notified();
            if pooler.is_shutting_down() {
                return Ok(());
            }
            tokio::select! {
                a = listener.accept() => a,
                _ = shutdown => return Ok(()),
            }
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: log, breathe, go on; one bad accept must not stop us.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let pooler = pooler.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            handle(pooler, stream, peer).await;
        });
    }
}

async fn handle(pooler: Arc<Pooler>, mut stream: TcpStream, peer: std::net::SocketAddr) {
    let login_timeout = pooler.topology().config.pooler.client_login_timeout;
    let mut buf = BytesMut::new();
    // Boxed: the login's state (SCRAM, buffers) must not stay in every idle client's task.
    let accepted = tokio::time::timeout(login_timeout, Box::pin(login(&mut stream, &mut buf, &pooler, peer))).await;
    match accepted {
        Err(_) => {
            tracing::info!(client = %peer, "login timed out (pooler.client_login_timeout)");
            let mut out = BytesMut::new();
            let e = PoolerError::fatal(sqlstate::PROTOCOL_VIOLATION, "login timed out (pooler.client_login_timeout)");
            backend::error_response(&mut out, &e);
            let _ = stream.write_all(&out).await;
        }
        Ok(Err(e)) => tracing::debug!(client = %peer, error = %e, "login aborted"),
        Ok(Ok(Accepted::Done)) => {}
        Ok(Ok(Accepted::Admin { user, access })) => {
            tracing::info!(client = %peer, user, "admin console connected");
            Box::pin(crate::admin::serve(pooler, stream, buf, access)).await;
            tracing::info!(client = %peer, user, "admin console disconnected");
        }
        Ok(Ok(Accepted::Session(li))) => {
            tracing::info!(client = %peer, user = %li.user.name, database = %li.db.name, "client connected");
            let Some(pools) = li.topology.pools(&li.db.cluster, &li.user.name) else { return };
            let Some(cluster) = li.topology.cluster_state(&li.db.cluster) else { return };
            // Bytes the client pipelined behind its login belong to its first transaction.
            let leftover = if buf.is_empty() { BytesMut::new() } else { buf };
            // A task of its own: the login's task (this function's state, the login buffer)
            // ends here, and an idle client costs only the session's task.
            tokio::spawn(Session::new(pooler, stream, *li, pools, cluster, peer, leftover).run());
        }
    }
}
