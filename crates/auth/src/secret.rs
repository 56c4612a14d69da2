//! Passwords as they appear in configuration: plain, SCRAM verifier or md5.

use std::fmt;
use std::str::FromStr;

use crate::scram::{self, Key, DEFAULT_ITERATIONS};
use crate::AuthError;

const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";
const MD5_PREFIX: &str = "md5";

/// A user's password as configured, in one of the forms PostgreSQL stores
/// in `pg_authid.rolpassword`.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// The password itself: works for SCRAM and md5 towards clients, and is
    /// the only form that can log into a server with any method.
    Plain(String),
    /// `md5` + hex(md5(password + username)), lowercase: md5 only.
    Md5(String),
    /// A SCRAM-SHA-256 verifier: SCRAM only.
    Scram(ScramVerifier),
}

impl Secret {
    /// Recognises a SCRAM verifier or an md5 hash by its prefix, as
    /// PostgreSQL does; anything else is a plain password. A string that
    /// claims to be a SCRAM verifier but is malformed is an error rather
    /// than a surprising plain password.
    pub fn parse(s: &str) -> Result<Secret, AuthError> {
        if s.starts_with(SCRAM_PREFIX) {
            return ScramVerifier::parse(s).map(Secret::Scram);
        }
        if let Some(hex) = s.strip_prefix(MD5_PREFIX) {
            // PostgreSQL writes lowercase; uppercase is accepted because a
            // plain password of this exact shape is implausible.
            if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(Secret::Md5(s.to_ascii_lowercase()));
            }
        }
        Ok(Secret::Plain(s.to_owned()))
    }

    /// Whether clients can log in with md5 (a SCRAM verifier can't).
    pub fn supports_md5(&self) -> bool {
        !matches!(self, Secret::Scram(_))
    }

    /// Whether clients can log in with SCRAM (an md5 hash can't).
    pub fn supports_scram(&self) -> bool {
        !matches!(self, Secret::Md5(_))
    }

    /// The verifier to authenticate SCRAM clients with: a stored one as is,
    /// a plain password derived with a random salt (slow: call it once per
    /// user at config load), none for an md5 hash.
    pub fn scram_verifier(&self) -> Option<ScramVerifier> {
        match self {
            Secret::Plain(password) => {
                Some(ScramVerifier::from_password(password, DEFAULT_ITERATIONS))
            }
            Secret::Scram(verifier) => Some(verifier.clone()),
            Secret::Md5(_) => None,
        }
    }

    /// The plain password, needed to log into a server.
    pub fn plain(&self) -> Option<&str> {
        match self {
            Secret::Plain(password) => Some(password),
            _ => None,
        }
    }
}

impl FromStr for Secret {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Secret::parse(s)
    }
}

impl fmt::Debug for Secret {
    // Secrets end up in config dumps and panics: never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Plain(_) => f.write_str("Secret::Plain(<redacted>)"),
            Secret::Md5(_) => f.write_str("Secret::Md5(<redacted>)"),
            Secret::Scram(v) => f.debug_tuple("Secret::Scram").field(v).finish(),
        }
    }
}

/// A PostgreSQL SCRAM-SHA-256 verifier:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    pub(crate) iterations: u32,
    pub(crate) salt: Vec<u8>,
    pub(crate) stored_key: Key,
    pub(crate) server_key: Key,
}

impl ScramVerifier {
    /// Derives a verifier with a random 16-byte salt, like PostgreSQL's
    /// `password_encryption = scram-sha-256`. Runs PBKDF2: slow on purpose.
    /// An iteration count of 0 is treated as 1.
    pub fn from_password(password: &str, iterations: u32) -> ScramVerifier {
        Self::from_password_and_salt(password, &scram::random_bytes::<16>(), iterations)
    }

    pub(crate) fn from_password_and_salt(
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> ScramVerifier {
        let iterations = iterations.max(1);
        let salted = scram::salted_password(password.as_bytes(), salt, iterations);
        let (client_key, server_key) = scram::client_and_server_keys(&salted);
        ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: scram::sha256(&client_key),
            server_key,
        }
    }

    /// Parses PostgreSQL's text form; errors name the part that is wrong.
    pub fn parse(s: &str) -> Result<ScramVerifier, AuthError> {
        let invalid =
            |what: &str| AuthError::InvalidSecret(format!("SCRAM-SHA-256 verifier: {what}"));
        let rest = s
            .strip_prefix(SCRAM_PREFIX)
            .ok_or_else(|| invalid("must start with \"SCRAM-SHA-256$\""))?;
        let expected =
            "expected SCRAM-SHA-256$<iterations>:<salt base64>$<StoredKey base64>:<ServerKey base64>";
        let (params, keys) = rest.split_once('$').ok_or_else(|| invalid(expected))?;
        let (iterations, salt) = params.split_once(':').ok_or_else(|| invalid(expected))?;
        let (stored_key, server_key) = keys.split_once(':').ok_or_else(|| invalid(expected))?;

        let iterations: u32 = iterations
            .parse()
            .ok()
            .filter(|&i| i >= 1)
            .ok_or_else(|| invalid("iteration count must be a positive integer"))?;
        let salt = scram::b64_decode(salt.as_bytes(), "salt")
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("salt must be non-empty base64"))?;
        let key = |text: &str, what: &str| {
            scram::b64_key(text.as_bytes(), what).map_err(|_| {
                invalid(&format!(
                    "{what} must be base64 of {} bytes",
                    scram::KEY_LEN
                ))
            })
        };
        Ok(ScramVerifier {
            iterations,
            salt,
            stored_key: key(stored_key, "StoredKey")?,
            server_key: key(server_key, "ServerKey")?,
        })
    }

    /// A verifier no password matches, for a user that does not exist: the exchange looks
    /// like a real one (PostgreSQL's "mock" authentication), and the salt, derived from the
    /// user name and a per-process `secret`, is the same on every probe of that name, as a
    /// real user's is.
    pub fn decoy(user: &str, secret: &[u8]) -> ScramVerifier {
        let salt = scram::hmac(secret, &[b"salt:", user.as_bytes()]);
        ScramVerifier {
            iterations: scram::DEFAULT_ITERATIONS,
            salt: salt[..16].to_vec(),
            stored_key: scram::hmac(secret, &[b"stored:", user.as_bytes()]),
            server_key: scram::hmac(secret, &[b"server:", user.as_bytes()]),
        }
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    pub fn salt(&self) -> &[u8] {
        &self.salt
    }
}

impl FromStr for ScramVerifier {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ScramVerifier::parse(s)
    }
}

/// PostgreSQL's text form, suitable for `ALTER ROLE ... PASSWORD` or config.
impl fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCRAM_PREFIX}{}:{}${}:{}",
            self.iterations,
            scram::b64(&self.salt),
            scram::b64(&self.stored_key),
            scram::b64(&self.server_key)
        )
    }
}

impl fmt::Debug for ScramVerifier {
    // The keys allow impersonating the server and offline guessing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .field("salt", &scram::b64(&self.salt))
            .finish_non_exhaustive()
    }
}
