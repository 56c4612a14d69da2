//! Driver battery: sqlx (postgres, runtime-tokio). The same checks as the other programs of
//! tests/drivers; see tests/drivers/README.md. sqlx sends a query without arguments as a
//! simple Query and everything else as named statements it caches per connection
//! (`sqlx_s_N`), so `prepared` is past its threshold from the first execution.

use futures_util::StreamExt;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener};
use sqlx::{Connection, Executor, Row, Statement};
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

const SESSION_TIMEOUT: &str = "1234ms";
const MANY_CLIENTS: i32 = 40;

type Check = Result<(), String>;

fn env(k: &str, default: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| default.to_string())
}

fn opts() -> PgConnectOptions {
    PgConnectOptions::new()
        .host(&env("DRV_HOST", "127.0.0.1"))
        .port(env("DRV_PORT", "55432").parse().unwrap_or(55432))
        .database(&env("DRV_DB", "appdb"))
        .username(&env("DRV_USER", "postgres"))
        .password(&env("DRV_PASSWORD", "postgres"))
}

async fn connect() -> Result<PgConnection, String> {
    PgConnection::connect_with(&opts()).await.map_err(|e| format!("connect: {e}"))
}

fn expect(cond: bool, what: impl Into<String>) -> Check {
    if cond { Ok(()) } else { Err(what.into()) }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Notices sqlx logs as tracing events (target `sqlx::postgres::notice`).
static NOTICES: OnceLock<Arc<Mutex<Vec<String>>>> = OnceLock::new();

struct NoticeLayer(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for NoticeLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "sqlx::postgres::notice" {
            return;
        }
        struct Msg(Option<String>);
        impl tracing::field::Visit for Msg {
            fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
                if f.name() == "message" {
                    self.0 = Some(v.to_string());
                }
            }
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.0 = Some(format!("{v:?}").trim_matches('"').to_string());
                }
            }
        }
        let mut m = Msg(None);
        event.record(&mut m);
        if let (Some(msg), Ok(mut v)) = (m.0, self.0.lock()) {
            v.push(msg);
        }
    }
}

struct Ctx {
    table: String,
    sticky: Mutex<Option<PgConnection>>,
}

async fn login(_: &Ctx) -> Check {
    let mut c = connect().await?;
    let user: String = sqlx::query_scalar("SELECT current_user::text").fetch_one(&mut c).await.map_err(err)?;
    expect(user == env("DRV_USER", "postgres"), format!("current_user {user}"))?;
    c.close().await.map_err(err)?;
    let bad = opts().password(&(env("DRV_PASSWORD", "postgres") + "x"));
    match PgConnection::connect_with(&bad).await {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("28P01") => Ok(()),
        Err(e) => Err(format!("wrong password: unexpected error {e}")),
        Ok(_) => Err("a wrong password was accepted".into()),
    }
}

async fn setup(x: &Ctx) -> Check {
    let mut c = connect().await?;
    c.execute(format!("DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (id int PRIMARY KEY, v text)", t = x.table).as_str())
        .await
        .map_err(err)?;
    Ok(())
}

async fn simple_query(_: &Ctx) -> Check {
    let mut c = connect().await?;
    // no arguments: a simple Query, two statements in it
    let r = c.execute("SELECT 1; SELECT 2").await.map_err(err)?;
    expect(r.rows_affected() == 2, format!("rows {}", r.rows_affected()))?;
    let row = sqlx::raw_sql("SELECT 1::int4 AS a, 'a'::text AS b").fetch_one(&mut c).await.map_err(err)?;
    let (a, b): (i32, String) = (row.try_get(0).map_err(err)?, row.try_get(1).map_err(err)?);
    expect((a, b.as_str()) == (1, "a"), format!("row ({a}, {b})"))
}

async fn param_query(_: &Ctx) -> Check {
    let mut c = connect().await?;
    let (n, s): (i32, String) = sqlx::query_as("SELECT $1::int4 + $2::int4, $3::text")
        .bind(40)
        .bind(2)
        .bind("x'y")
        .fetch_one(&mut c)
        .await
        .map_err(err)?;
    expect((n, s.as_str()) == (42, "x'y"), format!("result ({n}, {s})"))
}

