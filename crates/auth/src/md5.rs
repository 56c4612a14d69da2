//! PostgreSQL's md5 password method (AuthenticationMD5Password).
//!
//! Kept for clients and servers that still use it; it is weak (the stored
//! hash is password-equivalent), which is why SCRAM is the default.

use ::md5::{Digest, Md5};
use subtle::ConstantTimeEq;

use crate::Secret;

fn md5_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// hex(md5(password + user)): what PostgreSQL stores after "md5".
fn inner_hash(secret: &Secret, user: &str) -> Option<String> {
    match secret {
        Secret::Plain(password) => Some(md5_hex(&[password.as_bytes(), user.as_bytes()])),
        Secret::Md5(stored) => stored.strip_prefix("md5").map(str::to_owned),
        Secret::Scram(_) => None,
    }
}

fn response(inner_hex: &str, salt: [u8; 4]) -> String {
    format!("md5{}", md5_hex(&[inner_hex.as_bytes(), &salt]))
}

/// A fresh salt for AuthenticationMD5Password.
pub fn md5_salt() -> [u8; 4] {
    crate::scram::random_bytes::<4>()
}

/// Checks a client's PasswordMessage payload against `secret`. A trailing
/// NUL (the C-string terminator) is tolerated. Always false for a SCRAM
/// verifier, which cannot produce md5 hashes: check
/// [`Secret::supports_md5`] first to tell the client why.
pub fn verify_md5_response(
    secret: &Secret,
    user: &str,
    salt: [u8; 4],
    response_bytes: &[u8],
) -> bool {
    let Some(inner) = inner_hash(secret, user) else {
        return false;
    };
    let got = response_bytes.strip_suffix(b"\0").unwrap_or(response_bytes);
    response(&inner, salt).as_bytes().ct_eq(got).into()
}

/// The PasswordMessage payload answering a server's md5 request:
/// postgres-protocol's, the one tokio-postgres sends.
pub fn md5_password_message(user: &str, password: &str, salt: [u8; 4]) -> String {
    postgres_protocol::authentication::md5_hash(user.as_bytes(), password.as_bytes(), salt)
}
