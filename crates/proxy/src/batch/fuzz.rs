//! Property tests ("fuzz_*") of the batch analysis over arbitrary frame sequences: it never
//! panics, reads only the batch (up to the first Sync or Query), classifies each Query/Parse it
//! reports exactly as the classifier does, and hands out byte ranges inside the buffer.
//! Case count: PROPTEST_CASES (`make fuzz`).
use super::*;
use crate::relay::TextFlags;
use bytes::BytesMut;
use lsnpool_protocol::backend::{message, put_cstr};
use lsnpool_protocol::frame::HEADER_LEN;
use lsnpool_router::classify;
use proptest::collection::vec;
use proptest::prelude::*;

const MAX: usize = 1 << 16;

const SQL: &[&str] = &[
    "SELECT 1", "UPDATE t SET a = 1", "BEGIN READ ONLY", "BEGIN", "COMMIT", "SET lsnpool.consistency = 'strong'",
    "SHOW lsnpool.consistency", "RESET lsnpool.session_key", "SET lsnpool.session_key = 'user:42'",
    "SET lsnpool.min_lsn = '0/3000060'", "SET lsnpool.report_commit_lsn = on", "DEALLOCATE s1", "DEALLOCATE ALL",
    "/* lsnpool:session_key=user:7 */ SELECT 1", "/* lsnpool:min_lsn=0/16B3748 */ SELECT 2", "/* lsnpool:primary */ SELECT 3",
    "SELECT 1; UPDATE t SET a = 2", "", ";", "'", "/*", "$$", "SELECT nextval('s')",
];

const BIND_TAILS: &[&[u8]] = &[b"\0\0\0\0\0\0", b"\0\x01\0\x01\0\x01\0\0\0\x011\0\0", b"\xff\xff"];
const DESCRIBES: &[&[u8]] = &[b"S\0", b"P\0", b"Ss1\0", b"X", b""];
const EXECUTES: &[&[u8]] = &[b"\0\0\0\0\0", b"\0\0\0\0\x05", b""];

/// One client message: mostly well-formed Query/Parse/Bind/Describe/Execute/Sync/Flush/Close
/// with SQL from the list, sometimes truncated bodies or another tag with random bytes.
fn frame() -> impl Strategy<Value = (u8, Vec<u8>)> {
    let sql = prop::sample::select(SQL);
    let name = prop::sample::select(&["", "s1", "s2", "unknown"][..]);
    prop_oneof![
        3 => sql.clone().prop_map(|q| (b'Q', [q.as_bytes(), b"\0"].concat())),
        3 => (name.clone(), sql).prop_map(|(n, q)| (b'P', [n.as_bytes(), b"\0", q.as_bytes(), b"\0\0\0"].concat())),
        2 => (name.clone(), prop::sample::select(BIND_TAILS))
            .prop_map(|(n, rest)| (b'B', [b"\0", n.as_bytes(), b"\0", rest].concat())),
        1 => prop::sample::select(DESCRIBES).prop_map(|b| (b'D', b.to_vec())),
        1 => prop::sample::select(EXECUTES).prop_map(|b| (b'E', b.to_vec())),
        2 => Just((b'S', Vec::new())),
        1 => Just((b'H', Vec::new())),
        1 => (any::<u8>(), vec(any::<u8>(), 0..24)),
        // a frame whose length is impossible (encode() writes it raw, see below)
        1 => Just((BAD_LENGTH, Vec::new())),
    ]
    .prop_flat_map(|(tag, body)| {
        // sometimes cut the body short (a view must then say None, not read past the frame)
        let n = body.len();
        (Just(tag), Just(body), 0..=n)
    })
    .prop_map(|(tag, body, keep)| if keep % 5 == 0 { (tag, body[..keep].to_vec()) } else { (tag, body) })
}

/// Stands for a Parse header with length 3 (below the minimum of 4).
const BAD_LENGTH: u8 = 0xfe;

fn encode(frames: &[(u8, Vec<u8>)]) -> BytesMut {
    let mut buf = BytesMut::new();
    for (tag, body) in frames {
        if *tag == BAD_LENGTH {
            buf.extend_from_slice(&[b'P', 0, 0, 0, 3]);
        } else {
            message(&mut buf, *tag, |b| b.extend_from_slice(body));
        }
    }
    buf
}

fn statements() -> ClientStatements {
    let mut s = ClientStatements::default();
    s.insert(b"s1", b"SELECT 1\0\0\0", classify("SELECT 1"), TextFlags::default());
    s.insert(b"s2", b"UPDATE t SET a = 1\0\0\0", classify("UPDATE t SET a = 1"), TextFlags::default());
    s
}

