//! End-to-end fuzz of the frontend protocol (issue 11, item 2): after a valid login, a client
//! sends a random sequence of messages — well-formed ones, malformed bodies under valid tags,
//! tags PostgreSQL refuses, impossible lengths — then Sync, ROLLBACK and a probe query. lsnpool
//! must stay up, answer every case within a deadline (no hang), end a connection only after an
//! ErrorResponse (refused junk: 08P01), and never let one client's junk reach another: a
//! bystander and fresh clients keep working on the same two server connections.
//!
//! Cases: `LSNPOOL_FUZZ_WIRE_CASES` (default 40 in `make test`; `make fuzz` runs thousands).
//! Seed: `LSNPOOL_FUZZ_SEED` (default random; printed, so a failure can be replayed).
mod common;

use common::raw::{tags, Raw, Read};
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

const SQL: &[&str] = &[
    "SELECT 1", "SELECT $1::int", "BEGIN", "BEGIN READ ONLY", "COMMIT", "ROLLBACK", "SELECT 1/0", "SELEC broken", "",
    "SELECT 1; SELECT 2", "SET statement_timeout = '5s'", "SET lsnpool.consistency = 'strong'", "SHOW lsnpool.session_key",
    "SET lsnpool.session_key = 'fuzz:1'", "/* lsnpool:session_key=fuzz:2 */ SELECT 2", "/* lsnpool:min_lsn=0/1 */ SELECT 3",
    "SET lsnpool.report_commit_lsn = on", "DEALLOCATE ALL", "DISCARD ALL", "SELECT pg_is_in_recovery()", "SAVEPOINT s",
    "RELEASE s", "SELECT nextval('no_such_seq')", "DECLARE c CURSOR FOR SELECT 1", "FETCH c",
];
const NAMES: &[&str] = &["", "s1", "s2"];

/// Tags PostgreSQL accepts from a logged-in client (anything else: 08P01 and a close).
const ACCEPTED: &[u8] = b"QPBDECSHXFdcf";

#[derive(Default)]
struct Case {
    bytes: Vec<u8>,
    /// A message lsnpool must refuse and close the connection for.
    fatal: bool,
    /// A length over lsnpool's max_message_size but within PostgreSQL's own limit (1 GB), which
    /// PostgreSQL waits for.
    oversize: bool,
    what: Vec<String>,
}

impl Case {
    fn msg(&mut self, tag: u8, body: &[u8]) {
        self.bytes.push(tag);
        self.bytes.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        self.bytes.extend_from_slice(body);
    }
}

fn cstr(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(s.as_bytes());
    b.push(0);
}

fn pick<'a>(rng: &mut StdRng, v: &[&'a str]) -> &'a str {
    v[rng.random_range(0..v.len())]
}

fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let n = rng.random_range(0..=max);
    (0..n).map(|_| rng.random()).collect()
}

