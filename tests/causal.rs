//! Issue 10, read-your-writes across connections, session keys, commit tokens, linearizable
//! reads and the Redis token store, against the real topology (r2 300 ms behind) and a
//! throwaway `redis-server` each Redis test starts on a port of its own (never the shared one).
//!
//! Run: `cargo test --test causal -- --nocapture` (the numbers are printed).

mod common;
#[path = "routing_support/mod.rs"]
mod routing_support;
#[path = "causal_support/mod.rs"]
mod causal_support;

use causal_support::*;
use common::*;
use routing_support::*;
use std::time::{Duration, Instant};

/// The drop-in default: a read that starts after another connection's commit was
/// acknowledged sees it, and read-only clients keep most of their reads on replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_level_is_never_stale_across_connections() {
    const WRITERS: usize = 4;
    const ITERS: i64 = 400;
    let _topo = delayed_r2();
    // The shipped defaults for the level and the catch-up wait.
    let p = start_ready(PoolerOpts::new().pool_size(8).routing_default("consistency").routing_default("lsn_wait_timeout")).await;
    let t = unique("cz_default");
    counter_table(&t, 0..WRITERS as i32).await;
    let a = admin(&p).await;
    assert_eq!(show_level(&p.app().await).await, "global", "the default level for a cluster's own name");

    let readers = spawn_readers(&p, 3, &t, "").await;
    let mut handles = Vec::new();
    for i in 0..WRITERS {
        let (w, r) = (p.app().await, p.app().await);
        let t = t.clone();
        handles.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            for n in 1..=ITERS {
                w.simple_query(&format!("UPDATE {t} SET v = v + 1 WHERE id = {i}")).await.map_err(|e| db_message(&e))?;
                let (v, on_replica) = read_v(&r, "", &t, i as i32).await?;
                tally.read(n, v, on_replica, &format!("writer {i} iteration {n}"));
            }
            Ok::<_, String>(tally)
        }));
    }
    let writes = collect(handles).await;
    let reads = readers.stop().await;
    println!(
        "default level, write on one connection / read back on another ({WRITERS} x {ITERS}, r2 +300ms): {} stale, read-backs on replicas {:.1}%; read-only clients: {} reads, {:.1}% on replicas",
        writes.stale,
        pct(writes.on_replica, writes.reads),
        reads.reads,
        pct(reads.on_replica, reads.reads)
    );
    println!("SHOW ROUTING: {:?}", routing(&a, DB).await);
    assert_eq!(writes.stale, 0, "stale read-backs under the default level: {:#?}", writes.examples);
    assert!(reads.reads > 100, "the read-only clients barely ran: {}", reads.reads);
    assert!(
        pct(reads.on_replica, reads.reads) >= 50.0,
        "read-only clients should mostly read on replicas under the default: {:.1}%",
        pct(reads.on_replica, reads.reads)
    );
    drop_table(&t).await;
}

/// Session keys on one instance: a write under a key, read back at once on another
/// connection under the same key (statement comment or SET), never stale; reads under
/// other keys stay on replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_key_on_one_instance() {
    const ITERS: i64 = 300;
    let _topo = delayed_r2();
    let p = start_ready(PoolerOpts::new().routing("consistency", "session").routing_default("lsn_wait_timeout")).await;
    let t = unique("cz_key1");
    counter_table(&t, [1, 2]).await;
    let (w, r) = (p.app().await, p.app().await);
    w.simple_query("SET lsnpool.session_key = 'user:1'").await.unwrap();
    assert_eq!(one_row(&w, "SHOW lsnpool.session_key").await.unwrap()[0].as_deref(), Some("user:1"));
    let other = p.app().await;
    other.simple_query("SET lsnpool.session_key = 'user:2'").await.unwrap();
    let mut tally = Tally::default();
    let mut others = Tally::default();
    for n in 1..=ITERS {
        w.simple_query(&format!("UPDATE {t} SET v = v + 1 WHERE id = 1")).await.unwrap();
        let (v, on_replica) = read_v(&r, "/* lsnpool:session_key=user:1 */ ", &t, 1).await.unwrap();
        tally.read(n, v, on_replica, &format!("iteration {n}"));
        let (v, on_replica) = read_v(&other, "", &t, 2).await.unwrap();
        others.read(0, v, on_replica, "other key");
    }
    println!(
        "session key, one instance: {} stale, read-backs on replicas {:.1}%; another key's reads on replicas {:.1}%",
        tally.stale,
        pct(tally.on_replica, tally.reads),
        pct(others.on_replica, others.reads)
    );
    assert_eq!(tally.stale, 0, "stale keyed reads: {:#?}", tally.examples);
    assert!(pct(others.on_replica, others.reads) >= 80.0, "another key's reads left the replicas: {others:?}");
    drop_table(&t).await;
}

