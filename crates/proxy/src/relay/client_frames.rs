//! Client to server: reads the client's bytes and forwards its frames as runs, handing the
//! frames the pooler must act on to the statement rewriter, the COPY tracker and the capture.

use super::io::Filled;
use super::sql::{drops_all_statements, resets_all, TextFlags};
use super::{ClientStep, Relay, Violation};
use crate::batch::Classified;
use bytes::Buf;
use lsnpool_protocol::frame::Frames;
use lsnpool_protocol::frontend;
use lsnpool_router::{classify_bytes as classify_sql, Classification, StatementClass};

impl Relay<'_, '_, '_> {
    pub(super) fn read_client(&mut self) -> Result<ClientStep, Violation> {
        match self.fill_client() {
            Ok(Filled::Some) => self.pump_client(),
            Ok(Filled::Nothing) => Ok(ClientStep::Continue),
            Ok(Filled::Eof) | Err(_) => Ok(ClientStep::Gone),
        }
    }

    /// Forwards every complete client frame in the read buffer, rewriting what must be.
    pub(super) fn pump_client(&mut self) -> Result<ClientStep, Violation> {
        let rbuf = std::mem::take(&mut self.client.rbuf);
        let r = self.forward_client_frames(&rbuf);
        // Valid for the buffer the router saw only.
        self.plan.classified = Classified::default();
        let (consumed, step) = r?;
        if step == ClientStep::Gone {
            return Ok(step);
        }
        self.stats.bytes_from_client += consumed as u64;
        if let Some(g) = &mut self.guard {
            g.save(&rbuf[..consumed]);
        }
        self.keep_for_replay(&rbuf[..consumed]);
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
            if self.out.skipping && matches!(h.tag, frontend::QUERY | frontend::FUNCTION_CALL) {
                // The server discards it (`skip_to_sync`): forwarded, owed no answer, and what
                // it says does not happen.
                continue;
            }
            if matches!(h.tag, frontend::QUERY | frontend::FUNCTION_CALL) && self.out.unsynced && !self.copy.ignores_sync() {
                // Behind unsynced extended messages (`mark_end_of_extended`); the frame itself
                // starts the next run.
                self.to_server.extend_from_slice(&buf[run_start..start]);
                self.mark_end_of_extended();
                run_start = start;
            }
            let preceding = &buf[run_start..start];
            let through = &buf[run_start..pos];
            // Whether the run up to here was written, with this frame replaced or followed.
            let cut = match h.tag {
                frontend::PARSE => self.client_parse(frame, preceding, self.plan.classified.at(start))?,
                frontend::BIND => self.client_bind(frame, preceding)?,
                frontend::DESCRIBE => self.client_describe(frame, preceding)?,
                frontend::CLOSE => self.client_close(frame, preceding)?,
                frontend::EXECUTE => {
                    self.out.unsynced = true;
                    self.copy.execute_sent();
                    false
                }
                frontend::FLUSH => {
                    self.out.unsynced = true;
                    // The client waits for the answers so far before it sends more (asyncpg's
                    // Parse/Describe/Flush): holding them for the 25006 retry would deadlock.
                    self.guard = None;
                    false
                }
                frontend::SYNC if self.copy.ignores_sync() => false,
                frontend::SYNC => {
                    self.segment_sent(false);
                    self.copy.sync_sent();
                    self.capture_after(through)
                }
                frontend::QUERY => {
                    let known = self.plan.classified.at(start);
                    if self.deallocate_locally(frame, preceding, known.as_ref()) {
                        true
                    } else {
                        self.client_query(frame, known);
                        self.capture_after(through)
                    }
                }
                frontend::FUNCTION_CALL => {
                    self.segment_sent(true);
                    false
                }
                frontend::TERMINATE => {
                    self.to_server.extend_from_slice(preceding);
                    return Ok((pos, ClientStep::Gone));
                }
                frontend::COPY_DONE | frontend::COPY_FAIL => {
                    self.copy.copy_in_ended();
                    false
                }
                frontend::COPY_DATA => false,
                // What PostgreSQL would close the connection for must not reach it: the server
                // connection outlives this client.
                tag if !frontend::is_accepted_after_login(tag) => return Err(Violation(frontend::invalid_message_type(tag))),
                _ => false,
            };
            if cut {
                run_start = pos;
            }
        }
        // A frame too large for max_message_size, or one PostgreSQL would refuse at its tag,
        // must fail now, not after buffering it.
        if let Some(h) = frames.pending().map_err(|e| Violation(e.to_string()))? {
            if !frontend::is_accepted_after_login(h.tag) {
                return Err(Violation(frontend::invalid_message_type(h.tag)));
            }
        }
        self.to_server.extend_from_slice(&buf[run_start..pos]);
        Ok((pos, ClientStep::Continue))
    }

    /// A simple Query; `known` is its classification if the batch analysis made it.
    fn client_query(&mut self, frame: &[u8], known: Option<Classification>) {
        self.stats.queries += 1;
        self.segment_sent(true);
        let sql = frontend::parse_query(frame).unwrap_or_default();

        if resets_all(sql) {
            // The server session's parameters are back to their startup values: our record of
            // what was applied there is void.
            self.server.params = self.server.startup_params();
        }
        let class = known.unwrap_or_else(|| classify_sql(sql));
        let flags = TextFlags::of(sql, &class);
        self.copy.query_sent(flags.copy);
        self.note_text(flags);
        if drops_all_statements(&class, sql) {
            self.state.statements.clear();
            // Not undoable: a replay would find the client's statements gone.
            self.stop_replay();
            // A capture behind it in this flight must not Bind a dropped statement.
            self.server.statements.capture_in_doubt();
        }
        self.note_statement(Some(&class));
    }

    /// Appends the LSN capture behind a transaction-ending message if one is due; `through`
    /// is the run up to and including that message, written first. Not behind a Query sent
    /// while extended messages are unsynced: the capture's own Sync would end the server's
    /// skip after an error in those messages, and the client's Queries after it would run where
    /// PostgreSQL skips them. The client's Sync captures instead.
    fn capture_after(&mut self, through: &[u8]) -> bool {
        if !self.capture_due() || self.out.unsynced {
            return false;
        }
        self.to_server.extend_from_slice(through);
        self.append_capture();
        true
    }

    /// What a statement's text says beyond its class: it may change or bind the session.
    pub(super) fn note_text(&mut self, flags: TextFlags) {
        self.session_changed |= flags.sets_config;
        self.session_bound |= flags.binds_session;
    }

    /// Follows the client's statements: does a transaction block stay open after them, and
    /// may they have written? An unknown statement (Bind of a name we never saw) may write.
    pub(super) fn note_statement(&mut self, class: Option<&Classification>) {
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
}
