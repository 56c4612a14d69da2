//! One transaction's worth of relaying between a client and the server connection lent to it.
//!
//! Bytes move in runs: frames are forwarded as contiguous slices of the read buffer, and when
//! nothing must be rewritten they are written straight from it, so a typical reply costs one
//! read and one write and no copy. Frames are decoded only where the pooler must act:
//! - client Parse/Bind/Describe/Close of *named* statements are renamed to the server's shared
//!   `lsnpool_<id>` statements (`statements`; not in session mode, which passes them through);
//! - server ParseComplete/CloseComplete are matched against what was sent, so answers to
//!   statements the pooler prepared on its own are swallowed (`statements`);
//! - the commit LSN is asked for behind the transaction's last message (`capture`);
//! - on a replica, replies are held until the first result so a 25006 can be replayed on the
//!   primary unseen (`retry`);
//! - ReadyForQuery ends the transaction once no Sync is outstanding and the server is idle.
//!
//! `client_frames` and `server_frames` walk the frames of each direction and hand the ones
//! that matter to those parts; `io` is the only place that touches the sockets.

mod capture;
mod client_frames;
mod copy;
mod io;
mod replay;
mod retry;
mod server_frames;
mod sql;
mod statements;

pub(crate) use capture::{transient_capture, CAPTURE_SQL};
pub use io::{flush_now, peek_header, read_available, ClientIo};
pub(crate) use sql::TextFlags;

use crate::batch::Classified;
use crate::prepared::ClientStatements;
use bytes::BytesMut;
use capture::Captures;
use copy::CopyTracker;
use lsnpool_pool::{ParamSync, ServerConn};
use lsnpool_protocol::backend::{self, TxStatus};
use lsnpool_router::{Classification, Lsn};
use retry::RetryGuard;
use statements::Outstanding;
use std::task::Poll;

/// Stop reading a side once this much is waiting to be written to the other: a slow reader
/// throttles the sender instead of growing our memory.
const HIGH_WATER: usize = 256 * 1024;

/// Session state the relay reads and updates.
pub struct SessionState<'a> {
    pub statements: &'a mut ClientStatements,
    pub params: &'a mut ParamSync,
    /// Where commit LSNs are published for the `global` level, before the client can see
    /// its commit.
    pub cluster: &'a lsnpool_monitor::ClusterState,
    pub commits: CommitNotice,
}

/// What the session wants done when a transaction commits (issue 10).
#[derive(Clone, Copy, Debug, Default)]
pub struct CommitNotice {
    /// Send ParameterStatus `lsnpool.commit_lsn` before the commit's ReadyForQuery.
    pub report_lsn: bool,
    /// Hand the commit's ReadyForQuery to the session instead of the client (when it ends
    /// the relay): the session records the commit in the token store first.
    pub defer_ready: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The transaction is over; the server connection is idle and clean.
    Done,
    /// The client went away. `server_idle` says whether the server is at a message boundary
    /// with nothing outstanding (then `status` tells whether a ROLLBACK is needed).
    ClientGone { server_idle: bool, status: TxStatus },
    /// The server connection failed; the client has been told and must be closed.
    ServerLost,
    /// The client's transaction ended and it has its ReadyForQuery, but the server died
    /// before the pooler's commit-LSN capture answered: close the connection, and learn the
    /// LSN on another primary connection if `may_write`.
    DoneOnDeadServer,
    /// The client broke the protocol; it has been told and must be closed.
    ClientViolation,
    /// A replica refused a write (25006) before the client saw anything: the replica
    /// connection is idle again, and these client bytes must be replayed on the primary.
    RetryOnPrimary(BytesMut),
    /// The server was dead before it read the transaction (see `replay`): its connection is
    /// to be closed and these client bytes run on another, unseen by the client.
    ReplayElsewhere(BytesMut),
}

/// What the relay does beyond relaying, decided by the router for this transaction.
#[derive(Clone, Copy, Debug, Default)]
pub struct RelayPlan {
    /// Learn the commit LSN of transactions that may have written (primary routes).
    pub capture_lsn: bool,
    /// Also learn the LSN after transactions that only read: a read the primary served in
    /// place of a replica saw data up to there, and the client's next read must not see less.
    pub capture_reads: bool,
    /// Hold the replies of a replica-routed transaction until its first row, so a 25006
    /// (the statement wrote after all) can be retried on the primary unseen.
    pub retry_guard: bool,
    /// The batch analysis's classifications of the client buffer's Query and Parse frames.
    pub classified: Classified,
    /// The session can run this transaction on another connection if this one proves dead
    /// before reading it (transaction mode, attempts left).
    pub replayable: bool,
    /// Session mode: the client has the server session to itself; its statements keep their
    /// names and the pooler leaves no object of its own there.
    pub passthrough: bool,
}

