//! What every session, the admin console and the janitor share: the current topology, the
//! registry of logged-in clients and their count, PAUSE/RESUME, RELOAD, shutdown, and the
//! stats period's averages.

use crate::clients::ClientRegistry;
use crate::db_flags::DbFlags;
use crate::stats::{Averages, StatsPeriods};
use crate::topology::Topology;
use std::path::PathBuf;
use crate::token_store::TokenStore;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::Notify;

/// Everything sessions share.
pub struct Pooler {
    topology: RwLock<Arc<Topology>>,
    pub clients: Arc<ClientRegistry>,
    /// Clients holding a place under max_client_conn (a `ClientGuard` each).
    admitted: AtomicUsize,
    /// Where RELOAD re-reads the configuration from.
    config_path: PathBuf,
    shutting_down: AtomicBool,
    /// Wakes the listener and idle sessions when shutdown starts.
    pub shutdown: Notify,
    /// Database names under PAUSE (`*` for all).
    paused: DbFlags,
    resumed: Notify,
    pub started_at: std::time::SystemTime,
    pub(crate) stats_periods: StatsPeriods,
    /// `DISABLE ROUTING`: here, not in the topology, so it survives RELOAD.
    pub switch: DbFlags,
    /// The current topology's rule set generation: a session whose rules are older fetches
    /// the new ones (one atomic load per transaction instead of the topology's lock).
    rules_generation: AtomicU64,
    /// Decoy verifiers for unknown users and the per-address failed-login delay.
    pub(crate) auth_guard: crate::auth_guard::AuthGuard,
    /// Session keys' commits and, when shared, the newest commit (`routing.token_store`;
    /// chosen at start, not changed by RELOAD).
    pub(crate) token_store: Arc<TokenStore>,
}

/// One admitted client; gives its place back when dropped.
pub struct ClientGuard(Arc<Pooler>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("lsnpool_clients").decrement(1.0);
    }
}

impl Pooler {
    pub fn new(topology: Topology, config_path: PathBuf) -> Arc<Pooler> {
        let rules_generation = AtomicU64::new(topology.rules.generation);
        let routing = &topology.config.routing;
        let token_store = TokenStore::from_config(routing).unwrap_or_else(|e| {
            // Validation accepted the URL's shape; a URL redis cannot use is reported and the
            // instance keeps its guarantees alone.
            tracing::error!(error = %e, "token store unusable; session keys stay in this process");
            TokenStore::embedded(routing.session_key_ttl)
        });
        tracing::info!(store = %token_store.describe(), "token store");
        Arc::new(Pooler {
            token_store: Arc::new(token_store),
            topology: RwLock::new(Arc::new(topology)),
            clients: Arc::new(ClientRegistry::default()),
            admitted: AtomicUsize::new(0),
            config_path,
            shutting_down: AtomicBool::new(false),
            shutdown: Notify::new(),
            paused: DbFlags::default(),
            resumed: Notify::new(),
            started_at: std::time::SystemTime::now(),
            stats_periods: StatsPeriods::default(),
            switch: DbFlags::default(),
            rules_generation,
            auth_guard: Default::default(),
        })
    }

    /// `db`'s averages over the last complete stats period.
    pub fn averages(&self, db: &str) -> Averages {
        self.stats_periods.averages(db)
    }

    /// Re-reads the config file and swaps in a topology built from it. Pools and monitors
    /// whose settings did not change are kept (resized if needed), so no client is dropped;
    /// sessions pick the new topology up at their next login.
    pub fn reload(&self) -> Result<(), String> {
        let config = lsnpool_config::load(&self.config_path).map_err(|e| e.to_string())?;
        let old = self.topology();
        let new = Topology::build_reusing(Arc::new(config), Some(&old)).map_err(|e| e.to_string())?;
        let generation = new.rules.generation;
        match self.topology.write() {
            Ok(mut t) => *t = Arc::new(new),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(new),
        }
        // After the swap: a session that sees the new generation finds the new rules.
        self.rules_generation.store(generation, Ordering::Release);
        tracing::info!(path = %self.config_path.display(), "configuration reloaded");
        Ok(())
    }

    /// Stops accepting clients; idle sessions close now, busy ones after their transaction.
    pub fn begin_shutdown(&self) {
        if !self.shutting_down.swap(true, Ordering::AcqRel) {
            tracing::info!(clients = self.client_count(), "shutdown: no new clients; waiting for transactions to finish");
        }
        self.shutdown.notify_waiters();
        for c in self.clients.all() {
            c.wake.notify_waiters();
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    pub fn pause(&self, db: Option<&str>) {
        self.paused.set(db);
    }

    pub fn resume(&self, db: Option<&str>) {
        self.paused.clear(db);
        self.resumed.notify_waiters();
    }

    pub fn is_paused(&self, db: &str) -> bool {
        self.paused.contains_any(&[db])
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

    pub fn rules_generation(&self) -> u64 {
        self.rules_generation.load(Ordering::Acquire)
    }

    pub fn client_count(&self) -> usize {
        self.admitted.load(Ordering::Acquire)
    }

    pub(crate) fn admit_client(self: &Arc<Self>, max: usize) -> Option<ClientGuard> {
        let before = self.admitted.fetch_add(1, Ordering::AcqRel);
        if before >= max {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        metrics::gauge!("lsnpool_clients").increment(1.0);
        Some(ClientGuard(self.clone()))
    }
}

