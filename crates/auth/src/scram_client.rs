//! SCRAM-SHA-256 towards servers: the pooler plays a PostgreSQL client.

use std::fmt;

use subtle::ConstantTimeEq;

use crate::scram::{self, Attrs, Key, MAX_ITERATIONS};
use crate::AuthError;

/// Without TLS we neither can nor claim to bind: "n,,", whose base64 is "biws".
const GS2_HEADER: &str = "n,,";

/// One login to a server. Send `client_first()` in SASLInitialResponse
/// (mechanism [`crate::SCRAM_SHA_256`]), answer AuthenticationSASLContinue
/// with `server_first()`, check AuthenticationSASLFinal with `server_final()`.
pub struct ScramClient {
    password: Vec<u8>,
    nonce: String,
    /// Empty like libpq's: PostgreSQL takes the user from the startup packet.
    user: String,
    state: State,
}

enum State {
    Initial,
    ClientFirstSent { client_first_bare: String },
    ClientFinalSent { server_signature: Key },
    Done,
}

impl ScramClient {
    pub fn new(password: &str) -> ScramClient {
        ScramClient {
            password: password.as_bytes().to_vec(),
            nonce: scram::random_nonce(),
            user: String::new(),
            state: State::Initial,
        }
    }

    /// Pins nonce and user name so tests can replay RFC 7677.
    #[cfg(test)]
    pub(crate) fn with_nonce(password: &str, user: &str, nonce: &str) -> ScramClient {
        ScramClient {
            nonce: nonce.to_owned(),
            user: user.to_owned(),
            ..ScramClient::new(password)
        }
    }

    /// client-first-message. Calling it again restarts the exchange.
    pub fn client_first(&mut self) -> Vec<u8> {
        let client_first_bare = format!("n={},r={}", self.user, self.nonce);
        let message = format!("{GS2_HEADER}{client_first_bare}");
        self.state = State::ClientFirstSent { client_first_bare };
        message.into_bytes()
    }

    /// Takes server-first-message, returns client-final-message with proof.
    pub fn server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let State::ClientFirstSent { client_first_bare } =
            std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(AuthError::OutOfOrder(
                "server-first-message not expected now",
            ));
        };

        let mut attrs = Attrs::new(data, "server-first-message");
        if attrs.peek_name() == Some(b'm') {
            return Err(malformed(
                "server requires an unsupported SCRAM extension (m=)",
            ));
        }
        let nonce = attrs.expect(b'r', "nonce")?;
        // The server must add its own randomness, or replaying an old
        // exchange would work; and it must keep ours, or this is not our
        // exchange.
        if nonce.len() <= self.nonce.len()
            || !nonce.starts_with(self.nonce.as_bytes())
            || !scram::is_valid_nonce(nonce)
        {
            return Err(malformed("server nonce does not extend the client nonce"));
        }
        let salt = scram::b64_decode(attrs.expect(b's', "salt")?, "salt")?;
        if salt.is_empty() {
            return Err(malformed("salt is empty"));
        }
        let iterations = attrs.expect(b'i', "iteration count")?;
        let iterations = std::str::from_utf8(iterations)
            .ok()
            .and_then(|i| i.parse::<u32>().ok())
            .filter(|i| (1..=MAX_ITERATIONS).contains(i))
            .ok_or_else(|| {
                AuthError::Malformed(format!(
                    "iteration count must be an integer from 1 to {MAX_ITERATIONS}"
                ))
            })?;
        while !attrs.is_empty() {
            attrs.skip_extension()?;
        }

        // Validated above as printable ASCII, so this is lossless.
        let nonce = String::from_utf8_lossy(nonce);
        let without_proof = format!("c={},r={nonce}", scram::b64(GS2_HEADER.as_bytes()));
        let auth_message =
            scram::auth_message(client_first_bare.as_bytes(), data, without_proof.as_bytes());

        let salted = scram::salted_password(&self.password, &salt, iterations);
        let (client_key, server_key) = scram::client_and_server_keys(&salted);
        let stored_key = scram::sha256(&client_key);
        let client_signature = scram::hmac(&stored_key, &[&auth_message]);
        let proof = scram::xor(&client_key, &client_signature);

        self.state = State::ClientFinalSent {
            server_signature: scram::hmac(&server_key, &[&auth_message]),
        };
        Ok(format!("{without_proof},p={}", scram::b64(&proof)).into_bytes())
    }

    /// Takes server-final-message; Ok only if the server proved it knows
    /// the password.
    pub fn server_final(&mut self, data: &[u8]) -> Result<(), AuthError> {
        let State::ClientFinalSent { server_signature } =
            std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(AuthError::OutOfOrder(
                "server-final-message not expected now",
            ));
        };

        let mut attrs = Attrs::new(data, "server-final-message");
        match attrs.peek_name() {
            Some(b'e') => {
                let text = attrs.expect(b'e', "error")?;
                Err(AuthError::ServerRejected(
                    String::from_utf8_lossy(text).into_owned(),
                ))
            }
            Some(b'v') => {
                let signature = scram::b64_decode(attrs.expect(b'v', "verifier")?, "verifier")?;
                // Length is not secret; a wrong length simply fails.
                if bool::from(signature.as_slice().ct_eq(&server_signature[..])) {
                    Ok(())
                } else {
                    Err(AuthError::InvalidServerSignature)
                }
            }
            _ => Err(malformed("server-final-message is neither v= nor e=")),
        }
    }
}

impl fmt::Debug for ScramClient {
    // Holds the password: print only where the exchange stands.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Initial => "Initial",
            State::ClientFirstSent { .. } => "ClientFirstSent",
            State::ClientFinalSent { .. } => "ClientFinalSent",
            State::Done => "Done",
        };
        f.debug_struct("ScramClient")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

fn malformed(what: &str) -> AuthError {
    AuthError::Malformed(what.to_owned())
}
