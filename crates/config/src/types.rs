use lsnpool_router::Consistency;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub pooler: PoolerConfig,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterConfig>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    #[default]
    Transaction,
    Session,
}

impl PoolMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Transaction => "transaction",
            PoolMode::Session => "session",
        }
    }
}

/// How clients prove who they are to lsnpool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthType {
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    Md5,
    Trust,
}

impl AuthType {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::ScramSha256 => "scram-sha-256",
            AuthType::Md5 => "md5",
            AuthType::Trust => "trust",
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolerConfig {
    pub listen: String,
    pub pool_mode: PoolMode,
    pub auth_type: AuthType,
    pub default_pool_size: usize,
    pub min_pool_size: usize,
    pub max_client_conn: usize,
    #[serde(with = "humantime_serde")]
    pub query_wait_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub client_login_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub server_connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub server_lifetime: Duration,
    #[serde(with = "humantime_serde")]
    pub server_idle_timeout: Duration,
    /// Largest frontend message accepted, in bytes; a bigger one is a protocol violation.
    pub max_message_size: usize,
    /// Server-side prepared statements kept per server connection before the oldest is closed.
    pub max_prepared_statements: usize,
    pub admin_users: Vec<String>,
    pub stats_users: Vec<String>,
    /// Prometheus `/metrics`; empty disables the exporter.
    pub metrics_listen: String,
    /// Threads of the runtime; 0 picks half the CPUs (at least one); 1 runs a single event loop.
    pub worker_threads: usize,
}

impl Default for PoolerConfig {
    fn default() -> Self {
        PoolerConfig {
            listen: "127.0.0.1:6432".into(),
            pool_mode: PoolMode::Transaction,
            auth_type: AuthType::ScramSha256,
            default_pool_size: 20,
            min_pool_size: 0,
            max_client_conn: 10_000,
            query_wait_timeout: Duration::from_secs(5),
            client_login_timeout: Duration::from_secs(60),
            server_connect_timeout: Duration::from_secs(5),
            server_lifetime: Duration::from_secs(3600),
            server_idle_timeout: Duration::from_secs(600),
            max_message_size: 64 * 1024 * 1024,
            max_prepared_statements: 1000,
            admin_users: vec!["postgres".into()],
            stats_users: Vec::new(),
            metrics_listen: "127.0.0.1:9930".into(),
            worker_threads: 0,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    pub consistency: Consistency,
    #[serde(with = "humantime_serde")]
    pub lsn_poll_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub max_replica_lag: Duration,
    #[serde(with = "humantime_serde")]
    pub lsn_wait_timeout: Duration,
    /// Capture the commit LSN of primary transactions (off only to measure what it costs).
    pub capture_commit_lsn: bool,
    /// A read whose replicas all look behind asks one directly (one round trip) if that
    /// replica typically lags less than this; 0 disables asking.
    #[serde(with = "humantime_serde")]
    pub probe_max_lag: Duration,
    /// Where session keys and (shared) the newest commit live: "embedded" (this process) or
    /// "redis://HOST:PORT" (shared by several lsnpool instances).
    pub token_store: String,
    /// A session key's commit counts this long after it was made.
    #[serde(with = "humantime_serde")]
    pub session_key_ttl: Duration,
    /// Deadline of one token store call; a store slower than this counts as down (the read
    /// goes to the primary).
    #[serde(with = "humantime_serde")]
    pub token_store_timeout: Duration,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            // Never stale for any reader, whichever connection wrote (issue 10): applications
            // write on one pooled connection and read on another.
            consistency: Consistency::Global,
            lsn_poll_interval: Duration::from_millis(10),
            max_replica_lag: Duration::from_secs(10),
            // Long enough for a streaming replica to replay a fresh commit and be polled on
            // demand (typically 1–3 ms), short enough that a read stuck behind a lagging
            // replica costs little before it uses the primary (docs/ARCHITECTURE.md).
            lsn_wait_timeout: Duration::from_millis(20),
            capture_commit_lsn: true,
            probe_max_lag: Duration::from_millis(5),
            token_store: "embedded".into(),
            session_key_ttl: Duration::from_secs(60),
            token_store_timeout: Duration::from_millis(20),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Plain text, or a `SCRAM-SHA-256$…` verifier. Plain text is needed for lsnpool to log
    /// in to servers that ask for a password; omitted with `auth_type = "trust"`.
    #[serde(default)]
    pub password: Option<String>,
    /// Overrides `pooler.default_pool_size` for this user's pools.
    #[serde(default)]
    pub pool_size: Option<usize>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The database name on the servers; defaults to the cluster's name.
    #[serde(default)]
    pub database: Option<String>,
    pub primary: String,
    #[serde(default)]
    pub replicas: Vec<String>,
    /// Other database names clients may use for this cluster, each with its consistency.
    #[serde(default)]
    pub aliases: BTreeMap<String, Consistency>,
    /// Consistency under the cluster's own name; defaults to `routing.consistency`.
    #[serde(default)]
    pub consistency: Option<Consistency>,
    #[serde(default)]
    pub pool_size: Option<usize>,
}

impl ClusterConfig {
    pub fn server_database<'a>(&'a self, cluster_name: &'a str) -> &'a str {
        self.database.as_deref().unwrap_or(cluster_name)
    }
}

impl Config {
    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }
}
