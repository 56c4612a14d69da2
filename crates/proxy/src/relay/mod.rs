//! One transaction's worth of relaying between a client and the server connection lent to it.
//!
//! Bytes move in runs: frames are forwarded as contiguous slices of the read buffer, and when
//! nothing must be rewritten they are written straight from it, so a typical reply costs one
//! read and one write and no copy. Frames are decoded only where the pooler must act:
//! - client Parse/Bind/Describe/Close of *named* statements are renamed to the server's shared
//!   `lsnpool_<id>` statements (a Parse the server already has becomes a Close of a name that
//!   does not exist, whose CloseComplete is turned back into the ParseComplete the client
//!   expects, in order and without an extra round trip);
//! - server ParseComplete/CloseComplete are matched against what was sent, so answers to
//!   statements the pooler prepared on its own are swallowed;
//! - ReadyForQuery ends the transaction once no Sync is outstanding and the server is idle.

use crate::prepared::{ClientStatement, ClientStatements};
use bytes::{Buf, Bytes, BytesMut};
use lsnpool_router::{classify_bytes as classify_sql, Classification, Deallocate, StatementClass};
use lsnpool_router::Lsn;
use lsnpool_pool::{CaptureStatement, ParamSync, ServerConn, StatementId, StatementName};
use lsnpool_protocol::backend::{self, TxStatus};
use lsnpool_protocol::frame::{Frames, Header};
use lsnpool_protocol::frontend;
use std::collections::VecDeque;
use std::io;
use tokio::net::TcpStream;

/// Stop reading a side once this much is waiting to be written to the other: a slow reader
/// throttles the sender instead of growing our memory.
const HIGH_WATER: usize = 256 * 1024;
/// A server message bigger than this that the pooler does not inspect is streamed through
/// instead of buffered whole.
const STREAM_THRESHOLD: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;
/// A Close for this name never finds anything, which is the point: its CloseComplete holds
/// the place of a ParseComplete the server is not asked to produce.
const NO_SUCH_STATEMENT: &[u8] = b"lsnpool_none";

/// The client's socket and buffers; buffers are empty (unallocated) while the client idles.
pub struct ClientIo {
    pub stream: TcpStream,
    pub rbuf: BytesMut,
    pub wbuf: BytesMut,
    pub max_message_size: usize,
}

/// Session state the relay reads and updates.
pub struct SessionState<'a> {
    pub statements: &'a mut ClientStatements,
    pub params: &'a mut ParamSync,
    /// Where commit LSNs are published for the `global` level, before the client can see
    /// its commit.
    pub cluster: &'a lsnpool_monitor::ClusterState,
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
    /// The client broke the protocol; it has been told and must be closed.
    ClientViolation,
    /// A replica refused a write (25006) before the client saw anything: the replica
    /// connection is idle again, and these client bytes must be replayed on the primary.
    RetryOnPrimary(BytesMut),
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
    /// The router's classification of the client buffer's first frame, a simple Query.
    pub first_query: Option<Classification>,
}

/// The query the pooler runs behind a transaction's last message to learn its commit LSN: the
/// insert position is at or past the end of the commit record.
macro_rules! capture_query {
    () => {
        "SELECT pg_catalog.pg_current_wal_insert_lsn()"
    };
}
/// Also run alone when a commit's LSN could not ride along (`Session::capture_separately`).
pub(crate) const CAPTURE_SQL: &str = capture_query!();
/// Its Parse body (query, no parameter types): prepared once per server connection, so a
/// commit costs the server a Bind and an Execute, not a parse and a plan.
const CAPTURE_PARSE_BODY: &[u8] = concat!(capture_query!(), "\0\0\0").as_bytes();

struct RetryGuard {
    /// Every client byte sent to the replica, to replay on the primary.
    saved: BytesMut,
    /// Length of the client's output buffer when the transaction began.
    mark: usize,
}

/// What one outstanding server response stands for.
enum ParseAnswer {
    /// The client's own Parse: forward its ParseComplete. `undo` forgets what the pooler
    /// recorded if the Parse fails.
    Forward(Option<Undo>),
    /// A Parse the pooler added to prepare a statement a Bind/Describe needs: swallow it.
    Swallow(Undo),
}

enum CloseAnswer {
    /// The client's Close. A statement it closed is forgotten at once (a Parse of the same
    /// name may follow in the pipeline) and restored if the server skips the Close.
    Forward(Option<(Bytes, ClientStatement)>),
    /// Stands in for a skipped Parse: becomes a ParseComplete. Holds the client name to
    /// forget if the server skips it.
    AsParseComplete(Bytes),
}

