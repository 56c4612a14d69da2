//! SCRAM-SHA-256 towards servers: the pooler plays a PostgreSQL client.
//!
//! The exchange is postgres-protocol's `ScramSha256`, the one tokio-postgres
//! logs in with (SASLprep, nonce check, iteration cap, constant-time
//! signature check). This wrapper only keeps the crate's sans-io API and
//! error type, and tracks the state itself: `ScramSha256::message()` panics
//! once an exchange has failed, so it is never called out of order here.

use std::fmt;

use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

use crate::AuthError;

/// One login to a server. Send `client_first()` in SASLInitialResponse
/// (mechanism [`crate::SCRAM_SHA_256`]), answer AuthenticationSASLContinue
/// with `server_first()`, check AuthenticationSASLFinal with `server_final()`.
pub struct ScramClient {
    password: String,
    state: State,
}

enum State {
    Initial,
    ClientFirstSent(ScramSha256),
    ClientFinalSent(ScramSha256),
    Done,
}

impl ScramClient {
    pub fn new(password: &str) -> ScramClient {
        ScramClient {
            password: password.to_owned(),
            state: State::Initial,
        }
    }

    /// client-first-message. Calling it again restarts the exchange with a
    /// fresh nonce.
    pub fn client_first(&mut self) -> Vec<u8> {
        // Without TLS we neither can nor claim to bind: gs2 header "n,,".
        let scram = ScramSha256::new(self.password.as_bytes(), ChannelBinding::unsupported());
        let message = scram.message().to_vec();
        self.state = State::ClientFirstSent(scram);
        message
    }

    /// Takes server-first-message, returns client-final-message with proof.
    pub fn server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let State::ClientFirstSent(mut scram) = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(AuthError::OutOfOrder(
                "server-first-message not expected now",
            ));
        };
        scram
            .update(data)
            .map_err(|e| AuthError::Malformed(format!("server-first-message: {e}")))?;
        let message = scram.message().to_vec();
        self.state = State::ClientFinalSent(scram);
        Ok(message)
    }

    /// Takes server-final-message; Ok only if the server proved it knows
    /// the password.
    pub fn server_final(&mut self, data: &[u8]) -> Result<(), AuthError> {
        let State::ClientFinalSent(mut scram) = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(AuthError::OutOfOrder(
                "server-final-message not expected now",
            ));
        };
        scram.finish(data).map_err(|e| {
            // postgres-protocol reports every failure as an io::Error; name
            // the two a caller can act on from the message's first attribute.
            if let Some(text) = data.strip_prefix(b"e=") {
                let text = text.split(|&b| b == b',').next().unwrap_or_default();
                AuthError::ServerRejected(String::from_utf8_lossy(text).into_owned())
            } else if data.starts_with(b"v=") {
                AuthError::InvalidServerSignature
            } else {
                AuthError::Malformed(format!("server-final-message: {e}"))
            }
        })
    }
}

impl fmt::Debug for ScramClient {
    // Holds the password: print only where the exchange stands.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Initial => "Initial",
            State::ClientFirstSent(_) => "ClientFirstSent",
            State::ClientFinalSent(_) => "ClientFinalSent",
            State::Done => "Done",
        };
        f.debug_struct("ScramClient")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
