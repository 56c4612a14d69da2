use lsnpool_router::{Consistency, RuleAction, RuleSpec};
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
    /// Query rules, tried in order; the first match wins (see `RuleConfig`).
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
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

/// Whether clients talk TLS to lsnpool (PgBouncer's `client_tls_sslmode`, without client
/// certificates).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientTlsMode {
    /// SSLRequest is answered `N`.
    #[default]
    Disable,
    /// TLS when the client asks for it.
    Allow,
    /// The same as `allow` for a server: TLS when the client asks for it.
    Prefer,
    /// Clients that do not ask for TLS are refused.
    Require,
}

impl ClientTlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientTlsMode::Disable => "disable",
            ClientTlsMode::Allow => "allow",
            ClientTlsMode::Prefer => "prefer",
            ClientTlsMode::Require => "require",
        }
    }
}

/// Whether lsnpool talks TLS to the servers, and what it checks (libpq's `sslmode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerTlsMode {
    #[default]
    Disable,
    /// TLS if the server offers it, plain otherwise; the certificate is not checked.
    Prefer,
    /// TLS or no connection; the certificate is not checked.
    Require,
    /// TLS with a certificate signed by `server_tls_ca_file`.
    VerifyCa,
    /// And naming the host in the node's address.
    VerifyFull,
}

impl ServerTlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerTlsMode::Disable => "disable",
            ServerTlsMode::Prefer => "prefer",
            ServerTlsMode::Require => "require",
            ServerTlsMode::VerifyCa => "verify-ca",
            ServerTlsMode::VerifyFull => "verify-full",
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolerConfig {
    pub listen: String,
    /// Also listen on a Unix-domain socket in this directory (`.s.PGSQL.<listen port>`, as
    /// PgBouncer's `unix_socket_dir`); empty: TCP only.
    pub unix_socket_dir: String,
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
    /// A failed login is answered after this long, one at a time per client address.
    #[serde(with = "humantime_serde")]
    pub auth_failure_delay: Duration,
    pub client_tls_mode: ClientTlsMode,
    /// PEM certificate (chain) and private key shown to clients; read again by RELOAD.
    pub client_tls_cert_file: String,
    pub client_tls_key_file: String,
    pub server_tls_mode: ServerTlsMode,
    /// PEM CA certificate(s) that sign the servers' certificates (verify-ca, verify-full).
    pub server_tls_ca_file: String,
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
            unix_socket_dir: String::new(),
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
            auth_failure_delay: Duration::from_secs(1),
            client_tls_mode: ClientTlsMode::Disable,
            client_tls_cert_file: String::new(),
            client_tls_key_file: String::new(),
            server_tls_mode: ServerTlsMode::Disable,
            server_tls_ca_file: String::new(),
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
    /// How long a primary may stop answering before a listed node that is not in recovery
    /// takes over its writes (README, "Failover").
    #[serde(with = "humantime_serde")]
    pub failover_detect: Duration,
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
    /// `false`: every statement goes to the primary (the config form of the console's
    /// `DISABLE ROUTING`); rules, read budgets and the breaker are off too.
    pub enabled: bool,
    /// Non-critical reads may be served by a staler replica (within `breaker_max_lag`) when
    /// the primary's breaker is open or its read budget stays spent: availability over
    /// freshness, for the paths no rule marks critical. Off: the breaker only reports.
    pub degrade: bool,
    /// The primary's breaker trips when its connections stay all busy this long, and closes
    /// once the primary has been healthy this long.
    #[serde(with = "humantime_serde")]
    pub breaker_window: Duration,
    /// Degraded reads go to the freshest replica no further behind than this.
    #[serde(with = "humantime_serde")]
    pub breaker_max_lag: Duration,
    /// The breaker also trips when more clients than this wait for a primary connection
    /// (0: not a trigger).
    pub breaker_max_waiting: usize,
    /// ... or when the oldest of them has waited longer than this (0: not a trigger).
    #[serde(with = "humantime_serde")]
    pub breaker_max_wait: Duration,
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
            failover_detect: Duration::from_secs(2),
            max_replica_lag: Duration::from_secs(10),
            // Long enough for a streaming replica to replay a fresh commit and be polled on
            // demand (typically 1–3 ms), short enough that a read stuck behind a lagging
            // replica costs little before it uses the primary (docs/ARCHITECTURE.md).
            lsn_wait_timeout: Duration::from_millis(20),
            capture_commit_lsn: true,
            probe_max_lag: Duration::from_millis(5),
            enabled: true,
            degrade: false,
            breaker_window: Duration::from_secs(10),
            breaker_max_lag: Duration::from_secs(1),
            breaker_max_waiting: 0,
            breaker_max_wait: Duration::ZERO,
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
    /// Where writes go until the monitor finds the primary elsewhere (a hint; empty: none).
    #[serde(default)]
    pub primary: String,
    #[serde(default)]
    pub replicas: Vec<String>,
    /// Nodes without a fixed role: each poll's `pg_is_in_recovery()` says which is the primary.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Other database names clients may use for this cluster, each with its consistency
    /// (and optionally its own `max_replica_lag`).
    #[serde(default)]
    pub aliases: BTreeMap<String, AliasConfig>,
    /// Consistency under the cluster's own name; defaults to `routing.consistency`.
    #[serde(default)]
    pub consistency: Option<Consistency>,
    #[serde(default)]
    pub pool_size: Option<usize>,
    /// Overrides `routing.max_replica_lag` for this cluster and its aliases.
    #[serde(default, with = "humantime_serde")]
    pub max_replica_lag: Option<Duration>,
    /// How many primary server connections reads (fallbacks, `strong` reads, rules) may hold
    /// at once, across users, so writes always find one; unset: no limit.
    #[serde(default)]
    pub primary_read_pool_size: Option<usize>,
}

