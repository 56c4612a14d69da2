//! Where a server listens: `host:port` over TCP, or a directory holding its Unix-domain socket.
//!
//! The configuration writes both as `host:port`; a host that begins with `/` is a socket
//! directory, as libpq and PgBouncer read it (`/var/run/postgresql:5432` is the socket
//! `/var/run/postgresql/.s.PGSQL.5432`). A local server is cheaper to reach that way: no TCP/IP
//! stack on either side of each message.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The server end of an open connection: where its CancelRequests go too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerAddr {
    Tcp(SocketAddr),
    Unix { dir: Arc<str>, port: u16 },
}

impl ServerAddr {
    /// The Unix socket a configured `host:port` names, if its host is a directory.
    pub fn unix_of(addr: &str) -> Option<ServerAddr> {
        let (dir, port) = addr.rsplit_once(':')?;
        if !dir.starts_with('/') {
            return None;
        }
        let port = port.parse().ok()?;
        Some(ServerAddr::Unix { dir: Arc::from(dir), port })
    }

    /// PostgreSQL's name for the socket: `<dir>/.s.PGSQL.<port>`.
    pub fn socket_path(&self) -> Option<PathBuf> {
        match self {
            ServerAddr::Tcp(_) => None,
            ServerAddr::Unix { dir, port } => Some(PathBuf::from(format!("{dir}/.s.PGSQL.{port}"))),
        }
    }

    /// SHOW SERVERS' `addr` column: the IP, or `unix` as PgBouncer shows it.
    pub fn host_text(&self) -> String {
        match self {
            ServerAddr::Tcp(a) => a.ip().to_string(),
            ServerAddr::Unix { .. } => "unix".to_string(),
        }
    }

    pub fn port(&self) -> u16 {
        match self {
            ServerAddr::Tcp(a) => a.port(),
            ServerAddr::Unix { port, .. } => *port,
        }
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerAddr::Tcp(a) => a.fmt(f),
            ServerAddr::Unix { dir, port } => write!(f, "{dir}/.s.PGSQL.{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_that_is_a_directory_names_a_unix_socket() {
        let a = ServerAddr::unix_of("/var/run/postgresql:5433").expect("unix");
        assert_eq!(a.socket_path(), Some(PathBuf::from("/var/run/postgresql/.s.PGSQL.5433")));
        assert_eq!((a.host_text().as_str(), a.port()), ("unix", 5433));
        assert_eq!(a.to_string(), "/var/run/postgresql/.s.PGSQL.5433");
        assert_eq!(ServerAddr::unix_of("127.0.0.1:5432"), None);
        assert_eq!(ServerAddr::unix_of("db.example:5432"), None);
        assert_eq!(ServerAddr::unix_of("[::1]:5432"), None);
        assert_eq!(ServerAddr::unix_of("/tmp:x"), None);
    }
}