/// Two lsnpool instances sharing one Redis: a write under a key through the first, read at
/// once through the second (keyed under `session`, and unkeyed under the default `global`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_key_across_two_instances_sharing_redis() {
    const ITERS: i64 = 300;
    let _topo = delayed_r2();
    let redis = RedisServer::start();
    let opts = || PoolerOpts::new().routing_default("consistency").routing_default("lsn_wait_timeout").routing("token_store", &redis.url()).routing("max_replica_lag", "2s");
    let (p1, p2) = (start_ready(opts()).await, start_ready(opts()).await);
    wait_store_settled(&p2).await;
    let t = unique("cz_key2");
    counter_table(&t, [1, 2]).await;
    let w = p1.app().await;
    w.simple_query("SET lsnpool.session_key = 'user:7'").await.unwrap();
    let keyed = p2.app().await;
    keyed.simple_query("SET lsnpool.consistency = 'session'").await.unwrap();
    let unkeyed = p2.app().await; // the default level, global
    let other = p2.app().await;
    other.simple_query("SET lsnpool.consistency = 'session'").await.unwrap();
    other.simple_query("SET lsnpool.session_key = 'user:8'").await.unwrap();
    let (mut k, mut g, mut o) = (Tally::default(), Tally::default(), Tally::default());
    for n in 1..=ITERS {
        w.simple_query(&format!("UPDATE {t} SET v = v + 1 WHERE id = 1")).await.unwrap();
        let (v, rep) = read_v(&keyed, "/* lsnpool:session_key=user:7 */ ", &t, 1).await.unwrap();
        k.read(n, v, rep, &format!("keyed iteration {n}"));
        let (v, rep) = read_v(&unkeyed, "", &t, 1).await.unwrap();
        g.read(n, v, rep, &format!("global iteration {n}"));
        let (v, rep) = read_v(&other, "", &t, 2).await.unwrap();
        o.read(0, v, rep, "other key");
    }
    println!(
        "two instances + Redis: keyed {} stale ({:.1}% replicas), global {} stale ({:.1}% replicas), other key {:.1}% replicas",
        k.stale,
        pct(k.on_replica, k.reads),
        g.stale,
        pct(g.on_replica, g.reads),
        pct(o.on_replica, o.reads)
    );
    assert_eq!(k.stale, 0, "stale keyed reads on the second instance: {:#?}", k.examples);
    assert_eq!(g.stale, 0, "stale global reads on the second instance: {:#?}", g.examples);
    assert!(pct(o.on_replica, o.reads) >= 80.0, "another key's reads left the replicas: {o:?}");
    drop_table(&t).await;
}

/// Commit tokens: the ParameterStatus after a commit (raw protocol, asked for through the
/// startup `options`), presented on a fresh connection (comment, and SET) under `eventual`,
/// where nothing else would keep the read off a stale replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_token_reported_and_presented() {
    const ITERS: i64 = 150;
    let _topo = delayed_r2();
    let p = start_ready(PoolerOpts::new()).await;
    let t = unique("cz_token");
    counter_table(&t, [1]).await;
    let mut w = common::raw::Raw::login_with(
        p.port,
        196608,
        &[("user", "app"), ("database", DB), ("options", "-c lsnpool.report_commit_lsn=on")],
        "app",
    )
    .await
    .unwrap_or_else(|e| panic!("raw login: {:?}", e.message()));
    let mut tally = Tally::default();
    for n in 1..=ITERS {
        let msgs = w.simple(&format!("UPDATE {t} SET v = v + 1 WHERE id = 1")).await;
        let token = commit_lsn(&msgs).unwrap_or_else(|| panic!("no lsnpool.commit_lsn after a commit: {}", common::raw::tags(&msgs)));
        // A fresh connection, as a job or another service would open.
        let r = p.app().await;
        r.simple_query("SET lsnpool.consistency = 'eventual'").await.unwrap();
        let via_set = n % 2 == 0;
        let prefix = if via_set {
            r.simple_query(&format!("SET lsnpool.min_lsn = '{token}'")).await.unwrap();
            String::new()
        } else {
            format!("/* lsnpool:min_lsn={token} */ ")
        };
        let (v, rep) = read_v(&r, &prefix, &t, 1).await.unwrap();
        tally.read(n, v, rep, &format!("iteration {n} (token {token}, via SET: {via_set})"));
    }
    // A read-only transaction reports nothing.
    let msgs = w.simple(&format!("SELECT v FROM {t}")).await;
    assert!(commit_lsn(&msgs).is_none(), "a read reported a commit LSN");
    println!("commit tokens: {} reads, {} stale, {:.1}% on replicas", tally.reads, tally.stale, pct(tally.on_replica, tally.reads));
    assert_eq!(tally.stale, 0, "stale reads with a token: {:#?}", tally.examples);
    // tokio-postgres is not disturbed by the extra ParameterStatus.
    let c = p.app().await;
    c.simple_query("SET lsnpool.report_commit_lsn = on").await.unwrap();
    c.simple_query(&format!("UPDATE {t} SET v = v + 1 WHERE id = 1")).await.unwrap();
    let row = one_row(&c, "SHOW lsnpool.report_commit_lsn").await.unwrap();
    assert_eq!(row[0].as_deref(), Some("on"));
    drop_table(&t).await;
}

