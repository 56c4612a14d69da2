//! The byte stream under a client or server connection: plain TCP, TLS, or a Unix-domain
//! socket to a server on the same host.
//!
//! The relay, the session's idle wait, login and the pool's server connections move bytes
//! through the few calls below and never name the socket. TLS is sans-io rustls (`tls`):
//! `read_available` feeds the socket's bytes to `read_tls` + `process_new_packets` and hands
//! out plaintext from `reader()`; `try_write` encrypts through `writer()` and pushes records
//! with `write_tls`; `readable` returns at once while plaintext is already buffered;
//! `has_backlog` reports encrypted records the socket has not taken yet, so callers keep
//! waiting for writability, and `write_from` pushes that backlog before new bytes. The plain
//! path pays the enum match and nothing else.

mod tls;
mod tls_config;

pub use rustls;
pub use tls_config::{client_config, server_config, server_name, ServerVerify};

use bytes::{Buf, BytesMut};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

pub enum Stream {
    Plain(TcpStream),
    /// Boxed: a TLS session is large and rare; the plain stream stays small.
    Tls(Box<tls::TlsStream>),
    /// A server's Unix-domain socket (`host` a directory, as libpq reads it): no TCP/IP stack
    /// on the way, and never TLS (PostgreSQL does not offer it there).
    Local(UnixStream),
}

impl From<UnixStream> for Stream {
    fn from(s: UnixStream) -> Stream {
        Stream::Local(s)
    }
}

/// `Stream::read_available` on a tokio socket of either family (see there).
macro_rules! drain_into {
    ($stream:expr, $buf:expr) => {{
        let stream = $stream;
        let buf: &mut BytesMut = $buf;
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
    }};
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Stream {
        Stream::Plain(s)
    }
}

impl Stream {
    /// The server side of a TLS handshake on a plain stream (after answering `S` to an
    /// SSLRequest). The caller bounds it with a timeout.
    pub async fn accept_tls(self, config: std::sync::Arc<rustls::ServerConfig>) -> io::Result<Stream> {
        let tcp = self.into_plain()?;
        let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
        let mut tls = tls::TlsStream::new(tcp, conn.into());
        tls.handshake().await?;
        Ok(Stream::Tls(Box::new(tls)))
    }

    /// The client side of a TLS handshake on a plain stream (after the server answered `S`).
    pub async fn connect_tls(self, config: std::sync::Arc<rustls::ClientConfig>, name: rustls::pki_types::ServerName<'static>) -> io::Result<Stream> {
        let tcp = self.into_plain()?;
        let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut tls = tls::TlsStream::new(tcp, conn.into());
        tls.handshake().await?;
        Ok(Stream::Tls(Box::new(tls)))
    }

    fn into_plain(self) -> io::Result<TcpStream> {
        match self {
            Stream::Plain(tcp) => Ok(tcp),
            Stream::Tls(_) => Err(io::Error::other("TLS is already on")),
            Stream::Local(_) => Err(io::Error::other("PostgreSQL offers no TLS on a Unix-domain socket")),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Waits until `read_available` may have something (or the peer closed).
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.readable().await,
            Stream::Tls(t) if t.has_plaintext() => Ok(()),
            Stream::Tls(t) => t.tcp.readable().await,
            Stream::Local(s) => s.readable().await,
        }
    }