/// One message of the sequence.
fn push_message(rng: &mut StdRng, c: &mut Case) {
    match rng.random_range(0..100) {
        0..=19 => {
            let q = pick(rng, SQL);
            c.what.push(format!("Query {q:?}"));
            let mut b = Vec::new();
            cstr(&mut b, q);
            c.msg(b'Q', &b);
        }
        20..=34 => {
            let (n, q) = (pick(rng, NAMES), pick(rng, SQL));
            c.what.push(format!("Parse {n:?} {q:?}"));
            let mut b = Vec::new();
            cstr(&mut b, n);
            cstr(&mut b, q);
            let types: i16 = if q.contains("$1") { 1 } else { 0 };
            b.extend_from_slice(&types.to_be_bytes());
            if types == 1 {
                b.extend_from_slice(&23u32.to_be_bytes());
            }
            c.msg(b'P', &b);
        }
        35..=46 => {
            let n = pick(rng, NAMES);
            c.what.push(format!("Bind {n:?}"));
            let mut b = Vec::new();
            cstr(&mut b, "");
            cstr(&mut b, n);
            b.extend_from_slice(&0i16.to_be_bytes());
            let params: i16 = rng.random_range(0..2);
            b.extend_from_slice(&params.to_be_bytes());
            for _ in 0..params {
                b.extend_from_slice(&1i32.to_be_bytes());
                b.push(b'7');
            }
            b.extend_from_slice(&0i16.to_be_bytes());
            c.msg(b'B', &b);
        }
        47..=54 => {
            c.what.push("Execute".into());
            let mut b = Vec::new();
            cstr(&mut b, "");
            b.extend_from_slice(&(rng.random_range(0..3) as i32).to_be_bytes());
            c.msg(b'E', &b);
        }
        55..=59 => {
            let kind = if rng.random() { b'S' } else { b'P' };
            c.what.push(format!("Describe {}", kind as char));
            let mut b = vec![kind];
            cstr(&mut b, pick(rng, NAMES));
            c.msg(b'D', &b);
        }
        60..=62 => {
            c.what.push("Close".into());
            let mut b = vec![if rng.random() { b'S' } else { b'P' }];
            cstr(&mut b, pick(rng, NAMES));
            c.msg(b'C', &b);
        }
        63..=72 => {
            c.what.push("Sync".into());
            c.msg(b'S', &[]);
        }
        73..=76 => {
            c.what.push("Flush".into());
            c.msg(b'H', &[]);
        }
        77..=80 => {
            // CopyData/CopyDone/CopyFail outside COPY: ignored, as PostgreSQL ignores them
            let tag = [b'd', b'c', b'f'][rng.random_range(0..3)];
            c.what.push(format!("Copy message {}", tag as char));
            let body = if tag == b'c' { Vec::new() } else { [random_bytes(rng, 8), vec![0]].concat() };
            c.msg(tag, &body);
        }
        81..=88 => {
            // a malformed body under an accepted tag: the server's 08P01 error, not a hang
            let tag = b"QPBDECF"[rng.random_range(0..7)];
            let body = random_bytes(rng, 24);
            c.what.push(format!("malformed {} {:?}", tag as char, body));
            c.msg(tag, &body);
        }
        89..=94 => {
            let tag = loop {
                let t: u8 = rng.random();
                if !ACCEPTED.contains(&t) {
                    break t;
                }
            };
            c.what.push(format!("refused tag {tag}"));
            let body = random_bytes(rng, 16);
            c.msg(tag, &body);
            c.fatal = true;
        }
        _ => {
            // a length no frame can have: below 4, negative, or over max_message_size
            let tag = ACCEPTED[rng.random_range(0..ACCEPTED.len())];
            let len: i32 = match rng.random_range(0..3) {
                0 => rng.random_range(0..4),
                1 => rng.random_range(i32::MIN..0),
                _ => {
                    c.oversize = true;
                    rng.random_range(64 * 1024 * 1024 + 1..=i32::MAX)
                }
            };
            c.what.push(format!("tag {} with length {len}", tag as char));
            c.bytes.push(tag);
            c.bytes.extend_from_slice(&len.to_be_bytes());
            c.fatal = true;
        }
    }
}

fn case(rng: &mut StdRng) -> Case {
    let mut c = Case::default();
    for _ in 0..rng.random_range(1..12) {
        push_message(rng, &mut c);
        if c.fatal {
            break; // nothing after it is read
        }
    }
    // Then: end any extended-protocol batch, leave any transaction, and probe.
    c.msg(b'S', &[]);
    for q in ["ROLLBACK", "SELECT 'alive'"] {
        let mut b = Vec::new();
        cstr(&mut b, q);
        c.msg(b'Q', &b);
    }
    c
}

enum Outcome {
    Alive,
    Closed { error_codes: Vec<String> },
}

