//! Property tests ("fuzz_*") over everything lsnpool parses from a peer before trusting it:
//! the framing of tagged messages, the untagged startup packet and the views of the messages
//! it looks inside. Arbitrary bytes must give a value or an error, never a panic, and a length
//! field must be checked before anything is sized by it.
//!
//! `make test` runs proptest's default 256 cases per property (a second or two); `make fuzz`
//! runs them with `PROPTEST_CASES` in the hundreds of thousands.
use bytes::BytesMut;
use lsnpool_protocol::backend::{self, message, put_cstr};
use lsnpool_protocol::frame::{read_cstr, read_i16, read_i32, FrameError, Frames, Header, HEADER_LEN};
use lsnpool_protocol::frontend;
use lsnpool_protocol::startup::{self, StartupError, StartupPacket, MAX_STARTUP_LEN};
use proptest::collection::vec;
use proptest::prelude::*;

/// The max_message_size the tests frame with (the default is 64 MiB; small here so that the
/// "too large" side is reached by generated lengths too).
const MAX: usize = 4096;

/// One tagged message: a tag (mostly the ones the pooler looks at) and an arbitrary body.
fn frame() -> impl Strategy<Value = (u8, Vec<u8>)> {
    let tag = prop_oneof![
        4 => prop::sample::select(b"QPBDECSHXdcfFp".to_vec()),
        1 => any::<u8>(),
    ];
    (tag, vec(any::<u8>(), 0..64))
}

fn encode(frames: &[(u8, Vec<u8>)]) -> BytesMut {
    let mut buf = BytesMut::new();
    for (tag, body) in frames {
        message(&mut buf, *tag, |b| b.extend_from_slice(body));
    }
    buf
}

/// A string without NULs (what a C string can carry).
fn cstring() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,24}"
}

