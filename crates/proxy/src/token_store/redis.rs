//! The Redis token store, shared by every lsnpool instance pointed at it.
//!
//! Client: the `redis` crate (redis-rs, the most used Rust client, maintained under the Redis
//! organisation) with its tokio `ConnectionManager`: one multiplexed connection that
//! pipelines concurrent requests and reconnects by itself after an error. Version 0.32: the
//! newest line whose MSRV (1.80) fits the workspace's 1.85.
//!
//! Keys, per cluster `c`: `lsnpool:{c}:global` (the newest commit of any instance),
//! `lsnpool:{c}:key:<key>` (a session key's newest commit, expiring after
//! `routing.session_key_ttl`), and two markers that make a Redis that lost its data (a restart
//! without persistence) safe: `epoch` exists while the data is whole; when a lookup finds it
//! missing it recreates it and starts a `settling` window of `routing.max_replica_lag` during
//! which every keyed or global read goes to the primary: commits made before the loss may be
//! missing from the store, but a replica in rotation after the window (lag ≤ max_replica_lag)
//! has replayed everything committed before the window began. LSNs are
//! stored as 16 hex digits so Lua compares them as strings, exactly.
//!
//! Every call has a deadline (`routing.token_store_timeout`); a call that misses it, fails, or
//! finds no connection yet is `StoreDown`.

use super::{Lookup, StoreDown};
use lsnpool_router::Lsn;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Between failed connection attempts.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

const LOOKUP_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], '1')
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
  return {1, '', ''}
end
if redis.call('EXISTS', KEYS[2]) == 1 then return {1, '', ''} end
local g = redis.call('GET', KEYS[3]) or ''
local k = ''
if KEYS[4] then k = redis.call('GET', KEYS[4]) or '' end
return {0, g, k}
";

const RECORD_LUA: &str = r"
local function raise(k, v, ttl)
  local cur = redis.call('GET', k)
  if (not cur) or cur < v then
    if ttl then redis.call('SET', k, v, 'PX', ttl) else redis.call('SET', k, v) end
  elseif ttl then
    redis.call('PEXPIRE', k, ttl)
  end
end
raise(KEYS[1], ARGV[1], nil)
if KEYS[2] then raise(KEYS[2], ARGV[1], ARGV[2]) end
return 1
";

pub struct RedisStore {
    inner: Arc<Inner>,
    ttl: Duration,
    settle: Duration,
    lookup: Script,
    record: Script,
}

struct Inner {
    client: redis::Client,
    addr: String,
    deadline: Duration,
    /// None until the first connection succeeds; the manager reconnects by itself after.
    conn: Mutex<Option<ConnectionManager>>,
    connecting: AtomicBool,
}

impl RedisStore {
    pub fn new(url: &str, ttl: Duration, deadline: Duration, settle: Duration) -> Result<RedisStore, String> {
        let client = redis::Client::open(url).map_err(|e| format!("routing.token_store: {e}"))?;
        let addr = client.get_connection_info().addr.to_string();
        let inner = Arc::new(Inner { client, addr, deadline, conn: Mutex::new(None), connecting: AtomicBool::new(false) });
        inner.clone().connect_in_background();
        Ok(RedisStore { inner, ttl, settle, lookup: Script::new(LOOKUP_LUA), record: Script::new(RECORD_LUA) })
    }

    pub fn describe(&self) -> String {
        format!("redis://{}", self.inner.addr)
    }

    pub async fn lookup(&self, cluster: &str, key: Option<&str>, _global: bool) -> Result<Lookup, StoreDown> {
        let mut conn = self.inner.conn()?;
        let mut call = self.lookup.prepare_invoke();
        call.key(format!("lsnpool:{{{cluster}}}:epoch"))
            .key(format!("lsnpool:{{{cluster}}}:settling"))
            .key(format!("lsnpool:{{{cluster}}}:global"))
            .arg(self.settle.as_millis().max(1) as u64);
        if let Some(k) = key {
            call.key(key_name(cluster, k));
        }
        let reply: (i64, String, String) = self.inner.call("lookup", call.invoke_async(&mut conn)).await?;
        if reply.0 != 0 {
            metrics::counter!("lsnpool_token_store_settling_total").increment(1);
            return Err(StoreDown);
        }
        Ok(Lookup { global: parse(&reply.1), key: key.map(|_| parse(&reply.2)) })
    }

    pub async fn record(&self, cluster: &str, key: Option<&str>, lsn: Lsn) -> Result<(), StoreDown> {
        let mut conn = self.inner.conn()?;
        let mut call = self.record.prepare_invoke();
        call.key(format!("lsnpool:{{{cluster}}}:global")).arg(format!("{:016X}", lsn.0)).arg(self.ttl.as_millis() as u64);
        if let Some(k) = key {
            call.key(key_name(cluster, k));
        }
        let _: i64 = self.inner.call("record", call.invoke_async(&mut conn)).await?;
        Ok(())
    }
}

impl Inner {
    fn conn(self: &Arc<Self>) -> Result<ConnectionManager, StoreDown> {
        let c = self.conn.lock().ok().and_then(|c| c.clone());
        match c {
            Some(c) => Ok(c),
            None => {
                self.clone().connect_in_background();
                Err(StoreDown)
            }
        }
    }

    /// Runs one Redis call under the deadline; failures are counted and logged, not returned.
    async fn call<T>(&self, op: &'static str, f: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, StoreDown> {
        match tokio::time::timeout(self.deadline, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                metrics::counter!("lsnpool_token_store_errors_total", "op" => op).increment(1);
                tracing::debug!(op, error = %e, addr = %self.addr, "token store call failed");
                Err(StoreDown)
            }
            Err(_) => {
                metrics::counter!("lsnpool_token_store_errors_total", "op" => op).increment(1);
                tracing::debug!(op, addr = %self.addr, deadline = ?self.deadline, "token store call timed out");
                Err(StoreDown)
            }
        }
    }

    /// Connects once, in a task of its own, retrying until it succeeds; one such task at a
    /// time. Requests meanwhile fail at once (the primary serves them).
    fn connect_in_background(self: Arc<Self>) {
        if self.connecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.connecting.store(false, Ordering::Release);
            return;
        };
        rt.spawn(async move {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(self.deadline.max(Duration::from_millis(200)))
                .set_response_timeout(self.deadline)
                .set_number_of_retries(1)
                .set_max_delay(RECONNECT_PAUSE.as_millis() as u64);
            loop {
                let attempt = ConnectionManager::new_with_config(self.client.clone(), config.clone());
                match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                    Ok(Ok(c)) => {
                        if let Ok(mut slot) = self.conn.lock() {
                            *slot = Some(c);
                        }
                        tracing::info!(addr = %self.addr, "token store connected");
                        break;
                    }
                    Ok(Err(e)) => tracing::warn!(addr = %self.addr, error = %e, "token store unreachable; keyed and global reads use the primary"),
                    Err(_) => tracing::warn!(addr = %self.addr, "token store connect timed out; keyed and global reads use the primary"),
                }
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
            self.connecting.store(false, Ordering::Release);
        });
    }
}

fn key_name(cluster: &str, key: &str) -> String {
    format!("lsnpool:{{{cluster}}}:key:{key}")
}

/// A stored LSN: 16 hex digits; anything else (absent, garbage) counts as nothing recorded.
fn parse(v: &str) -> Lsn {
    u64::from_str_radix(v, 16).map(Lsn).unwrap_or(Lsn::ZERO)
}
