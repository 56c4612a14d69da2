//! A server connection a client holds between transactions (session mode, or a client pinned
//! to it by what cannot follow it elsewhere): keeping it, and relaying what it says on its own
//! while the client idles.

use super::{Session, READ_CHUNK};
use crate::lease::Lease;
use crate::routing::Target;
use bytes::Buf;
use lsnpool_protocol::backend;
use lsnpool_protocol::frame::Frames;
use std::io;

impl Session {
    /// Keeps the server connection for the client's next transaction (session mode, or a
    /// pinned client). A NOTIFY that arrived while the pooler ran a query of its own on it is
    /// the client's.
    pub(super) fn hold(&mut self, mut server: Lease, target: Target) {
        let early = server.notifications.split();
        self.client.wbuf.extend_from_slice(&early);
        self.held = Some(Box::new((server, target)));
        // A NotificationResponse read in the same chunk as the answer to the pooler's own
        // query sits in the buffer already: the socket will not wake anyone for it.
        self.forward_buffered();
    }


    /// A held server connection spoke between transactions: a NotificationResponse for a
    /// LISTEN, a NoticeResponse, a ParameterStatus, or a FATAL before it closes. The client
    /// sees it at once, as it would on a direct connection. `Err` ends the session.
    pub(super) fn relay_server_messages(&mut self) -> io::Result<()> {
        let Some(held) = self.held.as_deref_mut() else { return Ok(()) };
        let conn: &mut lsnpool_pool::ServerConn = &mut held.0;
        conn.buf.reserve(READ_CHUNK);
        let read = crate::relay::read_available(&mut conn.stream, &mut conn.buf);
        self.forward_buffered();
        match read {
            Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    }

    /// Forwards the complete frames the held server connection's buffer holds.
    fn forward_buffered(&mut self) {
        let Some(held) = self.held.as_deref_mut() else { return };
        if held.0.buf.is_empty() {
            return;
        }
        let mut buf = std::mem::take(&mut held.0.buf);
        let mut consumed = 0;
        for (h, frame) in Frames::new(&buf, usize::MAX).map_while(Result::ok) {
            consumed += h.frame_len;
            if h.tag == backend::PARAMETER_STATUS {
                self.track_reported(frame);
            }
            self.client.wbuf.extend_from_slice(frame);
        }
        buf.advance(consumed);
        if let Some(held) = self.held.as_deref_mut() {
            held.0.buf = buf;
        }
    }

    /// A parameter the server reported on its own (e.g. after ALTER ROLE ... SET): part of the
    /// client's session from now on.
    fn track_reported(&mut self, frame: &[u8]) {
        let Some((name, value)) = backend::parse_parameter_status(frame) else { return };
        if self.login.params.learn_reported(name, value) {
            if let Some(held) = self.held.as_deref_mut() {
                held.0.params.learn_reported(name, value);
            }
        }
    }
}