struct Undo {
    hash: u64,
    client_name: Option<Bytes>,
}

/// Bookkeeping of what the server still owes the client.
#[derive(Default)]
struct Outstanding {
    /// Sync/Query/FunctionCall sent whose ReadyForQuery has not arrived.
    ready: usize,
    /// Extended-protocol messages sent since the last Sync.
    unsynced: bool,
    /// Counts of ReadyForQuery-terminated segments sent and answered: an entry queued while
    /// `sent == k` is answered before the (k+1)th ReadyForQuery.
    sent: u64,
    answered: u64,
    parses: VecDeque<(u64, ParseAnswer)>,
    closes: VecDeque<(u64, CloseAnswer)>,
}

impl Outstanding {
    fn idle(&self) -> bool {
        self.ready == 0 && !self.unsynced
    }
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
    /// Class of the last unnamed Parse, for the Binds that follow it.
    unnamed_class: Option<Classification>,
    /// Segments (by number) that are the pooler's own LSN captures, answered in order, and
    /// whether the transaction they follow may have written.
    captures: VecDeque<(u64, bool)>,
    /// The client's ReadyForQuery, held until its capture answer is read.
    held_ready: Option<[u8; 6]>,
    capture_value: Option<Lsn>,
    /// The newest commit LSN learned in this transaction.
    pub captured: Option<Lsn>,
    /// The newest LSN learned after a read-only transaction.
    pub captured_read: Option<Lsn>,
    guard: Option<RetryGuard>,
    /// A 25006 was seen under the guard: swallow everything until the replica is idle.
    retrying: bool,
    /// A COPY may run in this transaction: nothing may be appended behind the client's
    /// messages (it would arrive in the middle of copy-in), so the LSN is asked afterwards.
    copy_seen: bool,
    /// Whether the last copy-relevant client message was an Execute, and how many Syncs
    /// followed it: if that Execute starts a COPY FROM STDIN, the server ignores them.
    syncs_after_execute: Option<usize>,
    /// The server is in copy-in mode for an extended-protocol COPY: Syncs are ignored.
    copy_in_extended: bool,
    unnamed_copy: bool,
}

impl Drop for Relay<'_, '_, '_> {
    fn drop(&mut self) {
        // Unsent bytes only remain when the connection is being discarded anyway.
        self.to_server.clear();
        self.server.wbuf = std::mem::take(&mut self.to_server);
    }
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

impl<'c, 's, 'st> Relay<'c, 's, 'st> {
    pub fn new(client: &'c mut ClientIo, server: &'s mut ServerConn, state: SessionState<'st>, plan: RelayPlan) -> Self {
        let guard = plan.retry_guard.then(|| RetryGuard { saved: BytesMut::new(), mark: client.wbuf.len() });
        // The server connection keeps its write buffer between transactions: one allocation
        // per connection, not one per transaction.
        let to_server = std::mem::take(&mut server.wbuf);
        Relay {
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
            unnamed_class: None,
            captures: VecDeque::new(),
            held_ready: None,
            capture_value: None,
            captured: None,
            captured_read: None,
            guard,
            retrying: false,
            copy_seen: false,
            syncs_after_execute: None,
            copy_in_extended: false,
            unnamed_copy: false,
        }
    }

    /// Runs until the transaction ends. The client's first message(s) are already in its
    /// read buffer.
    pub async fn run(&mut self) -> Outcome {
        match self.pump_client() {
            Ok(ClientStep::Continue) => {}
            Ok(ClientStep::Gone) => return self.client_gone(),
            Err(v) => return self.violation(v),
        }
        if self.flush_server_now().is_err() {
            return self.server_lost();
        }
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
            let can_write_client = !self.client.wbuf.is_empty() && self.guard.is_none();
            tokio::select! {
                r = self.server.stream.readable(), if want_server => {
                    if r.is_err() || self.read_server().is_err() {
                        return self.server_lost();
                    }
                }
                r = self.client.stream.readable(), if want_client => {
                    if r.is_err() {
                        return self.client_gone();
                    }
                    match self.read_client() {
                        Ok(ClientStep::Continue) => {}
                        Ok(ClientStep::Gone) => return self.client_gone(),
                        Err(v) => return self.violation(v),
                    }
                    if self.flush_server_now().is_err() {
                        return self.server_lost();
                    }
                }
                r = self.server.stream.writable(), if !self.to_server.is_empty() => {
                    if r.is_err() || self.flush_server_now().is_err() {
                        return self.server_lost();
                    }
                }
                r = self.client.stream.writable(), if can_write_client => {
                    if r.is_err() || flush_now(&self.client.stream, &mut self.client.wbuf).is_err() {
                        return self.client_gone();
                    }
                }
            }
        }
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