    /// `readable` without a future: registers the task's waker in the socket's one reader
    /// slot. An idle client's task waits this way, so its state holds no readiness futures.
    pub fn poll_read_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        match self {
            Stream::Plain(s) => s.poll_read_ready(cx),
            Stream::Tls(t) if t.has_plaintext() => std::task::Poll::Ready(Ok(())),
            Stream::Tls(t) => t.tcp.poll_read_ready(cx),
            Stream::Local(s) => s.poll_read_ready(cx),
        }
    }

    /// `writable` without a future (see `poll_read_ready`).
    pub fn poll_write_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        match self {
            Stream::Plain(s) => s.poll_write_ready(cx),
            Stream::Tls(t) => t.tcp.poll_write_ready(cx),
            Stream::Local(s) => s.poll_write_ready(cx),
        }
    }

    /// Waits until `try_write` may take bytes.
    pub async fn writable(&self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.writable().await,
            Stream::Tls(t) => t.tcp.writable().await,
            Stream::Local(s) => s.writable().await,
        }
    }

    /// Reads what the socket has into `buf`'s spare room without waiting: `Ok(0)` is end of
    /// stream, `WouldBlock` means nothing was there.
    ///
    /// A read shorter than the room offered drained the socket, so its readiness is cleared
    /// (as tokio's own `poll_read` does): otherwise the next wait returns at once and costs an
    /// empty read, one wasted syscall per message exchange. The read runs inside `try_io`,
    /// whose readiness snapshot is taken *before* it: data arriving after the snapshot bumps
    /// tokio's readiness tick and the clear is skipped, so no wakeup can be lost. (Clearing in
    /// a separate `try_io` after the read would snapshot too late and could lose one.)
    pub fn read_available(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Stream::Plain(stream) => drain_into!(&*stream, buf),
            Stream::Tls(t) => t.read_available(buf),
            Stream::Local(stream) => drain_into!(&*stream, buf),
        }
    }

    /// Writes what the socket takes now; `WouldBlock` when it takes nothing.
    pub fn try_write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.try_write(data),
            Stream::Tls(t) => t.try_write(data),
            Stream::Local(s) => s.try_write(data),
        }
    }

    /// Writes as much of `pending` as the socket takes without waiting, removing it from the
    /// front; `Ok` with bytes left means the socket is full.
    pub fn write_from(&mut self, pending: &mut BytesMut) -> io::Result<()> {
        if let Stream::Tls(t) = self {
            t.push()?;
        }
        while !pending.is_empty() {
            match self.try_write(pending) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => pending.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Bytes accepted by `try_write` that have not reached the socket yet (encrypted records,
    /// under TLS). Plain sockets have none.
    pub fn has_backlog(&self) -> bool {
        match self {
            Stream::Plain(_) | Stream::Local(_) => false,
            Stream::Tls(t) => t.has_backlog(),
        }
    }

    /// The TCP socket underneath, for addresses and socket options (`None` on a Unix socket).
    /// Reading or writing it directly would bypass TLS.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Tls(t) => Some(&t.tcp),
            Stream::Local(_) => None,
        }
    }

    /// Whether the connection was reset by the peer (`ECONNRESET`/`EPIPE` pending on the
    /// socket). Takes the pending error, as `SO_ERROR` does.
    pub fn take_reset(&self) -> bool {
        let pending = match self {
            Stream::Local(s) => s.take_error(),
            _ => self.tcp().map_or(Ok(None), |t| t.take_error()),
        };
        matches!(pending, Ok(Some(e)) if is_reset(&e))
    }

    /// The TCP address of this end; an error on a Unix socket, which has none.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().ok_or_else(no_inet)?.local_addr()
    }

    /// The TCP address of the peer; an error on a Unix socket, which has none.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().ok_or_else(no_inet)?.peer_addr()
    }

    /// True when the peer has sent nothing and not closed: a connection idle in a pool must
    /// stay silent. Under TLS a byte consumed here is lost, which is fine: a connection that
    /// fails this check is discarded.
    ///
    /// Free in the common case: tokio's `try_read` first looks at the readiness the event loop
    /// recorded and returns `WouldBlock` without a syscall while the socket is not known to be
    /// readable; only a socket that turned readable (a FATAL, an EOF) costs the read.
    pub fn is_silent(&self) -> bool {
        let mut probe = [0u8; 1];
        let read = match self {
            Stream::Plain(s) => s.try_read(&mut probe),
            Stream::Tls(t) => t.tcp.try_read(&mut probe),
            Stream::Local(s) => s.try_read(&mut probe),
        };
        matches!(read, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

fn no_inet() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "a Unix-domain socket has no TCP address")
}

/// An error that says the peer's TCP reset the connection.
pub fn is_reset(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe)
}

/// The slow paths (logins, the pooler's own short exchanges) use tokio's async read/write.
impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(t) => t.poll_read(cx, buf),
            Stream::Local(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(t) => t.poll_write(cx, buf),
            Stream::Local(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(t) => t.poll_flush(cx),
            Stream::Local(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(t) => t.poll_shutdown(cx),
            Stream::Local(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair() -> (Stream, Stream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.expect("connect").into(), b.expect("accept").0.into())
    }

    /// The pool looks at every connection it lends (`is_silent`): on an idle socket that look
    /// must cost no syscall. Compared with a non-blocking `recv` on an idle std socket.
    #[tokio::test]
    async fn is_silent_on_an_idle_socket_costs_no_syscall() {
        let (_a, b) = pair().await;
        let n = 20_000u32;
        let t = std::time::Instant::now();
        for _ in 0..n {
            assert!(b.is_silent());
        }
        let looked = t.elapsed() / n;
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let c = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let _peer = l.accept().expect("accept");
        c.set_nonblocking(true).expect("nonblocking");
        let mut probe = [0u8; 1];
        let t = std::time::Instant::now();
        for _ in 0..n {
            assert!(matches!(c.peek(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock));
        }
        let recv = t.elapsed() / n;
        eprintln!("is_silent on an idle socket: {looked:?} per call; one recv syscall: {recv:?}");
        assert!(looked < recv, "is_silent ({looked:?}) should cost less than a syscall ({recv:?})");
    }

    #[tokio::test]
    async fn reads_what_was_written_then_would_block_then_eof() {
        let (a, b) = pair().await;
        exchange(a, b).await;
    }

    #[tokio::test]
    async fn a_unix_socket_reads_and_writes_like_tcp() {
        let (a, b) = UnixStream::pair().expect("pair");
        let (a, b): (Stream, Stream) = (a.into(), b.into());
        assert!(!a.is_tls());
        assert_eq!(a.peer_addr().map_err(|e| e.kind()), Err(io::ErrorKind::Unsupported));
        exchange(a, b).await;
    }

    async fn exchange(mut a: Stream, mut b: Stream) {
        let mut buf = BytesMut::with_capacity(64);
        assert_eq!(b.read_available(&mut buf).map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock));
        let mut out = BytesMut::from(&b"hello"[..]);
        a.writable().await.expect("writable");
        a.write_from(&mut out).expect("write");
        assert!(out.is_empty());
        b.readable().await.expect("readable");
        assert_eq!(b.read_available(&mut buf).expect("read"), 5);
        assert_eq!(&buf[..], b"hello");
        assert!(b.is_silent());
        drop(a);
        b.readable().await.expect("readable at eof");
        assert_eq!(b.read_available(&mut buf).expect("eof"), 0);
        assert!(!b.is_silent());
    }
}