/// Redis stopped mid-run and restarted: keyed and global reads go to the primary while it is
/// down (and while the restarted store settles), never stale and without errors; they are
/// back on replicas after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_and_restarted_mid_run() {
    let _topo = delayed_r2();
    let mut redis = RedisServer::start();
    let opts = PoolerOpts::new().routing("consistency", "session").routing_default("lsn_wait_timeout").routing("token_store", &redis.url()).routing("max_replica_lag", "1s");
    let p = start_ready(opts).await;
    wait_store_settled(&p).await;
    let a = admin(&p).await;
    let t = unique("cz_redis");
    counter_table(&t, [1]).await;
    let (w, r) = (p.app().await, p.app().await);
    w.simple_query("SET lsnpool.session_key = 'user:9'").await.unwrap();
    r.simple_query("SET lsnpool.session_key = 'user:9'").await.unwrap();
    let (mut before, mut down, mut after) = (Tally::default(), Tally::default(), Tally::default());
    let mut n = 0;
    let t0 = Instant::now();
    let mut stopped = false;
    let mut restarted_at = None;
    while t0.elapsed() < Duration::from_secs(9) {
        n += 1;
        w.simple_query(&format!("UPDATE {t} SET v = v + 1 WHERE id = 1")).await.unwrap();
        let (v, rep) = read_v(&r, "", &t, 1).await.unwrap();
        let phase = match restarted_at {
            _ if !stopped => &mut before,
            Some(at) if Instant::now().duration_since(at) > Duration::from_secs(3) => &mut after,
            _ => &mut down,
        };
        phase.read(n, v, rep, &format!("iteration {n}"));
        if !stopped && t0.elapsed() > Duration::from_secs(2) {
            redis.stop();
            stopped = true;
        } else if stopped && restarted_at.is_none() && t0.elapsed() > Duration::from_secs(4) {
            redis.restart();
            restarted_at = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let counts = routing(&a, DB).await;
    println!(
        "Redis stop/restart: before {} reads {} stale {:.0}% replicas; down/settling {} reads {} stale {:.0}% replicas; after {} reads {} stale {:.0}% replicas; store-down fallbacks {}",
        before.reads,
        before.stale,
        pct(before.on_replica, before.reads),
        down.reads,
        down.stale,
        pct(down.on_replica, down.reads),
        after.reads,
        after.stale,
        pct(after.on_replica, after.reads),
        counts.get("fallback_token_store_down").copied().unwrap_or(0)
    );
    for (name, tally) in [("before", &before), ("down", &down), ("after", &after)] {
        assert_eq!(tally.stale, 0, "stale reads {name}: {:#?}", tally.examples);
    }
    assert!(counts.get("fallback_token_store_down").copied().unwrap_or(0) > 0, "no read was counted as store-down: {counts:?}");
    assert!(after.on_replica > 0, "keyed reads never came back to the replicas: {after:?}");
    drop_table(&t).await;
}

/// `linearizable`: a write made directly on the primary, not through lsnpool, is seen by the
/// next read through lsnpool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_sees_writes_made_outside_lsnpool() {
    const ITERS: i64 = 200;
    let _topo = delayed_r2();
    let p = start_ready(PoolerOpts::new().routing_default("lsn_wait_timeout")).await;
    let a = admin(&p).await;
    let t = unique("cz_lin");
    counter_table(&t, [1]).await;
    let primary = direct(PRIMARY).await;
    let r = p.app().await;
    r.simple_query("SET lsnpool.consistency = 'linearizable'").await.unwrap();
    let mut tally = Tally::default();
    for n in 1..=ITERS {
        primary.simple_query(&format!("UPDATE {t} SET v = v + 1 WHERE id = 1")).await.unwrap();
        let (v, rep) = read_v(&r, "", &t, 1).await.unwrap();
        tally.read(n, v, rep, &format!("iteration {n}"));
    }
    println!("linearizable: {} reads, {} stale, {:.1}% on replicas; {:?}", tally.reads, tally.stale, pct(tally.on_replica, tally.reads), routing(&a, DB).await);
    assert_eq!(tally.stale, 0, "a linearizable read missed a write made on the primary: {:#?}", tally.examples);
    drop_table(&t).await;
}