    fn server_lost(&mut self) -> Outcome {
        self.server.broken = true;
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

    fn read_client(&mut self) -> Result<ClientStep, Violation> {
        self.client.rbuf.reserve(READ_CHUNK);
        match read_available(&self.client.stream, &mut self.client.rbuf) {
            Ok(0) => return Ok(ClientStep::Gone),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ClientStep::Continue),
            Err(_) => return Ok(ClientStep::Gone),
        }
        self.pump_client()
    }

    /// Forwards every complete client frame in the read buffer, rewriting what must be.
    fn pump_client(&mut self) -> Result<ClientStep, Violation> {
        let rbuf = std::mem::take(&mut self.client.rbuf);
        let r = self.forward_client_frames(&rbuf);
        // Valid for the buffer the router saw only.
        self.plan.first_query = None;
        let consumed = match r {
            Ok((consumed, step)) => {
                if step == ClientStep::Gone {
                    return Ok(step);
                }
                consumed
            }
            Err(v) => return Err(v),
        };
        self.stats.bytes_from_client += consumed as u64;
        if let Some(g) = &mut self.guard {
            g.saved.extend_from_slice(&rbuf[..consumed]);
        }
        self.client.rbuf = rbuf;
        self.client.rbuf.advance(consumed);
        Ok(ClientStep::Continue)
    }

