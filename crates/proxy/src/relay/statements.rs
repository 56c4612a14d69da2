//! The prepared-statement rewriter and the bookkeeping of what the server still owes.
//!
//! Clients' named statements become the server's shared `lsnpool_<id>` statements. A Parse the
//! server already has becomes a Close of a name that does not exist, whose CloseComplete is
//! turned back into the ParseComplete the client expects, in order and without an extra round
//! trip. Every Parse/Close sent is queued with the segment (Sync/Query) it belongs to, so its
//! answer can be matched, swallowed or rewritten, and so what it recorded can be undone when
//! an error makes the server skip it.

use super::{Relay, Violation};
use crate::prepared::ClientStatement;
use bytes::Bytes;
use lsnpool_pool::{Cached, StatementId, StatementName};
use lsnpool_protocol::backend::{self, TxStatus};
use lsnpool_protocol::frontend;
use super::sql::TextFlags;
use lsnpool_router::{classify_bytes as classify_sql, Classification, Deallocate};
use std::collections::VecDeque;
use std::io;

/// A Close for this name never finds anything, which is the point: its CloseComplete holds
/// the place of a ParseComplete the server is not asked to produce.
const NO_SUCH_STATEMENT: &[u8] = b"lsnpool_none";

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
    /// The pooler's Close of a stale statement of its own: swallowed.
    Swallow,
    /// Stands in for a client's SQL `DEALLOCATE name` of its own statement: becomes the
    /// CommandComplete `DEALLOCATE`.
    AsDeallocate,
    /// The pooler's Close in front of a simple Query or FunctionCall sent behind unsynced
    /// extended messages (`Relay::mark_end_of_extended`): swallowed. While it is unanswered,
    /// an error comes from those extended messages, not from the Query.
    EndOfExtended,
}

struct Undo {
    hash: u64,
    client_name: Option<Bytes>,
}

/// Bookkeeping of what the server still owes the client.
#[derive(Default)]
pub(super) struct Outstanding {
    /// Sync/Query/FunctionCall sent whose ReadyForQuery has not arrived.
    pub(super) ready: usize,
    /// Extended-protocol messages sent since the last Sync.
    pub(super) unsynced: bool,
    /// Counts of ReadyForQuery-terminated segments sent and answered: an entry queued while
    /// `sent == k` is answered before the (k+1)th ReadyForQuery.
    pub(super) sent: u64,
    pub(super) answered: u64,
    /// Segments ending in a simple Query or FunctionCall sent while extended messages were
    /// unsynced, in order. If one of those extended messages fails, PostgreSQL skips every
    /// message up to the next Sync, these Queries too: they get no ReadyForQuery. Empty on the
    /// common path.
    skippable: VecDeque<u64>,
    /// The server is skipping to a Sync not sent yet (an extended-protocol error came before
    /// it): a Query or FunctionCall sent now is discarded by the server, never answered.
    pub(super) skipping: bool,
    parses: VecDeque<(u64, ParseAnswer)>,
    closes: VecDeque<(u64, CloseAnswer)>,
}

impl Outstanding {
    pub(super) fn idle(&self) -> bool {
        self.ready == 0 && !self.unsynced
    }
}

