//! The registry of logged-in clients: who they are (SHOW CLIENTS), what they do (idle,
//! active, waiting and for how long), their cancel keys, and KILL.

use lsnpool_pool::ServerKey;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;

/// Where a client connected from: a TCP peer, or lsnpool's own Unix-domain socket (which
/// tells nothing of the peer; `port` is the socket's, as PgBouncer shows it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAddr {
    Tcp(SocketAddr),
    Unix { port: u16 },
}

impl ClientAddr {
    /// The key failed logins are delayed by: the IP, or one shared key for every socket client
    /// (no TCP peer has the unspecified address).
    pub fn ip_key(self) -> IpAddr {
        match self {
            ClientAddr::Tcp(a) => a.ip(),
            ClientAddr::Unix { .. } => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }

    pub fn is_unix(self) -> bool {
        matches!(self, ClientAddr::Unix { .. })
    }

    /// SHOW CLIENTS' `addr` column: the IP, or `unix` as PgBouncer shows it.
    pub fn host_text(self) -> String {
        match self {
            ClientAddr::Tcp(a) => a.ip().to_string(),
            ClientAddr::Unix { .. } => "unix".to_string(),
        }
    }

    pub fn port(self) -> u16 {
        match self {
            ClientAddr::Tcp(a) => a.port(),
            ClientAddr::Unix { port } => port,
        }
    }
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientAddr::Tcp(a) => a.fmt(f),
            ClientAddr::Unix { port } => write!(f, "unix:{port}"),
        }
    }
}

/// Who a client is, for SHOW CLIENTS. Names are shared with the session, not copied: every
/// idle client pays for this.
pub struct ClientInfo {
    pub user: Arc<crate::topology::User>,
    pub database: Arc<crate::topology::Database>,
    pub addr: ClientAddr,
    pub application_name: String,
    pub connected_at: SystemTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    Idle = 0,
    Active = 1,
    Waiting = 2,
}

impl ClientState {
    pub const ALL: [ClientState; 3] = [ClientState::Idle, ClientState::Active, ClientState::Waiting];

    /// As SHOW CLIENTS and the lsnpool_clients_by_state gauge name it.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Idle => "idle",
            ClientState::Active => "active",
            ClientState::Waiting => "waiting",
        }
    }
}

/// One logged-in client: its cancel key, what it is doing, and how to stop it.
pub struct ClientSlot {
    pub pid: i32,
    secret: i32,
    pub info: ClientInfo,
    state: AtomicU8,
    /// Set by the admin console's KILL; `wake` makes an idle session notice at once.
    killed: AtomicBool,
    pub wake: Notify,
    /// The server backend serving this client now; `None` between transactions, so a late
    /// cancel can't hit another client's query.
    server: Mutex<Option<ServerKey>>,
    /// Wakes a client that waits for a server connection: its cancel ends the wait.
    pub waiting: Notify,
    /// Since when, and for which pool (its node label), the client waits for a server
    /// connection: SHOW POOLS' maxwait, PgBouncer's alerting column.
    wait: Mutex<Option<(Instant, Arc<str>)>>,
}

impl ClientSlot {
    pub fn secret(&self) -> i32 {
        self.secret
    }

    pub fn state(&self) -> ClientState {
        match self.state.load(Ordering::Relaxed) {
            1 => ClientState::Active,
            2 => ClientState::Waiting,
            _ => ClientState::Idle,
        }
    }