    fn forward_client_frames(&mut self, buf: &[u8]) -> Result<(usize, ClientStep), Violation> {
        let mut frames = Frames::new(buf, self.client.max_message_size);
        let mut run_start = 0;
        let mut pos = 0;
        for item in &mut frames {
            let (h, frame) = item.map_err(|e| Violation(e.to_string()))?;
            let start = pos;
            pos += h.frame_len;
            match h.tag {
                frontend::PARSE => {
                    self.out.unsynced = true;
                    self.stats.client_parses += 1;
                    let p = frontend::parse_parse(frame).ok_or_else(|| Violation::malformed("Parse"))?;
                    let class = classify_sql(p.query);
                    let copy = mentions_copy(p.query);
                    if !p.name.is_empty() {
                        self.to_server.extend_from_slice(&buf[run_start..start]);
                        run_start = pos;
                        self.named_parse(p.name, p.body, class, copy);
                        continue;
                    }
                    self.unnamed_class = Some(class);
                    self.unnamed_copy = copy;
                    self.out.parses.push_back((self.out.sent, ParseAnswer::Forward(None)));
                }
                frontend::BIND => {
                    self.out.unsynced = true;
                    self.stats.binds += 1;
                    let b = frontend::parse_bind(frame).ok_or_else(|| Violation::malformed("Bind"))?;
                    let (class, copy) = if b.statement.is_empty() {
                        (self.unnamed_class, self.unnamed_copy)
                    } else {
                        match self.state.statements.get(b.statement) {
                            Some(s) => (Some(s.class), s.copy),
                            None => (None, false),
                        }
                    };
                    self.copy_seen |= copy;
                    self.note_statement(class.as_ref());
                    if !b.statement.is_empty() {
                        if let Some(id) = self.ensure_prepared(b.statement, &buf[run_start..start]) {
                            run_start = pos;
                            let name = StatementName::new(id);
                            frontend::bind_renamed(&mut self.to_server, &b, name.as_bytes());
                        }
                    }
                    // After the rename: this very Bind still needs the statement it executes.
                    if class.is_some_and(|c| c.deallocate == Some(Deallocate::All)) {
                        self.state.statements.clear();
                        self.server.statements.capture_in_doubt();
                    }
                }
                frontend::DESCRIBE => {
                    self.out.unsynced = true;
                    let (kind, name) = frontend::parse_target(frame).ok_or_else(|| Violation::malformed("Describe"))?;
                    if kind == b'S' && !name.is_empty() {
                        if let Some(id) = self.ensure_prepared(name, &buf[run_start..start]) {
                            run_start = pos;
                            let name = StatementName::new(id);
                            frontend::target(&mut self.to_server, frontend::DESCRIBE, b'S', name.as_bytes());
                        }
                    }
                }
                frontend::CLOSE => {
                    self.out.unsynced = true;
                    let (kind, name) = frontend::parse_target(frame).ok_or_else(|| Violation::malformed("Close"))?;
                    let mut undo = None;
                    if kind == b'S' && !name.is_empty() {
                        // The server statement is shared with other clients: only this client
                        // forgets it. The Close still goes out so CloseComplete comes in order.
                        undo = self.state.statements.remove(name).map(|old| (Bytes::copy_from_slice(name), old));
                        self.to_server.extend_from_slice(&buf[run_start..start]);
                        run_start = pos;
                        frontend::target(&mut self.to_server, frontend::CLOSE, b'S', NO_SUCH_STATEMENT);
                    }
                    self.out.closes.push_back((self.out.sent, CloseAnswer::Forward(undo)));
                }
                frontend::EXECUTE => {
                    self.out.unsynced = true;
                    self.syncs_after_execute = Some(0);
                }
                frontend::FLUSH => self.out.unsynced = true,
                frontend::SYNC if self.copy_in_extended => {} // ignored by a server in copy-in
                frontend::SYNC => {
                    self.segment_sent(false);
                    if let Some(n) = &mut self.syncs_after_execute {
                        *n += 1;
                    }
                    if self.capture_due() {
                        self.to_server.extend_from_slice(&buf[run_start..pos]);
                        run_start = pos;
                        self.append_capture();
                    }
                }
                frontend::QUERY => {
                    self.stats.queries += 1;
                    self.segment_sent(true);
                    self.syncs_after_execute = None;
                    let sql = frontend::parse_query(frame).unwrap_or_default();
                    self.copy_seen |= mentions_copy(sql);
                    self.note_reset_all(sql);
                    // The router classified the buffer's first frame already.
                    let known = if start == 0 { self.plan.first_query.take() } else { None };
                    let class = known.unwrap_or_else(|| classify_sql(sql));
                    if drops_all_statements(&class, sql) {
                        self.state.statements.clear();
                        // A capture behind it in this flight must not Bind a dropped statement.
                        self.server.statements.capture_in_doubt();
                    }
                    self.note_statement(Some(&class));
                    if self.capture_due() {
                        self.to_server.extend_from_slice(&buf[run_start..pos]);
                        run_start = pos;
                        self.append_capture();
                    }
                }
                frontend::FUNCTION_CALL => self.segment_sent(true),
                frontend::TERMINATE => {
                    self.to_server.extend_from_slice(&buf[run_start..start]);
                    return Ok((pos, ClientStep::Gone));
                }
                frontend::COPY_DONE | frontend::COPY_FAIL => self.copy_in_extended = false,
                _ => {} // CopyData and anything else: passed through
            }
        }
        // A frame too large for max_message_size must fail now, not after buffering it.
        frames.pending().map_err(|e| Violation(e.to_string()))?;
        self.to_server.extend_from_slice(&buf[run_start..pos]);
        Ok((pos, ClientStep::Continue))
    }

    fn segment_sent(&mut self, simple: bool) {
        if !simple {
            self.out.unsynced = false;
        }
        self.out.ready += 1;
        self.out.sent += 1;
    }

    /// RESET ALL returns the server session's parameters to their startup values, so our record
    /// of what was applied there is void. (DISCARD ALL and DEALLOCATE ALL are recognised by
    /// their command tags and the classifier; RESET ALL's tag is a bare "RESET".)
    fn note_reset_all(&mut self, sql: &[u8]) {
        let mut words = sql.split(|b| b.is_ascii_whitespace() || *b == b';').filter(|w| !w.is_empty());
        let is = |w: Option<&[u8]>, s: &str| w.is_some_and(|w| w.eq_ignore_ascii_case(s.as_bytes()));
        if is(words.next(), "reset") && is(words.next(), "all") {
            self.server.params = ParamSync::default();
        }
    }