proptest! {
    #[test]
    fn fuzz_header_never_panics_and_bounds_lengths(bytes in vec(any::<u8>(), 0..16), max in 0usize..100_000) {
        match Header::parse(&bytes, max) {
            Ok(None) => prop_assert!(bytes.len() < HEADER_LEN),
            Ok(Some(h)) => {
                prop_assert!(h.frame_len >= HEADER_LEN && h.frame_len <= max);
                prop_assert_eq!(h.tag, bytes[0]);
            }
            Err(FrameError::BadLength { len, .. }) => prop_assert!(len < 4),
            Err(FrameError::TooLarge { len, max: m, .. }) => prop_assert!(len > m && m == max),
        }
    }

    /// Any length a peer can put in the four bytes: negative and tiny ones are refused, huge
    /// ones are refused against max_message_size from the header alone (nothing is sized by
    /// them: only five bytes are there).
    #[test]
    fn fuzz_header_refuses_bad_lengths(tag in any::<u8>(), len in any::<i32>()) {
        let mut hdr = vec![tag];
        hdr.extend_from_slice(&len.to_be_bytes());
        let r = Header::parse(&hdr, MAX);
        if len < 4 {
            prop_assert_eq!(r, Err(FrameError::BadLength { tag, len: i64::from(len) }));
        } else if len as usize + 1 > MAX {
            let too_large = matches!(r, Err(FrameError::TooLarge { .. }));
            prop_assert!(too_large, "{:?}", r);
        } else {
            prop_assert_eq!(r, Ok(Some(Header { tag, frame_len: len as usize + 1 })));
        }
        // the iterator reports the same error instead of waiting for more bytes
        let first = Frames::new(&hdr, MAX).next();
        if len < 4 || len as usize + 1 > MAX {
            prop_assert!(matches!(first, Some(Err(_))));
        } else {
            prop_assert!(first.is_none(), "an incomplete frame is not yielded");
        }
    }

    /// Arbitrary bytes: the iterator yields whole frames lying inside the buffer, end to end,
    /// then stops (at a partial frame, an error or the end).
    #[test]
    fn fuzz_frames_over_arbitrary_bytes(bytes in vec(any::<u8>(), 0..512)) {
        let mut frames = Frames::new(&bytes, MAX);
        let mut pos = 0;
        for r in frames.by_ref() {
            let Ok((h, f)) = r else { break };
            prop_assert_eq!(f.len(), h.frame_len);
            prop_assert_eq!(f, &bytes[pos..pos + h.frame_len]);
            pos += h.frame_len;
        }
        prop_assert_eq!(frames.consumed(), pos);
        prop_assert!(pos <= bytes.len());
        let _ = frames.pending();
    }

    /// Frames built by the pooler's own writer come back whole, in order, from any split of
    /// the byte stream (what a socket does to them).
    #[test]
    fn fuzz_frames_round_trip(frames in vec(frame(), 0..12), cut in any::<prop::sample::Index>()) {
        let buf = encode(&frames);
        let got: Vec<(u8, Vec<u8>)> = Frames::new(&buf, MAX)
            .map(|r| r.map(|(h, f)| (h.tag, f[HEADER_LEN..].to_vec())))
            .collect::<Result<_, _>>()
            .expect("well-formed frames");
        prop_assert_eq!(&got, &frames);
        // a prefix yields exactly the frames that fit in it; pending() names the next one
        let cut = cut.index(buf.len() + 1);
        let mut it = Frames::new(&buf[..cut], MAX);
        let whole = it.by_ref().map_while(Result::ok).count();
        let fit = frames.iter().scan(0, |end, (_, b)| { *end += HEADER_LEN + b.len(); Some(*end) }).filter(|end| *end <= cut).count();
        prop_assert_eq!(whole, fit);
        if let Ok(Some(h)) = it.pending() {
            prop_assert_eq!(h.tag, frames[whole].0);
        }
    }

    #[test]
    fn fuzz_readers_never_read_past_the_buffer(bytes in vec(any::<u8>(), 0..32), start in 0usize..40) {
        let mut pos = start;
        if let Some(s) = read_cstr(&bytes, &mut pos) {
            prop_assert_eq!(pos, start + s.len() + 1);
            prop_assert_eq!(bytes[pos - 1], 0);
        } else {
            prop_assert_eq!(pos, start);
        }
        let mut pos = start;
        prop_assert_eq!(read_i16(&bytes, &mut pos).is_some(), start + 2 <= bytes.len());
        let mut pos = start;
        prop_assert_eq!(read_i32(&bytes, &mut pos).is_some(), start + 4 <= bytes.len());
    }

    /// The views of the messages the pooler looks inside, over arbitrary frames: a value
    /// within the frame, or None.
    #[test]
    fn fuzz_message_views_never_panic((tag, body) in frame()) {
        let buf = encode(&[(tag, body)]);
        let f = &buf[..];
        let inside = |s: &[u8]| {
            let (a, b) = (s.as_ptr() as usize, f.as_ptr() as usize);
            a >= b && a + s.len() <= b + f.len()
        };
        if let Some(q) = frontend::parse_query(f) { prop_assert!(inside(q)); }
        if let Some(p) = frontend::parse_parse(f) {
            prop_assert!(inside(p.name) && inside(p.query) && inside(p.body));
            prop_assert!(p.body.starts_with(p.query));
        }
        if let Some(b) = frontend::parse_bind(f) { prop_assert!(inside(b.portal) && inside(b.statement) && inside(b.rest)); }
        if let Some((_, n)) = frontend::parse_target(f) { prop_assert!(inside(n)); }
        if let Some(p) = frontend::parse_execute(f) { prop_assert!(inside(p)); }
        let _ = frontend::is_accepted_after_login(tag);
        let e = backend::parse_error_fields(f);
        let _ = e;
        if let Some((k, v)) = backend::parse_parameter_status(f) { prop_assert!(inside(k) && inside(v)); }
        let _ = backend::parse_ready_for_query(f);
        let _ = backend::parse_backend_key_data(f);
        let _ = backend::parse_authentication(f);
        let _ = backend::first_column(f);
    }

    /// Arbitrary first packets: a length is accepted only within 8..=10 000 bytes, and parsing
    /// any bytes gives a packet or an error.
    #[test]
    fn fuzz_startup_packet_never_panics(bytes in vec(any::<u8>(), 0..256)) {
        match startup::packet_len(&bytes) {
            Ok(None) => prop_assert!(bytes.len() < 4),
            Ok(Some(n)) => prop_assert!((8..=MAX_STARTUP_LEN).contains(&n)),
            Err(StartupError::BadLength(n)) => prop_assert!(n < 8 || n as usize > MAX_STARTUP_LEN),
            Err(e) => prop_assert!(false, "packet_len gave {:?}", e),
        }
        let _ = startup::parse(&bytes);
    }

    /// Junk after a valid protocol 3.0 code: parameters without their terminator, a name
    /// without a value, or invalid UTF-8 are refused with an error.
    #[test]
    fn fuzz_startup_refuses_junk_parameters(body in vec(any::<u8>(), 0..64)) {
        let mut p = vec![0, 0, 0, 0, 0, 3, 0, 0];
        p.extend_from_slice(&body);
        let len = p.len() as i32;
        p[..4].copy_from_slice(&len.to_be_bytes());
        match startup::parse(&p) {
            Ok(StartupPacket::Startup(s)) => {
                // accepted only if it really was name\0value\0...\0 in UTF-8
                let mut again = BytesMut::new();
                let params: Vec<(&str, &str)> = s.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                frontend::startup(&mut again, &params);
                prop_assert!(p.starts_with(&again[..]), "{:?} parsed as {:?}", p, s);
            }
            Ok(other) => prop_assert!(false, "protocol 3.0 packet parsed as {:?}", other),
            Err(StartupError::Malformed(_)) => {}
            Err(e) => prop_assert!(false, "unexpected {:?}", e),
        }
    }

    #[test]
    fn fuzz_startup_round_trip(params in vec((cstring().prop_filter("a name is not empty", |k| !k.is_empty()), cstring()), 0..8)) {
        let mut buf = BytesMut::new();
        let refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        frontend::startup(&mut buf, &refs);
        prop_assume!(buf.len() <= MAX_STARTUP_LEN);
        prop_assert_eq!(startup::packet_len(&buf), Ok(Some(buf.len())));
        let parsed = startup::parse(&buf);
        let ok = matches!(&parsed, Ok(StartupPacket::Startup(s)) if s.minor == 0 && s.params == params);
        prop_assert!(ok, "{:?}", parsed);
    }

    #[test]
    fn fuzz_startup_codes(code in any::<i32>(), rest in vec(any::<u8>(), 0..16)) {
        let mut p = vec![0, 0, 0, 0];
        p.extend_from_slice(&code.to_be_bytes());
        p.extend_from_slice(&rest);
        let r = startup::parse(&p);
        match code {
            startup::SSL_REQUEST => prop_assert_eq!(r, Ok(StartupPacket::SslRequest)),
            startup::GSSENC_REQUEST => prop_assert_eq!(r, Ok(StartupPacket::GssEncRequest)),
            startup::CANCEL_REQUEST => prop_assert_eq!(r.is_ok(), rest.len() >= 8),
            c if (c >> 16) as u16 != 3 => {
                let unsupported = matches!(r, Err(StartupError::UnsupportedProtocol { .. }));
                prop_assert!(unsupported, "{:?}", r);
            }
            _ => {}
        }
    }
}

#[test]
fn round_trip_helpers_agree_with_the_builders() {
    // the strategies above rely on `message` framing as PostgreSQL does
    let mut buf = BytesMut::new();
    message(&mut buf, b'Q', |b| put_cstr(b, b"SELECT 1"));
    let (h, f) = Frames::new(&buf, MAX).next().unwrap().unwrap();
    assert_eq!((h.tag, h.frame_len), (b'Q', buf.len()));
    assert_eq!(frontend::parse_query(f), Some(&b"SELECT 1"[..]));
}
