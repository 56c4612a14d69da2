//! TLS over a non-blocking `TcpStream`, sans-io: rustls never touches the socket itself.
//! Reads feed the socket's bytes to `read_tls` and `process_new_packets` and hand out the
//! plaintext rustls holds; writes encrypt through `writer()` and push records with
//! `write_tls`, leaving what the socket does not take as a backlog (`wants_write`).

use bytes::BytesMut;
use rustls::Connection;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub struct TlsStream {
    pub(crate) tcp: TcpStream,
    conn: Connection,
    /// The peer closed its TCP side.
    eof: bool,
    /// Plaintext decrypted and not read yet (from `process_new_packets`).
    plain: usize,
}

/// The socket as `io::Read`/`io::Write` for rustls: non-blocking, `WouldBlock` when empty or
/// full (tokio then clears the readiness it recorded).
struct Sock<'a>(&'a TcpStream);

impl Read for Sock<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Sock<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsStream {
    pub(crate) fn new(tcp: TcpStream, conn: Connection) -> TlsStream {
        TlsStream { tcp, conn, eof: false, plain: 0 }
    }

    /// Drives the handshake to its end (the caller bounds it with a timeout).
    pub(crate) async fn handshake(&mut self) -> io::Result<()> {
        while self.conn.is_handshaking() {
            if self.conn.wants_write() {
                self.tcp.writable().await?;
                self.push()?;
                continue;
            }
            self.tcp.readable().await?;
            match self.fill() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    // Tell the peer why (a fatal alert), as far as the socket takes it.
                    let _ = self.push();
                    return Err(e);
                }
            }
            if self.eof && self.conn.is_handshaking() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        // The last flight (the server's Finished) may still be queued.
        while self.conn.wants_write() {
            self.tcp.writable().await?;
            self.push()?;
        }
        Ok(())
    }

    /// Plaintext is ready to read, or the peer closed: a wait for readability would be wrong.
    pub(crate) fn has_plaintext(&self) -> bool {
        self.plain > 0 || self.eof
    }

    /// Reads records from the socket and decrypts them. `WouldBlock` when the socket had none.
    fn fill(&mut self) -> io::Result<()> {
        let n = self.conn.read_tls(&mut Sock(&self.tcp))?;
        if n == 0 {
            self.eof = true;
        }
        let state = self.conn.process_new_packets().map_err(tls_error)?;
        self.plain = state.plaintext_bytes_to_read();
        if state.peer_has_closed() {
            self.eof = true;
        }
        Ok(())
    }

    /// Copies held plaintext into `out`: `Ok(0)` at the end of the stream, `WouldBlock` when
    /// nothing is held.
    fn take_plain(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.plain == 0 {
            return if self.eof { Ok(0) } else { Err(io::ErrorKind::WouldBlock.into()) };
        }
        let n = match self.conn.reader().read(out) {
            Ok(n) => n,
            // A peer that closed without close_notify: what was held has been read.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e),
        };
        self.plain = self.plain.saturating_sub(n);
        Ok(n)
    }

    /// What `Stream::read_available` does for TLS: held plaintext first, else one read of
    /// the socket.
    pub(crate) fn read_available(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        if self.plain == 0 && !self.eof {
            self.fill()?;
            if self.conn.wants_write() {
                // An alert or a key update to answer: best effort now, the backlog later.
                let _ = self.push();
            }
        }
        let start = buf.len();
        let room = (buf.capacity() - start).min(self.plain.max(1));
        buf.resize(start + room, 0);
        let r = self.take_plain(&mut buf[start..]);
        buf.truncate(start + *r.as_ref().unwrap_or(&0));
        r
    }

    /// Pushes queued records until the socket is full; `Ok` either way.
    pub(crate) fn push(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut Sock(&self.tcp)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Encrypts `data` once the backlog is gone; `WouldBlock` while it is not.
    pub(crate) fn try_write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.push()?;
        if self.conn.wants_write() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.conn.writer().write(data)?;
        self.push()?;
        Ok(n)
    }

    pub(crate) fn has_backlog(&self) -> bool {
        self.conn.wants_write()
    }

    pub(crate) fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.take_plain(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            ready!(self.tcp.poll_read_ready(cx))?;
            match self.fill() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_push(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.conn.wants_write() {
            ready!(self.tcp.poll_write_ready(cx))?;
            self.push()?;
        }
        Poll::Ready(Ok(()))
    }

    pub(crate) fn poll_write(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_push(cx))?;
        let n = self.conn.writer().write(data)?;
        self.push()?;
        Poll::Ready(Ok(n))
    }

    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_push(cx)
    }

    pub(crate) fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.conn.send_close_notify();
        ready!(self.poll_push(cx))?;
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
