//! Load generator for `make bench` (benches/run.sh), built as a `harness = false` bench:
//!
//! ```text
//! loadgen raw   --label L --delay-ms D --write URL [--read URL] --setup URL
//!               [--clients 16] [--k 4] [--seconds 5] [--readers 0] [--level L] [--keyed 1] --csv FILE
//! loadgen latency --label L --write URL [--read URL] --setup URL [--n 2000] [--level L] [--keyed 1] --tsv FILE
//! loadgen idle  --url URL --n 10000 --pid PID [--concurrency 64] --out FILE
//! loadgen chart --csv FILE --out PNG
//! ```
//!
//! `raw`: read-after-write. N clients each loop "write a row, read it back at once, then k
//! independent reads". With one URL a client uses one connection for everything (a pooler that
//! routes); with `--read` it writes on `--write` and reads on `--read` (a naive read/write
//! split). Every read also returns `pg_is_in_recovery()`, so the share of reads served by
//! replicas is known; a read-back that misses the row just written is stale. With `--read`
//! pointing at the same pooler, it is the cross-connection workload of an application pool
//! (write on one pooled connection, read back on another). `--readers R` adds R clients that
//! only read (their replica share is reported on its own); `--level L` sends
//! `SET lsnpool.consistency = 'L'` on every connection first; `--keyed 1` gives each writer a
//! session key of its own on both its connections. Appends one CSV row to `--csv`.
//!
//! `latency`: one client, one at a time: an INSERT (autocommit) on `--write`, then its read-back
//! on `--read` (default the same URL, another connection), N times; appends the p50 and p99 of
//! the commit and of the read-back, in microseconds, and the stale read-backs to `--tsv`. Run
//! against an embedded and a Redis token store on the same level, the difference is what the
//! store adds per commit (it is written before the commit's ReadyForQuery) and per read.
//!
//! `idle`: holds N logged-in, idle client connections to a pooler and reports the pooler's
//! VmRSS (from /proc/PID/status) before and with them: bytes per idle client.
//!
//! `chart`: draws stale % and replica share against apply delay from the `raw` CSV.
//!
//! URLs are libpq-style key=value strings, as tokio-postgres takes them.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

// ------------------------------------------------------------------ arguments

struct Args(BTreeMap<String, String>);

impl Args {
    fn parse(args: &[String]) -> Res<Args> {
        let mut m = BTreeMap::new();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            let Some(k) = k.strip_prefix("--") else {
                return Err(format!("unexpected argument {k}").into());
            };
            let v = it.next().ok_or_else(|| format!("--{k} needs a value"))?;
            m.insert(k.to_string(), v.clone());
        }
        Ok(Args(m))
    }
    fn get(&self, k: &str) -> Res<String> {
        self.0.get(k).cloned().ok_or_else(|| format!("missing --{k}").into())
    }
    fn opt(&self, k: &str) -> Option<String> {
        self.0.get(k).cloned()
    }
    fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> Res<T> {
        match self.0.get(k) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{k}: not a number: {v}").into()),
        }
    }
}

async fn connect(url: &str) -> Res<Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().replace(['\n', ','], " ")
}

// ------------------------------------------------------------------ raw

#[derive(Default)]
struct Stats {
    loops: AtomicU64,
    readbacks: AtomicU64,
    stale: AtomicU64,
    reads: AtomicU64,
    replica_reads: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// The read-only clients' reads, and those a replica served.
    reader_reads: AtomicU64,
    reader_replica: AtomicU64,
}

impl Stats {
    fn error(&self, e: &dyn std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut f = self.first_error.lock().unwrap();
        if f.is_none() {
            *f = Some(one_line(e));
        }
    }
}

struct RawCfg {
    write: String,
    read: Option<String>,
    clients: u64,
    k: u32,
    accounts: i32,
    base: i64,
    level: Option<String>,
    /// Each writer sets `lsnpool.session_key = 'user:<i>'` on both its connections.
    keyed: bool,
}

async fn connect_at(url: &str, level: &Option<String>) -> Res<Client> {
    let c = connect(url).await?;
    if let Some(l) = level {
        c.simple_query(&format!("SET lsnpool.consistency = '{l}'")).await?;
    }
    Ok(c)
}