#[derive(Default, Debug, Clone, Copy)]
pub struct RelayStats {
    pub queries: u64,
    pub client_parses: u64,
    pub server_parses: u64,
    pub binds: u64,
    pub bytes_from_client: u64,
    pub bytes_to_client: u64,
    /// SQLSTATE of the first error the server raised, if any.
    pub first_error: Option<[u8; 5]>,
}

pub struct Relay<'c, 's, 'st> {
    client: &'c mut ClientIo,
    server: &'s mut ServerConn,
    state: SessionState<'st>,
    to_server: BytesMut,
    out: Outstanding,
    status: TxStatus,
    /// Bytes of a big uninspected server message still to stream through.
    streaming: usize,
    pub stats: RelayStats,
    plan: RelayPlan,
    /// Whether the client's messages so far leave a transaction block open.
    predicted_in_txn: bool,
    /// A statement that may have written ran since the last LSN capture.
    pub may_write: bool,
    /// A statement may have changed the session (SET, RESET, set_config, DISCARD ALL): the
    /// session reads it back from the server before the connection goes to anyone else.
    pub session_changed: bool,
    /// A statement may have left something on the server connection that outlives the
    /// transaction (LISTEN, a WITH HOLD cursor, SQL PREPARE, a temp table, an advisory lock):
    /// the session asks the server whether the client must stay pinned to it.
    pub session_bound: bool,
    /// A schema change (CREATE, DROP, ALTER) ran in this transaction: its rollback is one
    /// too (`lsnpool_pool::schema_changed`).
    ddl_seen: bool,
    /// Class of the last unnamed Parse, for the Binds that follow it.
    unnamed_class: Option<Classification>,
    captures: Captures,
    /// The newest commit LSN learned in this transaction.
    pub captured: Option<Lsn>,
    /// The newest LSN learned after a read-only transaction.
    pub captured_read: Option<Lsn>,
    /// A commit's ReadyForQuery held for the session (`CommitNotice::defer_ready`).
    pub commit_ready: Option<[u8; 6]>,
    guard: Option<RetryGuard>,
    /// A 25006 was seen under the guard: swallow everything until the replica is idle.
    retrying: bool,
    copy: CopyTracker,
    /// The client bytes sent while nothing has come back from the server (`replay`).
    replay: Option<BytesMut>,
    /// Writes to the server while `replay` is kept.
    flight_writes: u32,
    /// When the first of them went out.
    flight_at: Option<std::time::Instant>,
    /// The server's first message is a FATAL held back while we learn whether to replay.
    fatal_held: bool,
}

impl Drop for Relay<'_, '_, '_> {
    fn drop(&mut self) {
        // Unsent bytes only remain when the connection is being discarded anyway.
        self.to_server.clear();
        self.server.wbuf = std::mem::take(&mut self.to_server);
        self.stop_replay();
    }
}

impl<'c, 's, 'st> Relay<'c, 's, 'st> {
    pub fn new(client: &'c mut ClientIo, server: &'s mut ServerConn, state: SessionState<'st>, plan: RelayPlan) -> Self {
        let guard = plan.retry_guard.then(|| RetryGuard::new(client.wbuf.len()));
        // The server connection keeps its write buffer between transactions: one allocation
        // per connection, not one per transaction.
        let to_server = std::mem::take(&mut server.wbuf);
        let mut relay = Relay {
            client,
            server,
            state,
            to_server,
            out: Outstanding::default(),
            status: TxStatus::Idle,
            streaming: 0,
            stats: RelayStats::default(),
            plan,
            predicted_in_txn: false,
            may_write: false,
            session_changed: false,
            session_bound: false,
            ddl_seen: false,
            unnamed_class: None,
            captures: Captures::default(),
            captured: None,
            captured_read: None,
            commit_ready: None,
            guard,
            retrying: false,
            copy: CopyTracker::default(),
            replay: None,
            flight_writes: 0,
            flight_at: None,
            fatal_held: false,
        };
        relay.start_replay();
        relay
    }

