//! Against the real local topology (`testenv/pgenv.sh`): primary 55432, r1 55433, r2 55434
//! (r2 is the one whose apply delay `pgenv.sh delay` changes).
//!
//! Tests that change r2 (apply delay, paused replay) or need an idle primary hold `TOPOLOGY`
//! so they never overlap, and restore what they changed with drop guards, so a failing
//! assertion still leaves the topology as it was found.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use lsnpool_monitor::{spawn_monitor, ClusterState, MonitorParams};
use lsnpool_router::{Lsn, NodeId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_postgres::types::PgLsn;
use tokio_postgres::{Client, NoTls};

const PRIMARY: &str = "127.0.0.1:55432";
const R1: &str = "127.0.0.1:55433";
const R2: &str = "127.0.0.1:55434";
const R1_ID: NodeId = NodeId(0);
const R2_ID: NodeId = NodeId(1);

/// Serialises the tests that change r2 or need the primary idle.
static TOPOLOGY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn pgenv(args: &[&str]) -> std::process::Output {
    Command::new(repo_root().join("testenv/pgenv.sh"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run testenv/pgenv.sh")
}

/// r2's current `recovery_min_apply_delay` as PostgreSQL prints it (`0`, `300ms`), if r2 is up.
fn r2_delay() -> Option<String> {
    let out = pgenv(&["psql", "r2", "-XAtc", "SHOW recovery_min_apply_delay"]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `pgenv.sh up` once per test binary. `up` resets r2's delay to `$R2_APPLY_DELAY` (default
/// 0), so pass the delay r2 has now: the topology stays as we found it.
fn ensure_up() {
    static UP: Once = Once::new();
    UP.call_once(|| {
        // The monitor's transition logs, shown with `--nocapture` (RUST_LOG to change).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_test_writer()
            .try_init();
        let mut cmd = Command::new(repo_root().join("testenv/pgenv.sh"));
        cmd.arg("up").current_dir(repo_root());
        if std::env::var_os("R2_APPLY_DELAY").is_none() {
            if let Some(d) = r2_delay() {
                cmd.env("R2_APPLY_DELAY", d);
            }
        }
        let out = cmd.output().expect("run testenv/pgenv.sh up");
        assert!(
            out.status.success(),
            "testenv/pgenv.sh up failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

fn params(replicas: &[&str]) -> MonitorParams {
    let mut p = MonitorParams::new(
        "appdb",
        PRIMARY,
        replicas.iter().map(|s| s.to_string()).collect(),
        "postgres",
        Some("postgres".to_string()),
        "appdb",
    );
    p.poll_interval = Duration::from_millis(10);
    p.connect_timeout = Duration::from_secs(2);
    p
}

async fn connect(addr: &str) -> Client {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let (client, conn) = tokio_postgres::Config::new()
        .host(host)
        .port(port.parse().unwrap())
        .user("postgres")
        .password("postgres")
        .dbname("appdb")
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    tokio::spawn(conn);
    client
}

async fn current_lsn(primary: &Client) -> Lsn {
    let lsn: PgLsn = primary
        .query_one("SELECT pg_current_wal_lsn()", &[])
        .await
        .unwrap()
        .get(0);
    Lsn(u64::from(lsn))
}

/// A table of our own, dropped at the end (best effort: a failed test may leave it behind,
/// which harms nothing).
async fn unique_table(primary: &Client, tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("monitor_{tag}_{}_{nanos}", std::process::id());
    primary
        .batch_execute(&format!("CREATE TABLE {name} (id int)"))
        .await
        .unwrap();
    name
}

async fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn all_in_rotation(s: &ClusterState) -> bool {
    s.primary().up && s.replicas().all(|r| r.in_rotation)
}

/// Sets r2's apply delay; puts back the one it found when dropped, even on a failed assertion.
struct DelayGuard {
    previous: String,
}

impl DelayGuard {
    fn set(delay: &str) -> DelayGuard {
        let previous = r2_delay().expect("r2 is up");
        let out = pgenv(&["delay", delay]);
        assert!(
            out.status.success(),
            "pgenv delay {delay}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        DelayGuard { previous }
    }
}

impl Drop for DelayGuard {
    fn drop(&mut self) {
        let out = pgenv(&["delay", &self.previous]);
        if !out.status.success() {
            eprintln!(
                "could not restore r2's apply delay: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Resumes r2's replay when dropped.
struct ResumeGuard;

impl Drop for ResumeGuard {
    fn drop(&mut self) {
        let out = pgenv(&["psql", "r2", "-XAtc", "SELECT pg_wal_replay_resume()"]);
        if !out.status.success() {
            eprintln!(
                "could not resume replay on r2: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_nodes_come_up_within_a_second() {
    ensure_up();
    let start = Instant::now();
    let (state, _handle) = spawn_monitor(params(&[R1, R2]));
    assert!(
        wait_until(Duration::from_secs(1), || all_in_rotation(&state)).await,
        "not all up after 1 s: primary {:?}, replicas {:?}",
        state.primary(),
        state.replicas().collect::<Vec<_>>()
    );
    eprintln!("all three nodes up after {:?}", start.elapsed());
    let primary = state.primary();
    assert!(primary.current_lsn > Lsn::ZERO);
    for r in state.replicas() {
        assert!(
            r.in_recovery && !r.promoted && r.replay_lsn > Lsn::ZERO,
            "{r:?}"
        );
        assert!(r.poll_age().unwrap() < Duration::from_millis(500));
    }
    assert_eq!(state.replica_addr(R2_ID), Some(R2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_replays_a_fresh_commit_within_a_second() {
    ensure_up();
    let _topology = TOPOLOGY.lock().await;
    let (state, _handle) = spawn_monitor(params(&[R1, R2]));
    let primary = connect(PRIMARY).await;
    let table = unique_table(&primary, "r1").await;
    assert!(wait_until(Duration::from_secs(1), || all_in_rotation(&state)).await);

    primary
        .batch_execute(&format!("INSERT INTO {table} VALUES (1)"))
        .await
        .unwrap();
    let lsn = current_lsn(&primary).await;
    state.note_commit_lsn(lsn);
    let start = Instant::now();
    assert!(
        state
            .wait_for_replay(R1_ID, lsn, Duration::from_secs(1))
            .await,
        "{:?}",
        state.snapshot(R1_ID)
    );
    eprintln!(
        "r1 replayed {lsn} {:?} after the commit LSN was read",
        start.elapsed()
    );
    assert!(state.snapshot(R1_ID).replay_lsn >= lsn);
    assert_eq!(state.highest_commit_lsn(), lsn);
    assert!(state
        .wait_for_any_replay(lsn, Duration::from_secs(1))
        .await
        .is_some());

    // And the row is really there on r1.
    let r1 = connect(R1).await;
    let n: i64 = r1
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    primary
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_replica_lags_then_catches_up() {
    ensure_up();
    let _topology = TOPOLOGY.lock().await;
    let (state, _handle) = spawn_monitor(params(&[R1, R2]));
    let primary = connect(PRIMARY).await;
    let table = unique_table(&primary, "delay").await;
    // r2 replays the CREATE TABLE before the delay starts, so only our INSERT is delayed.
    let created = current_lsn(&primary).await;
    // wait_for_replay answers false at once for a node not in rotation (yet).
    assert!(wait_until(Duration::from_secs(1), || all_in_rotation(&state)).await);
    assert!(
        state
            .wait_for_replay(R2_ID, created, Duration::from_secs(5))
            .await
    );

    let delay = DelayGuard::set("300ms");
    primary
        .batch_execute(&format!("INSERT INTO {table} VALUES (1)"))
        .await
        .unwrap();
    let committed = Instant::now();
    let lsn = current_lsn(&primary).await;
    // Right after the commit r2 has not replayed it and must not claim to within 150 ms, while
    // r1 (no delay) has.
    assert!(state.snapshot(R2_ID).replay_lsn < lsn);
    assert!(
        state
            .wait_for_replay(R1_ID, lsn, Duration::from_millis(150))
            .await
    );
    assert!(
        !state
            .wait_for_replay(R2_ID, lsn, Duration::from_millis(150))
            .await
    );
    let lagging = state.snapshot(R2_ID);
    assert!(
        lagging.in_rotation,
        "a lagging replica is still a healthy one: {lagging:?}"
    );
    assert!(lagging.replay_lsn < lsn);
    assert!(lagging.lag_bytes > 0, "{lagging:?}");
    // Time lag is positive but bounded by when r2 was last caught up (~150 ms ago), not by the
    // age of the previous commit it replayed (the idle-primary trap, mid-write).
    assert!(
        lagging.lag_micros > 0 && lagging.lag() < Duration::from_secs(2),
        "{lagging:?}"
    );

    assert!(
        state
            .wait_for_replay(R2_ID, lsn, Duration::from_secs(3))
            .await,
        "{:?}",
        state.snapshot(R2_ID)
    );
    let caught_up = committed.elapsed();
    eprintln!("r2 (300 ms apply delay) replayed the commit after {caught_up:?}; lag while behind: {lagging:?}");
    assert!(
        caught_up >= Duration::from_millis(250),
        "caught up too early: {caught_up:?}"
    );
    assert!(
        caught_up < Duration::from_millis(1500),
        "caught up too late: {caught_up:?}"
    );

    drop(delay);
    primary
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_replica_stays_up_but_never_reaches_newer_lsn() {
    ensure_up();
    let _topology = TOPOLOGY.lock().await;
    let (state, _handle) = spawn_monitor(params(&[R1, R2]));
    let primary = connect(PRIMARY).await;
    let table = unique_table(&primary, "pause").await;
    let created = current_lsn(&primary).await;
    // wait_for_replay answers false at once for a node not in rotation (yet).
    assert!(wait_until(Duration::from_secs(1), || all_in_rotation(&state)).await);
    assert!(
        state
            .wait_for_replay(R2_ID, created, Duration::from_secs(5))
            .await
    );

    let r2 = connect(R2).await;
    let resume = ResumeGuard;
    r2.batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    primary
        .batch_execute(&format!("INSERT INTO {table} VALUES (1)"))
        .await
        .unwrap();
    let lsn = current_lsn(&primary).await;
    assert!(
        state
            .wait_for_replay(R1_ID, lsn, Duration::from_secs(1))
            .await
    );
    assert!(
        !state
            .wait_for_replay(R2_ID, lsn, Duration::from_millis(700))
            .await
    );
    let paused = state.snapshot(R2_ID);
    assert!(
        paused.up && paused.in_rotation,
        "paused replica must stay up: {paused:?}"
    );
    assert!(paused.replay_lsn < lsn);
    assert!(paused.lag_bytes > 0);
    assert!(
        paused.poll_age().unwrap() < Duration::from_millis(200),
        "polls go on: {paused:?}"
    );

    drop(resume);
    assert!(
        state
            .wait_for_replay(R2_ID, lsn, Duration::from_secs(2))
            .await,
        "{:?}",
        state.snapshot(R2_ID)
    );
    primary
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_zero_on_an_idle_primary() {
    ensure_up();
    let _topology = TOPOLOGY.lock().await;
    let (state, _handle) = spawn_monitor(params(&[R1, R2]));
    let r1 = connect(R1).await;
    assert!(wait_until(Duration::from_secs(1), || all_in_rotation(&state)).await);

    // Wait for a quiet spell: the last replayed commit at least 300 ms old. Other users of the
    // shared topology may write; give them a few seconds to stop.
    let mut raw_lag = Duration::ZERO;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(350)).await;
        let us: Option<i64> = r1
            .query_one(
                "SELECT (EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp()) * 1e6)::int8",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        raw_lag = Duration::from_micros(us.unwrap_or(i64::MAX).max(0) as u64);
        let caught_up = state
            .replicas()
            .all(|r| r.replay_lsn >= state.primary_current_lsn());
        if raw_lag >= Duration::from_millis(300) && caught_up {
            break;
        }
    }
    assert!(
        raw_lag >= Duration::from_millis(300),
        "primary never idle for 300 ms"
    );
    for r in state.replicas() {
        assert!(r.replay_lsn >= state.primary_current_lsn(), "{r:?}");
        assert_eq!(
            r.lag_micros, 0,
            "caught up on an idle primary, yet lag {r:?} (raw {raw_lag:?})"
        );
        assert_eq!(r.lag_bytes, 0);
    }
    eprintln!(
        "idle primary: now() - pg_last_xact_replay_timestamp() = {raw_lag:?} on r1, monitor lag 0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_promoted_nodes_are_never_in_rotation() {
    ensure_up();
    // Port 1: nothing listens. The primary listed as a replica: "promoted".
    let (state, _handle) = spawn_monitor(params(&["127.0.0.1:1", PRIMARY]));
    let dead = NodeId(0);
    let promoted = NodeId(1);
    let deadline = Instant::now() + Duration::from_millis(600);
    while Instant::now() < deadline {
        let d = state.snapshot(dead);
        assert!(!d.up && !d.in_rotation, "{d:?}");
        assert!(!state.snapshot(promoted).in_rotation);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let p = state.snapshot(promoted);
    assert!(
        p.up && p.promoted && !p.in_recovery && !p.in_rotation,
        "{p:?}"
    );
    assert!(state.primary().up);
    assert!(
        !state
            .wait_for_replay(dead, Lsn::ZERO, Duration::from_millis(50))
            .await
    );
    assert!(
        !state
            .wait_for_replay(promoted, Lsn::ZERO, Duration::from_millis(50))
            .await
    );
    assert_eq!(
        state
            .wait_for_any_replay(Lsn::ZERO, Duration::from_millis(50))
            .await,
        None
    );
}

// ---------------------------------------------------------------- a breakable network path

/// A TCP forwarder to a real server, standing in for the network: it can be cut (sockets
/// closed), frozen (sockets open, nothing forwarded: a hung server) and restored.
struct Forwarder {
    addr: SocketAddr,
    target: &'static str,
    frozen: tokio::sync::watch::Sender<bool>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Forwarder {
    async fn start(target: &'static str) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let f = Forwarder {
            addr,
            target,
            frozen: tokio::sync::watch::channel(false).0,
            tasks: Default::default(),
        };
        f.serve(listener);
        f
    }

    fn serve(&self, listener: TcpListener) {
        let (target, frozen, tasks) = (self.target, self.frozen.clone(), self.tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let mut t = tasks.lock().unwrap();
                t.push(tokio::spawn(pump(cr, sw, frozen.subscribe())));
                t.push(tokio::spawn(pump(sr, cw, frozen.subscribe())));
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Closes the listener and every forwarded connection.
    fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    async fn restore(&self) {
        // The same port again (tokio sets SO_REUSEADDR, so TIME_WAIT does not block it).
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    fn freeze(&self, on: bool) {
        self.frozen.send_replace(on);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while *frozen.borrow_and_update() {
            if frozen.changed().await.is_err() {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_is_down_at_once_and_back_after_reconnect() {
    ensure_up();
    let fwd = Forwarder::start(R1).await;
    let addr = fwd.addr.to_string();
    let (state, _handle) = spawn_monitor(params(&[&addr]));
    assert!(wait_until(Duration::from_secs(1), || state.snapshot(R1_ID).in_rotation).await);

    fwd.cut();
    let cut = Instant::now();
    assert!(
        wait_until(Duration::from_millis(100), || !state.snapshot(R1_ID).up).await,
        "still up after a cut"
    );
    eprintln!("down {:?} after the connection was cut", cut.elapsed());
    // Stays down while nothing listens (reconnects fail), however many polls that is.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!state.snapshot(R1_ID).in_rotation);

    fwd.restore().await;
    let restored = Instant::now();
    // Backoff is capped at 1 s, plus connect and the first poll.
    assert!(wait_until(Duration::from_secs(2), || state.snapshot(R1_ID).in_rotation).await);
    eprintln!(
        "back in rotation {:?} after the path was restored",
        restored.elapsed()
    );
    fwd.cut();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_node_leaves_rotation_after_the_poll_timeout() {
    ensure_up();
    let fwd = Forwarder::start(R1).await;
    let addr = fwd.addr.to_string();
    let (state, _handle) = spawn_monitor(params(&[&addr]));
    assert!(wait_until(Duration::from_secs(1), || state.snapshot(R1_ID).in_rotation).await);

    fwd.freeze(true);
    let frozen = Instant::now();
    // Poll timeout is max(1 s, 50 × 10 ms) = 1 s.
    assert!(
        wait_until(Duration::from_millis(1500), || !state.snapshot(R1_ID).up).await,
        "hung node still up"
    );
    let took = frozen.elapsed();
    eprintln!("hung node down after {took:?}");
    assert!(
        took >= Duration::from_millis(900),
        "down before the poll timeout: {took:?}"
    );

    fwd.freeze(false);
    assert!(wait_until(Duration::from_secs(2), || state.snapshot(R1_ID).in_rotation).await);
    fwd.cut();
}

/// Collects log output in memory, to check what the monitor says (and does not say).
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// current_thread on purpose: the monitor's tasks then run on this thread, where the scoped
// log subscriber below is in force.
#[tokio::test(flavor = "current_thread")]
async fn a_wrong_password_is_down_logged_once_and_never_leaked() {
    ensure_up();
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    let _scoped = tracing::subscriber::set_default(subscriber);

    let secret = "not-the-password-7f3a9c";
    let mut p = params(&[R1]);
    p.password = Some(secret.to_string());
    assert!(
        !format!("{p:?}").contains(secret),
        "Debug must redact the password"
    );
    let (state, handle) = spawn_monitor(p);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!state.primary().up && !state.snapshot(R1_ID).up);
    handle.shutdown().await;

    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(!text.contains(secret), "password in the logs:\n{text}");
    assert!(
        text.contains("password authentication failed"),
        "the server's reason is logged:\n{text}"
    );
    // One WARN per node for the one transition, however many reconnects failed meanwhile.
    let warns = text.lines().filter(|l| l.contains("WARN")).count();
    assert_eq!(warns, 2, "{text}");
    assert!(
        text.lines()
            .filter(|l| l.contains("node still down"))
            .count()
            >= 2,
        "{text}"
    );
}
