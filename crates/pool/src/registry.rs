//! Every open server connection, for SHOW SERVERS. Touched when a connection opens, closes,
//! or is lent and returned: never per message.

use crate::ServerAddr;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

pub struct ServerInfo {
    pub id: u64,
    pub label: Arc<str>,
    pub user: String,
    pub database: String,
    pub addr: ServerAddr,
    pub local_addr: Option<SocketAddr>,
    pub pid: i32,
    pub connected_at: SystemTime,
    active: AtomicBool,
    /// When it was last lent out (µs since the epoch), for request_time.
    lent_at_us: AtomicU64,
}

impl ServerInfo {
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    pub fn lent_at_us(&self) -> u64 {
        self.lent_at_us.load(Ordering::Relaxed)
    }

    pub fn set_active(&self, active: bool) {
        self.active.store(active, Ordering::Relaxed);
        if active {
            let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
            self.lent_at_us.store(now, Ordering::Relaxed);
        }
    }
}

fn registry() -> &'static Mutex<HashMap<u64, Arc<ServerInfo>>> {
    static R: OnceLock<Mutex<HashMap<u64, Arc<ServerInfo>>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Keeps a connection listed for as long as it lives.
pub struct Registered(pub Arc<ServerInfo>);

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut m) = registry().lock() {
            m.remove(&self.0.id);
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn register(
    label: Arc<str>,
    user: &str,
    database: &str,
    addr: ServerAddr,
    local_addr: Option<SocketAddr>,
    pid: i32,
) -> Registered {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let info = Arc::new(ServerInfo {
        id: NEXT.fetch_add(1, Ordering::Relaxed),
        label,
        user: user.to_string(),
        database: database.to_string(),
        addr,
        local_addr,
        pid,
        connected_at: SystemTime::now(),
        active: AtomicBool::new(false),
        lent_at_us: AtomicU64::new(0),
    });
    if let Ok(mut m) = registry().lock() {
        m.insert(info.id, info.clone());
    }
    Registered(info)
}

/// A snapshot of all open server connections, oldest first.
pub fn servers() -> Vec<Arc<ServerInfo>> {
    let mut v: Vec<_> = registry().lock().map(|m| m.values().cloned().collect()).unwrap_or_default();
    v.sort_by_key(|s| s.id);
    v
}