    /// Runs until the transaction ends. The client's first message(s) are already in its
    /// read buffer.
    pub async fn run(&mut self) -> Outcome {
        let step = self.pump_client();
        if let Some(outcome) = self.client_input_sent(step).await {
            return outcome;
        }
        let mut turn = false;
        loop {
            if self.retrying && self.out.idle() && self.to_server.is_empty() {
                let saved = self.take_saved();
                return Outcome::RetryOnPrimary(saved);
            }
            if self.transaction_over() {
                return Outcome::Done;
            }
            let want_client = self.to_server.len() < HIGH_WATER && !self.retrying;
            let want_server = self.client.wbuf.len() < HIGH_WATER || self.guard.is_some();
            let can_write_client = self.client_output_waiting() && self.guard.is_none();
            // Polled, not awaited: readiness futures would be made, queued as waiters and
            // unqueued again on every turn of this loop, i.e. several times per transaction.
            let (client, server) = (&self.client.stream, &self.server.stream);
            let write_server = self.server_output_waiting();
            // The side looked at first alternates, as select! would randomize: a server that
            // streams without pause must not keep the client's bytes waiting.
            turn = !turn;
            let event = std::future::poll_fn(|cx| {
                let server_read = |cx: &mut std::task::Context<'_>| match want_server {
                    true => server.poll_read_ready(cx).map(Event::ServerReadable),
                    false => Poll::Pending,
                };
                let client_read = |cx: &mut std::task::Context<'_>| match want_client {
                    true => client.poll_read_ready(cx).map(Event::ClientReadable),
                    false => Poll::Pending,
                };
                let first = if turn { server_read(cx) } else { client_read(cx) };
                if first.is_ready() {
                    return first;
                }
                let second = if turn { client_read(cx) } else { server_read(cx) };
                if second.is_ready() {
                    return second;
                }
                if write_server {
                    if let Poll::Ready(r) = server.poll_write_ready(cx) {
                        return Poll::Ready(Event::ServerWritable(r));
                    }
                }
                if can_write_client {
                    if let Poll::Ready(r) = client.poll_write_ready(cx) {
                        return Poll::Ready(Event::ClientWritable(r));
                    }
                }
                Poll::Pending
            })
            .await;
            match event {
                Event::ServerReadable(r) => {
                    if let Err(e) = r.and_then(|()| self.read_server()) {
                        return self.server_failed(e).await;
                    }
                }
                Event::ClientReadable(r) => {
                    if r.is_err() {
                        return self.client_gone();
                    }
                    let step = self.read_client();
                    if let Some(outcome) = self.client_input_sent(step).await {
                        return outcome;
                    }
                }
                Event::ServerWritable(r) => {
                    if let Err(e) = r.and_then(|()| self.flush_server_now()) {
                        return self.server_failed(e).await;
                    }
                }
                Event::ClientWritable(r) => {
                    if r.is_err() || self.flush_client_now().is_err() {
                        return self.client_gone();
                    }
                }
            }
        }
    }

    /// Sends on what the client's bytes produced for the server; the outcome when the client
    /// left or broke the protocol, or the server cannot take them.
    async fn client_input_sent(&mut self, step: Result<ClientStep, Violation>) -> Option<Outcome> {
        match step {
            Ok(ClientStep::Continue) => {}
            Ok(ClientStep::Gone) => return Some(self.client_gone()),
            Err(v) => return Some(self.violation(v)),
        }
        if let Err(e) = self.flush_server_now() {
            return Some(self.server_failed(e).await);
        }
        None
    }

    fn transaction_over(&self) -> bool {
        self.out.idle() && self.status == TxStatus::Idle && self.streaming == 0 && self.to_server.is_empty()
            && self.out.sent > 0
    }

    fn client_gone(&mut self) -> Outcome {
        Outcome::ClientGone {
            server_idle: self.out.idle() && self.streaming == 0 && self.to_server.is_empty() && self.server.buf.is_empty(),
            status: self.status,
        }
    }

    /// The server connection failed: replayed elsewhere when that is provably safe, else the
    /// client is told.
    async fn server_failed(&mut self, e: std::io::Error) -> Outcome {
        self.server.broken = true;
        if self.finish_without_capture() {
            return Outcome::DoneOnDeadServer;
        }
        if let Some(saved) = self.replay_after(&e).await {
            return Outcome::ReplayElsewhere(saved);
        }
        self.server_lost()
    }

    fn server_lost(&mut self) -> Outcome {
        self.server.broken = true;
        if self.release_held_fatal() {
            // The server said why in its own words (e.g. 57P01): the client gets that.
            return Outcome::ServerLost;
        }
        let e = backend::PoolerError::fatal(
            lsnpool_protocol::sqlstate::CONNECTION_FAILURE,
            "server connection lost during the transaction; it did not commit unless the server confirmed it",
        );
        backend::error_response(&mut self.client.wbuf, &e);
        Outcome::ServerLost
    }

    fn violation(&mut self, v: Violation) -> Outcome {
        let e = backend::PoolerError::fatal(lsnpool_protocol::sqlstate::PROTOCOL_VIOLATION, &v.0);
        backend::error_response(&mut self.client.wbuf, &e);
        Outcome::ClientViolation
    }
}

/// What woke the relay.
enum Event {
    ServerReadable(std::io::Result<()>),
    ClientReadable(std::io::Result<()>),
    ServerWritable(std::io::Result<()>),
    ClientWritable(std::io::Result<()>),
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum ClientStep {
    Continue,
    Gone,
}

#[derive(Debug)]
pub struct Violation(pub String);

impl Violation {
    fn malformed(what: &str) -> Violation {
        Violation(format!("malformed {what} message"))
    }
}