// Client side. Each handler returns whether it cut the run of unchanged frames: it then wrote
// `preceding` (the frames before this one) and its replacement, and the frame itself is not
// forwarded.
impl Relay<'_, '_, '_> {
    /// `known` is the Parse's classification if the batch analysis made it.
    pub(super) fn client_parse(&mut self, frame: &[u8], preceding: &[u8], known: Option<Classification>) -> Result<bool, Violation> {
        self.out.unsynced = true;
        self.stats.client_parses += 1;
        let p = frontend::parse_parse(frame).ok_or_else(|| Violation::malformed("Parse"))?;
        let class = known.unwrap_or_else(|| classify_sql(p.query));
        let flags = TextFlags::of(p.query, &class);
        self.note_text(flags);
        let copy = flags.copy;
        if !p.name.is_empty() && self.plan.passthrough {
            // Remembered for its class only (a Bind's routing and LSN capture); the server
            // keeps the name and answers for it.
            self.state.statements.insert(p.name, p.body, class, flags);
            self.out.parses.push_back((self.out.sent, ParseAnswer::Forward(None)));
            return Ok(false);
        }
        if !p.name.is_empty() {
            self.to_server.extend_from_slice(preceding);
            self.named_parse(p.name, p.body, class, flags);
            return Ok(true);
        }
        self.unnamed_class = Some(class);
        self.copy.unnamed_parsed(copy);
        self.out.parses.push_back((self.out.sent, ParseAnswer::Forward(None)));
        Ok(false)
    }

    pub(super) fn client_bind(&mut self, frame: &[u8], preceding: &[u8]) -> Result<bool, Violation> {
        self.out.unsynced = true;
        self.stats.binds += 1;
        let b = frontend::parse_bind(frame).ok_or_else(|| Violation::malformed("Bind"))?;
        let (class, copy) = if b.statement.is_empty() {
            (self.unnamed_class, self.copy.unnamed())
        } else {
            match self.state.statements.get(b.statement) {
                Some(s) => {
                    // Prepared in an earlier transaction, maybe without the relay seeing it.
                    let (class, flags) = (s.class, s.flags);
                    self.note_text(flags);
                    (Some(class), flags.copy)
                }
                None => (None, false),
            }
        };
        self.copy.may_run(copy);
        self.note_statement(class.as_ref());
        let mut cut = false;
        if !b.statement.is_empty() && !self.plan.passthrough {
            if let Some(id) = self.ensure_prepared(b.statement, preceding) {
                cut = true;
                frontend::bind_renamed(&mut self.to_server, &b, StatementName::new(id).as_bytes());
            }
        }
        // After the rename: this very Bind still needs the statement it executes.
        if class.is_some_and(|c| c.deallocate == Some(Deallocate::All)) {
            self.state.statements.clear();
            // Not undoable: a replay would find the client's statements gone.
            self.stop_replay();
            self.server.statements.capture_in_doubt();
        }
        Ok(cut)
    }

    pub(super) fn client_describe(&mut self, frame: &[u8], preceding: &[u8]) -> Result<bool, Violation> {
        self.out.unsynced = true;
        let (kind, name) = frontend::parse_target(frame).ok_or_else(|| Violation::malformed("Describe"))?;
        if kind != b'S' || name.is_empty() || self.plan.passthrough {
            return Ok(false);
        }
        let Some(id) = self.ensure_prepared(name, preceding) else { return Ok(false) };
        frontend::target(&mut self.to_server, frontend::DESCRIBE, b'S', StatementName::new(id).as_bytes());
        Ok(true)
    }

    /// A simple Query that is one `DEALLOCATE name` of this client's protocol-level
    /// statement: the server knows it under a shared name, so the pooler answers it, in any
    /// transaction state, by forgetting the name. On the wire it becomes a Close of a name that
    /// does not exist plus a Sync, whose CloseComplete becomes the `DEALLOCATE` tag and whose
    /// ReadyForQuery tells the transaction's state, in order with everything else. Not in a
    /// failed transaction (the server's 25P02 is the answer there) nor in the middle of an
    /// unsynced extended batch. Returns whether it did (then `preceding` was written).
    pub(super) fn deallocate_locally(&mut self, frame: &[u8], preceding: &[u8], known: Option<&Classification>) -> bool {
        if self.plan.passthrough || self.out.unsynced || self.status == TxStatus::Failed {
            return false;
        }
        let sql = frontend::parse_query(frame).unwrap_or_default();
        let class = match known {
            Some(c) => *c,
            None if starts_with_word(sql, b"deallocate") => classify_sql(sql),
            None => return false,
        };
        let name = match class.deallocate {
            Some(d @ Deallocate::Named { .. }) if class.statements == 1 => d.name(sql),
            _ => None,
        };
        let Some(name) = name else { return false };
        if self.state.statements.remove(&name).is_none() {
            return false; // an SQL-level PREPARE's name: the server's to answer
        }
        self.stats.queries += 1;
        // Not undoable: a replay would find the statement gone.
        self.stop_replay();
        self.to_server.extend_from_slice(preceding);
        frontend::target(&mut self.to_server, frontend::CLOSE, b'S', NO_SUCH_STATEMENT);
        frontend::sync(&mut self.to_server);
        self.out.closes.push_back((self.out.sent, CloseAnswer::AsDeallocate));
        self.segment_sent(true);
        true
    }

    pub(super) fn client_close(&mut self, frame: &[u8], preceding: &[u8]) -> Result<bool, Violation> {
        self.out.unsynced = true;
        let (kind, name) = frontend::parse_target(frame).ok_or_else(|| Violation::malformed("Close"))?;
        let mut undo = None;
        if kind == b'S' && self.plan.passthrough {
            self.state.statements.remove(name);
        }
        let cut = kind == b'S' && !name.is_empty() && !self.plan.passthrough;
        if cut {
            // The server statement is shared with other clients: only this client forgets it.
            // The Close still goes out so CloseComplete comes in order.
            undo = self.state.statements.remove(name).map(|old| (Bytes::copy_from_slice(name), old));
            self.to_server.extend_from_slice(preceding);
            frontend::target(&mut self.to_server, frontend::CLOSE, b'S', NO_SUCH_STATEMENT);
        }
        self.out.closes.push_back((self.out.sent, CloseAnswer::Forward(undo)));
        Ok(cut)
    }

    fn named_parse(&mut self, client_name: &[u8], body: &[u8], class: Classification, flags: TextFlags) {
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
        let stmt = self.state.statements.insert(client_name, body, class, flags);
        let (hash, body, epoch) = (stmt.hash, stmt.body.clone(), stmt.epoch);
        if self.cached(hash, &body, epoch).is_some() {
            frontend::target(&mut self.to_server, frontend::CLOSE, b'S', NO_SUCH_STATEMENT);
            self.out.closes.push_back((self.out.sent, CloseAnswer::AsParseComplete(Bytes::copy_from_slice(client_name))));
            return;
        }
        let undo = Undo { hash, client_name: Some(Bytes::copy_from_slice(client_name)) };
        self.prepare_on_server(hash, body);
        self.out.parses.push_back((self.out.sent, ParseAnswer::Forward(Some(undo))));
    }

    /// The server statement for the client's `name`, preparing it first if this server
    /// connection lacks it; `preceding` is the run of frames before this one, flushed first
    /// so the order on the wire is kept. `None` for a name the client never prepared: the
    /// message then goes out unchanged and the server raises the error PostgreSQL would.
    fn ensure_prepared(&mut self, name: &[u8], preceding: &[u8]) -> Option<StatementId> {
        let stmt = self.state.statements.get(name)?;
        let (hash, body, epoch) = (stmt.hash, stmt.body.clone(), stmt.epoch);
        self.to_server.extend_from_slice(preceding);
        if let Some(id) = self.cached(hash, &body, epoch) {
            return Some(id);
        }
        let id = self.prepare_on_server(hash, body);
        self.out.parses.push_back((self.out.sent, ParseAnswer::Swallow(Undo { hash, client_name: None })));
        Some(id)
    }

    /// The server statement for `body` on this connection unless it is missing or older
    /// than a schema change the client's statement (at `epoch`) came after; a stale one is
    /// Closed (its CloseComplete swallowed) so it does not linger on the server.
    fn cached(&mut self, hash: u64, body: &Bytes, epoch: u64) -> Option<StatementId> {
        match self.server.statements.lookup(hash, body, epoch) {
            Cached::Fresh(id) => Some(id),
            Cached::Stale(old) => {
                frontend::target(&mut self.to_server, frontend::CLOSE, b'S', StatementName::new(old).as_bytes());
                self.out.closes.push_back((self.out.sent, CloseAnswer::Swallow));
                None
            }
            Cached::Missing => None,
        }
    }

    /// Sends a Parse of `body` under a new server name and records it as prepared there.
    fn prepare_on_server(&mut self, hash: u64, body: Bytes) -> StatementId {
        let id = StatementId::next();
        frontend::parse_with_body(&mut self.to_server, StatementName::new(id).as_bytes(), &body);
        self.server.statements.insert(hash, body, id);
        self.stats.server_parses += 1;
        id
    }

    /// A simple Query or FunctionCall is about to go out behind extended messages with no Sync
    /// between: if one of those fails, the server skips it (PostgreSQL skips everything but a
    /// Sync after an extended-protocol error) and its ReadyForQuery never comes; if the Query
    /// itself fails, nothing is skipped. A Close of a name that never exists, sent in front of
    /// it, tells the two apart: its CloseComplete comes only if the extended messages before
    /// it succeeded. Costs a message on this rare shape only.
    pub(super) fn mark_end_of_extended(&mut self) {
        frontend::target(&mut self.to_server, frontend::CLOSE, b'S', NO_SUCH_STATEMENT);
        self.out.closes.push_back((self.out.sent, CloseAnswer::EndOfExtended));
        self.out.skippable.push_back(self.out.sent);
    }

    /// A Sync, Query or FunctionCall went out: one more ReadyForQuery to wait for.
    pub(super) fn segment_sent(&mut self, simple: bool) {
        if !simple {
            self.out.unsynced = false;
            self.out.skipping = false;
        }
        self.out.ready += 1;
        self.out.sent += 1;
    }
}