    pub fn set_state(&self, s: ClientState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.wake.notify_waiters();
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// The client starts waiting for a connection from the pool labelled `pool`.
    pub fn start_wait(&self, pool: Arc<str>) {
        if let Ok(mut g) = self.wait.lock() {
            *g = Some((Instant::now(), pool));
        }
        self.set_state(ClientState::Waiting);
    }

    pub fn end_wait(&self, next: ClientState) {
        self.set_state(next);
        if let Ok(mut g) = self.wait.lock() {
            *g = None;
        }
    }

    /// How long the client has waited, and for which pool, if it is waiting.
    pub fn waiting_for(&self) -> Option<(Duration, Arc<str>)> {
        let g = self.wait.lock().ok()?;
        g.as_ref().map(|(since, pool)| (since.elapsed(), pool.clone()))
    }

    pub fn set_server(&self, key: Option<ServerKey>) {
        if let Ok(mut g) = self.server.lock() {
            *g = key;
        }
    }

    pub(crate) fn server(&self) -> Option<ServerKey> {
        self.server.lock().ok().and_then(|g| g.clone())
    }
}

/// Every logged-in client, by the pid of its cancel key.
#[derive(Default)]
pub struct ClientRegistry {
    slots: Mutex<HashMap<i32, Arc<ClientSlot>>>,
    /// Session mode: clients greeted with their server's own BackendKeyData, by that pid
    /// (with its secret). A CancelRequest carrying it finds the client here.
    server_keys: Mutex<HashMap<i32, (i32, Arc<ClientSlot>)>>,
}

/// Removes the client's slot when its session ends, however it ends.
pub struct Registration {
    registry: Arc<ClientRegistry>,
    pub slot: Arc<ClientSlot>,
    server_key: Option<(i32, i32)>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut m) = self.registry.slots.lock() {
            m.remove(&self.slot.pid);
        }
        if let Some((pid, _)) = self.server_key {
            if let Ok(mut m) = self.registry.server_keys.lock() {
                if m.get(&pid).is_some_and(|(_, s)| Arc::ptr_eq(s, &self.slot)) {
                    m.remove(&pid);
                }
            }
        }
    }
}

impl Registration {
    /// Session mode: the client is greeted with its server connection's own key, and a
    /// CancelRequest carrying it must find this client. An entry for that pid is replaced:
    /// the client that had this server connection before may not have logged out yet, and
    /// one of another cluster's server with the same pid keeps its secret, so its cancel is
    /// dropped (never forwarded to the wrong server).
    pub fn use_server_key(&mut self, pid: i32, secret: i32) {
        let Ok(mut m) = self.registry.server_keys.lock() else { return };
        m.insert(pid, (secret, self.slot.clone()));
        self.server_key = Some((pid, secret));
    }

    /// The BackendKeyData the client is given: its server's in session mode, else its own.
    pub fn key(&self) -> (i32, i32) {
        self.server_key.unwrap_or((self.slot.pid, self.slot.secret))
    }
}

impl ClientRegistry {
    pub fn register(self: &Arc<Self>, info: ClientInfo) -> Registration {
        let mut m = match self.slots.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (pid, secret) = loop {
            let pid = rand::random::<i32>() & 0x7fff_ffff;
            if pid != 0 && !m.contains_key(&pid) {
                break (pid, rand::random::<i32>());
            }
        };
        let slot = Arc::new(ClientSlot {
            pid,
            secret,
            info,
            state: AtomicU8::new(ClientState::Idle as u8),
            killed: AtomicBool::new(false),
            wake: Notify::new(),
            server: Mutex::new(None),
            waiting: Notify::new(),
            wait: Mutex::new(None),
        });
        m.insert(pid, slot.clone());
        Registration { registry: self.clone(), slot, server_key: None }
    }

    /// The longest current wait for a server connection per (pool label, user).
    pub fn max_waits(&self) -> HashMap<(Arc<str>, String), Duration> {
        let mut out: HashMap<(Arc<str>, String), Duration> = HashMap::new();
        let slots: Vec<Arc<ClientSlot>> = self.slots.lock().map(|m| m.values().cloned().collect()).unwrap_or_default();
        for slot in slots {
            if let Some((waited, pool)) = slot.waiting_for() {
                let e = out.entry((pool, slot.info.user.name.clone())).or_default();
                *e = (*e).max(waited);
            }
        }
        out
    }

    /// The client a CancelRequest's key names, if the secret matches.
    pub fn find(&self, pid: i32, secret: i32) -> Option<Arc<ClientSlot>> {
        let slot = self.slots.lock().ok().and_then(|m| m.get(&pid).cloned());
        slot.filter(|s| s.secret == secret).or_else(|| {
            let m = self.server_keys.lock().ok()?;
            m.get(&pid).filter(|(s, _)| *s == secret).map(|(_, slot)| slot.clone())
        })
    }

    /// Every logged-in client, oldest first.
    pub fn all(&self) -> Vec<Arc<ClientSlot>> {
        let mut v: Vec<_> = self.slots.lock().map(|m| m.values().cloned().collect()).unwrap_or_default();
        v.sort_by_key(|s| s.info.connected_at);
        v
    }
}