    fn named_parse(&mut self, client_name: &[u8], body: &[u8], class: Classification, copy: bool) {
        if self.state.statements.get(client_name).is_some() {
            // PostgreSQL refuses to redefine a name (42P05) and skips to Sync: let the server
            // say so, by preparing under the name this client's statement already has there.
            if let Some(id) = self.ensure_prepared(client_name, &[]) {
                let name = StatementName::new(id);
                frontend::parse_with_body(&mut self.to_server, name.as_bytes(), body);
                self.out.parses.push_back((self.out.sent, ParseAnswer::Forward(None)));
            }
            return;
        }
        let stmt = self.state.statements.insert(client_name, body, class, copy);
        let (hash, body) = (stmt.hash, stmt.body.clone());
        if self.server.statements.get(hash, &body).is_some() {
            frontend::target(&mut self.to_server, frontend::CLOSE, b'S', NO_SUCH_STATEMENT);
            self.out.closes.push_back((self.out.sent, CloseAnswer::AsParseComplete(Bytes::copy_from_slice(client_name))));
            return;
        }
        let id = StatementId::next();
        let name = StatementName::new(id);
        frontend::parse_with_body(&mut self.to_server, name.as_bytes(), &body);
        self.server.statements.insert(hash, body, id);
        self.stats.server_parses += 1;
        let undo = Undo { hash, client_name: Some(Bytes::copy_from_slice(client_name)) };
        self.out.parses.push_back((self.out.sent, ParseAnswer::Forward(Some(undo))));
    }

    /// The server statement for the client's `name`, preparing it first if this server
    /// connection lacks it; `preceding` is the run of frames before this one, flushed first
    /// so the order on the wire is kept. `None` for a name the client never prepared: the
    /// message then goes out unchanged and the server raises the error PostgreSQL would.
    fn ensure_prepared(&mut self, name: &[u8], preceding: &[u8]) -> Option<StatementId> {
        let stmt = self.state.statements.get(name)?;
        let (hash, body) = (stmt.hash, stmt.body.clone());
        self.to_server.extend_from_slice(preceding);
        if let Some(id) = self.server.statements.get(hash, &body) {
            return Some(id);
        }
        let id = StatementId::next();
        let server_name = StatementName::new(id);
        frontend::parse_with_body(&mut self.to_server, server_name.as_bytes(), &body);
        self.server.statements.insert(hash, body, id);
        self.stats.server_parses += 1;
        self.out.parses.push_back((self.out.sent, ParseAnswer::Swallow(Undo { hash, client_name: None })));
        Some(id)
    }

    /// Follows the client's statements: does a transaction block stay open after them, and
    /// may they have written? An unknown statement (Bind of a name we never saw) may write.
    fn note_statement(&mut self, class: Option<&Classification>) {
        let Some(c) = class else {
            self.may_write = true;
            return;
        };
        if c.write || c.calls_functions {
            self.may_write = true;
        }
        if c.ends_transaction && !c.chain {
            self.predicted_in_txn = false;
        } else if c.chain || matches!(c.first, StatementClass::Begin { .. }) {
            // AND CHAIN opens the next transaction at once: a capture there would run, and
            // could fail, inside the client's transaction. The chain's last COMMIT captures.
            self.predicted_in_txn = true;
        }
    }

    fn capture_due(&self) -> bool {
        self.plan.capture_lsn && (self.may_write || self.plan.capture_reads) && !self.predicted_in_txn && !self.copy_seen
    }

    /// Appends the LSN query behind the message that ends the transaction, in the same
    /// write: the answer comes back in the same flight, with no extra round trip.
    fn append_capture(&mut self) {
        let id = match self.server.statements.capture() {
            CaptureStatement::Ready(id) => id,
            prior => {
                if let CaptureStatement::Stale(old) = prior {
                    // Closing a statement that no longer exists is not an error.
                    frontend::target(&mut self.to_server, frontend::CLOSE, b'S', StatementName::new(old).as_bytes());
                }
                let id = StatementId::next();
                frontend::parse_with_body(&mut self.to_server, StatementName::new(id).as_bytes(), CAPTURE_PARSE_BODY);
                self.server.statements.set_capture(CaptureStatement::Ready(id));
                id
            }
        };
        frontend::execute_prepared(&mut self.to_server, StatementName::new(id).as_bytes());
        self.out.ready += 1;
        self.out.sent += 1;
        self.captures.push_back((self.out.sent, self.may_write));
        self.may_write = false;
    }

    fn in_capture_segment(&self) -> bool {
        self.captures.front().is_some_and(|(seg, _)| *seg == self.out.answered + 1)
    }