// Server side.
impl Relay<'_, '_, '_> {
    /// ParseComplete: swallowed when it answers a Parse the pooler added (then `preceding` is
    /// written and true returned).
    pub(super) fn parse_answered(&mut self, preceding: &[u8]) -> bool {
        let Some((_, ParseAnswer::Swallow(_))) = self.out.parses.pop_front() else { return false };
        self.client.wbuf.extend_from_slice(preceding);
        true
    }

    /// CloseComplete: becomes a ParseComplete when it stands in for a skipped Parse.
    pub(super) fn close_answered(&mut self, preceding: &[u8]) -> bool {
        match self.out.closes.pop_front() {
            Some((_, CloseAnswer::AsParseComplete(_))) => {
                self.client.wbuf.extend_from_slice(preceding);
                backend::parse_complete(&mut self.client.wbuf);
                true
            }
            Some((_, CloseAnswer::Swallow | CloseAnswer::EndOfExtended)) => {
                self.client.wbuf.extend_from_slice(preceding);
                true
            }
            Some((_, CloseAnswer::AsDeallocate)) => {
                self.client.wbuf.extend_from_slice(preceding);
                backend::command_complete(&mut self.client.wbuf, "DEALLOCATE");
                true
            }
            _ => false,
        }
    }

    /// Every ReadyForQuery, whoever it answers: the transaction status, one segment answered,
    /// and whatever that segment queued but the server skipped is undone.
    pub(super) fn ready_for_query(&mut self, frame: &[u8]) -> io::Result<()> {
        self.status = backend::parse_ready_for_query(frame)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad ReadyForQuery"))?;
        self.out.ready = self.out.ready.saturating_sub(1);
        self.out.answered += 1;
        self.drop_unanswered(self.out.answered);
        Ok(())
    }

    /// An ErrorResponse while the segment being answered ends in a Query sent behind unsynced
    /// extended messages whose marker Close is still unanswered: one of those extended
    /// messages failed, and the server now skips everything up to the next Sync. The Queries
    /// in that window (this segment's and any sent after it before a Sync) are answered with
    /// nothing; the next ReadyForQuery is the client's Sync's (no capture rides in such a
    /// window: `capture_after`). Call before `drop_unanswered`, which then drops what those
    /// segments and the Sync's queued.
    ///
    /// If every segment sent is answered, the error came from extended messages whose Sync
    /// is not sent yet: the Queries the client sends before it are skipped too (`skipping`).
    pub(super) fn skip_to_sync(&mut self) {
        let seg = self.out.answered;
        if self.out.skippable.front() == Some(&seg) {
            let marker_pending = self.out.closes.iter().any(|(s, a)| *s == seg && matches!(a, CloseAnswer::EndOfExtended));
            if !marker_pending {
                return; // the Query's own error: its ReadyForQuery comes, nothing is skipped
            }
            let mut skipped = 0;
            while self.out.skippable.front() == Some(&(seg + skipped)) {
                self.out.skippable.pop_front();
                skipped += 1;
            }
            self.out.answered += skipped;
            self.out.ready = self.out.ready.saturating_sub(skipped as usize);
        }
        // Only with extended messages unsynced (not, say, a FATAL while nothing is in flight):
        // the relay then is not idle until the Sync, so it cannot end the transaction early.
        if self.out.answered == self.out.sent && self.out.unsynced {
            self.out.skipping = true;
        }
    }

    /// Drops queue entries of segments before `segment_end`, undoing what their Parses
    /// recorded: those statements were never created.
    pub(super) fn drop_unanswered(&mut self, segment_end: u64) {
        while self.out.skippable.front().is_some_and(|seg| *seg < segment_end) {
            self.out.skippable.pop_front();
        }
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
}

/// Whether `sql` starts (after whitespace) with `word`, any case: a cheap look before a
/// classification.
fn starts_with_word(sql: &[u8], word: &[u8]) -> bool {
    let start = sql.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(sql.len());
    sql.get(start..start + word.len()).is_some_and(|w| w.eq_ignore_ascii_case(word))
}
