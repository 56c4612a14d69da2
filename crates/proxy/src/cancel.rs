//! Cancel requests: each client gets its own (pid, secret) at login; a CancelRequest carrying
//! them is forwarded to whichever server backend runs that client's query right now.

use crate::clients::ClientRegistry;
use lsnpool_net::Stream;
use lsnpool_pool::{ServerAddr, ServerKey};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixStream};

/// Handles one CancelRequest. Like PostgreSQL, never tells the requester anything.
pub async fn handle(clients: &ClientRegistry, pid: i32, secret: i32, timeout: Duration) {
    let Some(slot) = clients.find(pid, secret) else {
        tracing::debug!(pid, "cancel request for an unknown client ignored");
        return;
    };
    metrics::counter!("lsnpool_cancel_requests_total").increment(1);
    match slot.server() {
        Some(key) => {
            let server_pid = key.pid;
            let r = tokio::time::timeout(timeout, forward(key)).await;
            match r {
                Ok(Ok(())) => tracing::debug!(pid, server_pid, "cancel forwarded"),
                Ok(Err(e)) => tracing::warn!(pid, error = %e, "cancel could not reach the server"),
                Err(_) => tracing::warn!(pid, "cancel timed out reaching the server"),
            }
        }
        // notify_waiters stores no permit: a cancel sent while idle must not abort a later wait.
        None => slot.waiting.notify_waiters(),
    }
}

/// Asks the server to cancel whatever `key`'s backend is running, within `timeout`. Used when
/// the client whose statement it is has gone: the statement must not go on holding locks.
pub async fn cancel_backend(key: ServerKey, timeout: Duration) {
    let server_pid = key.pid;
    match tokio::time::timeout(timeout, forward(key)).await {
        Ok(Ok(())) => {
            metrics::counter!("lsnpool_server_cancels_total").increment(1);
            tracing::debug!(server_pid, "statement of a vanished client cancelled");
        }
        Ok(Err(e)) => tracing::warn!(server_pid, error = %e, "cancel could not reach the server"),
        Err(_) => tracing::warn!(server_pid, "cancel timed out reaching the server"),
    }
}

/// Sends the CancelRequest the way the connection itself went: over TCP, or over the Unix
/// socket (a server listening only there has no TCP address to take it).
async fn forward(key: ServerKey) -> std::io::Result<()> {
    let mut buf = bytes::BytesMut::with_capacity(16);
    lsnpool_protocol::frontend::cancel_request(&mut buf, key.pid, key.secret);
    let mut s: Stream = match &key.addr {
        ServerAddr::Tcp(addr) => TcpStream::connect(addr).await?.into(),
        unix @ ServerAddr::Unix { .. } => UnixStream::connect(unix.socket_path().unwrap_or_default()).await?.into(),
    };
    s.write_all(&buf).await?;
    s.shutdown().await
}
