//! A logged-in client: idle between transactions (holding no server connection and no
//! buffers), then one transaction at a time on a server connection borrowed from a pool.

mod held;

use crate::batch;
use crate::clients::ClientSlot;
use crate::controls::Hold;
use crate::lease::{Borrower, Lease};
use crate::pooler::Pooler;
use crate::local;
use crate::login::LoggedIn;
use crate::prepared::ClientStatements;
use crate::relay::{flush_now, peek_header, ClientIo, Outcome, Relay, RelayPlan, SessionState};
use crate::replicas::ClusterState;
use crate::routing::{ClientRouter, Probed, Surroundings, Target};
use crate::rules::SessionRules;
use crate::stats::DbStats;
use crate::topology::ClusterPools;
use bytes::{Buf, BytesMut};
use lsnpool_config::PoolMode;
use lsnpool_protocol::backend::{self, PoolerError, TxStatus};
use lsnpool_protocol::frame::Frames;
use lsnpool_protocol::{frontend, sqlstate};
use lsnpool_router::{Lsn, PrimaryReason, Route, RoutingMode};
use std::io;
use std::sync::Arc;
use std::future::Future;
use std::task::Poll;
use std::time::Instant;

const READ_CHUNK: usize = 8 * 1024;

/// What ended an idle wait.
enum IdleEvent {
    Client(io::Result<()>),
    Server(io::Result<()>),
    Woken,
}

/// How many dead server connections one transaction may meet before its client is told: each
/// replay is safe, but a node that kills every connection must not be retried forever.
const MAX_REPLAYS: u32 = 3;

pub struct Session {
    pooler: Arc<Pooler>,
    client: ClientIo,
    login: LoggedIn,
    pools: Arc<ClusterPools>,
    statements: ClientStatements,
    /// Session pool mode keeps its server connection between transactions.
    /// Boxed: inline, an absent server connection would still cost every client its size.
    held: Option<Box<(Lease, Target)>>,
    router: ClientRouter,
    rules: SessionRules,
    /// A batch was refused with an error: drop the rest of it, up to its Sync.
    skip_until_sync: bool,
    /// Transaction mode: the client left something on its server connection that cannot
    /// follow it (LISTEN, a WITH HOLD cursor, SQL PREPARE, a temp table, an advisory lock), so
    /// it keeps that connection in `held`, as in session mode, until the server says it is gone.
    pinned: bool,
}

