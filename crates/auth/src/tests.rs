use ::md5::{Digest, Md5};

use crate::*;

// RFC 7677 section 3.
const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const RFC_SALT_B64: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

fn rfc_verifier() -> ScramVerifier {
    let salt = scram::b64_decode(RFC_SALT_B64.as_bytes(), "salt").unwrap();
    ScramVerifier::from_password_and_salt("pencil", &salt, 4096)
}

fn s(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap()
}

/// Drives a server through a client-side exchange with `password`.
fn login(verifier: &ScramVerifier, password: &str) -> Result<(), AuthError> {
    let mut client = ScramClient::new(password);
    let mut server = ScramServer::new(verifier);
    let server_first = server.client_first(&client.client_first())?;
    let client_final = client.server_first(&server_first)?;
    let server_final = server.client_final(&client_final)?;
    client.server_final(&server_final)
}

#[test]
fn rfc7677_server() {
    let mut server = ScramServer::with_server_nonce(&rfc_verifier(), RFC_SERVER_NONCE);
    assert_eq!(
        s(server.client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap()),
        RFC_SERVER_FIRST
    );
    assert_eq!(
        s(server.client_final(RFC_CLIENT_FINAL.as_bytes()).unwrap()),
        RFC_SERVER_FINAL
    );
}

#[test]
fn round_trip() {
    let verifier = ScramVerifier::from_password("s3cret pass", DEFAULT_ITERATIONS);
    login(&verifier, "s3cret pass").unwrap();
}

#[test]
fn wrong_password() {
    let verifier = ScramVerifier::from_password("right", DEFAULT_ITERATIONS);
    assert_eq!(login(&verifier, "wrong"), Err(AuthError::WrongPassword));
}

#[test]
fn server_refuses_second_attempt_after_failure() {
    let verifier = ScramVerifier::from_password("right", 16);
    let mut server = ScramServer::new(&verifier);
    let mut client = ScramClient::new("wrong");
    let server_first = server.client_first(&client.client_first()).unwrap();
    let client_final = client.server_first(&server_first).unwrap();
    assert_eq!(
        server.client_final(&client_final),
        Err(AuthError::WrongPassword)
    );
    assert!(matches!(
        server.client_final(&client_final),
        Err(AuthError::OutOfOrder(_))
    ));
}

