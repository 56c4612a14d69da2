//! What the config describes, made live: database names clients may ask for, and the server
//! connection pools behind them.

use lsnpool_auth::{Secret, ScramVerifier};
use lsnpool_config::{ClientTlsMode, Config, PoolMode, ServerTlsMode};
use lsnpool_net::ServerVerify;
use lsnpool_pool::{NodePool, PoolSettings, ServerManager, ServerTarget, ServerTls};
use crate::controls::ClusterControls;
use crate::replicas::{self, ClusterState, MonitorHandle};
use crate::rules::LiveRules;
use crate::stats::DbStats;
use lsnpool_router::{Consistency, NodeId, RoutingMode};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A database name a client can connect to: a cluster under its own name or an alias.
pub struct Database {
    pub name: String,
    pub cluster: Arc<str>,
    /// The session's starting consistency (`SET lsnpool.consistency` changes it per session).
    pub consistency: Consistency,
    pub mode: RoutingMode,
    pub stats: Arc<DbStats>,
    /// The alias's or cluster's own `max_replica_lag`, if it has one.
    pub max_lag: Option<Duration>,
    /// The cluster's read budget and breaker, shared by all its database names.
    pub controls: Arc<ClusterControls>,
}

/// A cluster's live replica state and the monitor that keeps it.
#[derive(Clone)]
pub struct ClusterRuntime {
    pub state: Arc<ClusterState>,
    _monitor: Arc<MonitorHandle>,
    /// What the monitor was started with: RELOAD restarts it only when this changes.
    key: (Vec<String>, usize, Duration),
}

/// The pools of one cluster for one user: one per listed node, indexed like the cluster's
/// `NodeId`s. Which one is the primary is the monitor's answer, read at each checkout (one
/// atomic load), so a failover re-points writes without rebuilding anything.
pub struct ClusterPools {
    pub nodes: Vec<NodePool>,
    state: Arc<ClusterState>,
}

impl ClusterPools {
    /// The primary's pool, as of now.
    pub fn primary(&self) -> &NodePool {
        let i = usize::from(self.state.primary_id().0);
        // Both lists come from the same `node_specs`; the fallback only guards that.
        self.nodes.get(i).unwrap_or(&self.nodes[0])
    }

    pub fn primary_id(&self) -> NodeId {
        self.state.primary_id()
    }

    pub fn node(&self, id: NodeId) -> Option<&NodePool> {
        self.nodes.get(usize::from(id.0))
    }

    pub fn nodes_with_ids(&self) -> impl Iterator<Item = (NodeId, &NodePool)> {
        self.nodes.iter().enumerate().filter_map(|(i, p)| Some((NodeId(u16::try_from(i).ok()?), p)))
    }

    /// A node nothing should reach now: not the primary, and down or not in recovery (an old
    /// primary, or one fenced for claiming to be a primary).
    pub fn retired(&self, id: NodeId) -> bool {
        if id == self.state.primary_id() {
            return false;
        }
        let s = self.state.snapshot(id);
        !s.up || s.promoted
    }
}

pub struct User {
    pub name: String,
    /// What clients must prove; derived once at load (PBKDF2 is slow).
    pub client_secret: Option<ClientSecret>,
}

pub enum ClientSecret {
    Scram(ScramVerifier),
    Md5(Secret),
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("config key `users[{index}].password`: {problem}")]
    Secret { index: usize, problem: String },
    #[error("config key `{key}`: {problem}")]
    Tls { key: &'static str, problem: String },
    #[error("cannot build pool for {label}: {problem}")]
    Pool { label: String, problem: String },
    #[error("config key `rules[{index}].match`: {0}", index = .0.index)]
    Rules(lsnpool_router::RuleError),
}

pub struct Topology {
    pub config: Arc<Config>,
    pub databases: HashMap<String, Arc<Database>>,
    pub users: HashMap<String, Arc<User>>,
    /// (cluster, user) → pools.
    pools: HashMap<(Arc<str>, String), Arc<ClusterPools>>,
    clusters: HashMap<Arc<str>, ClusterRuntime>,
    /// The query rules; sessions pick up a new set at their next transaction.
    pub rules: Arc<LiveRules>,
    controls: HashMap<Arc<str>, Arc<ClusterControls>>,
    /// What clients' SSLRequests are answered with (`None`: `N`).
    pub client_tls: Option<Arc<lsnpool_net::rustls::ServerConfig>>,
}

impl Topology {
    pub fn build(config: Arc<Config>) -> Result<Topology, TopologyError> {
        Self::build_reusing(config, None)
    }