impl Session {
    pub fn new(
        pooler: Arc<Pooler>,
        stream: lsnpool_net::Stream,
        mut login: LoggedIn,
        pools: Arc<ClusterPools>,
        cluster: Arc<ClusterState>,
        pipelined: BytesMut,
    ) -> Session {
        let max_message_size = login.topology.config.pooler.max_message_size;
        let causal = crate::causal::Causal::new(pooler.token_store.clone(), login.report_commit_lsn);
        let router = ClientRouter::new(login.db.clone(), cluster, login.registration.slot.pid as u32, causal);
        DbStats::add(&login.db.stats.client_login_count, 1);
        let held = login.server.take().map(|lease| Box::new((*lease, Target::primary())));
        Session {
            rules: SessionRules::new(login.topology.rules.clone()),
            pooler,
            router,
            client: ClientIo { stream, rbuf: pipelined, wbuf: BytesMut::new(), max_message_size },
            login,
            pools,
            statements: ClientStatements::default(),
            held,
            skip_until_sync: false,
            pinned: false,
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
                let timeout = self.login.topology.config.pooler.query_wait_timeout;
                Box::pin(held.0.end(true, TxStatus::Idle, true, timeout)).await;
            }
            // Boxed too: its write-readiness future would otherwise sit beside `serve`'s.
            let _ = Box::pin(self.flush_client()).await;
            tracing::info!(
                client = %self.peer(), user = %self.login.user.name, database = %self.login.db.name,
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
                // Refused at its tag, as PostgreSQL does, before waiting for a body that may
                // never come (a second startup packet reads as tag 0 and a huge length).
                Ok(Some(h)) if !frontend::is_accepted_after_login(h.tag) => {
                    self.fatal(sqlstate::PROTOCOL_VIOLATION, &frontend::invalid_message_type(h.tag));
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
                    // Outside COPY the server ignores these; so do we, rather than lend a
                    // server for them.
                    frontend::FLUSH | frontend::COPY_DATA | frontend::COPY_DONE | frontend::COPY_FAIL => {
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
        let mut info = batch::analyze(&self.client.rbuf, self.client.max_message_size, &self.statements);
        if let Some(cmd) = info.pooler {
            let len = peek_header(&self.client.rbuf, self.client.max_message_size).ok().flatten().map_or(0, |h| h.frame_len);
            let frame = self.client.rbuf.split_to(len);
            let sql = frontend::parse_query(&frame).unwrap_or_default();
            let default = self.login.db.consistency;
            local::answer(cmd, sql, &mut self.router, default, &mut self.client.wbuf, TxStatus::Idle);
            return Ok(());
        }
        if let Some(cmd) = info.parsed_pooler {
            match batch::extended_command(&self.client.rbuf, self.client.max_message_size, cmd) {
                batch::Extended::Answer(x) => {
                    let batch = self.client.rbuf.split_to(x.len);
                    let sql = Frames::new(&batch, self.client.max_message_size)
                        .map_while(Result::ok)
                        .next()
                        .and_then(|(_, frame)| frontend::parse_parse(frame))
                        .map_or(&[][..], |p| p.query);
                    let default = self.login.db.consistency;
                    local::answer_extended(cmd, sql, x.describe, &mut self.router, default, &mut self.client.wbuf, TxStatus::Idle);
                }
                // The rest of the batch decides who answers it: wait for it.
                batch::Extended::Incomplete => match self.read_idle().await {
                    Ok(Some(0)) | Err(_) => return Err("client closed the connection"),
                    Ok(_) => {}
                },
                batch::Extended::Other => self.refuse_batch(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "lsnpool answers its own settings (SET, RESET and SHOW of lsnpool.*) sent as a simple Query, or as Parse/Bind/Execute/Sync of the unnamed statement without parameters",
                    Some("send SET lsnpool.<setting> = '...' as a simple query, not as a prepared statement (for example through your driver's execute-without-parameters call, or psycopg's prepare=False)"),
                ),
            }
            return Ok(());
        }
        // Session mode passes statements through as they are: none is answered here.
        let session_mode = self.login.topology.pool_mode() == PoolMode::Session;
        if self.held.is_none() && !session_mode {
            if let Some(len) = info.parse_only {
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
        if self.held.is_none() {
            let (buf, max) = (&self.client.rbuf, self.client.max_message_size);
            info.rule = self.rules.for_batch(&self.pooler, &self.login.db, &self.login.user.name, buf, max, &self.statements);
        }
        let key = info.session_key.and_then(|(start, end)| self.client.rbuf.get(start..end));
        self.router.causal.for_statement(key, info.min_lsn);
        let mut forced = None;
        let mut replays = 0;
        loop {
            let cluster = self.router.cluster().clone();
            let mut _outstanding = None;
            let (mut server, target) = match self.held.take() {
                Some(held) => *held,
                None => {
                    let (target, probed) = {
                        let topology = &self.login.topology;
                        let env = Surroundings {
                            routing: &topology.config.routing,
                            pool_mode: topology.pool_mode(),
                            pools: &self.pools,
                            query_timeout: topology.config.pooler.query_wait_timeout,
                            switch: &self.pooler.switch,
                        };
                        self.router.choose(&info, forced, &env).await
                    };
                    let hold = self.router.take_hold();
                    // Counted from the decision on, so concurrent decisions spread the load.
                    _outstanding = match target.route {
                        Route::Replica(node) => cluster.begin_read(node),
                        Route::Primary => Some(cluster.begin_primary()),
                    };
                    match self.lease(target.route, probed, hold).await {
                        Some(s) => (s, target),
                        None => return Ok(()),
                    }
                }
            };
            let config = &self.login.topology.config;
            let plan = RelayPlan {
                passthrough: session_mode,
                replayable: !session_mode && replays < MAX_REPLAYS,
                capture_lsn: target.route == Route::Primary && config.routing.capture_commit_lsn,
                capture_reads: target.capture_reads && config.routing.capture_commit_lsn,
                retry_guard: matches!(target.route, Route::Replica(_))
                    && self.login.db.mode == RoutingMode::Automatic
                    && !info.read_only_txn
                    && forced.is_none(),
                classified: info.classified,
            };
            let slot = self.slot().clone();
            slot.set_server(Some(server.key.clone()));
            let started = Instant::now();
            let (outcome, may_write, session_changed, session_bound, captured, captured_read, commit_ready) = {
                let commits = crate::relay::CommitNotice {
                    report_lsn: self.router.causal.report_commit_lsn,
                    defer_ready: self.router.causal.defers_commit(),
                };
                let state = SessionState { statements: &mut self.statements, params: &mut self.login.params, cluster: &cluster, commits };
                let mut relay = Relay::new(&mut self.client, &mut server, state, plan);
                let outcome = relay.run().await;
                crate::stats::record_transaction(&self.login.db, &relay.stats, started, target.route);
                (outcome, relay.may_write, relay.session_changed, relay.session_bound, relay.captured, relay.captured_read, relay.commit_ready.take())
            };
            slot.set_server(None);
            if let Some(lsn) = captured {
                self.router.learn_commit(lsn);
            }
            if let Some(ready) = commit_ready {
                // The client sees its commit only once the commit is where other connections
                // (and instances) will look for it.
                if let Some(lsn) = captured {
                    self.router.causal.record_commit(cluster.name(), lsn).await;
                }
                self.client.wbuf.extend_from_slice(&ready);
            }
            if let Some(lsn) = captured_read {
                self.router.learn_read(lsn);
            }
            let timeout = self.login.topology.config.pooler.query_wait_timeout;
            match outcome {
                Outcome::Done => {
                    if plan.capture_lsn && may_write {
                        self.capture_separately(&mut server).await;
                    }
                    self.router.served(&target);
                    if session_mode {
                        self.hold(server, target);
                        return Ok(());
                    }
                    if session_changed {
                        // The client's session is what the server now holds; the connection's
                        // record says so too, so the next borrower's sync undoes it.
                        match server.read_session(&self.login.user.name, timeout).await {
                            Some(session) => self.login.params = session,
                            None => {
                                tracing::warn!(client = %self.peer(), node = %server.label, "could not read the session back; closing the server connection");
                                server.discard();
                                return Ok(());
                            }
                        }
                    }
                    if session_bound || self.pinned {
                        match server.holds_session_objects(timeout).await {
                            Some(true) => {
                                if !self.pinned {
                                    tracing::debug!(client = %self.peer(), node = %server.label, "client pinned to its server connection");
                                }
                                self.pinned = true;
                                self.hold(server, target);
                                return Ok(());
                            }
                            Some(false) => self.pinned = false,
                            None => {
                                self.pinned = false;
                                server.discard();
                                return Ok(());
                            }
                        }
                    }
                    self.release(server).await;
                    return Ok(());
                }
                Outcome::RetryOnPrimary(saved) => {
                    // The replica is idle again; replay the client's bytes on the primary.
                    self.release(server).await;
                    let mut rbuf = saved;
                    rbuf.extend_from_slice(&self.client.rbuf);
                    self.client.rbuf = rbuf;
                    forced = Some(PrimaryReason::Retry25006);
                    tracing::debug!(client = %self.peer(), "replica refused a write (25006); retrying on the primary");
                }
                Outcome::ReplayElsewhere(saved) => {
                    // The server never read these bytes: run them on another connection.
                    server.discard();
                    replays += 1;
                    let mut rbuf = saved;
                    rbuf.extend_from_slice(&self.client.rbuf);
                    self.client.rbuf = rbuf;
                }
                Outcome::ClientGone { server_idle, status } => {
                    // What the client left on the server is nobody's now: reset it all.
                    let reset = session_mode || self.pinned || session_changed || session_bound;
                    server.end(server_idle, status, reset, timeout).await;
                    return Err("client closed the connection mid-transaction");
                }
                Outcome::DoneOnDeadServer => {
                    tracing::info!(client = %self.peer(), node = %server.label, "server connection died after the transaction ended, before its LSN was read");
                    server.discard();
                    if plan.capture_lsn && may_write {
                        self.capture_on_another_connection().await;
                    }
                    if session_mode || std::mem::take(&mut self.pinned) {
                        // The client's session lived on that connection.
                        return Err("server connection lost");
                    }
                    return Ok(());
                }
                Outcome::ServerLost => {
                    tracing::warn!(client = %self.peer(), node = %server.label, "server connection lost mid-transaction");
                    server.discard();
                    return Err("server connection lost");
                }
                Outcome::ClientViolation => {
                    server.discard();
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
            self.statements.insert(p.name, p.body, class, crate::relay::TextFlags::of(p.query, &class));
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

    /// A transaction ended where the pooler did not predict it (so no LSN query rode along):
    /// one round trip to learn its LSN before anyone can read after it.
    async fn capture_separately(&mut self, server: &mut Lease) {
        let timeout = self.login.topology.config.pooler.query_wait_timeout;
        let asked = if self.login.topology.pool_mode() == PoolMode::Session {
            // Not a simple Query: that would drop the client's unnamed statement.
            let mut req = BytesMut::new();
            crate::relay::transient_capture(&mut req);
            server.run_internal(&req, 1, timeout).await
        } else {
            server.simple_query(crate::relay::CAPTURE_SQL, timeout).await
        };
        match asked {
            Ok(reply) => {
                if let Some(lsn) = reply.value.as_deref().and_then(Lsn::from_text) {
                    DbStats::add(&self.login.db.stats.lsn_capture_round_trips, 1);
                    self.router.learn_commit(lsn);
                    // Late (the client has its ReadyForQuery), but keyed reads from now on see it.
                    let cluster = self.router.cluster().clone();
                    self.router.causal.record_commit(cluster.name(), lsn).await;
                }
            }
            Err(e) => tracing::warn!(node = %server.label, error = %e, "could not read the commit LSN"),
        }
    }

    /// A commit whose connection died before its LSN was read: any primary connection's WAL
    /// insert position is at or past it, so another one answers for it.
    async fn capture_on_another_connection(&mut self) {
        let who = Borrower { slot: &self.login.registration.slot, db: &self.login.db };
        match Lease::checkout(self.pools.primary(), None, &who).await {
            Ok(mut lease) => {
                self.capture_separately(&mut lease).await;
                self.release(lease).await;
            }
            Err(r) => tracing::warn!(client = %self.peer(), error = %r.message, "could not read a commit's LSN on another connection"),
        }
    }

    /// The client's address, kept once in its registry slot.
    fn peer(&self) -> crate::clients::ClientAddr {
        self.slot().info.addr
    }

    fn slot(&self) -> &Arc<ClientSlot> {
        &self.login.registration.slot
    }
    /// A server connection on `route` (or the one a probe found fresh), its session
    /// parameters brought in line with the client's, holding the read budget permit the
    /// routing took. On failure (or a refusal from the routing) the client's batch is answered
    /// with an error and `None` returned.
    async fn lease(&mut self, route: Route, mut probed: Option<Probed>, hold: Option<Hold>) -> Option<Lease> {
        let (mut permit, refused) = match hold {
            Some(Hold::Permit(p)) => (Some(p), None),
            Some(Hold::Refuse(r)) => (None, Some(r)),
            None => (None, None),
        };
        if let Some(r) = refused {
            self.refuse_batch(&r.code, &r.message, r.hint);
            return None;
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.try_lease(route, probed.take()).await {
                Ok(lease) => return Some(lease.holding(permit.take())),
                // Nothing of the client's reached that server: another connection is safe.
                Err(r) if r.server_died && attempts <= MAX_REPLAYS => {
                    tracing::debug!(client = %self.peer(), message = %r.message, "server connection died before use; taking another");
                }
                Err(r) => {
                    tracing::debug!(client = %self.peer(), code = %r.code, message = %r.message, "batch refused");
                    self.refuse_batch(&r.code, &r.message, r.hint);
                    return None;
                }
            }
        }
    }

    async fn try_lease(&mut self, route: Route, probed: Option<Probed>) -> Result<Lease, crate::lease::Refusal> {
        let who = Borrower { slot: &self.login.registration.slot, db: &self.login.db };
        let lent = match probed {
            Some(server) => Ok(Lease::lent(server, &who)),
            None => {
                let pool = match route {
                    Route::Replica(node) => self.pools.node(node).unwrap_or_else(|| self.pools.primary()),
                    // Read once per checkout: after a failover, the new primary's pool.
                    Route::Primary => self.pools.primary(),
                };
                Lease::checkout(pool, Some((&self.pooler, &self.login.db.name)), &who).await
            }
        };
        let timeout = self.login.topology.config.pooler.query_wait_timeout;
        match lent {
            Ok(lease) => lease.sync_params(&self.login.params, timeout).await,
            Err(refusal) => Err(refusal),
        }
    }

    async fn release(&mut self, server: Lease) {
        let config = &self.login.topology.config.pooler;
        server.release(&self.login.registration.slot, config.max_prepared_statements, config.query_wait_timeout).await;
    }

    /// Waits for the client's next bytes; `None` when woken by KILL or shutdown instead, or
    /// after relaying what a held server connection said on its own.
    async fn read_idle(&mut self) -> io::Result<Option<usize>> {
        loop {
            // Shutdown wakes every client's `wake` too: one waiter per idle client, not two.
            let slot = self.login.registration.slot.clone();
            let mut woken = std::pin::pin!(slot.wake.notified());
            // Polled, not awaited: readiness futures for the client and a held server would
            // sit in every idle client's task (their size is most of an idle client's memory).
            let (client, held) = (&self.client.stream, self.held.as_deref().map(|(lease, _)| &lease.stream));
            let event = std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = client.poll_read_ready(cx) {
                    return Poll::Ready(IdleEvent::Client(r));
                }
                if let Some(Poll::Ready(r)) = held.map(|s| s.poll_read_ready(cx)) {
                    return Poll::Ready(IdleEvent::Server(r));
                }
                if woken.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(IdleEvent::Woken);
                }
                Poll::Pending
            })
            .await;
            match event {
                IdleEvent::Client(r) => r?,
                IdleEvent::Server(r) => {
                    r?;
                    self.relay_server_messages()?;
                    return Ok(None);
                }
                IdleEvent::Woken => return Ok(None),
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
            // Polled, not awaited: the writability future would be the largest state of an
            // idle client's task (see read_idle).
            let stream = &self.client.stream;
            std::future::poll_fn(|cx| stream.poll_write_ready(cx)).await?;
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
            // PostgreSQL checks each message's type even while it skips to Sync: a refused one
            // is left for `serve` to answer with 08P01 and a close, as it would be unskipped.
            if !frontend::is_accepted_after_login(h.tag) {
                break;
            }
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