/// A client that only reads: random accounts, each read asking where it ran.
async fn reader_client(i: u64, cfg: Arc<RawCfg>, start: Arc<tokio::sync::Barrier>, stop: Arc<AtomicBool>, st: Arc<Stats>) {
    let url = cfg.read.as_ref().unwrap_or(&cfg.write);
    let ready = async {
        let c = connect_at(url, &cfg.level).await?;
        let q = c.prepare("SELECT pg_is_in_recovery(), abalance FROM pgbench_accounts WHERE aid = $1").await?;
        Res::Ok((c, q))
    }
    .await;
    start.wait().await;
    let (c, q) = match ready {
        Ok(x) => x,
        Err(e) => return st.error(&e),
    };
    let mut rng = 0x2545_F491_4F6C_DD1Du64 ^ (i + 7).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    while !stop.load(Ordering::Relaxed) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let aid = 1 + (rng % cfg.accounts as u64) as i32;
        match c.query_one(&q, &[&aid]).await {
            Ok(row) => {
                st.reads.fetch_add(1, Ordering::Relaxed);
                st.reader_reads.fetch_add(1, Ordering::Relaxed);
                if row.get::<_, bool>(0) {
                    st.replica_reads.fetch_add(1, Ordering::Relaxed);
                    st.reader_replica.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                st.error(&e);
                if c.is_closed() {
                    return;
                }
            }
        }
    }
}

