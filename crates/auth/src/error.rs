//! The one error type of the crate.

/// Why an authentication step failed.
///
/// Messages never contain password material: at most the name of the part
/// that was wrong, so they are safe to log and to show to the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A SASL payload from the peer did not follow RFC 5802 (or what
    /// PostgreSQL accepts of it); the text says which part.
    #[error("malformed SCRAM message: {0}")]
    Malformed(String),

    /// The client's proof did not match the stored verifier (SQLSTATE 28P01).
    #[error("password authentication failed")]
    WrongPassword,

    /// The client asked for channel binding (`p=`), which needs TLS we do
    /// not offer yet.
    #[error("unsupported channel binding: {0}")]
    UnsupportedChannelBinding(String),

    /// The server ended the exchange with `e=<text>`.
    #[error("server rejected SCRAM authentication: {0}")]
    ServerRejected(String),

    /// The server's signature (`v=`) is wrong: it does not know the
    /// password, so it may be an impostor.
    #[error("server SCRAM signature is invalid: the server could not prove it knows the password")]
    InvalidServerSignature,

    /// A step was called out of order, or after the exchange ended; this is
    /// a bug in the caller or a peer sending extra messages.
    #[error("SCRAM exchange out of order: {0}")]
    OutOfOrder(&'static str),

    /// A configured secret string could not be parsed.
    #[error("invalid password secret: {0}")]
    InvalidSecret(String),
}
