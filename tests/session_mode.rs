//! Session mode is pass-through: a client sees its server session as if connected directly —
//! its statement names, the server's own BackendKeyData (cancel still goes through lsnpool),
//! messages the server sends while the client idles, its startup parameters as the session's
//! defaults, and no object of the pooler's.

mod common;

use common::raw::{rows0, tags, Fe, Msg, Raw, PROTOCOL_3_0};
use common::*;
use std::time::Duration;

fn session_pooler(pool_size: usize) -> Pooler {
    PoolerOpts::primary_only().mode("session").pool_size(pool_size).start()
}

/// (pid, secret) of the BackendKeyData the client was greeted with.
fn backend_key(c: &Raw) -> (i32, i32) {
    let k = c.login_msgs.iter().find(|m| m.tag == b'K').expect("BackendKeyData at login");
    (i32::from_be_bytes(k.body[..4].try_into().unwrap()), i32::from_be_bytes(k.body[4..8].try_into().unwrap()))
}

fn parameter_status<'a>(c: &'a Raw, name: &str) -> Option<String> {
    c.login_msgs.iter().filter(|m| m.tag == b'S').find_map(|m| {
        let mut parts = m.body.split(|b| *b == 0);
        let k = parts.next()?;
        let v = parts.next()?;
        (k == name.as_bytes()).then(|| String::from_utf8_lossy(v).into_owned())
    })
}