async fn raw_client(i: u64, cfg: Arc<RawCfg>, start: Arc<tokio::sync::Barrier>, stop: Arc<AtomicBool>, st: Arc<Stats>) {
    let setup = async {
        let w = connect_at(&cfg.write, &cfg.level).await?;
        let r = match &cfg.read {
            Some(url) => Some(connect_at(url, &cfg.level).await?),
            None => None,
        };
        Res::Ok((w, r))
    }
    .await;
    let (w, r) = match setup {
        Ok(c) => c,
        Err(e) => {
            st.error(&e);
            start.wait().await;
            return;
        }
    };
    let rd: &Client = r.as_ref().unwrap_or(&w);
    let prepared = async {
        if cfg.keyed {
            for c in [&w, rd] {
                c.simple_query(&format!("SET lsnpool.session_key = 'user:{i}'")).await?;
            }
        }
        let ins = w.prepare("INSERT INTO bench_raw (id, v) VALUES ($1, $2)").await?;
        let back = rd.prepare("SELECT pg_is_in_recovery(), (SELECT v FROM bench_raw WHERE id = $1)").await?;
        let other = rd.prepare("SELECT pg_is_in_recovery(), abalance FROM pgbench_accounts WHERE aid = $1").await?;
        Res::Ok((ins, back, other))
    }
    .await;
    start.wait().await;
    let (ins, back, other) = match prepared {
        Ok(p) => p,
        Err(e) => {
            st.error(&e);
            return;
        }
    };
    let mut seq: i64 = 0;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (i + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    while !stop.load(Ordering::Relaxed) {
        let id = cfg.base + i as i64 + seq * cfg.clients as i64;
        seq += 1;
        let one = async {
            w.execute(&ins, &[&id, &(seq as i32)]).await?;
            let row = rd.query_one(&back, &[&id]).await?;
            let on_replica: bool = row.get(0);
            let v: Option<i32> = row.get(1);
            st.readbacks.fetch_add(1, Ordering::Relaxed);
            st.reads.fetch_add(1, Ordering::Relaxed);
            if on_replica {
                st.replica_reads.fetch_add(1, Ordering::Relaxed);
            }
            if v.is_none() {
                st.stale.fetch_add(1, Ordering::Relaxed);
            }
            for _ in 0..cfg.k {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let aid = 1 + (rng % cfg.accounts as u64) as i32;
                let row = rd.query_one(&other, &[&aid]).await?;
                st.reads.fetch_add(1, Ordering::Relaxed);
                if row.get::<_, bool>(0) {
                    st.replica_reads.fetch_add(1, Ordering::Relaxed);
                }
            }
            Res::Ok(())
        }
        .await;
        match one {
            Ok(()) => {
                st.loops.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                st.error(&e);
                if w.is_closed() || rd.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn raw(a: &Args) -> Res<()> {
    let label = a.get("label")?;
    let delay_ms: u64 = a.num("delay-ms", 0)?;
    let clients: u64 = a.num("clients", 16)?;
    let seconds: f64 = a.num("seconds", 5.0)?;
    let csv = a.get("csv")?;
    let readers: u64 = a.num("readers", 0)?;
    let setup = connect(&a.get("setup")?).await?;
    setup
        .batch_execute("CREATE TABLE IF NOT EXISTS bench_raw (id bigint PRIMARY KEY, v int NOT NULL)")
        .await?;
    let max: i64 = setup.query_one("SELECT coalesce(max(id), 0) FROM bench_raw", &[]).await?.get(0);
    let accounts: i64 = setup.query_one("SELECT count(*) FROM pgbench_accounts", &[]).await?.get(0);
    drop(setup);
    let cfg = Arc::new(RawCfg {
        write: a.get("write")?,
        read: a.opt("read"),
        clients,
        k: a.num("k", 4)?,
        accounts: accounts.max(1) as i32,
        base: max + 1,
        level: a.opt("level"),
        keyed: a.num("keyed", 0u8)? == 1,
    });
    let st = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(tokio::sync::Barrier::new((clients + readers) as usize + 1));
    let mut tasks = Vec::new();
    for i in 0..clients {
        tasks.push(tokio::spawn(raw_client(i, cfg.clone(), start.clone(), stop.clone(), st.clone())));
    }
    for i in 0..readers {
        tasks.push(tokio::spawn(reader_client(i, cfg.clone(), start.clone(), stop.clone(), st.clone())));
    }
    start.wait().await;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let g = |x: &AtomicU64| x.load(Ordering::Relaxed);
    let (loops, readbacks, stale, reads, replica) =
        (g(&st.loops), g(&st.readbacks), g(&st.stale), g(&st.reads), g(&st.replica_reads));
    let pct = |n: u64, d: u64| if d == 0 { 0.0 } else { 100.0 * n as f64 / d as f64 };
    let first_error = st.first_error.lock().unwrap().clone().unwrap_or_default();
    let (rr, rrep) = (g(&st.reader_reads), g(&st.reader_replica));
    println!(
        "raw {label} delay={delay_ms}ms clients={clients} readers={readers} k={}: loops/s={:.0} reads/s={:.0} stale={:.2}% ({stale}/{readbacks}) replica_reads={:.1}% ({replica}/{reads}) reader_replica={:.1}% ({rrep}/{rr}) errors={} {first_error}",
        cfg.k,
        loops as f64 / elapsed,
        reads as f64 / elapsed,
        pct(stale, readbacks),
        pct(replica, reads),
        pct(rrep, rr),
        g(&st.errors)
    );
    // a comma in the label would shift every column of the row
    let label = label.replace(',', ";");
    let new = !std::path::Path::new(&csv).exists();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&csv)?;
    if new {
        writeln!(f, "label,delay_ms,clients,k,seconds,loops,loops_per_s,readbacks,stale,stale_pct,reads,replica_reads,replica_pct,errors,first_error,reads_per_s,reader_replica_pct")?;
    }
    writeln!(
        f,
        "{label},{delay_ms},{clients},{},{elapsed:.2},{loops},{:.1},{readbacks},{stale},{:.3},{reads},{replica},{:.2},{},{first_error},{:.1},{:.2}",
        cfg.k,
        loops as f64 / elapsed,
        pct(stale, readbacks),
        pct(replica, reads),
        g(&st.errors),
        reads as f64 / elapsed,
        pct(rrep, rr)
    )?;
    Ok(())
}

// ------------------------------------------------------------------ latency

/// The q-quantile (0..=1) of sorted microseconds.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

async fn latency(a: &Args) -> Res<()> {
    let label = a.get("label")?.replace('\t', " ");
    let n: usize = a.num("n", 2000)?;
    let tsv = a.get("tsv")?;
    let level = a.opt("level");
    let setup = connect(&a.get("setup")?).await?;
    setup.batch_execute("CREATE TABLE IF NOT EXISTS bench_raw (id bigint PRIMARY KEY, v int NOT NULL)").await?;
    let base: i64 = setup.query_one("SELECT coalesce(max(id), 0) + 1 FROM bench_raw", &[]).await?.get(0);
    drop(setup);
    let write = a.get("write")?;
    let w = connect_at(&write, &level).await?;
    let r = connect_at(&a.opt("read").unwrap_or(write), &level).await?;
    if a.num("keyed", 0u8)? == 1 {
        for c in [&w, &r] {
            c.simple_query("SET lsnpool.session_key = 'latency:1'").await?;
        }
    }
    let ins = w.prepare("INSERT INTO bench_raw (id, v) VALUES ($1, 1)").await?;
    let back = r.prepare("SELECT (SELECT v FROM bench_raw WHERE id = $1)").await?;
    let (mut commits, mut reads, mut stale) = (Vec::with_capacity(n), Vec::with_capacity(n), 0u64);
    for i in 0..n as i64 {
        let t = Instant::now();
        w.execute(&ins, &[&(base + i)]).await?;
        commits.push(t.elapsed().as_micros() as u64);
        let t = Instant::now();
        let v: Option<i32> = r.query_one(&back, &[&(base + i)]).await?.get(0);
        reads.push(t.elapsed().as_micros() as u64);
        stale += u64::from(v.is_none());
    }
    commits.sort_unstable();
    reads.sort_unstable();
    let (c50, c99, r50, r99) = (quantile(&commits, 0.5), quantile(&commits, 0.99), quantile(&reads, 0.5), quantile(&reads, 0.99));
    println!("latency {label} n={n}: commit p50={c50}us p99={c99}us; read-back p50={r50}us p99={r99}us; stale={stale}");
    let new = !std::path::Path::new(&tsv).exists();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&tsv)?;
    if new {
        writeln!(f, "label\tn\tcommit_p50_us\tcommit_p99_us\tread_p50_us\tread_p99_us\tstale")?;
    }
    writeln!(f, "{label}\t{n}\t{c50}\t{c99}\t{r50}\t{r99}\t{stale}")?;
    Ok(())
}

// ------------------------------------------------------------------ idle

fn rss_kib(pid: u32) -> Res<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).ok_or("no VmRSS line")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmRSS line")?.parse()?)
}

async fn idle(a: &Args) -> Res<()> {
    use futures_util::stream::{self, StreamExt};
    let url = a.get("url")?;
    let n: usize = a.num("n", 10_000)?;
    let pid: u32 = a.num("pid", 0)?;
    let conc: usize = a.num("concurrency", 64)?;
    let out = a.get("out")?;
    // One client logs in and runs a query first, so the pooler's server pool and lazily built
    // state exist before the baseline.
    {
        let c = connect(&url).await?;
        c.simple_query("SELECT 1").await?;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let base = rss_kib(pid)?;
    let t0 = Instant::now();
    let first_error: Mutex<Option<String>> = Mutex::new(None);
    let mut failed = 0usize;
    let mut held: Vec<Client> = Vec::with_capacity(n);
    {
        let mut results = stream::iter(0..n)
            .map(|_| {
                let url = url.clone();
                async move { tokio::time::timeout(Duration::from_secs(30), connect(&url)).await }
            })
            .buffer_unordered(conc);
        while let Some(r) = results.next().await {
            match r {
                Ok(Ok(c)) => held.push(c),
                Ok(Err(e)) => {
                    failed += 1;
                    first_error.lock().unwrap().get_or_insert_with(|| one_line(&e));
                }
                Err(_) => {
                    failed += 1;
                    first_error.lock().unwrap().get_or_insert_with(|| "connect timed out after 30 s".into());
                }
            }
        }
    }
    let connect_s = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let alive = held.iter().filter(|c| !c.is_closed()).count();
    let with = rss_kib(pid)?;
    let per = if alive > 0 { (with.saturating_sub(base) * 1024) as f64 / alive as f64 } else { 0.0 };
    let fe = first_error.lock().unwrap().clone().unwrap_or_default();
    let line = format!(
        "requested={n} reached={alive} failed={failed} baseline_kib={base} with_clients_kib={with} bytes_per_client={per:.0} connect_s={connect_s:.1} first_error={fe}"
    );
    println!("idle: {line}");
    std::fs::write(&out, line + "\n")?;
    drop(held);
    Ok(())
}

// ------------------------------------------------------------------ chart

struct Point {
    delay: u64,
    stale: f64,
    replica: f64,
}

fn chart(a: &Args) -> Res<()> {
    use plotters::prelude::*;
    let csv = std::fs::read_to_string(a.get("csv")?)?;
    let out = a.get("out")?;
    let mut series: Vec<(String, Vec<Point>)> = Vec::new();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().ok_or("empty csv")?.split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).ok_or(format!("no column {name}"));
    let (cl, cd, cs, cr) = (col("label")?, col("delay_ms")?, col("stale_pct")?, col("replica_pct")?);
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        if f.len() < header.len() - 1 {
            continue;
        }
        let p = Point { delay: f[cd].parse()?, stale: f[cs].parse()?, replica: f[cr].parse()? };
        match series.iter_mut().find(|(n, _)| n == f[cl]) {
            Some((_, v)) => v.push(p),
            None => series.push((f[cl].to_string(), vec![p])),
        }
    }
    let mut delays: Vec<u64> = series.iter().flat_map(|(_, v)| v.iter().map(|p| p.delay)).collect();
    delays.sort_unstable();
    delays.dedup();
    let xi = |d: u64| delays.iter().position(|x| *x == d).unwrap_or(0) as f64;
    let nx = delays.len().max(1) as f64;

    plotters::style::register_font("sans-serif", FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT)
        .map_err(|_| "cannot load the embedded font")?;
    let root = BitMapBackend::new(&out, (1200, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        "Read-after-write: each client writes a row, reads it back at once, then 4 other reads",
        ("sans-serif", 22),
    )?;
    let (left, right) = root.split_horizontally(600);
    let colors = [RGBColor(214, 39, 40), RGBColor(31, 119, 180), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];
    type Panel<'a, A> = (&'a A, &'static str, fn(&Point) -> f64);
    let panels: [Panel<'_, _>; 2] = [
        (&left, "stale read-backs (% of read-backs)", |p| p.stale),
        (&right, "reads served by a replica (% of all reads)", |p| p.replica),
    ];
    for (area, title, value) in panels {
        let mut ch = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(50)
            .build_cartesian_2d(-0.3f64..(nx - 0.7), 0f64..105f64)?;
        let labels = delays.clone();
        ch.configure_mesh()
            .disable_x_mesh()
            .x_labels(delays.len() * 4 + 1)
            .x_label_formatter(&move |x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                    format!("{} ms", labels[i as usize])
                } else {
                    String::new()
                }
            })
            .light_line_style(RGBColor(240, 240, 240))
            .y_labels(11)
            .y_label_formatter(&|y| format!("{y:.0}%"))
            .x_desc("apply delay of replica r2")
            .label_style(("sans-serif", 14))
            .draw()?;
        // Earlier series are drawn wider, so a later one lying on top (e.g. two at 0 %) leaves
        // them visible around it.
        let n = series.len() as u32;
        for (i, (name, pts)) in series.iter().enumerate() {
            let c = colors[i % colors.len()];
            let w = 2 + 2 * (n - 1 - i as u32);
            let data: Vec<(f64, f64)> = pts.iter().map(|p| (xi(p.delay), value(p))).collect();
            ch.draw_series(LineSeries::new(data.clone(), c.stroke_width(w)))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3)));
            ch.draw_series(data.iter().map(|&(x, y)| Circle::new((x, y), w + 3, c.filled())))?;
        }
        ch.configure_series_labels()
            .position(SeriesLabelPosition::MiddleRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()?;
    }
    root.present()?;
    println!("chart: wrote {out}");
    Ok(())
}