    /// A frame answering the pooler's own capture query: never shown to the client.
    fn capture_frame(&mut self, tag: u8, frame: &[u8]) -> io::Result<()> {
        match tag {
            backend::DATA_ROW => {
                self.capture_value = backend::first_column(frame)
                    .flatten()
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.parse::<Lsn>().ok());
            }
            backend::ERROR_RESPONSE => {
                // The statement may be gone (a client's DEALLOCATE), its Parse may have failed,
                // or the transaction was aborted: replace it next time (Close, then Parse).
                // This commit's LSN comes from a separate query.
                self.server.statements.capture_in_doubt();
            }
            backend::READY_FOR_QUERY => {
                self.status = backend::parse_ready_for_query(frame)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad ReadyForQuery"))?;
                self.out.ready = self.out.ready.saturating_sub(1);
                self.out.answered += 1;
                let wrote = self.captures.pop_front().is_some_and(|(_, wrote)| wrote);
                let value = self.capture_value.take();
                if value.is_none() {
                    // No LSN learned: the session asks with a query of its own before the
                    // server connection goes back (`capture_separately`).
                    self.may_write |= wrote;
                }
                match self.held_ready.take() {
                    Some(ready) => {
                        // The LSN counts only if the client's transaction really ended.
                        if backend::parse_ready_for_query(&ready) == Some(TxStatus::Idle) {
                            if let Some(lsn) = value {
                                if wrote {
                                    self.captured = Some(self.captured.map_or(lsn, |c| c.max(lsn)));
                                    // Published before the client's ReadyForQuery is released:
                                    // under `global`, anyone who saw the commit can rely on it.
                                    self.state.cluster.note_commit_lsn(lsn);
                                } else {
                                    self.captured_read = Some(self.captured_read.map_or(lsn, |c| c.max(lsn)));
                                }
                            }
                        } else {
                            self.may_write |= wrote;
                        }
                        self.client.wbuf.extend_from_slice(&ready);
                    }
                    None => self.may_write |= wrote,
                }
            }
            _ => {} // CloseComplete, ParseComplete, BindComplete, CommandComplete
        }
        Ok(())
    }

    fn take_saved(&mut self) -> BytesMut {
        self.retrying = false;
        self.guard.take().map(|g| g.saved).unwrap_or_default()
    }

    fn flush_server_now(&mut self) -> io::Result<()> {
        flush_now(&self.server.stream, &mut self.to_server)
    }

    fn read_server(&mut self) -> io::Result<()> {
        self.server.buf.reserve(READ_CHUNK);
        match read_available(&self.server.stream, &mut self.server.buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
        let buf = std::mem::take(&mut self.server.buf);
        let r = self.forward_server_frames(&buf);
        self.server.buf = buf;
        let consumed = r?;
        self.server.buf.advance(consumed);
        Ok(())
    }

    /// Forwards complete server frames, handling the inspected ones; returns bytes consumed.
    fn forward_server_frames(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut pos = 0;
        if self.streaming > 0 {
            let n = self.streaming.min(buf.len());
            self.client.wbuf.extend_from_slice(&buf[..n]);
            self.streaming -= n;
            pos = n;
            if self.streaming > 0 {
                self.stats.bytes_to_client += n as u64;
                return Ok(pos);
            }
        }
        let mut run_start = pos;
        let mut frames = Frames::new(&buf[pos..], usize::MAX);
        for item in &mut frames {
            let (h, frame) = item.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let start = pos;
            pos += h.frame_len;
            if self.retrying || self.in_capture_segment() {
                self.client.wbuf.extend_from_slice(&buf[run_start..start]);
                run_start = pos;
                if self.retrying {
                    self.retry_frame(h.tag, frame)?;
                } else {
                    self.capture_frame(h.tag, frame)?;
                }
                continue;
            }
            if self.guard.is_some() {
                match h.tag {
                    backend::ERROR_RESPONSE if backend::parse_error_fields(frame).code == b"25006" => {
                        self.start_retry();
                        run_start = pos;
                        continue;
                    }
                    backend::DATA_ROW
                    | backend::COMMAND_COMPLETE
                    | backend::EMPTY_QUERY_RESPONSE
                    | backend::COPY_IN_RESPONSE
                    | backend::COPY_OUT_RESPONSE
                    | backend::COPY_BOTH_RESPONSE
                    | backend::READY_FOR_QUERY
                    | backend::ERROR_RESPONSE => {
                        // The client is about to see a result: from here on it is committed to
                        // this replica.
                        self.guard = None;
                    }
                    _ => {}
                }
            }
            match h.tag {
                backend::PARSE_COMPLETE => {
                    if let Some((_, ParseAnswer::Swallow(_))) = self.out.parses.pop_front() {
                        self.client.wbuf.extend_from_slice(&buf[run_start..start]);
                        run_start = pos;
                    }
                }
                backend::CLOSE_COMPLETE => {
                    if let Some((_, CloseAnswer::AsParseComplete(_))) = self.out.closes.pop_front() {
                        self.client.wbuf.extend_from_slice(&buf[run_start..start]);
                        run_start = pos;
                        backend::parse_complete(&mut self.client.wbuf);
                    }
                }
                backend::ERROR_RESPONSE => self.server_error(frame),
                backend::READY_FOR_QUERY => {
                    self.status = backend::parse_ready_for_query(frame)
                        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad ReadyForQuery"))?;
                    self.out.ready = self.out.ready.saturating_sub(1);
                    self.out.answered += 1;
                    self.drop_unanswered(self.out.answered);
                    if let (true, Ok(ready)) = (self.in_capture_segment(), <[u8; 6]>::try_from(frame)) {
                        // Held back until the capture's answer has recorded the LSN.
                        self.client.wbuf.extend_from_slice(&buf[run_start..start]);
                        run_start = pos;
                        self.held_ready = Some(ready);
                    }
                }
                backend::PARAMETER_STATUS => self.track_parameter(frame),
                backend::COMMAND_COMPLETE => self.note_command_tag(frame),
                backend::COPY_IN_RESPONSE => {
                    // An extended-protocol COPY FROM STDIN: the server ignores the Syncs sent
                    // after its Execute until CopyDone/CopyFail, so they will not be answered.
                    if let Some(n) = self.syncs_after_execute.take() {
                        self.out.ready = self.out.ready.saturating_sub(n);
                        self.out.sent = self.out.sent.saturating_sub(n as u64);
                        self.copy_in_extended = true;
                        self.out.unsynced = true;
                    }
                }
                _ => {}
            }
        }
        // A big message nobody needs to read is streamed through rather than buffered whole.
        if let Ok(Some(h)) = frames.pending() {
            let have = buf.len() - pos;
            if h.frame_len > STREAM_THRESHOLD && !inspected(h.tag) {
                self.streaming = h.frame_len - have;
                pos = buf.len();
            }
        }
        self.stats.bytes_to_client += (pos - run_start) as u64;
        if self.guard.is_some() || self.retrying {
            self.client.wbuf.extend_from_slice(&buf[run_start..pos]);
        } else {
            send_run(&self.client.stream, &buf[run_start..pos], &mut self.client.wbuf);
        }
        Ok(pos)
    }

    /// A replica refused a write before the client saw anything: forget what was buffered
    /// for the client and drain the replica, then the session replays the batch on the
    /// primary.
    fn start_retry(&mut self) {
        self.retrying = true;
        if let Some(g) = &self.guard {
            self.client.wbuf.truncate(g.mark);
        }
        self.drop_unanswered(self.out.answered + 1);
        if self.out.unsynced {
            // The server skips to the next Sync after an error; give it one to end on.
            frontend::sync(&mut self.to_server);
            self.segment_sent(false);
        }
    }

    fn retry_frame(&mut self, tag: u8, frame: &[u8]) -> io::Result<()> {
        if tag == backend::READY_FOR_QUERY {
            self.status = backend::parse_ready_for_query(frame)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad ReadyForQuery"))?;
            self.out.ready = self.out.ready.saturating_sub(1);
            self.out.answered += 1;
            self.drop_unanswered(self.out.answered);
        }
        Ok(())
    }

    /// After an error the server skips everything up to Sync: what was queued for those
    /// messages will never be answered.
    fn server_error(&mut self, frame: &[u8]) {
        let f = backend::parse_error_fields(frame);
        if self.stats.first_error.is_none() {
            if let Ok(code) = <[u8; 5]>::try_from(f.code) {
                self.stats.first_error = Some(code);
            }
        }
        self.drop_unanswered(self.out.answered + 1);
    }

    /// Drops queue entries of segments before `segment_end`, undoing what their Parses
    /// recorded: those statements were never created.
    fn drop_unanswered(&mut self, segment_end: u64) {
        while self.out.parses.front().is_some_and(|(seg, _)| *seg < segment_end) {
            if let Some((_, answer)) = self.out.parses.pop_front() {
                let undo = match answer {
                    ParseAnswer::Forward(u) => u,
                    ParseAnswer::Swallow(u) => Some(u),
                };
                if let Some(u) = undo {
                    self.server.statements.forget(u.hash);
                    if let Some(name) = u.client_name {
                        self.state.statements.remove(&name);
                    }
                }
            }
        }
        while self.out.closes.front().is_some_and(|(seg, _)| *seg < segment_end) {
            match self.out.closes.pop_front() {
                Some((_, CloseAnswer::AsParseComplete(name))) => self.state.statements.remove(&name).map(drop).unwrap_or(()),
                Some((_, CloseAnswer::Forward(Some((name, old))))) => self.state.statements.restore(&name, old),
                _ => {}
            }
        }
    }

    /// The server's own word that a session reset ran, whatever form the client used
    /// (extended protocol, after comments, in a multi-statement Query): its statements are
    /// gone, and with DISCARD ALL its parameters too.
    fn note_command_tag(&mut self, frame: &[u8]) {
        let tag = frame.get(5..frame.len().saturating_sub(1)).unwrap_or_default();
        match tag {
            b"DEALLOCATE ALL" => self.server.statements.clear(),
            b"DISCARD ALL" => {
                self.server.statements.clear();
                self.server.params = ParamSync::default();
            }
            _ => {}
        }
    }

    /// A client's `SET TimeZone …` reaches us as ParameterStatus: it is now part of the
    /// client's session (and of this server's), so it follows the client to other servers.
    fn track_parameter(&mut self, frame: &[u8]) {
        let Some((name, value)) = backend::parse_parameter_status(frame) else { return };
        let (Ok(name), Ok(value)) = (std::str::from_utf8(name), std::str::from_utf8(value)) else { return };
        let lower = name.to_ascii_lowercase();
        if lsnpool_pool::is_tracked_reported(&lower) {
            self.state.params.set(&lower, value);
            self.server.params.set(&lower, value);
        }
    }
}

