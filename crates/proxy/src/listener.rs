//! Accepting clients: one tokio task per connection, a login deadline, then the session or
//! the admin console.

use crate::clients::ClientAddr;
use crate::login::{login, Accepted, LoginError};
use lsnpool_net::Stream;
use crate::pooler::Pooler;
use crate::session::Session;
use bytes::BytesMut;
use lsnpool_protocol::backend::{self, PoolerError};
use lsnpool_protocol::sqlstate;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use std::future::Future;
use tokio::net::{TcpListener, UnixListener};

/// Accepts TCP clients until shutdown begins.
pub async fn serve(pooler: Arc<Pooler>, listener: TcpListener) -> std::io::Result<()> {
    accept_until_shutdown(pooler, || async {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((Stream::from(stream), ClientAddr::Tcp(peer)))
    })
    .await
}

/// Accepts clients on lsnpool's Unix-domain socket (`pooler.unix_socket_dir`) until shutdown
/// begins; `port` names the socket, as SHOW CLIENTS shows it.
pub async fn serve_unix(pooler: Arc<Pooler>, listener: UnixListener, port: u16) -> std::io::Result<()> {
    accept_until_shutdown(pooler, || async {
        let (stream, _) = listener.accept().await?;
        Ok((Stream::from(stream), ClientAddr::Unix { port }))
    })
    .await
}

async fn accept_until_shutdown<F, A>(pooler: Arc<Pooler>, accept: F) -> std::io::Result<()>
where
    F: Fn() -> A,
    A: Future<Output = std::io::Result<(Stream, ClientAddr)>>,
{
    loop {
        let accepted = {
            let shutdown = pooler.shutdown.notified();
            if pooler.is_shutting_down() {
                return Ok(());
            }
            tokio::select! {
                a = accept() => a,
                _ = shutdown => return Ok(()),
            }
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: log, breathe, go on; one bad accept must not stop us.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(handle(pooler.clone(), stream, peer));
    }
}

/// Login, with the TLS handshake in between when the client asks for it. The stream is in
/// `slot` except during the handshake (a login that times out there has nobody to tell).
async fn login_maybe_tls(slot: &mut Option<Stream>, buf: &mut BytesMut, pooler: &Arc<Pooler>, peer: ClientAddr) -> Result<Accepted, LoginError> {
    loop {
        let Some(stream) = slot.as_mut() else { return Err(LoginError::Eof) };
        match login(stream, buf, pooler, peer).await? {
            Accepted::StartTls(config) => {
                let plain = slot.take().ok_or(LoginError::Eof)?;
                let tls = plain.accept_tls(config).await.inspect_err(|e| tracing::info!(client = %peer, error = %e, "TLS handshake failed"))?;
                *slot = Some(tls);
            }
            other => return Ok(other),
        }
    }
}

async fn handle(pooler: Arc<Pooler>, stream: Stream, peer: ClientAddr) {
    let login_timeout = pooler.topology().config.pooler.client_login_timeout;
    let mut buf = BytesMut::new();
    let mut slot = Some(stream);
    // Boxed: the login's state (SCRAM, buffers, TLS) must not stay in every idle client's task.
    let accepted = tokio::time::timeout(login_timeout, Box::pin(login_maybe_tls(&mut slot, &mut buf, &pooler, peer))).await;
    let Some(mut stream) = slot else { return };
    match accepted {
        Err(_) => {
            tracing::info!(client = %peer, "login timed out (pooler.client_login_timeout)");
            let mut out = BytesMut::new();
            let e = PoolerError::fatal(sqlstate::PROTOCOL_VIOLATION, "login timed out (pooler.client_login_timeout)");
            backend::error_response(&mut out, &e);
            let _ = stream.write_all(&out).await;
        }
        Ok(Err(e)) => tracing::debug!(client = %peer, error = %e, "login aborted"),
        Ok(Ok(Accepted::Done | Accepted::StartTls(_))) => {}
        Ok(Ok(Accepted::Admin { user, access })) => {
            tracing::info!(client = %peer, user, "admin console connected");
            Box::pin(crate::admin::serve(pooler, stream, buf, access)).await;
            tracing::info!(client = %peer, user, "admin console disconnected");
        }
        Ok(Ok(Accepted::Session(li))) => {
            tracing::info!(client = %peer, user = %li.user.name, database = %li.db.name, "client connected");
            let Some(pools) = li.topology.pools(&li.db.cluster, &li.user.name) else { return };
            let Some(cluster) = li.topology.cluster_state(&li.db.cluster) else { return };
            // Bytes the client pipelined behind its login belong to its first transaction.
            let leftover = if buf.is_empty() { BytesMut::new() } else { buf };
            // A task of its own: the login's task (this function's state, the login buffer)
            // ends here, and an idle client costs only the session's task.
            tokio::spawn(Session::new(pooler, stream, *li, pools, cluster, leftover).run());
        }
    }
}