#[test]
fn tampered_nonce_is_rejected() {
    let mut server = ScramServer::with_server_nonce(&rfc_verifier(), RFC_SERVER_NONCE);
    server.client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
    let tampered = RFC_CLIENT_FINAL.replace("k0,p=", "k1,p=");
    assert!(matches!(
        server.client_final(tampered.as_bytes()),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn tampered_proof_is_wrong_password() {
    let mut server = ScramServer::with_server_nonce(&rfc_verifier(), RFC_SERVER_NONCE);
    server.client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
    let tampered = RFC_CLIENT_FINAL.replace("p=dHzb", "p=dHza");
    assert_eq!(
        server.client_final(tampered.as_bytes()),
        Err(AuthError::WrongPassword)
    );
}

/// The nonce in a client-first-message "n,,n=,r=<nonce>".
fn client_nonce(client_first: &[u8]) -> String {
    let text = s(client_first.to_vec());
    let (_, nonce) = text.split_once(",r=").unwrap();
    nonce.to_owned()
}

// The client is postgres-protocol's ScramSha256, whose exchange is replayed
// against a psql recording in its own tests; these check what the pooler
// relies on through the wrapper: the checks happen and map to AuthError.

#[test]
fn client_first_message_does_not_bind() {
    let mut client = ScramClient::new("pencil");
    let first = s(client.client_first());
    assert!(first.starts_with("n,,n=,r="), "{first}");
    assert!(scram::is_valid_nonce(
        client_nonce(first.as_bytes()).as_bytes()
    ));
    // Calling it again restarts with a fresh nonce.
    assert_ne!(
        client_nonce(&client.client_first()),
        client_nonce(first.as_bytes())
    );
}

#[test]
fn client_rejects_server_nonce_not_extending_ours() {
    let mut client = ScramClient::new("pencil");
    let nonce = client_nonce(&client.client_first());
    let other = format!("r=x{nonce}srv,s={RFC_SALT_B64},i=4096");
    assert!(matches!(
        client.server_first(other.as_bytes()),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn client_rejects_bad_iterations() {
    // postgres-protocol caps the count at 100 000 (PBKDF2 cost a hostile server could impose).
    for i in ["100001", "10000001", "-1", "x", ""] {
        let mut client = ScramClient::new("pencil");
        let nonce = client_nonce(&client.client_first());
        let msg = format!("r={nonce}abc,s={RFC_SALT_B64},i={i}");
        assert!(
            matches!(
                client.server_first(msg.as_bytes()),
                Err(AuthError::Malformed(_))
            ),
            "i={i}"
        );
    }
}

/// A client and our server up to the server-final-message, which is returned.
fn exchange_until_final(client: &mut ScramClient) -> String {
    let verifier = ScramVerifier::from_password("pencil", 16);
    let mut server = ScramServer::new(&verifier);
    let server_first = server.client_first(&client.client_first()).unwrap();
    let client_final = client.server_first(&server_first).unwrap();
    s(server.client_final(&client_final).unwrap())
}

#[test]
fn client_rejects_bad_server_signature_and_reports_error() {
    let mut client = ScramClient::new("pencil");
    let good = exchange_until_final(&mut client);
    let (_, signature) = good.split_once("v=").unwrap();
    let other = if signature.starts_with('A') { 'B' } else { 'A' };
    let bad = format!("v={other}{}", &signature[1..]);
    assert_eq!(
        client.server_final(bad.as_bytes()),
        Err(AuthError::InvalidServerSignature)
    );

    let mut client = ScramClient::new("pencil");
    exchange_until_final(&mut client);
    assert_eq!(
        client.server_final(b"e=invalid-proof"),
        Err(AuthError::ServerRejected("invalid-proof".into()))
    );

    let mut client = ScramClient::new("pencil");
    exchange_until_final(&mut client);
    assert!(matches!(
        client.server_final(b"x=1"),
        Err(AuthError::Malformed(_))
    ));

    let mut client = ScramClient::new("pencil");
    let good = exchange_until_final(&mut client);
    client.server_final(good.as_bytes()).unwrap();
}

#[test]
fn server_gs2_headers() {
    let verifier = rfc_verifier();
    // "y": client supports binding but we don't offer it; c= must be "y,,".
    let mut server = ScramServer::with_server_nonce(&verifier, "srv");
    server.client_first(b"y,,n=,r=abc").unwrap();
    let err =
        server.client_final(b"c=biws,r=abcsrv,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
    assert!(matches!(err, Err(AuthError::Malformed(_))));
    let mut server = ScramServer::with_server_nonce(&verifier, "srv");
    server.client_first(b"y,,n=,r=abc").unwrap();
    let err =
        server.client_final(b"c=eSws,r=abcsrv,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
    assert_eq!(err, Err(AuthError::WrongPassword));

    let mut server = ScramServer::new(&verifier);
    assert!(matches!(
        server.client_first(b"p=tls-server-end-point,,n=,r=abc"),
        Err(AuthError::UnsupportedChannelBinding(_))
    ));
    for bad in [
        &b""[..],
        b"n",
        b"n,",
        b"n,,",
        b"x,,n=,r=abc",
        b"n,a=bob,n=,r=abc",
        b"n,,m=ext,n=,r=abc",
        b"n,,r=abc",
        b"n,,n=,r=",
        b"n,,n=,r=a b",
        b"n,,n=,r=abc,garbage",
    ] {
        let mut server = ScramServer::new(&verifier);
        assert!(
            matches!(server.client_first(bad), Err(AuthError::Malformed(_))),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // The SCRAM user name is ignored, whatever it is.
    ScramServer::new(&verifier)
        .client_first(b"n,,n=someone,r=abc")
        .unwrap();
}

#[test]
fn server_rejects_malformed_client_final() {
    let verifier = rfc_verifier();
    for bad in [
        &b""[..],
        b"c=biws,r=abcsrv",
        b"c=biws,r=abcsrv,p=",
        b"c=biws,r=abcsrv,p=AAAA",
        b"c=biws,r=abcsrv,p=!!!",
        b"r=abcsrv,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        b"c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        b"c=biws,r=abcsrv,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=,x=1",
    ] {
        let mut server = ScramServer::with_server_nonce(&verifier, "srv");
        server.client_first(b"n,,n=,r=abc").unwrap();
        assert!(
            matches!(server.client_final(bad), Err(AuthError::Malformed(_))),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // Extensions before the proof are tolerated, and covered by the proof.
    let mut server = ScramServer::with_server_nonce(&verifier, "srv");
    server.client_first(b"n,,n=,r=abc").unwrap();
    assert_eq!(
        server.client_final(b"c=biws,r=abcsrv,x=1,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
        Err(AuthError::WrongPassword)
    );
}

#[test]
fn out_of_order_calls() {
    let verifier = rfc_verifier();
    let mut server = ScramServer::new(&verifier);
    assert!(matches!(
        server.client_final(b"c=biws"),
        Err(AuthError::OutOfOrder(_))
    ));
    let client_steps_refused = |client: &mut ScramClient| {
        assert!(matches!(
            client.server_first(b"r=a"),
            Err(AuthError::OutOfOrder(_))
        ));
        assert!(matches!(
            client.server_final(b"v=a"),
            Err(AuthError::OutOfOrder(_))
        ));
    };
    let mut client = ScramClient::new("x");
    client_steps_refused(&mut client);
    // After a failed step the exchange is over: an error, not a panic.
    client.client_first();
    assert!(client.server_first(b"garbage").is_err());
    client_steps_refused(&mut client);
}

#[test]
fn verifier_print_parse_round_trip() {
    let verifier = ScramVerifier::from_password("postgres", DEFAULT_ITERATIONS);
    let text = verifier.to_string();
    assert!(text.starts_with("SCRAM-SHA-256$4096:"), "{text}");
    let parsed: ScramVerifier = text.parse().unwrap();
    assert_eq!(parsed, verifier);
    assert_eq!(parsed.salt().len(), 16);
    assert_eq!(
        Secret::parse(&text).unwrap(),
        Secret::Scram(verifier.clone())
    );
    login(&parsed, "postgres").unwrap();
    // Debug output must not leak the keys.
    let debug = format!("{:?}", Secret::Scram(verifier));
    assert!(!debug.contains(text.rsplit('$').next().unwrap().split(':').next().unwrap()));
}

/// Produced by PostgreSQL 15 for password "postgres"
/// (`SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'`).
const PG_VERIFIER: &str = "SCRAM-SHA-256$4096:GKkfVyMjsjF+csV6W39MXg==$jAiXAy08wqSs4ZtWbu/R6TMWDS95hOHBtflywyhb8ms=:ROxb91WWUnLw+O8Y4LmTZOWrOkFJ7TmLRrXFA7xFcY4=";

#[test]
fn postgres_verifier() {
    let verifier = ScramVerifier::parse(PG_VERIFIER).unwrap();
    assert_eq!(verifier.iterations(), 4096);
    assert_eq!(verifier.to_string(), PG_VERIFIER);
    login(&verifier, "postgres").unwrap();
    assert_eq!(login(&verifier, "Postgres"), Err(AuthError::WrongPassword));
    // Same salt and count give the same keys: our derivation matches PostgreSQL's.
    let ours = ScramVerifier::from_password_and_salt("postgres", verifier.salt(), 4096);
    assert_eq!(ours, verifier);
}

#[test]
fn secret_parse() {
    assert_eq!(
        Secret::parse("hunter2").unwrap(),
        Secret::Plain("hunter2".into())
    );
    assert_eq!(Secret::parse("").unwrap(), Secret::Plain("".into()));
    assert_eq!(
        Secret::parse("md5abc").unwrap(),
        Secret::Plain("md5abc".into())
    );
    let md5 = "md53175bce1d3201d16594cebf9d7eb3f9d";
    assert_eq!(Secret::parse(md5).unwrap(), Secret::Md5(md5.into()));
    assert_eq!(
        Secret::parse(&md5.to_uppercase().replacen("MD5", "md5", 1)).unwrap(),
        Secret::Md5(md5.into())
    );
    assert!(format!("{:?}", Secret::parse("hunter2").unwrap()).contains("redacted"));

    let good = ScramVerifier::from_password("x", 4096).to_string();
    let (head, keys) = good.rsplit_once('$').unwrap();
    let (stored, server) = keys.split_once(':').unwrap();
    for bad in [
        "SCRAM-SHA-256$".to_string(),
        "SCRAM-SHA-256$4096".to_string(),
        format!("SCRAM-SHA-256$0:{}", &head[19..]) + "$" + keys,
        format!("SCRAM-SHA-256$abc:{}", &head[19..]) + "$" + keys,
        format!("{head}${stored}"),
        format!("{head}${stored}:AAAA"),
        format!("{head}$!!!:{server}"),
        "SCRAM-SHA-256$4096:$".to_string() + keys,
        "SCRAM-SHA-256$4096:%%$".to_string() + keys,
    ] {
        match Secret::parse(&bad) {
            Err(AuthError::InvalidSecret(msg)) => {
                assert!(msg.starts_with("SCRAM-SHA-256"), "{msg}")
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[test]
fn secret_capabilities() {
    let plain = Secret::parse("pw").unwrap();
    assert!(plain.supports_md5() && plain.supports_scram());
    login(&plain.scram_verifier().unwrap(), "pw").unwrap();
    let md5 = Secret::parse("md53175bce1d3201d16594cebf9d7eb3f9d").unwrap();
    assert!(md5.supports_md5() && !md5.supports_scram() && md5.scram_verifier().is_none());
    let scram = Secret::parse(&ScramVerifier::from_password("pw", 16).to_string()).unwrap();
    assert!(!scram.supports_md5() && scram.supports_scram());
}

fn independent_md5_response(user: &str, password: &str, salt: [u8; 4]) -> String {
    let inner = hex(&Md5::digest(format!("{password}{user}").as_bytes()));
    let mut outer = Md5::new();
    outer.update(inner.as_bytes());
    outer.update(salt);
    format!("md5{}", hex(&outer.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn md5_known_value() {
    let salt = [0x01, 0x02, 0x03, 0x04];
    let expected = independent_md5_response("postgres", "postgres", salt);
    assert_eq!(md5_password_message("postgres", "postgres", salt), expected);

    // md5("postgrespostgres") as PostgreSQL stores it.
    let stored = Secret::parse("md53175bce1d3201d16594cebf9d7eb3f9d").unwrap();
    let plain = Secret::parse("postgres").unwrap();
    for secret in [&stored, &plain] {
        assert!(verify_md5_response(
            secret,
            "postgres",
            salt,
            expected.as_bytes()
        ));
        let with_nul = format!("{expected}\0");
        assert!(verify_md5_response(
            secret,
            "postgres",
            salt,
            with_nul.as_bytes()
        ));
        assert!(!verify_md5_response(
            secret,
            "postgres",
            [0, 2, 3, 4],
            expected.as_bytes()
        ));
        assert!(!verify_md5_response(secret, "postgres", salt, b"md5"));
        assert!(!verify_md5_response(secret, "postgres", salt, b""));
    }
    // A stored hash already embeds its user name; only a plain password
    // depends on the user given here.
    assert!(!verify_md5_response(
        &plain,
        "other",
        salt,
        expected.as_bytes()
    ));
    let scram = Secret::Scram(ScramVerifier::from_password("postgres", 16));
    assert!(!verify_md5_response(
        &scram,
        "postgres",
        salt,
        expected.as_bytes()
    ));
    assert_ne!(md5_salt(), md5_salt()); // 2^-32 chance of a false failure
}
