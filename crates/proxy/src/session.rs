//! A logged-in client: idle between transactions (holding no server connection and no
//! buffers), then one transaction at a time on a server connection borrowed from a pool.

use crate::cancel::{CancelSlot, ClientState};
use crate::listener::Pooler;
use crate::login::LoggedIn;
use crate::batch::{self, BatchInfo};
use crate::local;
use crate::prepared::ClientStatements;
use crate::relay::{flush_now, peek_header, ClientIo, Outcome, Relay, RelayPlan, SessionState};
use crate::replicas::{self, ClusterState};
use crate::stats::DbStats;
use crate::topology::{ClusterPools, Database};
use lsnpool_router::{decide, Consistency, Decision, Hint, Lsn, NodeId, PrimaryReason, ReplicaView, Request, Route, RoutingMode};
use bytes::{Buf, BytesMut};
use deadpool::managed::{Object, PoolError, TimeoutType};
use lsnpool_config::PoolMode;
use lsnpool_pool::ServerManager;
use lsnpool_protocol::backend::{self, PoolerError, TxStatus};
use lsnpool_protocol::frame::Frames;
use lsnpool_protocol::{frontend, sqlstate};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;

type Server = Object<ServerManager>;

const READ_CHUNK: usize = 8 * 1024;

pub struct Session {
    pooler: Arc<Pooler>,
    client: ClientIo,
    login: LoggedIn,
    pools: Arc<ClusterPools>,
    statements: ClientStatements,
    /// A replica connection the router already borrowed to ask for its replay LSN.
    /// Boxed for the same reason as `held`.
    probed: Option<Box<Server>>,
    /// Session pool mode keeps its server connection between transactions.
    /// Boxed: inline, an absent server connection would still cost every client its size.
    held: Option<Box<(Server, Target)>>,
    cluster: Arc<ClusterState>,
    routing: ClientRouting,
    /// Reused for every routing decision: no allocation per transaction.
    views: Vec<ReplicaView>,
    /// A batch was refused with an error: drop the rest of it, up to its Sync.
    skip_until_sync: bool,
    peer: SocketAddr,
}

impl Session {
    pub fn new(
        pooler: Arc<Pooler>,
        stream: TcpStream,
        login: LoggedIn,
        pools: Arc<ClusterPools>,
        cluster: Arc<ClusterState>,
        peer: SocketAddr,
        pipelined: BytesMut,
    ) -> Session {
        let max_message_size = login.topology.config.pooler.max_message_size;
        let routing = ClientRouting {
            consistency: login.db.consistency,
            last_commit: Lsn::ZERO,
            last_read: Lsn::ZERO,
            sticky: None,
        };
        DbStats::add(&login.db.stats.client_login_count, 1);
        Session {
            pooler,
            cluster,
            routing,
            views: Vec::new(),
            client: ClientIo { stream: stream.into(), rbuf: pipelined, wbuf: BytesMut::new(), max_message_size },
            login,
            pools,
            statements: ClientStatements::default(),
            held: None,
            probed: None,
            skip_until_sync: false,
            peer,
        }
    }

    /// The session's task. Not an `async fn`: that would keep a second copy of `self` in the
    /// future (its argument and the local it is moved to), and every idle client pays for
    /// the future's size.
    pub fn run(mut self) -> impl std::future::Future<Output = ()> + Send {
        async move {
            let why = self.serve().await;
            if let Some(held) = self.held.take() {
                // Boxed, like the transaction: rare paths must not size every idle client's task.
                Box::pin(async { self.end_server(held.0, true, TxStatus::Idle).await }).await;
            }
            // Boxed too: its write-readiness future would otherwise sit beside `serve`'s.
            let _ = Box::pin(self.flush_client()).await;
            tracing::info!(
                client = %self.peer, user = %self.login.user.name, database = %self.login.db.name,
                reason = why, "client disconnected"
            );
        }
    }

