//! The 25006 retry guard. A transaction the router sent to a replica may write after all
//! (a function, a statement the classifier could not see through): the replica refuses it
//! with 25006. If that happens before the client has seen any result, the client's bytes are
//! replayed on the primary and the client never knows.

use super::Relay;
use bytes::BytesMut;
use lsnpool_protocol::backend;
use lsnpool_protocol::frontend;
use std::io;

pub(super) struct RetryGuard {
    /// Every client byte sent to the replica, to replay on the primary.
    saved: BytesMut,
    /// Length of the client's output buffer when the transaction began.
    mark: usize,
}

impl RetryGuard {
    pub(super) fn new(mark: usize) -> RetryGuard {
        RetryGuard { saved: BytesMut::new(), mark }
    }

    pub(super) fn save(&mut self, client_bytes: &[u8]) {
        self.saved.extend_from_slice(client_bytes);
    }
}

impl Relay<'_, '_, '_> {
    /// Looks at a server frame while the guard is up. Returns true when it is a 25006 that
    /// starts the retry (the frame is then dropped); a frame that shows the client a result
    /// lowers the guard for good.
    pub(super) fn guard_watch(&mut self, tag: u8, frame: &[u8]) -> bool {
        if self.guard.is_none() {
            return false;
        }
        match tag {
            backend::ERROR_RESPONSE if backend::parse_error_fields(frame).code == b"25006" => {
                self.start_retry();
                return true;
            }
            backend::DATA_ROW
            | backend::COMMAND_COMPLETE
            | backend::EMPTY_QUERY_RESPONSE
            | backend::COPY_IN_RESPONSE
            | backend::COPY_OUT_RESPONSE
            | backend::COPY_BOTH_RESPONSE
            | backend::READY_FOR_QUERY
            | backend::ERROR_RESPONSE => {
                // The client is about to see a result: from here on it is committed to this
                // replica.
                self.guard = None;
            }
            _ => {}
        }
        false
    }

    /// A replica refused a write before the client saw anything: forget what was buffered
    /// for the client and drain the replica, then the session replays the batch on the
    /// primary.
    fn start_retry(&mut self) {
        self.retrying = true;
        if let Some(g) = &self.guard {
            self.client.wbuf.truncate(g.mark);
        }
        self.skip_to_sync();
        self.drop_unanswered(self.out.answered + 1);
        if self.out.unsynced {
            // The server skips to the next Sync after an error; give it one to end on.
            frontend::sync(&mut self.to_server);
            self.segment_sent(false);
        }
    }

    /// While draining the replica only the ReadyForQuery count matters.
    pub(super) fn retry_frame(&mut self, tag: u8, frame: &[u8]) -> io::Result<()> {
        if tag == backend::READY_FOR_QUERY {
            self.ready_for_query(frame)?;
        }
        Ok(())
    }

    pub(super) fn take_saved(&mut self) -> BytesMut {
        self.retrying = false;
        self.guard.take().map(|g| g.saved).unwrap_or_default()
    }
}
