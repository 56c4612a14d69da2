//! Sans-io authentication for lsnpool: SCRAM-SHA-256 and md5, both as the
//! server clients log into and as the client logging into PostgreSQL.
//! The caller moves the 'R'/'p' messages; this crate only sees SASL
//! payloads, salts and hashes.
//!
//! The client side (the pooler logging into servers, always with a plain
//! password) is postgres-protocol's, the code tokio-postgres logs in with:
//! [`ScramClient`] wraps its `ScramSha256`, [`md5_password_message`] is its
//! `md5_hash`. postgres-protocol has no server side, so that part is ours.
//!
//! Why not pgwire's SCRAM server (checked at 0.42.1, `api::auth::sasl::scram`):
//! its `ScramServerAuth` steps are usable without a StartupHandler, but
//! - the proof check compares keys with `==`, not in constant time;
//! - nonces come from an internal `random_nonce()`, so the RFC 7677 vector
//!   cannot be replayed against it;
//! - the pure helpers it does export (`gen_salted_password`,
//!   `ScramSecret::verifier_from_salted_password`) are a few lines each and
//!   not worth tying this crate to pgwire's TLS/x509 dependency tree.
//!
//! So the server-side math is done here with RustCrypto crates.

mod error;
mod md5;
mod scram;
mod scram_client;
mod scram_server;
mod secret;

#[cfg(test)]
mod tests;

pub use self::md5::{md5_password_message, md5_salt, verify_md5_response};
pub use error::AuthError;
pub use scram::{DEFAULT_ITERATIONS, SASL_MECHANISMS, SCRAM_SHA_256};
pub use scram_client::ScramClient;
pub use scram_server::ScramServer;
pub use secret::{ScramVerifier, Secret};