    /// Returns why the session ended.
    async fn serve(&mut self) -> &'static str {
        loop {
            if self.flush_client().await.is_err() {
                return "client write failed";
            }
            let header = match peek_header(&self.client.rbuf, self.client.max_message_size) {
                Err(e) => {
                    self.fatal(sqlstate::PROTOCOL_VIOLATION, &e.to_string());
                    return "protocol violation";
                }
                Ok(h) => h.filter(|h| self.client.rbuf.len() >= h.frame_len),
            };
            let Some(header) = header else {
                if self.slot().is_killed() {
                    self.fatal(sqlstate::ADMIN_SHUTDOWN, "terminating connection due to KILL from the lsnpool admin console");
                    return "killed by admin";
                }
                if self.pooler.is_shutting_down() && self.held.is_none() {
                    self.fatal(sqlstate::ADMIN_SHUTDOWN, "lsnpool is shutting down");
                    return "pooler shutdown";
                }
                match self.read_idle().await {
                    Ok(None) => continue,
                    Ok(Some(0)) | Err(_) => return "client closed the connection",
                    Ok(Some(_)) => continue,
                }
            };
            if self.skip_until_sync {
                self.skip_refused_batch();
                continue;
            }
            if self.held.is_none() {
                match header.tag {
                    frontend::TERMINATE => return "client sent Terminate",
                    frontend::SYNC => {
                        // Nothing is open: answer it ourselves rather than borrow a server.
                        self.client.rbuf.advance(header.frame_len);
                        backend::ready_for_query(&mut self.client.wbuf, TxStatus::Idle);
                        continue;
                    }
                    frontend::FLUSH => {
                        self.client.rbuf.advance(header.frame_len);
                        continue;
                    }
                    _ => {}
                }
            }
            // Boxed: an idle client's task holds only the session, not the relay's state.
            match Box::pin(self.transaction()).await {
                Ok(()) => {}
                Err(why) => return why,
            }
        }
    }

    /// Runs one transaction; `Err` ends the session.
    async fn transaction(&mut self) -> Result<(), &'static str> {
        let info = batch::analyze(&self.client.rbuf, self.client.max_message_size, &self.statements);
        if let Some(cmd) = info.pooler {
            if let Ok(Some(h)) = peek_header(&self.client.rbuf, self.client.max_message_size) {
                self.client.rbuf.advance(h.frame_len);
            }
            let default = self.login.db.consistency;
            local::answer(cmd, &mut self.routing.consistency, default, &mut self.client.wbuf, TxStatus::Idle);
            return Ok(());
        }
        if let Some(cmd) = info.parsed_pooler {
            match batch::extended_command(&self.client.rbuf, self.client.max_message_size, cmd) {
                batch::Extended::Answer(x) => {
                    self.client.rbuf.advance(x.len);
                    let default = self.login.db.consistency;
                    local::answer_extended(cmd, x.describe, &mut self.routing.consistency, default, &mut self.client.wbuf, TxStatus::Idle);
                }
                // The rest of the batch decides who answers it: wait for it.
                batch::Extended::Incomplete => match self.read_idle().await {
                    Ok(Some(0)) | Err(_) => return Err("client closed the connection"),
                    Ok(_) => {}
                },
                batch::Extended::Other => self.refuse_batch(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "lsnpool answers lsnpool.consistency commands sent as a simple Query, or as Parse/Bind/Execute/Sync of the unnamed statement without parameters",
                    Some("send SET lsnpool.consistency = '...' as a simple query (for example through your driver's execute-without-parameters call)"),
                ),
            }
            return Ok(());
        }
        if self.held.is_none() {
            if let Some(len) = batch::parse_only(&self.client.rbuf, self.client.max_message_size) {
                self.prepare_locally(len);
                return Ok(());
            }
            if let Some(name) = info.deallocate.and_then(|d| self.known_deallocate(d)) {
                self.statements.remove(&name);
                if let Ok(Some(h)) = peek_header(&self.client.rbuf, self.client.max_message_size) {
                    self.client.rbuf.advance(h.frame_len);
                }
                backend::command_complete(&mut self.client.wbuf, "DEALLOCATE");
                backend::ready_for_query(&mut self.client.wbuf, TxStatus::Idle);
                return Ok(());
            }
        }
        let mut forced = None;
        loop {
            let cluster = self.cluster.clone();
            let mut _outstanding = None;
            let (mut server, target) = match self.held.take() {
                Some(held) => *held,
                None => {
                    let target = self.choose(&info, forced).await;
                    // Counted from the decision on, so concurrent decisions spread the load.
                    _outstanding = match target.route {
                        Route::Replica(node) => cluster.begin_read(node),
                        Route::Primary => Some(cluster.begin_primary()),
                    };
                    let server = match self.probed.take() {
                        Some(probed) => self.prepare(*probed).await,
                        None => self.checkout(target.route).await,
                    };
                    match server {
                        Some(s) => (s, target),
                        None => return Ok(()),
                    }
                }
            };
            let config = &self.login.topology.config;
            let plan = RelayPlan {
                capture_lsn: target.route == Route::Primary && config.routing.capture_commit_lsn,
                capture_reads: target.monotonic_fallback && config.routing.capture_commit_lsn,
                retry_guard: matches!(target.route, Route::Replica(_))
                    && self.login.db.mode == RoutingMode::Automatic
                    && !info.read_only_txn
                    && forced.is_none(),
                first_query: info.first_query,
            };
            let slot = self.slot().clone();
            slot.set_server(Some(server.key));
            let started = Instant::now();
            let (outcome, may_write, captured, captured_read) = {
                let state = SessionState { statements: &mut self.statements, params: &mut self.login.params, cluster: &cluster };
                let mut relay = Relay::new(&mut self.client, &mut server, state, plan);
                let outcome = relay.run().await;
                record(&self.login.db, &relay.stats, started, target.route);
                (outcome, relay.may_write, relay.captured, relay.captured_read)
            };
            slot.set_server(None);
            if let Some(lsn) = captured {
                self.learn_commit(lsn);
            }
            if let Some(lsn) = captured_read {
                self.routing.last_read = self.routing.last_read.max(lsn);
            }
            match outcome {
                Outcome::Done => {
                    if plan.capture_lsn && may_write {
                        self.capture_separately(&mut server).await;
                    }
                    if let Route::Replica(node) = target.route {
                        self.routing.last_read = self.routing.last_read.max(target.replay_lsn);
                        self.routing.sticky = Some(node);
                    }
                    if self.login.topology.pool_mode() == PoolMode::Session {
                        self.held = Some(Box::new((server, target)));
                    } else {
                        self.release(server).await;
                    }
                    return Ok(());
                }
                Outcome::RetryOnPrimary(saved) => {
                    // The replica is idle again; replay the client's bytes on the primary.
                    self.release(server).await;
                    let mut rbuf = saved;
                    rbuf.extend_from_slice(&self.client.rbuf);
                    self.client.rbuf = rbuf;
                    forced = Some(PrimaryReason::Retry25006);
                    tracing::debug!(client = %self.peer, "replica refused a write (25006); retrying on the primary");
                }
                Outcome::ClientGone { server_idle, status } => {
                    self.end_server(server, server_idle, status).await;
                    return Err("client closed the connection mid-transaction");
                }
                Outcome::ServerLost => {
                    tracing::warn!(client = %self.peer, node = %server.label, "server connection lost mid-transaction");
                    discard(server);
                    return Err("server connection lost");
                }
                Outcome::ClientViolation => {
                    discard(server);
                    return Err("protocol violation");
                }
            }
        }
    }

    /// Records the named Parses of a Parse+Sync batch and answers them, holding no server:
    /// they are prepared on whichever server connection first needs them. Borrowing a server
    /// here would block a pgbench thread that must first finish other clients' transactions.
    /// (A statement that does not compile then fails at its first Bind, not at Parse.)
    fn prepare_locally(&mut self, len: usize) {
        let batch = self.client.rbuf.split_to(len);
        for (h, frame) in Frames::new(&batch, self.client.max_message_size).map_while(Result::ok) {
            if h.tag != frontend::PARSE {
                continue;
            }
            let Some(p) = frontend::parse_parse(frame) else { continue };
            if self.statements.get(p.name).is_some() {
                let msg = format!("prepared statement \"{}\" already exists", String::from_utf8_lossy(p.name));
                backend::error_response(&mut self.client.wbuf, &PoolerError::error(sqlstate::DUPLICATE_PREPARED_STATEMENT, &msg));
                break; // PostgreSQL skips the rest of the batch up to Sync
            }
            let class = lsnpool_router::classify_bytes(p.query);
            self.statements.insert(p.name, p.body, class, crate::relay::mentions_copy(p.query));
            backend::parse_complete(&mut self.client.wbuf);
        }
        backend::ready_for_query(&mut self.client.wbuf, TxStatus::Idle);
    }

    /// The name of a lone `DEALLOCATE name` if it is one of this client's statements.
    fn known_deallocate(&self, d: lsnpool_router::Deallocate) -> Option<Vec<u8>> {
        let sql = frontend::parse_query(self.client.rbuf.get(..peek_header(&self.client.rbuf, self.client.max_message_size).ok()??.frame_len)?)?;
        let name = d.name(sql)?.into_owned();
        self.statements.get(&name).is_some().then_some(name)
    }

    /// Where the transaction runs: the router's pure decision over the replicas' last polled
    /// state, plus the optional wait for a replica to catch up.
    async fn choose(&mut self, info: &BatchInfo, forced: Option<PrimaryReason>) -> Target {
        let db = self.login.db.clone();
        let primary = |reason: PrimaryReason| {
            DbStats::add(db.stats.primary(reason), 1);
            db.stats.metrics.routed_primary(reason).increment(1);
            Target { route: Route::Primary, replay_lsn: Lsn::ZERO, monotonic_fallback: false }
        };
        if let Some(reason) = forced {
            return primary(reason);
        }
        let cluster = self.cluster.clone();
        let session_mode = self.login.topology.pool_mode() == PoolMode::Session;
        if session_mode && db.mode == RoutingMode::Automatic {
            // A session keeps one server connection for all its statements: only the primary
            // can run them all.
            return primary(PrimaryReason::Write);
        }
        let topology = self.login.topology.clone();
        let routing_cfg = &topology.config.routing;
        let consistency = match info.hint {
            Some(Hint::Consistency(c)) => c,
            _ => self.routing.consistency,
        };
        let request = Request {
            mode: db.mode,
            consistency,
            writes: info.writes,
            hint_primary: info.hint == Some(Hint::Primary),
            last_commit: self.routing.last_commit,
            last_read: self.routing.last_read,
            global_commit: replicas::global_commit(&cluster),
            max_lag: routing_cfg.max_replica_lag,
            sticky: self.routing.sticky,
            tiebreak: self.slot().pid as u32,
            probe_below: routing_cfg.probe_max_lag,
        };
        replicas::views(&cluster, &mut self.views);
        let mut decision = decide(&request, &self.views);
        if let Decision::Primary { reason: PrimaryReason::LagFallback, probe: Some(node), needed, .. } = decision {
            let asked = Instant::now();
            if let Some((server, replay_lsn)) = self.probe_replica(node, needed).await {
                // The probe borrowed the connection: its wait counts like a checkout's.
                let waited = asked.elapsed();
                db.stats.metrics.server_wait_seconds.record(waited.as_secs_f64());
                DbStats::add(&db.stats.wait_time_us, waited.as_micros() as u64);
                DbStats::add(&db.stats.replica_reads, 1);
                DbStats::add(&db.stats.probe_hits, 1);
                db.stats.metrics.routed_replica.increment(1);
                self.probed = Some(Box::new(server));
                return Target { route: Route::Replica(node), replay_lsn, monotonic_fallback: false };
            }
            DbStats::add(&db.stats.probe_misses, 1);
        }
        if let Decision::Primary { reason: PrimaryReason::LagFallback, catch_up: Some(node), needed, .. } = decision {
            let wait = routing_cfg.lsn_wait_timeout;
            if !wait.is_zero() {
                let t0 = Instant::now();
                let caught_up = replicas::wait_for_replay(&cluster, node, needed, wait).await;
                DbStats::add(&db.stats.catchup_waits, 1);
                DbStats::add(&db.stats.catchup_wait_us, t0.elapsed().as_micros() as u64);
                db.stats.metrics.catchup_wait_seconds.record(t0.elapsed().as_secs_f64());
                if caught_up {
                    replicas::views(&cluster, &mut self.views);
                    decision = Decision::Replica(node);
                }
            }
        }
        match decision {
            Decision::Replica(node) => {
                DbStats::add(&db.stats.replica_reads, 1);
                db.stats.metrics.routed_replica.increment(1);
                let replay_lsn = self.views.iter().find(|v| v.node == node).map_or(Lsn::ZERO, |v| v.replay_lsn);
                tracing::debug!(client = %self.peer, replica = node.0, %replay_lsn, "read routed to replica");
                Target { route: Route::Replica(node), replay_lsn, monotonic_fallback: false }
            }
            Decision::Primary { reason, .. } => {
                tracing::debug!(client = %self.peer, reason = reason.as_str(), "routed to primary");
                let mut target = primary(reason);
                // A read the primary served in a replica's place: the client's next read must
                // not see less, so learn how far this one saw.
                target.monotonic_fallback = matches!(reason, PrimaryReason::LagFallback | PrimaryReason::NoReplicaUp)
                    && matches!(consistency, Consistency::ReadYourWrites | Consistency::Global);
                target
            }
        }
    }

    /// Asks a replica that usually follows closely whether it has replayed `needed` yet (its
    /// polled LSN is up to one poll interval old). Only an idle pooled connection is used: a
    /// probe that had to wait would cost more than the primary read it tries to save.
    async fn probe_replica(&mut self, node: NodeId, needed: Lsn) -> Option<(Server, Lsn)> {
        let pool = self.pools.replicas.get(usize::from(node.0))?.clone();
        let mut timeouts = pool.manager().timeouts();
        timeouts.wait = Some(std::time::Duration::ZERO);
        if pool.status().available == 0 {
            return None;
        }
        let mut server = pool.timeout_get(&timeouts).await.ok()?;
        let timeout = self.login.topology.config.pooler.query_wait_timeout;
        match server.simple_query("SELECT pg_catalog.pg_last_wal_replay_lsn()", timeout).await {
            Ok(reply) if reply.error.is_none() && reply.status == TxStatus::Idle => {
                let lsn = reply.value.as_deref().and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.parse::<Lsn>().ok())?;
                // What one client learned helps every client: the monitor's view moves too.
                self.cluster.note_replay_lsn(node, lsn);
                tracing::debug!(client = %self.peer, replica = node.0, %lsn, %needed, "asked a replica for its replay LSN");
                (lsn >= needed).then_some((server, lsn))
            }
            _ => {
                discard(server);
                None
            }
        }
    }

    fn learn_commit(&mut self, lsn: Lsn) {
        tracing::debug!(client = %self.peer, %lsn, "commit LSN learned");
        self.routing.last_commit = self.routing.last_commit.max(lsn);
        replicas::note_commit(&self.cluster, lsn);
        DbStats::add(&self.login.db.stats.lsn_captured, 1);
    }

    /// A transaction ended where the pooler did not predict it (so no LSN query rode along):
    /// one round trip to learn its LSN before anyone can read after it.
    async fn capture_separately(&mut self, server: &mut Server) {
        let timeout = self.login.topology.config.pooler.query_wait_timeout;
        match server.simple_query(crate::relay::CAPTURE_SQL, timeout).await {
            Ok(reply) => {
                let lsn = reply.value.as_deref().and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.parse::<Lsn>().ok());
                if let Some(lsn) = lsn {
                    DbStats::add(&self.login.db.stats.lsn_capture_round_trips, 1);
                    self.learn_commit(lsn);
                }
            }
            Err(e) => tracing::warn!(node = %server.label, error = %e, "could not read the commit LSN"),
        }
    }

    fn slot(&self) -> &Arc<CancelSlot> {
        &self.login.registration.slot
    }

    /// Borrows a server connection and brings its session parameters in line with the
    /// client's. On failure the client's batch is answered with an error and `None` returned.
    async fn checkout(&mut self, route: Route) -> Option<Server> {
        let pools = self.pools.clone();
        let pool = match route {
            Route::Primary => &pools.primary,
            Route::Replica(node) => match pools.replicas.get(usize::from(node.0)) {
                Some(p) => p,
                None => &pools.primary,
            },
        };
        let wait_started = Instant::now();
        let label = pool.manager().target().label.clone();
        self.slot().start_wait(label.clone());
        let got = {
            let slot = self.slot().clone();
            let cancelled = slot.waiting.notified();
            let pooler = self.pooler.clone();
            let db = self.login.db.clone();
            let get = async {
                pooler.wait_unpaused(&db.name).await;
                pool.timeout_get(&pool.manager().timeouts()).await
            };
            tokio::select! {
                r = get => Some(r),
                _ = cancelled => None,
            }
        };
        self.slot().end_wait(ClientState::Idle);
        let waited = wait_started.elapsed();
        self.login.db.stats.metrics.server_wait_seconds.record(waited.as_secs_f64());
        DbStats::add(&self.login.db.stats.wait_time_us, waited.as_micros() as u64);
        let server = match got {
            None => {
                self.refuse_batch(sqlstate::QUERY_CANCELED, "canceling statement due to user request", None);
                return None;
            }
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                let settings = pool.manager().settings();
                let (code, msg, hint) = match &e {
                    PoolError::Timeout(TimeoutType::Wait) => (
                        sqlstate::QUERY_CANCELED.to_string(),
                        format!("query_wait_timeout: no server connection to {label} became free within {:?}", settings.wait_timeout),
                        Some("raise pooler.query_wait_timeout or the pool size, or shorten transactions"),
                    ),
                    PoolError::Timeout(_) => (
                        sqlstate::CONNECTION_FAILURE.to_string(),
                        format!("could not connect to {label} within {:?}", settings.connect_timeout),
                        Some("check that the server is up; pooler.server_connect_timeout governs the wait"),
                    ),
                    PoolError::Backend(se) => (se.sqlstate().to_string(), format!("could not connect to {label}: {se}"), None),
                    _ => (sqlstate::ADMIN_SHUTDOWN.to_string(), format!("pool {label} is closed"), None),
                };
                tracing::warn!(client = %self.peer, node = %label, error = %e, "no server connection");
                self.refuse_batch(&code, &msg, hint);
                return None;
            }
        };
        self.prepare(server).await
    }

    /// Brings a borrowed server connection's session parameters in line with the client's.
    /// On failure the client's batch is answered with an error and `None` returned.
    async fn prepare(&mut self, mut server: Server) -> Option<Server> {
        DbStats::add(&self.login.db.stats.server_assignment_count, 1);
        server.set_active(true);
        self.slot().set_state(ClientState::Active);
        if let Some(plan) = server.params.plan_towards(&self.login.params) {
            let timeout = self.login.topology.config.pooler.query_wait_timeout;
            match server.simple_query(&plan.sql, timeout).await {
                Ok(reply) => match reply.error {
                    None if reply.status == TxStatus::Idle => server.params = self.login.params.clone(),
                    None => {
                        discard(server);
                        self.refuse_batch(sqlstate::CONNECTION_FAILURE, "server left a transaction open while applying session parameters", None);
                        return None;
                    }
                    Some((code, message)) => {
                        let msg = format!("could not apply the session's startup parameters: {message}");
                        self.refuse_batch(&code, &msg, Some("fix the parameters in the connection string or options"));
                        return None;
                    }
                },
                Err(e) => {
                    discard(server);
                    self.refuse_batch(e.sqlstate(), &format!("server failed while applying session parameters: {e}"), None);
                    return None;
                }
            }
        }
        Some(server)
    }

    /// Returns a clean, idle server connection to its pool, closing statements over the cap.
    async fn release(&mut self, mut server: Server) {
        server.set_active(false);
        self.slot().set_state(ClientState::Idle);
        let cap = self.login.topology.config.pooler.max_prepared_statements;
        let evicted = server.statements.evict_over(cap);
        if !evicted.is_empty() {
            let mut req = BytesMut::new();
            for id in &evicted {
                let mut name = BytesMut::new();
                lsnpool_pool::statement_name(&mut name, *id);
                frontend::target(&mut req, frontend::CLOSE, b'S', &name);
            }
            frontend::sync(&mut req);
            let timeout = self.login.topology.config.pooler.query_wait_timeout;
            if server.run_internal(&req, 1, timeout).await.is_err() {
                discard(server);
                return;
            }
        }
        drop(server);
    }

    /// The client is gone (or the session ends): make the server reusable, or close it.
    async fn end_server(&mut self, mut server: Server, server_idle: bool, status: TxStatus) {
        server.set_active(false);
        if !server_idle {
            discard(server);
            return;
        }
        let timeout = self.login.topology.config.pooler.query_wait_timeout;
        let session_mode = self.login.topology.pool_mode() == PoolMode::Session;
        let reset = match (status, session_mode) {
            (TxStatus::Idle, false) => None,
            (TxStatus::Idle, true) => Some("DISCARD ALL"),
            (_, false) => Some("ROLLBACK"),
            (_, true) => Some("ROLLBACK; DISCARD ALL"),
        };
        if let Some(sql) = reset {
            match server.simple_query(sql, timeout).await {
                Ok(r) if r.error.is_none() && r.status == TxStatus::Idle => {
                    if sql.contains("DISCARD") {
                        server.statements.clear();
                        server.params = Default::default();
                    }
                }
                _ => {
                    discard(server);
                    return;
                }
            }
        }
        drop(server);
    }

    /// Waits for the client's next bytes; `None` when woken by KILL or shutdown instead.
    async fn read_idle(&mut self) -> io::Result<Option<usize>> {
        loop {
            // Shutdown wakes every client's `wake` too: one waiter per idle client, not two.
            let slot = self.login.registration.slot.clone();
            tokio::select! {
                r = self.client.stream.readable() => r?,
                _ = slot.wake.notified() => return Ok(None),
            }
            // Buffers are allocated only once the client has something to say.
            self.client.rbuf.reserve(READ_CHUNK);
            match crate::relay::read_available(&mut self.client.stream, &mut self.client.rbuf) {
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    async fn flush_client(&mut self) -> io::Result<()> {
        while !self.client.wbuf.is_empty() {
            self.client.stream.writable().await?;
            flush_now(&mut self.client.stream, &mut self.client.wbuf)?;
        }
        if self.client.rbuf.is_empty() {
            // Idle clients hold no buffers: that is what keeps 10 000 of them cheap.
            self.client.rbuf = BytesMut::new();
            self.client.wbuf = BytesMut::new();
        }
        Ok(())
    }

    fn fatal(&mut self, code: &str, msg: &str) {
        backend::error_response(&mut self.client.wbuf, &PoolerError::fatal(code, msg));
    }

    /// Answers the client's pending batch with an error, as a server would: a simple Query
    /// gets ErrorResponse + ReadyForQuery; an extended batch is skipped up to its Sync.
    fn refuse_batch(&mut self, code: &str, msg: &str, hint: Option<&str>) {
        let mut e = PoolerError::error(code, msg);
        e.hint = hint;
        backend::error_response(&mut self.client.wbuf, &e);
        if self.client.rbuf.first() == Some(&frontend::QUERY) {
            if let Ok(Some(h)) = peek_header(&self.client.rbuf, self.client.max_message_size) {
                self.client.rbuf.advance(h.frame_len);
            }
            backend::ready_for_query(&mut self.client.wbuf, TxStatus::Idle);
        } else {
            self.skip_until_sync = true;
            self.skip_refused_batch();
        }
    }

    fn skip_refused_batch(&mut self) {
        let mut consumed = 0;
        let mut synced = false;
        for (h, _) in Frames::new(&self.client.rbuf, self.client.max_message_size).map_while(Result::ok) {
            consumed += h.frame_len;
            if h.tag == frontend::SYNC {
                synced = true;
                break;
            }
        }
        self.client.rbuf.advance(consumed);
        if synced {
            self.skip_until_sync = false;
            backend::ready_for_query(&mut self.client.wbuf, TxStatus::Idle);
        }
    }
}

/// The chosen node, and what the router knew of it.
#[derive(Clone, Copy, Debug)]
struct Target {
    route: Route,
    /// The replica's polled replay LSN at decision time: a lower bound of what the read saw.
    replay_lsn: Lsn,
    /// A read sent to the primary for want of a fresh replica, under a monotonic level.
    monotonic_fallback: bool,
}

/// What the router remembers about one client.
struct ClientRouting {
    consistency: Consistency,
    last_commit: Lsn,
    last_read: Lsn,
    sticky: Option<NodeId>,
}

/// Closes a server connection instead of returning it to the pool.
fn discard(server: Server) {
    let conn = Object::take(server);
    tracing::debug!(node = %conn.label, pid = conn.key.pid, "server connection closed");
}

fn record(db: &Database, stats: &crate::relay::RelayStats, started: Instant, route: Route) {
    let elapsed_us = started.elapsed().as_micros() as u64;
    let s = &db.stats;
    DbStats::add(&s.xact_count, 1);
    DbStats::add(&s.query_count, stats.queries.max(1));
    DbStats::add(&s.received, stats.bytes_from_client);
    DbStats::add(&s.sent, stats.bytes_to_client);
    DbStats::add(&s.xact_time_us, elapsed_us);
    DbStats::add(&s.query_time_us, elapsed_us);
    DbStats::add(&s.client_parse_count, stats.client_parses);
    DbStats::add(&s.server_parse_count, stats.server_parses);
    DbStats::add(&s.bind_count, stats.binds);
    let m = &s.metrics;
    let (xacts, queries) = match route {
        Route::Primary => (&m.transactions_primary, &m.queries_primary),
        Route::Replica(_) => (&m.transactions_replica, &m.queries_replica),
    };
    xacts.increment(1);
    queries.increment(stats.queries.max(1));
    m.bytes_received.increment(stats.bytes_from_client);
    m.bytes_sent.increment(stats.bytes_to_client);
    m.transaction_seconds.record(elapsed_us as f64 / 1e6);
    if let Some(code) = stats.first_error {
        let class = String::from_utf8_lossy(&code[..2]).into_owned();
        metrics::counter!("lsnpool_errors_total", "class" => class).increment(1);
    }
}