async fn prepared(_: &Ctx) -> Check {
    let mut c = connect().await?;
    // explicitly prepared, then the per-connection statement cache
    let st = c.prepare("SELECT $1::int4 * 2, $2::text").await.map_err(err)?;
    for i in 0..12 {
        let (a, b): (i32, String) = st
            .query_as()
            .bind(i)
            .bind(i.to_string())
            .fetch_one(&mut c)
            .await
            .map_err(err)?;
        expect((a, b.clone()) == (i * 2, i.to_string()), format!("execution {i}: ({a}, {b})"))?;
    }
    for i in 0..12 {
        let v: i32 = sqlx::query_scalar("SELECT $1::int4 + 100").bind(i).fetch_one(&mut c).await.map_err(err)?;
        expect(v == i + 100, format!("cached execution {i}: {v}"))?;
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql").fetch_one(&mut c).await.map_err(err)?;
    expect(n >= 2, format!("{n} protocol-level statements prepared"))
}

async fn txn_recovery(x: &Ctx) -> Check {
    let mut c = connect().await?;
    sqlx::query(&format!("INSERT INTO {} VALUES (1, 'kept')", x.table)).execute(&mut c).await.map_err(err)?;
    let mut tx = c.begin().await.map_err(err)?;
    sqlx::query(&format!("INSERT INTO {} VALUES (2, 'rolled back')", x.table)).execute(&mut *tx).await.map_err(err)?;
    match sqlx::query_scalar::<_, i32>("SELECT 1 / $1::int4").bind(0).fetch_one(&mut *tx).await {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("22012") => {}
        Err(e) => return Err(format!("division by zero: unexpected error {e}")),
        Ok(_) => return Err("division by zero did not fail".into()),
    }
    tx.rollback().await.map_err(err)?;
    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}", x.table)).fetch_one(&mut c).await.map_err(err)?;
    expect(n == 1, format!("count after rollback = {n}"))
}

async fn copy_in(x: &Ctx) -> Check {
    let mut c = connect().await?;
    let mut copy = c.copy_in_raw(&format!("COPY {} (id, v) FROM STDIN", x.table)).await.map_err(err)?;
    let data: String = (100..200).map(|i| format!("{i}\trow{i}\n")).collect();
    copy.send(data.as_bytes()).await.map_err(err)?;
    let rows = copy.finish().await.map_err(err)?;
    expect(rows == 100, format!("COPY reported {rows} rows"))?;
    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {} WHERE id >= 100", x.table)).fetch_one(&mut c).await.map_err(err)?;
    expect(n == 100, format!("copied rows = {n}"))
}

async fn copy_out(_: &Ctx) -> Check {
    let mut c = connect().await?;
    let mut out = Vec::new();
    {
        let mut s = c.copy_out_raw("COPY (SELECT g, 'row' || g FROM generate_series(100, 199) g) TO STDOUT").await.map_err(err)?;
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk.map_err(err)?);
        }
    }
    let text = String::from_utf8_lossy(&out);
    let lines: Vec<&str> = text.lines().collect();
    expect(lines.len() == 100 && lines[0] == "100\trow100", format!("{} lines, first {:?}", lines.len(), lines.first()))?;
    let v: i32 = sqlx::query_scalar("SELECT 7").fetch_one(&mut c).await.map_err(err)?;
    expect(v == 7, "query after COPY")
}

async fn notice(_: &Ctx) -> Check {
    let mut c = connect().await?;
    let seen = NOTICES.get().cloned().ok_or("no notice collector")?;
    seen.lock().map_err(err)?.clear();
    c.execute("DO $$ BEGIN RAISE NOTICE 'hi'; END $$").await.map_err(err)?;
    let got = seen.lock().map_err(err)?.clone();
    expect(got == ["hi"], format!("notices {got:?}"))
}

async fn listen_notify(x: &Ctx) -> Check {
    let ch = format!("{}_ch", x.table);
    let mut l = PgListener::connect_with(&sqlx::PgPool::connect_lazy_with(opts())).await.map_err(err)?;
    l.listen(&ch).await.map_err(err)?;
    let mut n = connect().await?;
    sqlx::query("SELECT pg_notify($1, 'payload')").bind(&ch).execute(&mut n).await.map_err(err)?;
    let got = tokio::time::timeout(Duration::from_secs(2), l.recv()).await.map_err(|_| "no notification within 2s".to_string())?;
    let got = got.map_err(err)?;
    expect(got.channel() == ch && got.payload() == "payload", format!("notification {}: {}", got.channel(), got.payload()))
}

async fn show(c: &mut PgConnection) -> Result<(String, String), String> {
    let mut tx = c.begin().await.map_err(err)?;
    let st: String = sqlx::query_scalar("SELECT current_setting('statement_timeout')").fetch_one(&mut *tx).await.map_err(err)?;
    let an: String = sqlx::query_scalar("SELECT current_setting('application_name')").fetch_one(&mut *tx).await.map_err(err)?;
    tx.commit().await.map_err(err)?;
    Ok((st, an))
}

