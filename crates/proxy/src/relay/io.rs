//! The relay's side of the sockets: filling read buffers, writing runs and queues. The
//! streams are `lsnpool_net::Stream`, so nothing here depends on whether they are TLS.

use super::{Relay, HIGH_WATER};
use bytes::BytesMut;
use lsnpool_net::Stream;
use lsnpool_protocol::frame::Header;
use std::io;

const READ_CHUNK: usize = 16 * 1024;

/// The client's socket and buffers; buffers are empty (unallocated) while the client idles.
pub struct ClientIo {
    pub stream: Stream,
    pub rbuf: BytesMut,
    pub wbuf: BytesMut,
    pub max_message_size: usize,
}

/// Reads what the socket has without waiting (see `Stream::read_available`).
pub fn read_available(stream: &mut Stream, buf: &mut BytesMut) -> io::Result<usize> {
    stream.read_available(buf)
}

/// Writes as much of `pending` as the socket takes without waiting, then gives back the
/// memory of a queue a slow reader let grow.
pub fn flush_now(stream: &mut Stream, pending: &mut BytesMut) -> io::Result<()> {
    stream.write_from(pending)?;
    if pending.is_empty() && pending.capacity() > 4 * HIGH_WATER {
        *pending = BytesMut::new();
    }
    Ok(())
}

/// Writes `run`, straight from the read buffer when nothing is queued before it; whatever the
/// socket does not take now is queued in `pending`.
fn send_run(stream: &mut Stream, run: &[u8], pending: &mut BytesMut) {
    if run.is_empty() {
        let _ = flush_now(stream, pending);
        return;
    }
    if pending.is_empty() {
        // On WouldBlock, or an error the next write will report, all of it waits.
        let n = stream.try_write(run).unwrap_or_default();
        pending.extend_from_slice(&run[n..]);
    } else {
        pending.extend_from_slice(run);
        let _ = flush_now(stream, pending);
    }
}

pub fn peek_header(buf: &[u8], max: usize) -> Result<Option<Header>, lsnpool_protocol::FrameError> {
    Header::parse(buf, max)
}

/// What a read found: the peer's end of stream is not an error to the caller, just news.
pub(super) enum Filled {
    Some,
    Nothing,
    Eof,
}

fn fill(stream: &mut Stream, buf: &mut BytesMut) -> io::Result<Filled> {
    buf.reserve(READ_CHUNK);
    match read_available(stream, buf) {
        Ok(0) => Ok(Filled::Eof),
        Ok(_) => Ok(Filled::Some),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Filled::Nothing),
        Err(e) => Err(e),
    }
}

impl Relay<'_, '_, '_> {
    pub(super) fn fill_client(&mut self) -> io::Result<Filled> {
        fill(&mut self.client.stream, &mut self.client.rbuf)
    }

    pub(super) fn fill_server(&mut self) -> io::Result<Filled> {
        fill(&mut self.server.stream, &mut self.server.buf)
    }

    pub(super) fn flush_server_now(&mut self) -> io::Result<()> {
        let before = self.to_server.len();
        let r = flush_now(&mut self.server.stream, &mut self.to_server);
        self.flight_written(before - self.to_server.len());
        r
    }

    pub(super) fn flush_client_now(&mut self) -> io::Result<()> {
        flush_now(&mut self.client.stream, &mut self.client.wbuf)
    }

    /// Bytes for the client, written at once unless the retry guard holds them back.
    pub(super) fn send_to_client(&mut self, run: &[u8]) {
        if self.guard.is_some() || self.retrying {
            self.client.wbuf.extend_from_slice(run);
        } else {
            send_run(&mut self.client.stream, run, &mut self.client.wbuf);
        }
    }

    pub(super) fn server_output_waiting(&self) -> bool {
        !self.to_server.is_empty() || self.server.stream.has_backlog()
    }

    pub(super) fn client_output_waiting(&self) -> bool {
        !self.client.wbuf.is_empty() || self.client.stream.has_backlog()
    }
}
