//! Micro-benchmarks of lsnpool's per-message and per-transaction hot paths (issue 5):
//!
//! - frame parsing: `lsnpool_protocol::frame::Frames` over a buffer of typical server replies;
//! - statement classification: `lsnpool_router::classify` on pgbench's statements and a few
//!   typical OLTP queries;
//! - the routing decision: `lsnpool_router::decide` with 2 replicas;
//! - query rules: `RuleSet::first_match` over the README's playbook rules.
//!
//! Before criterion runs, a counting global allocator checks that classify, decide and frame
//! parsing allocate nothing per call. Its lines start with `ALLOC` (and go to the file named by
//! `$BENCH_ALLOC_OUT`, for benches/run.sh).
//!
//! `cargo bench --bench micro` (criterion's own flags after `--`, e.g. `--measurement-time 1`).

use criterion::{Criterion, Throughput};
use lsnpool_protocol::backend::{command_complete, data_row, ready_for_query, row_description, TxStatus};
use lsnpool_protocol::frame::Frames;
use lsnpool_router::{
    classify, decide, ClientLsns, Consistency, Lsn, NodeId, ReplicaView, Request, RoutingMode, RuleAction, RuleScope, RuleSet, RuleSpec,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

// ------------------------------------------------------------------ counting allocator

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations per call of `f`, over `n` calls (after one warm-up call).
fn allocs_per_call(n: u64, mut f: impl FnMut()) -> f64 {
    f();
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..n {
        f();
    }
    (ALLOCS.load(Ordering::Relaxed) - before) as f64 / n as f64
}

// ------------------------------------------------------------------ inputs

/// pgbench's statements as they reach a pooler (`-M simple` has the values substituted,
/// `-M prepared` sends the text once in a Parse), and a few typical OLTP queries.
const STATEMENTS: &[(&str, &str)] = &[
    ("pgbench_select_simple", "SELECT abalance FROM pgbench_accounts WHERE aid = 517412;"),
    ("pgbench_select_prepared", "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"),
    ("pgbench_begin", "BEGIN;"),
    ("pgbench_update_accounts", "UPDATE pgbench_accounts SET abalance = abalance + -2791 WHERE aid = 517412;"),
    ("pgbench_update_tellers", "UPDATE pgbench_tellers SET tbalance = tbalance + -2791 WHERE tid = 37;"),
    (
        "pgbench_insert_history",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (37, 4, 517412, -2791, CURRENT_TIMESTAMP);",
    ),
    ("pgbench_end", "END;"),
    (
        "oltp_join_order_limit",
        "SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id \
         WHERE o.customer_id = $1 AND o.created_at > now() - interval '30 days' ORDER BY o.created_at DESC LIMIT 20",
    ),
    ("oltp_select_for_update", "SELECT id, balance FROM accounts WHERE id = $1 FOR UPDATE"),
    ("oltp_insert_returning", "INSERT INTO events (user_id, kind, payload) VALUES ($1, $2, $3) RETURNING id"),
    (
        "oltp_cte_read",
        "WITH recent AS (SELECT user_id, count(*) AS n FROM events WHERE created_at > $1 GROUP BY user_id) \
         SELECT u.email, r.n FROM recent r JOIN users u ON u.id = r.user_id ORDER BY r.n DESC LIMIT 10",
    ),
    ("oltp_hinted", "/* lsnpool:primary */ SELECT count(*) FROM orders WHERE status = 'open'"),
    ("oltp_set_local", "SET LOCAL statement_timeout = '5s'"),
];

/// What a server sends back to pgbench: `-S` (RowDescription, DataRow, CommandComplete,
/// ReadyForQuery) and tpcb-like's statements (one reply run per statement).
fn server_replies() -> (Vec<u8>, u64) {
    let mut b = bytes::BytesMut::new();
    // select-only
    row_description(&mut b, &["abalance"]);
    data_row(&mut b, &[Some("-2791")]);
    command_complete(&mut b, "SELECT 1");
    ready_for_query(&mut b, TxStatus::Idle);
    // tpcb-like, one Query per statement
    command_complete(&mut b, "BEGIN");
    ready_for_query(&mut b, TxStatus::InTransaction);
    for _ in 0..3 {
        command_complete(&mut b, "UPDATE 1");
        ready_for_query(&mut b, TxStatus::InTransaction);
    }
    row_description(&mut b, &["abalance"]);
    data_row(&mut b, &[Some("-2791")]);
    command_complete(&mut b, "SELECT 1");
    ready_for_query(&mut b, TxStatus::InTransaction);
    command_complete(&mut b, "INSERT 0 1");
    ready_for_query(&mut b, TxStatus::InTransaction);
    command_complete(&mut b, "COMMIT");
    ready_for_query(&mut b, TxStatus::Idle);
    let buf = b.to_vec();
    let n = Frames::new(&buf, 1 << 26).count() as u64;
    (buf, n)
}

fn request(last_commit: u64, writes: bool) -> Request {
    let mut lsns = ClientLsns::default();
    lsns.learn_commit(Lsn(last_commit));
    Request {
        mode: RoutingMode::Automatic,
        consistency: Consistency::ReadYourWrites,
        writes,
        hint_primary: false,
        lsns,
        outside: lsnpool_router::Outside::default(),
        max_lag: Duration::from_secs(10),
        tiebreak: 7,
        // routing.probe_max_lag's default
        probe_below: Duration::from_millis(5),
        routing_disabled: false,
        critical: false,
    }
}

fn replicas() -> [ReplicaView; 2] {
    [
        ReplicaView {
            node: NodeId(0),
            in_rotation: true,
            replay_lsn: Lsn(1_000),
            lag: Duration::ZERO,
            outstanding: 3,
            typical_lag: Duration::from_millis(1),
        },
        ReplicaView {
            node: NodeId(1),
            in_rotation: true,
            replay_lsn: Lsn(900),
            lag: Duration::from_millis(300),
            outstanding: 1,
            typical_lag: Duration::from_millis(300),
        },
    ]
}

/// The decide() cases benchmarked: name, request.
fn decide_cases() -> Vec<(&'static str, Request)> {
    vec![
        // both replicas have the client's commit: least outstanding wins
        ("read_both_fresh", request(800, false)),
        // only replica 0 has it
        ("read_one_fresh", request(950, false)),
        // neither: the primary (or, when replica 0 typically lags < probe_below, a probe of it)
        ("read_lag_fallback", request(2_000, false)),
        // a write: primary at once
        ("write", request(800, true)),
    ]
}

/// The README's "Critical paths" playbook, plus two rules of the kind operators add.
fn playbook_rules() -> RuleSet {
    let rule = |name: &str, pattern: &str| RuleSpec {
        name: name.into(),
        database: Some("appdb".into()),
        user: None,
        pattern: pattern.into(),
        action: RuleAction { consistency: Some(Consistency::Strong), max_lag: None, critical: true },
    };
    RuleSet::new(vec![
        rule("payments", r"(?i)^\s*select\b.*\bfrom\s+accounts\b"),
        rule("inventory", r"(?i)^\s*select\b.*\bfrom\s+(stock|inventory)\b"),
        rule("session_tokens", r"(?i)\bfrom\s+session_tokens\b"),
        rule("reports", r"(?i)^\s*/\*\s*report\b"),
        rule("locks", r"(?i)\bpg_advisory_lock\b"),
    ])
    .expect("the playbook's rules compile")
}

/// The rule cases benchmarked: name, statement (the first matches no rule, as most do).
const RULE_CASES: &[(&str, &str)] = &[
    ("no_match_pgbench_select", "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;"),
    ("first_rule", "SELECT balance FROM accounts WHERE id = $1"),
    ("third_rule", "SELECT user_id FROM session_tokens WHERE token = $1 AND expires_at > now()"),
];

const RULE_SCOPE: RuleScope<'static> = RuleScope { database: "appdb", cluster: "appdb", user: "app" };

fn count_frames(buf: &[u8]) -> usize {
    let mut n = 0;
    let mut tags = 0u32;
    for f in Frames::new(buf, 1 << 26) {
        let (h, _) = f.expect("valid frames");
        tags = tags.wrapping_add(u32::from(h.tag));
        n += 1;
    }
    black_box(tags);
    n
}

// ------------------------------------------------------------------ the allocation check

fn alloc_report() {
    let mut lines = Vec::new();
    let n = 10_000;
    for (name, sql) in STATEMENTS {
        let a = allocs_per_call(n, || {
            black_box(classify(black_box(sql)));
        });
        lines.push(format!("ALLOC classify/{name} {a}"));
    }
    let rs = replicas();
    for (name, req) in decide_cases() {
        let a = allocs_per_call(n, || {
            black_box(decide(black_box(&req), black_box(&rs)));
        });
        lines.push(format!("ALLOC decide/{name} {a}"));
    }
    let rules = playbook_rules();
    let (name, sql) = RULE_CASES[0];
    let a = allocs_per_call(n, || {
        black_box(rules.first_match(black_box(sql.as_bytes()), &RULE_SCOPE));
    });
    lines.push(format!("ALLOC rules/{name} {a}"));
    let (buf, frames) = server_replies();
    let a = allocs_per_call(n, || {
        black_box(count_frames(black_box(&buf)));
    });
    lines.push(format!("ALLOC frames/server_replies {a}"));
    lines.push(format!("FRAMES {frames}"));
    let mut out = String::new();
    for l in &lines {
        println!("{l}");
        out.push_str(l);
        out.push('\n');
    }
    if let Ok(path) = std::env::var("BENCH_ALLOC_OUT") {
        let mut f = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        f.write_all(out.as_bytes()).unwrap();
    }
}

// ------------------------------------------------------------------ criterion

fn bench_frames(c: &mut Criterion) {
    let (buf, frames) = server_replies();
    let mut g = c.benchmark_group("frames");
    g.throughput(Throughput::Elements(frames));
    g.bench_function("server_replies", |b| b.iter(|| count_frames(black_box(&buf))));
    g.finish();
}

fn bench_classify(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    for (name, sql) in STATEMENTS {
        g.bench_function(*name, |b| b.iter(|| classify(black_box(sql))));
    }
    g.finish();
}

fn bench_decide(c: &mut Criterion) {
    let rs = replicas();
    let mut g = c.benchmark_group("decide");
    for (name, req) in decide_cases() {
        g.bench_function(name, |b| b.iter(|| decide(black_box(&req), black_box(&rs))));
    }
    g.finish();
}

fn bench_rules(c: &mut Criterion) {
    let rules = playbook_rules();
    let mut g = c.benchmark_group("rules");
    for (name, sql) in RULE_CASES {
        g.bench_function(*name, |b| b.iter(|| rules.first_match(black_box(sql.as_bytes()), &RULE_SCOPE)));
    }
    g.finish();
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing or test flags.
    alloc_report();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    bench_frames(&mut c);
    bench_classify(&mut c);
    bench_decide(&mut c);
    bench_rules(&mut c);
    c.final_summary();
}
