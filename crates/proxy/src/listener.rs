//! Accepting clients: one tokio task per connection, a login deadline, the client cap.

use crate::cancel::CancelRegistry;
use crate::login::{login, Accepted};
use crate::session::Session;
use crate::topology::Topology;
use bytes::BytesMut;
use lsnpool_protocol::backend::{self, PoolerError};
use lsnpool_protocol::sqlstate;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// Everything sessions share.
pub struct Pooler {
    topology: RwLock<Arc<Topology>>,
    pub cancels: Arc<CancelRegistry>,
    clients: AtomicUsize,
}

/// One admitted client; gives its place back when dropped.
pub struct ClientGuard(Arc<Pooler>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("lsnpool_clients").decrement(1.0);
    }
}

impl Pooler {
    pub fn new(topology: Topology) -> Arc<Pooler> {
        Arc::new(Pooler {
            topology: RwLock::new(Arc::new(topology)),
            cancels: Arc::new(CancelRegistry::default()),
            clients: AtomicUsize::new(0),
        })
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

/// Accepts clients until the listener fails.
pub async fn serve(pooler: Arc<Pooler>, listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
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
    let accepted = tokio::time::timeout(login_timeout, login(&mut stream, &mut buf, &pooler)).await;
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
        Ok(Ok(Accepted::Admin { user })) => {
            let mut out = BytesMut::new();
            let e = PoolerError::fatal(sqlstate::FEATURE_NOT_SUPPORTED, "the admin console is not available in this build");
            backend::error_response(&mut out, &e);
            let _ = stream.write_all(&out).await;
            tracing::info!(client = %peer, user, "admin console refused");
        }
        Ok(Ok(Accepted::Session(li))) => {
            tracing::info!(client = %peer, user = %li.user.name, database = %li.db.name, "client connected");
            let Some(pools) = li.topology.pools(&li.db.cluster, &li.user.name) else { return };
            let Some(cluster) = li.topology.cluster_state(&li.db.cluster) else { return };
            Session::new(stream, *li, pools, cluster, peer).run().await;
        }
    }
}
