//! Dead pooled server connections never reach a client: backends of this test's pooler are
//! terminated while idle, under load, and no client sees an error.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Server pids of the pooler's own connections idle in its pools, from its SHOW SERVERS.
async fn idle_pooled_pids(admin: &Conn) -> Vec<i32> {
    let mut pids = Vec::new();
    for m in admin.simple_query("SHOW SERVERS").await.expect("SHOW SERVERS") {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            if r.get("state") != Some("idle") {
                continue;
            }
            if let Some(pid) = r.get("remote_pid").and_then(|p| p.parse().ok()) {
                pids.push(pid);
            }
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_servers_terminated_under_load_cost_clients_nothing() {
    let p = PoolerOpts::primary_only().pool_size(10).start();
    let t = unique("ds_load");
    create_table(&t, "id int primary key, v int not null").await;
    primary().await.batch_execute(&format!("INSERT INTO {t} SELECT g, 0 FROM generate_series(1, 8) g")).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for id in 1..=8i32 {
        let c = p.app().await;
        let (stop, errors, done, t) = (stop.clone(), errors.clone(), done.clone(), t.clone());
        clients.push(tokio::spawn(async move {
            let mut first = None;
            // Prepared once: each transaction is then one Bind/Execute/Sync (tokio-postgres
            // would otherwise pipeline a Close of the last statement ahead of the next one).
            let update = c.prepare(&format!("UPDATE {t} SET v = v + 1 WHERE id = $1")).await.expect("prepare");
            while !stop.load(Ordering::Relaxed) {
                // A write (extended protocol) and a read (simple protocol), each its own
                // transaction, then a pause that leaves pooled connections idle.
                let w = c.execute(&update, &[&id]).await;
                let r = c.simple_query(&format!("SELECT v FROM {t} WHERE id = {id}")).await;
                for e in [w.err(), r.err()].into_iter().flatten() {
                    errors.fetch_add(1, Ordering::Relaxed);
                    first.get_or_insert_with(|| db_message(&e));
                }
                done.fetch_add(2, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            first
        }));
    }

    // Terminate idle backends of this pooler (and of nothing else) for a few seconds.
    let admin = within(15.0, "admin console", Conn::connect(&format!("host=127.0.0.1 port={} user=postgres password=postgres dbname=lsnpool", p.port)))
        .await
        .expect("admin console login");
    let direct = primary().await;
    let mut killed = 0i64;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        // PAUSE waits for running transactions, so every backend killed below is idle in the
        // pool: a backend killed mid-statement is a failure no pooler can hide.
        admin.simple_query("PAUSE appdb").await.expect("PAUSE");
        let pids = idle_pooled_pids(&admin).await;
        let row = direct
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE pid = ANY($1) AND state = 'idle'",
                &[&pids],
            )
            .await
            .expect("terminate idle pooled backends");
        killed += row.get::<_, i64>(0);
        admin.simple_query("RESUME appdb").await.expect("RESUME");
        // Rounds of a DBA's (or idle_session_timeout's) terminations, not a storm: a client
        // may meet a dead connection on each of its MAX_REPLAYS tries when every idle backend
        // dies every few milliseconds.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut first_error = None;
    for c in clients {
        if let Some(e) = within(30.0, "client to finish", c).await.expect("client task") {
            first_error.get_or_insert(e);
        }
    }
    let errors = errors.load(Ordering::Relaxed);
    let done = done.load(Ordering::Relaxed);
    eprintln!("terminated {killed} idle pooled backends during {done} statements; {errors} client errors");
    assert!(killed >= 20, "the test must terminate a fair number of pooled backends (did {killed})");
    assert!(done > 200, "the load must keep going ({done} statements)");
    assert_eq!(errors, 0, "clients saw errors; first: {first_error:?}");
    drop_table(&t).await;
}