async fn prepared_names(c: &mut Raw) -> Vec<String> {
    rows0(&c.simple("SELECT name FROM pg_prepared_statements ORDER BY name").await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_keep_their_names_and_the_pooler_leaves_nothing_behind() {
    let p = session_pooler(2);
    let mut c = Raw::login(p.port, "app", "app").await;
    let t = unique("sess_pt");
    c.simple(&format!("CREATE TABLE {t} (x int)")).await;

    // A named statement goes to the server under its own name.
    let mut f = Fe::new();
    f.parse("s1", "SELECT $1::int + 1", &[]).sync();
    c.send_fe(&mut f).await;
    assert_eq!(tags(&c.until_ready().await), "1Z");
    assert_eq!(prepared_names(&mut c).await, vec!["s1"]);

    // The client's unnamed statement survives a committed write (whose LSN the pooler
    // captures behind it), and the capture leaves no statement of its own.
    let mut f = Fe::new();
    f.parse("", "SELECT 42", &[]).sync();
    f.parse("w", &format!("INSERT INTO {t} VALUES (1)"), &[]).bind("", "w", &[]).execute("", 0).sync();
    c.send_fe(&mut f).await;
    assert_eq!(tags(&c.until_ready().await), "1Z");
    let w = c.until_ready().await;
    assert_eq!(tags(&w), "12CZ", "{w:?}");
    let mut f = Fe::new();
    f.bind("", "", &[]).execute("", 0).sync();
    c.send_fe(&mut f).await;
    let r = c.until_ready().await;
    assert_eq!(rows0(&r), vec!["42"], "the unnamed statement after a write: {r:?}");
    assert_eq!(prepared_names(&mut c).await, vec!["s1", "w"]);

    // SQL-level DEALLOCATE of a protocol-level name, in a transaction too.
    let d = c.simple("DEALLOCATE s1").await;
    assert_eq!(tags(&d), "CZ", "{d:?}");
    let d = c.simple("BEGIN; DEALLOCATE w; COMMIT").await;
    assert!(!tags(&d).contains('E'), "{d:?}");
    assert_eq!(prepared_names(&mut c).await, Vec::<String>::new());
    c.simple(&format!("DROP TABLE {t}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_gets_its_servers_key_and_cancel_still_works() {
    let p = session_pooler(2);
    let mut c = Raw::login(p.port, "app", "app").await;
    let (pid, _) = backend_key(&c);
    let backend = rows0(&c.simple("SELECT pg_backend_pid()").await);
    assert_eq!(backend, vec![pid.to_string()], "BackendKeyData is the server's");

    // A cancel with that key, sent to lsnpool, reaches that server.
    let (client, conn) = tokio_postgres::connect(&p.dsn("app", "app", ""), tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(5)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = std::time::Instant::now();
    token.cancel_query(tokio_postgres::NoTls).await.expect("send cancel");
    let r = within(5.0, "cancelled sleep", sleeper).await.expect("join");
    let e = r.expect_err("pg_sleep(5) should be cancelled");
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(3), "cancel took {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_an_idle_client_with_the_senders_pid() {
    let p = session_pooler(3);
    let mut l = Raw::login(p.port, "app", "app").await;
    let mut n = Raw::login(p.port, "app", "app").await;
    let (notifier_pid, _) = backend_key(&n);
    let ch = unique("sess_ch");
    assert_eq!(tags(&l.simple(&format!("LISTEN {ch}")).await), "CZ");
    n.simple(&format!("NOTIFY {ch}, 'hello'")).await;
    // The listener sends nothing: the notification must come on its own.
    let m: Msg = l.recv().await;
    assert_eq!(m.tag, b'A', "{m:?}");
    let sender = i32::from_be_bytes(m.body[..4].try_into().unwrap());
    assert_eq!(sender, notifier_pid, "the notification names the notifier's pid as its BackendKeyData did");
    assert!(m.body.windows(5).any(|w| w == b"hello"), "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_returns_to_the_clients_startup_value() {
    // One server connection: each client below gets the previous one's, reopened as needed.
    let p = session_pooler(1);
    let startup = [("user", "app"), ("database", DB), ("DateStyle", "SQL, DMY"), ("options", "-c work_mem=3MB")];
    for round in 0..2 {
        let mut c = Raw::login_with(p.port, PROTOCOL_3_0, &startup, "app").await.expect("login");
        assert_eq!(parameter_status(&c, "DateStyle").as_deref(), Some("SQL, DMY"), "round {round}");
        c.simple("SET DateStyle = ISO; SET work_mem = '5MB'").await;
        c.simple("RESET DateStyle; RESET work_mem").await;
        assert_eq!(rows0(&c.simple("SHOW DateStyle").await), vec!["SQL, DMY"], "round {round}");
        assert_eq!(rows0(&c.simple("SHOW work_mem").await), vec!["3MB"], "round {round}");
        // What a RESET ALL returns to, as well.
        c.simple("SET work_mem = '6MB'; RESET ALL").await;
        assert_eq!(rows0(&c.simple("SHOW work_mem").await), vec!["3MB"], "round {round}");
        drop(c);
        // A client without them gets the server's defaults, not the last client's.
        let mut plain = Raw::login(p.port, "app", "app").await;
        let ds = rows0(&plain.simple("SHOW DateStyle").await);
        let wm = rows0(&plain.simple("SELECT reset_val FROM pg_settings WHERE name = 'work_mem'").await);
        assert_ne!(ds, vec!["SQL, DMY"], "round {round}");
        assert_ne!(wm, vec!["3072"], "round {round}");
        drop(plain);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A startup value the server refuses is refused at login, as the server refuses it.
    let bad = [("user", "app"), ("database", DB), ("options", "-c work_mem=lots")];
    let e = Raw::login_with(p.port, PROTOCOL_3_0, &bad, "app").await.err().expect("login must fail");
    assert_eq!(e.code().as_deref(), Some("22023"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_reconnect_gets_the_same_servers_key_and_cancel_finds_it() {
    // One server connection, handed from client to client as fast as they reconnect.
    let p = session_pooler(1);
    for i in 0..5 {
        let mut c = Raw::login(p.port, "app", "app").await;
        let (pid, _) = backend_key(&c);
        assert_eq!(rows0(&c.simple("SELECT pg_backend_pid()").await), vec![pid.to_string()], "client {i}");
        let mut f = Fe::new();
        f.terminate();
        c.send_fe(&mut f).await;
    }
    let (client, conn) = tokio_postgres::connect(&p.dsn("app", "app", ""), tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(5)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel_query(tokio_postgres::NoTls).await.expect("send cancel");
    let e = within(5.0, "cancelled sleep", sleeper).await.expect("join").expect_err("cancelled");
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"), "{e:?}");
}
