//! Where commit LSNs outlive the connection that made them (issue 10): each session key's
//! newest commit, and — when several lsnpool instances share one — the cluster's newest
//! commit, for `global` reads on every instance.
//!
//! Two kinds, one interface: `embedded` (in process, the default: one instance) and `redis`
//! (`routing.token_store = "redis://HOST:PORT"`: N instances behind a load balancer give the
//! same guarantees as one). A store that cannot answer says so ([`StoreDown`]); callers then
//! send keyed and global reads to the primary, never to a replica that might be stale.

mod embedded;
mod redis;

use lsnpool_config::RoutingConfig;
use lsnpool_router::Lsn;
use std::time::Duration;

pub use embedded::EmbeddedStore;
pub use redis::RedisStore;

/// The store did not answer in time, failed, or is settling after losing its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreDown;

/// What the store knows for one read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lookup {
    /// The newest commit recorded by any instance (ZERO for the embedded store: the
    /// cluster's own `highest_commit_lsn` is the same thing there).
    pub global: Lsn,
    /// The key's newest commit, if the read has a key (ZERO: none recorded or expired).
    pub key: Option<Lsn>,
}

pub enum TokenStore {
    Embedded(EmbeddedStore),
    Redis(RedisStore),
}

impl TokenStore {
    /// The store `routing.token_store` names. A Redis store connects in the background and
    /// reconnects by itself: lsnpool starts (and writes work) while Redis is down.
    pub fn from_config(routing: &RoutingConfig) -> Result<TokenStore, String> {
        let url = routing.token_store.trim();
        if url.is_empty() || url == "embedded" {
            return Ok(TokenStore::Embedded(EmbeddedStore::new(routing.session_key_ttl)));
        }
        RedisStore::new(url, routing.session_key_ttl, routing.token_store_timeout, routing.max_replica_lag).map(TokenStore::Redis)
    }

    /// An embedded store: tests and tools that build a topology without a config file.
    pub fn embedded(ttl: Duration) -> TokenStore {
        TokenStore::Embedded(EmbeddedStore::new(ttl))
    }

    /// Shared between instances: the cluster's newest commit must be stored and read here,
    /// and a commit's ReadyForQuery waits for the store.
    pub fn is_shared(&self) -> bool {
        matches!(self, TokenStore::Redis(_))
    }

    /// What a read of `cluster` must see, as far as the store knows. `global`: the read needs
    /// the cluster's newest commit (only a shared store is asked for it).
    pub async fn lookup(&self, cluster: &str, key: Option<&str>, global: bool) -> Result<Lookup, StoreDown> {
        match self {
            TokenStore::Embedded(s) => Ok(Lookup { global: Lsn::ZERO, key: key.map(|k| s.get(cluster, k)) }),
            TokenStore::Redis(s) => s.lookup(cluster, key, global).await,
        }
    }

    /// A commit at `lsn` on `cluster`, under `key` if the transaction had one. Called before
    /// the client sees its commit.
    pub async fn record(&self, cluster: &str, key: Option<&str>, lsn: Lsn) -> Result<(), StoreDown> {
        match self {
            TokenStore::Embedded(s) => {
                if let Some(k) = key {
                    s.put(cluster, k, lsn);
                }
                Ok(())
            }
            TokenStore::Redis(s) => s.record(cluster, key, lsn).await,
        }
    }

    /// For SHOW ROUTING: "embedded" or the Redis address.
    pub fn describe(&self) -> String {
        match self {
            TokenStore::Embedded(_) => "embedded".into(),
            TokenStore::Redis(s) => s.describe(),
        }
    }
}
