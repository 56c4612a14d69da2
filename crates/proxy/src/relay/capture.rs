//! Commit LSN capture: the LSN query rides behind the message that ends the transaction, in
//! the same write, so its answer comes back in the same flight with no extra round trip. Its
//! answer is never shown to the client, and the client's ReadyForQuery waits for it: under
//! `global` the LSN must be published before anyone can see the commit.

use super::Relay;
use lsnpool_pool::{CaptureStatement, StatementId, StatementName};
use lsnpool_protocol::backend::{self, TxStatus};
use lsnpool_protocol::frontend;
use lsnpool_router::Lsn;
use std::collections::VecDeque;
use std::io;

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

/// Session mode's capture: prepared, run and closed in one flight, so the client's session
/// shows no statement of the pooler's between its own messages (`pg_prepared_statements`), and
/// its unnamed statement and portal are left alone (a simple Query would drop the unnamed
/// statement). Costs the server a parse and plan of a one-function SELECT per commit.
pub(crate) fn transient_capture(buf: &mut bytes::BytesMut) {
    const NAME: &[u8] = b"lsnpool_capture";
    frontend::parse_with_body(buf, NAME, CAPTURE_PARSE_BODY);
    let at = buf.len();
    frontend::execute_prepared(buf, NAME);
    // execute_prepared ends with a Sync: the Close goes before it.
    buf.truncate(buf.len().saturating_sub(5).max(at));
    frontend::target(buf, frontend::CLOSE, b'S', NAME);
    frontend::sync(buf);
}

#[derive(Default)]
pub(super) struct Captures {
    /// Segments (by number) that are the pooler's own LSN captures, answered in order, and
    /// whether the transaction they follow may have written.
    pending: VecDeque<(u64, bool)>,
    /// The client's ReadyForQuery, held until its capture answer is read.
    held_ready: Option<[u8; 6]>,
    /// The LSN the capture in progress returned.
    value: Option<Lsn>,
}

impl Relay<'_, '_, '_> {
    pub(super) fn capture_due(&self) -> bool {
        self.plan.capture_lsn && (self.may_write || self.plan.capture_reads) && !self.predicted_in_txn && !self.copy.seen()
    }

    pub(super) fn append_capture(&mut self) {
        if self.plan.passthrough {
            transient_capture(&mut self.to_server);
            self.out.ready += 1;
            self.out.sent += 1;
            self.captures.pending.push_back((self.out.sent, self.may_write));
            self.may_write = false;
            return;
        }
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
        self.captures.pending.push_back((self.out.sent, self.may_write));
        self.may_write = false;
    }

    /// Whether the next server frames answer a capture (the client's segment before it is
    /// answered).
    pub(super) fn in_capture_segment(&self) -> bool {
        self.captures.pending.front().is_some_and(|(seg, _)| *seg == self.out.answered + 1)
    }

    /// Takes the client's ReadyForQuery that just ended the segment before a capture, if it
    /// is one (then `preceding` is written and true returned): it is released only once the
    /// capture's answer has recorded the LSN.
    pub(super) fn hold_ready(&mut self, frame: &[u8], preceding: &[u8]) -> bool {
        let (true, Ok(ready)) = (self.in_capture_segment(), <[u8; 6]>::try_from(frame)) else { return false };
        self.client.wbuf.extend_from_slice(preceding);
        self.captures.held_ready = Some(ready);
        true
    }

    /// A frame answering the pooler's own capture query: never shown to the client.
    pub(super) fn capture_frame(&mut self, tag: u8, frame: &[u8]) -> io::Result<()> {
        match tag {
            backend::DATA_ROW => {
                self.captures.value = backend::first_column(frame)
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
                self.ready_for_query(frame)?;
                self.capture_answered();
            }
            _ => {} // CloseComplete, ParseComplete, BindComplete, CommandComplete
        }
        Ok(())
    }

    /// The server died while only the pooler's own capture was outstanding, after the
    /// client's transaction ended (its ReadyForQuery said idle): the client gets that
    /// ReadyForQuery, as it would have, and the commit's LSN must be learned on another primary
    /// connection (`may_write`). False when the client still waits for answers of its own.
    pub(super) fn finish_without_capture(&mut self) -> bool {
        let Some(ready) = self.captures.held_ready else { return false };
        let only_capture_left = self.out.ready == 1 && !self.out.unsynced && self.captures.pending.len() == 1;
        if !only_capture_left || backend::parse_ready_for_query(&ready) != Some(TxStatus::Idle) {
            return false;
        }
        let wrote = self.captures.pending.pop_front().is_some_and(|(_, wrote)| wrote);
        self.captures.held_ready = None;
        self.may_write |= wrote;
        self.client.wbuf.extend_from_slice(&ready);
        true
    }

    fn capture_answered(&mut self) {
        let wrote = self.captures.pending.pop_front().is_some_and(|(_, wrote)| wrote);
        let value = self.captures.value.take();
        if value.is_none() {
            // No LSN learned: the session asks with a query of its own before the server
            // connection goes back (`capture_separately`).
            self.may_write |= wrote;
        }
        let Some(ready) = self.captures.held_ready.take() else {
            self.may_write |= wrote;
            return;
        };
        // The LSN counts only if the client's transaction really ended.
        if backend::parse_ready_for_query(&ready) == Some(TxStatus::Idle) {
            if let Some(lsn) = value {
                if wrote {
                    self.captured = Some(self.captured.map_or(lsn, |c| c.max(lsn)));
                    // Published before the client's ReadyForQuery is released: under
                    // `global`, anyone who saw the commit can rely on it.
                    self.state.cluster.note_commit_lsn(lsn);
                    if self.state.commits.report_lsn {
                        backend::parameter_status(&mut self.client.wbuf, "lsnpool.commit_lsn", &lsn.to_string());
                    }
                    // Nothing else is in flight: the relay ends with this ReadyForQuery, and
                    // the session releases it once the commit is in the token store. (A
                    // commit with more pipelined behind it is recorded after the pipeline.)
                    if self.state.commits.defer_ready && self.out.idle() && self.to_server.is_empty() {
                        self.commit_ready = Some(ready);
                        return;
                    }
                } else {
                    self.captured_read = Some(self.captured_read.map_or(lsn, |c| c.max(lsn)));
                }
            }
        } else {
            self.may_write |= wrote;
        }
        self.client.wbuf.extend_from_slice(&ready);
    }
}