/// DEALLOCATE ALL or DISCARD ALL anywhere in the text: the client's statements are gone.
fn drops_all_statements(class: &Classification, sql: &[u8]) -> bool {
    match class.deallocate {
        Some(Deallocate::All) => true,
        Some(Deallocate::Several) => lsnpool_router::deallocations(sql).any(|d| d == Deallocate::All),
        _ => false,
    }
}

/// Could this text run a COPY? A false positive only costs the LSN capture a round trip.
pub(crate) fn mentions_copy(sql: &[u8]) -> bool {
    sql.windows(4).any(|w| w.eq_ignore_ascii_case(b"copy"))
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

fn inspected(tag: u8) -> bool {
    matches!(
        tag,
        backend::ERROR_RESPONSE
            | backend::READY_FOR_QUERY
            | backend::PARSE_COMPLETE
            | backend::CLOSE_COMPLETE
            | backend::PARAMETER_STATUS
    )
}

/// Reads what the socket has. A read shorter than the room offered drained the socket, so its
/// readiness is cleared (as tokio's own `poll_read` does): otherwise the next wait returns at
/// once and costs an empty read, one wasted syscall per message exchange. The read runs inside
/// `try_io`, whose readiness snapshot is taken *before* it: data arriving after the snapshot
/// bumps tokio's readiness tick and the clear is skipped, so no wakeup can be lost. (Clearing
/// in a separate `try_io` after the read would snapshot too late and could lose one.)
pub fn read_available(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    let room = buf.capacity() - buf.len();
    let mut got = 0;
    let r = stream.try_io(tokio::io::Interest::READABLE, || {
        got = stream.try_read_buf(buf)?;
        if got > 0 && got < room {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(())
        }
    });
    match r {
        Ok(()) => Ok(got),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        Err(e) => Err(e),
    }
}

/// Writes `run`, straight from the read buffer when nothing is queued before it; whatever the
/// socket does not take now is queued in `pending`.
pub fn send_run(stream: &TcpStream, run: &[u8], pending: &mut BytesMut) {
    if run.is_empty() {
        let _ = flush_now(stream, pending);
        return;
    }
    if pending.is_empty() {
        let n = match stream.try_write(run) {
            Ok(n) => n,
            Err(_) => 0, // WouldBlock, or an error the next write will report
        };
        pending.extend_from_slice(&run[n..]);
    } else {
        pending.extend_from_slice(run);
        let _ = flush_now(stream, pending);
    }
}

/// Writes as much of `pending` as the socket takes without waiting.
pub fn flush_now(stream: &TcpStream, pending: &mut BytesMut) -> io::Result<()> {
    while !pending.is_empty() {
        match stream.try_write(pending) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => pending.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    if pending.capacity() > 4 * HIGH_WATER {
        *pending = BytesMut::new();
    }
    Ok(())
}

pub fn peek_header(buf: &[u8], max: usize) -> Result<Option<Header>, lsnpool_protocol::FrameError> {
    Header::parse(buf, max)
}