/// Reads until the probe's row and its ReadyForQuery, or the close.
async fn outcome(r: &mut Raw, limit: Duration) -> Result<Outcome, String> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut seen = Vec::new();
    let mut probe_row = false;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match r.read(left).await {
            Read::Msg(m) => {
                if m.tag == b'D' && m.columns().first().and_then(|c| c.as_deref()) == Some(b"alive") {
                    probe_row = true;
                }
                let ready = m.tag == b'Z';
                seen.push(m);
                if ready && probe_row {
                    return Ok(Outcome::Alive);
                }
            }
            Read::Eof => {
                let error_codes = seen.iter().filter(|m| m.tag == b'E').map(|m| m.code().unwrap_or_default()).collect();
                return Ok(Outcome::Closed { error_codes });
            }
            Read::Timeout => return Err(format!("no answer within {limit:?} (hang?); got {}", tags(&seen))),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_frames_after_login() {
    let cases: usize = std::env::var("LSNPOOL_FUZZ_WIRE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
    let seed: u64 = std::env::var("LSNPOOL_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("fuzz_wire: {cases} cases, LSNPOOL_FUZZ_SEED={seed}");
    // Replicas too: reads are routed, so replica connections and the 25006 replay are fuzzed.
    // Two server connections per node: a poisoned one would reach the bystander soon.
    let mut p = PoolerOpts::new().pool_size(2).start();
    let bystander = p.app().await;
    // LSNPOOL_FUZZ_DIRECT=1 sends the same cases to the primary itself: what PostgreSQL does
    // with a case (to tell lsnpool's bugs from the harness's).
    let direct = std::env::var("LSNPOOL_FUZZ_DIRECT").is_ok_and(|v| v == "1");
    let port = if direct { PRIMARY_PORT } else { p.port };
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut alive, mut closed) = (0, 0);
    for i in 0..cases {
        let c = case(&mut rng);
        if direct && c.oversize {
            continue;
        }
        let ctx = || format!("case {i} (LSNPOOL_FUZZ_SEED={seed}): {}", c.what.join(", "));
        let mut r = Raw::login(port, "app", "app").await;
        r.send(&c.bytes).await;
        match outcome(&mut r, Duration::from_secs(15)).await {
            Err(e) => panic!("{}: {e}\n--- lsnpool log\n{}", ctx(), p.log_tail(20)),
            Ok(Outcome::Alive) => {
                assert!(!c.fatal, "{}: a refused message was accepted, the connection goes on", ctx());
                alive += 1;
            }
            // PostgreSQL itself closes on a bad length without a word (COMMERROR: logged only)
            Ok(Outcome::Closed { .. }) if direct && c.fatal => closed += 1,
            Ok(Outcome::Closed { error_codes }) => {
                assert!(!error_codes.is_empty(), "{}: closed without an ErrorResponse", ctx());
                if c.fatal {
                    assert!(error_codes.iter().any(|e| e == "08P01"), "{}: refused with {error_codes:?}, not 08P01", ctx());
                }
                closed += 1;
            }
        }
        assert!(p.is_running(), "{}: lsnpool exited\n{}", ctx(), p.log_tail(30));
        let got = bystander.simple_one("SELECT 'clean'").await;
        assert_eq!(got.map_err(|e| db_message(&e)), Ok(Some("clean".to_string())), "bystander after {}", ctx());
    }
    // Fresh clients on the same pooled server connections.
    for j in 0..4 {
        let c = p.app().await;
        let got = c.simple_one("SELECT 'fresh'").await;
        assert_eq!(got.map_err(|e| db_message(&e)), Ok(Some("fresh".to_string())), "fresh client {j} after the fuzz (seed {seed})");
    }
    eprintln!("fuzz_wire: {alive} cases answered, {closed} closed with an error");
}

/// Found by `random_frames_after_login`. A simple Query sent behind extended-protocol messages
/// without a Sync between them (asyncpg does this: Parse/Describe/Flush, then COPY as a Query)
/// is skipped by PostgreSQL when one of those messages fails: the server skips every message up
/// to the next Sync, so the Query gets no ReadyForQuery. The relay used to count one for it and
/// then paired replies with the wrong requests (the client got the pooler's LSN capture replies
/// in place of the probe's and waited forever); now a marker Close in front of such a Query
/// tells it whether the error came before the Query (`Relay::skip_to_sync`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_after_a_failed_unsynced_batch() {
    let p = PoolerOpts::new().pool_size(2).start();
    let mut c = Case::default();
    for (tag, body) in [(b'B', &b"\0s2\0\0\0\0\0\0\0"[..]), (b'Q', b"BEGIN\0"), (b'S', b""), (b'Q', b"ROLLBACK\0"), (b'Q', b"SELECT 'alive'\0")] {
        c.msg(tag, body);
    }
    for port in [PRIMARY_PORT, p.port] {
        let mut r = Raw::login(port, "app", "app").await;
        r.send(&c.bytes).await;
        let got = outcome(&mut r, Duration::from_secs(5)).await;
        assert!(matches!(got, Ok(Outcome::Alive)), "port {port} (primary {PRIMARY_PORT}): {:?}", got.err());
    }
}