async fn session_set_sticks(x: &Ctx) -> Check {
    let mut a = connect().await?;
    a.execute(format!("SET statement_timeout = '{SESSION_TIMEOUT}'").as_str()).await.map_err(err)?;
    a.execute("SET application_name = 'drv_sticky'").await.map_err(err)?;
    for i in 0..3 {
        let (st, an) = show(&mut a).await?;
        expect(st == SESSION_TIMEOUT && an == "drv_sticky", format!("transaction {i}: {st}, {an}"))?;
    }
    *x.sticky.lock().map_err(err)? = Some(a);
    Ok(())
}

async fn session_set_isolated(x: &Ctx) -> Check {
    let r = async {
        for i in 0..5 {
            let mut c = connect().await?;
            let (st, an) = show(&mut c).await?;
            expect(st != SESSION_TIMEOUT && an != "drv_sticky", format!("connection {i} sees another session's settings: statement_timeout={st} application_name={an}"))?;
        }
        Ok(())
    }
    .await;
    let sticky = x.sticky.lock().map_err(err)?.take();
    drop(sticky);
    r
}

async fn many_clients(x: &Ctx) -> Check {
    let mut tasks = Vec::new();
    for i in 0..MANY_CLIENTS {
        let table = x.table.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = connect().await?;
            for j in 0..3 {
                let v: i32 = sqlx::query_scalar("SELECT $1::int4 + $2::int4").bind(i).bind(j).fetch_one(&mut c).await.map_err(err)?;
                expect(v == i + j, "result")?;
            }
            sqlx::query(&format!("INSERT INTO {table} VALUES ($1, 'many')")).bind(1000 + i).execute(&mut c).await.map_err(err)?;
            c.close().await.map_err(err)
        }));
    }
    let mut errs = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errs.push(e),
            Err(e) => errs.push(e.to_string()),
        }
    }
    expect(errs.is_empty(), format!("{}/{MANY_CLIENTS} clients failed; first: {}", errs.len(), errs.first().cloned().unwrap_or_default()))?;
    let mut c = connect().await?;
    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {} WHERE v = 'many'", x.table)).fetch_one(&mut c).await.map_err(err)?;
    expect(n == i64::from(MANY_CLIENTS), format!("rows = {n}"))
}

async fn cleanup(x: &Ctx) -> Check {
    let mut c = connect().await?;
    c.execute(format!("DROP TABLE IF EXISTS {}", x.table).as_str()).await.map_err(err)?;
    Ok(())
}

async fn run<'a, F, Fut>(name: &str, secs: u64, x: &'a Ctx, f: F) -> bool
where
    F: FnOnce(&'a Ctx) -> Fut,
    Fut: Future<Output = Check> + 'a,
{
    let t0 = std::time::Instant::now();
    let r = match tokio::time::timeout(Duration::from_secs(secs), f(x)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {secs}s (hang)")),
    };
    eprintln!("[sqlx] {name} {:.2}s", t0.elapsed().as_secs_f64());
    match r {
        Ok(()) => {
            println!("ok {name}");
            true
        }
        Err(e) => {
            println!("FAIL {name}: {}", e.split_whitespace().collect::<Vec<_>>().join(" "));
            false
        }
    }
}

#[tokio::main]
async fn main() {
    use tracing_subscriber::layer::SubscriberExt;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let _ = NOTICES.set(seen.clone());
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(NoticeLayer(seen)));

    let t: u64 = env("DRV_CHECK_TIMEOUT", "10").parse().unwrap_or(10);
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos() % 1_000_000);
    let x = Ctx { table: format!("drv_sqlx_{}_{nonce}", std::process::id()), sticky: Mutex::new(None) };
    let mut ok = true;
    ok &= run("login", t, &x, login).await;
    ok &= run("setup", t, &x, setup).await;
    ok &= run("simple_query", t, &x, simple_query).await;
    ok &= run("param_query", t, &x, param_query).await;
    ok &= run("prepared", t, &x, prepared).await;
    ok &= run("txn_recovery", t, &x, txn_recovery).await;
    ok &= run("copy_in", t, &x, copy_in).await;
    ok &= run("copy_out", t, &x, copy_out).await;
    println!("skip cancel: sqlx has no API that sends a CancelRequest");
    ok &= run("notice", t, &x, notice).await;
    ok &= run("listen_notify", t, &x, listen_notify).await;
    ok &= run("session_set_sticks", t, &x, session_set_sticks).await;
    ok &= run("session_set_isolated", t, &x, session_set_isolated).await;
    ok &= run("many_clients", t.max(30), &x, many_clients).await;
    ok &= run("cleanup", t, &x, cleanup).await;
    std::process::exit(if ok { 0 } else { 1 });
}
