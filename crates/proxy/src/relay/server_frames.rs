//! Server to client: reads the server's bytes and forwards its frames as runs, handing the
//! frames the pooler must act on to the retry guard, the capture, the statement rewriter and
//! the COPY tracker. Uninspected messages too big to buffer are streamed through.

use super::io::Filled;
use super::Relay;
use bytes::Buf;
use lsnpool_protocol::backend;
use lsnpool_protocol::frame::Frames;
use std::io;

/// A server message bigger than this that the pooler does not inspect is streamed through
/// instead of buffered whole.
const STREAM_THRESHOLD: usize = 64 * 1024;

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

impl Relay<'_, '_, '_> {
    pub(super) fn read_server(&mut self) -> io::Result<()> {
        if self.replay.is_some() {
            // Nothing has come back yet: the first bytes may say the server is dead (`replay`).
            if !self.read_first_answer()? {
                return Ok(());
            }
        } else {
            match self.fill_server()? {
                Filled::Some => {}
                Filled::Nothing => return Ok(()),
                Filled::Eof => return Err(io::ErrorKind::UnexpectedEof.into()),
            }
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
        let mut over = false;
        for item in &mut frames {
            let (h, frame) = item.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if self.transaction_over() {
                // Whatever a server says after the transaction's last ReadyForQuery (a FATAL
                // as it is terminated) is not this client's: left in the buffer, it keeps the
                // connection from going back to the pool.
                over = true;
                break;
            }
            let start = pos;
            pos += h.frame_len;
            let preceding = &buf[run_start..start];
            // Whether the run up to here was written and this frame dropped or replaced.
            let cut = if self.retrying || self.in_capture_segment() {
                // Answers nobody shows the client.
                self.client.wbuf.extend_from_slice(preceding);
                if self.retrying {
                    self.retry_frame(h.tag, frame)?;
                } else {
                    self.capture_frame(h.tag, frame)?;
                }
                true
            } else if self.guard_watch(h.tag, frame) {
                // What came before is thrown away with the rest of the replica's answer.
                true
            } else {
                match h.tag {
                    backend::PARSE_COMPLETE => self.parse_answered(preceding),
                    backend::CLOSE_COMPLETE => self.close_answered(preceding),
                    backend::READY_FOR_QUERY => {
                        self.ready_for_query(frame)?;
                        self.hold_ready(frame, preceding)
                    }
                    backend::ERROR_RESPONSE => {
                        self.server_error(frame);
                        false
                    }
                    backend::PARAMETER_STATUS => {
                        self.track_parameter(frame);
                        false
                    }
                    backend::COMMAND_COMPLETE => {
                        self.note_command_tag(frame);
                        false
                    }
                    backend::COPY_IN_RESPONSE => {
                        self.copy_in_response();
                        false
                    }
                    _ => false,
                }
            };
            if cut {
                run_start = pos;
            }
        }
        // A big message nobody needs to read is streamed through rather than buffered whole.
        if let Some(h) = frames.pending().ok().flatten().filter(|_| !over) {
            let have = buf.len() - pos;
            if h.frame_len > STREAM_THRESHOLD && !inspected(h.tag) {
                self.streaming = h.frame_len - have;
                pos = buf.len();
            }
        }
        self.stats.bytes_to_client += (pos - run_start) as u64;
        self.send_to_client(&buf[run_start..pos]);
        Ok(pos)
    }

    /// After an error in extended-protocol mode the server skips every message up to the
    /// next Sync, simple Queries included: what was queued for those messages will never be
    /// answered.
    fn server_error(&mut self, frame: &[u8]) {
        let f = backend::parse_error_fields(frame);
        if self.stats.first_error.is_none() {
            if let Ok(code) = <[u8; 5]>::try_from(f.code) {
                self.stats.first_error = Some(code);
            }
        }
        // The error may roll back a CREATE: what was prepared after it may be stale. Or the
        // server itself says a statement is stale (the schema changed outside this lsnpool):
        // statements prepared from now on do not reuse the old ones.
        let stale = (f.code == b"XX000" && f.message.starts_with(b"cache lookup failed"))
            || (f.code == b"0A000" && f.message.starts_with(b"cached plan must not change"));
        if self.ddl_seen || stale {
            lsnpool_pool::schema_changed();
        }
        self.skip_to_sync();
        self.drop_unanswered(self.out.answered + 1);
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
                self.server.params = self.server.startup_params();
                self.session_changed = true;
            }
            // A schema change that may leave prepared statements stale (see
            // `lsnpool_pool::schema_changed`); a CREATE counts once rolled back.
            t if t.starts_with(b"DROP ") || t.starts_with(b"ALTER ") => {
                self.ddl_seen = true;
                lsnpool_pool::schema_changed();
            }
            t if t.starts_with(b"CREATE ") => {
                self.ddl_seen = true;
                if t == b"CREATE TABLE" {
                    self.session_bound = true;
                }
            }
            b"ROLLBACK" if self.ddl_seen => lsnpool_pool::schema_changed(),
            // SET, RESET, SET ROLE, SET SESSION AUTHORIZATION, SET LOCAL (a false positive):
            // the session may now differ from what the pooler recorded.
            b"SET" | b"RESET" => self.session_changed = true,
            // What lives on this server connection beyond the transaction: a LISTEN, a WITH
            // HOLD cursor, an SQL-level prepared statement, maybe a temporary table.
            b"LISTEN" | b"DECLARE CURSOR" | b"PREPARE" => self.session_bound = true,
            _ => {}
        }
    }

    /// A client's `SET TimeZone …` reaches us as ParameterStatus: it is now part of the
    /// client's session (and of this server's), so it follows the client to other servers.
    fn track_parameter(&mut self, frame: &[u8]) {
        let Some((name, value)) = backend::parse_parameter_status(frame) else { return };
        if self.state.params.learn_reported(name, value) {
            self.server.params.learn_reported(name, value);
        }
    }
}
