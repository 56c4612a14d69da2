//! SCRAM-SHA-256 primitives for the server side and the verifiers.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::AuthError;

/// The SASL mechanism name to advertise in AuthenticationSASL and to pick
/// from the server's list. `-PLUS` is left out until we terminate TLS.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// What to advertise to clients, in preference order.
pub const SASL_MECHANISMS: &[&str] = &[SCRAM_SHA_256];

/// PostgreSQL's `scram_iterations` default.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Length of the random part of a nonce, as PostgreSQL's SCRAM_RAW_NONCE_LEN.
const RAW_NONCE_LEN: usize = 18;

pub(crate) const KEY_LEN: usize = 32;
pub(crate) type Key = [u8; KEY_LEN];

/// `Hi()` of RFC 5802, i.e. PBKDF2-HMAC-SHA-256.
///
/// The password is used as raw bytes, without SASLprep: PostgreSQL itself
/// falls back to the raw bytes when a password cannot be normalized, and
/// ASCII passwords are unchanged by SASLprep. Only non-ASCII passwords that
/// SASLprep would rewrite (e.g. NFKC-decomposable characters) would differ
/// from what PostgreSQL or libpq compute.
pub(crate) fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> Key {
    let mut out = [0u8; KEY_LEN];
    // Zero rounds is not PBKDF2; callers validate peer-supplied counts, this
    // only guards configuration values.
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations.max(1), &mut out);
    out
}

pub(crate) fn hmac(key: &[u8], parts: &[&[u8]]) -> Key {
    // HMAC takes keys of any length: this error cannot happen.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC-SHA-256 accepts keys of any length"));
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

pub(crate) fn sha256(data: &[u8]) -> Key {
    Sha256::digest(data).into()
}

pub(crate) fn xor(a: &Key, b: &Key) -> Key {
    let mut out = [0u8; KEY_LEN];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b.iter())) {
        *o = x ^ y;
    }
    out
}

/// ClientKey and ServerKey from a salted password.
pub(crate) fn client_and_server_keys(salted: &Key) -> (Key, Key) {
    (
        hmac(salted, &[b"Client Key"]),
        hmac(salted, &[b"Server Key"]),
    )
}

/// AuthMessage of RFC 5802 section 3.
pub(crate) fn auth_message(
    client_first_bare: &[u8],
    server_first: &[u8],
    client_final_without_proof: &[u8],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(
        client_first_bare.len() + server_first.len() + client_final_without_proof.len() + 2,
    );
    m.extend_from_slice(client_first_bare);
    m.push(b',');
    m.extend_from_slice(server_first);
    m.push(b',');
    m.extend_from_slice(client_final_without_proof);
    m
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // ThreadRng is a CSPRNG seeded from the OS.
    rand::rng().fill_bytes(&mut buf);
    buf
}

pub(crate) fn random_nonce() -> String {
    b64(&random_bytes::<RAW_NONCE_LEN>())
}

pub(crate) fn b64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

pub(crate) fn b64_decode(data: &[u8], what: &str) -> Result<Vec<u8>, AuthError> {
    STANDARD
        .decode(data)
        .map_err(|_| AuthError::Malformed(format!("{what} is not valid base64")))
}

/// Decodes a base64 value that must be exactly one SHA-256 output.
pub(crate) fn b64_key(data: &[u8], what: &str) -> Result<Key, AuthError> {
    let raw = b64_decode(data, what)?;
    Key::try_from(raw.as_slice()).map_err(|_| {
        AuthError::Malformed(format!("{what} must be {KEY_LEN} bytes, got {}", raw.len()))
    })
}

/// RFC 5802 `printable`: the characters allowed in a nonce.
pub(crate) fn is_valid_nonce(nonce: &[u8]) -> bool {
    !nonce.is_empty()
        && nonce
            .iter()
            .all(|&c| (0x21..=0x7e).contains(&c) && c != b',')
}

type Fields<'a> = std::iter::Peekable<std::slice::Split<'a, u8, fn(&u8) -> bool>>;

/// Comma-separated `x=value` attributes of a SCRAM message.
pub(crate) struct Attrs<'a> {
    fields: Fields<'a>,
    message: &'static str,
}

fn is_comma(b: &u8) -> bool {
    *b == b','
}

impl<'a> Attrs<'a> {
    pub(crate) fn new(data: &'a [u8], message: &'static str) -> Self {
        let split: std::slice::Split<'a, u8, fn(&u8) -> bool> = data.split(is_comma);
        Attrs {
            fields: split.peekable(),
            message,
        }
    }

    /// The next raw field, which need not be an attribute (gs2 header parts).
    pub(crate) fn next_field(&mut self) -> Option<&'a [u8]> {
        self.fields.next()
    }

    /// The name of the next attribute, without consuming it.
    pub(crate) fn peek_name(&mut self) -> Option<u8> {
        self.fields.peek().and_then(|f| match f {
            [name, b'=', ..] => Some(*name),
            _ => None,
        })
    }

    pub(crate) fn is_empty(&mut self) -> bool {
        self.fields.peek().is_none()
    }

    /// Consumes attribute `name` and returns its value.
    pub(crate) fn expect(&mut self, name: u8, what: &str) -> Result<&'a [u8], AuthError> {
        match self.fields.next() {
            Some([n, b'=', value @ ..]) if *n == name => Ok(value),
            Some(_) => Err(AuthError::Malformed(format!(
                "expected {what} (\"{}=\") in {}",
                name as char, self.message
            ))),
            None => Err(AuthError::Malformed(format!(
                "{} ends before {what} (\"{}=\")",
                self.message, name as char
            ))),
        }
    }

    /// Consumes any attribute (an extension we do not understand).
    pub(crate) fn skip_extension(&mut self) -> Result<(), AuthError> {
        match self.fields.next() {
            Some([n, b'=', ..]) if n.is_ascii_alphabetic() => Ok(()),
            _ => Err(AuthError::Malformed(format!(
                "invalid attribute in {}",
                self.message
            ))),
        }
    }
}