    /// Builds from `config`, keeping from `old` the pools, monitors and statistics whose
    /// settings are unchanged (RELOAD must not drop clients or counters).
    pub fn build_reusing(config: Arc<Config>, old: Option<&Topology>) -> Result<Topology, TopologyError> {
        let rules = LiveRules::build(config.rule_specs(), old.map(|o| &*o.rules)).map_err(TopologyError::Rules)?;
        let mut databases = HashMap::new();
        let mut controls = HashMap::new();
        for (name, cl) in &config.clusters {
            let cluster: Arc<str> = Arc::from(name.as_str());
            let own = cl.consistency.unwrap_or(config.routing.consistency);
            // Shared with the sessions of the old topology: one budget, one breaker.
            let cluster_controls = old
                .and_then(|o| o.controls.get(&cluster).cloned())
                .unwrap_or_else(|| Arc::new(ClusterControls::new(name)));
            controls.insert(cluster.clone(), cluster_controls.clone());
            let db = |name: &str, consistency: Consistency, mode: RoutingMode, max_lag: Option<Duration>| {
                let stats = old.and_then(|o| o.databases.get(name)).map(|d| d.stats.clone()).unwrap_or_else(|| Arc::new(DbStats::new(name)));
                let controls = cluster_controls.clone();
                Arc::new(Database { name: name.to_string(), cluster: cluster.clone(), consistency, mode, stats, max_lag, controls })
            };
            databases.insert(name.clone(), db(name, own, RoutingMode::Automatic, cl.max_replica_lag));
            for (alias, a) in &cl.aliases {
                // An alias is primary-only (`strong`) or replica-only (any other level): an
                // application points its reporting at `app_read` and its writes fail loudly.
                let max_lag = a.max_replica_lag().or(cl.max_replica_lag);
                databases.insert(alias.clone(), db(alias, a.consistency(), RoutingMode::ReplicaOnly, max_lag));
            }
        }

        let mut users = HashMap::new();
        for (index, u) in config.users.iter().enumerate() {
            let client_secret = match (&u.password, config.pooler.auth_type) {
                (None, _) | (_, lsnpool_config::AuthType::Trust) => None,
                (Some(p), auth) => {
                    let secret = Secret::parse(p).map_err(|e| TopologyError::Secret { index, problem: e.to_string() })?;
                    Some(match auth {
                        lsnpool_config::AuthType::Md5 => ClientSecret::Md5(secret),
                        _ => ClientSecret::Scram(match secret {
                            Secret::Scram(v) => v,
                            Secret::Plain(p) => ScramVerifier::from_password(&p, 4096),
                            Secret::Md5(_) => {
                                return Err(TopologyError::Secret {
                                    index,
                                    problem: "an md5 hash can't answer SCRAM: give the plain password, a SCRAM verifier, or set pooler.auth_type = \"md5\"".into(),
                                })
                            }
                        }),
                    })
                }
            };
            users.insert(u.name.clone(), Arc::new(User { name: u.name.clone(), client_secret }));
        }

        let client_tls = client_tls(&config.pooler)?;
        let server_tls = server_tls(&config.pooler)?;
        // The monitors before the pools: each cluster's pools ask its state which node is the
        // primary.
        let mut clusters = HashMap::new();
        for (name, cl) in &config.clusters {
            // The monitor logs in as the first user lsnpool can log in as.
            let login = config.users.iter().find(|u| match &u.password {
                None => true,
                Some(p) => matches!(Secret::parse(p), Ok(Secret::Plain(_))),
            });
            let (specs, hint) = cl.node_specs();
            if let Some(tls) = server_tls.as_ref().filter(|t| t.required) {
                // Said at every load: a socket node's connections are plain whatever the mode.
                for spec in specs.iter().filter(|s| lsnpool_pool::ServerAddr::unix_of(&s.addr).is_some()) {
                    tracing::warn!(cluster = %name, node = %spec.addr, server_tls_mode = tls.mode,
                        "this node is a Unix socket, where PostgreSQL offers no TLS: its connections are not encrypted (as libpq ignores sslmode there)");
                }
            }
            let key = (specs.into_iter().map(|s| s.addr).collect::<Vec<_>>(), hint, config.routing.failover_detect);
            let runtime = match old.and_then(|o| o.clusters.get(name.as_str())).filter(|r| r.key == key) {
                Some(r) => r.clone(),
                None => {
                    let (state, monitor) = replicas::start_monitor(name, cl, login, &config);
                    ClusterRuntime { state, _monitor: Arc::new(monitor), key }
                }
            };
            clusters.insert(Arc::from(name.as_str()), runtime);
        }
        let mut pools = HashMap::new();
        for (name, cl) in &config.clusters {
            let cluster: Arc<str> = Arc::from(name.as_str());
            for u in &config.users {
                let size = u.pool_size.or(cl.pool_size).unwrap_or(config.pooler.default_pool_size);
                let settings = PoolSettings {
                    max_size: size,
                    connect_timeout: config.pooler.server_connect_timeout,
                    lifetime: config.pooler.server_lifetime,
                    idle_timeout: config.pooler.server_idle_timeout,
                    wait_timeout: config.pooler.query_wait_timeout,
                };
                // Server passwords must be plain text: a verifier can't log in anywhere.
                let password = u.password.clone().filter(|p| matches!(Secret::parse(p), Ok(Secret::Plain(_))));
                let previous = old.and_then(|o| o.pools.get(&(cluster.clone(), u.name.clone())));
                let make = |addr: &str, role: String, reuse: Option<&NodePool>| -> Result<NodePool, TopologyError> {
                    let label: Arc<str> = Arc::from(format!("{name}/{role}"));
                    let target = ServerTarget {
                        addr: addr.to_string(),
                        database: cl.server_database(name).to_string(),
                        user: u.name.clone(),
                        password: password.clone(),
                        label: label.clone(),
                        tls: server_tls.clone(),
                    };
                    if let Some(pool) = reuse.filter(|p| same_login(p, &target)) {
                        pool.manager().set_settings(settings);
                        pool.resize(settings.max_size);
                        return Ok(pool.clone());
                    }
                    ServerManager::new(target, settings)
                        .build_pool()
                        .map_err(|e| TopologyError::Pool { label: label.to_string(), problem: e.to_string() })
                };
                let (specs, _) = cl.node_specs();
                let nodes = specs
                    .iter()
                    .map(|spec| {
                        let reuse = previous.and_then(|p| p.nodes.iter().find(|r| r.manager().target().addr == spec.addr));
                        make(&spec.addr, spec.name.clone(), reuse)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let Some(runtime) = clusters.get(name.as_str()) else { continue };
                let state: Arc<ClusterState> = Arc::clone(&runtime.state);
                pools.insert((cluster.clone(), u.name.clone()), Arc::new(ClusterPools { nodes, state }));
            }
        }
        // Last, once nothing can fail: a RELOAD that fails leaves the budgets as they were.
        for (name, cl) in &config.clusters {
            if let Some(c) = controls.get(name.as_str()) {
                c.budget.resize(cl.primary_read_pool_size.unwrap_or(0));
            }
        }
        Ok(Topology { config, databases, users, pools, clusters, rules: Arc::new(rules), controls, client_tls })
    }

    pub fn cluster_controls(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<ClusterControls>)> {
        self.controls.iter()
    }

    pub fn cluster_state(&self, cluster: &str) -> Option<Arc<ClusterState>> {
        self.clusters.get(cluster).map(|c| c.state.clone())
    }

    pub fn pools(&self, cluster: &Arc<str>, user: &str) -> Option<Arc<ClusterPools>> {
        self.pools.get(&(cluster.clone(), user.to_string())).cloned()
    }

    pub fn pool_mode(&self) -> PoolMode {
        self.config.pooler.pool_mode
    }

    pub fn clusters(&self) -> impl Iterator<Item = (&Arc<str>, &ClusterRuntime)> {
        self.clusters.iter()
    }

    pub fn all_pools(&self) -> impl Iterator<Item = (&(Arc<str>, String), &Arc<ClusterPools>)> {
        self.pools.iter()
    }
}

/// A pool is kept across RELOAD (resized, with new timeouts) unless it must log in somewhere
/// else or as someone else: sessions that logged in before keep using the pool they had, so a
/// second pool for the same node would break the pool_size limit.
fn same_login(pool: &NodePool, target: &ServerTarget) -> bool {
    let t = pool.manager().target();
    let tls = |t: &ServerTarget| t.tls.as_ref().map(|x| x.mode);
    t.addr == target.addr && t.database == target.database && t.user == target.user && t.password == target.password && tls(t) == tls(target)
}

/// The certificate shown to clients, read from its files now (so RELOAD picks up new ones).
fn client_tls(p: &lsnpool_config::PoolerConfig) -> Result<Option<Arc<lsnpool_net::rustls::ServerConfig>>, TopologyError> {
    if p.client_tls_mode == ClientTlsMode::Disable {
        return Ok(None);
    }
    let config = lsnpool_net::server_config(p.client_tls_cert_file.as_ref(), p.client_tls_key_file.as_ref())
        .map_err(|problem| TopologyError::Tls { key: "pooler.client_tls_cert_file", problem })?;
    Ok(Some(config))
}

/// How server connections use TLS.
fn server_tls(p: &lsnpool_config::PoolerConfig) -> Result<Option<ServerTls>, TopologyError> {
    let (required, verify) = match p.server_tls_mode {
        ServerTlsMode::Disable => return Ok(None),
        ServerTlsMode::Prefer => (false, ServerVerify::Nothing),
        ServerTlsMode::Require => (true, ServerVerify::Nothing),
        ServerTlsMode::VerifyCa => (true, ServerVerify::Ca),
        ServerTlsMode::VerifyFull => (true, ServerVerify::Full),
    };
    let ca = (!p.server_tls_ca_file.is_empty()).then(|| std::path::Path::new(&p.server_tls_ca_file));
    let config = lsnpool_net::client_config(verify, ca).map_err(|problem| TopologyError::Tls { key: "pooler.server_tls_ca_file", problem })?;
    Ok(Some(ServerTls { required, mode: p.server_tls_mode.as_str(), config }))
}
