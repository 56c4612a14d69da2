//! SCRAM-SHA-256 towards clients: the pooler plays the PostgreSQL server.

use subtle::ConstantTimeEq;

use crate::scram::{self, Attrs};
use crate::{AuthError, ScramVerifier};

/// One client's SCRAM exchange. Feed it the SASLInitialResponse payload,
/// then the SASLResponse payload; send back what each step returns in
/// AuthenticationSASLContinue and AuthenticationSASLFinal.
#[derive(Debug)]
pub struct ScramServer {
    verifier: ScramVerifier,
    /// Only tests pin it, to replay RFC vectors.
    server_nonce: Option<String>,
    state: State,
}

#[derive(Debug)]
enum State {
    Initial,
    ServerFirstSent {
        /// The gs2 header the client must echo in `c=`.
        gs2_header: Vec<u8>,
        client_first_bare: Vec<u8>,
        server_first: Vec<u8>,
        nonce: Vec<u8>,
    },
    Done,
}

impl ScramServer {
    pub fn new(verifier: &ScramVerifier) -> ScramServer {
        ScramServer {
            verifier: verifier.clone(),
            server_nonce: None,
            state: State::Initial,
        }
    }

    #[cfg(test)]
    pub(crate) fn with_server_nonce(verifier: &ScramVerifier, nonce: &str) -> ScramServer {
        ScramServer {
            server_nonce: Some(nonce.to_owned()),
            ..ScramServer::new(verifier)
        }
    }

    /// Takes client-first-message, returns server-first-message.
    pub fn client_first(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        if !matches!(self.state, State::Initial) {
            return Err(AuthError::OutOfOrder(
                "client-first-message already received",
            ));
        }
        // Whatever happens next, this exchange cannot restart.
        self.state = State::Done;

        let mut attrs = Attrs::new(data, "client-first-message");
        let flag = attrs.next_field();
        match flag {
            // "y": the client could bind but thinks we can't, which is true
            // while we have no TLS, so it is no downgrade.
            Some(b"n") | Some(b"y") => {}
            Some([b'p', b'=', name @ ..]) => {
                return Err(AuthError::UnsupportedChannelBinding(format!(
                    "client requested channel binding \"{}\", but SCRAM-SHA-256-PLUS is not offered",
                    String::from_utf8_lossy(name)
                )))
            }
            _ => return Err(malformed("invalid gs2 channel-binding flag")),
        }
        match attrs.next_field() {
            Some(b"") => {}
            // PostgreSQL refuses authzid too: the startup user is the identity.
            Some([b'a', b'=', ..]) => {
                return Err(malformed("authorization identity (a=) is not supported"))
            }
            _ => return Err(malformed("invalid gs2 header")),
        }
        let gs2_header = match flag {
            Some(&[flag]) => vec![flag, b',', b','],
            _ => return Err(malformed("invalid gs2 header")),
        };
        let client_first_bare = data
            .get(gs2_header.len()..)
            .ok_or_else(|| malformed("client-first-message ends after the gs2 header"))?;

        if attrs.peek_name() == Some(b'm') {
            return Err(malformed(
                "client requires an unsupported SCRAM extension (m=)",
            ));
        }
        // PostgreSQL ignores this user name: the startup packet's counts.
        attrs.expect(b'n', "user name")?;
        let client_nonce = attrs.expect(b'r', "nonce")?;
        if !scram::is_valid_nonce(client_nonce) {
            return Err(malformed(
                "nonce must be non-empty printable ASCII without ','",
            ));
        }
        while !attrs.is_empty() {
            attrs.skip_extension()?;
        }

        let server_nonce = self.server_nonce.take().unwrap_or_else(scram::random_nonce);
        let mut nonce = client_nonce.to_vec();
        nonce.extend_from_slice(server_nonce.as_bytes());

        let mut server_first = b"r=".to_vec();
        server_first.extend_from_slice(&nonce);
        server_first.extend_from_slice(
            format!(
                ",s={},i={}",
                scram::b64(&self.verifier.salt),
                self.verifier.iterations
            )
            .as_bytes(),
        );

        self.state = State::ServerFirstSent {
            gs2_header,
            client_first_bare: client_first_bare.to_vec(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(server_first)
    }

    /// Takes client-final-message, returns server-final-message (`v=...`)
    /// when the proof is right.
    pub fn client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let State::ServerFirstSent {
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(AuthError::OutOfOrder(
                "client-final-message not expected now",
            ));
        };

        // The proof is the last attribute; the AuthMessage covers all before it.
        let proof_start = data
            .windows(3)
            .rposition(|w| w == b",p=")
            .ok_or_else(|| malformed("client-final-message has no proof (p=)"))?;
        let without_proof = &data[..proof_start];
        let proof = &data[proof_start + 3..];

        let mut attrs = Attrs::new(without_proof, "client-final-message");
        let binding = attrs.expect(b'c', "channel binding")?;
        if scram::b64_decode(binding, "channel binding")? != gs2_header {
            return Err(malformed("channel binding does not match the gs2 header"));
        }
        if attrs.expect(b'r', "nonce")? != nonce.as_slice() {
            return Err(malformed("nonce does not match server-first-message"));
        }
        while !attrs.is_empty() {
            attrs.skip_extension()?;
        }
        let proof = scram::b64_key(proof, "client proof")?;

        let auth_message = scram::auth_message(&client_first_bare, &server_first, without_proof);
        let client_signature = scram::hmac(&self.verifier.stored_key, &[&auth_message]);
        let client_key = scram::xor(&proof, &client_signature);
        let matches: bool = scram::sha256(&client_key)
            .ct_eq(&self.verifier.stored_key)
            .into();
        if !matches {
            return Err(AuthError::WrongPassword);
        }

        let server_signature = scram::hmac(&self.verifier.server_key, &[&auth_message]);
        Ok(format!("v={}", scram::b64(&server_signature)).into_bytes())
    }
}

fn malformed(what: &str) -> AuthError {
    AuthError::Malformed(what.to_owned())
}