/// An alias: `app_read = "bounded"`, or `inventory = { consistency = "bounded",
/// max_replica_lag = "500ms" }` for a path with its own lag threshold.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum AliasConfig {
    Level(Consistency),
    Detailed(AliasDetail),
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasDetail {
    pub consistency: Consistency,
    #[serde(default, with = "humantime_serde")]
    pub max_replica_lag: Option<Duration>,
}

impl AliasConfig {
    pub fn consistency(&self) -> Consistency {
        match self {
            AliasConfig::Level(c) => *c,
            AliasConfig::Detailed(d) => d.consistency,
        }
    }

    pub fn max_replica_lag(&self) -> Option<Duration> {
        match self {
            AliasConfig::Level(_) => None,
            AliasConfig::Detailed(d) => d.max_replica_lag,
        }
    }
}

/// `[[rules]]`: statements whose text matches `match` route as the rule says.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Shown in SHOW RULES and the `rule` label of `lsnpool_rule_hits_total`.
    pub name: String,
    /// A cluster (then its aliases too) or an alias; unset: every database.
    #[serde(default)]
    pub database: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    /// A regex (Rust `regex` syntax) on the statement text.
    #[serde(rename = "match")]
    pub pattern: String,
    #[serde(default)]
    pub consistency: Option<Consistency>,
    /// The path's own lag threshold; alone it means `consistency = "bounded"`.
    #[serde(default, with = "humantime_serde")]
    pub max_replica_lag: Option<Duration>,
    /// Never degraded by the circuit breaker or the read budget.
    #[serde(default)]
    pub critical: bool,
}

impl RuleConfig {
    pub fn spec(&self) -> RuleSpec {
        RuleSpec {
            name: self.name.clone(),
            database: self.database.clone(),
            user: self.user.clone(),
            pattern: self.pattern.clone(),
            action: RuleAction { consistency: self.consistency, max_lag: self.max_replica_lag, critical: self.critical },
        }
    }
}

/// One node of a cluster as listed: its address and the name it has in logs, pool labels and
/// SHOW REPLICAS (`primary`, `replica<i>`, `node<i>` after the key that listed it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    pub addr: String,
    pub name: String,
}

impl ClusterConfig {
    /// Every listed node once, in the order their ids follow: `replicas`, then `primary`, then
    /// `nodes`; and the index of the node writes go to first (`primary`, else the first of
    /// `nodes`, else 0).
    pub fn node_specs(&self) -> (Vec<NodeSpec>, usize) {
        let mut specs: Vec<NodeSpec> = Vec::new();
        let mut add = |addr: &str, name: String| -> usize {
            if let Some(i) = specs.iter().position(|s| s.addr == addr) {
                return i;
            }
            specs.push(NodeSpec { addr: addr.to_string(), name });
            specs.len() - 1
        };
        for (i, r) in self.replicas.iter().enumerate() {
            add(r, format!("replica{i}"));
        }
        let mut hint = (!self.primary.is_empty()).then(|| add(&self.primary, "primary".into()));
        for (i, n) in self.nodes.iter().enumerate() {
            let at = add(n, format!("node{i}"));
            hint.get_or_insert(at);
        }
        (specs, hint.unwrap_or(0))
    }

    pub fn server_database<'a>(&'a self, cluster_name: &'a str) -> &'a str {
        self.database.as_deref().unwrap_or(cluster_name)
    }
}

impl Config {
    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The rules as the router compiles them.
    pub fn rule_specs(&self) -> Vec<RuleSpec> {
        self.rules.iter().map(RuleConfig::spec).collect()
    }
}
