//! A server found dead before it could have read the transaction: the client's bytes are
//! replayed on another connection, unseen. The rule, and why it is safe, is in
//! docs/ARCHITECTURE.md ("Dead server connections").
//!
//! While nothing has come back from the server in this transaction, the client bytes sent are
//! kept (in the connection's own buffer: no allocation per transaction). The first server
//! bytes end that, unless they are a lone FATAL of class 57P (terminated, shutting down):
//! then the relay holds it and waits for the close. A FATAL as the first answer proves no
//! statement of the flight committed (a commit's CommandComplete and ReadyForQuery are
//! flushed before the backend reads on or dies); the replay then needs either a reset (the
//! server's TCP answered bytes its process never read) or a failure within `QUICK` of the
//! write (killed as it picked the flight up, not after a long run someone meant to stop).

use super::io::Filled;
use super::Relay;
use bytes::BytesMut;
use lsnpool_protocol::backend;
use lsnpool_protocol::frame::Header;
use std::io;
use std::time::Duration;

/// Largest first flight kept for a replay (bigger ones, COPY data for instance, are not worth
/// copying on every transaction).
const REPLAY_MAX: usize = 8 * 1024;

/// A flight written at once and no bigger than this is one TCP segment on any common link
/// (MTU 1500, under TLS too): the server's kernel got it whole and its process read all of it
/// or none.
const ONE_SEGMENT: usize = 1024;

/// A failure this soon after the flight was written is the server dying as it picked it up,
/// not a long statement someone meant to stop (which must not be run again). Generous,
/// because a loaded machine can take this long to schedule the relay.
const QUICK: Duration = Duration::from_secs(1);

/// After a close with no reset yet, how long to wait for one: the reset answers our bytes
/// within a round trip, and on a loopback or LAN well within this.
const RESET_WAIT: Duration = Duration::from_millis(100);

/// What the first server bytes of a transaction say.
enum FirstAnswer {
    /// Not enough bytes for a whole first message yet.
    Incomplete,
    /// The server is going away (a FATAL of class 57P): hold it, wait for the close.
    Dying,
    /// An ordinary answer: the transaction is under way.
    Alive,
}

fn first_answer(buf: &[u8]) -> FirstAnswer {
    match Header::parse(buf, usize::MAX) {
        Ok(Some(h)) if buf.len() >= h.frame_len => {
            let frame = &buf[..h.frame_len];
            if h.tag == backend::ERROR_RESPONSE {
                let f = backend::parse_error_fields(frame);
                // Only a lone FATAL: any byte after it but the close means something else.
                if f.severity == b"FATAL" && f.code.starts_with(b"57P") && buf.len() == h.frame_len {
                    return FirstAnswer::Dying;
                }
            }
            FirstAnswer::Alive
        }
        Ok(_) => FirstAnswer::Incomplete,
        Err(_) => FirstAnswer::Alive,
    }
}

impl Relay<'_, '_, '_> {
    /// Starts keeping the client's bytes, if the session may replay this transaction.
    pub(super) fn start_replay(&mut self) {
        if self.plan.replayable {
            let mut buf = std::mem::take(&mut self.server.replay);
            buf.clear();
            self.replay = Some(buf);
        }
    }

    /// The transaction can no longer be replayed: the buffer goes back to the connection.
    pub(super) fn stop_replay(&mut self) {
        if let Some(mut buf) = self.replay.take() {
            buf.clear();
            self.server.replay = buf;
        }
    }

    pub(super) fn keep_for_replay(&mut self, client_bytes: &[u8]) {
        if let Some(r) = &mut self.replay {
            r.extend_from_slice(client_bytes);
            if r.len() > REPLAY_MAX {
                self.stop_replay();
            }
        }
    }

    /// Counts the writes of the first flight, and notes when the first went out.
    pub(super) fn flight_written(&mut self, bytes: usize) {
        if self.replay.is_some() && bytes > 0 {
            self.flight_writes += 1;
            if self.flight_writes == 1 {
                self.flight_at = Some(std::time::Instant::now());
            }
        }
    }

    /// Reads the server while nothing of its answer has been handled. `Ok(true)`: the bytes
    /// are an ordinary answer, to be forwarded; `Ok(false)`: nothing to forward yet.
    pub(super) fn read_first_answer(&mut self) -> io::Result<bool> {
        match self.fill_server()? {
            Filled::Some => {}
            Filled::Nothing => return Ok(false),
            Filled::Eof => return Err(io::ErrorKind::UnexpectedEof.into()),
        }
        match first_answer(&self.server.buf) {
            FirstAnswer::Incomplete => Ok(false),
            FirstAnswer::Dying => {
                self.fatal_held = true;
                Ok(false)
            }
            FirstAnswer::Alive => {
                self.stop_replay();
                self.fatal_held = false;
                Ok(true)
            }
        }
    }

    /// The server failed with `error`: the client's bytes to replay elsewhere when the failure
    /// proves the server never read them, else `None`.
    pub(super) async fn replay_after(&mut self, error: &io::Error) -> Option<BytesMut> {
        let node = &self.server.label;
        if self.replay.is_none() {
            tracing::debug!(%node, error = %error, "server failed; too late to replay");
            return None;
        }
        let held = self.server.buf.len();
        // Whatever was read must be nothing, or the lone FATAL being held.
        if held > 0 && !self.fatal_held {
            tracing::debug!(%node, error = %error, held, "server failed after an answer began; not replayed");
            return None;
        }
        let quick = self.flight_at.is_none_or(|t| t.elapsed() < QUICK);
        let one_segment = self.flight_writes <= 1 && self.replay.as_ref().is_some_and(|r| r.len() <= ONE_SEGMENT);
        // A lone FATAL proves nothing committed; soon after the write, nothing ran for long.
        // Otherwise only a reset proves the server never read the flight.
        let proven = (self.fatal_held && quick)
            || (one_segment && (lsnpool_net::is_reset(error) || self.reset_soon().await));
        if !proven {
            tracing::debug!(%node, error = %error, fatal = self.fatal_held, quick, one_segment, "server failed and may have run the transaction; not replayed");
            return None;
        }
        metrics::counter!("lsnpool_server_dead_replays_total", "node" => self.server.label.to_string()).increment(1);
        tracing::info!(node = %self.server.label, pid = self.server.key.pid, "server connection was dead before it read the transaction; replaying on another");
        let saved = self.replay.take();
        self.server.buf.clear();
        // The client's statements go back to what they were: the replay parses them again.
        self.drop_unanswered(u64::MAX);
        saved
    }

    /// Waits up to `RESET_WAIT` for the server's TCP to reset the connection.
    async fn reset_soon(&self) -> bool {
        let deadline = tokio::time::Instant::now() + RESET_WAIT;
        loop {
            if self.server.stream.take_reset() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Gives up replaying: a FATAL held back reaches the client as the server sent it.
    pub(super) fn release_held_fatal(&mut self) -> bool {
        if !self.fatal_held {
            return false;
        }
        self.fatal_held = false;
        let frame = self.server.buf.split();
        self.client.wbuf.extend_from_slice(&frame);
        true
    }
}