/// `latency-chart`: the pooler hop's added p50/p99 latency (target − direct, same repetition,
/// median over repetitions) per target, from benches/run.sh's latency.tsv.
fn latency_chart(a: &Args) -> Res<()> {
    use plotters::prelude::*;
    use std::collections::BTreeMap;
    let tsv = std::fs::read_to_string(a.get("tsv")?)?;
    let out = a.get("out")?;
    // (workload, clients) -> target -> rep -> (p50, p99)
    type Reps = BTreeMap<String, (f64, f64)>;
    let mut runs: BTreeMap<(String, u32), BTreeMap<String, Reps>> = BTreeMap::new();
    for l in tsv.lines().skip(1) {
        let f: Vec<&str> = l.split('\t').collect();
        if f.len() < 8 || f[4] != "ok" {
            continue;
        }
        let (Ok(c), Ok(p50), Ok(p99)) = (f[1].parse::<u32>(), f[5].parse::<f64>(), f[6].parse::<f64>()) else { continue };
        runs.entry((f[0].to_string(), c)).or_default().entry(f[2].to_string()).or_default().insert(f[3].to_string(), (p50, p99));
    }
    let median = |mut v: Vec<f64>| -> Option<f64> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(|x, y| x.total_cmp(y));
        let n = v.len();
        Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
    };
    let targets = [("pgbouncer", "PgBouncer"), ("lsnpool_primary", "lsnpool app_primary"), ("lsnpool_appdb", "lsnpool appdb")];
    // group label, per target (added p50, added p99)
    let mut groups: Vec<(String, Vec<Option<(f64, f64)>>)> = Vec::new();
    for ((wl, c), by_target) in &runs {
        let Some(direct) = by_target.get("direct") else { continue };
        let mut bars = Vec::new();
        for (t, _) in targets {
            let added = by_target.get(t).map(|reps| {
                let pairs: Vec<(f64, f64)> = reps.iter().filter_map(|(r, x)| direct.get(r).map(|d| (x.0 - d.0, x.1 - d.1))).collect();
                (median(pairs.iter().map(|p| p.0).collect()), median(pairs.iter().map(|p| p.1).collect()))
            });
            bars.push(match added {
                Some((Some(p50), Some(p99))) => Some((p50, p99)),
                _ => None,
            });
        }
        groups.push((format!("{wl}, {c} client{}", if *c == 1 { "" } else { "s" }), bars));
    }
    if groups.is_empty() {
        return Err("no latency runs with a direct baseline in the tsv".into());
    }
    let ymax = groups.iter().flat_map(|(_, b)| b.iter().flatten().map(|p| p.1)).fold(10.0f64, f64::max) * 1.15;
    let ymin = groups.iter().flat_map(|(_, b)| b.iter().flatten().map(|p| p.0.min(p.1))).fold(0.0f64, f64::min) * 1.15;

    plotters::style::register_font("sans-serif", FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT)
        .map_err(|_| "cannot load the embedded font")?;
    let root = BitMapBackend::new(&out, (1200, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let ng = groups.len() as f64;
    let mut ch = ChartBuilder::on(&root)
        .caption("Latency the pooler's hop adds over a direct connection (pgbench, µs): p50 filled, p99 outline", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..(ng - 0.5), ymin..ymax)?;
    let labels: Vec<String> = groups.iter().map(|g| g.0.clone()).collect();
    ch.configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len() * 4 + 1)
        .x_label_formatter(&move |x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                labels[i as usize].clone()
            } else {
                String::new()
            }
        })
        .y_desc("added latency (µs)")
        .label_style(("sans-serif", 14))
        .draw()?;
    let colors = [RGBColor(128, 128, 128), RGBColor(31, 119, 180), RGBColor(44, 160, 44)];
    let width = 0.8 / targets.len() as f64;
    for (ti, (_, name)) in targets.iter().enumerate() {
        let c = colors[ti % colors.len()];
        let x0 = |gi: usize| gi as f64 - 0.4 + ti as f64 * width;
        let bars: Vec<(usize, (f64, f64))> = groups.iter().enumerate().filter_map(|(gi, g)| g.1[ti].map(|b| (gi, b))).collect();
        ch.draw_series(bars.iter().map(|&(gi, (p50, _))| Rectangle::new([(x0(gi) + 0.02, 0.0), (x0(gi) + width - 0.02, p50)], c.filled())))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], c.filled()));
        ch.draw_series(bars.iter().map(|&(gi, (_, p99))| Rectangle::new([(x0(gi) + 0.02, 0.0), (x0(gi) + width - 0.02, p99)], c.stroke_width(2))))?;
    }
    ch.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    println!("latency-chart: wrote {out}");
    Ok(())
}

// ------------------------------------------------------------------ main

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` runs every bench target with `--bench`: nothing to do without a command.
    let Some(cmd) = args.first().filter(|c| !c.starts_with('-')) else {
        eprintln!("loadgen: run by benches/run.sh (make bench); commands: raw, latency, idle, chart, latency-chart");
        return;
    };
    let a = match Args::parse(&args[1..]) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let r = match cmd.as_str() {
        "raw" => rt.block_on(raw(&a)),
        "latency" => rt.block_on(latency(&a)),
        "idle" => rt.block_on(idle(&a)),
        "chart" => chart(&a),
        "latency-chart" => latency_chart(&a),
        other => Err(format!("unknown command {other}").into()),
    };
    if let Err(e) = r {
        eprintln!("loadgen {cmd}: {e}");
        std::process::exit(1);
    }
}
