//! Bad or unusual input at the front door: garbage startup packets, silent clients, oversize
//! messages, SSL/GSS requests, protocol 3.2 negotiation, startup GUCs.

mod common;

use common::raw::{rows0, startup_packet, tags, Fe, Raw, PROTOCOL_3_0, PROTOCOL_3_2, SSL_REQUEST};
use common::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Connection must be closed by lsnpool (optionally after an ErrorResponse, which must be 08P01
/// if it carries a code).
async fn expect_closed(r: &mut Raw, what: &str) {
    let msgs = within(10.0, what, r.until_eof(Duration::from_secs(8))).await;
    for m in &msgs {
        assert_eq!(m.tag, b'E', "{what}: only an ErrorResponse may precede the close, got {msgs:?}");
    }
    if let Some(m) = msgs.first() {
        assert_eq!(m.code().as_deref(), Some("08P01"), "{what}: {msgs:?}");
    }
}

async fn still_serves(p: &Pooler) {
    let c = p.app().await;
    assert_eq!(c.simple_one("SELECT 'still here'").await.unwrap().as_deref(), Some("still here"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_startup_packets_are_refused() {
    let mut p = PoolerOpts::primary_only().pool_size(1).start();
    // A client logged in before the garbage arrives keeps working throughout.
    let bystander = p.app().await;

    // Length field 0x7fffffff.
    let mut r = Raw::connect(p.port).await;
    let mut pkt = vec![0x7f, 0xff, 0xff, 0xff];
    pkt.extend_from_slice(&[0, 3, 0, 0]);
    pkt.extend((0..200).map(|_| rand::random::<u8>()));
    r.send(&pkt).await;
    expect_closed(&mut r, "length 0x7fffffff").await;

    // Lengths that are too small or negative.
    for len in [0i32, 3, 7, -1, -100] {
        let mut r = Raw::connect(p.port).await;
        let mut pkt = len.to_be_bytes().to_vec();
        pkt.extend_from_slice(&[0, 3, 0, 0, 0, 0, 0, 0]);
        r.send(&pkt).await;
        expect_closed(&mut r, &format!("startup length {len}")).await;
    }

    // A well-delimited packet of random bytes (unknown protocol code).
    for _ in 0..5 {
        let mut r = Raw::connect(p.port).await;
        let mut pkt = 512i32.to_be_bytes().to_vec();
        pkt.push(0x12); // major version 0x12xx: never 3
        pkt.extend((0..507).map(|_| rand::random::<u8>()));
        r.send(&pkt).await;
        expect_closed(&mut r, "random protocol code").await;
    }

    // Protocol 3.0 with a body that is not key/value C strings.
    let mut r = Raw::connect(p.port).await;
    let mut pkt = 16i32.to_be_bytes().to_vec();
    pkt.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    pkt.extend_from_slice(b"user\0app"); // no terminators
    r.send(&pkt).await;
    expect_closed(&mut r, "unterminated startup parameters").await;

    // Random bytes then the client closes its side: EOF is handled.
    for _ in 0..5 {
        let mut r = Raw::connect(p.port).await;
        let junk: Vec<u8> = (0..300).map(|_| rand::random::<u8>()).collect();
        r.send(&junk).await;
        let _ = r.stream.shutdown().await;
        expect_closed(&mut r, "random bytes then EOF").await;
    }

    // Garbage as a tagged message right after a good login.
    let mut r = Raw::login(p.port, "app", "app").await;
    let mut junk = vec![b'Q', 0, 0, 0, 2];
    junk.extend_from_slice(b"xyz");
    r.send(&junk).await;
    expect_closed(&mut r, "message length 2").await;

    assert!(p.is_running(), "lsnpool died");
    assert_eq!(bystander.simple_one("SELECT 'bystander'").await.unwrap().as_deref(), Some("bystander"));
    still_serves(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_stalled_logins_are_dropped_after_client_login_timeout() {
    let p = PoolerOpts::primary_only().set_str("client_login_timeout", "1s").start();

    // Sends nothing at all.
    let mut silent = Raw::connect(p.port).await;
    // Sends half a startup packet.
    let mut half = Raw::connect(p.port).await;
    let pkt = startup_packet(PROTOCOL_3_0, &[("user", "app"), ("database", DB)]);
    half.send(&pkt[..pkt.len() / 2]).await;
    // Starts SCRAM and never answers the SASL request.
    let mut stalled = Raw::connect(p.port).await;
    stalled.send(&pkt).await;
    let m = stalled.recv().await;
    assert_eq!(m.tag, b'R', "{m:?}");

    let (a, b, c) = tokio::join!(
        within(10.0, "silent client", silent.until_eof(Duration::from_secs(8))),
        within(10.0, "half packet", half.until_eof(Duration::from_secs(8))),
        within(10.0, "stalled SCRAM", stalled.until_eof(Duration::from_secs(8))),
    );
    for (what, msgs) in [("silent", a), ("half", b), ("stalled", c)] {
        assert!(msgs.iter().all(|m| m.tag == b'E'), "{what}: {msgs:?}");
    }
    // A normal login is not affected by the short timeout.
    still_serves(&p).await;
    // ... nor is a logged-in client that idles longer than client_login_timeout.
    let c = p.app().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(c.simple_one("SELECT 'idle ok'").await.unwrap().as_deref(), Some("idle ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_message_gets_08p01_and_close() {
    let mut p = PoolerOpts::primary_only().set("max_message_size", "1048576").pool_size(2).start();
    let bystander = p.app().await;

    // Under the limit: fine.
    let mut r = Raw::login(p.port, "app", "app").await;
    let sql = format!("SELECT length('{}')", "q".repeat(512 * 1024));
    assert_eq!(rows0(&r.simple(&sql).await), vec![(512 * 1024).to_string()]);

    // 100 MiB announced while idle (first message of a transaction).
    let mut bad = vec![b'Q'];
    bad.extend_from_slice(&(100 * 1024 * 1024i32).to_be_bytes());
    bad.extend_from_slice(b"SELECT 1");
    r.send(&bad).await;
    let msgs = within(10.0, "oversize while idle", r.until_eof(Duration::from_secs(8))).await;
    assert_eq!(tags(&msgs), "E", "{msgs:?}");
    assert_eq!(msgs[0].code().as_deref(), Some("08P01"), "{msgs:?}");

    // 100 MiB announced inside a transaction (while a server connection is lent).
    let mut r = Raw::login(p.port, "app", "app").await;
    let msgs = r.simple("BEGIN").await;
    assert_eq!(tags(&msgs), "CZ");
    let mut bad = vec![b'P'];
    bad.extend_from_slice(&(100 * 1024 * 1024i32).to_be_bytes());
    bad.extend_from_slice(b"\0SELECT 1");
    r.send(&bad).await;
    let msgs = within(10.0, "oversize in a transaction", r.until_eof(Duration::from_secs(8))).await;
    assert_eq!(tags(&msgs), "E", "{msgs:?}");
    assert_eq!(msgs[0].code().as_deref(), Some("08P01"), "{msgs:?}");

    // A real 2 MiB Bind is refused the same way.
    let mut r = Raw::login(p.port, "app", "app").await;
    let big = vec![b'z'; 2 * 1024 * 1024];
    let mut f = Fe::new();
    f.parse("", "SELECT length($1::text)", &[]).bind("", "", &[Some(&big)]).execute("", 0).sync();
    r.send_fe(&mut f).await;
    let msgs = within(10.0, "2 MiB Bind over 1 MiB limit", r.until_eof(Duration::from_secs(8))).await;
    let e = msgs.iter().find(|m| m.tag == b'E').unwrap_or_else(|| panic!("expected an ErrorResponse: {msgs:?}"));
    assert_eq!(e.code().as_deref(), Some("08P01"), "{msgs:?}");

    assert!(p.is_running());
    assert_eq!(bystander.simple_one("SELECT 'bystander'").await.unwrap().as_deref(), Some("bystander"));
    // No server connection was left in a transaction by the aborted clients.
    for _ in 0..4 {
        assert_eq!(bystander.simple_one("SELECT now() = statement_timestamp()").await.unwrap().as_deref(), Some("t"));
    }
    still_serves(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_and_gss_requests_are_refused_with_n() {
    let p = PoolerOpts::primary_only().pool_size(1).start();
    for code in [SSL_REQUEST, 80_877_104 /* GSSENCRequest */] {
        let mut r = Raw::connect(p.port).await;
        let mut pkt = 8i32.to_be_bytes().to_vec();
        pkt.extend_from_slice(&code.to_be_bytes());
        r.send(&pkt).await;
        assert_eq!(r.read_byte().await, Some(b'N'), "request {code}");
        // The same socket then logs in in plain text.
        r.send(&startup_packet(PROTOCOL_3_0, &[("user", "app"), ("database", DB)])).await;
        r.authenticate("app", "app").await.unwrap_or_else(|e| panic!("login after 'N': {e:?}"));
        assert_eq!(rows0(&r.simple("SELECT 'plain'").await), vec!["plain"]);
    }
    let out = p.psql("app", "app", "sslmode=prefer", &["-qAt", "-c", "select 'prefer ok'"], None).await.must_succeed();
    assert_eq!(out.stdout.trim(), "prefer ok");
    let out = p.psql("app", "app", "sslmode=require", &["-c", "select 1"], None).await;
    assert!(!out.success(), "sslmode=require must fail: {out:?}");
    assert!(out.stderr.contains("server does not support SSL"), "clear error expected: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_3_2_and_pq_options_get_negotiate_protocol_version() {
    let p = PoolerOpts::primary_only().pool_size(1).start();
    for (version, params) in [
        (PROTOCOL_3_2, vec![("user", "app"), ("database", DB), ("_pq_.foo", "bar")]),
        (PROTOCOL_3_2, vec![("user", "app"), ("database", DB)]),
        (PROTOCOL_3_0, vec![("user", "app"), ("database", DB), ("_pq_.foo", "bar")]),
    ] {
        let mut r = Raw::login_with(p.port, version, &params, "app").await.unwrap_or_else(|e| panic!("login {version} {params:?}: {e:?}"));
        let v = r.login_msgs.first().unwrap_or_else(|| panic!("no messages before ReadyForQuery"));
        assert_eq!(v.tag, b'v', "NegotiateProtocolVersion must come first: {:?}", r.login_msgs);
        let newest = i32::from_be_bytes(v.body[0..4].try_into().unwrap());
        let n = i32::from_be_bytes(v.body[4..8].try_into().unwrap());
        assert_eq!(newest, PROTOCOL_3_0, "newest minor version supported (as a full protocol code, like PostgreSQL sends it)");
        let has_foo = params.iter().any(|(k, _)| *k == "_pq_.foo");
        assert_eq!(n, has_foo as i32, "{:?}", v);
        if has_foo {
            assert_eq!(&v.body[8..], b"_pq_.foo\0");
        }
        assert!(r.login_msgs.iter().any(|m| m.tag == b'K'), "BackendKeyData expected: {:?}", r.login_msgs);
        assert_eq!(rows0(&r.simple("SELECT 'negotiated'").await), vec!["negotiated"]);
    }
    // Protocol 4.0 is refused.
    let mut r = Raw::connect(p.port).await;
    r.send(&startup_packet(4 << 16, &[("user", "app"), ("database", DB)])).await;
    let msgs = within(10.0, "protocol 4.0", r.until_eof(Duration::from_secs(8))).await;
    assert_eq!(tags(&msgs), "E", "{msgs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_gucs_are_passed_to_the_server() {
    let p = PoolerOpts::primary_only().pool_size(1).start();
    let schema = unique("lt_schema");
    let mut a = Raw::login_with(
        p.port,
        PROTOCOL_3_0,
        &[("user", "app"), ("database", DB), ("search_path", &format!("{schema}, public")), ("work_mem", "7MB"), ("lsnpooltest.flavor", "mint")],
        "app",
    )
    .await
    .unwrap_or_else(|e| panic!("{e:?}"));
    let mut b = Raw::login_with(p.port, PROTOCOL_3_0, &[("user", "app"), ("database", DB), ("work_mem", "9MB"), ("lsnpooltest.flavor", "lime")], "app")
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    // Pool size 1: both clients alternate on the same server connection.
    for _ in 0..3 {
        let msgs = a.simple("SHOW search_path; SHOW work_mem; SELECT current_setting('lsnpooltest.flavor')").await;
        assert_eq!(rows0(&msgs), vec![format!("{schema}, public"), "7MB".into(), "mint".into()], "{msgs:?}");
        let msgs = b.simple("SHOW work_mem; SELECT current_setting('lsnpooltest.flavor')").await;
        assert_eq!(rows0(&msgs), vec!["9MB".to_string(), "lime".into()], "{msgs:?}");
        let msgs = b.simple("SHOW search_path").await;
        assert_eq!(rows0(&msgs), vec!["\"$user\", public"], "B must not inherit A's search_path: {msgs:?}");
    }
    // A bad value is reported to the client rather than silently dropped.
    let r = Raw::login_with(p.port, PROTOCOL_3_0, &[("user", "app"), ("database", DB), ("work_mem", "lots")], "app").await;
    match r {
        Err(e) => assert_eq!(e.code().as_deref(), Some("22023"), "{e:?}"),
        Ok(mut c) => {
            let msgs = c.simple("SELECT 1").await;
            let e = msgs.iter().find(|m| m.tag == b'E').unwrap_or_else(|| panic!("work_mem=lots must be refused: {msgs:?}"));
            assert_eq!(e.code().as_deref(), Some("22023"), "{msgs:?}");
        }
    }
}

/// Messages PostgreSQL refuses after login (it closes the connection with 08P01) must be refused
/// by lsnpool to their sender alone: forwarded behind a finished Query, they would kill the
/// pooled server connection the next client borrows (issue 11, item 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_after_a_query_is_refused_and_never_reaches_other_clients() {
    let p = PoolerOpts::primary_only().pool_size(1).start();
    let unknown = |tag: u8| {
        let mut m = vec![tag];
        m.extend_from_slice(&8i32.to_be_bytes());
        m.extend_from_slice(b"junk");
        m
    };
    let mut junks = vec![("unknown tag Z", unknown(b'Z')), ("PasswordMessage", unknown(b'p')), ("tag 0x01", unknown(1))];
    junks.push(("a startup packet", startup_packet(PROTOCOL_3_0, &[("user", "app"), ("database", "appdb")])));
    for (what, junk) in &junks {
        // Behind a complete Query in the same write, and alone while idle.
        for behind_query in [true, false] {
            let mut r = Raw::login(p.port, "app", "app").await;
            let mut bytes = if behind_query { Fe::new().query("SELECT 1").take() } else { Vec::new() };
            bytes.extend_from_slice(junk);
            r.send(&bytes).await;
            let msgs = within(10.0, what, r.until_eof(Duration::from_secs(8))).await;
            let err = msgs.iter().find(|m| m.tag == b'E').unwrap_or_else(|| panic!("{what}: no error in {}", tags(&msgs)));
            assert_eq!(err.code().as_deref(), Some("08P01"), "{what}: {msgs:?}");
            // The one server connection serves the next clients untouched.
            for i in 0..3 {
                let c = p.app().await;
                let got = c.simple_one("SELECT 'clean'").await;
                assert_eq!(got.map_err(|e| db_message(&e)), Ok(Some("clean".to_string())), "{what}, client {i} after it");
            }
        }
    }
    // CopyData/CopyDone/CopyFail outside COPY are ignored, as PostgreSQL ignores them.
    let mut r = Raw::login(p.port, "app", "app").await;
    r.send(&unknown(b'd')).await;
    assert_eq!(rows0(&r.simple("SELECT 'after copydata'").await), vec!["after copydata".to_string()]);
}

/// Found by tests/fuzz_wire.rs: while skipping a refused extended batch to its Sync, lsnpool
/// swallowed a message of a type PostgreSQL refuses (it checks each message's type even while
/// it skips), so the client was not told. It gets 08P01 and the close now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_while_skipping_a_refused_batch_is_refused() {
    let p = PoolerOpts::primary_only().pool_size(1).start();
    let mut r = Raw::login(p.port, "app", "app").await;
    // A named Parse of a pooler command is refused (0A000) and its batch skipped to the Sync.
    let mut bytes = Fe::new().parse("s2", "SHOW lsnpool.session_key", &[]).take();
    bytes.extend_from_slice(&[147, 0, 0, 0, 8, b'j', b'u', b'n', b'k']);
    bytes.extend(Fe::new().sync().query("SELECT 1").take());
    r.send(&bytes).await;
    let msgs = within(10.0, "junk while skipping", r.until_eof(Duration::from_secs(8))).await;
    let codes: Vec<String> = msgs.iter().filter(|m| m.tag == b'E').filter_map(|m| m.code()).collect();
    assert_eq!(codes, ["0A000", "08P01"], "{}", tags(&msgs));
    still_serves(&p).await;
}

/// Found by tests/fuzz_wire.rs: an unnamed Parse of a pooler command followed by a frame with
/// an impossible length (3) was taken for a batch whose rest had not arrived: the client
/// waited forever. The frame is refused with 08P01 and the connection closed, as PostgreSQL
/// does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_length_after_an_extended_pooler_command_is_refused() {
    let p = PoolerOpts::primary_only().pool_size(1).start();
    let mut r = Raw::login(p.port, "app", "app").await;
    let mut bytes = Fe::new().parse("", "SET lsnpool.consistency = 'strong'", &[]).take();
    bytes.extend_from_slice(&[b'P', 0, 0, 0, 3]);
    r.send(&bytes).await;
    let msgs = within(10.0, "bad length after a pooler Parse", r.until_eof(Duration::from_secs(8))).await;
    let codes: Vec<String> = msgs.iter().filter(|m| m.tag == b'E').filter_map(|m| m.code()).collect();
    assert_eq!(codes.last().map(String::as_str), Some("08P01"), "{}", tags(&msgs));
    still_serves(&p).await;
}