/// Checks what `analyze` says about `buf` against the frames themselves.
fn check(buf: &[u8], statements: &ClientStatements) -> Result<BatchInfo, TestCaseError> {
    let info = analyze(buf, MAX, statements);
    prop_assert_eq!(info, analyze(buf, MAX, statements), "deterministic");
    let mut writes = false;
    let mut end = 0;
    let mut pushed = 0;
    for (h, f) in Frames::new(buf, MAX).map_while(Result::ok) {
        let text = match h.tag {
            frontend::QUERY => Some(frontend::parse_query(f).unwrap_or_default()),
            frontend::PARSE => frontend::parse_parse(f).map(|p| p.query),
            _ => None,
        };
        if let Some(text) = text {
            let c = classify_bytes(text);
            writes |= c.write;
            if pushed < 4 {
                prop_assert_eq!(info.classified.at(end), Some(c), "frame at {} classified as the classifier does", end);
                pushed += 1;
            }
        }
        match (h.tag, h.tag == frontend::BIND) {
            (frontend::FUNCTION_CALL, _) => writes = true,
            (_, true) => match frontend::parse_bind(f) {
                Some(b) if !b.statement.is_empty() => writes |= statements.get(b.statement).is_none_or(|s| s.class.write),
                _ => {}
            },
            _ => {}
        }
        end += h.frame_len;
        if h.tag == frontend::SYNC || h.tag == frontend::QUERY {
            break;
        }
    }
    prop_assert_eq!(info.writes, writes, "writes: some frame of the batch writes");
    if let Some(n) = info.parse_only {
        prop_assert!(n <= end && n >= HEADER_LEN);
    }
    if let Some((s, e)) = info.session_key {
        prop_assert!(s <= e && e <= buf.len());
    }
    if info.pooler.is_some() {
        prop_assert_eq!(buf.first(), Some(&frontend::QUERY));
    }
    if let Some(cmd) = info.parsed_pooler {
        prop_assert_eq!(buf.first(), Some(&frontend::PARSE));
        match extended_command(buf, MAX, cmd) {
            Extended::Answer(c) => prop_assert!(c.len <= end && buf.get(c.len - HEADER_LEN) == Some(&frontend::SYNC)),
            // "wait for the rest" only when the rest can come: no framing error in the buffer
            Extended::Incomplete => prop_assert!(Frames::new(buf, MAX).all(|r| r.is_ok()), "Incomplete on a framing error"),
            Extended::Other => {}
        }
    }
    // what follows the batch does not change what is said about it
    let batch_ended = Frames::new(&buf[..end], MAX).map_while(Result::ok).any(|(h, _)| h.tag == frontend::SYNC || h.tag == frontend::QUERY);
    if batch_ended {
        let mut longer = buf[..end].to_vec();
        longer.extend_from_slice(b"Q\0\0\0\x0dUPDATE t\0");
        prop_assert_eq!(analyze(&longer, MAX, statements), info, "the analysis read past the batch");
    }
    Ok(info)
}

proptest! {
    #[test]
    fn fuzz_analyze_arbitrary_bytes(bytes in vec(any::<u8>(), 0..512)) {
        let s = statements();
        let _ = analyze(&bytes, MAX, &s);
        for cmd in [PoolerCommand::ShowConsistency, PoolerCommand::ResetConsistency, PoolerCommand::SetReportCommitLsn(true)] {
            let _ = extended_command(&bytes, MAX, cmd);
        }
        let _ = no_params_text_results(&bytes);
    }

    #[test]
    fn fuzz_analyze_frame_sequences(frames in vec(frame(), 0..10)) {
        let buf = encode(&frames);
        check(&buf, &statements())?;
    }

    /// A pooler command through the extended protocol, with arbitrary frames after its Parse:
    /// the shape check never panics and answers only a complete Parse/Bind/[Describe]/Execute/Sync.
    #[test]
    fn fuzz_extended_command_shapes(q in prop::sample::select(&["SET lsnpool.consistency = 'strong'", "SHOW lsnpool.session_key", "RESET lsnpool.min_lsn"][..]), rest in vec(frame(), 0..5)) {
        let mut buf = BytesMut::new();
        message(&mut buf, frontend::PARSE, |b| { put_cstr(b, b""); put_cstr(b, q.as_bytes()); b.extend_from_slice(&[0, 0]); });
        let mut tail = encode(&rest);
        buf.extend_from_slice(&tail.split());
        let info = check(&buf, &statements())?;
        let cmd = info.parsed_pooler;
        prop_assert!(cmd.is_some(), "{} parsed as a pooler command", q);
    }
}

#[test]
fn a_complete_extended_set_is_answered() {
    let mut buf = BytesMut::new();
    message(&mut buf, frontend::PARSE, |b| {
        put_cstr(b, b"");
        put_cstr(b, b"SET lsnpool.consistency = 'strong'");
        b.extend_from_slice(&[0, 0]);
    });
    message(&mut buf, frontend::BIND, |b| b.extend_from_slice(b"\0\0\0\0\0\0\0\0"));
    message(&mut buf, frontend::EXECUTE, |b| b.extend_from_slice(b"\0\0\0\0\0"));
    frontend::sync(&mut buf);
    let info = analyze(&buf, MAX, &ClientStatements::default());
    let cmd = info.parsed_pooler.expect("pooler command");
    assert_eq!(extended_command(&buf, MAX, cmd), Extended::Answer(ExtendedCommand { len: buf.len(), describe: None }));
}
